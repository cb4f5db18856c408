/*
 * The agent context: start-up, SIGTERM drain, operator drain and teardown.
 *
 *   start:   artifact root -> Kafka producer (none when NF_KAFKA_BROKERS is empty: HTTP
 *            fallback) -> HTTP clients -> SIGCHLD -> register (or the pre-registered
 *            NF_WORKER_ID / NF_WORKER_TOKEN)
 *   SIGTERM: stop polling (the waiting poll is dropped), heartbeat now with draining:
 *            true (the manager gives this worker nothing more) -> running jobs may
 *            finish for NF_WORKER_DRAIN_TIMEOUT_S -> then they are terminated and reported
 *            failed (infra) -> every message delivered -> the last heartbeat lists no job:
 *            the manager releases the leases and emits forge.worker.drained ->
 *            nf_app_stop_done -> wk_free flushes Kafka -> exit 0
 *   drain:   a heartbeat answer says drain (POST /api/workers/drain by the operator):
 *            stop polling, let every job finish (no deadline), then stop as above
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_http.h"
#include "nf_log.h"
#include "wk.h"

#define HTTP_TIMEOUT_MS 30000
#define PRODUCER_FLUSH_MS 10000

/* mkdir -p for the artifact root. */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -1;
        buf[i] = saved;
    }
    return 0;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct wk *ctx = arg;
    if (!ctx->registered)
        wk_api_register(ctx);
    else
        wk_api_poll(ctx);
}

static void on_finish(evutil_socket_t fd, short what, void *arg)
{
    struct wk *ctx = arg;
    if (ctx->heartbeat)
        event_del(ctx->heartbeat);
    if (ctx->heartbeat_kick)
        event_del(ctx->heartbeat_kick);
    nf_log_kv(NF_LOG_INFO, "drained", "all jobs reported, stopping", NULL);
    wk_api_farewell(ctx); /* then nf_app_stop_done */
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct wk *ctx = arg;
    nf_log_kv(NF_LOG_WARN, "drain_timeout", "drain timeout: terminating running jobs", NULL);
    wk_jobs_terminate(ctx);
}

void wk_slot_freed(struct wk *ctx)
{
    if (ctx->closing)
        return;
    if (ctx->stopping) {
        if (ctx->njobs == 0)
            event_active(ctx->finish, EV_TIMEOUT, 0);
        return;
    }
    if (ctx->draining) {
        if (ctx->njobs == 0)
            nf_app_stop(ctx->app); /* wk_on_stop: nothing left, straight to the farewell */
        return;
    }
    wk_api_poll(ctx);
}

/* Drops the waiting long poll, if any (its callback fires with status 0 and is ignored). */
static void drop_poll(struct wk *ctx)
{
    struct nf_http_client *poll = ctx->poll_http;
    ctx->poll_http = NULL;
    nf_http_client_free(poll);
}

void wk_drain(struct wk *ctx)
{
    if (ctx->draining || ctx->stopping || ctx->closing)
        return;
    ctx->draining = true;
    char n[16];
    snprintf(n, sizeof(n), "%d", ctx->njobs);
    nf_log_kv(NF_LOG_INFO, "draining", "drain requested: no new jobs, exiting when idle", "jobs", n,
              NULL);
    evtimer_del(ctx->retry);
    drop_poll(ctx);
    wk_slot_freed(ctx);
}

