/*
 * nf-worker as an nf_svc descriptor: its NF_WORKER_* rows and the hooks. An agent, not a
 * server: no listener, no Postgres, Redis or consumer; its Kafka producer is its own, as
 * NF_KAFKA_BROKERS may be empty (then the same messages go through the API).
 *
 *   init   the context; the settings derived from the rows
 *   start  undumpable (handlers cannot read our secrets) -> work dir (0700) -> Kafka producer (none
 * without brokers: HTTP fallback) -> HTTP clients -> SIGCHLD -> register (or the pre-registered
 * NF_WORKER_ID / NF_WORKER_TOKEN) stop   SIGTERM: stop polling (the waiting poll is dropped),
 * heartbeat now with draining: true (the manager gives this worker nothing more) -> running jobs
 * may finish for NF_WORKER_DRAIN_TIMEOUT_S -> then they are terminated and reported failed (infra)
 * -> every message delivered -> the last heartbeat lists no job: the manager releases the leases
 * and emits forge.worker.drained -> stopped busy   jobs + the farewell, until stopped; nf_svc then
 * ends the loop (exit 0, or 1 when the registration was refused). Its deadline (drain_of) is the
 * old grace: drain timeout + kill grace + GRACE_SLACK_S close  timers, HTTP clients, the producer
 * (flush), messages, jobs free   the context
 *
 * The operator's drain (a heartbeat answer says drain) is api.c's: no new jobs, every job
 * may finish (no deadline), then nf_svc_stop and the stop above.
 */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_log.h"
#include "nf_svc.h"
#include "outbox.h"
#include "wk.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

#define GRACE_SLACK_S 30 /* after drain + kill grace: final reports and the farewell */
#define HTTP_TIMEOUT_MS 30000
#define PRODUCER_FLUSH_MS 10000

#define OFF(f) offsetof(struct wk_config, f)

