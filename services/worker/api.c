/*
 * The agent's side of the worker protocol (internals.md "Worker agent protocol"), spoken
 * to the API (the gateway forwards the /api/workers routes to the worker-manager).
 *
 *   register --201--> heartbeat timer + poll
 *      |  connection error / 5xx / 429: retry, 0.5 s doubling to 10 s
 *      +  400/401/403/422: the operator must fix the configuration -> exit 1
 *   poll (next_job, wait_seconds) --200--> wk_job_start, poll again while slots are free
 *                                 --204--> poll again
 *                                 --403--> register again
 *                                 --else-> retry with backoff
 *   heartbeat every heartbeat_interval_s: leases + progress (+ draining once stopping);
 *   answer: `cancelled` -> wk_job_cancel, `lost` -> wk_job_lost, `drain` -> wk_drain
 *   farewell at shutdown: one last heartbeat without jobs, so the manager releases the
 *   leases of jobs already reported instead of reaping them as lost later, and records
 *   the worker as drained
 *   resume: with NF_WORKER_ID/NF_WORKER_TOKEN the agent skips registration and starts
 *   heartbeating and polling as that worker; a 403 makes it register anew
 *
 *   stop (SIGTERM) / drain (operator): no more polls; once no job is left, the farewell;
 *   the farewell done, ctx->stopped: nf_svc's drain sees nothing busy and ends the loop
 *
 * Polls use their own HTTP client so a shutdown can drop a waiting poll at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_svc.h"
#include "wk.h"

#define REGISTER_TIMEOUT_MS 10000
#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 10000
#define FAREWELL_TIMEOUT_MS 3000

static void schedule_retry(struct wk_ctx *ctx)
{
    struct timeval tv = {ctx->backoff_ms / 1000, (suseconds_t)(ctx->backoff_ms % 1000) * 1000};
    evtimer_add(ctx->retry, &tv);
    ctx->backoff_ms = ctx->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ctx->backoff_ms * 2;
}

/* ---- register ----------------------------------------------------------------------------- */

static void on_registered(const struct nf_http_resp *resp, void *arg)
{
    struct wk_ctx *ctx = arg;
    ctx->registering = false;
    if (ctx->closing)
        return;
    if (resp->status == 201) {
        cJSON *body = nf_json_parse(resp->body, resp->len);
        const char *id = nf_json_str(body, "worker_id");
        const char *token = nf_json_str(body, "worker_token");
        long long hb = nf_json_int(body, "heartbeat_interval_s", 2);
        if (id == NULL || token == NULL || !nf_id_valid("wrk", id)) {
            nf_log_kv(NF_LOG_ERROR, "register_bad_answer", "registration answer malformed", NULL);
            cJSON_Delete(body);
            schedule_retry(ctx);
            return;
        }
        snprintf(ctx->worker_id, sizeof(ctx->worker_id), "%s", id);
        snprintf(ctx->source, sizeof(ctx->source), "nf-worker/%s", id);
        free(ctx->worker_token);
        ctx->worker_token = nf_xstrdup(token);
        ctx->heartbeat_s = hb >= 1 && hb <= 300 ? (int)hb : 2; /* the manager's default */
        ctx->registered = true;
        ctx->backoff_ms = BACKOFF_FIRST_MS;
        cJSON_Delete(body); /* id and token point into it: use ctx's copies below */
        nf_log_kv(NF_LOG_INFO, "registered", "registered with the API", "worker_id", ctx->worker_id,
                  NULL);
        wk_api_heartbeat_start(ctx);
        wk_slot_freed(ctx);
        return;
    }
    if (resp->status == 0 || resp->status >= 500 || resp->status == 429 || resp->status == 404) {
        char code[8];
        snprintf(code, sizeof(code), "%d", resp->status);
        nf_log_kv(NF_LOG_WARN, "register_retry", "API not available, retrying", "status", code,
                  "error", resp->error, NULL);
        schedule_retry(ctx);
        return;
    }
    char code[8];
    snprintf(code, sizeof(code), "%d", resp->status);
    nf_log_kv(NF_LOG_ERROR, "register_refused",
              "registration refused; check NF_WORKER_REGISTRATION_TOKEN and the settings", "status",
              code, "body", resp->body, NULL);
    ctx->svc->exit_code = 1;
    nf_svc_stop(ctx->svc);
}

