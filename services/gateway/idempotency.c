/*
 * Idempotent submission (DESIGN §3): an Idempotency-Key header makes a retried submit
 * return the original answer instead of creating a second job.
 *
 *   Redis hash gw:idem:<user_id>:<key>
 *     state=pending, hash, token          while the first request is being accepted
 *                                          (TTL: a little more than a submit can take)
 *     state=done, hash, status, body       the original answer, TTL 24 h
 *
 *   begin (one Lua call, so concurrent duplicates race inside Redis, not in gateways):
 *     absent                        -> write pending, "new": this request submits
 *     other body hash               -> "conflict"  (409)
 *     done, same hash               -> "replay" + status + body (Idempotent-Replayed)
 *     pending, same hash            -> "pending": the caller polls begin again until
 *                                      the first one finished, then replays (or 409
 *                                      idempotency_in_progress after the wait)
 *   finish (202 sent): pending -> done with the answer, only with the caller's token
 *   abort (503, nothing accepted): DEL, only with the caller's token, so the client may
 *                                  retry with the same key
 *
 * The body hash is SHA-256 of the job type and the validated request in canonical form
 * (defaults filled, object keys sorted), so the flat and nested shapes of one request
 * are the same body, and any changed value is another.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_redis.h"

const char gw_idem_begin_lua[] =
    "local v = redis.call('HMGET', KEYS[1], 'state', 'hash', 'status', 'body')\n"
    "if not v[1] then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'pending', 'hash', ARGV[1], 'token', ARGV[2])\n"
    "  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))\n"
    "  return {'new'}\n"
    "end\n"
    "if v[2] ~= ARGV[1] then return {'conflict'} end\n"
    "if v[1] == 'done' then return {'replay', v[3] or '', v[4] or ''} end\n"
    "return {'pending'}\n";

const char gw_idem_finish_lua[] =
    "if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3])\n"
    "redis.call('HDEL', KEYS[1], 'token')\n"
    "redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))\n"
    "return 1\n";

const char gw_idem_abort_lua[] =
    "if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return 1\n";

bool gw_idem_key_valid(const char *key)
{
    size_t n;

    if (!key)
        return false;
    n = strlen(key);
    if (n == 0 || n > GW_IDEM_KEY_MAX)
        return false;
    for (; *key; key++)
        if ((unsigned char)*key < 0x21 || (unsigned char)*key > 0x7e)
            return false;
    return true;
}

/* Sorts the members of every object under it by key (stable, byte order). */
static void sort_keys(cJSON *item)
{
    cJSON *sorted = NULL, *it, *next, **pp;

    if (!item)
        return;
    for (it = item->child; it; it = it->next)
        sort_keys(it);
    if (!cJSON_IsObject(item))
        return;
    for (it = item->child; it; it = next) { /* insertion sort of the child list */
        next = it->next;
        for (pp = &sorted; *pp && strcmp((*pp)->string, it->string) <= 0; pp = &(*pp)->next)
            ;
        it->next = *pp;
        *pp = it;
    }
    /* relink prev pointers (cJSON keeps child->prev as the tail) */
    item->child = sorted;
    for (it = sorted; it; it = it->next) {
        if (it->next)
            it->next->prev = it;
        if (!it->next && sorted)
            sorted->prev = it;
    }
}

void gw_idem_hash(const char *job_type, const cJSON *req, char out[NF_SHA256_HEX_LEN + 1])
{
    cJSON *copy = cJSON_Duplicate(req, true);
    char *text, *buf;
    size_t n;

    if (!copy)
        abort();
    sort_keys(copy);
    text = nf_json_print(copy);
    cJSON_Delete(copy);
    n = strlen(job_type) + 1 + strlen(text);
    buf = nf_xmalloc(n + 1);
    snprintf(buf, n + 1, "%s\n%s", job_type, text);
    nf_crypto_sha256_hex(buf, n, out);
    free(buf);
    free(text);
}

static bool is_str(const redisReply *r, const char *s)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           strcmp(r->str, s) == 0;
}

