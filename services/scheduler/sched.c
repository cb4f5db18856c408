/*
 * The scheduler's context: start-up in dependency order, readiness, and the graceful
 * stop.
 *
 *   start:  migrations (blocking) -> topics (blocking) -> Postgres pool -> Redis ->
 *           producer -> HTTP (routes, /readyz) -> consumer (requested + events)
 *   SIGTERM: stopping = true -> new messages are left un-done, backoffs and delays are
 *           abandoned -> every busy stage finishes -> consumer closed (commits the
 *           stored offsets) -> nf_app_stop_done -> sched_free: producer flush, Postgres,
 *           Redis, HTTP, remaining work items.
 */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

#include "nf_app.h"
#include "nf_cfg.h"
#include "nf_http.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_migrate.h"
#include "nf_pg.h"
#include "nf_redis.h"

#define PG_TIMEOUT_MS 10000
#define REDIS_TIMEOUT_MS 2000
#define TOPICS_TIMEOUT_MS 30000
#define FLUSH_TIMEOUT_MS 5000
#define DRAIN_POLL_MS 20
#define BILLING_TIMEOUT_MS 5000
#define BILLING_CONNS 16
#define WM_TIMEOUT_MS 3000
#define WM_CONNS 8

static void on_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct sched_ctx *ctx = arg;

    if (ctx->stopping)
        return; /* left un-done: redelivered to the next consumer of the partition */
    if (strcmp(msg->topic, SCHED_TOPIC_REQUESTED) == 0)
        sched_requested_handle(ctx, msg);
    else if (strcmp(msg->topic, SCHED_TOPIC_EVENTS) == 0)
        sched_events_handle(ctx, msg);
    else if (strcmp(msg->topic, SCHED_TOPIC_COSTS) == 0)
        sched_costs_handle(ctx, msg);
    else
        nf_kafka_msg_done(msg);
}

static bool ready(cJSON *checks, void *arg)
{
    struct sched_ctx *ctx = arg;
    bool kafka = nf_kafka_producer_ready(ctx->producer) && nf_kafka_consumer_ready(ctx->consumer);
    bool redis = nf_redis_ready(ctx->redis);
    bool pg = nf_pg_ready(ctx->pg);

    nf_json_add_str(checks, "kafka", kafka ? "ok" : "down");
    nf_json_add_str(checks, "redis", redis ? "ok" : "down");
    nf_json_add_str(checks, "postgres", pg ? "ok" : "down");
    return kafka && redis && pg && !ctx->stopping;
}

static void register_metrics(struct sched_ctx *ctx)
{
    struct nf_metrics *m = ctx->metrics;

    ctx->m.requested =
        nf_metrics_counter(m, "nf_sched_jobs_requested_total", "job requests recorded", NULL);
    ctx->m.requested_dup = nf_metrics_counter(m, "nf_sched_jobs_requested_duplicate_total",
                                              "job requests redelivered for known jobs", NULL);
    ctx->m.dispatched = nf_metrics_counter(m, "nf_sched_jobs_dispatched_total",
                                           "dispatch messages delivered", NULL);
    ctx->m.malformed_req =
        nf_metrics_counter(m, "nf_sched_malformed_total", "malformed messages skipped",
                           "topic=\"" SCHED_TOPIC_REQUESTED "\"");
    ctx->m.malformed_ev =
        nf_metrics_counter(m, "nf_sched_malformed_total", "malformed messages skipped",
                           "topic=\"" SCHED_TOPIC_EVENTS "\"");
    ctx->m.retries = nf_metrics_counter(m, "nf_sched_job_retries_total",
                                        "failed attempts sent back to queued", NULL);
    ctx->m.dead_lettered =
        nf_metrics_counter(m, "nf_sched_jobs_dead_lettered_total", "jobs dead-lettered", NULL);
    ctx->m.step_retries = nf_metrics_counter(m, "nf_sched_step_retries_total",
                                             "backend failures retried with backoff", NULL);
    ctx->m.inflight =
        nf_metrics_gauge(m, "nf_sched_inflight_messages", "Kafka messages being handled", NULL);
    ctx->m.budget_refused = nf_metrics_counter(m, "nf_sched_budget_refused_total",
                                               "jobs failed with budget_exceeded", NULL);
    ctx->m.budget_unchecked =
        nf_metrics_counter(m, "nf_sched_budget_unchecked_total",
                           "jobs dispatched without a budget check (billing unreachable)", NULL);
    ctx->m.costs_applied = nf_metrics_counter(m, "nf_sched_job_costs_applied_total",
                                              "job cost updates that changed a job", NULL);
    ctx->m.storage_events = nf_metrics_counter(m, "nf_sched_storage_events_total",
                                               "storage_byte_hours usage events produced", NULL);
}