/* Runs as the pre-registered NF_WORKER_ID (heartbeat + poll); a 403 registers anew. */
static void resume(struct wk_ctx *ctx)
{
    snprintf(ctx->worker_id, sizeof(ctx->worker_id), "%s", ctx->cfg->worker_id);
    snprintf(ctx->source, sizeof(ctx->source), "nf-worker/%s", ctx->worker_id);
    free(ctx->worker_token);
    ctx->worker_token = nf_xstrdup(ctx->cfg->worker_token);
    ctx->heartbeat_s = 1; /* until the first heartbeat answer tells the interval */
    ctx->registered = true;
    nf_log_kv(NF_LOG_INFO, "resumed", "running as a pre-registered worker", "worker_id",
              ctx->worker_id, NULL);
    wk_api_heartbeat_start(ctx);
    wk_slot_freed(ctx);
}

void wk_api_register(struct wk_ctx *ctx)
{
    if (ctx->registering || ctx->closing || ctx->stopping)
        return;
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "hostname", ctx->set.hostname);
    nf_json_add_str(body, "gpu_type", ctx->gpu_type[0] ? ctx->gpu_type : NULL);
    nf_json_add_int(body, "gpu_count", ctx->gpu_count);
    cJSON *types = cJSON_AddArrayToObject(body, "job_types");
    for (int i = 0; i < NF_NJOB_TYPES; i++)
        if (ctx->set.types & (1u << i))
            cJSON_AddItemToArray(types, cJSON_CreateString(nf_job_types[i]));
    cJSON *labels = cJSON_Duplicate(ctx->set.labels, true);
    if (ctx->gpu_memory_mib > 0 && !cJSON_GetObjectItemCaseSensitive(labels, "gpu_memory_gb")) {
        char gb[24]; /* detected: what each GPU holds, for jobs that need a size */
        snprintf(gb, sizeof(gb), "%lld", (ctx->gpu_memory_mib + 512) / 1024);
        nf_json_add_str(labels, "gpu_memory_gb", gb);
    }
    cJSON_AddItemToObject(body, "labels", labels);
    nf_json_add_str(body, "version", WK_VERSION);
    ctx->registering = true;
    if (wk_post(ctx, ctx->http, "register", ctx->cfg->reg_token, body, REGISTER_TIMEOUT_MS,
                on_registered, ctx) < 0) {
        ctx->registering = false;
        schedule_retry(ctx);
    }
}

/* ---- next_job ----------------------------------------------------------------------------- */

static void on_polled(const struct nf_http_resp *resp, void *arg)
{
    struct wk_ctx *ctx = arg;
    ctx->polling = false;
    if (ctx->closing || ctx->poll_http == NULL)
        return; /* dropped at shutdown */
    if (resp->status == 200) {
        cJSON *body = nf_json_parse(resp->body, resp->len);
        const cJSON *job = cJSON_GetObjectItemCaseSensitive(body, "job");
        const char *lease_id = nf_json_str(body, "lease_id");
        ctx->backoff_ms = BACKOFF_FIRST_MS;
        if (cJSON_IsObject(job) && lease_id != NULL)
            wk_job_start(ctx, job, lease_id);
        else
            nf_log_kv(NF_LOG_ERROR, "poll_bad_answer", "next_job answer malformed", NULL);
        cJSON_Delete(body);
        wk_slot_freed(ctx);
        return;
    }
    if (resp->status == 204) {
        ctx->backoff_ms = BACKOFF_FIRST_MS;
        wk_slot_freed(ctx);
        return;
    }
    char code[8];
    snprintf(code, sizeof(code), "%d", resp->status);
    if (resp->status == 403) {
        nf_log_kv(NF_LOG_WARN, "poll_forbidden", "worker token refused, registering again",
                  "worker_id", ctx->worker_id, NULL);
        ctx->registered = false;
        wk_api_register(ctx);
        return;
    }
    nf_log_kv(NF_LOG_WARN, "poll_retry", "next_job failed, retrying", "status", code, "error",
              resp->error, NULL);
    schedule_retry(ctx);
}

