#pragma once
/*
 * What service.c wires up: the route handlers (its route table), the consumers of the
 * three topics (its on_msg hook) and the timers' start and free (its start and free
 * hooks). Each takes the service context (struct sched_ctx) as its argument.
 *
 * The routes after GET /internal/jobs/{job_id} name their caller in X-Nf-User-Id (the
 * gateway sets it from the authenticated principal; never a client).
 */
#include "sched.h"

struct nf_http_req;
struct nf_kafka_msg;

/* routes_internal.c: GET /internal/jobs/{job_id}?user_id=, GET /internal/jobs,
 * GET /internal/jobs/{job_id}/events */
void sched_route_job(struct nf_http_req *req, void *ctx);
void sched_route_jobs(struct nf_http_req *req, void *ctx);
void sched_route_events(struct nf_http_req *req, void *ctx);
/* The helpers the internal routes share (routes_internal.c). */
/* 503 unavailable (Retry-After: 1) for a failed read; logs err. */
void sched_http_unavailable(struct nf_http_req *req, const char *err);
/* The caller named by the gateway; answers 400 itself and returns NULL when absent. */
const char *sched_http_caller(struct nf_http_req *req);
/* Parses the query of a list route; answers 400 itself and returns -1 when bad. */
int sched_http_list_query(struct nf_http_req *req, enum sched_list_kind kind,
                          struct sched_list_query *q);
/* A job read that found no row: the job accepted a moment ago (its job:<id> snapshot is
 * the caller's and not recorded yet) answers an empty page with job_status queued;
 * anything else 404. */
void sched_http_unrecorded_page(struct nf_http_req *req);
/* One of a job's logs read by pages (its events, its metric points): the statement ($1 job,
 * $2 caller, $3 after seq, $4 limit + 1; rows with seq, at, attempt, job_status ...), the
 * list kind of its query string, the builder of one entry from row i, and the "object" of
 * the page (NULL: none). */
struct sched_log {
    const char *sql;
    enum sched_list_kind kind;
    cJSON *(*item)(const PGresult *res, int i);
    const char *object;
};
/* GET a page of a log of one of the caller's jobs: {data, has_more, next_cursor,
 * job_status}, each entry with its cursor. */
void sched_http_log_page(struct nf_http_req *req, struct sched_ctx *ctx,
                         const struct sched_log *log);
/* {data, has_more, next_cursor} around data; the cursor is made from last when has_more. */
cJSON *sched_http_page(cJSON *data, bool has_more, char kind, const char *last);

/* routes_artifacts.c: the artifact registry and the files in it (DESIGN §12):
 * GET /internal/artifacts[/{artifact_id}], DELETE /internal/artifacts/{artifact_id},
 * POST /internal/files, GET /internal/files */
void sched_route_artifacts(struct nf_http_req *req, void *ctx);
void sched_route_artifact(struct nf_http_req *req, void *ctx);
void sched_route_artifact_delete(struct nf_http_req *req, void *ctx);
/* GET /internal/jobs/{job_id}/checkpoints: the job's checkpoint artifacts (owner only) */
void sched_route_checkpoints(struct nf_http_req *req, void *ctx);
void sched_route_file_create(struct nf_http_req *req, void *ctx);
void sched_route_files(struct nf_http_req *req, void *ctx);
/* routes_models.c: the model catalogue (DESIGN §15): GET /internal/models (the base
 * models + the caller's), GET|DELETE /internal/models/{model} (by name or mdl_ id),
 * POST /internal/models {name, uri} (an uploaded model file of the caller). */
void sched_route_models(struct nf_http_req *req, void *ctx);
void sched_route_model(struct nf_http_req *req, void *ctx);
void sched_route_model_delete(struct nf_http_req *req, void *ctx);
void sched_route_model_create(struct nf_http_req *req, void *ctx);
/* routes_deployments.c: deployments (DESIGN §15): GET /internal/deployments,
 * GET /internal/deployments/{deployment_id}, POST .../{deployment_id}/status
 * {status: stopped|failed, failure?} (from ready only; idempotent). */
void sched_route_deployments(struct nf_http_req *req, void *ctx);
void sched_route_deployment(struct nf_http_req *req, void *ctx);
void sched_route_deployment_status(struct nf_http_req *req, void *ctx);
/* "dep-" and 12 lowercase hex digits. */
bool sched_deployment_id_valid(const char *id);
/* metrics.c: GET /internal/jobs/{job_id}/metrics (owner only; the events page's shape) */
void sched_route_metrics(struct nf_http_req *req, void *ctx);
/* metrics.c: a forge.job.metric message (ev its parsed envelope, taken over) */
void sched_metrics_handle(struct sched_ctx *ctx, struct nf_kafka_msg *msg, cJSON *ev);
/* cancel.c: POST /internal/jobs/{job_id}/cancel */
void sched_route_cancel(struct nf_http_req *req, void *ctx);
/* While stopping (the busy hook, each drain tick): the cancels that will not go on (waiting
 * in a delay or a backoff) answer 503 now. */
void sched_cancel_drain(struct sched_ctx *ctx);

/* The consumers, one per topic; each takes msg over (marked done or redelivered). */
void sched_requested_handle(struct sched_ctx *ctx, struct nf_kafka_msg *msg);
void sched_events_handle(struct sched_ctx *ctx, struct nf_kafka_msg *msg);
/* forge.billing.costs: a job's cost from billing -> cost_micros + snapshot. */
void sched_costs_handle(struct sched_ctx *ctx, struct nf_kafka_msg *msg);

/* Storage metering (storage_meter.c): starts the timer (ctx->storage_tick, freed by the
 * service's close hook). -1 on failure. */
int sched_storage_start(struct sched_ctx *ctx);

/*
 * The reconciler (reconciler.c): timers that repair what a lost message, a crash or a
 * Redis without its data left behind.
 *   every retry_poll_ms: dispatch the retries that are due (next_attempt_at <= now)
 *   every reconcile_s:   re-dispatch queued jobs the worker-manager does not hold;
 *                        fail jobs running past timeout_seconds + grace (class timeout);
 *                        re-check jobs stuck in cancel_requested;
 *                        repair job:<id> snapshots older than their row
 * Every pass is idempotent (deterministic event ids, versioned snapshot writes), so
 * several scheduler copies may run it. -1 when the timers cannot be created.
 */
int sched_reconciler_start(struct sched_ctx *ctx);
/* Frees the timers (teardown, after the work items: their dtors clear its flags). NULL ok. */
void sched_reconciler_free(struct sched_ctx *ctx);
