/*
 * nf-gateway as an nf_svc descriptor: its NF_GATEWAY_* rows, the route table and the
 * hooks around the shared start, drain and teardown (nf_svc.h).
 *
 *   init   the context, metrics, the OpenAPI document; the producer's extra properties,
 *          SO_REUSEPORT and the body limit for nf_svc
 *   start  (Redis, the producer and the server are up) the Redis scripts, the object store
 *          client, the streaming route POST /api/files, the clients of nf-auth,
 *          nf-scheduler, nf-worker-manager and nf-billing
 *   SIGTERM: nf_svc closes the listener and waits for requests and deliveries in flight;
 *   busy   only worker long polls left (they may wait 30 s more)? free the worker-manager
 *          client: they are answered 503 at once and the agents retry elsewhere
 *   close  the clients (their calls in flight answer 503), then the open streams (SSE,
 *          uploads, downloads) and the object store client; nf_svc
 *          then flushes Kafka (a failed delivery still DELs its snapshot through Redis)
 *          and frees Redis (its callbacks answer 503) and the server
 *   free   the context
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deploy.h"
#include "gw.h"
#include "nf_cfg.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_s3.h"
#include "nf_svc.h"
#include "routes.h"

#ifndef NF_BINARY_DIR
#define NF_BINARY_DIR "."
#endif

#define BACKEND_CONNS 64
#define MAX_UPLOAD_CAP (1LL << 40) /* 1 TiB: parts of <= 122 MiB within S3's 10000 */
#define UPLOAD_SLACK (1024 * 1024) /* multipart framing and form fields around the file */
#define WM_TIMEOUT_MS 10000
#define HTTP_IDLE_TIMEOUT_S 60 /* above the 40 s worker long poll */

#define OPT(env, type, def, min, max, field, help)                                                 \
    {                                                                                              \
        env, type, def, min, max, false, offsetof(struct gw_config, field), help                   \
    }
/* A required secret string, masked in logs. */
#define SECRET(env, field, help)                                                                   \
    {                                                                                              \
        env, NF_CFG_STR, NULL, 1, 256, true, offsetof(struct gw_config, field), help               \
    }

static const struct nf_cfg_opt opts[] = {
    OPT("NF_GATEWAY_REUSEPORT", NF_CFG_BOOL, "false", 0, 0, reuseport,
        "SO_REUSEPORT, so several gateway processes share the port"),
    OPT("NF_GATEWAY_MAX_BODY", NF_CFG_INT, "1048576", 1024, 67108864, max_body,
        "largest request body in bytes (larger: 413)"),
    OPT("NF_GATEWAY_OPENAPI", NF_CFG_STR, NF_BINARY_DIR "/openapi.json", 1, 0, openapi,
        "OpenAPI JSON served at /openapi.json (must exist at start)"),
    OPT("NF_AUTH_ADDR", NF_CFG_ADDRS, "127.0.0.1:8101", 0, 0, auth_addr,
        "nf-auth internal address, or its replicas: host:port,host:port (failover)"),
    OPT("NF_SCHEDULER_ADDR", NF_CFG_ADDRS, "127.0.0.1:8102", 0, 0, sched_addr,
        "nf-scheduler internal address, or its replicas (comma-separated, failover)"),
    OPT("NF_WM_ADDR", NF_CFG_ADDRS, "127.0.0.1:8104", 0, 0, wm_addr,
        "nf-worker-manager address (/api/workers/* is forwarded there)"),
    OPT("NF_BILLING_ADDR", NF_CFG_ADDRS, "127.0.0.1:8103", 0, 0, billing_addr,
        "nf-billing internal address (/api/billing/* is forwarded there)"),
    OPT("NF_GATEWAY_PRODUCE_TIMEOUT_MS", NF_CFG_INT, "10000", 1000, 300000, produce_timeout_ms,
        "Kafka delivery deadline of a submitted job (then 503)"),
    OPT("NF_GATEWAY_WM_CONNS", NF_CFG_INT, "256", 1, 65536, wm_conns,
        "connections to the worker-manager (each next_job long poll holds one)"),
    OPT("NF_GATEWAY_RATE_LIMIT", NF_CFG_INT, "600", 1, 1000000, rate_per_min,
        "requests per minute per API key (or per user for sessions); a key may carry less"),
    OPT("NF_GATEWAY_RATE_BURST", NF_CFG_INT, "100", 1, 1000000, rate_burst,
        "requests an API key may send at once before the per-minute rate applies"),
    OPT("NF_GATEWAY_MAX_UPLOAD_BYTES", NF_CFG_I64, "5368709120", 1, MAX_UPLOAD_CAP, max_upload,
        "largest file POST /api/files takes, in bytes (larger: 413)"),
    OPT("NF_GATEWAY_DOWNLOADS_PER_ACCOUNT", NF_CFG_INT, "4", 1, 1000, downloads_per_account,
        "artifact downloads one account may have in flight (more: 429)"),
    OPT("NF_GATEWAY_UPLOADS_PER_ACCOUNT", NF_CFG_INT, "4", 1, 1000, uploads_per_account,
        "file uploads one account may have in flight (more: 429)"),
    OPT("NF_S3_ENDPOINT", NF_CFG_STR, NULL, 8, 0, s3_endpoint,
        "object store endpoint, http://host:port or https://host[:port]"),
    OPT("NF_S3_REGION", NF_CFG_STR, "us-east-1", 1, 64, s3_region, "object store region"),
    SECRET("NF_S3_ACCESS_KEY", s3_access_key, "object store access key"),
    SECRET("NF_S3_SECRET_KEY", s3_secret_key, "object store secret key"),
    OPT("NF_S3_BUCKET", NF_CFG_STR, "nexa-forge", 3, 63, s3_bucket,
        "the platform's bucket (every tenant's objects, under tenants/<user_id>/)"),
};