static const struct nf_cfg_opt wk_opts[] = {
    /* the API and Kafka */
    {"NF_API_URL", NF_CFG_STR, "http://127.0.0.1:8000", 8, 0, false, OFF(api_url),
     "the API base URL the agent registers and polls at (http only)"},
    {"NF_WORKER_REGISTRATION_TOKEN", NF_CFG_STR, NULL, 16, 0, true, OFF(reg_token),
     "operator secret presented at registration"},
    {"NF_KAFKA_BROKERS", NF_CFG_STR, "127.0.0.1:9092", 0, 0, false, OFF(brokers),
     "Kafka bootstrap servers (job events and usage are published directly); empty = no "
     "Kafka: report through POST /api/workers/events and /usage"},
    /* what this agent runs */
    {"NF_WORKER_HANDLERS", NF_CFG_STR, NF_SOURCE_DIR "/handlers", 1, 0, false, OFF(handlers),
     "directory holding one executable per job type"},
    {"NF_WORKER_WORK_DIR", NF_CFG_STR, "", 0, 0, false, OFF(work_dir),
     "private directory (made 0700) under which each attempt gets <job_id>-<attempt>/ with "
     "inputs/ and out/, removed when the attempt ends"},
    {"NF_WORKER_ARTIFACT_ROOT", NF_CFG_STR, "", 0, 0, false, OFF(artifact_root),
     "older name of NF_WORKER_WORK_DIR, used when that is empty"},
    {"NF_WORKER_MAX_INPUT_BYTES", NF_CFG_STR, "21474836480", 1, 20, false, OFF(max_input),
     "largest total size of a job's inputs fetched from the object store, in bytes"},
    {"NF_WORKER_STORE_CACHE", NF_CFG_STR, "", 0, 0, false, OFF(store_cache),
     "directory where base models (catalogue source s3://) and benchmark data fetched from "
     "the object store are kept between jobs; empty = <work dir>/store-cache"},
    {"NF_WORKER_HANDLER_ENV", NF_CFG_STR, "", 0, 4096, false, OFF(handler_env),
     "comma-separated names of variables of the agent's environment passed to handlers even "
     "though they start with NF_ (NF_PROVIDERS_FILE and the provider keys it names); every "
     "other NF_* variable stays the agent's"},
    {"NF_WORKER_SLOTS", NF_CFG_INT, "1", 1, 64, false, OFF(slots), "jobs run at the same time"},
    /* what it offers the scheduler */
    {"NF_WORKER_GPU_TYPE", NF_CFG_STR, "", 0, 0, false, OFF(gpu_type),
     "GPU model advertised to the scheduler (empty = none)"},
    {"NF_WORKER_GPU_COUNT", NF_CFG_INT, "1", 0, 16, false, OFF(gpu_count),
     "GPUs advertised (jobs ask for 1 by default)"},
    {"NF_WORKER_JOB_TYPES", NF_CFG_STR, "generate,audit,distill,train,evaluate,deploy", 1, 0, false,
     OFF(job_types), "comma-separated job types this agent runs"},
    {"NF_WORKER_LABELS", NF_CFG_STR, "", 0, 0, false, OFF(labels),
     "labels jobs can require, k=v,k2=v2"},
    {"NF_WORKER_HOSTNAME", NF_CFG_STR, "", 0, 0, false, OFF(hostname),
     "hostname reported at registration (empty = the system's)"},
    /* timing */
    {"NF_WORKER_POLL_WAIT_S", NF_CFG_INT, "20", 0, 30, false, OFF(poll_wait_s),
     "long-poll wait for next_job"},
    {"NF_WORKER_DRAIN_TIMEOUT_S", NF_CFG_INT, "60", 0, 86400, false, OFF(drain_timeout_s),
     "on SIGTERM, how long running jobs may finish before they are terminated"},
    {"NF_WORKER_KILL_GRACE_S", NF_CFG_INT, "10", 1, 300, false, OFF(kill_grace_s),
     "seconds between SIGTERM and SIGKILL for a handler"},
    {"NF_WORKER_USAGE_WINDOW_S", NF_CFG_INT, "60", 1, 3600, false, OFF(usage_window_s),
     "GPU time is metered in windows of this many seconds"},
    {"NF_WORKER_DEPLOY_METER_S", NF_CFG_INT, "60", 1, 3600, false, OFF(deploy_meter_s),
     "a deployment's GPU time while it serves (after its deploy job succeeded) is metered in "
     "windows of this many seconds until the endpoint stops"},
    {"NF_WORKER_PROGRESS_INTERVAL_MS", NF_CFG_INT, "500", 0, 60000, false, OFF(progress_ms),
     "at most one progress event per job per this interval"},
    /* a pre-registered identity */
    {"NF_WORKER_OUTBOX_MAX_MB", NF_CFG_INT, "256", 1, 65536, false, OFF(outbox_max_mb),
     "bound of the outbox journal (<work dir>/outbox-<n>.log) of undelivered messages"},
    {"NF_WORKER_ID", NF_CFG_STR, "", 0, 64, false, OFF(worker_id),
     "a pre-registered worker id to run as (with NF_WORKER_TOKEN); empty = register"},
    {"NF_WORKER_TOKEN", NF_CFG_STR, "", 0, 256, true, OFF(worker_token),
     "the worker token of NF_WORKER_ID"},
    /* the object store: job inputs are fetched from it, outputs uploaded to it */
    {"NF_S3_ENDPOINT", NF_CFG_STR, NULL, 8, 0, false, OFF(s3_endpoint),
     "object store URL, http(s)://host[:port]"},
    {"NF_S3_REGION", NF_CFG_STR, "us-east-1", 1, 64, false, OFF(s3_region),
     "object store region (SigV4)"},
    {"NF_S3_ACCESS_KEY", NF_CFG_STR, NULL, 1, 256, true, OFF(s3_access_key),
     "object store access key"},
    {"NF_S3_SECRET_KEY", NF_CFG_STR, NULL, 1, 256, true, OFF(s3_secret_key),
     "object store secret key"},
    {"NF_S3_BUCKET", NF_CFG_STR, "nexa-forge", 3, 63, false, OFF(s3_bucket),
     "the platform's bucket"},
};