void wk_api_poll(struct wk_ctx *ctx)
{
    if (!ctx->registered || ctx->polling || ctx->stopping || ctx->closing ||
        ctx->poll_http == NULL || ctx->njobs >= ctx->cfg->slots ||
        evtimer_pending(ctx->retry, NULL))
        return;
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "worker_id", ctx->worker_id);
    nf_json_add_int(body, "wait_seconds", ctx->cfg->poll_wait_s);
    ctx->polling = true;
    if (wk_post(ctx, ctx->poll_http, "next_job", ctx->worker_token, body,
                (ctx->cfg->poll_wait_s + 15) * 1000, on_polled, ctx) < 0) {
        ctx->polling = false;
        schedule_retry(ctx);
    }
}

/* ---- heartbeat ---------------------------------------------------------------------------- */

static void on_heartbeat_done(const struct nf_http_resp *resp, void *arg)
{
    struct wk_ctx *ctx = arg;
    ctx->heartbeating = false;
    if (ctx->closing)
        return;
    if (ctx->heartbeat_again) {
        ctx->heartbeat_again = false;
        event_active(ctx->heartbeat_kick, EV_TIMEOUT, 0);
    }
    /* 409: some listed leases are lost (in the body); the others were renewed */
    if (resp->status != 200 && resp->status != 409) {
        wk_jobs_heartbeat_done(ctx, false);
        char code[8];
        snprintf(code, sizeof(code), "%d", resp->status);
        nf_log_kv(NF_LOG_WARN, "heartbeat_failed", "heartbeat not accepted", "status", code,
                  "error", resp->error, NULL);
        if (resp->status == 403 && !ctx->stopping) {
            ctx->registered = false;
            wk_api_register(ctx);
        }
        return;
    }
    cJSON *body = nf_json_parse(resp->body, resp->len);
    const cJSON *cancelled = cJSON_GetObjectItemCaseSensitive(body, "cancelled");
    const cJSON *lost = cJSON_GetObjectItemCaseSensitive(body, "lost");
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, cancelled)
    {
        if (cJSON_IsString(it)) {
            nf_log_kv(NF_LOG_INFO, "job_cancel_received", "job cancelled: stopping it", "job_id",
                      it->valuestring, NULL);
            wk_job_cancel(ctx, it->valuestring);
        }
    }
    const cJSON *lost_leases = cJSON_GetObjectItemCaseSensitive(body, "lost_leases");
    int i = 0;
    cJSON_ArrayForEach(it, lost)
    {
        const cJSON *lease = cJSON_GetArrayItem(lost_leases, i++);
        if (cJSON_IsString(it))
            wk_job_lost(ctx, it->valuestring, cJSON_IsString(lease) ? lease->valuestring : NULL);
    }
    bool drain = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "drain"));
    long long hb = nf_json_int(body, "heartbeat_interval_s", ctx->heartbeat_s);
    cJSON_Delete(body);
    if (hb >= 1 && hb <= 300 && hb != ctx->heartbeat_s) {
        ctx->heartbeat_s = (int)hb; /* the manager's setting (a resumed agent starts at 1 s) */
        wk_api_heartbeat_start(ctx);
    }
    wk_jobs_heartbeat_done(ctx, true);
    if (drain)
        wk_drain(ctx);
}

/* Sends a heartbeat listing the current jobs; cb gets the answer. -1 if not sent. */
static int send_heartbeat(struct wk_ctx *ctx, nf_http_client_cb cb, int timeout_ms)
{
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "worker_id", ctx->worker_id);
    cJSON_AddItemToObject(body, "jobs", wk_jobs_heartbeat(ctx));
    if (ctx->stopping || ctx->draining)
        cJSON_AddTrueToObject(body, "draining");
    return wk_post(ctx, ctx->http, "heartbeat", ctx->worker_token, body, timeout_ms, cb, ctx);
}

/* A tick that finds the previous heartbeat still waiting (a slow manager: it times out
 * after one interval) does not skip its beat: it is sent as soon as that one ends, so one
 * slow answer never turns into two missed beats and a lease lost with a live worker. */
static void on_heartbeat_tick(evutil_socket_t fd, short what, void *arg)
{
    struct wk_ctx *ctx = arg;
    if (!ctx->registered || ctx->closing)
        return;
    if (ctx->heartbeating) {
        ctx->heartbeat_again = true;
        return;
    }
    ctx->heartbeating = true;
    int timeout_ms = ctx->heartbeat_s * 1000 < 2000 ? 2000 : ctx->heartbeat_s * 1000;
    if (send_heartbeat(ctx, on_heartbeat_done, timeout_ms) < 0)
        ctx->heartbeating = false;
}