/* Every method of one /api/workers pattern: get answers GET, the rest are forwarded. */
/* clang-format off */
#define WORKERS(pattern, get)                                                                      \
    {"GET", pattern, get},                                                                         \
    {"POST", pattern, gw_workers_forward},                                                         \
    {"PUT", pattern, gw_workers_forward},                                                          \
    {"DELETE", pattern, gw_workers_forward},                                                       \
    {"PATCH", pattern, gw_workers_forward}
/* clang-format on */

static const struct nf_svc_route routes[] = {
    {"GET", "/openapi.json", gw_meta_openapi},
    {"GET", "/docs", gw_meta_docs},
    {"POST", "/api/jobs/{job_type}", gw_jobs_submit},
    {"GET", "/api/jobs/{job_id}", gw_jobs_get},
    {"GET", "/api/jobs", gw_jobs_list},
    {"POST", "/api/jobs/{job_id}/cancel", gw_jobs_cancel},
    {"GET", "/api/jobs/{job_id}/events", gw_jobs_events},
    {"GET", "/api/jobs/{job_id}/checkpoints", gw_jobs_checkpoints},
    {"GET", "/api/jobs/{job_id}/metrics", gw_jobs_metrics},
    WORKERS("/api/workers", gw_workers_list), /* the fleet list (also /api/workers/) */
    WORKERS("/api/workers/{a}", gw_workers_forward),
    WORKERS("/api/workers/{a}/{b}", gw_workers_forward),
    WORKERS("/api/workers/{a}/{b}/{c}", gw_workers_forward),
    {"POST", "/api/auth/register", gw_auth_register},
    {"POST", "/api/auth/login", gw_auth_login},
    {"POST", "/api/auth/logout", gw_auth_logout},
    {"GET", "/api/auth/me", gw_auth_me},
    {"GET", "/api/auth/api-keys", gw_auth_keys},
    {"POST", "/api/auth/api-keys", gw_auth_keys},
    {"DELETE", "/api/auth/api-keys/{key_id}", gw_auth_key},
    {"GET", "/api/billing/summary", gw_billing_summary},
    {"GET", "/api/billing/usage", gw_billing_usage},
    {"GET", "/api/billing/budget", gw_billing_budget},
    {"PUT", "/api/billing/budget", gw_billing_budget},
    {"GET", "/api/artifacts", gw_artifacts_list},
    {"GET", "/api/artifacts/{artifact_id}", gw_artifacts_get},
    {"GET", "/api/artifacts/{artifact_id}/content", gw_artifacts_content},
    {"GET", "/api/files", gw_files_list}, /* POST /api/files streams: gw_start */
    {"GET", "/api/files/{file_id}", gw_files_get},
    {"DELETE", "/api/files/{file_id}", gw_files_delete},
    {"GET", "/api/models", gw_models_list},
    {"POST", "/api/models", gw_models_create},
    {"GET", "/api/models/{model}", gw_models_get},
    {"DELETE", "/api/models/{model}", gw_models_delete},
    {"GET", "/api/deployments", gw_deployments_list},
    {"GET", "/api/deployments/{deployment_id}", gw_deployments_get},
    {"DELETE", "/api/deployments/{deployment_id}", gw_deployments_delete},
    {"GET", "/api/deployments/{deployment_id}/v1/models", gw_deployments_proxy},
    {"POST", "/api/deployments/{deployment_id}/v1/completions", gw_deployments_proxy},
    {"POST", "/api/deployments/{deployment_id}/v1/chat/completions", gw_deployments_proxy},
};

