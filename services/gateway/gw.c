/*
 * The gateway context: backends, server, routes, readiness, metrics and the graceful
 * stop.
 *
 *   SIGTERM -> gw_stop: close the listener (nf_http_server_stop: with SO_REUSEPORT new
 *              connections go to the other gateways), keep serving what is in flight
 *           -> every 50 ms: only worker long polls left? free the wm client (they are
 *              answered 503 at once and the agents retry elsewhere); nothing in flight
 *              and the Kafka queue empty, or drain_ms passed? -> nf_app_stop_done
 *           -> loop exits -> gw_free: flush Kafka, fail what is left (each pending
 *              request still gets its one answer), free.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_app.h"
#include "nf_cfg.h"
#include "nf_event.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_redis.h"

#define DRAIN_TICK_MS 50
#define FLUSH_MS 5000
#define BACKEND_CONNS 64
#define HTTP_IDLE_TIMEOUT_S 60 /* above the 40 s worker long poll */

void gw_reply_unavailable(struct nf_http_req *req, int retry_s, const char *msg)
{
    char v[16];

    snprintf(v, sizeof(v), "%d", retry_s);
    nf_http_set_header(req, "Retry-After", v);
    nf_http_reply_error(req, 503, "unavailable", NULL, "%s", msg);
}

void gw_backend_error(struct gw_ctx *ctx, enum gw_backend b)
{
    nf_metrics_counter_add(ctx->m_backend_err[b], 1);
}

static bool ready(cJSON *checks, void *arg)
{
    struct gw_ctx *ctx = arg;
    bool kafka = nf_kafka_producer_ready(ctx->producer);
    bool redis = nf_redis_ready(ctx->redis);

    nf_json_add_str(checks, "kafka", kafka ? "ok" : "down");
    nf_json_add_str(checks, "redis", redis ? "ok" : "down");
    return kafka && redis && !ctx->stopping;
}

static void metrics_register(struct gw_ctx *ctx)
{
    static const char *const fails[GW_NAUTH_FAILS] = {"missing", "malformed", "unknown"};
    static const char *const sources[GW_NAUTH_SOURCES] = {"cache", "auth", "revoked"};
    static const char *const backends[GW_NBACKENDS] = {"redis",     "kafka",          "auth",
                                                       "scheduler", "worker_manager", "billing"};
    char labels[64];
    int i;

    for (i = 0; i < GW_NJOB_TYPES; i++) {
        snprintf(labels, sizeof(labels), "job_type=\"%s\"", gw_job_types[i]);
        ctx->m_submitted[i] = nf_metrics_counter(ctx->metrics, "nf_gw_jobs_submitted_total",
                                                 "jobs accepted (202) by job type", labels);
    }
    for (i = 0; i < GW_NAUTH_FAILS; i++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", fails[i]);
        ctx->m_auth_fail[i] = nf_metrics_counter(ctx->metrics, "nf_gw_auth_failures_total",
                                                 "requests refused with 403 by reason", labels);
    }
    for (i = 0; i < GW_NAUTH_SOURCES; i++) {
        snprintf(labels, sizeof(labels), "source=\"%s\"", sources[i]);
        ctx->m_auth_source[i] =
            nf_metrics_counter(ctx->metrics, "nf_gw_auth_lookups_total",
                               "credential records by where they came from", labels);
    }
    ctx->m_rate_limited = nf_metrics_counter(ctx->metrics, "nf_gw_rate_limited_total",
                                             "requests refused with 429 by the rate limit", NULL);
    ctx->m_rl_skipped =
        nf_metrics_counter(ctx->metrics, "nf_gw_rate_limit_skipped_total",
                           "requests let through without a rate limit (Redis unavailable)", NULL);
    for (i = 0; i < GW_NBACKENDS; i++) {
        snprintf(labels, sizeof(labels), "backend=\"%s\"", backends[i]);
        ctx->m_backend_err[i] =
            nf_metrics_counter(ctx->metrics, "nf_gw_backend_errors_total",
                               "failed calls to a backend (timeouts, refusals, errors)", labels);
    }
}

