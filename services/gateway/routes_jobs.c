/*
 * /api/jobs routes: submit, read, list, cancel and events.
 *
 *   POST /api/jobs/{job_type}
 *     auth -> known type? (404) -> JSON body (400; over 1 MiB: 413 by nf_http)
 *       -> gw_validate_job (422 naming the param)
 *       -> no Kafka broker reachable? 503 Retry-After 2 at once
 *       -> inputs.c: every s3:// / artifact:// input exists and is the caller's
 *          (422 naming the param; store or registry down: 503)
 *       -> Idempotency-Key? (idempotency.c) bad key 400 | conflict 409 | replay: the
 *          original answer + Idempotent-Replayed: true | pending: ask again every
 *          100 ms until it is done (then replay) or the wait is over (409) | new: on
 *       -> job_<ULID>, job object, forge.job.requested envelope
 *       -> snapshot put ---failed---> 503 Retry-After 2 (nothing produced)
 *       -> produce (key = job id) ---refused / delivery failed---> DEL snapshot, 503
 *          (and the idempotency claim dropped, so the client may retry the same key)
 *       -> delivery report ok -> idempotency answer stored -> 202 job object
 *                                                          ("accepted means durable")
 *
 *   GET /api/jobs/{job_id}
 *     auth -> well-formed id? (404) -> snapshot: other user's -> 404, hit -> 200 doc
 *       -> miss (or Redis down) -> nf-scheduler /internal/jobs/{id}?user_id= -> 200 / 404
 *       -> scheduler down -> 503 Retry-After 1
 *
 *   GET  /api/jobs/?status=&job_type=&metadata[k]=v&limit=&cursor=
 *   POST /api/jobs/{job_id}/cancel
 *   GET  /api/jobs/{job_id}/checkpoints -> nf-scheduler (the job's checkpoint artifacts)
 *   GET  /api/jobs/{job_id}/events?limit=&cursor=
 *     auth -> forwarded to nf-scheduler (/internal/jobs..., caller in X-Nf-User-Id, the
 *     client's query string as it came: the scheduler validates it) -> relayed
 *   GET /api/jobs/{job_id}/events with Accept: text/event-stream -> sse.c
 *   GET /api/jobs/{job_id}/metrics?limit=&cursor= -> nf-scheduler (the job's metric points);
 *     ?stream=true (or Accept: text/event-stream without stream=false) -> sse.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw.h"
#include "nf_event.h"
#include "nf_http_client.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_redis.h"
#include "routes.h"

#define IDEM_POLL_MS 100
#define TARGET_MAX 4096

/* One submission in flight; freed in exactly one of submit_free's callers. */
struct submit_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    int type_idx;
    char job_id[NF_ID_MAX];
    char user_id[NF_ID_MAX];
    char *doc; /* the job object JSON answered on success */
    size_t doc_len;
    char *event; /* the forge.job.requested envelope */
    size_t event_len;
    /* Idempotency-Key, when the request carries one */
    char *idem_key;
    char idem_hash[NF_SHA256_HEX_LEN + 1];
    char idem_token[48];
    uint64_t idem_deadline_ms; /* waiting for a concurrent duplicate until then */
    struct event *idem_timer;
};

static void submit_free(struct submit_op *op)
{
    if (op->idem_timer)
        event_free(op->idem_timer);
    free(op->idem_key);
    free(op->doc);
    free(op->event);
    free(op);
}

static void submit_fail(struct submit_op *op, bool drop_snapshot, const char *msg)
{
    if (drop_snapshot)
        gw_snapshot_del(op->ctx, op->job_id);
    if (op->idem_key)
        gw_idem_abort(op->ctx, op->user_id, op->idem_key, op->idem_token);
    gw_reply_unavailable(op->req, 2, msg);
    submit_free(op);
}