/* The object store client's settings from the rows (strings not copied). */
static void s3_conf(const struct nf_svc *svc, struct nf_s3_conf *conf)
{
    const struct gw_config *cfg = svc->own;
    /* the smallest parts that keep the largest upload within S3's 10000 (~2 parts of memory
     * per upload in flight), rounded up to a MiB */
    long long parts = NF_S3_MAX_PARTS - 1000; /* with room to spare */
    long long part = (cfg->max_upload + parts - 1) / parts;

    part = (part + (1 << 20) - 1) & ~((1LL << 20) - 1);
    memset(conf, 0, sizeof(*conf));
    conf->endpoint = cfg->s3_endpoint;
    conf->region = cfg->s3_region;
    conf->access_key = cfg->s3_access_key;
    conf->secret_key = cfg->s3_secret_key;
    conf->bucket = cfg->s3_bucket;
    conf->timeout_ms = svc->cfg.timeout_ms;
    conf->part_size = part < (long long)NF_S3_PART_MIN ? NF_S3_PART_MIN : (size_t)part;
}

/* Across rows: the object store's settings make a client; a refusal names its row. */
static int gw_check(const struct nf_svc *svc, char *err, size_t errlen)
{
    static const char *const rows[][2] = {
        {"endpoint", "NF_S3_ENDPOINT"},     {"region", "NF_S3_REGION"},
        {"access_key", "NF_S3_ACCESS_KEY"}, {"secret_key", "NF_S3_SECRET_KEY"},
        {"bucket", "NF_S3_BUCKET"},
    };
    struct nf_s3_conf conf;
    char why[256];
    const char *row = "NF_S3_*";

    s3_conf(svc, &conf);
    if (nf_s3_conf_check(&conf, why, sizeof(why)))
        return 0;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        size_t n = strlen(rows[i][0]);
        if (strncmp(why, rows[i][0], n) == 0 && why[n] == ':')
            row = rows[i][1];
    }
    snprintf(err, errlen, "%s: %s", row, why);
    return -1;
}

static int gw_init(struct nf_svc *svc)
{
    struct gw_ctx *ctx = nf_xcalloc(1, sizeof(*ctx));
    char err[512];

    ctx->svc = svc;
    ctx->cfg = svc->own;
    LIST_INIT(&ctx->streams);
    svc->ctx = ctx; /* gw_free's from here on, also when the start fails */
    snprintf(ctx->produce_timeout, sizeof(ctx->produce_timeout), "%d",
             ctx->cfg->produce_timeout_ms);
    ctx->producer_conf[0] = "message.timeout.ms";
    ctx->producer_conf[1] = ctx->produce_timeout;
    ctx->producer_conf[2] = "linger.ms";
    ctx->producer_conf[3] = "1";
    ctx->producer_conf[4] = NULL;
    svc->producer_conf = ctx->producer_conf;
    svc->reuseport = ctx->cfg->reuseport;
    svc->max_body = (size_t)ctx->cfg->max_body;
    gw_metrics_register(ctx);
    if (gw_meta_load(ctx, err, sizeof(err)) != 0) {
        nf_log_kv(NF_LOG_ERROR, "openapi_failed", "cannot load the openapi document", "error", err,
                  NULL);
        return -1;
    }
    return 0;
}

