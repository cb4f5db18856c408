/*
 * Token checks for the worker routes: the registration token (operator secret) and the
 * worker tokens of the routes called by agents after registration.
 *
 *   token --sha256--> hex --(constant time)--> wm:worker:<id>.token_hash
 *                                      miss --> wm.workers row --> refill the hash
 *   a cached record with the field "disabled" (disable.c) is refused without a look
 *
 * Only the SHA-256 of a worker token is ever stored; the token itself is shown once, in
 * the registration answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "nf_redis.h"
#include "nf_svc.h"
#include "wm.h"

/* Constant-time check of the registration token: both sides hashed to equal length. */
bool wm_registration_ok(const struct wm_ctx *ctx, const char *token)
{
    uint8_t got[32];
    if (token == NULL)
        return false;
    nf_crypto_sha256(token, strlen(token), got);
    return nf_crypto_equal(got, ctx->reg_token_hash, sizeof(got));
}

cJSON *wm_req_body(struct wm_ctx *ctx, struct nf_http_req *req, const char *forbidden,
                   const char **token)
{
    *token = wm_bearer(nf_http_req_header(req, "Authorization"));
    if (*token == NULL) {
        nf_metrics_counter_add(ctx->m.auth_failed, 1);
        nf_http_reply_error(req, 403, "forbidden", NULL, "%s", forbidden);
        return NULL;
    }
    return nf_http_req_json(req); /* NULL: answered 400 */
}

void wm_reply_auth_failed(struct nf_http_req *req, int status, const char *forbidden)
{
    if (status == 403)
        nf_http_reply_error(req, 403, "forbidden", NULL, "%s", forbidden);
    else
        wm_reply_unavailable(req, "worker store unavailable");
}

/* ---- worker tokens ----------------------------------------------------------------------- */

struct auth_call {
    struct wm_ctx *ctx;
    char worker_id[NF_ID_MAX];
    char token_hash[NF_SHA256_HEX_LEN + 1];
    wm_auth_cb cb;
    void *arg;
};

static void finish(struct auth_call *call, int status, const struct wm_worker *w)
{
    if (status == 403)
        nf_metrics_counter_add(call->ctx->m.auth_failed, 1);
    call->cb(call->ctx, status, w, call->arg);
    free(call);
}

static bool token_ok(const struct auth_call *call, const struct wm_worker *w)
{
    if (strlen(w->token_hash) != NF_SHA256_HEX_LEN)
        return false;
    return nf_crypto_equal(call->token_hash, w->token_hash, NF_SHA256_HEX_LEN);
}

/* Fills w from the string fields of a worker record; -1 if a field is malformed. */
static int worker_from_fields(struct wm_worker *w, const char *worker_id, const char *hash,
                              const char *hostname, const char *gpu_type, const char *gpu_count,
                              const char *types, const char *labels, const char *version)
{
    snprintf(w->worker_id, sizeof(w->worker_id), "%s", worker_id);
    snprintf(w->token_hash, sizeof(w->token_hash), "%s", hash ? hash : "");
    w->hostname = nf_xstrdup(hostname ? hostname : "");
    w->gpu_type = nf_xstrdup(gpu_type ? gpu_type : "");
    w->version = nf_xstrdup(version ? version : "");
    w->gpu_count = gpu_count ? (int)strtol(gpu_count, NULL, 10) : 0;
    if (wm_types_parse(types ? types : "", &w->types) < 0)
        return -1;
    w->labels = labels ? nf_json_parse(labels, strlen(labels)) : nf_json_obj();
    if (w->labels == NULL || !cJSON_IsObject(w->labels))
        return -1;
    return 0;
}

static void on_pg_worker(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct auth_call *call = arg;
    struct wm_worker w = {0};

    if (res == NULL) {
        nf_log_kv(NF_LOG_ERROR, "worker_lookup_failed", "worker lookup failed", "worker_id",
                  call->worker_id, "error", err, NULL);
        finish(call, 503, NULL);
        return;
    }
    if (PQntuples(res) != 1) {
        finish(call, 403, NULL);
        return;
    }
    if (worker_from_fields(&w, call->worker_id, nf_pg_val(res, 0, "token_hash"),
                           nf_pg_val(res, 0, "hostname"), nf_pg_val(res, 0, "gpu_type"),
                           nf_pg_val(res, 0, "gpu_count"), nf_pg_val(res, 0, "job_types"),
                           nf_pg_val(res, 0, "labels"), nf_pg_val(res, 0, "version")) < 0) {
        nf_log_kv(NF_LOG_ERROR, "worker_record_bad", "worker row is malformed", "worker_id",
                  call->worker_id, NULL);
        wm_worker_clear(&w);
        finish(call, 403, NULL);
        return;
    }
    if (!token_ok(call, &w)) {
        wm_worker_clear(&w);
        finish(call, 403, NULL);
        return;
    }
    if (!call->ctx->svc->closing)
        wm_worker_cache(call->ctx, &w, nf_pg_val(res, 0, "registered_at"));
    finish(call, 0, &w);
    wm_worker_clear(&w);
}

