/*
 * Consumes forge.jobs.<type> (forge.job.dispatch) into the Redis ready queues.
 *
 *   message --parse--> malformed: counted, logged, done (never blocks the partition)
 *           --EVALSHA enqueue--> OK (queued or duplicate) --> nf_kafka_msg_done, wake polls
 *                            --> no answer / error --> retry with backoff (100 ms .. 5 s);
 *                                the message is not done, so a crash redelivers it
 *
 * The enqueue script is idempotent per (job, attempt): a redelivered message changes
 * nothing. A cancelled job (tombstone wm:cancelled:<id>, cancel.c) is never queued.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_redis.h"
#include "wm.h"

#define RETRY_FIRST_MS 100
#define RETRY_MAX_MS 5000

/* One dispatch message on its way into Redis. */
struct wm_retry {
    struct wm *ctx;
    struct nf_kafka_msg *msg; /* owned until nf_kafka_msg_done */
    struct wm_dispatch d;
    char *data;          /* the dispatch data, compact JSON */
    struct event *timer; /* armed between attempts */
    int delay_ms;
    bool inflight; /* an EVALSHA is outstanding */
    struct wm_retry *prev, *next;
};

static void enqueue(struct wm_retry *r);

static void retry_free(struct wm_retry *r)
{
    struct wm *ctx = r->ctx;
    if (r->prev)
        r->prev->next = r->next;
    else
        ctx->retries = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->timer)
        event_free(r->timer);
    wm_dispatch_clear(&r->d);
    free(r->data);
    free(r);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    enqueue(arg);
}

static void on_enqueued(redisReply *reply, void *arg)
{
    struct wm_retry *r = arg;
    struct wm *ctx = r->ctx;
    r->inflight = false;

    if (ctx->closing) {
        retry_free(r); /* the consumer frees the message without storing its offset */
        return;
    }
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        nf_log_kv(NF_LOG_WARN, "dispatch_enqueue_retry", "enqueue failed, retrying", "job_id",
                  r->d.job_id, "error",
                  reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no answer", NULL);
        nf_metrics_counter_add(ctx->m.dispatch_retry, 1);
        struct timeval tv = {r->delay_ms / 1000, (suseconds_t)(r->delay_ms % 1000) * 1000};
        evtimer_add(r->timer, &tv);
        r->delay_ms = r->delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : r->delay_ms * 2;
        return;
    }
    if (reply->integer == 1) {
        nf_metrics_counter_add(ctx->m.dispatch_queued, 1);
        nf_log_kv(NF_LOG_INFO, "job_queued", "job queued for workers", "job_id", r->d.job_id,
                  "job_type", wm_job_types[r->d.type], NULL);
        wm_polls_wake(ctx, r->d.type);
    } else {
        nf_metrics_counter_add(ctx->m.dispatch_duplicate, 1);
        nf_log_kv(NF_LOG_DEBUG, "dispatch_duplicate", "dispatch already known", "job_id",
                  r->d.job_id, NULL);
    }
    nf_kafka_msg_done(r->msg);
    r->msg = NULL;
    retry_free(r);
}

static void enqueue(struct wm_retry *r)
{
    struct wm *ctx = r->ctx;
    char job_key[NF_ID_MAX + 16], lease_key[NF_ID_MAX + 16], queue_key[32];
    char tomb_key[NF_ID_MAX + 16];
    char attempt[24], score[16];
    snprintf(job_key, sizeof(job_key), "wm:job:%s", r->d.job_id);
    snprintf(lease_key, sizeof(lease_key), "wm:lease:%s", r->d.job_id);
    snprintf(queue_key, sizeof(queue_key), "wm:queue:%s", wm_job_types[r->d.type]);
    snprintf(tomb_key, sizeof(tomb_key), "wm:cancelled:%s", r->d.job_id);
    snprintf(attempt, sizeof(attempt), "%lld", r->d.attempt);
    snprintf(score, sizeof(score), "%d", 9 - r->d.priority);
    const char *argv[] = {job_key, queue_key, lease_key, "wm:leases", tomb_key,
                          r->data, attempt,   score,     r->d.job_id};
    r->inflight = true;
    /* On -1 the callback already ran with NULL and scheduled a retry. */
    nf_redis_eval(ctx->redis, ctx->lua_enqueue, on_enqueued, r, 5, 9, argv, NULL);
}

void wm_consume_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct wm *ctx = arg;
    const char *why = NULL;
    struct wm_retry *r = nf_xcalloc(1, sizeof(*r));

    if (wm_dispatch_parse(msg->payload, msg->len, &r->d, &why) < 0) {
        char offset[24];
        snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
        nf_log_kv(NF_LOG_WARN, "dispatch_malformed", "malformed dispatch message skipped", "topic",
                  msg->topic, "offset", offset, "reason", why, NULL);
        nf_metrics_counter_add(ctx->m.dispatch_malformed, 1);
        nf_kafka_msg_done(msg);
        free(r);
        return;
    }
    r->ctx = ctx;
    r->msg = msg;
    r->data = nf_json_print(r->d.data);
    r->delay_ms = RETRY_FIRST_MS;
    r->timer = evtimer_new(ctx->base, on_retry_timer, r);
    if (r->timer == NULL)
        abort();
    r->next = ctx->retries;
    if (ctx->retries)
        ctx->retries->prev = r;
    ctx->retries = r;
    enqueue(r);
}

void wm_consume_free_retries(struct wm *ctx)
{
    struct wm_retry *r = ctx->retries, *next;
    for (; r != NULL; r = next) {
        next = r->next;
        if (!r->inflight)
            retry_free(r);
    }
}