static void set_location(struct nf_http_req *req, const char *job_id)
{
    char location[32 + NF_ID_MAX];

    snprintf(location, sizeof(location), "/api/jobs/%s", job_id);
    nf_http_set_header(req, "Location", location);
}

static void delivered(int err, const char *errstr, void *arg)
{
    struct submit_op *op = arg;

    if (err != 0) {
        nf_log_kv(NF_LOG_WARN, "job_produce_failed", "job request not delivered", "job_id",
                  op->job_id, "error", errstr, NULL);
        gw_backend_error(op->ctx, GW_BACKEND_KAFKA);
        submit_fail(op, true, "the job queue is unavailable, try again");
        return;
    }
    nf_metrics_counter_add(op->ctx->m_submitted[op->type_idx], 1);
    nf_log_kv(NF_LOG_INFO, "job_accepted", "job accepted", "job_id", op->job_id, "job_type",
              nf_job_types[op->type_idx], NULL);
    if (op->idem_key)
        gw_idem_finish(op->ctx, op->user_id, op->idem_key, op->idem_token, 202, op->doc,
                       op->doc_len);
    set_location(op->req, op->job_id);
    nf_http_reply_raw(op->req, 202, "application/json", op->doc, op->doc_len);
    submit_free(op);
}

static void stored(int result, void *arg)
{
    struct submit_op *op = arg;
    int rc;

    if (op->ctx->svc->closing) {
        submit_fail(op, false, "the gateway is shutting down");
        return;
    }
    if (result != 0) {
        gw_backend_error(op->ctx, GW_BACKEND_REDIS);
        submit_fail(op, false, "the job store is unavailable, try again");
        return;
    }
    rc = nf_kafka_produce(op->ctx->svc->producer, NF_TOPIC_JOBS_REQUESTED, op->job_id, op->event,
                          op->event_len, delivered, op);
    if (rc != 0) {
        nf_log_kv(NF_LOG_WARN, "job_produce_refused", "producer refused the job request", "job_id",
                  op->job_id, NULL);
        gw_backend_error(op->ctx, GW_BACKEND_KAFKA);
        submit_fail(op, true, "the job queue is unavailable, try again");
    }
}

/*
 * Notes the job in gw:recent:<user_id> (zset by acceptance time, ms; entries older than
 * GW_RECENT_WINDOW_MS trimmed) so nf-scheduler can list it before it has recorded it
 * (read-your-writes). Sent before the snapshot put on the same connection, so it is in
 * Redis before the 202 goes out. Best effort.
 */
static void note_recent(struct submit_op *op)
{
    char key[16 + NF_ID_MAX], now[24], oldest[24], ttl[16];
    uint64_t ms = nf_now_ms();

    snprintf(key, sizeof(key), "gw:recent:%s", op->user_id);
    snprintf(now, sizeof(now), "%llu", (unsigned long long)ms);
    snprintf(oldest, sizeof(oldest), "(%llu", (unsigned long long)(ms - GW_RECENT_WINDOW_MS));
    snprintf(ttl, sizeof(ttl), "%d", GW_RECENT_WINDOW_MS);
    nf_redis_cmd(op->ctx->svc->redis, NULL, NULL, "ZADD %s %s %s", key, now, op->job_id);
    nf_redis_cmd(op->ctx->svc->redis, NULL, NULL, "ZREMRANGEBYSCORE %s -inf %s", key, oldest);
    nf_redis_cmd(op->ctx->svc->redis, NULL, NULL, "PEXPIRE %s %s", key, ttl);
}

static void submit_start(struct submit_op *op)
{
    note_recent(op);
    gw_snapshot_put(op->ctx, op->job_id, op->user_id, op->doc, op->doc_len, stored, op);
}

static void idem_ask(struct submit_op *op);

