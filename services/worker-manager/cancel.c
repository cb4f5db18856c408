/*
 * POST /internal/jobs/{job_id}/cancel: the scheduler's half of a user cancel.
 *
 *   scheduler --> EVALSHA cancel:
 *       tombstone wm:cancelled:<job_id> (7 days): a dispatch of the job that arrives
 *       later (still in Kafka, or a redelivery) is dropped by the enqueue script
 *       queued   --> taken out of wm:queue:<type> at once      --> {"state": "dequeued"}
 *       leased   --> job id added to wm:cancel:<worker_id>; the worker's next heartbeat
 *                    answer lists it in `cancelled`, the agent sends SIGTERM, waits its
 *                    kill grace, sends SIGKILL, and reports forge.job.cancelled
 *                                                                --> {"state": "signalled"}
 *       neither  --> (not consumed yet, between a retry and its dispatch, or finished)
 *                                                                --> {"state": "unknown"}
 *
 * "dequeued" and "unknown" mean no worker will report on this attempt: the scheduler
 * records the cancel itself. The route is internal (the gateway never forwards
 * /internal/ paths); the worker-manager listens on loopback by default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_redis.h"
#include "routes.h"
#include "wm.h"

struct cancel_call {
    struct wm_ctx *ctx;
    struct nf_http_req *req;
    char job_id[NF_ID_MAX];
};

static void on_cancel(redisReply *reply, void *arg)
{
    struct cancel_call *call = arg;
    struct wm_ctx *ctx = call->ctx;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            nf_log_kv(NF_LOG_ERROR, "cancel_failed", "cancel script failed", "error", reply->str,
                      NULL);
        wm_reply_unavailable(call->req, "job queue unavailable");
        free(call);
        return;
    }
    const char *state = reply->element[0]->str;
    const char *worker_id = reply->element[1]->str;
    if (strcmp(state, "dequeued") == 0)
        nf_metrics_counter_add(ctx->m.cancel_dequeued, 1);
    else if (strcmp(state, "signalled") == 0)
        nf_metrics_counter_add(ctx->m.cancel_signalled, 1);
    else
        nf_metrics_counter_add(ctx->m.cancel_unknown, 1);
    nf_log_kv(NF_LOG_INFO, "job_cancel", "job cancel handled", "job_id", call->job_id, "state",
              state, "worker_id", worker_id[0] ? worker_id : NULL, NULL);
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "job_id", call->job_id);
    nf_json_add_str(body, "state", state);
    nf_json_add_str(body, "worker_id", worker_id[0] ? worker_id : NULL);
    nf_http_reply_json(call->req, 200, body);
    free(call);
}

void wm_route_cancel(struct nf_http_req *req, void *arg)
{
    struct wm_ctx *ctx = arg;
    const char *job_id = nf_http_req_param(req, "job_id");
    char job_key[NF_ID_MAX + 16], lease_key[NF_ID_MAX + 16], tomb_key[NF_ID_MAX + 16];
    char ttl[16];

    if (job_id == NULL || !nf_id_valid("job", job_id)) {
        nf_http_reply_error(req, 422, "invalid_params", "job_id", "job_id must be a job id");
        return;
    }
    if (wm_refuse_stopping(ctx, req))
        return;
    struct cancel_call *call = nf_xcalloc(1, sizeof(*call));
    call->ctx = ctx;
    call->req = req;
    snprintf(call->job_id, sizeof(call->job_id), "%s", job_id);
    snprintf(job_key, sizeof(job_key), "wm:job:%s", job_id);
    snprintf(lease_key, sizeof(lease_key), "wm:lease:%s", job_id);
    snprintf(tomb_key, sizeof(tomb_key), "wm:cancelled:%s", job_id);
    snprintf(ttl, sizeof(ttl), "%d", WM_DONE_TTL_S);
    const char *argv[] = {job_key, lease_key, tomb_key, call->job_id, ttl};
    /* On -1 on_cancel already ran with NULL and answered 503. */
    nf_redis_eval(ctx->redis, ctx->lua_cancel, on_cancel, call, 3, 5, argv, NULL);
}