int wk_new(struct wk **out, struct nf_app *app, struct wk_config *cfg, struct wk_settings *set)
{
    char err[512];
    struct sigaction ign;
    struct wk *ctx = nf_xcalloc(1, sizeof(*ctx));
    ctx->cfg = *cfg;
    ctx->set = *set;
    memset(cfg, 0, sizeof(*cfg)); /* owned by ctx now */
    memset(set, 0, sizeof(*set));
    ctx->app = app;
    ctx->base = app->base;
    ctx->backoff_ms = 500;
    ctx->heartbeat_s = 5;
    snprintf(ctx->source, sizeof(ctx->source), "nf-worker");

    /* A handler closing its stdin early must not kill the agent. */
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, NULL);

    if (make_dirs(ctx->cfg.artifact_root) < 0) {
        nf_log_kv(NF_LOG_ERROR, "artifact_root_failed", strerror(errno), "path",
                  ctx->cfg.artifact_root, NULL);
        goto fail;
    }
    if (access(ctx->cfg.handlers, R_OK | X_OK) < 0)
        nf_log_kv(NF_LOG_WARN, "handlers_missing", "handler directory not readable", "path",
                  ctx->cfg.handlers, NULL);
    if (ctx->cfg.brokers[0] == '\0') {
        nf_log_kv(NF_LOG_INFO, "kafka_none",
                  "no Kafka brokers: job events and usage go through the API", NULL);
    } else if (nf_kafka_producer_new(&ctx->producer, ctx->base, ctx->cfg.brokers, "nf-worker", NULL,
                                     err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "kafka_failed", "cannot create the Kafka producer", "error", err,
                  NULL);
        goto fail;
    }
    if (nf_http_client_new(&ctx->http, ctx->base, ctx->set.api_host, ctx->set.api_port,
                           HTTP_TIMEOUT_MS, 2) < 0 ||
        nf_http_client_new(&ctx->poll_http, ctx->base, ctx->set.api_host, ctx->set.api_port,
                           HTTP_TIMEOUT_MS, 1) < 0 ||
        nf_http_client_new(&ctx->report_http, ctx->base, ctx->set.api_host, ctx->set.api_port,
                           HTTP_TIMEOUT_MS, 1) < 0) {
        nf_log_kv(NF_LOG_ERROR, "http_client_failed", "cannot create the HTTP client", NULL);
        goto fail;
    }
    ctx->retry = evtimer_new(ctx->base, on_retry, ctx);
    ctx->finish = evtimer_new(ctx->base, on_finish, ctx);
    ctx->drain = evtimer_new(ctx->base, on_drain_deadline, ctx);
    ctx->sigchld = evsignal_new(ctx->base, SIGCHLD, wk_on_sigchld, ctx);
    if (!ctx->retry || !ctx->finish || !ctx->drain || !ctx->sigchld ||
        event_add(ctx->sigchld, NULL) < 0)
        goto fail;
    if (ctx->cfg.worker_id[0] != '\0')
        wk_api_resume(ctx); /* the pre-registered identity; registers if it is refused */
    else
        wk_api_register(ctx);
    *out = ctx;
    return 0;
fail:
    wk_free(ctx);
    return -1;
}

void wk_on_stop(void *arg)
{
    struct wk *ctx = arg;
    if (ctx == NULL || ctx->stopping)
        return;
    ctx->stopping = true;
    char n[16];
    snprintf(n, sizeof(n), "%d", ctx->njobs);
    nf_log_kv(NF_LOG_INFO, "stopping", "stopping: no new jobs, draining", "jobs", n, NULL);
    evtimer_del(ctx->retry);
    drop_poll(ctx);
    wk_api_heartbeat_now(ctx); /* draining: true, so the manager stops leasing to us */
    if (ctx->njobs == 0) {
        event_active(ctx->finish, EV_TIMEOUT, 0);
        return;
    }
    struct timeval tv = {ctx->cfg.drain_timeout_s, 0};
    evtimer_add(ctx->drain, &tv);
}

void wk_free(struct wk *ctx)
{
    if (ctx == NULL)
        return;
    ctx->closing = true;
    ctx->stopping = true;
    if (ctx->retry)
        event_free(ctx->retry);
    if (ctx->heartbeat)
        event_free(ctx->heartbeat);
    if (ctx->heartbeat_kick)
        event_free(ctx->heartbeat_kick);
    if (ctx->finish)
        event_free(ctx->finish);
    if (ctx->drain)
        event_free(ctx->drain);
    if (ctx->sigchld)
        event_free(ctx->sigchld);
    nf_http_client_free(ctx->poll_http);
    nf_http_client_free(ctx->report_http);
    nf_http_client_free(ctx->http);
    /* Delivery reports fire here; failures are given up (publish_lost in the log). */
    nf_kafka_producer_free(ctx->producer, PRODUCER_FLUSH_MS);
    ctx->producer = NULL;
    wk_publish_free(ctx);
    wk_jobs_free(ctx);
    free(ctx->worker_token);
    wk_config_free(&ctx->cfg, &ctx->set);
    free(ctx);
}
