/*
 * The worker-manager context: backends, routes, start-up and shutdown.
 *
 *   start:    migrations (wm schema) -> Kafka topics -> Redis, Postgres, producer ->
 *             HTTP routes -> job topic consumer -> lease reaper
 *   SIGTERM:  wm_on_stop: stop the reaper, answer waiting polls (204), then wait until
 *             in-flight requests and messages are done -> nf_app_stop_done
 *   wm_free:  Redis and Postgres first (their pending callbacks answer their requests),
 *             then the consumer (offsets committed), the producer (flushed), HTTP last
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_migrate.h"
#include "nf_pg.h"
#include "nf_redis.h"
#include "wm.h"

#define REDIS_TIMEOUT_MS 3000
#define PG_CONNS 4
#define PG_TIMEOUT_MS 5000
#define CONSUMER_MAX_INFLIGHT 256
#define START_RETRIES 30 /* seconds to wait for Postgres and Kafka at start */
#define PRODUCER_FLUSH_MS 5000
#define DRAIN_CHECK_MS 50

static const char *const job_topics[WM_NJOB_TYPES] = {"forge.jobs.generate", "forge.jobs.audit",
                                                      "forge.jobs.distill",  "forge.jobs.train",
                                                      "forge.jobs.evaluate", "forge.jobs.deploy"};

static bool ready(cJSON *checks, void *arg)
{
    struct wm *ctx = arg;
    bool kafka = nf_kafka_producer_ready(ctx->producer) && ctx->consumer != NULL &&
                 nf_kafka_consumer_ready(ctx->consumer);
    bool redis = nf_redis_ready(ctx->redis);
    bool pg = nf_pg_ready(ctx->pg);
    nf_json_add_str(checks, "kafka", kafka ? "ok" : "down");
    nf_json_add_str(checks, "redis", redis ? "ok" : "down");
    nf_json_add_str(checks, "postgres", pg ? "ok" : "down");
    return kafka && redis && pg && !ctx->stopping;
}

static void metrics_init(struct wm *ctx)
{
    struct nf_metrics *m = ctx->metrics;
#define COUNTER(field, name, help) ctx->m.field = nf_metrics_counter(m, name, help, NULL)
    COUNTER(dispatch_queued, "wm_dispatch_queued_total", "dispatch messages queued in Redis");
    COUNTER(dispatch_duplicate, "wm_dispatch_duplicate_total",
            "dispatch messages already known (redelivery)");
    COUNTER(dispatch_malformed, "wm_dispatch_malformed_total",
            "dispatch messages skipped as malformed");
    COUNTER(dispatch_retry, "wm_dispatch_retry_total", "enqueue attempts retried");
    COUNTER(jobs_leased, "wm_jobs_leased_total", "jobs leased to workers");
    COUNTER(polls_empty, "wm_polls_empty_total", "long polls answered 204");
    COUNTER(leases_released, "wm_leases_released_total", "leases released by workers");
    COUNTER(leases_reaped, "wm_leases_reaped_total", "expired leases reported worker_lost");
    COUNTER(workers_registered, "wm_workers_registered_total", "workers registered");
    COUNTER(auth_failed, "wm_auth_failed_total", "worker calls refused with 403");
    COUNTER(events_failed, "wm_events_failed_total", "events not delivered to Kafka");
    COUNTER(leases_lost_reported, "wm_heartbeat_lost_jobs_total",
            "jobs listed in heartbeats whose lease the worker no longer holds");
    COUNTER(workers_lost, "wm_workers_lost_total", "workers that missed 3 heartbeats");
    COUNTER(workers_drained, "wm_workers_drained_total", "workers drained");
    COUNTER(polls_draining, "wm_polls_draining_total", "polls of draining workers (204)");
    COUNTER(cancel_dequeued, "wm_cancel_dequeued_total", "cancels of queued jobs");
    COUNTER(cancel_signalled, "wm_cancel_signalled_total", "cancels passed to workers");
    COUNTER(cancel_unknown, "wm_cancel_unknown_total", "cancels of jobs neither queued nor leased");
    COUNTER(reports_accepted, "wm_reports_accepted_total", "HTTP fallback reports produced");
    COUNTER(reports_refused, "wm_reports_refused_total",
            "HTTP fallback reports refused: lease not held");
#undef COUNTER
    ctx->m.polls_waiting =
        nf_metrics_gauge(m, "wm_polls_waiting", "long polls waiting for a job", NULL);
}