/* desc->check: the composite values parse (init derives them again into the context). */
static int check(const struct nf_svc *svc, char *err, size_t errlen)
{
    struct wk_settings set = {0};
    int rc = wk_settings_load(svc->own, &set, err, errlen);

    wk_settings_free(&set);
    return rc;
}

/* desc->drain_of: how long nf_svc lets a SIGTERM drain run before it ends the loop. */
static int drain_of(const void *own)
{
    const struct wk_config *cfg = own;

    return (cfg->drain_timeout_s + cfg->kill_grace_s + GRACE_SLACK_S) * 1000;
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct wk_ctx *ctx = arg;
    nf_log_kv(NF_LOG_WARN, "drain_timeout", "drain timeout: terminating running jobs", NULL);
    wk_jobs_terminate(ctx);
}

/* ---- hooks -------------------------------------------------------------------------------- */

static int wk_init(struct nf_svc *svc)
{
    struct wk_ctx *ctx = nf_xcalloc(1, sizeof(*ctx));
    char err[512];

    svc->ctx = ctx;
    ctx->svc = svc;
    ctx->cfg = svc->own;
    ctx->base = svc->base;
    ctx->backoff_ms = 500;
    ctx->heartbeat_s = 5;
    snprintf(ctx->source, sizeof(ctx->source), "nf-worker");
    if (wk_settings_load(ctx->cfg, &ctx->set, err, sizeof(err)) == 0)
        return 0;
    nf_log_kv(NF_LOG_ERROR, "config_invalid", "invalid configuration", "error", err, NULL);
    return -1;
}

static int wk_start(void *arg)
{
    struct wk_ctx *ctx = arg;
    const struct wk_config *cfg = ctx->cfg;
    const struct wk_settings *set = &ctx->set;
    char err[512];

    /* Handlers run as our user: without this, any of them could read the object store's
     * keys (and the tokens) from /proc/<agent>/environ or our memory. Not inherited past
     * exec, so handlers stay ordinary processes. */
    if (prctl(PR_SET_DUMPABLE, 0) < 0)
        nf_log_kv(NF_LOG_WARN, "not_undumpable", strerror(errno), NULL);
    if (wk_root_prepare(set->work_dir, ctx->root, sizeof(ctx->root)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "work_dir_failed", strerror(errno), "path", set->work_dir, NULL);
        return -1;
    }
    /* libcurl's global state (TLS included) is set up here, before librdkafka starts its
     * threads; the job children that fetch and upload (stage.c) then only use it. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        nf_log_kv(NF_LOG_ERROR, "curl_init_failed", "cannot initialise libcurl", NULL);
        return -1;
    }
    if (access(cfg->handlers, R_OK | X_OK) < 0)
        nf_log_kv(NF_LOG_WARN, "handlers_missing", "handler directory not readable", "path",
                  cfg->handlers, NULL);
    if (cfg->brokers[0] == '\0') {
        nf_log_kv(NF_LOG_INFO, "kafka_none",
                  "no Kafka brokers: job events and usage go through the API", NULL);
    } else if (nf_kafka_producer_new(&ctx->producer, ctx->base, cfg->brokers, "nf-worker", NULL,
                                     err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "producer_failed", "cannot create the kafka producer", "error", err,
                  NULL);
        return -1;
    }
    if (wk_outbox_open(&ctx->outbox, ctx->root, (int64_t)cfg->outbox_max_mb << 20) < 0)
        nf_log_kv(NF_LOG_WARN, "outbox_unavailable",
                  "no outbox: undelivered messages are lost if the agent dies", "error",
                  strerror(errno), "dir", ctx->root, NULL);
    if (nf_http_client_new(&ctx->http, ctx->base, set->api_host, set->api_port, HTTP_TIMEOUT_MS,
                           2) < 0 ||
        nf_http_client_new(&ctx->poll_http, ctx->base, set->api_host, set->api_port,
                           HTTP_TIMEOUT_MS, 1) < 0 ||
        nf_http_client_new(&ctx->report_http, ctx->base, set->api_host, set->api_port,
                           HTTP_TIMEOUT_MS, 1) < 0) {
        nf_log_kv(NF_LOG_ERROR, "http_client_failed", "cannot create the HTTP client", NULL);
        return -1;
    }
    ctx->drain = evtimer_new(ctx->base, on_drain_deadline, ctx);
    ctx->sigchld = evsignal_new(ctx->base, SIGCHLD, wk_on_sigchld, ctx);
    if (!ctx->drain || !ctx->sigchld || event_add(ctx->sigchld, NULL) < 0)
        return -1;
    snprintf(ctx->gpu_type, sizeof(ctx->gpu_type), "%s", cfg->gpu_type);
    ctx->gpu_count = cfg->gpu_count;
    wk_gpus_detect(ctx);
    ctx->ngpu_devices =
        wk_gpus_devices(getenv("CUDA_VISIBLE_DEVICES"), ctx->gpu_count, ctx->gpu_devices, 64);
    wk_publish_replay(ctx);
    return wk_api_start(ctx);
}

static void wk_stop(void *arg)
{
    struct wk_ctx *ctx = arg;
    struct timeval tv = {ctx->cfg->drain_timeout_s, 0};
    char n[16];

    if (ctx->stopping)
        return;
    ctx->stopping = true;
    snprintf(n, sizeof(n), "%d", ctx->njobs);
    nf_log_kv(NF_LOG_INFO, "stopping", "stopping: no new jobs, draining", "jobs", n, NULL);
    wk_api_stop(ctx); /* with no job left, the farewell right away */
    if (ctx->njobs > 0)
        evtimer_add(ctx->drain, &tv);
}

