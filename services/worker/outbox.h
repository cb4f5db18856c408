/*
 * The agent's outbox: every message the agent publishes (job events, usage) is written to a
 * journal in its work directory before it is handed to Kafka (or the API), and marked done
 * once delivered. A message still in the journal when the agent dies (SIGKILL, a crash, a
 * drain that ran out while the broker was away) is published again by the next agent that
 * starts on the same work directory, in the order it was written.
 *
 *   <work dir>/outbox-<n>.log   one per running agent (flock), records appended:
 *       [magic u32][type u8][pad 3][len u32][crc32 u32] body
 *       type 1 message: seq u64, topic NUL key NUL payload NUL
 *       type 2 done:    seq u64
 *   A torn last record (the agent died while writing it) fails its CRC: reading stops
 *   there and the file is cut back to the last whole record.
 *
 * The journal is emptied (truncated) whenever nothing in it is pending, and compacted (its
 * pending messages rewritten into a new file, renamed over it) when it outgrows its bound;
 * when the pending messages alone exceed the bound, wk_outbox_append refuses (-1, ENOSPC)
 * and the caller says so. Writes are not fsynced: the journal survives the agent's death,
 * not the machine's.
 */
#ifndef NF_WK_OUTBOX_H
#define NF_WK_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

struct wk_outbox;

/* Called for each pending message, oldest first; the strings live until the call returns. */
typedef void (*wk_outbox_each_fn)(uint64_t seq, const char *topic, const char *key,
                                  const char *payload, void *arg);

/* Opens the agent's journal in dir (the first outbox-<n>.log no live agent holds, n <
 * 64) and takes over the journals of agents that are gone: their pending messages become
 * ours (kept in order, new sequence numbers), their files removed. max_bytes bounds the
 * file. 0, or -1 with errno. */
int wk_outbox_open(struct wk_outbox **out, const char *dir, int64_t max_bytes);

/* Calls fn for every pending message (those taken over at open included). */
void wk_outbox_pending(struct wk_outbox *ob, wk_outbox_each_fn fn, void *arg);

/* Writes a message; its sequence number (> 0), or 0 with errno (ENOSPC: over the bound;
 * an I/O error). */
uint64_t wk_outbox_append(struct wk_outbox *ob, const char *topic, const char *key,
                          const char *payload);

/* Marks a message delivered (or given up for good). Unknown or repeated seqs are ignored. */
void wk_outbox_done(struct wk_outbox *ob, uint64_t seq);

/* Messages written and not yet done; bytes the file holds. */
size_t wk_outbox_count(const struct wk_outbox *ob);
int64_t wk_outbox_bytes(const struct wk_outbox *ob);

/* Closes the journal: removed when nothing is pending, else kept for the next agent. */
void wk_outbox_close(struct wk_outbox *ob);

#endif
