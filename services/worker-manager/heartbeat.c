/*
 * POST /api/workers/heartbeat {worker_id, jobs: [{job_id, lease_id, progress}], draining}
 *
 *   auth --> EVALSHA heartbeat: renew (and confirm) the listed leases that are still
 *            this worker's, release its confirmed leases it no longer lists (a lease
 *            never confirmed - a job the worker may never have received - is left to
 *            expire and be reaped as lost), refresh the worker's liveness (wm:workers),
 *            mark it draining when it says so; a draining worker without leases is
 *            drained --> forge.worker.drained (once)
 *            --> 200 {lease_expires_at, cancelled: [job_id...], lost: [job_id...],
 *                    lost_leases: [lease_id...], drain, heartbeat_interval_s}
 *
 * `cancelled` lists jobs the user cancelled (wm:cancel:<worker_id>): the agent stops the
 * handler and reports forge.job.cancelled. `lost` lists jobs whose lease the worker no
 * longer holds (reaped after missed heartbeats, or superseded by a retry): the agent
 * stops them and reports nothing, since the job has moved on without it. When `lost` is
 * not empty the answer is 409 (a heartbeat for a job the worker does not hold) with the
 * same fields plus `error`; every other listed lease was renewed all the same. `drain` is
 * true once the worker is draining (its own SIGTERM or POST /api/workers/drain): it gets
 * no new jobs and should exit when its jobs are done.
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

#define PG_SEEN_EVERY_MS 60000

struct hb_call {
    struct wm_ctx *ctx;
    struct nf_http_req *req;
    char worker_id[NF_ID_MAX];
    const cJSON *jobs; /* points into the request body (lives with req) */
    bool draining;     /* the agent says it is stopping */
};

static void add_ids(cJSON *body, const char *name, const redisReply *list)
{
    cJSON *arr = cJSON_AddArrayToObject(body, name);
    if (list == NULL || list->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < list->elements; i++)
        if (list->element[i]->type == REDIS_REPLY_STRING)
            cJSON_AddItemToArray(arr, cJSON_CreateString(list->element[i]->str));
}

static long long int_at(const redisReply *reply, size_t i)
{
    if (i >= reply->elements || reply->element[i]->type != REDIS_REPLY_INTEGER)
        return 0;
    return reply->element[i]->integer;
}

static void on_pg_seen(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    if (res == NULL)
        nf_log_kv(NF_LOG_WARN, "worker_seen_failed", "last_seen_at update failed", "error", err,
                  NULL);
}

static void on_heartbeat(redisReply *reply, void *arg)
{
    struct hb_call *call = arg;
    struct wm_ctx *ctx = call->ctx;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 8 ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            nf_log_kv(NF_LOG_ERROR, "heartbeat_failed", "heartbeat script failed", "error",
                      reply->str, NULL);
        wm_reply_unavailable(call->req, "lease store unavailable");
        free(call);
        return;
    }
    bool draining = int_at(reply, 5) == 1;
    long long drained = int_at(reply, 6);
    if (int_at(reply, 0) == 1 && !ctx->svc->closing) {
        const char *status = drained ? "offline" : draining ? "draining" : "online";
        const char *params[] = {call->worker_id, status};
        nf_pg_query(ctx->pg,
                    "UPDATE wm.workers SET last_seen_at = now(), status = $2 "
                    "WHERE worker_id = $1 AND status <> 'disabled'",
                    2, params, on_pg_seen, NULL);
    }
    if (drained == 1 && !ctx->svc->closing)
        wm_worker_drained(ctx, call->worker_id, "the worker stopped");
    long long released = int_at(reply, 3);
    if (released > 0)
        nf_metrics_counter_add(ctx->m.leases_released, (uint64_t)released);
    char expires[32];
    nf_event_time(nf_now_ms() + (uint64_t)ctx->cfg->lease_ttl_s * 1000, expires);
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "lease_expires_at", expires);
    add_ids(body, "cancelled", reply->element[1]);
    add_ids(body, "lost", reply->element[4]);
    add_ids(body, "lost_leases", reply->element[7]); /* same order as lost */
    cJSON_AddBoolToObject(body, "drain", draining);
    nf_json_add_int(body, "heartbeat_interval_s", ctx->cfg->heartbeat_s);
    if (reply->element[1]->elements > 0)
        nf_log_kv(NF_LOG_INFO, "heartbeat_cancelled", "worker told to stop cancelled jobs",
                  "worker_id", call->worker_id, NULL);
    if (reply->element[4]->type == REDIS_REPLY_ARRAY && reply->element[4]->elements > 0) {
        /* 409, with the whole answer: the other leases were renewed all the same */
        nf_log_kv(NF_LOG_WARN, "heartbeat_lost", "worker listed jobs it no longer holds",
                  "worker_id", call->worker_id, NULL);
        nf_metrics_counter_add(ctx->m.heartbeat_lost_jobs, (uint64_t)reply->element[4]->elements);
        cJSON *error = nf_json_obj();
        nf_json_add_str(error, "code", "lease_lost");
        nf_json_add_str(error, "message",
                        "this worker does not hold the leases of the jobs in `lost`: stop "
                        "them and do not report them; the other jobs' leases were renewed");
        nf_json_add_str(error, "request_id", nf_http_req_id(call->req));
        cJSON_AddItemToObject(body, "error", error);
        nf_http_reply_json(call->req, 409, body);
        free(call);
        return;
    }
    nf_http_reply_json(call->req, 200, body);
    free(call);
}

