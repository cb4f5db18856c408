/*
 * The lease reaper: jobs whose lease deadline passed without a heartbeat (worker lost)
 * are reported as forge.job.failed with error class worker_lost; the scheduler decides
 * the retry (a new dispatch with attempt+1) or the dead letter.
 *
 *   timer --> EVALSHA reap_claim: expired leases marked "reaping", deadline pushed one
 *             lease TTL ahead (a claim, so copies of the manager do not double-report)
 *         --> produce forge.job.failed --delivered--> EVALSHA reap_done (lease removed)
 *                                       --failed-----> nothing: the claim expires and the
 *                                                      next round reports again
 * Reporting twice is harmless: the scheduler ignores stale transitions.
 * Each tick also runs the lost-worker scan (fleet.c).
 *
 * Leases also run out while no manager answers heartbeats. After this process starts, and
 * after a tick that comes more than a heartbeat late (the loop stood still), both wait
 * one lease TTL (wm_reap_hold), so a restart or a pause of the manager does not requeue
 * the jobs of live workers; a worker that died meanwhile is reaped when the hold ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_redis.h"
#include "nf_svc.h"
#include "routes.h"
#include "wm.h"

#define REAP_BATCH 100

struct reap_item {
    struct wm_ctx *ctx;
    char job_id[NF_ID_MAX];
    char lease_id[NF_ID_MAX];
};

static void on_done(redisReply *reply, void *arg)
{
    struct reap_item *it = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        nf_log_kv(NF_LOG_WARN, "reap_done_failed", "reaped lease not removed; retried later",
                  "job_id", it->job_id, NULL);
    free(it);
}

static void on_delivered(int err, const char *errstr, void *arg)
{
    struct reap_item *it = arg;
    struct wm_ctx *ctx = it->ctx;
    if (err != 0 || ctx->svc->closing) {
        if (err != 0)
            nf_log_kv(NF_LOG_WARN, "reap_event_failed", "worker_lost event not delivered", "job_id",
                      it->job_id, "error", errstr, NULL);
        free(it);
        return;
    }
    char done_ttl[16];
    snprintf(done_ttl, sizeof(done_ttl), "%d", WM_DONE_TTL_S);
    const char *argv[] = {"wm:leases", it->job_id, it->lease_id, done_ttl};
    nf_redis_eval(ctx->redis, ctx->lua_reap_done, on_done, it, 1, 4, argv, NULL);
}

/* One claimed lease (wm_scan_fn); the lease and job texts are "" when their keys are gone. */
static void report(struct wm_ctx *ctx, const char *job_id, const char *lease_json,
                   const redisReply *job_reply)
{
    const char *job_json = job_reply->str;
    cJSON *lease = lease_json[0] ? nf_json_parse(lease_json, strlen(lease_json)) : NULL;
    cJSON *job = job_json[0] ? nf_json_parse(job_json, strlen(job_json)) : NULL;
    const char *worker_id = lease ? nf_json_str(lease, "worker_id") : NULL;
    long long attempt = nf_json_int(lease, "attempt", nf_json_int(job, "attempt", 1));

    struct reap_item *it = nf_xcalloc(1, sizeof(*it));
    it->ctx = ctx;
    snprintf(it->job_id, sizeof(it->job_id), "%s", job_id);
    snprintf(it->lease_id, sizeof(it->lease_id), "%s",
             lease ? (nf_json_str(lease, "lease_id") ?: "") : "");

    cJSON *data = nf_json_obj();
    nf_json_add_str(data, "job_id", job_id);
    nf_json_add_str(data, "user_id", job ? nf_json_str(job, "user_id") : NULL);
    nf_json_add_int(data, "attempt", attempt);
    nf_json_add_str(data, "status", "failed");
    if (worker_id != NULL) /* the lease record may be gone; the field is then left out */
        nf_json_add_str(data, "worker_id", worker_id);
    cJSON *error = nf_json_obj();
    nf_json_add_str(error, "code", "worker_lost");
    nf_json_add_str(error, "message", "the worker stopped heartbeating; its lease expired");
    nf_json_add_str(error, "class", "worker_lost");
    cJSON_AddItemToObject(data, "error", error);

    nf_log_kv(NF_LOG_WARN, "lease_expired", "lease expired, job reported lost", "job_id", job_id,
              "worker_id", worker_id, NULL);
    nf_metrics_counter_add(ctx->m.leases_reaped, 1);
    if (wm_event_send(ctx, NF_TOPIC_JOBS_EVENTS, "forge.job.failed", job_id, data, on_delivered,
                      it) < 0)
        free(it); /* the claim expires; the next round reports again */
    cJSON_Delete(lease);
    cJSON_Delete(job);
}

static void on_claimed(redisReply *reply, void *arg)
{
    wm_scan_rows(arg, reply, REDIS_REPLY_STRING, report, "reap_failed", "reap script failed");
}

/* Updates the hold (wm_reap_hold) with this tick; true while it holds. */
static bool held(struct wm_ctx *ctx, uint64_t now)
{
    uint64_t hold = wm_reap_hold(now, ctx->reap_prev_ms, ctx->reap_hold_ms, ctx->cfg);
    if (hold != ctx->reap_hold_ms) {
        char ms[24], gap[24];
        snprintf(ms, sizeof(ms), "%llu", (unsigned long long)(hold - now));
        snprintf(gap, sizeof(gap), "%llu",
                 (unsigned long long)(ctx->reap_prev_ms ? now - ctx->reap_prev_ms : 0));
        if (ctx->reap_prev_ms == 0)
            nf_log_kv(NF_LOG_INFO, "reaper_hold", "reaping held: workers renew leases first",
                      "hold_ms", ms, NULL);
        else
            nf_log_kv(NF_LOG_WARN, "reaper_stalled",
                      "reaper ran late (the manager stood still): reaping held", "gap_ms", gap,
                      "hold_ms", ms, NULL);
        ctx->reap_hold_ms = hold;
    }
    ctx->reap_prev_ms = now;
    return now < ctx->reap_hold_ms;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct wm_ctx *ctx = arg;
    char now_s[24], limit[8], reclaim[16];
    uint64_t now = nf_now_ms();
    if (held(ctx, now) || ctx->svc->stopping || ctx->reaping > 0 ||
        !nf_kafka_producer_ready(ctx->producer))
        return;
    snprintf(now_s, sizeof(now_s), "%llu", (unsigned long long)now);
    snprintf(limit, sizeof(limit), "%d", REAP_BATCH);
    snprintf(reclaim, sizeof(reclaim), "%d", ctx->cfg->lease_ttl_s * 1000);
    const char *argv[] = {"wm:leases", now_s, limit, reclaim};
    ctx->reaping++;
    /* On -1 on_claimed already ran (NULL) and decremented. */
    nf_redis_eval(ctx->redis, ctx->lua_reap_claim, on_claimed, ctx, 1, 4, argv, NULL);
    wm_fleet_scan(ctx);
}

void wm_reaper_start(struct wm_ctx *ctx)
{
    struct timeval tv = {ctx->cfg->reap_interval_ms / 1000,
                         (suseconds_t)(ctx->cfg->reap_interval_ms % 1000) * 1000};
    ctx->reaper = event_new(ctx->base, -1, EV_PERSIST, on_tick, ctx);
    if (ctx->reaper == NULL)
        abort();
    event_add(ctx->reaper, &tv);
}

void wm_reaper_stop(struct wm_ctx *ctx)
{
    if (ctx->reaper)
        event_free(ctx->reaper);
    ctx->reaper = NULL;
}
