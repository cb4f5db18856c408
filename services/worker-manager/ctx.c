/*
 * The bottom of nf-worker-manager: the context, its metrics and Redis scripts, and the
 * helpers every module shares (503 answers, scan replies). It calls nothing above it: the
 * routes, the consumer and the reaper live in their own files, the hooks in service.c.
 */
#include <stdio.h>
#include <string.h>

#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_redis.h"
#include "nf_svc.h"
#include "wm.h"

/* A counter named wm_<field>_total, one row each (as /metrics shows them). */
#define C(field, help)                                                                             \
    {                                                                                              \
        offsetof(struct wm_metrics, field), "wm_" #field "_total", help                            \
    }

static const struct {
    size_t off;
    const char *name;
    const char *help;
} counters[] = {
    C(dispatch_queued, "dispatch messages queued in Redis"),
    C(dispatch_duplicate, "dispatch messages already known (redelivery)"),
    C(dispatch_malformed, "dispatch messages skipped as malformed"),
    C(dispatch_retry, "enqueue attempts retried"),
    C(jobs_leased, "jobs leased to workers"),
    C(polls_empty, "long polls answered 204"),
    C(leases_released, "leases released by workers"),
    C(leases_reaped, "expired leases reported worker_lost"),
    C(workers_registered, "workers registered"),
    C(auth_failed, "worker calls refused with 403"),
    C(events_failed, "events not delivered to Kafka"),
    C(heartbeat_lost_jobs, "jobs listed in heartbeats whose lease the worker no longer holds"),
    C(workers_lost, "workers that missed 3 heartbeats"),
    C(workers_drained, "workers drained"),
    C(polls_draining, "polls of draining workers (204)"),
    C(cancel_dequeued, "cancels of queued jobs"),
    C(cancel_signalled, "cancels passed to workers"),
    C(cancel_unknown, "cancels of jobs neither queued nor leased"),
    C(reports_accepted, "HTTP fallback reports produced"),
    C(reports_refused, "HTTP fallback reports refused: lease not held"),
};

#define S(field) offsetof(struct wm_ctx, field)

/* The Redis scripts (lua.c) and the context field holding each one's handle. */
static const struct {
    size_t off;
    const char *lua;
} scripts[] = {
    {S(lua_enqueue), wm_lua_enqueue},       {S(lua_pop), wm_lua_pop},
    {S(lua_heartbeat), wm_lua_heartbeat},   {S(lua_reap_claim), wm_lua_reap_claim},
    {S(lua_reap_done), wm_lua_reap_done},   {S(lua_requeue), wm_lua_requeue},
    {S(lua_lost_claim), wm_lua_lost_claim}, {S(lua_drain), wm_lua_drain},
    {S(lua_cancel), wm_lua_cancel},         {S(lua_lease_check), wm_lua_lease_check},
    {S(lua_fleet), wm_lua_fleet},
};

struct wm_ctx *wm_ctx_new(struct nf_svc *svc)
{
    struct wm_ctx *ctx = nf_xcalloc(1, sizeof(*ctx));
    size_t i;

    ctx->svc = svc;
    ctx->cfg = svc->own;
    ctx->base = svc->base;
    LIST_INIT(&ctx->polls);
    nf_crypto_sha256(ctx->cfg->reg_token, strlen(ctx->cfg->reg_token), ctx->reg_token_hash);
    for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        *(struct nf_counter **)((char *)&ctx->m + counters[i].off) =
            nf_metrics_counter(svc->metrics, counters[i].name, counters[i].help, NULL);
    ctx->m.polls_waiting =
        nf_metrics_gauge(svc->metrics, "wm_polls_waiting", "long polls waiting for a job", NULL);
    return ctx;
}

void wm_ctx_start(struct wm_ctx *ctx)
{
    size_t i;

    ctx->redis = ctx->svc->redis;
    ctx->pg = ctx->svc->pg;
    ctx->producer = ctx->svc->producer;
    for (i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
        *(struct nf_redis_script **)((char *)ctx + scripts[i].off) =
            nf_redis_script_new(ctx->redis, scripts[i].lua);
}

void wm_reply_unavailable(struct nf_http_req *req, const char *msg)
{
    nf_http_set_header(req, "Retry-After", "1");
    nf_http_reply_error(req, 503, "unavailable", NULL, "%s", msg);
}

bool wm_refuse_stopping(struct wm_ctx *ctx, struct nf_http_req *req)
{
    if (!ctx->svc->stopping)
        return false;
    wm_reply_unavailable(req, "the worker-manager is stopping");
    return true;
}

void wm_scan_rows(struct wm_ctx *ctx, const redisReply *reply, int third_type, wm_scan_fn fn,
                  const char *event, const char *msg)
{
    const redisReply *id, *second, *third;
    size_t i;

    ctx->reaping--;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            nf_log_kv(NF_LOG_ERROR, event, msg, "error", reply->str, NULL);
        return;
    }
    if (ctx->svc->closing)
        return;
    for (i = 0; i + 2 < reply->elements; i += 3) {
        id = reply->element[i];
        second = reply->element[i + 1];
        third = reply->element[i + 2];
        if (id->type == REDIS_REPLY_STRING && second->type == REDIS_REPLY_STRING &&
            (int)third->type == third_type)
            fn(ctx, id->str, second->str, third);
    }
}