static void idem_answered(const struct gw_idem_reply *r, void *arg)
{
    struct submit_op *op = arg;
    struct timeval tv = {0, (suseconds_t)IDEM_POLL_MS * 1000};
    const char *job_id;
    cJSON *doc;

    if (op->ctx->svc->stopping) {
        gw_reply_unavailable(op->req, 1, "the gateway is shutting down, try again");
        submit_free(op);
        return;
    }
    switch (r->state) {
    case GW_IDEM_NEW:
        submit_start(op);
        return;
    case GW_IDEM_REPLAY:
        doc = nf_json_parse(r->body, r->body_len);
        job_id = nf_json_str(doc, "job_id");
        if (job_id && nf_id_valid("job", job_id))
            set_location(op->req, job_id);
        cJSON_Delete(doc);
        nf_http_set_header(op->req, "Idempotent-Replayed", "true");
        nf_http_reply_raw(op->req, r->status, "application/json", r->body, r->body_len);
        break;
    case GW_IDEM_CONFLICT:
        nf_http_reply_error(op->req, 409, "idempotency_key_reused", "Idempotency-Key",
                            "this Idempotency-Key was used with a different request in the "
                            "last 24 hours; use a new key for a new request");
        break;
    case GW_IDEM_PENDING:
        if (nf_now_ms() < op->idem_deadline_ms) {
            evtimer_add(op->idem_timer, &tv); /* made with the op: idem_ask_cb */
            return;
        }
        nf_http_set_header(op->req, "Retry-After", "1");
        nf_http_reply_error(op->req, 409, "idempotency_in_progress", "Idempotency-Key",
                            "a request with this Idempotency-Key is still being processed; "
                            "retry shortly");
        break;
    default:
        gw_backend_error(op->ctx, GW_BACKEND_REDIS);
        gw_reply_unavailable(op->req, 1, "the idempotency store is unavailable, try again");
        break;
    }
    submit_free(op);
}

/* libevent timer callback shape: (fd, what, arg) - only arg is used. */
static void idem_ask_cb(evutil_socket_t fd, short what, void *arg)
{
    idem_ask(arg);
}

static void idem_ask(struct submit_op *op)
{
    int ttl = (op->ctx->svc->cfg.timeout_ms + op->ctx->cfg->produce_timeout_ms) / 1000 + 30;

    gw_idem_begin(op->ctx, op->user_id, op->idem_key, op->idem_hash, op->idem_token, ttl,
                  idem_answered, op);
}

static void submit_resolved(struct gw_ctx *ctx, struct nf_http_req *req, cJSON *valid, void *arg);

static void submit_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    const char *job_type = nf_http_req_param(req, "job_type");
    const char *idem = nf_http_req_header(req, "Idempotency-Key");
    struct nf_json_err err = {{0}, {0}};
    struct submit_op *op;
    cJSON *body, *valid = NULL;
    int idx = nf_job_type_index(job_type);

    if (idx < 0) {
        nf_http_reply_error(req, 404, "unknown_job_type", "job_type",
                            "unknown job type; use generate, audit, distill, train, evaluate "
                            "or deploy");
        return;
    }
    if (idem && !*idem)
        idem = NULL;              /* an empty header is no key */
    body = nf_http_req_json(req); /* owned by req; on NULL it answered 400 */
    if (!body)
        return;
    if (gw_validate_job(job_type, body, &valid, &err) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    if (idem && !gw_idem_key_valid(idem)) {
        cJSON_Delete(valid);
        nf_http_reply_error(req, 400, "invalid_request", "Idempotency-Key",
                            "Idempotency-Key must be 1 to %d printable ASCII characters "
                            "without spaces",
                            GW_IDEM_KEY_MAX);
        return;
    }
    if (!nf_kafka_producer_ready(ctx->svc->producer)) {
        /* no broker reachable: answer now rather than after the delivery timeout */
        cJSON_Delete(valid);
        gw_backend_error(ctx, GW_BACKEND_KAFKA);
        gw_reply_unavailable(req, 2, "the job queue is unavailable, try again");
        return;
    }
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    op->type_idx = idx;
    snprintf(op->user_id, sizeof(op->user_id), "%s", who->user_id);
    gw_inputs_resolve(ctx, req, who->user_id, job_type, valid, submit_resolved, op);
}