static size_t wk_busy(void *arg)
{
    const struct wk_ctx *ctx = arg;

    return ctx->stopped ? 0 : (size_t)ctx->njobs + 1; /* + 1: the farewell */
}

static void wk_close(void *arg)
{
    struct wk_ctx *ctx = arg;
    struct event **timers[] = {&ctx->retry,  &ctx->heartbeat, &ctx->heartbeat_kick,
                               &ctx->finish, &ctx->drain,     &ctx->sigchld};

    ctx->closing = true;
    ctx->stopping = true;
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++)
        wk_event_free(timers[i]);
    nf_http_client_free(ctx->poll_http);
    nf_http_client_free(ctx->report_http);
    nf_http_client_free(ctx->http);
    ctx->poll_http = ctx->report_http = ctx->http = NULL;
    /* the endpoints stop as the agent exits: their last windows, before the flush */
    wk_serving_close(ctx);
    /* Delivery reports fire here; failures stay in the outbox (publish_deferred). */
    nf_kafka_producer_free(ctx->producer, PRODUCER_FLUSH_MS);
    ctx->producer = NULL;
    wk_publish_free(ctx);
    wk_jobs_free(ctx);
    wk_jobdir_free_all(ctx); /* the endpoints stop as the agent exits */
}

static void wk_free(void *arg)
{
    struct wk_ctx *ctx = arg;

    free(ctx->worker_token);
    wk_settings_free(&ctx->set);
    free(ctx);
}

const struct nf_svc_desc wk_service = {
    .name = "worker",
    .summary = "runs jobs leased from the worker-manager",
    .env_prefix = "NF_WORKER",
    NF_SVC_OPTS(wk_opts, struct wk_config),
    .check = check,
    .drain_of = drain_of,
    .init = wk_init,
    .start = wk_start,
    .stop = wk_stop,
    .busy = wk_busy,
    .close = wk_close,
    .free = wk_free,
};
