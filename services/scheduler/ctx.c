/*
 * The bottom of nf-scheduler: the context's metrics and the helpers every module's work
 * items share. It calls nothing above it: routes, consumers and hooks live in the
 * modules and service.c.
 */
#include "sched.h"

#include "nf_kafka.h"
#include "nf_metrics.h"
#include "nf_svc.h"

void sched_metrics_register(struct sched_ctx *ctx)
{
    struct nf_metrics *m = ctx->metrics;

    ctx->m.requested =
        nf_metrics_counter(m, "nf_sched_jobs_requested_total", "job requests recorded", NULL);
    ctx->m.requested_dup = nf_metrics_counter(m, "nf_sched_jobs_requested_duplicate_total",
                                              "job requests redelivered for known jobs", NULL);
    ctx->m.dispatch_known = nf_metrics_counter(
        m, "nf_sched_dispatch_known_total",
        "redelivered requests not dispatched again: the worker-manager holds the job", NULL);
    ctx->m.dispatched = nf_metrics_counter(m, "nf_sched_jobs_dispatched_total",
                                           "dispatch messages delivered", NULL);
    ctx->m.malformed_req =
        nf_metrics_counter(m, "nf_sched_malformed_total", "malformed messages skipped",
                           "topic=\"" NF_TOPIC_JOBS_REQUESTED "\"");
    ctx->m.malformed_ev =
        nf_metrics_counter(m, "nf_sched_malformed_total", "malformed messages skipped",
                           "topic=\"" NF_TOPIC_JOBS_EVENTS "\"");
    ctx->m.retries = nf_metrics_counter(m, "nf_sched_job_retries_total",
                                        "failed attempts sent back to queued", NULL);
    ctx->m.dead_lettered =
        nf_metrics_counter(m, "nf_sched_jobs_dead_lettered_total", "jobs dead-lettered", NULL);
    ctx->m.step_retries = nf_metrics_counter(m, "nf_sched_step_retries_total",
                                             "backend failures retried with backoff", NULL);
    ctx->m.inflight =
        nf_metrics_gauge(m, "nf_sched_inflight_messages", "Kafka messages being handled", NULL);
    ctx->m.budget_refused = nf_metrics_counter(m, "nf_sched_budget_refused_total",
                                               "jobs failed with budget_exceeded", NULL);
    ctx->m.budget_unchecked =
        nf_metrics_counter(m, "nf_sched_budget_unchecked_total",
                           "jobs dispatched without a budget check (billing unreachable)", NULL);
    ctx->m.costs_applied = nf_metrics_counter(m, "nf_sched_job_costs_applied_total",
                                              "job cost updates that changed a job", NULL);
    ctx->m.storage_events = nf_metrics_counter(m, "nf_sched_storage_events_total",
                                               "storage_byte_hours usage events produced", NULL);
}

bool sched_redis_failed(struct nf_work *w, const redisReply *reply, int want)
{
    if (nf_work_closing(w))
        return true;
    if (!reply || reply->type == REDIS_REPLY_ERROR || (want && reply->type != want)) {
        nf_work_retry(w,
                      reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "redis unavailable");
        return true;
    }
    return false;
}
