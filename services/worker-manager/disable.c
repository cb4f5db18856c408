/*
 * POST /api/workers/disable {worker_id}: an operator (registration token) shuts a worker
 * out for good, at once (issue 15: a disabled worker kept authenticating from the Redis
 * cache of its token for as long as it kept calling).
 *
 *   operator --> UPDATE wm.workers SET status = 'disabled'   (404: no such worker)
 *            --> HSET wm:worker:<id> disabled 1, EXPIRE      (the token cache itself)
 *            --> 200 {"worker_id", "status": "disabled"}
 *
 * The marker sits in the cached record rather than replacing it: a token lookup that read
 * the row just before the UPDATE and refills the cache just after still leaves the field,
 * and wm_auth_worker refuses a record that has it. Once the record expires, lookups go
 * to Postgres, which no longer lists a disabled worker. Leases the worker holds are left
 * to the reaper: its heartbeats now fail, so they expire and their jobs are retried.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_pg.h"
#include "nf_redis.h"
#include "routes.h"
#include "wm.h"

#define DISABLE_FORBIDDEN "missing or invalid registration token"

struct disable_call {
    struct wm_ctx *ctx;
    struct nf_http_req *req;
    char worker_id[NF_ID_MAX];
};

static void on_marked(redisReply *reply, void *arg)
{
    struct disable_call *call = arg;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        /* Postgres says disabled; the cache may not know yet: the operator retries */
        wm_reply_unavailable(call->req, "worker cache unavailable, retry to finish disabling");
        free(call);
        return;
    }
    nf_log_kv(NF_LOG_INFO, "worker_disabled", "worker disabled", "worker_id", call->worker_id,
              NULL);
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "worker_id", call->worker_id);
    nf_json_add_str(body, "status", "disabled");
    nf_http_reply_json(call->req, 200, body);
    free(call);
}

static void on_updated(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct disable_call *call = arg;
    struct wm_ctx *ctx = call->ctx;
    char key[NF_ID_MAX + 16], ttl[16];

    if (res == NULL) {
        nf_log_kv(NF_LOG_ERROR, "worker_disable_failed", "cannot disable a worker", "worker_id",
                  call->worker_id, "error", err, "pgcode", pgcode, NULL);
        wm_reply_unavailable(call->req, "worker store unavailable");
        free(call);
        return;
    }
    if (PQntuples(res) != 1) {
        nf_http_reply_error(call->req, 404, "not_found", "worker_id", "no such worker");
        free(call);
        return;
    }
    snprintf(key, sizeof(key), "wm:worker:%s", call->worker_id);
    /* at least as long as a refill made just before could live */
    snprintf(ttl, sizeof(ttl), "%d", 3 * ctx->cfg->heartbeat_s + 60);
    const char *mark[] = {"HSET", key, "disabled", "1"};
    nf_redis_cmd_argv(ctx->redis, NULL, NULL, 4, mark, NULL);
    const char *exp[] = {"EXPIRE", key, ttl};
    /* the same connection, in order: its answer says both went through */
    nf_redis_cmd_argv(ctx->redis, on_marked, call, 3, exp, NULL);
}

void wm_route_disable(struct nf_http_req *req, void *arg)
{
    struct wm_ctx *ctx = arg;
    struct nf_json_err err = {0};
    const char *worker_id = NULL, *token = NULL;
    cJSON *body = wm_req_body(ctx, req, DISABLE_FORBIDDEN, &token);

    if (body == NULL)
        return; /* answered 403 or 400 */
    if (!wm_registration_ok(ctx, token)) {
        wm_reply_auth_failed(req, 403, DISABLE_FORBIDDEN);
        return;
    }
    if (nf_json_get_str(body, "worker_id", true, &worker_id, &err) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    if (!nf_id_valid("wrk", worker_id)) {
        nf_http_reply_error(req, 422, "invalid_params", "worker_id",
                            "worker_id must be a worker id");
        return;
    }
    if (wm_refuse_stopping(ctx, req))
        return;
    struct disable_call *call = nf_xcalloc(1, sizeof(*call));
    call->ctx = ctx;
    call->req = req;
    snprintf(call->worker_id, sizeof(call->worker_id), "%s", worker_id);
    const char *params[] = {call->worker_id};
    nf_pg_query(ctx->pg,
                "UPDATE wm.workers SET status = 'disabled' WHERE worker_id = $1 "
                "RETURNING worker_id",
                1, params, on_updated, call);
}