static void on_farewell_done(const struct nf_http_resp *resp, void *arg)
{
    struct wk_ctx *ctx = arg;
    if (ctx->closing)
        return;
    wk_jobs_heartbeat_done(ctx, resp->status == 200 || resp->status == 409);
    if (resp->status != 200 && resp->status != 409)
        nf_log_kv(NF_LOG_WARN, "farewell_failed",
                  "last heartbeat not accepted; leases will expire instead", "error", resp->error,
                  NULL);
    ctx->stopped = true; /* nothing busy: nf_svc's drain ends the loop */
}

/* Shutdown: a last heartbeat listing no jobs (releases their leases), then ctx->stopped;
 * at once when not registered. */
static void farewell(struct wk_ctx *ctx)
{
    if (!ctx->registered || ctx->closing ||
        send_heartbeat(ctx, on_farewell_done, FAREWELL_TIMEOUT_MS) < 0)
        ctx->stopped = true;
}

void wk_api_heartbeat_now(struct wk_ctx *ctx)
{
    if (!ctx->registered || ctx->closing || ctx->heartbeat_kick == NULL)
        return;
    if (ctx->heartbeating)
        ctx->heartbeat_again = true;
    else
        event_active(ctx->heartbeat_kick, EV_TIMEOUT, 0);
}

void wk_api_heartbeat_start(struct wk_ctx *ctx)
{
    if (ctx->heartbeat == NULL) {
        ctx->heartbeat = event_new(ctx->base, -1, EV_PERSIST, on_heartbeat_tick, ctx);
        ctx->heartbeat_kick = evtimer_new(ctx->base, on_heartbeat_tick, ctx);
        if (ctx->heartbeat == NULL || ctx->heartbeat_kick == NULL)
            abort();
    }
    struct timeval tv = {ctx->heartbeat_s, 0};
    event_add(ctx->heartbeat, &tv);
}

/* ---- start, stop and drain ------------------------------------------------------------------ */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct wk_ctx *ctx = arg;
    if (!ctx->registered)
        wk_api_register(ctx);
    else
        wk_api_poll(ctx);
}

static void on_finish(evutil_socket_t fd, short what, void *arg)
{
    struct wk_ctx *ctx = arg;
    if (ctx->heartbeat)
        event_del(ctx->heartbeat);
    if (ctx->heartbeat_kick)
        event_del(ctx->heartbeat_kick);
    nf_log_kv(NF_LOG_INFO, "jobs_reported", "all jobs reported, stopping", NULL);
    farewell(ctx); /* then ctx->stopped */
}

int wk_api_start(struct wk_ctx *ctx)
{
    ctx->heartbeat_now = wk_api_heartbeat_now;
    ctx->slot_freed = wk_slot_freed;
    ctx->retry = evtimer_new(ctx->base, on_retry, ctx);
    ctx->finish = evtimer_new(ctx->base, on_finish, ctx);
    if (!ctx->retry || !ctx->finish)
        return -1;
    if (ctx->cfg->worker_id[0] != '\0')
        resume(ctx); /* the pre-registered identity; registers if it is refused */
    else
        wk_api_register(ctx);
    return 0;
}

void wk_slot_freed(struct wk_ctx *ctx)
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
            nf_svc_stop(ctx->svc); /* wk_stop: nothing left, straight to the farewell */
        return;
    }
    wk_api_poll(ctx);
}

/* Drops the waiting long poll, if any (its callback fires with status 0 and is ignored). */
static void drop_poll(struct wk_ctx *ctx)
{
    struct nf_http_client *poll = ctx->poll_http;
    ctx->poll_http = NULL;
    nf_http_client_free(poll);
}

void wk_api_stop(struct wk_ctx *ctx)
{
    evtimer_del(ctx->retry);
    drop_poll(ctx);
    wk_api_heartbeat_now(ctx); /* draining: true, so the manager stops leasing to us */
    wk_slot_freed(ctx);        /* no job left: the farewell at once */
}

void wk_drain(struct wk_ctx *ctx)
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
