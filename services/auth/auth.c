/*
 * The nf-auth context: migrations, backends, server, readiness, metrics and the graceful
 * stop.
 *
 *   start: nf_migrate_run (retried for up to 30 s while Postgres comes up) -> pg pool,
 *          redis, forge.audit producer, Argon2id threads + the dummy hash, server, routes,
 *          the last_used_at timer
 *   SIGTERM -> auth_stop: close the listener (nf_http_server_stop), poll every 50 ms until
 *              no request is in flight or drain_ms passed -> nf_app_stop_done -> auth_free
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "nf_app.h"
#include "nf_cfg.h"
#include "nf_event.h"
#include "nf_http.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_migrate.h"
#include "nf_pg.h"
#include "nf_redis.h"

#define DRAIN_TICK_MS 50
#define MIGRATE_TRIES 30 /* one per second */
#define FLUSH_MS 3000
#define HASH_QUEUE 256 /* logins and registrations waiting for a hasher thread, then 503 */

void auth_reply_unavailable(struct nf_http_req *req, const char *msg)
{
    nf_http_set_header(req, "Retry-After", "1");
    nf_http_reply_error(req, 503, "unavailable", NULL, "%s", msg);
}

void auth_backend_error(struct auth_ctx *ctx, enum auth_backend b)
{
    nf_metrics_counter_add(ctx->m_backend_err[b], 1);
}

static bool ready(cJSON *checks, void *arg)
{
    struct auth_ctx *ctx = arg;
    bool pg = nf_pg_ready(ctx->pg);
    bool redis = nf_redis_ready(ctx->redis);

    nf_json_add_str(checks, "postgres", pg ? "ok" : "down");
    nf_json_add_str(checks, "redis", redis ? "ok" : "down");
    /* audit events wait in the producer while Kafka is away: reported, not required */
    nf_json_add_str(checks, "kafka",
                    ctx->producer && nf_kafka_producer_ready(ctx->producer) ? "ok" : "down");
    return pg && redis && !ctx->stopping;
}

static void metrics_register(struct auth_ctx *ctx)
{
    static const char *const logins[AUTH_NLOGIN] = {"ok", "failed", "limited"};
    char labels[64];
    int i;

    for (i = 0; i < AUTH_NLOGIN; i++) {
        snprintf(labels, sizeof(labels), "result=\"%s\"", logins[i]);
        ctx->m_login[i] =
            nf_metrics_counter(ctx->metrics, "nf_auth_logins_total", "logins by result", labels);
    }
    ctx->m_keys_created = nf_metrics_counter(ctx->metrics, "nf_auth_keys_created_total",
                                             "API keys created through the API", NULL);
    ctx->m_keys_revoked =
        nf_metrics_counter(ctx->metrics, "nf_auth_keys_revoked_total", "API keys revoked", NULL);
    ctx->m_registered = nf_metrics_counter(ctx->metrics, "nf_auth_users_registered_total",
                                           "users registered", NULL);
    ctx->m_usage_flushed =
        nf_metrics_counter(ctx->metrics, "nf_auth_key_usage_flushed_total",
                           "last_used_at updates written from auth:used batches", NULL);
    ctx->m_backend_err[AUTH_BACKEND_KAFKA] = nf_metrics_counter(
        ctx->metrics, "nf_auth_backend_errors_total", "failed backend calls", "backend=\"kafka\"");
    ctx->m_verify_ok = nf_metrics_counter(ctx->metrics, "nf_auth_key_verify_total",
                                          "key verifications by result", "result=\"ok\"");
    ctx->m_verify_miss = nf_metrics_counter(ctx->metrics, "nf_auth_key_verify_total",
                                            "key verifications by result", "result=\"not_found\"");
    ctx->m_bootstrap = nf_metrics_counter(ctx->metrics, "nf_auth_bootstrap_keys_total",
                                          "API keys created by /internal/bootstrap", NULL);
    ctx->m_backend_err[AUTH_BACKEND_PG] =
        nf_metrics_counter(ctx->metrics, "nf_auth_backend_errors_total", "failed backend calls",
                           "backend=\"postgres\"");
    ctx->m_backend_err[AUTH_BACKEND_REDIS] = nf_metrics_counter(
        ctx->metrics, "nf_auth_backend_errors_total", "failed backend calls", "backend=\"redis\"");
}

