/*
 * The deployments this agent serves: a deploy job succeeds once its endpoint answers, and
 * the endpoint then serves from the kept job directory (jobdir.c) after the job is
 * terminal. Its GPU time is metered here, in windows of NF_WORKER_DEPLOY_METER_S, from the
 * deploy handler's exit (where the attempt's own last gpu_ms window ends) until the
 * endpoint stops:
 *
 *   deploy attempt succeeded (job_report.c) --> wk_serving_start {job, user, deployment id,
 *       gpu_count, start = handler exit}
 *   every second --> endpoint alive (out/endpoint.pid)?
 *       yes: each window that has ended --> forge.usage gpu_ms (window x gpu_count)
 *       no (DELETE /api/deployments/{id} stopped it, it crashed) --> the final partial
 *            window up to now --> forgotten
 *   agent closing (its endpoints stop with it) --> the final partial windows
 *
 * Each event: job_type deploy, data.deployment_id, data.worker_id (this worker: billing
 * checks it leased the job), data.attempt null (the attempt's cost is final; serving is
 * billed on the job like the gateway's per-request tokens), id derived from (job, meter,
 * window) (wk_serving_usage_id), so a redelivery (a retry, the outbox's replay) is billed
 * once. A job with gpu_count 0 meters nothing, as its attempt would (no cpu meter).
 * An agent killed with SIGKILL loses the open window (its endpoints die with it).
 * Without Kafka (the API fallback checks a lease, gone once the job ended) nothing is
 * metered here; that is logged once per deployment.
 *
 * Calls publish.c and usage.c below it; job_report.c above it starts a deployment.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "wk.h"

#define CHECK_MS 1000 /* how often endpoints and windows are looked at */

struct wk_serving {
    struct wk_serving *next;
    char job_id[NF_ID_MAX];
    char *user_id;
    char dep_id[32];
    char dir[PATH_MAX];  /* the kept job directory: out/endpoint.pid */
    int gpu_count;       /* the deploy job's */
    uint64_t start_ms;   /* window 0 starts here: the deploy handler's exit */
    long long window;    /* the open window's index */
    long long published; /* events sent (for the log at the end) */
};

/* One window [start, end) of s: gpu_ms = its length x gpu_count. */
static void emit(struct wk_ctx *ctx, struct wk_serving *s, uint64_t start, uint64_t end)
{
    if (end <= start || s->gpu_count <= 0)
        return;
    struct nf_usage u = {.user_id = s->user_id,
                         .job_id = s->job_id,
                         .job_type = "deploy",
                         .worker_id = ctx->worker_id,
                         .meter = "gpu_ms",
                         .quantity = (long long)wk_gpu_ms(end - start, s->gpu_count),
                         .window = s->window,
                         .start_ms = start,
                         .end_ms = end};
    char *payload = wk_serving_event(&u, s->dep_id, ctx->source);
    wk_publish(ctx, NULL, NF_TOPIC_USAGE, s->user_id, payload);
    free(payload);
    s->published++;
}

/* The windows of s that ended by now; with stopped, also the open one up to now. */
static void meter(struct wk_ctx *ctx, struct wk_serving *s, uint64_t now, bool stopped)
{
    uint64_t w = (uint64_t)ctx->cfg->deploy_meter_s * 1000;
    for (;;) {
        uint64_t start = s->start_ms + (uint64_t)s->window * w;
        if (now >= start + w) {
            emit(ctx, s, start, start + w);
            s->window++;
            continue;
        }
        if (stopped)
            emit(ctx, s, start, now);
        return;
    }
}

static void serving_free(struct wk_serving *s)
{
    free(s->user_id);
    free(s);
}

static void forget(struct wk_ctx *ctx, struct wk_serving *s, const char *why)
{
    char n[24];
    snprintf(n, sizeof(n), "%lld", s->published);
    nf_log_kv(NF_LOG_INFO, "deployment_meter_stopped", why, "job_id", s->job_id, "deployment_id",
              s->dep_id, "usage_events", n, NULL);
    serving_free(s);
}

static void on_check(evutil_socket_t fd, short what, void *arg)
{
    struct wk_ctx *ctx = arg;
    uint64_t now = nf_now_ms();
    struct wk_serving **link = &ctx->serving;

    while (*link != NULL) {
        struct wk_serving *s = *link;
        bool alive = wk_endpoint_alive(s->dir);
        meter(ctx, s, now, !alive);
        if (alive) {
            link = &s->next;
            continue;
        }
        *link = s->next;
        forget(ctx, s, "the endpoint stopped: its last window metered");
    }
    if (ctx->serving == NULL)
        wk_event_free(&ctx->serving_ev);
}

void wk_serving_start(struct wk_ctx *ctx, const char *job_id, const char *user_id,
                      const char *dep_id, int gpu_count, uint64_t start_ms, const char *dir)
{
    if (gpu_count <= 0)
        return; /* as its attempt: no GPU, nothing metered */
    if (ctx->producer == NULL) {
        nf_log_kv(NF_LOG_WARN, "deployment_meter_off",
                  "no Kafka: the deployment's GPU time is not metered", "job_id", job_id, NULL);
        return;
    }
    struct wk_serving *s = nf_xcalloc(1, sizeof(*s));
    snprintf(s->job_id, sizeof(s->job_id), "%s", job_id);
    snprintf(s->dep_id, sizeof(s->dep_id), "%s", dep_id);
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    s->user_id = nf_xstrdup(user_id);
    s->gpu_count = gpu_count;
    s->start_ms = start_ms;
    s->next = ctx->serving;
    ctx->serving = s;
    if (ctx->serving_ev == NULL) {
        struct timeval tv = {CHECK_MS / 1000, (suseconds_t)(CHECK_MS % 1000) * 1000};
        ctx->serving_ev = event_new(ctx->base, -1, EV_PERSIST, on_check, ctx);
        if (ctx->serving_ev == NULL || event_add(ctx->serving_ev, &tv) < 0)
            abort();
    }
    char w[16];
    snprintf(w, sizeof(w), "%d", ctx->cfg->deploy_meter_s);
    nf_log_kv(NF_LOG_INFO, "deployment_meter_started", "metering the deployment's GPU time",
              "job_id", job_id, "deployment_id", dep_id, "window_s", w, NULL);
}

void wk_serving_close(struct wk_ctx *ctx)
{
    uint64_t now = nf_now_ms();
    wk_event_free(&ctx->serving_ev);
    while (ctx->serving != NULL) {
        struct wk_serving *s = ctx->serving;
        ctx->serving = s->next;
        meter(ctx, s, now, true);
        forget(ctx, s, "the agent stops, and its endpoints with it: the last window metered");
    }
}
