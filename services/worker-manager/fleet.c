/*
 * Worker liveness and drain: the lost-worker scan (forge.worker.lost) and
 * POST /api/workers/drain (forge.worker.drained, events.c).
 *
 *   heartbeat --> wm:workers (zset, worker id by last heartbeat)
 *   reaper tick --> EVALSHA lost_claim: workers silent for 3 heartbeat intervals leave
 *               the set --> forge.worker.lost {worker_id, last_heartbeat_at, jobs}
 *               --> wm.workers.status = 'lost'   (their leases expire on their own and
 *               the lease reaper requeues the jobs; a worker that comes back is simply
 *               live again: its next heartbeat stamps it into the set)
 *
 *   drain:  operator (registration token) or the worker itself (worker token)
 *           --> EVALSHA drain: draining = 1 in wm:worker:<id> (the pop script then gives
 *               it nothing) --> no lease left: drained now --> forge.worker.drained
 *           --> the heartbeat answer says drain: true, so the agent stops polling and
 *               exits once its jobs are reported; its last heartbeat makes it drained
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
#include "routes.h"
#include "wm.h"

#define LOST_BATCH 100
#define DRAIN_FORBIDDEN "missing or invalid worker or registration token"

static void on_pg_status(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    if (res == NULL)
        nf_log_kv(NF_LOG_WARN, "worker_status_failed", "worker status update failed", "error", err,
                  NULL);
}

/* wm.workers.status = status (never over 'disabled'); fire and forget. */
static void set_pg_status(struct wm_ctx *ctx, const char *worker_id, const char *status)
{
    const char *params[] = {worker_id, status};
    if (ctx->svc->closing)
        return;
    nf_pg_query(ctx->pg,
                "UPDATE wm.workers SET status = $2 WHERE worker_id = $1 AND status <> 'disabled'",
                2, params, on_pg_status, NULL);
}

/* ---- lost workers ------------------------------------------------------------------------ */

/* One worker the lost_claim script took out of wm:workers (wm_scan_fn). */
static void worker_lost(struct wm_ctx *ctx, const char *worker_id, const char *seen,
                        const redisReply *jobs)
{
    char at[32], njobs[16];
    nf_event_time(strtoull(seen, NULL, 10), at);
    cJSON *data = nf_json_obj();
    nf_json_add_str(data, "worker_id", worker_id);
    nf_json_add_str(data, "last_heartbeat_at", at);
    cJSON *arr = cJSON_AddArrayToObject(data, "jobs");
    for (size_t j = 0; j < jobs->elements; j++)
        if (jobs->element[j]->type == REDIS_REPLY_STRING)
            cJSON_AddItemToArray(arr, cJSON_CreateString(jobs->element[j]->str));
    snprintf(njobs, sizeof(njobs), "%zu", jobs->elements);
    nf_log_kv(NF_LOG_WARN, "worker_lost", "worker missed 3 heartbeats: lost", "worker_id",
              worker_id, "last_heartbeat_at", at, "jobs", njobs, NULL);
    nf_metrics_counter_add(ctx->m.workers_lost, 1);
    wm_event_worker(ctx, "forge.worker.lost", worker_id, data);
    /* Postgres keeps last_seen_at coarse (once a minute): store the real last beat */
    const char *params[] = {worker_id, seen};
    nf_pg_query(ctx->pg,
                "UPDATE wm.workers SET status = 'lost', last_seen_at = "
                "greatest(last_seen_at, to_timestamp($2::bigint / 1000.0)) "
                "WHERE worker_id = $1 AND status <> 'disabled'",
                2, params, on_pg_status, NULL);
}

static void on_lost_claimed(redisReply *reply, void *arg)
{
    wm_scan_rows(arg, reply, REDIS_REPLY_ARRAY, worker_lost, "lost_scan_failed",
                 "lost-worker script failed");
}

