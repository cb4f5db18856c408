/*
 * nf-scheduler as an nf_svc descriptor: its own NF_SCHEDULER_* rows, the route table, the
 * three topics it consumes and the hooks. nf_svc does the rest (shared rows, migrations
 * of the `sched` schema, topics, Postgres, Redis, the producer, the consumer in group
 * NF_SCHEDULER_GROUP, the HTTP server, /readyz, the SIGTERM drain, the teardown).
 *
 *   init    the context and its metrics; the consumer's metadata refresh
 *   start   borrow the backends -> the snapshot and recent-jobs Redis scripts -> the work
 *           queue (ctx->work) -> the clients of nf-billing and nf-worker-manager -> the
 *           storage metering timer -> the reconciler
 *   on_msg  forge.jobs.requested | forge.jobs.events | forge.billing.costs -> a work item
 *   busy    (each drain tick) cancels that will not go on answer 503; then the work
 *           items whose stage waits on a backend (SIGTERM waits for 0)
 *   close   (teardown, before the backends go) the metering timer; the two clients
 *           (calls in flight fire with status 0 and only unwind)
 *   free    the work items left (their messages are redelivered), the reconciler, the
 *           context
 */
#include <stdlib.h>
#include <string.h>

#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_svc.h"
#include "routes.h"
#include "sched.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

#define BILLING_TIMEOUT_MS 5000
#define BILLING_CONNS 16
#define WM_TIMEOUT_MS 3000
#define WM_CONNS 8

#define OFF(f) offsetof(struct sched_config, f)

static const struct nf_cfg_opt sched_opts[] = {
    {"NF_SCHEDULER_RETRY_CAP_S", NF_CFG_INT, "60", 1, 3600, false, OFF(retry_cap_s),
     "cap in seconds of the retry backoff of failed attempts (2^attempt s)"},
    {"NF_WM_ADDR", NF_CFG_ADDRS, "127.0.0.1:8104", 0, 0, false, OFF(wm_addr),
     "nf-worker-manager address (job cancel)"},
    {"NF_SCHEDULER_RETRY_POLL_MS", NF_CFG_INT, "500", 50, 60000, false, OFF(retry_poll_ms),
     "how often retries that are due are dispatched"},
    {"NF_SCHEDULER_RECONCILE_S", NF_CFG_INT, "5", 1, 3600, false, OFF(reconcile_s),
     "period of the reconciler (lost dispatches, timeouts, stuck cancels, snapshots)"},
    {"NF_SCHEDULER_STUCK_S", NF_CFG_INT, "30", 5, 86400, false, OFF(stuck_s),
     "a queued job the worker-manager does not hold, or a cancel unanswered, this long is "
     "handled again"},
    {"NF_SCHEDULER_TIMEOUT_GRACE_S", NF_CFG_INT, "60", 0, 86400, false, OFF(timeout_grace_s),
     "a job running this long past its timeout_seconds is failed with class timeout"},
    {"NF_BILLING_ADDR", NF_CFG_ADDRS, "127.0.0.1:8103", 0, 0, false, OFF(billing_addr),
     "nf-billing internal address (budget checks before dispatch)"},
    {"NF_SCHEDULER_BUDGET_WAIT_MS", NF_CFG_INT, "30000", 0, 3600000, false, OFF(budget_wait_ms),
     "billing unreachable this long: a new job is dispatched without its budget check"},
    {"NF_SCHEDULER_STORAGE_WINDOW_S", NF_CFG_INT, "3600", 1, 86400, false, OFF(storage_window_s),
     "stored artifacts are metered (byte-hours) per window of this length"},
    {"NF_SCHEDULER_MODELS_FILE", NF_CFG_STR, NF_SOURCE_DIR "/deploy/models.json", 1, 0, false,
     OFF(models_file), "the operator's base model catalogue (JSON, read at start)"},
};

static const char *const sched_topics[] = {
    NF_TOPIC_JOBS_REQUESTED,
    NF_TOPIC_JOBS_EVENTS,
    NF_TOPIC_BILLING_COSTS,
    NULL,
};

/* The gateway calls these with the caller in X-Nf-User-Id (see routes.h). */
static const struct nf_svc_route sched_routes[] = {
    {"GET", "/internal/jobs/{job_id}", sched_route_job},
    {"GET", "/internal/jobs", sched_route_jobs},
    {"GET", "/internal/jobs/{job_id}/events", sched_route_events},
    {"GET", "/internal/jobs/{job_id}/checkpoints", sched_route_checkpoints},
    {"GET", "/internal/jobs/{job_id}/metrics", sched_route_metrics},
    {"GET", "/internal/artifacts", sched_route_artifacts},
    {"GET", "/internal/artifacts/{artifact_id}", sched_route_artifact},
    {"DELETE", "/internal/artifacts/{artifact_id}", sched_route_artifact_delete},
    {"POST", "/internal/files", sched_route_file_create},
    {"GET", "/internal/files", sched_route_files},
    {"POST", "/internal/jobs/{job_id}/cancel", sched_route_cancel},
    {"GET", "/internal/models", sched_route_models},
    {"POST", "/internal/models", sched_route_model_create},
    {"GET", "/internal/models/{model}", sched_route_model},
    {"DELETE", "/internal/models/{model}", sched_route_model_delete},
    {"GET", "/internal/deployments", sched_route_deployments},
    {"GET", "/internal/deployments/{deployment_id}", sched_route_deployment},
    {"POST", "/internal/deployments/{deployment_id}/status", sched_route_deployment_status},
};

