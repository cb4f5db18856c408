/*
 * /api/jobs routes: submit and read one job.
 *
 *   POST /api/jobs/{job_type}
 *     auth -> known type? (404) -> JSON body (400) -> gw_validate_job (422)
 *       -> no Kafka broker reachable? 503 Retry-After 2 at once
 *       -> job_<ULID>, job object, forge.job.requested envelope
 *       -> snapshot put ---failed---> 503 Retry-After 2 (nothing produced)
 *       -> produce (key = job id) ---refused / delivery failed---> DEL snapshot, 503
 *       -> delivery report ok -> 202 job object          ("accepted means durable")
 *
 *   GET /api/jobs/{job_id}
 *     auth -> well-formed id? (404) -> snapshot: other user's -> 404, hit -> 200 doc
 *       -> miss (or Redis down) -> nf-scheduler /internal/jobs/{id}?user_id= -> 200 / 404
 *       -> scheduler down -> 503 Retry-After 1
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_event.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"

#define TOPIC_REQUESTED "forge.jobs.requested"

/* One submission in flight; freed in exactly one of submit_fail() / delivered(). */
struct submit_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    int type_idx;
    char job_id[NF_ID_MAX];
    char *doc; /* the job object JSON answered on success */
    size_t doc_len;
    char *event; /* the forge.job.requested envelope */
    size_t event_len;
};

static void submit_free(struct submit_op *op)
{
    free(op->doc);
    free(op->event);
    free(op);
}

static void submit_fail(struct submit_op *op, bool drop_snapshot, const char *msg)
{
    if (drop_snapshot)
        gw_snapshot_del(op->ctx, op->job_id);
    gw_reply_unavailable(op->req, 2, msg);
    submit_free(op);
}

static void delivered(int err, const char *errstr, void *arg)
{
    struct submit_op *op = arg;
    char location[32 + NF_ID_MAX];

    if (err != 0) {
        nf_log_kv(NF_LOG_WARN, "job_produce_failed", "job request not delivered", "job_id",
                  op->job_id, "error", errstr, NULL);
        gw_backend_error(op->ctx, GW_BACKEND_KAFKA);
        submit_fail(op, true, "the job queue is unavailable, try again");
        return;
    }
    nf_metrics_counter_add(op->ctx->m_submitted[op->type_idx], 1);
    nf_log_kv(NF_LOG_INFO, "job_accepted", "job accepted", "job_id", op->job_id, "job_type",
              gw_job_types[op->type_idx], NULL);
    snprintf(location, sizeof(location), "/api/jobs/%s", op->job_id);
    nf_http_set_header(op->req, "Location", location);
    nf_http_reply_raw(op->req, 202, "application/json", op->doc, op->doc_len);
    submit_free(op);
}

static void stored(int result, void *arg)
{
    struct submit_op *op = arg;
    int rc;

    if (op->ctx->closing) {
        submit_fail(op, false, "the gateway is shutting down");
        return;
    }
    if (result != 0) {
        gw_backend_error(op->ctx, GW_BACKEND_REDIS);
        submit_fail(op, false, "the job store is unavailable, try again");
        return;
    }
    rc = nf_kafka_produce(op->ctx->producer, TOPIC_REQUESTED, op->job_id, op->event, op->event_len,
                          delivered, op);
    if (rc != 0) {
        nf_log_kv(NF_LOG_WARN, "job_produce_refused", "producer refused the job request", "job_id",
                  op->job_id, NULL);
        gw_backend_error(op->ctx, GW_BACKEND_KAFKA);
        submit_fail(op, true, "the job queue is unavailable, try again");
    }
}