static const char *hash_field(const redisReply *reply, const char *name)
{
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *k = reply->element[i], *v = reply->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(k->str, name) == 0)
            return v->str;
    }
    return NULL;
}

static void on_redis_worker(redisReply *reply, void *arg)
{
    struct auth_call *call = arg;
    struct wm_ctx *ctx = call->ctx;
    struct wm_worker w = {0};

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        finish(call, 503, NULL);
        return;
    }
    if (reply->elements == 0) {
        if (ctx->svc->closing) {
            finish(call, 503, NULL);
            return;
        }
        const char *params[] = {call->worker_id};
        nf_pg_query(ctx->pg,
                    "SELECT token_hash, hostname, gpu_type, gpu_count, "
                    "array_to_string(job_types, ',') AS job_types, labels::text AS labels, "
                    "version, to_char(registered_at AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS registered_at "
                    "FROM wm.workers WHERE worker_id = $1 AND status <> 'disabled'",
                    1, params, on_pg_worker, call);
        return;
    }
    /* disabled (disable.c): refused at once, whatever the cached token says */
    if (hash_field(reply, "disabled") != NULL) {
        finish(call, 403, NULL);
        return;
    }
    if (worker_from_fields(&w, call->worker_id, hash_field(reply, "token_hash"),
                           hash_field(reply, "hostname"), hash_field(reply, "gpu_type"),
                           hash_field(reply, "gpu_count"), hash_field(reply, "job_types"),
                           hash_field(reply, "labels"), hash_field(reply, "version")) < 0 ||
        !token_ok(call, &w)) {
        wm_worker_clear(&w);
        finish(call, 403, NULL);
        return;
    }
    finish(call, 0, &w);
    wm_worker_clear(&w);
}

void wm_auth_worker(struct wm_ctx *ctx, const char *worker_id, const char *token, wm_auth_cb cb,
                    void *arg)
{
    if (token == NULL || worker_id == NULL || !nf_id_valid("wrk", worker_id)) {
        nf_metrics_counter_add(ctx->m.auth_failed, 1);
        cb(ctx, 403, NULL, arg);
        return;
    }
    struct auth_call *call = nf_xcalloc(1, sizeof(*call));
    call->ctx = ctx;
    call->cb = cb;
    call->arg = arg;
    snprintf(call->worker_id, sizeof(call->worker_id), "%s", worker_id);
    nf_crypto_sha256_hex(token, strlen(token), call->token_hash);
    /* On -1 the callback already fired with NULL (503). */
    nf_redis_cmd(ctx->redis, on_redis_worker, call, "HGETALL wm:worker:%s", call->worker_id);
}

void wm_worker_cache(struct wm_ctx *ctx, const struct wm_worker *w, const char *registered_at)
{
    char key[NF_ID_MAX + 16], count[16], types[128], ttl[16], now[24];
    char *labels = nf_json_print(w->labels);
    snprintf(key, sizeof(key), "wm:worker:%s", w->worker_id);
    snprintf(count, sizeof(count), "%d", w->gpu_count);
    snprintf(ttl, sizeof(ttl), "%d", 3 * ctx->cfg->heartbeat_s);
    snprintf(now, sizeof(now), "%llu", (unsigned long long)nf_now_ms());
    wm_types_join(w->types, types, sizeof(types));
    const char *argv[] = {"HSET",          key,
                          "worker_id",     w->worker_id,
                          "token_hash",    w->token_hash,
                          "hostname",      w->hostname,
                          "gpu_type",      w->gpu_type ? w->gpu_type : "",
                          "gpu_count",     count,
                          "job_types",     types,
                          "labels",        labels,
                          "version",       w->version ? w->version : "",
                          "registered_at", registered_at ? registered_at : "",
                          "last_seen_ms",  now};
    nf_redis_cmd_argv(ctx->redis, NULL, NULL, (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
    const char *exp[] = {"EXPIRE", key, ttl};
    nf_redis_cmd_argv(ctx->redis, NULL, NULL, 3, exp, NULL);
    /* liveness for the lost-worker scan (fleet.c); NX: never move a newer stamp back */
    const char *live[] = {"ZADD", "wm:workers", "NX", now, w->worker_id};
    nf_redis_cmd_argv(ctx->redis, NULL, NULL, 5, live, NULL);
    free(labels);
}
