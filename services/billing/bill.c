/*
 * The billing service's context: start-up, readiness and the graceful stop.
 *
 *   start:  migrations (blocking) -> topics (blocking) -> Postgres pool -> producer
 *           (DLQ, costs, alerts) -> HTTP -> sweep timer -> consumer (forge.usage +
 *           forge.jobs.events, group NF_BILLING_GROUP)
 *   SIGTERM: stopping = true -> new messages left un-done, backoffs abandoned -> busy
 *           stages finish -> consumer closed (commits) -> nf_app_stop_done -> bill_free.
 */
#include "bill.h"

#include <stdlib.h>
#include <string.h>

#include "nf_app.h"
#include "nf_cfg.h"
#include "nf_http.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_migrate.h"
#include "nf_pg.h"

#define PG_TIMEOUT_MS 10000
#define TOPICS_TIMEOUT_MS 30000
#define FLUSH_TIMEOUT_MS 5000
#define DRAIN_POLL_MS 20

static void on_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct bill_ctx *ctx = arg;

    if (ctx->stopping)
        return; /* left un-done: redelivered to the next consumer of the partition */
    if (strcmp(msg->topic, BILL_TOPIC_USAGE) == 0)
        bill_usage_handle(ctx, msg);
    else if (strcmp(msg->topic, BILL_TOPIC_EVENTS) == 0)
        bill_events_handle(ctx, msg);
    else
        nf_kafka_msg_done(msg);
}

static bool ready(cJSON *checks, void *arg)
{
    struct bill_ctx *ctx = arg;
    bool kafka = nf_kafka_producer_ready(ctx->producer) && nf_kafka_consumer_ready(ctx->consumer);
    bool pg = nf_pg_ready(ctx->pg);

    nf_json_add_str(checks, "kafka", kafka ? "ok" : "down");
    nf_json_add_str(checks, "postgres", pg ? "ok" : "down");
    return kafka && pg && !ctx->stopping;
}

static void register_metrics(struct bill_ctx *ctx)
{
    struct nf_metrics *m = ctx->metrics;

    ctx->m.recorded = nf_metrics_counter(m, "nf_bill_usage_events_total", "usage events recorded",
                                         "result=\"recorded\"");
    ctx->m.duplicate = nf_metrics_counter(m, "nf_bill_usage_events_total", "usage events recorded",
                                          "result=\"duplicate\"");
    ctx->m.invalid = nf_metrics_counter(m, "nf_bill_usage_events_total", "usage events recorded",
                                        "result=\"invalid\"");
    ctx->m.refused = nf_metrics_counter(m, "nf_bill_usage_events_total", "usage events recorded",
                                        "result=\"refused\"");
    ctx->m.pending = nf_metrics_counter(m, "nf_bill_usage_events_total", "usage events recorded",
                                        "result=\"pending\"");
    ctx->m.leases = nf_metrics_counter(m, "nf_bill_leases_total",
                                       "job leases recorded (assigned events)", NULL);
    ctx->m.alerts =
        nf_metrics_counter(m, "nf_bill_budget_alerts_total", "budget alerts sent", NULL);
    ctx->m.costs =
        nf_metrics_counter(m, "nf_bill_job_costs_total", "job cost updates produced", NULL);
    ctx->m.batches = nf_metrics_counter(m, "nf_bill_batches_total",
                                        "usage batches committed (one statement each)", NULL);
    ctx->m.step_retries = nf_metrics_counter(m, "nf_bill_step_retries_total",
                                             "backend failures retried with backoff", NULL);
    ctx->m.inflight =
        nf_metrics_gauge(m, "nf_bill_inflight_messages", "Kafka messages being handled", NULL);
}

static int create_topics(const struct bill_config *cfg)
{
    char err[512];

    if (nf_kafka_create_forge_topics(cfg->brokers, cfg->partitions, cfg->replication,
                                     TOPICS_TIMEOUT_MS, err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "topics_failed", "cannot create kafka topics", "error", err, NULL);
        return -1;
    }
    return 0;
}

int bill_new(struct bill_ctx **out, struct event_base *base, struct nf_app *app,
             struct bill_config *cfg)
{
    static const char *const topics[] = {BILL_TOPIC_USAGE, BILL_TOPIC_EVENTS};
    struct bill_ctx *ctx = nf_xcalloc(1, sizeof(*ctx));
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

    n = nf_migrate_run(ctx->cfg.pg_dsn, "billing", ctx->cfg.migrations, err, sizeof(err));
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
    if (nf_kafka_producer_new(&ctx->producer, base, ctx->cfg.brokers, BILL_SOURCE, NULL, err,
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
    if (bill_routes_internal(ctx) < 0 || bill_sweep_init(ctx) < 0)
        goto fail;
    if (nf_kafka_consumer_new(&ctx->consumer, base, ctx->cfg.brokers, ctx->cfg.group, topics, 2,
                              ctx->cfg.max_inflight, NULL, on_msg, ctx, err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "consumer_failed", "cannot create the kafka consumer", "error", err,
                  NULL);
        goto fail;
    }
    nf_log_kv(NF_LOG_INFO, "started", "billing started", "addr", ctx->cfg.addr, "group",
              ctx->cfg.group, NULL);
    *out = ctx;
    return 0;
fail:
    free(host);
    bill_free(ctx);
    return -1;
}

static void close_consumer(struct bill_ctx *ctx)
{
    ctx->closing = true; /* from here on no message may be marked done */
    nf_kafka_consumer_free(ctx->consumer);
    ctx->consumer = NULL;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct bill_ctx *ctx = arg;

    if (bill_work_busy(ctx) > 0)
        return;
    event_del(ctx->drain);
    nf_log_info("drained", "in-flight work finished, closing");
    close_consumer(ctx);
    if (ctx->app)
        nf_app_stop_done(ctx->app);
}

void bill_stop(void *arg)
{
    struct bill_ctx *ctx = arg;
    struct timeval tv = {0, (suseconds_t)DRAIN_POLL_MS * 1000};

    if (!ctx || ctx->stopping)
        return;
    ctx->stopping = true;
    nf_log_info("stopping", "stopping: finishing in-flight work");
    ctx->drain = event_new(ctx->base, -1, EV_PERSIST, on_drain, ctx);
    if (!ctx->drain)
        abort();
    event_add(ctx->drain, &tv);
    on_drain(-1, 0, ctx);
}

void bill_free(struct bill_ctx *ctx)
{
    if (!ctx)
        return;
    ctx->stopping = true;
    if (ctx->drain)
        event_free(ctx->drain);
    if (ctx->sweep)
        event_free(ctx->sweep);
    ctx->sweep = NULL;
    close_consumer(ctx);
    nf_kafka_producer_free(ctx->producer, FLUSH_TIMEOUT_MS);
    nf_pg_free(ctx->pg);
    nf_http_server_free(ctx->http);
    bill_work_free_all(ctx);
    nf_metrics_free(ctx->metrics);
    bill_config_free(&ctx->cfg);
    free(ctx);
}