/* Blocking, before the loop runs: several copies starting together are serialised by
 * nf_migrate's advisory lock. */
static int migrate(const struct auth_config *cfg)
{
    char err[512], n[16];
    int i, rc = -1;

    for (i = 0; i < MIGRATE_TRIES; i++) {
        rc = nf_migrate_run(cfg->pg_dsn, "auth", cfg->migrations, err, sizeof(err));
        if (rc >= 0)
            break;
        nf_log_kv(NF_LOG_WARN, "migrate_retry", "migrations failed, retrying", "error", err, NULL);
        sleep(1);
    }
    if (rc < 0) {
        nf_log_kv(NF_LOG_ERROR, "migrate_failed", "cannot apply migrations", "dir", cfg->migrations,
                  "error", err, NULL);
        return -1;
    }
    snprintf(n, sizeof(n), "%d", rc);
    nf_log_kv(NF_LOG_INFO, "migrated", "migrations applied", "applied", n, NULL);
    return 0;
}

static int backends_new(struct auth_ctx *ctx)
{
    const struct auth_config *cfg = ctx->cfg;
    char *host = NULL;
    int port, rc;

    if (nf_pg_new(&ctx->pg, ctx->base, cfg->pg_dsn, cfg->pg_conns, cfg->timeout_ms) != 0) {
        nf_log_error("pg_failed", "cannot create the postgres pool");
        return -1;
    }
    if (nf_cfg_split_addr(cfg->redis_addr, &host, &port) != 0)
        return -1;
    rc = nf_redis_new(&ctx->redis, ctx->base, host, port, cfg->timeout_ms);
    free(host);
    if (rc != 0 || auth_account_init(ctx) != 0) {
        nf_log_error("redis_failed", "cannot create the redis client");
        return -1;
    }
    return 0;
}

/* The audit producer. A broker that is down now is no reason to refuse to start: keys
 * still verify, and the events wait in the producer. */
static void producer_new(struct auth_ctx *ctx)
{
    const struct auth_config *cfg = ctx->cfg;
    const char *extra[] = {"linger.ms", "5", NULL};
    char err[512];

    if (nf_kafka_create_forge_topics(cfg->kafka_brokers, cfg->kafka_partitions,
                                     cfg->kafka_replication, 5000, err, sizeof(err)) != 0)
        nf_log_kv(NF_LOG_WARN, "kafka_topics_failed", "cannot create kafka topics", "error", err,
                  NULL);
    if (nf_kafka_producer_new(&ctx->producer, ctx->base, cfg->kafka_brokers, "nf-auth", extra, err,
                              sizeof(err)) != 0)
        nf_log_kv(NF_LOG_ERROR, "kafka_failed", "cannot create the audit producer", "error", err,
                  NULL);
}

/* Argon2id threads, and the hash that unknown e-mails are verified against so a login
 * takes as long whether the e-mail exists or not (computed once, before the loop runs). */
