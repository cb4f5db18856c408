/*
 * nf-worker-manager as an nf_svc descriptor: its own rows, the route table, the six job
 * topics it consumes and the hooks. nf_svc does the rest (shared rows, migrations of the
 * `wm` schema, topics, Postgres, Redis, the producer, the consumer in group NF_WM_GROUP,
 * the HTTP server, /readyz, the SIGTERM drain, the teardown).
 *
 *   init   the context and its metrics
 *   start  borrow the backends, register the Redis scripts -> the dispatch queue
 *          (ctx->work) -> the lease reaper
 *   stop   (SIGTERM) the reaper ends; waiting long polls answer 204
 *   busy   dispatch enqueues waiting on Redis + reaper rounds in flight
 *   close  (teardown, before the backends go) the reaper; the polls left answer 204 (a
 *          scan in flight answers when Redis is freed)
 *   free   the dispatch items left (their messages are redelivered), the context
 */
#include <stdio.h>
#include <stdlib.h>

#include "nf_svc.h"
#include "routes.h"
#include "wm.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

#define OFF(f) offsetof(struct wm_config, f)

static const struct nf_cfg_opt wm_opts[] = {
    {"NF_WORKER_REGISTRATION_TOKEN", NF_CFG_STR, NULL, 16, 0, true, OFF(reg_token),
     "operator secret workers present at registration (at least 16 characters)"},
    {"NF_WM_HEARTBEAT_INTERVAL_S", NF_CFG_INT, "2", 1, 300, false, OFF(heartbeat_s),
     "seconds between worker heartbeats (told to workers at registration); a worker is lost "
     "after 3 missed"},
    {"NF_WM_LEASE_TTL_S", NF_CFG_INT, "6", 2, 3600, false, OFF(lease_ttl_s),
     "seconds a job lease lives without a heartbeat: a dead worker's job is requeued this "
     "long after its last beat (raise both for long pauses or slow links)"},
    {"NF_WM_REAP_INTERVAL_MS", NF_CFG_INT, "500", 50, 60000, false, OFF(reap_interval_ms),
     "how often expired leases and lost workers are looked for"},
};

/*
 * A lease must outlive at least two heartbeats, or one late beat loses the job. The
 * defaults (2 s beats, 6 s leases, a 500 ms reaper) give three beats per lease: one lost
 * or late beat costs nothing, and a dead worker's job is requeued at most 6.5 s after its
 * last beat - within the 10 s budget of issue 23 (README "Liveness and recovery").
 */
static int wm_check(const struct nf_svc *svc, char *err, size_t errlen)
{
    const struct wm_config *cfg = svc->own;

    if (cfg->lease_ttl_s >= 2 * cfg->heartbeat_s)
        return 0;
    snprintf(err, errlen, "NF_WM_LEASE_TTL_S: must be at least two heartbeats (%d s) (got %d)",
             2 * cfg->heartbeat_s, cfg->lease_ttl_s);
    return -1;
}

/* The gateway forwards /api/workers/... as it is; /internal/... is the scheduler's. */
static const struct nf_svc_route wm_routes[] = {
    {"POST", "/api/workers/register", wm_route_register},
    {"POST", "/api/workers/next_job", wm_route_next_job},
    {"POST", "/api/workers/heartbeat", wm_route_heartbeat},
    {"GET", "/api/workers", wm_route_list},
    {"POST", "/api/workers/drain", wm_route_drain},
    {"POST", "/api/workers/disable", wm_route_disable},
    {"POST", "/api/workers/events", wm_route_events},
    {"POST", "/api/workers/usage", wm_route_usage},
    {"POST", "/internal/jobs/{job_id}/cancel", wm_route_cancel},
};

static int wm_init(struct nf_svc *svc)
{
    svc->ctx = wm_ctx_new(svc);
    return 0;
}

static int wm_start(void *arg)
{
    struct wm_ctx *ctx = arg;
    struct nf_svc *svc = ctx->svc;

    wm_ctx_start(ctx);
    nf_work_queue_init(&ctx->work, svc->base, svc->producer, &svc->stopping, &svc->closing, ctx);
    ctx->work.retries = ctx->m.dispatch_retry;
    wm_reaper_start(ctx);
    return 0;
}

static void wm_stop(void *arg)
{
    struct wm_ctx *ctx = arg;

    wm_reaper_stop(ctx);
    wm_polls_flush(ctx);
}

static size_t wm_busy(void *arg)
{
    struct wm_ctx *ctx = arg;

    return nf_work_busy(&ctx->work) + (size_t)ctx->reaping;
}

static void wm_close(void *arg)
{
    struct wm_ctx *ctx = arg;

    wm_reaper_stop(ctx);
    wm_polls_flush(ctx);
}

static void wm_free(void *arg)
{
    struct wm_ctx *ctx = arg;

    nf_work_free_all(&ctx->work);
    free(ctx);
}

const struct nf_svc_desc wm_service = {
    .name = "worker-manager",
    .summary = "leases queued jobs to worker agents",
    .env_prefix = "NF_WM",
    .addr = "127.0.0.1:8104",
    .needs = NF_SVC_PG | NF_SVC_REDIS | NF_SVC_PRODUCER,
    .schema = "wm",
    .migrations = NF_SOURCE_DIR "/services/worker-manager/migrations",
    .timeout_ms = 5000,
    .drain_ms = 15000,
    .max_body = (size_t)256 * 1024,
    .http_timeout_s = 60, /* long polls last up to 30 s: the idle timeout must be longer */
    NF_SVC_OPTS(wm_opts, struct wm_config),
    .check = wm_check,
    .consume = nf_job_topics, /* the dispatch topics, one per job type */
    .group = "nf-worker-manager",
    .max_inflight = 256,
    NF_SVC_ROUTES(wm_routes),
    .init = wm_init,
    .start = wm_start,
    .on_msg = wm_consume_msg,
    .stop = wm_stop,
    .busy = wm_busy,
    .close = wm_close,
    .free = wm_free,
};