int gw_idem_parse_reply(const redisReply *reply, struct gw_idem_reply *out)
{
    const redisReply *st, *body;
    char *end;
    long status;

    memset(out, 0, sizeof(*out));
    out->state = GW_IDEM_ERROR;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1)
        return -1;
    if (is_str(reply->element[0], "new"))
        out->state = GW_IDEM_NEW;
    else if (is_str(reply->element[0], "pending"))
        out->state = GW_IDEM_PENDING;
    else if (is_str(reply->element[0], "conflict"))
        out->state = GW_IDEM_CONFLICT;
    else if (is_str(reply->element[0], "replay") && reply->elements == 3) {
        st = reply->element[1];
        body = reply->element[2];
        if (st->type != REDIS_REPLY_STRING || body->type != REDIS_REPLY_STRING)
            return -1;
        status = strtol(st->str, &end, 10);
        if (*end || status < 200 || status > 299 || body->len == 0)
            return -1;
        out->state = GW_IDEM_REPLAY;
        out->status = (int)status;
        out->body = body->str;
        out->body_len = body->len;
    } else {
        return -1;
    }
    return 0;
}

int gw_idem_init(struct gw_ctx *ctx)
{
    ctx->idem_begin = nf_redis_script_new(ctx->svc->redis, gw_idem_begin_lua);
    ctx->idem_finish = nf_redis_script_new(ctx->svc->redis, gw_idem_finish_lua);
    ctx->idem_abort = nf_redis_script_new(ctx->svc->redis, gw_idem_abort_lua);
    return ctx->idem_begin && ctx->idem_finish && ctx->idem_abort ? 0 : -1;
}

static void redis_key(char *out, size_t len, const char *user_id, const char *key)
{
    snprintf(out, len, "gw:idem:%s:%s", user_id, key);
}

struct begin_op {
    gw_idem_cb cb;
    void *arg;
};

static void begun(redisReply *reply, void *arg)
{
    struct begin_op *op = arg;
    struct gw_idem_reply r;

    if (gw_idem_parse_reply(reply, &r) < 0 && reply && reply->type == REDIS_REPLY_ERROR)
        nf_log_kv(NF_LOG_ERROR, "idempotency_failed", "redis refused the idempotency check",
                  "error", reply->str, NULL);
    op->cb(&r, op->arg);
    free(op);
}

void gw_idem_begin(struct gw_ctx *ctx, const char *user_id, const char *key, const char *hash,
                   const char *token, int pending_ttl_s, gw_idem_cb cb, void *arg)
{
    char rkey[GW_IDEM_KEY_MAX + NF_ID_MAX + 16], ttl[16];
    const char *argv[4];
    struct begin_op *op = nf_xcalloc(1, sizeof(*op));

    op->cb = cb;
    op->arg = arg;
    redis_key(rkey, sizeof(rkey), user_id, key);
    snprintf(ttl, sizeof(ttl), "%d", pending_ttl_s);
    argv[0] = rkey;
    argv[1] = hash;
    argv[2] = token;
    argv[3] = ttl;
    /* begun fires exactly once (at once with NULL when Redis is disconnected) */
    nf_redis_eval(ctx->svc->redis, ctx->idem_begin, begun, op, 1, 4, argv, NULL);
}

void gw_idem_finish(struct gw_ctx *ctx, const char *user_id, const char *key, const char *token,
                    int status, const char *body, size_t len)
{
    char rkey[GW_IDEM_KEY_MAX + NF_ID_MAX + 16], st[16], ttl[16];
    const char *argv[5];
    size_t lens[5];

    if (!ctx->svc->redis)
        return;
    redis_key(rkey, sizeof(rkey), user_id, key);
    snprintf(st, sizeof(st), "%d", status);
    snprintf(ttl, sizeof(ttl), "%d", GW_IDEM_TTL_S);
    argv[0] = rkey;
    argv[1] = token;
    argv[2] = st;
    argv[3] = body;
    argv[4] = ttl;
    lens[0] = strlen(rkey);
    lens[1] = strlen(token);
    lens[2] = strlen(st);
    lens[3] = len;
    lens[4] = strlen(ttl);
    nf_redis_eval(ctx->svc->redis, ctx->idem_finish, NULL, NULL, 1, 5, argv, lens);
}

void gw_idem_abort(struct gw_ctx *ctx, const char *user_id, const char *key, const char *token)
{
    char rkey[GW_IDEM_KEY_MAX + NF_ID_MAX + 16];
    const char *argv[2];

    if (!ctx->svc->redis)
        return;
    redis_key(rkey, sizeof(rkey), user_id, key);
    argv[0] = rkey;
    argv[1] = token;
    nf_redis_eval(ctx->svc->redis, ctx->idem_abort, NULL, NULL, 1, 2, argv, NULL);
}