/* The inputs exist and are the caller's (valid has them): the job is made and sent. */
static void submit_resolved(struct gw_ctx *ctx, struct nf_http_req *req, cJSON *valid, void *arg)
{
    struct submit_op *op = arg;
    const char *job_type = nf_job_types[op->type_idx], *idem;
    cJSON *job, *ev;
    uint64_t now;

    if (!valid) { /* answered already (req is gone): 422 naming the param, or 503 */
        submit_free(op);
        return;
    }
    idem = nf_http_req_header(req, "Idempotency-Key");
    if (idem && !*idem)
        idem = NULL;
    nf_id_new("job", op->job_id, sizeof(op->job_id));
    now = nf_now_ms();

    job = gw_job_new(op->job_id, job_type, valid, now);
    op->doc = nf_json_print(job);
    op->doc_len = strlen(op->doc);
    cJSON_Delete(job);

    ev = nf_event_new("forge.job.requested", "nf-gateway", op->job_id, NULL,
                      gw_job_requested(op->job_id, op->user_id, job_type, valid, now));
    op->event = nf_json_print(ev);
    op->event_len = strlen(op->event);
    cJSON_Delete(ev);

    if (idem) {
        op->idem_key = nf_xstrdup(idem);
        gw_idem_hash(job_type, valid, op->idem_hash);
        nf_crypto_token(16, op->idem_token, sizeof(op->idem_token));
        op->idem_deadline_ms =
            now + (uint64_t)ctx->svc->cfg.timeout_ms + (uint64_t)ctx->cfg->produce_timeout_ms;
        op->idem_timer = evtimer_new(ctx->svc->base, idem_ask_cb, op);
        if (!op->idem_timer)
            abort();
        cJSON_Delete(valid);
        idem_ask(op);
        return;
    }
    cJSON_Delete(valid);
    submit_start(op);
}

/*
 * POST /api/jobs/{job_type} and GET /api/jobs/{job_id} have one shape, so the router lets
 * both methods reach either path. Each route refuses, as the router would and before
 * authentication, the path that is the other's: a job id takes only GET, a job type only
 * POST (405 with Allow).
 */
static void method_not_allowed(struct nf_http_req *req, const char *allow)
{
    nf_http_set_header(req, "Allow", allow);
    nf_http_reply_error(req, 405, "method_not_allowed", NULL, "method %s is not allowed here",
                        nf_http_req_method(req));
}

void gw_jobs_submit(struct nf_http_req *req, void *arg)
{
    if (nf_id_valid("job", nf_http_req_param(req, "job_type")))
        method_not_allowed(req, "GET");
    else
        gw_keys_auth(arg, req, submit_authed);
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

    if (op->ctx->svc->closing) {
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
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    snprintf(op->job_id, sizeof(op->job_id), "%s", job_id);
    snprintf(op->user_id, sizeof(op->user_id), "%s", who->user_id);
    gw_snapshot_get(ctx, op->job_id, snapshot_done, op);
}

void gw_jobs_get(struct nf_http_req *req, void *arg)
{
    if (nf_job_type_index(nf_http_req_param(req, "job_id")) >= 0)
        method_not_allowed(req, "POST");
    else
        gw_keys_auth(arg, req, get_authed);
}

/* ---- forwarded to nf-scheduler: list, cancel, events --------------------------------- */

/*
 * Forwards req to nf-scheduler at path (+ the client's query string when with_query),
 * naming the caller in X-Nf-User-Id. The request id goes along, so error bodies carry
 * the client's request id.
 */
static void to_scheduler(struct gw_ctx *ctx, struct nf_http_req *req,
                         const struct gw_principal *who, const char *method, const char *path,
                         bool with_query)
{
    const char *query = with_query ? nf_http_req_query_string(req) : NULL;
    const char *headers[] = {"X-Nf-User-Id", who->user_id, "X-Request-Id", nf_http_req_id(req),
                             NULL};
    char target[TARGET_MAX];
    int n;

    n = snprintf(target, sizeof(target), "%s%s%s", path, query ? "?" : "", query ? query : "");
    if (n < 0 || (size_t)n >= sizeof(target)) {
        nf_http_reply_error(req, 414, "uri_too_long", NULL, "the request URI is too long");
        return;
    }
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, method, target, headers,
               strcmp(method, "POST") == 0 ? "{}" : NULL, strcmp(method, "POST") == 0 ? 2 : 0, 0,
               NULL, NULL);
}

