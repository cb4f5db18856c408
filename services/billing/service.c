/*
 * nf-billing as an nf_svc descriptor: its own NF_BILLING_* rows, the route table and the
 * hooks. nf_svc does the rest (shared rows, migrations of the `billing` schema, topics,
 * Postgres, the producer, the HTTP server, /readyz, the consumer of forge.usage and
 * forge.jobs.events in group NF_BILLING_GROUP, the SIGTERM drain, the teardown).
 *
 *   init    the context and its metrics
 *   start   borrow Postgres and the producer -> the work queue -> the sweep timer
 *   on_msg  forge.usage -> consume_usage.c, forge.jobs.events -> consume_events.c
 *   SIGTERM: nf_svc sets stopping: new messages are left un-done, backoffs and lingers
 *           are abandoned (redelivered later), work waiting on a backend may finish
 *   busy    work items waiting on a backend (nf_work_busy)
 *   close   (teardown, before the backends go) the sweep timer
 *   free    the work items left (their messages are not marked done), the context
 */
#include <stdlib.h>
#include <string.h>

#include "bill.h"
#include "nf_kafka.h"
#include "nf_mem.h"
#include "nf_svc.h"
#include "routes.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

#define OFF(f) offsetof(struct bill_config, f)

static const struct nf_cfg_opt bill_opts[] = {
    {"NF_BILLING_BATCH_MAX", NF_CFG_INT, "1000", 1, 10000, false, OFF(batch_max),
     "usage events recorded by one statement"},
    {"NF_BILLING_BATCH_LINGER_MS", NF_CFG_INT, "5", 0, 10000, false, OFF(linger_ms),
     "how long a batch waits to fill before it is recorded"},
    {"NF_BILLING_SWEEP_MS", NF_CFG_INT, "500", 10, 600000, false, OFF(sweep_ms),
     "how often usage waiting for its lease is looked at again"},
    {"NF_BILLING_LEASE_WAIT_S", NF_CFG_INT, "3600", 1, 604800, false, OFF(lease_wait_s),
     "usage whose lease is still unknown after this long is refused"},
    {"NF_BILLING_CLOSE_WAIT_S", NF_CFG_INT, "600", 1, 604800, false, OFF(close_wait_s),
     "an ended attempt still missing usage is closed (its cost final) after this long"},
};

/* The gateway forwards /api/billing/... here; the scheduler asks the budget. */
static const struct nf_svc_route bill_routes[] = {
    {"GET", "/internal/summary", bill_internal_summary},
    {"GET", "/internal/usage", bill_internal_usage},
    {"GET", "/internal/jobs/{job_id}/cost", bill_internal_job_cost},
    {"GET", "/internal/budget", bill_budget_get},
    {"PUT", "/internal/budget", bill_budget_put},
};

static const char *const bill_topics[] = {NF_TOPIC_USAGE, NF_TOPIC_JOBS_EVENTS, NULL};

static int bill_init(struct nf_svc *svc)
{
    struct bill_ctx *ctx = nf_xcalloc(1, sizeof(*ctx));

    ctx->svc = svc;
    ctx->cfg = svc->own;
    ctx->base = svc->base;
    ctx->metrics = svc->metrics;
    ctx->stopping = &svc->stopping;
    ctx->closing = &svc->closing;
    bill_metrics_register(ctx);
    svc->ctx = ctx;
    return 0;
}

static int bill_start(void *arg)
{
    struct bill_ctx *ctx = arg;
    struct nf_svc *svc = ctx->svc;

    ctx->pg = svc->pg;
    ctx->producer = svc->producer;
    nf_work_queue_init(&ctx->work, ctx->base, ctx->producer, &svc->stopping, &svc->closing, ctx);
    ctx->work.retries = ctx->m.step_retries;
    ctx->work.inflight = ctx->m.inflight;
    return bill_sweep_start(ctx);
}

static void bill_on_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct bill_ctx *ctx = arg;

    if (strcmp(msg->topic, NF_TOPIC_USAGE) == 0)
        bill_usage_handle(ctx, msg);
    else if (strcmp(msg->topic, NF_TOPIC_JOBS_EVENTS) == 0)
        bill_events_handle(ctx, msg);
    else
        nf_kafka_msg_done(msg);
}

static size_t bill_busy(void *arg)
{
    struct bill_ctx *ctx = arg;

    return nf_work_busy(&ctx->work);
}

static void bill_close(void *arg)
{
    bill_sweep_close(arg);
}

static void bill_free(void *arg)
{
    struct bill_ctx *ctx = arg;

    nf_work_free_all(&ctx->work);
    free(ctx);
}

const struct nf_svc_desc bill_service = {
    .name = "billing",
    .summary = "meters usage and prices it (DESIGN §8)",
    .env_prefix = "NF_BILLING",
    .addr = "127.0.0.1:8103",
    .needs = NF_SVC_PG | NF_SVC_PRODUCER,
    .schema = "billing",
    .migrations = NF_SOURCE_DIR "/services/billing/migrations",
    .timeout_ms = 10000,
    .drain_ms = 10000,
    NF_SVC_OPTS(bill_opts, struct bill_config),
    .consume = bill_topics,
    .group = "nf-billing",
    .max_inflight = 20000,
    NF_SVC_ROUTES(bill_routes),
    .init = bill_init,
    .start = bill_start,
    .on_msg = bill_on_msg,
    .busy = bill_busy,
    .close = bill_close,
    .free = bill_free,
};