static int connect_client(struct nf_http_client **out, struct event_base *base, const char *env,
                          const char *addr, int timeout_ms, int conns)
{
    char *host = NULL;
    int port, rc;

    if (nf_cfg_split_addr(addr, &host, &port) != 0)
        return -1;
    rc = nf_http_client_new(out, base, host, port, timeout_ms, conns);
    if (rc != 0)
        nf_log_kv(NF_LOG_ERROR, "client_failed", "cannot create http client", "env", env, NULL);
    free(host);
    return rc;
}

static int backends_new(struct gw_ctx *ctx)
{
    const struct gw_config *cfg = ctx->cfg;
    char err[512], timeout[16], *host = NULL;
    const char *extra[] = {"message.timeout.ms", timeout, "linger.ms", "1", NULL};
    int port, rc;

    if (nf_cfg_split_addr(cfg->redis_addr, &host, &port) != 0)
        return -1;
    rc = nf_redis_new(&ctx->redis, ctx->base, host, port, cfg->backend_timeout_ms);
    free(host);
    if (rc != 0 || gw_snapshot_init(ctx) != 0 || gw_rl_init(ctx) != 0) {
        nf_log_error("redis_failed", "cannot create the redis client");
        return -1;
    }

    /* Topics may exist already; a broker that is down now is reported by /readyz and
     * by 503 answers, and is not a reason to refuse to start. */
    if (nf_kafka_create_forge_topics(cfg->kafka_brokers, cfg->kafka_partitions,
                                     cfg->kafka_replication, 5000, err, sizeof(err)) != 0)
        nf_log_kv(NF_LOG_WARN, "kafka_topics_failed", "cannot create kafka topics", "error", err,
                  NULL);
    snprintf(timeout, sizeof(timeout), "%d", cfg->produce_timeout_ms);
    if (nf_kafka_producer_new(&ctx->producer, ctx->base, cfg->kafka_brokers, "nf-gateway", extra,
                              err, sizeof(err)) != 0) {
        nf_log_kv(NF_LOG_ERROR, "kafka_failed", "cannot create the kafka producer", "error", err,
                  NULL);
        return -1;
    }

    if (connect_client(&ctx->auth, ctx->base, "NF_AUTH_ADDR", cfg->auth_addr,
                       cfg->backend_timeout_ms, BACKEND_CONNS) != 0 ||
        connect_client(&ctx->sched, ctx->base, "NF_SCHEDULER_ADDR", cfg->sched_addr,
                       cfg->backend_timeout_ms, BACKEND_CONNS) != 0 ||
        connect_client(&ctx->wm, ctx->base, "NF_WM_ADDR", cfg->wm_addr, 10000, cfg->wm_conns) !=
            0 ||
        connect_client(&ctx->billing, ctx->base, "NF_BILLING_ADDR", cfg->billing_addr,
                       cfg->backend_timeout_ms, BACKEND_CONNS) != 0)
        return -1;
    return 0;
}

static int server_new(struct gw_ctx *ctx)
{
    const struct gw_config *cfg = ctx->cfg;
    struct nf_http_limits limits = {(size_t)cfg->max_body, 0, HTTP_IDLE_TIMEOUT_S};
    char *host = NULL;
    int port, rc;

    if (nf_cfg_split_addr(cfg->addr, &host, &port) != 0)
        return -1;
    rc =
        nf_http_server_new(&ctx->srv, ctx->base, host, port, &limits, cfg->reuseport, ctx->metrics);
    if (rc != 0)
        nf_log_kv(NF_LOG_ERROR, "listen_failed", "cannot listen", "addr", cfg->addr, NULL);
    free(host);
    if (rc != 0)
        return -1;
    nf_http_set_ready(ctx->srv, ready, ctx);
    if (gw_meta_register(ctx) != 0 || gw_jobs_register(ctx) != 0 || gw_workers_register(ctx) != 0 ||
        gw_auth_register(ctx) != 0 || gw_billing_register(ctx) != 0 ||
        gw_artifacts_register(ctx) != 0) {
        nf_log_error("routes_failed", "cannot register routes");
        return -1;
    }
    return 0;
}

