/*
 * The job:<id> snapshot (internals.md, Redis): a hash with user_id, status, doc (the job
 * object JSON) and ver, TTL 7 days. The gateway creates it at submit; the scheduler
 * rewrites it after every committed change.
 *
 * Writers race: two stages of different messages, or the HTTP route's read-repair, may
 * hold different versions of the same job. The row's `version` column (incremented by
 * every UPDATE) is stored as `ver`, and one Lua call writes only when the stored version
 * is not newer, so an old row can never overwrite a newer snapshot. The gateway's own
 * snapshot has no ver (treated as 0).
 *
 * `h` holds a short hash of the doc. Two writers can hold different docs of the same
 * version (a statement whose subquery read an older snapshot than the row it updated);
 * the reconciler compares ver and h with a fresh read of the row and rewrites the
 * snapshot when either differs (sched_snap_check_lua).
 */
#include "sched.h"

#include <stdio.h>
#include <string.h>

#include "nf_crypto.h"
#include "nf_log.h"
#include "nf_redis.h"

void sched_doc_hash(const char *doc, char out[SCHED_DOC_HASH_LEN + 1])
{
    char hex[NF_SHA256_HEX_LEN + 1];

    nf_crypto_sha256_hex(doc, strlen(doc), hex);
    memcpy(out, hex, SCHED_DOC_HASH_LEN);
    out[SCHED_DOC_HASH_LEN] = '\0';
}

const char sched_snapshot_lua[] =
    "local cur = redis.call('HGET', KEYS[1], 'ver')\n"
    "if cur and tonumber(cur) and tonumber(cur) > tonumber(ARGV[4]) then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'status', ARGV[2], 'doc', ARGV[3],\n"
    "           'ver', ARGV[4], 'h', ARGV[6])\n"
    "redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))\n"
    "return 1\n";

int sched_snapshot_write(struct sched_ctx *ctx, const struct sched_snap *s, nf_redis_cb cb,
                         void *arg)
{
    char key[128], ver[32], ttl[16], h[SCHED_DOC_HASH_LEN + 1];
    const char *argv[7];

    snprintf(key, sizeof(key), "job:%s", s->job_id);
    snprintf(ver, sizeof(ver), "%lld", s->version);
    snprintf(ttl, sizeof(ttl), "%d", SCHED_SNAPSHOT_TTL_S);
    argv[0] = key;
    argv[1] = s->user_id;
    argv[2] = s->status;
    argv[3] = s->doc;
    argv[4] = ver;
    argv[5] = ttl;
    sched_doc_hash(s->doc, h);
    argv[6] = h;
    return nf_redis_eval(ctx->redis, ctx->snap_script, cb, arg, 1, 7, argv, NULL);
}