static int create_topics(const struct sched_config *cfg)
{
    char err[512];

    if (nf_kafka_create_forge_topics(cfg->brokers, cfg->partitions, cfg->replication,
                                     TOPICS_TIMEOUT_MS, err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "topics_failed", "cannot create kafka topics", "error", err, NULL);
        return -1;
    }
    return 0;
}

int sched_new(struct sched_ctx **out, struct event_base *base, struct nf_app *app,
              struct sched_config *cfg)
{
    static const char *const topics[] = {SCHED_TOPIC_REQUESTED, SCHED_TOPIC_EVENTS,
                                         SCHED_TOPIC_COSTS};
    /* forge.billing.costs may have been created a moment ago (by us, above): a subscribed
     * topic the broker did not know yet is looked up again at the next metadata refresh,
     * 10 s rather than librdkafka's 5 min */
    static const char *const consumer_extra[] = {"topic.metadata.refresh.interval.ms", "10000",
                                                 NULL};
    struct sched_ctx *ctx = nf_xcalloc(1, sizeof(*ctx));
    struct nf_http_limits limits = {0};
    char err[512], *host = NULL;
    int port, n;

    ctx->base = base;
    ctx->app = app;
    ctx->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg)); /* owned by ctx */

    if (nf_metrics_new(&ctx->metrics) < 0)
        goto fail;
    register_metrics(ctx);

    n = nf_migrate_run(ctx->cfg.pg_dsn, "sched", ctx->cfg.migrations, err, sizeof(err));
    if (n < 0) {
        nf_log_kv(NF_LOG_ERROR, "migrate_failed", "migrations failed", "error", err, NULL);
        goto fail;
    }
    nf_log_info("migrated", "%d migration(s) applied", n);
    if (create_topics(&ctx->cfg) < 0)
        goto fail;

    if (nf_pg_new(&ctx->pg, base, ctx->cfg.pg_dsn, ctx->cfg.pg_conns, PG_TIMEOUT_MS) < 0) {
        nf_log_error("pg_failed", "cannot create the postgres pool");
        goto fail;
    }
    if (nf_cfg_split_addr(ctx->cfg.redis_addr, &host, &port) < 0 ||
        nf_redis_new(&ctx->redis, base, host, port, REDIS_TIMEOUT_MS) < 0) {
        nf_log_error("redis_failed", "cannot create the redis client");
        goto fail;
    }
    free(host);
    host = NULL;
    ctx->snap_script = nf_redis_script_new(ctx->redis, sched_snapshot_lua);
    if (!ctx->snap_script)
        goto fail;
    if (nf_kafka_producer_new(&ctx->producer, base, ctx->cfg.brokers, SCHED_SOURCE, NULL, err,
                              sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "producer_failed", "cannot create the kafka producer", "error", err,
                  NULL);
        goto fail;
    }
    if (nf_cfg_split_addr(ctx->cfg.addr, &host, &port) < 0 ||
        nf_http_server_new(&ctx->http, base, host, port, &limits, false, ctx->metrics) < 0) {
        nf_log_kv(NF_LOG_ERROR, "listen_failed", "cannot listen", "addr", ctx->cfg.addr, NULL);
        goto fail;
    }
    free(host);
    host = NULL;
    nf_http_set_ready(ctx->http, ready, ctx);
    if (sched_routes_internal(ctx) < 0)
        goto fail;
    if (nf_cfg_split_addr(ctx->cfg.billing_addr, &host, &port) < 0 ||
        nf_http_client_new(&ctx->billing, base, host, port, BILLING_TIMEOUT_MS, BILLING_CONNS) <
            0) {
        nf_log_error("billing_client_failed", "cannot create the billing client");
        goto fail;
    }
    free(host);
    host = NULL;
    if (sched_storage_start(ctx) < 0)
        goto fail;
    if (nf_cfg_split_addr(ctx->cfg.wm_addr, &host, &port) < 0 ||
        nf_http_client_new(&ctx->wm, base, host, port, WM_TIMEOUT_MS, WM_CONNS) < 0) {
        nf_log_error("wm_client_failed", "cannot create the worker-manager client");
        goto fail;
    }
    free(host);
    host = NULL;
    if (sched_reconciler_start(ctx) < 0)
        goto fail;
    if (nf_kafka_consumer_new(&ctx->consumer, base, ctx->cfg.brokers, SCHED_GROUP, topics, 3,
                              ctx->cfg.max_inflight, consumer_extra, on_msg, ctx, err,
                              sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "consumer_failed", "cannot create the kafka consumer", "error", err,
                  NULL);
        goto fail;
    }
    nf_log_kv(NF_LOG_INFO, "started", "scheduler started", "addr", ctx->cfg.addr, NULL);
    *out = ctx;
    return 0;