static int gw_start(void *arg)
{
    struct gw_ctx *ctx = arg;
    const struct gw_config *cfg = ctx->cfg;
    struct nf_svc *svc = ctx->svc;
    int timeout_ms = svc->cfg.timeout_ms;
    struct nf_s3_conf s3;

    if (gw_snapshot_init(ctx) != 0 || gw_rl_init(ctx) != 0 || gw_idem_init(ctx) != 0) {
        nf_log_error("redis_failed", "cannot register the redis scripts");
        return -1;
    }
    s3_conf(svc, &s3);
    if (nf_s3_new(&ctx->s3, svc->base, &s3) != 0)
        return -1;
    if (nf_http_route_stream(svc->http, "POST", "/api/files", gw_files_upload, ctx,
                             (uint64_t)cfg->max_upload + UPLOAD_SLACK) != 0)
        return -1;
    if (nf_svc_client(svc, &ctx->auth, "NF_AUTH_ADDR", cfg->auth_addr, timeout_ms, BACKEND_CONNS) !=
            0 ||
        nf_svc_client(svc, &ctx->sched, "NF_SCHEDULER_ADDR", cfg->sched_addr, timeout_ms,
                      BACKEND_CONNS) != 0 ||
        nf_svc_client(svc, &ctx->wm, "NF_WM_ADDR", cfg->wm_addr, WM_TIMEOUT_MS, cfg->wm_conns) !=
            0 ||
        nf_svc_client(svc, &ctx->billing, "NF_BILLING_ADDR", cfg->billing_addr, timeout_ms,
                      BACKEND_CONNS) != 0)
        return -1;
    return 0;
}

/* Frees a client: its calls in flight fail at once and their callbacks answer 503 (the
 * gateway is stopping); what a callback starts from then on finds no client. */
static void client_free(struct nf_http_client **cli)
{
    struct nf_http_client *c = *cli;

    *cli = NULL;
    nf_http_client_free(c);
}

/*
 * A drain tick: nf_svc already counts the requests and deliveries in flight. When the
 * only requests left are worker long polls, end them now rather than wait up to 30 s:
 * freeing the worker-manager client answers them 503 and their agents retry elsewhere;
 * the next tick sees them answered.
 */
static size_t gw_busy(void *arg)
{
    struct gw_ctx *ctx = arg;
    size_t inflight = nf_http_inflight(ctx->svc->http);

    if (ctx->wm && inflight > 0 && inflight == ctx->long_polls)
        client_free(&ctx->wm);
    return 0;
}

/* Teardown's first step; see the top of the file for what fires after it. */
static void gw_close(void *arg)
{
    struct gw_ctx *ctx = arg;
    struct nf_s3 *s3;

    client_free(&ctx->wm);
    client_free(&ctx->sched);
    /* the streams' scheduler calls fired above; end the streams waiting on timers or on
     * the store (uploads, downloads) */
    gw_streams_close_all(ctx);
    gw_dep_pool_free(ctx);
    s3 = ctx->s3;
    ctx->s3 = NULL;
    nf_s3_free(s3); /* the rest (input checks, deletes) end with "ShuttingDown" */
    client_free(&ctx->billing);
    client_free(&ctx->auth);
}

static void gw_free(void *arg)
{
    struct gw_ctx *ctx = arg;

    free(ctx->openapi);
    free(ctx->downloads.acc);
    free(ctx->uploads.acc);
    free(ctx->dep_cache);
    free(ctx);
}

const struct nf_svc_desc gw_service = {
    .name = "gateway",
    .summary = "the Nexa Forge public API gateway",
    .env_prefix = "NF_GATEWAY",
    .addr = "127.0.0.1:8000",
    .needs = NF_SVC_REDIS | NF_SVC_PRODUCER,
    .timeout_ms = 5000, /* Redis, nf-auth, nf-scheduler and nf-billing calls */
    .drain_ms = 10000,
    .http_timeout_s = HTTP_IDLE_TIMEOUT_S,
    NF_SVC_OPTS(opts, struct gw_config),
    NF_SVC_ROUTES(routes),
    .check = gw_check,
    .init = gw_init,
    .start = gw_start,
    .busy = gw_busy,
    .close = gw_close,
    .free = gw_free,
};