void wm_fleet_scan(struct wm_ctx *ctx)
{
    char cutoff[24], limit[8];
    uint64_t window = (uint64_t)ctx->cfg->heartbeat_s * 3000;
    uint64_t now = nf_now_ms();
    if (now <= window)
        return;
    snprintf(cutoff, sizeof(cutoff), "%llu", (unsigned long long)(now - window));
    snprintf(limit, sizeof(limit), "%d", LOST_BATCH);
    const char *argv[] = {"wm:workers", cutoff, limit};
    ctx->reaping++;
    /* On -1 on_lost_claimed already ran (NULL) and decremented. */
    nf_redis_eval(ctx->redis, ctx->lua_lost_claim, on_lost_claimed, ctx, 1, 3, argv, NULL);
}

/* ---- POST /api/workers/drain {worker_id} --------------------------------------------------- */

struct drain_call {
    struct wm_ctx *ctx;
    struct nf_http_req *req;
    char worker_id[NF_ID_MAX];
    bool by_operator; /* the registration token, not the worker's own */
};

static void on_drain(redisReply *reply, void *arg)
{
    struct drain_call *call = arg;
    struct wm_ctx *ctx = call->ctx;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            nf_log_kv(NF_LOG_ERROR, "drain_failed", "drain script failed", "error", reply->str,
                      NULL);
        wm_reply_unavailable(call->req, "worker store unavailable");
        free(call);
        return;
    }
    if (reply->integer < 0) {
        nf_http_reply_error(call->req, 404, "not_found", "worker_id",
                            "no live worker with this id (lost, stopped or unknown)");
        free(call);
        return;
    }
    bool drained = reply->integer >= 2;
    if (reply->integer == 3 && !ctx->svc->closing)
        wm_worker_drained(ctx, call->worker_id,
                          call->by_operator ? "drained by the operator" : "drained by the worker");
    set_pg_status(ctx, call->worker_id, drained ? "offline" : "draining");
    nf_log_kv(NF_LOG_INFO, "worker_draining", "worker set to drain", "worker_id", call->worker_id,
              "by", call->by_operator ? "operator" : "worker", NULL);
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "worker_id", call->worker_id);
    nf_json_add_str(body, "status", drained ? "drained" : "draining");
    nf_http_reply_json(call->req, 202, body);
    free(call);
}

static void drain_run(struct drain_call *call)
{
    struct wm_ctx *ctx = call->ctx;
    char worker_key[NF_ID_MAX + 16], wleases_key[NF_ID_MAX + 16];
    snprintf(worker_key, sizeof(worker_key), "wm:worker:%s", call->worker_id);
    snprintf(wleases_key, sizeof(wleases_key), "wm:wleases:%s", call->worker_id);
    const char *argv[] = {worker_key, wleases_key, "wm:workers", call->worker_id};
    nf_redis_eval(ctx->redis, ctx->lua_drain, on_drain, call, 3, 4, argv, NULL);
}

static void on_drain_auth(struct wm_ctx *ctx, int status, const struct wm_worker *w, void *arg)
{
    struct drain_call *call = arg;
    if (status != 0 || ctx->svc->closing) {
        wm_reply_auth_failed(call->req, status, DRAIN_FORBIDDEN);
        free(call);
        return;
    }
    drain_run(call);
}

void wm_route_drain(struct nf_http_req *req, void *arg)
{
    struct wm_ctx *ctx = arg;
    struct nf_json_err err = {0};
    const char *worker_id = NULL;

    const char *token = NULL;
    cJSON *body = wm_req_body(ctx, req, DRAIN_FORBIDDEN, &token);
    if (body == NULL)
        return; /* answered 403 or 400 */
    if (nf_json_get_str(body, "worker_id", true, &worker_id, &err) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    if (!nf_id_valid("wrk", worker_id)) {
        nf_http_reply_error(req, 422, "invalid_params", "worker_id",
                            "worker_id must be a worker id");
        return;
    }
    struct drain_call *call = nf_xcalloc(1, sizeof(*call));
    call->ctx = ctx;
    call->req = req;
    snprintf(call->worker_id, sizeof(call->worker_id), "%s", worker_id);
    if (wm_registration_ok(ctx, token)) {
        call->by_operator = true;
        drain_run(call);
        return;
    }
    wm_auth_worker(ctx, worker_id, token, on_drain_auth, call);
}
