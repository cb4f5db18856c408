/*
 * POST /api/workers/events and POST /api/workers/usage: the HTTP fallback for agents
 * that cannot reach Kafka. Body {worker_id, lease_id, event: <CloudEvents envelope>}.
 *
 *   auth (worker token) --> wm_report_parse (type allowed on this route, ids, attempt)
 *       --> EVALSHA lease_check: this worker holds this lease for this attempt, and it is
 *           not being reaped
 *             no  --> 409 lease_lost, nothing produced (a late report from a worker that
 *                     lost its lease changes nothing)
 *             yes --> produce to forge.jobs.events / forge.usage (source set to
 *                     nf-worker/<worker_id>, key = subject) --> delivered --> 202
 *                                                               failed --> 503
 *
 * Agents with Kafka publish directly; their stale events are ignored by the scheduler,
 * which applies an event only to the attempt it belongs to.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_redis.h"
#include "nf_svc.h"
#include "routes.h"
#include "wm.h"

struct report_call {
    struct wm_ctx *ctx;
    struct nf_http_req *req;
    enum wm_report_kind kind;
    char worker_id[NF_ID_MAX];
    char job_id[NF_ID_MAX];
    char lease_id[NF_ID_MAX];
    char attempt[24];
    char *subject; /* the message key */
    char *payload; /* the envelope to produce */
};

static void call_free(struct report_call *call)
{
    free(call->subject);
    free(call->payload);
    free(call);
}

static void reply_unavailable(struct report_call *call, const char *msg)
{
    wm_reply_unavailable(call->req, msg);
    call_free(call);
}

static void on_delivered(int err, const char *errstr, void *arg)
{
    struct report_call *call = arg;
    if (err != 0) {
        nf_log_kv(NF_LOG_WARN, "report_not_delivered", "worker report not delivered to Kafka",
                  "job_id", call->job_id, "error", errstr, NULL);
        reply_unavailable(call, "event store unavailable, retry later");
        return;
    }
    nf_metrics_counter_add(call->ctx->m.reports_accepted, 1);
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "status", "accepted");
    nf_http_reply_json(call->req, 202, body);
    call_free(call);
}

static void on_checked(redisReply *reply, void *arg)
{
    struct report_call *call = arg;
    struct wm_ctx *ctx = call->ctx;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER || ctx->svc->closing) {
        reply_unavailable(call, "lease store unavailable");
        return;
    }
    if (reply->integer != 1) {
        nf_metrics_counter_add(ctx->m.reports_refused, 1);
        nf_log_kv(NF_LOG_WARN, "report_refused", "report for a lease the worker does not hold",
                  "worker_id", call->worker_id, "job_id", call->job_id, "lease_id", call->lease_id,
                  "attempt", call->attempt, NULL);
        nf_http_reply_error(call->req, 409, "lease_lost", "lease_id",
                            "this worker does not hold lease %s of job %s (attempt %s): the "
                            "report was not recorded",
                            call->lease_id, call->job_id, call->attempt);
        call_free(call);
        return;
    }
    const char *topic = call->kind == WM_REPORT_USAGE ? NF_TOPIC_USAGE : NF_TOPIC_JOBS_EVENTS;
    if (nf_kafka_produce(ctx->producer, topic, call->subject, call->payload, strlen(call->payload),
                         on_delivered, call) != 0) {
        nf_log_kv(NF_LOG_ERROR, "report_produce_failed", "worker report not queued", "job_id",
                  call->job_id, NULL);
        reply_unavailable(call, "event store unavailable, retry later");
    }
}

static void on_auth(struct wm_ctx *ctx, int status, const struct wm_worker *w, void *arg)
{
    struct report_call *call = arg;
    char lease_key[NF_ID_MAX + 16];

    if (status != 0 || ctx->svc->closing) {
        wm_reply_auth_failed(call->req, status, WM_WORKER_FORBIDDEN);
        call_free(call);
        return;
    }
    snprintf(lease_key, sizeof(lease_key), "wm:lease:%s", call->job_id);
    const char *argv[] = {lease_key, call->worker_id, call->lease_id, call->attempt};
    nf_redis_eval(ctx->redis, ctx->lua_lease_check, on_checked, call, 1, 4, argv, NULL);
}

static void report(struct nf_http_req *req, struct wm_ctx *ctx, enum wm_report_kind kind)
{
    struct nf_json_err err = {0};
    struct wm_report rep = {0};
    const char *worker_id = NULL;
    char source[NF_ID_MAX + 16];

    const char *token = NULL;
    cJSON *body = wm_req_body(ctx, req, WM_WORKER_FORBIDDEN, &token);
    if (body == NULL)
        return; /* answered 403 or 400 */
    if (nf_json_get_str(body, "worker_id", true, &worker_id, &err) != 0 ||
        wm_report_parse(body, kind, worker_id, &rep, &err) < 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param[0] ? err.param : NULL, "%s",
                            err.msg);
        return;
    }
    if (wm_refuse_stopping(ctx, req))
        return;
    struct report_call *call = nf_xcalloc(1, sizeof(*call));
    call->ctx = ctx;
    call->req = req;
    call->kind = kind;
    snprintf(call->worker_id, sizeof(call->worker_id), "%s", worker_id);
    snprintf(call->job_id, sizeof(call->job_id), "%s", rep.job_id);
    snprintf(call->lease_id, sizeof(call->lease_id), "%s", rep.lease_id);
    snprintf(call->attempt, sizeof(call->attempt), "%lld", rep.attempt);
    call->subject = nf_xstrdup(nf_json_str(rep.event, "subject"));
    /* the envelope as sent, with the source vouched for by the worker token */
    cJSON *ev = cJSON_Duplicate(rep.event, true);
    snprintf(source, sizeof(source), "nf-worker/%s", worker_id);
    cJSON_DeleteItemFromObjectCaseSensitive(ev, "source");
    nf_json_add_str(ev, "source", source);
    call->payload = nf_json_print(ev);
    cJSON_Delete(ev);
    wm_auth_worker(ctx, worker_id, token, on_auth, call);
}

void wm_route_events(struct nf_http_req *req, void *arg)
{
    report(req, arg, WM_REPORT_EVENT);
}

void wm_route_usage(struct nf_http_req *req, void *arg)
{
    report(req, arg, WM_REPORT_USAGE);
}