static int hasher_new(struct auth_ctx *ctx)
{
    char pw[48];

    nf_crypto_token(24, pw, sizeof(pw));
    if (crypto_pwhash_str(ctx->dummy_hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        sodium_memzero(pw, sizeof(pw));
        nf_log_error("hasher_failed", "cannot compute the dummy password hash");
        return -1;
    }
    sodium_memzero(pw, sizeof(pw));
    return auth_hasher_new(&ctx->hasher, ctx->base, ctx->cfg->hash_threads, HASH_QUEUE,
                           crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

static int server_new(struct auth_ctx *ctx)
{
    struct nf_http_limits limits = {(size_t)64 * 1024, 0, 0};
    char *host = NULL;
    int port, rc;

    if (nf_cfg_split_addr(ctx->cfg->addr, &host, &port) != 0)
        return -1;
    rc = nf_http_server_new(&ctx->srv, ctx->base, host, port, &limits, false, ctx->metrics);
    free(host);
    if (rc != 0) {
        nf_log_kv(NF_LOG_ERROR, "listen_failed", "cannot listen", "addr", ctx->cfg->addr, NULL);
        return -1;
    }
    nf_http_set_ready(ctx->srv, ready, ctx);
    if (auth_internal_register(ctx) != 0 || auth_account_register(ctx) != 0 ||
        auth_keys_register(ctx) != 0) {
        nf_log_error("routes_failed", "cannot register routes");
        return -1;
    }
    return 0;
}

static void drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct auth_ctx *ctx = arg;
    size_t inflight = nf_http_inflight(ctx->srv);
    char n[24];

    if (inflight > 0 && nf_now_ms() < ctx->drain_deadline_ms)
        return;
    snprintf(n, sizeof(n), "%zu", inflight);
    nf_log_kv(NF_LOG_INFO, "drained", "stopping", "inflight", n, NULL);
    event_del(ctx->drain);
    nf_app_stop_done(ctx->app);
}

void auth_stop(void *arg)
{
    struct auth_ctx *ctx = arg;
    struct timeval tick = {0, (suseconds_t)DRAIN_TICK_MS * 1000};

    if (!ctx || ctx->stopping)
        return;
    ctx->stopping = true;
    ctx->drain_deadline_ms = nf_now_ms() + (uint64_t)ctx->cfg->drain_ms;
    nf_http_server_stop(ctx->srv);
    nf_log_info("draining", "listener closed, finishing in-flight requests");
    event_add(ctx->drain, &tick);
}

int auth_new(struct auth_ctx **out, const struct auth_config *cfg, struct nf_app *app)
{
    struct auth_ctx *ctx;

    if (migrate(cfg) != 0)
        return -1;
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        abort();
    ctx->cfg = cfg;
    ctx->app = app;
    ctx->base = app->base;
    if (nf_metrics_new(&ctx->metrics) != 0)
        goto fail;
    metrics_register(ctx);
    ctx->drain = event_new(ctx->base, -1, EV_PERSIST, drain_tick, ctx);
    if (!ctx->drain)
        goto fail;
    if (backends_new(ctx) != 0 || hasher_new(ctx) != 0)
        goto fail;
    producer_new(ctx);
    if (server_new(ctx) != 0 || auth_usage_start(ctx) != 0)
        goto fail;
    *out = ctx;
    return 0;

fail:
    auth_free(ctx);
    return -1;
}

/* Pending callbacks fire while the backends are freed; they answer 503 and start no new
 * backend work because `closing` is set. */
void auth_free(struct auth_ctx *ctx)
{
    if (!ctx)
        return;
    ctx->closing = true;
    if (ctx->drain)
        event_free(ctx->drain);
    if (ctx->usage)
        event_free(ctx->usage);
    /* logins waiting for a hash answer 503 now, held-back failures their 401; each reply
     * frees its request */
    auth_hasher_free(ctx->hasher);
    auth_account_flush(ctx);
    ctx->hasher = NULL;
    nf_kafka_producer_free(ctx->producer, FLUSH_MS);
    ctx->producer = NULL;
    nf_pg_free(ctx->pg);
    ctx->pg = NULL;
    nf_redis_free(ctx->redis);
    ctx->redis = NULL;
    if (ctx->srv)
        nf_http_server_free(ctx->srv);
    if (ctx->metrics)
        nf_metrics_free(ctx->metrics);
    free(ctx);
}