fail:
    free(host);
    sched_free(ctx);
    return -1;
}

static void close_consumer(struct sched_ctx *ctx)
{
    /* from here on no message may be marked done: nf_kafka frees the un-done ones */
    ctx->closing = true;
    nf_kafka_consumer_free(ctx->consumer);
    ctx->consumer = NULL;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct sched_ctx *ctx = arg;
    size_t busy = sched_work_busy(ctx);

    if (busy > 0)
        return;
    event_del(ctx->drain);
    nf_log_info("drained", "in-flight work finished, closing");
    close_consumer(ctx);
    if (ctx->app)
        nf_app_stop_done(ctx->app);
}

void sched_stop(void *arg)
{
    struct sched_ctx *ctx = arg;
    struct timeval tv = {0, (suseconds_t)DRAIN_POLL_MS * 1000};

    if (!ctx || ctx->stopping)
        return;
    ctx->stopping = true;
    nf_log_kv(NF_LOG_INFO, "stopping", "stopping: finishing in-flight work", NULL);
    ctx->drain = event_new(ctx->base, -1, EV_PERSIST, on_drain, ctx);
    if (!ctx->drain)
        abort();
    event_add(ctx->drain, &tv);
    on_drain(-1, 0, ctx);
}

void sched_free(struct sched_ctx *ctx)
{
    if (!ctx)
        return;
    ctx->stopping = true;
    if (ctx->drain)
        event_free(ctx->drain);
    close_consumer(ctx);
    /* delivery reports still due fire now (closing: they only unwind) */
    nf_kafka_producer_free(ctx->producer, FLUSH_TIMEOUT_MS);
    if (ctx->storage_tick)
        event_free(ctx->storage_tick);
    ctx->storage_tick = NULL;
    /* budget checks still waiting fire now with status 0 (closing: they only unwind) */
    nf_http_client_free(ctx->billing);
    ctx->billing = NULL;
    /* cancels waiting for the worker-manager fire now with status 0 (closing: unwind) */
    nf_http_client_free(ctx->wm);
    ctx->wm = NULL;
    nf_pg_free(ctx->pg); /* queued queries fail: HTTP requests get their 503 */
    nf_redis_free(ctx->redis);
    nf_http_server_free(ctx->http);
    sched_work_free_all(ctx);
    sched_reconciler_free(ctx); /* after the work items: their dtors clear its flags */
    nf_metrics_free(ctx->metrics);
    sched_config_free(&ctx->cfg);
    free(ctx);
}
