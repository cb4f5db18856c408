#pragma once
/*
 * nf_kafka_track: which consumed offsets may be stored (internal to nf_kafka).
 *
 * The consumer hands messages out in offset order per partition, handlers finish them in
 * any order. Per partition the tracker keeps the handed-out messages in hand-out order;
 * when one is done, the done prefix of that list is dropped and the offset after its last
 * message is the one to store:
 *
 *   handed out   5  6  7  8          done 6, 8 -> nothing storable (5 is open)
 *   done         .  x  .  x          done 5    -> store 7 (5, 6 gone; 7 open)
 *
 * Offsets need not be consecutive (compaction, control records): only the hand-out order
 * counts. A partition that is revoked (or whose offsets go backwards, a reset) is
 * detached: its open messages may still be done, but store nothing. A detached
 * partition lives until its last open message is done or dropped.
 */
#include <stddef.h>
#include <stdint.h>

struct nf_kafka_track;       /* every partition of one consumer */
struct nf_kafka_track_entry; /* one handed-out message */

/* Aborts on out of memory. */
struct nf_kafka_track *nf_kafka_track_new(void);
/* Detaches every partition and frees the tracker; open entries stay valid until
 * done or dropped. NULL ok. */
void nf_kafka_track_free(struct nf_kafka_track *t);

/* The partition was (re)assigned: a fresh sequence starts, any older one is detached. */
void nf_kafka_track_assign(struct nf_kafka_track *t, const char *topic, int32_t partition);
/* The partition was revoked: its open entries will store nothing. Unknown ones are
 * ignored. */
void nf_kafka_track_revoke(struct nf_kafka_track *t, const char *topic, int32_t partition);

/*
 * A message was handed out. A partition not assigned yet is started implicitly; an
 * offset not above the last open one of its partition detaches the old sequence first.
 * The entry is owned by the tracker and ends with _done or _drop.
 */
struct nf_kafka_track_entry *nf_kafka_track_add(struct nf_kafka_track *t, const char *topic,
                                                int32_t partition, int64_t offset);
/*
 * Marks the message done and frees the entry. Returns the offset to store (the one after
 * the contiguous done prefix) with *topic and *partition set, or -1 when nothing became
 * storable. *topic points into the tracker and stays valid until its next call.
 */
int64_t nf_kafka_track_done(struct nf_kafka_track_entry *e, const char **topic, int32_t *partition);
/* Frees the entry without marking it done; its partition is detached when it still is
 * attached, so nothing at or after the entry will be stored. */
void nf_kafka_track_drop(struct nf_kafka_track_entry *e);

/* Open (handed-out, not yet done) entries of an attached partition; 0 when unknown. */
size_t nf_kafka_track_open(const struct nf_kafka_track *t, const char *topic, int32_t partition);
/* Attached partitions. */
size_t nf_kafka_track_parts(const struct nf_kafka_track *t);