static void submit_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    const char *job_type = nf_http_req_param(req, "job_type");
    struct nf_json_err err = {{0}, {0}};
    struct submit_op *op;
    cJSON *body, *valid = NULL, *job, *ev;
    uint64_t now;
    int idx = gw_job_type_index(job_type);

    if (idx < 0) {
        nf_http_reply_error(req, 404, "unknown_job_type", "job_type",
                            "unknown job type; use generate, audit, distill, train, evaluate "
                            "or deploy");
        return;
    }
    body = nf_http_req_json(req); /* owned by req; on NULL it answered 400 */
    if (!body)
        return;
    if (gw_validate_job(job_type, body, &valid, &err) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    if (!nf_kafka_producer_ready(ctx->producer)) {
        /* no broker reachable: answer now rather than after the delivery timeout */
        cJSON_Delete(valid);
        gw_backend_error(ctx, GW_BACKEND_KAFKA);
        gw_reply_unavailable(req, 2, "the job queue is unavailable, try again");
        return;
    }
    op = calloc(1, sizeof(*op));
    if (!op)
        abort();
    op->ctx = ctx;
    op->req = req;
    op->type_idx = idx;
    nf_id_new("job", op->job_id, sizeof(op->job_id));
    now = nf_now_ms();

    job = gw_job_new(op->job_id, job_type, valid, now);
    op->doc = nf_json_print(job);
    op->doc_len = strlen(op->doc);
    cJSON_Delete(job);

    ev = nf_event_new("forge.job.requested", "nf-gateway", op->job_id, NULL,
                      gw_job_requested(op->job_id, who->user_id, job_type, valid, now));
    op->event = nf_json_print(ev);
    op->event_len = strlen(op->event);
    cJSON_Delete(ev);
    cJSON_Delete(valid);

    gw_snapshot_put(ctx, op->job_id, who->user_id, op->doc, op->doc_len, stored, op);
}

static void on_submit(struct nf_http_req *req, void *arg)
{
    struct gw_ctx *ctx = arg;

    gw_keys_auth(ctx, req, submit_authed);
}

/* ---- GET /api/jobs/{job_id} ------------------------------------------------------ */

struct get_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    char job_id[NF_ID_MAX];
    char user_id[NF_ID_MAX];
};

static void not_found(struct nf_http_req *req)
{
    nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
}

static void sched_done(const struct nf_http_resp *resp, void *arg)
{
    struct get_op *op = arg;

    if (resp->status == 200) {
        nf_http_reply_raw(op->req, 200, "application/json", resp->body, resp->len);
    } else if (resp->status == 404) {
        not_found(op->req);
    } else {
        nf_log_kv(NF_LOG_WARN, "scheduler_unavailable", "job read from nf-scheduler failed",
                  "job_id", op->job_id, "error", resp->error ? resp->error : "unexpected status",
                  NULL);
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the job store is unavailable, try again");
    }
    free(op);
}

static void snapshot_done(int result, const char *user_id, const char *doc, size_t doc_len,
                          void *arg)
{
    struct get_op *op = arg;
    char path[64 + 2 * NF_ID_MAX];

    if (op->ctx->closing) {
        gw_reply_unavailable(op->req, 1, "the gateway is shutting down");
        free(op);
        return;
    }
    if (result == 1) {
        /* another user's job does not exist for this caller: 404, never 403 */
        if (strcmp(user_id, op->user_id) != 0)
            not_found(op->req);
        else
            nf_http_reply_raw(op->req, 200, "application/json", doc, doc_len);
        free(op);
        return;
    }
    if (result < 0)
        gw_backend_error(op->ctx, GW_BACKEND_REDIS);
    /* ids are [A-Za-z0-9_] only (checked), so they need no URL encoding */
    snprintf(path, sizeof(path), "/internal/jobs/%s?user_id=%s", op->job_id, op->user_id);
    if (nf_http_client_request(op->ctx->sched, "GET", path, NULL, NULL, 0, 0, sched_done, op) !=
        0) {
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the job store is unavailable, try again");
        free(op);
    }
}

static void get_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *job_id = nf_http_req_param(req, "job_id");
    struct get_op *op;

    if (!nf_id_valid("job", job_id)) {
        not_found(req);
        return;
    }
    op = calloc(1, sizeof(*op));
    if (!op)
        abort();
    op->ctx = ctx;
    op->req = req;
    snprintf(op->job_id, sizeof(op->job_id), "%s", job_id);
    snprintf(op->user_id, sizeof(op->user_id), "%s", who->user_id);
    gw_snapshot_get(ctx, op->job_id, snapshot_done, op);
}

static void on_get(struct nf_http_req *req, void *arg)
{
    struct gw_ctx *ctx = arg;

    gw_keys_auth(ctx, req, get_authed);
}

int gw_jobs_register(struct gw_ctx *ctx)
{
    if (nf_http_route(ctx->srv, "POST", "/api/jobs/{job_type}", on_submit, ctx) != 0 ||
        nf_http_route(ctx->srv, "GET", "/api/jobs/{job_id}", on_get, ctx) != 0)
        return -1;
    return 0;
}