/* Blocking start-up steps retried while the backend comes up. */
static int migrate(const struct wm_config *cfg)
{
    char err[512];
    for (int i = 0; i < START_RETRIES; i++) {
        int n = nf_migrate_run(cfg->pg_dsn, "wm", cfg->migrations, err, sizeof(err));
        if (n >= 0) {
            char applied[16];
            snprintf(applied, sizeof(applied), "%d", n);
            nf_log_kv(NF_LOG_INFO, "migrations_done", "migrations applied", "applied", applied,
                      NULL);
            return 0;
        }
        nf_log_kv(NF_LOG_WARN, "migrations_retry", "migrations failed, retrying", "error", err,
                  NULL);
        sleep(1);
    }
    nf_log_kv(NF_LOG_ERROR, "migrations_failed", "cannot migrate the wm schema", "error", err,
              NULL);
    return -1;
}

static int create_topics(const struct wm_config *cfg)
{
    char err[512];

    for (int i = 0; i < START_RETRIES; i++) {
        if (nf_kafka_create_forge_topics(cfg->brokers, cfg->partitions, cfg->replication, 10000,
                                         err, sizeof(err)) == 0)
            return 0;
        nf_log_kv(NF_LOG_WARN, "topics_retry", "topic creation failed, retrying", "error", err,
                  NULL);
        sleep(1);
    }
    nf_log_kv(NF_LOG_ERROR, "topics_failed", "cannot create Kafka topics", "error", err, NULL);
    return -1;
}

static int open_backends(struct wm *ctx)
{
    char err[512], *host = NULL;
    int port = 0;

    if (nf_cfg_split_addr(ctx->cfg.redis_addr, &host, &port) < 0) {
        nf_log_kv(NF_LOG_ERROR, "config_invalid", "NF_REDIS_ADDR must be host:port", NULL);
        return -1;
    }
    int rc = nf_redis_new(&ctx->redis, ctx->base, host, port, REDIS_TIMEOUT_MS);
    free(host);
    if (rc < 0) {
        nf_log_kv(NF_LOG_ERROR, "redis_failed", "cannot create the Redis client", NULL);
        return -1;
    }
    ctx->lua_enqueue = nf_redis_script_new(ctx->redis, wm_lua_enqueue);
    ctx->lua_pop = nf_redis_script_new(ctx->redis, wm_lua_pop);
    ctx->lua_heartbeat = nf_redis_script_new(ctx->redis, wm_lua_heartbeat);
    ctx->lua_reap_claim = nf_redis_script_new(ctx->redis, wm_lua_reap_claim);
    ctx->lua_reap_done = nf_redis_script_new(ctx->redis, wm_lua_reap_done);
    ctx->lua_requeue = nf_redis_script_new(ctx->redis, wm_lua_requeue);
    ctx->lua_lost_claim = nf_redis_script_new(ctx->redis, wm_lua_lost_claim);
    ctx->lua_drain = nf_redis_script_new(ctx->redis, wm_lua_drain);
    ctx->lua_cancel = nf_redis_script_new(ctx->redis, wm_lua_cancel);
    ctx->lua_lease_check = nf_redis_script_new(ctx->redis, wm_lua_lease_check);
    ctx->lua_fleet = nf_redis_script_new(ctx->redis, wm_lua_fleet);

    if (nf_pg_new(&ctx->pg, ctx->base, ctx->cfg.pg_dsn, PG_CONNS, PG_TIMEOUT_MS) < 0) {
        nf_log_kv(NF_LOG_ERROR, "pg_failed", "cannot create the Postgres pool", NULL);
        return -1;
    }
    if (nf_kafka_producer_new(&ctx->producer, ctx->base, ctx->cfg.brokers, "nf-worker-manager",
                              NULL, err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "kafka_failed", "cannot create the Kafka producer", "error", err,
                  NULL);
        return -1;
    }
    return 0;
}

