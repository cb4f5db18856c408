/*
 * api_keys.last_used_at without a write per request. The gateway's rate-limit script
 * records every allowed request as HSET auth:used <key_id> <ms> (in the same round trip);
 * every NF_AUTH_USAGE_FLUSH_MS one nf-auth takes the whole hash atomically and writes it
 * in one UPDATE:
 *
 *   timer -> EVALSHA drain (HGETALL + DEL auth:used) -> {key_id: ms, ...}
 *         -> UPDATE api_keys SET last_used_at FROM unnest(ids, ms) (only moves forward)
 *   every 10 minutes also: DELETE expired sessions
 *
 * Several nf-auth copies each drain what arrived since the last drain: nothing is written
 * twice. A batch whose UPDATE fails is dropped (last_used_at is informational) and logged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_event.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "nf_redis.h"
#include "routes.h"

#define USED_KEY "auth:used"
#define CLEANUP_EVERY_MS (10ULL * 60 * 1000)

static const char drain_lua[] = "local v = redis.call('HGETALL', KEYS[1])\n"
                                "if #v > 0 then redis.call('DEL', KEYS[1]) end\n"
                                "return v\n";

static const char update_sql[] =
    "UPDATE auth.api_keys k SET last_used_at = u.ts"
    " FROM (SELECT i, to_timestamp(m / 1000.0) AS ts"
    "       FROM unnest($1::text[], $2::bigint[]) AS x(i, m)) u"
    " WHERE k.key_id = u.i AND (k.last_used_at IS NULL OR k.last_used_at < u.ts)";

static const char cleanup_sql[] = "DELETE FROM auth.sessions WHERE expires_at < now()";

static bool all_digits(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > 15)
        return false;
    for (i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static void updated(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct auth_ctx *ctx = arg;
    char n[24];

    ctx->usage_busy = false;
    if (!res) {
        nf_log_kv(NF_LOG_WARN, "usage_flush_failed", "cannot record key usage", "error", err,
                  "pgcode", pgcode, NULL);
        auth_backend_error(ctx, AUTH_BACKEND_PG);
        return;
    }
    snprintf(n, sizeof(n), "%s", PQcmdTuples((PGresult *)res));
    nf_metrics_counter_add(ctx->m_usage_flushed, strtoull(n, NULL, 10));
    nf_log_kv(NF_LOG_DEBUG, "usage_flushed", "key usage recorded", "keys", n, NULL);
}

/* Appends s (n bytes) to the growing buffer. */
static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = nf_xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void drained(redisReply *reply, void *arg)
{
    struct auth_ctx *ctx = arg;
    char *ids = NULL, *ms = NULL, id[NF_ID_MAX];
    size_t ilen = 0, icap = 0, mlen = 0, mcap = 0, i, n = 0;
    const char *params[2];

    if (ctx->closing) {
        ctx->usage_busy = false;
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        ctx->usage_busy = false;
        if (!reply || reply->type == REDIS_REPLY_ERROR)
            auth_backend_error(ctx, AUTH_BACKEND_REDIS);
        return;
    }
    append(&ids, &ilen, &icap, "{", 1);
    append(&ms, &mlen, &mcap, "{", 1);
    for (i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *k = reply->element[i], *v = reply->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            k->len >= sizeof(id) || !all_digits(v->str, v->len))
            continue;
        memcpy(id, k->str, k->len);
        id[k->len] = '\0';
        if (!nf_id_valid("key", id)) /* ids are [0-9A-Z_]: safe in an array literal */
            continue;
        if (n > 0) {
            append(&ids, &ilen, &icap, ",", 1);
            append(&ms, &mlen, &mcap, ",", 1);
        }
        append(&ids, &ilen, &icap, id, k->len);
        append(&ms, &mlen, &mcap, v->str, v->len);
        n++;
    }
    append(&ids, &ilen, &icap, "}", 1);
    append(&ms, &mlen, &mcap, "}", 1);
    if (n == 0) {
        ctx->usage_busy = false;
    } else {
        params[0] = ids;
        params[1] = ms;
        nf_pg_query(ctx->pg, update_sql, 2, params, updated, ctx); /* copied */
    }
    free(ids);
    free(ms);
}

static void cleaned(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct auth_ctx *ctx = arg;

    if (!res) {
        nf_log_kv(NF_LOG_WARN, "session_cleanup_failed", "cannot delete expired sessions", "error",
                  err, NULL);
        auth_backend_error(ctx, AUTH_BACKEND_PG);
        return;
    }
    nf_log_kv(NF_LOG_DEBUG, "sessions_cleaned", "expired sessions deleted", "sessions",
              PQcmdTuples((PGresult *)res), NULL);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct auth_ctx *ctx = arg;
    const char *argv[1] = {USED_KEY};
    uint64_t now = nf_now_ms();

    if (ctx->closing)
        return;
    if (now - ctx->last_cleanup_ms >= CLEANUP_EVERY_MS) {
        ctx->last_cleanup_ms = now;
        nf_pg_query(ctx->pg, cleanup_sql, 0, NULL, cleaned, ctx);
    }
    if (ctx->usage_busy)
        return;
    ctx->usage_busy = true;
    /* the callback fires exactly once, maybe right now when Redis is down */
    nf_redis_eval(ctx->redis, ctx->used_drain, drained, ctx, 1, 1, argv, NULL);
}

int auth_usage_start(struct auth_ctx *ctx)
{
    struct timeval tv;

    ctx->used_drain = nf_redis_script_new(ctx->redis, drain_lua);
    if (!ctx->used_drain)
        return -1;
    ctx->usage = event_new(ctx->base, -1, EV_PERSIST, tick, ctx);
    if (!ctx->usage)
        return -1;
    tv.tv_sec = ctx->cfg->usage_flush_ms / 1000;
    tv.tv_usec = (suseconds_t)(ctx->cfg->usage_flush_ms % 1000) * 1000;
    ctx->last_cleanup_ms = nf_now_ms() - CLEANUP_EVERY_MS; /* clean once soon after start */
    return event_add(ctx->usage, &tv);
}

void auth_usage_close(struct auth_ctx *ctx)
{
    if (ctx->usage)
        event_free(ctx->usage);
    ctx->usage = NULL;
}
