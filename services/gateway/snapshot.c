/*
 * The Redis job snapshot job:<id> (docs/internals.md): a hash with user_id, status and doc
 * (the job object JSON), TTL 7 days. The gateway creates it before producing the request,
 * the scheduler updates it afterwards, and GET /api/jobs/{id} reads it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_redis.h"

/* One round trip and atomic: a snapshot never exists without its TTL. */
static const char put_lua[] =
    "redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'status', 'queued', 'doc', ARGV[2])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "return 1\n";

struct put_op {
    gw_snapshot_put_cb cb;
    void *arg;
};

struct get_op {
    gw_snapshot_get_cb cb;
    void *arg;
};

int gw_snapshot_init(struct gw_ctx *ctx)
{
    ctx->snap_put = nf_redis_script_new(ctx->svc->redis, put_lua);
    return ctx->snap_put ? 0 : -1;
}

static void put_done(redisReply *reply, void *arg)
{
    struct put_op *op = arg;
    int result = 0;

    if (!reply) {
        result = -1;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        nf_log_kv(NF_LOG_ERROR, "snapshot_put_failed", "redis refused the job snapshot", "error",
                  reply->str, NULL);
        result = -1;
    }
    op->cb(result, op->arg);
    free(op);
}

void gw_snapshot_put(struct gw_ctx *ctx, const char *job_id, const char *user_id, const char *doc,
                     size_t doc_len, gw_snapshot_put_cb cb, void *arg)
{
    char key[8 + NF_ID_MAX], ttl[16];
    const char *argv[4];
    size_t lens[4];
    struct put_op *op = nf_xmalloc(sizeof(*op));

    op->cb = cb;
    op->arg = arg;
    snprintf(key, sizeof(key), "job:%s", job_id);
    snprintf(ttl, sizeof(ttl), "%d", GW_SNAPSHOT_TTL_S);
    argv[0] = key;
    lens[0] = strlen(key);
    argv[1] = user_id;
    lens[1] = strlen(user_id);
    argv[2] = doc;
    lens[2] = doc_len;
    argv[3] = ttl;
    lens[3] = strlen(ttl);
    /* put_done fires exactly once, right away when Redis is disconnected */
    nf_redis_eval(ctx->svc->redis, ctx->snap_put, put_done, op, 1, 4, argv, lens);
}

static void get_done(redisReply *reply, void *arg)
{
    struct get_op *op = arg;
    const redisReply *user, *doc;

    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        if (reply && reply->type == REDIS_REPLY_ERROR)
            nf_log_kv(NF_LOG_ERROR, "snapshot_get_failed", "redis refused the snapshot read",
                      "error", reply->str, NULL);
        op->cb(-1, NULL, NULL, 0, op->arg);
    } else {
        user = reply->element[0];
        doc = reply->element[1];
        if (user->type == REDIS_REPLY_STRING && doc->type == REDIS_REPLY_STRING)
            op->cb(1, user->str, doc->str, doc->len, op->arg);
        else
            op->cb(0, NULL, NULL, 0, op->arg);
    }
    free(op);
}

void gw_snapshot_get(struct gw_ctx *ctx, const char *job_id, gw_snapshot_get_cb cb, void *arg)
{
    struct get_op *op = nf_xmalloc(sizeof(*op));

    op->cb = cb;
    op->arg = arg;
    nf_redis_cmd(ctx->svc->redis, get_done, op, "HMGET job:%s user_id doc", job_id);
}

void gw_snapshot_del(struct gw_ctx *ctx, const char *job_id)
{
    if (ctx->svc->redis)
        nf_redis_cmd(ctx->svc->redis, NULL, NULL, "DEL job:%s", job_id);
}
