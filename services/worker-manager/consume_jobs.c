/*
 * Consumes forge.jobs.<type> (forge.job.dispatch) into the Redis ready queues.
 *
 *   message --parse--> malformed: counted, logged, done (never blocks the partition)
 *           --an item of ctx->work (nf_work)--> EVALSHA enqueue
 *               --> OK (queued or duplicate) --> message done, wake polls
 *               --> no answer / error --> nf_work_retry: the same stage after a backoff
 *                   (100 ms doubling to 5 s); the message is not done, so a crash or a
 *                   stop redelivers it
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
#include "nf_svc.h"
#include "routes.h"
#include "wm.h"

/* One dispatch message on its way into Redis. */
struct dispatch {
    struct nf_work w; /* first: the item nf_work allocates and frees */
    struct wm_dispatch d;
    char *data; /* the dispatch data, compact JSON */
};

static void dispatch_dtor(struct nf_work *w)
{
    struct dispatch *it = (struct dispatch *)w;

    wm_dispatch_clear(&it->d);
    free(it->data);
}

static void on_enqueued(redisReply *reply, void *arg)
{
    struct dispatch *it = arg;
    struct wm_ctx *ctx = it->w.ctx;

    if (ctx->svc->closing) {
        nf_work_finish(&it->w); /* nothing marked done: the consumer is gone */
        return;
    }
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        nf_work_retry(&it->w, reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no answer");
        return;
    }
    if (reply->integer == 1) {
        nf_metrics_counter_add(ctx->m.dispatch_queued, 1);
        nf_log_kv(NF_LOG_INFO, "job_queued", "job queued for workers", "job_id", it->d.job_id,
                  "job_type", nf_job_types[it->d.type], NULL);
        wm_polls_wake(ctx, it->d.type);
    } else {
        nf_metrics_counter_add(ctx->m.dispatch_duplicate, 1);
        nf_log_kv(NF_LOG_DEBUG, "dispatch_duplicate", "dispatch already known", "job_id",
                  it->d.job_id, NULL);
    }
    nf_work_finish(&it->w);
}

/* The one stage: EVALSHA enqueue. */
static void enqueue(struct nf_work *w)
{
    struct dispatch *it = (struct dispatch *)w;
    struct wm_ctx *ctx = w->ctx;
    char job_key[NF_ID_MAX + 16], lease_key[NF_ID_MAX + 16], queue_key[32];
    char tomb_key[NF_ID_MAX + 16];
    char attempt[24], score[16];
    snprintf(job_key, sizeof(job_key), "wm:job:%s", it->d.job_id);
    snprintf(lease_key, sizeof(lease_key), "wm:lease:%s", it->d.job_id);
    snprintf(queue_key, sizeof(queue_key), "wm:queue:%s", nf_job_types[it->d.type]);
    snprintf(tomb_key, sizeof(tomb_key), "wm:cancelled:%s", it->d.job_id);
    snprintf(attempt, sizeof(attempt), "%lld", it->d.attempt);
    snprintf(score, sizeof(score), "%d", 9 - it->d.priority);
    const char *argv[] = {job_key,  queue_key, lease_key, "wm:leases", tomb_key,
                          it->data, attempt,   score,     it->d.job_id};
    w->what = "enqueue";
    /* On -1 the callback already ran with NULL and scheduled a retry. */
    nf_redis_eval(ctx->redis, ctx->lua_enqueue, on_enqueued, it, 5, 9, argv, NULL);
}

void wm_consume_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct wm_ctx *ctx = arg;
    struct wm_dispatch d = {0};
    const char *why = NULL;
    struct dispatch *it;

    if (wm_dispatch_parse(msg->payload, msg->len, &d, &why) < 0) {
        char offset[24];
        snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
        nf_log_kv(NF_LOG_WARN, "dispatch_malformed", "malformed dispatch message skipped", "topic",
                  msg->topic, "offset", offset, "reason", why, NULL);
        nf_metrics_counter_add(ctx->m.dispatch_malformed, 1);
        nf_kafka_msg_done(msg);
        return;
    }
    it = (struct dispatch *)nf_work_new(&ctx->work, msg, sizeof(*it));
    it->w.dtor = dispatch_dtor;
    it->d = d; /* owned by the item now */
    it->data = nf_json_print(it->d.data);
    nf_work_start(&it->w, NULL, enqueue); /* no lane: the script orders attempts itself */
}