/* forge.billing.costs may have been created a moment ago (by nf_svc, at start): a
 * subscribed topic the broker did not know yet is looked up again at the next metadata
 * refresh, 10 s rather than librdkafka's 5 min. */
static const char *const consumer_conf[] = {"topic.metadata.refresh.interval.ms", "10000", NULL};

static int sched_init(struct nf_svc *svc)
{
    struct sched_ctx *ctx = nf_xcalloc(1, sizeof(*ctx));
    const struct sched_config *cfg = svc->own;
    char err[256] = "";

    if (sched_catalogue_load(cfg->models_file, &ctx->catalogue, err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "models_file_bad", "cannot read the model catalogue", "file",
                  cfg->models_file, "error", err, NULL);
        free(ctx);
        return -1;
    }
    ctx->svc = svc;
    ctx->cfg = svc->own;
    ctx->base = svc->base;
    ctx->metrics = svc->metrics;
    sched_metrics_register(ctx);
    svc->consumer_conf = consumer_conf;
    svc->ctx = ctx;
    return 0;
}

static int sched_start(void *arg)
{
    struct sched_ctx *ctx = arg;
    struct nf_svc *svc = ctx->svc;

    ctx->pg = svc->pg;
    ctx->redis = svc->redis;
    ctx->snap_script = nf_redis_script_new(ctx->redis, sched_snapshot_lua);
    ctx->recent_script = nf_redis_script_new(ctx->redis, sched_recent_lua);
    if (!ctx->snap_script || !ctx->recent_script) {
        nf_log_error("redis_failed", "cannot register the redis scripts");
        return -1;
    }
    nf_work_queue_init(&ctx->work, svc->base, svc->producer, &svc->stopping, &svc->closing, ctx);
    ctx->work.retries = ctx->m.step_retries;
    ctx->work.inflight = ctx->m.inflight;
    if (nf_svc_client(svc, &ctx->billing, "NF_BILLING_ADDR", ctx->cfg->billing_addr,
                      BILLING_TIMEOUT_MS, BILLING_CONNS) != 0 ||
        nf_svc_client(svc, &ctx->wm, "NF_WM_ADDR", ctx->cfg->wm_addr, WM_TIMEOUT_MS, WM_CONNS) != 0)
        return -1;
    if (sched_storage_start(ctx) != 0) {
        nf_log_error("storage_meter_failed", "cannot start the storage metering timer");
        return -1;
    }
    return sched_reconciler_start(ctx);
}

static void sched_on_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct sched_ctx *ctx = arg;

    if (strcmp(msg->topic, NF_TOPIC_JOBS_REQUESTED) == 0)
        sched_requested_handle(ctx, msg);
    else if (strcmp(msg->topic, NF_TOPIC_JOBS_EVENTS) == 0)
        sched_events_handle(ctx, msg);
    else if (strcmp(msg->topic, NF_TOPIC_BILLING_COSTS) == 0)
        sched_costs_handle(ctx, msg);
    else
        nf_kafka_msg_done(msg);
}

/* A drain tick: the cancel requests that will not go on answer 503 (the drain counts the
 * requests in flight), then the items waiting on a backend are what is left. */
static size_t sched_busy(void *arg)
{
    struct sched_ctx *ctx = arg;

    sched_cancel_drain(ctx);
    return nf_work_busy(&ctx->work);
}

/* svc->closing is set: callbacks that fire from here on only unwind. */
static void sched_close(void *arg)
{
    struct sched_ctx *ctx = arg;

    if (ctx->storage_tick)
        event_free(ctx->storage_tick);
    ctx->storage_tick = NULL;
    /* budget checks and cancels still waiting fire now with status 0 */
    nf_http_client_free(ctx->billing);
    ctx->billing = NULL;
    nf_http_client_free(ctx->wm);
    ctx->wm = NULL;
}

static void sched_free(void *arg)
{
    struct sched_ctx *ctx = arg;

    nf_work_free_all(&ctx->work);
    sched_reconciler_free(ctx); /* after the work items: their dtors clear its flags */
    cJSON_Delete(ctx->catalogue);
    free(ctx);
}

const struct nf_svc_desc sched_service = {
    .name = "scheduler",
    .summary = "schedules jobs and tracks their state (DESIGN §2)",
    .env_prefix = "NF_SCHEDULER",
    .addr = "127.0.0.1:8102",
    .needs = NF_SVC_PG | NF_SVC_REDIS | NF_SVC_PRODUCER,
    .schema = "sched",
    .migrations = NF_SOURCE_DIR "/services/scheduler/migrations",
    .timeout_ms = 10000,
    .drain_ms = 10000,
    NF_SVC_OPTS(sched_opts, struct sched_config),
    .consume = sched_topics,
    .group = "nf-scheduler",
    .max_inflight = 256,
    NF_SVC_ROUTES(sched_routes),
    .init = sched_init,
    .start = sched_start,
    .on_msg = sched_on_msg,
    .busy = sched_busy,
    .close = sched_close,
    .free = sched_free,
};