static void list_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    to_scheduler(ctx, req, who, "GET", "/internal/jobs", true);
}

/* /api/jobs/{job_id}/<what> -> nf-scheduler /internal/jobs/{job_id}/<what> as the caller;
 * a malformed job id is a 404 without a backend call. */
static void job_to_scheduler(struct gw_ctx *ctx, struct nf_http_req *req,
                             const struct gw_principal *who, const char *method, const char *what,
                             bool query)
{
    const char *job_id = nf_http_req_param(req, "job_id");
    char path[64 + NF_ID_MAX];

    if (!nf_id_valid("job", job_id)) {
        not_found(req);
        return;
    }
    snprintf(path, sizeof(path), "/internal/jobs/%s/%s", job_id, what);
    to_scheduler(ctx, req, who, method, path, query);
}

static void cancel_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    job_to_scheduler(ctx, req, who, "POST", "cancel", false);
}

/* true when the client asks for text/event-stream (and not only for JSON). */
static bool wants_sse(struct nf_http_req *req)
{
    static const char want[] = "text/event-stream";
    const char *accept = nf_http_req_header(req, "Accept");

    for (; accept && *accept; accept++)
        if (strncasecmp(accept, want, sizeof(want) - 1) == 0)
            return true;
    return false;
}

static void events_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    const char *job_id = nf_http_req_param(req, "job_id");

    if (nf_id_valid("job", job_id) && wants_sse(req)) {
        gw_sse_start(ctx, req, job_id, who->user_id, nf_http_req_header(req, "Last-Event-ID"),
                     "events");
        return;
    }
    job_to_scheduler(ctx, req, who, "GET", "events", true);
}

/* The job's metric points (owner only): JSON pages, or SSE (event: metric) until the job
 * ends with ?stream=true or Accept: text/event-stream - the events' SSE poller (sse.c). */
static void metrics_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                           const struct gw_principal *who)
{
    const char *job_id = nf_http_req_param(req, "job_id"), *stream;

    stream = nf_http_req_query(req, "stream");
    if (nf_id_valid("job", job_id) &&
        ((stream && strcmp(stream, "true") == 0) || (!stream && wants_sse(req)))) {
        gw_sse_start(ctx, req, job_id, who->user_id, nf_http_req_header(req, "Last-Event-ID"),
                     "metrics");
        return;
    }
    job_to_scheduler(ctx, req, who, "GET", "metrics", true);
}

/* The job's checkpoint artifacts (epoch, step, attempt, artifact id and uri): owner only. */
static void checkpoints_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                               const struct gw_principal *who)
{
    job_to_scheduler(ctx, req, who, "GET", "checkpoints", false);
}

GW_ROUTE_AUTHED(gw_jobs_list, list_authed)
GW_ROUTE_AUTHED(gw_jobs_checkpoints, checkpoints_authed)
GW_ROUTE_AUTHED(gw_jobs_cancel, cancel_authed)
GW_ROUTE_AUTHED(gw_jobs_events, events_authed)
GW_ROUTE_AUTHED(gw_jobs_metrics, metrics_authed)