static int open_http(struct wm *ctx)
{
    char *host = NULL;
    int port = 0;
    /* Long polls last up to 30 s: the idle timeout must be longer. */
    struct nf_http_limits limits = {
        .max_body = (size_t)256 * 1024, .max_headers = 0, .timeout_s = 60};

    if (nf_cfg_split_addr(ctx->cfg.addr, &host, &port) < 0) {
        nf_log_kv(NF_LOG_ERROR, "config_invalid", "NF_WM_ADDR must be host:port", NULL);
        return -1;
    }
    int rc = nf_http_server_new(&ctx->http, ctx->base, host, port, &limits, false, ctx->metrics);
    if (rc < 0) {
        nf_log_kv(NF_LOG_ERROR, "http_bind_failed", "cannot listen", "addr", ctx->cfg.addr, NULL);
        free(host);
        return -1;
    }
    free(host);
    nf_http_set_ready(ctx->http, ready, ctx);
    nf_http_route(ctx->http, "POST", "/api/workers/register", wm_route_register, ctx);
    nf_http_route(ctx->http, "POST", "/api/workers/next_job", wm_route_next_job, ctx);
    nf_http_route(ctx->http, "POST", "/api/workers/heartbeat", wm_route_heartbeat, ctx);
    nf_http_route(ctx->http, "GET", "/api/workers", wm_route_list, ctx);
    nf_http_route(ctx->http, "POST", "/api/workers/drain", wm_route_drain, ctx);
    nf_http_route(ctx->http, "POST", "/api/workers/events", wm_route_events, ctx);
    nf_http_route(ctx->http, "POST", "/api/workers/usage", wm_route_usage, ctx);
    nf_http_route(ctx->http, "POST", "/internal/jobs/{job_id}/cancel", wm_route_cancel, ctx);
    return 0;
}

static int open_consumer(struct wm *ctx)
{
    char err[512];
    if (nf_kafka_consumer_new(&ctx->consumer, ctx->base, ctx->cfg.brokers, "nf-worker-manager",
                              job_topics, WM_NJOB_TYPES, CONSUMER_MAX_INFLIGHT, NULL,
                              wm_consume_msg, ctx, err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "kafka_failed", "cannot create the Kafka consumer", "error", err,
                  NULL);
        return -1;
    }
    return 0;
}

int wm_new(struct wm **out, struct nf_app *app, struct wm_config *cfg)
{
    struct wm *ctx = nf_xcalloc(1, sizeof(*ctx));
    ctx->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg)); /* strings owned by ctx now */
    ctx->app = app;
    ctx->base = app->base;
    nf_crypto_sha256(ctx->cfg.reg_token, strlen(ctx->cfg.reg_token), ctx->reg_token_hash);

    if (nf_metrics_new(&ctx->metrics) < 0)
        goto fail;
    metrics_init(ctx);
    if (migrate(&ctx->cfg) < 0)
        goto fail;
    if (create_topics(&ctx->cfg) < 0)
        goto fail;
    if (open_backends(ctx) < 0)
        goto fail;
    if (open_http(ctx) < 0)
        goto fail;
    if (open_consumer(ctx) < 0)
        goto fail;
    wm_reaper_start(ctx);
    *out = ctx;
    return 0;
fail:
    wm_free(ctx);
    return -1;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct wm *ctx = arg;
    size_t http = ctx->http ? nf_http_inflight(ctx->http) : 0;
    size_t msgs = ctx->consumer ? nf_kafka_consumer_inflight(ctx->consumer) : 0;
    if (http == 0 && msgs == 0 && ctx->reaping == 0) {
        nf_log_kv(NF_LOG_INFO, "drained", "in-flight work finished", NULL);
        nf_app_stop_done(ctx->app);
        return;
    }
    struct timeval tv = {0, (suseconds_t)DRAIN_CHECK_MS * 1000};
    evtimer_add(ctx->drain, &tv);
}

void wm_on_stop(void *arg)
{
    struct wm *ctx = arg;
    if (ctx == NULL || ctx->stopping)
        return;
    ctx->stopping = true;
    nf_log_kv(NF_LOG_INFO, "stopping", "stopping: answering polls, finishing requests", NULL);
    if (ctx->reaper)
        event_del(ctx->reaper);
    wm_polls_flush(ctx);
    ctx->drain = evtimer_new(ctx->base, on_drain, ctx);
    if (ctx->drain == NULL)
        abort();
    on_drain(-1, 0, ctx);
}

void wm_free(struct wm *ctx)
{
    if (ctx == NULL)
        return;
    ctx->stopping = true;
    ctx->closing = true;
    if (ctx->reaper)
        event_free(ctx->reaper);
    if (ctx->drain)
        event_free(ctx->drain);
    wm_polls_flush(ctx);
    wm_consume_free_retries(ctx);
    nf_redis_free(ctx->redis); /* pending callbacks fire with NULL and answer */
    ctx->redis = NULL;
    nf_pg_free(ctx->pg);
    ctx->pg = NULL;
    nf_kafka_consumer_free(ctx->consumer);
    ctx->consumer = NULL;
    nf_kafka_producer_free(ctx->producer, PRODUCER_FLUSH_MS);
    ctx->producer = NULL;
    nf_http_server_free(ctx->http);
    ctx->http = NULL;
    nf_metrics_free(ctx->metrics);
    wm_config_free(&ctx->cfg);
    free(ctx);
}