static void drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct gw_ctx *ctx = arg;
    size_t inflight = nf_http_inflight(ctx->srv);
    int outq = nf_kafka_producer_outq(ctx->producer);
    char a[24], b[24];

    if (ctx->wm && inflight > 0 && inflight == ctx->long_polls) {
        /* a long poll may last 30 s more: end them now (503) rather than wait */
        nf_http_client_free(ctx->wm);
        ctx->wm = NULL;
        return; /* the next tick sees them answered */
    }
    if ((inflight > 0 || outq > 0) && nf_now_ms() < ctx->drain_deadline_ms)
        return;
    snprintf(a, sizeof(a), "%zu", inflight);
    snprintf(b, sizeof(b), "%d", outq);
    nf_log_kv(NF_LOG_INFO, "drained", "stopping", "inflight", a, "kafka_outq", b, NULL);
    event_del(ctx->drain);
    nf_app_stop_done(ctx->app);
}

void gw_stop(void *arg)
{
    struct gw_ctx *ctx = arg;
    struct timeval tick = {0, (suseconds_t)DRAIN_TICK_MS * 1000};

    if (!ctx || ctx->stopping)
        return;
    ctx->stopping = true;
    ctx->drain_deadline_ms = nf_now_ms() + (uint64_t)ctx->cfg->drain_ms;
    nf_http_server_stop(ctx->srv);
    nf_log_info("draining", "listener closed, finishing in-flight requests");
    event_add(ctx->drain, &tick);
}

int gw_new(struct gw_ctx **out, const struct gw_config *cfg, struct nf_app *app)
{
    struct gw_ctx *ctx = calloc(1, sizeof(*ctx));
    char err[512];

    if (!ctx)
        abort();
    ctx->cfg = cfg;
    ctx->app = app;
    ctx->base = app->base;
    if (gw_meta_load(ctx, err, sizeof(err)) != 0) {
        nf_log_kv(NF_LOG_ERROR, "openapi_failed", "cannot load the openapi document", "error", err,
                  NULL);
        goto fail;
    }
    if (nf_metrics_new(&ctx->metrics) != 0)
        goto fail;
    metrics_register(ctx);
    ctx->drain = event_new(ctx->base, -1, EV_PERSIST, drain_tick, ctx);
    if (!ctx->drain)
        goto fail;
    if (backends_new(ctx) != 0 || server_new(ctx) != 0)
        goto fail;
    *out = ctx;
    return 0;

fail:
    gw_free(ctx);
    return -1;
}

/*
 * Order matters: each step may fire callbacks of pending requests, which answer 503
 * because `closing` is set, and only ever touch backends that are freed later.
 */
void gw_free(struct gw_ctx *ctx)
{
    struct nf_redis *redis;

    if (!ctx)
        return;
    ctx->closing = true;
    if (ctx->drain)
        event_free(ctx->drain);
    /* delivery callbacks of failed requests still DEL their snapshots through redis */
    nf_kafka_producer_free(ctx->producer, FLUSH_MS);
    ctx->producer = NULL;
    if (ctx->wm)
        nf_http_client_free(ctx->wm);
    if (ctx->sched)
        nf_http_client_free(ctx->sched);
    /* scheduler calls of streams fired above; end the streams waiting on timers */
    gw_streams_close_all(ctx);
    if (ctx->billing)
        nf_http_client_free(ctx->billing);
    if (ctx->auth)
        nf_http_client_free(ctx->auth);
    redis = ctx->redis;
    ctx->redis = NULL; /* gw_snapshot_del is a no-op from here on */
    nf_redis_free(redis);
    if (ctx->srv)
        nf_http_server_free(ctx->srv);
    if (ctx->metrics)
        nf_metrics_free(ctx->metrics);
    free(ctx->openapi);
    free(ctx);
}