static void on_auth(struct wm_ctx *ctx, int status, const struct wm_worker *w, void *arg)
{
    struct hb_call *call = arg;
    if (status != 0 || ctx->svc->closing) {
        wm_reply_auth_failed(call->req, status, WM_WORKER_FORBIDDEN);
        free(call);
        return;
    }
    int njobs = cJSON_GetArraySize(call->jobs);
    int argc = 5 + 7 + 2 * njobs;
    const char **argv = nf_xcalloc((size_t)argc, sizeof(*argv));
    char worker_key[NF_ID_MAX + 16], wleases_key[NF_ID_MAX + 16], cancel_key[NF_ID_MAX + 16];
    char now_s[24], ttl_ms[16], worker_ttl[16], done_ttl[16], pg_every[16];
    snprintf(worker_key, sizeof(worker_key), "wm:worker:%s", call->worker_id);
    snprintf(wleases_key, sizeof(wleases_key), "wm:wleases:%s", call->worker_id);
    snprintf(cancel_key, sizeof(cancel_key), "wm:cancel:%s", call->worker_id);
    snprintf(now_s, sizeof(now_s), "%llu", (unsigned long long)nf_now_ms());
    snprintf(ttl_ms, sizeof(ttl_ms), "%d", ctx->cfg->lease_ttl_s * 1000);
    snprintf(worker_ttl, sizeof(worker_ttl), "%d", 3 * ctx->cfg->heartbeat_s);
    snprintf(done_ttl, sizeof(done_ttl), "%d", WM_DONE_TTL_S);
    snprintf(pg_every, sizeof(pg_every), "%d", PG_SEEN_EVERY_MS);
    int i = 0;
    argv[i++] = "wm:leases";
    argv[i++] = worker_key;
    argv[i++] = wleases_key;
    argv[i++] = cancel_key;
    argv[i++] = "wm:workers";
    argv[i++] = call->worker_id;
    argv[i++] = now_s;
    argv[i++] = ttl_ms;
    argv[i++] = worker_ttl;
    argv[i++] = done_ttl;
    argv[i++] = pg_every;
    argv[i++] = call->draining ? "1" : "0";
    const cJSON *job = NULL;
    cJSON_ArrayForEach(job, call->jobs)
    {
        argv[i++] = nf_json_str(job, "job_id");
        argv[i++] = nf_json_str(job, "lease_id");
    }
    nf_redis_eval(ctx->redis, ctx->lua_heartbeat, on_heartbeat, call, 5, argc, argv, NULL);
    free(argv);
}

/* Checks the jobs list: at most WM_MAX_HB_JOBS entries of {job_id, lease_id, progress?}. */
static int check_jobs(const cJSON *jobs, struct nf_json_err *err)
{
    int n = 0;
    const cJSON *job = NULL;
    cJSON_ArrayForEach(job, jobs)
    {
        const char *s = NULL;
        double progress = 0;
        char param[32];
        if (++n > WM_MAX_HB_JOBS)
            return nf_json_fail(err, "jobs", "jobs must have at most %d entries", WM_MAX_HB_JOBS);
        snprintf(param, sizeof(param), "jobs[%d]", n - 1);
        if (!cJSON_IsObject(job))
            return nf_json_fail(err, param, "%s must be an object", param);
        if (nf_json_get_str(job, "job_id", true, &s, err) != 0 || !nf_id_valid("job", s))
            return nf_json_fail(err, param, "%s.job_id must be a job id", param);
        if (nf_json_get_str(job, "lease_id", true, &s, err) != 0 || !nf_id_valid("lse", s))
            return nf_json_fail(err, param, "%s.lease_id must be a lease id", param);
        if (nf_json_get_num(job, "progress", false, 0, 1, &progress, err) < 0)
            return nf_json_fail(err, param, "%s.progress must be a number from 0 to 1", param);
    }
    return 0;
}

void wm_route_heartbeat(struct nf_http_req *req, void *arg)
{
    struct wm_ctx *ctx = arg;
    struct nf_json_err err = {0};
    const char *worker_id = NULL;
    const cJSON *jobs = NULL;
    bool draining = false;
    static const cJSON empty = {.type = cJSON_Array};

    const char *token = NULL;
    cJSON *body = wm_req_body(ctx, req, WM_WORKER_FORBIDDEN, &token);
    if (body == NULL)
        return; /* answered 403 or 400 */
    int rc = nf_json_get_str(body, "worker_id", true, &worker_id, &err);
    if (rc == 0)
        rc = nf_json_get_arr(body, "jobs", false, &jobs, &err);
    if (rc == 0 || rc == NF_JSON_ABSENT)
        rc = jobs ? check_jobs(jobs, &err) : 0;
    if (rc == 0)
        rc = nf_json_get_bool(body, "draining", false, &draining, &err) < 0 ? -1 : 0;
    if (rc < 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    struct hb_call *call = nf_xcalloc(1, sizeof(*call));
    call->ctx = ctx;
    call->req = req;
    call->jobs = jobs ? jobs : &empty;
    call->draining = draining;
    snprintf(call->worker_id, sizeof(call->worker_id), "%s", worker_id);
    wm_auth_worker(ctx, worker_id, token, on_auth, call);
}
