/*
 * Work items: the life of one Kafka message inside the scheduler.
 *
 *   msg --> sched_work_new --> start (maybe queued behind its lane) --> stage 1 --> ...
 *           each stage calls one backend; its callback either
 *             goto(next stage) | retry(this stage, backoff) | delay(stage, ms) | finish
 *   finish --> nf_kafka_msg_done (offset may be stored) --> freed
 *
 * A lane serialises the items of one key (the job id of forge.jobs.events), so the
 * events of a job are applied in the order Kafka delivered them even though many
 * messages are in flight. An item may leave its lane early (release_lane) while it
 * still waits for something slow, e.g. the delayed re-dispatch of a retried job.
 *
 * Shutdown: `busy` items (a stage is waiting on a backend) are allowed to continue;
 * items waiting in a lane, in a backoff or in a delay are abandoned: their messages are
 * not marked done and will be redelivered to whoever consumes the partition next.
 */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

struct sched_lane {
    char *key;
    struct sched_work *head, *tail; /* head holds the lane, the others wait */
    struct sched_lane *next;
};

static void set_gauge(struct sched_ctx *ctx)
{
    if (ctx->m.inflight)
        nf_metrics_gauge_set(ctx->m.inflight, (double)ctx->nworks);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sched_work *w = arg;

    if (w->ctx->stopping)
        return; /* abandoned: redelivered after the restart */
    w->busy = true;
    w->step(w);
}

struct sched_work *sched_work_new(struct sched_ctx *ctx, struct nf_kafka_msg *msg, size_t size)
{
    struct sched_work *w = nf_xcalloc(1, size < sizeof(*w) ? sizeof(*w) : size);

    w->ctx = ctx;
    w->msg = msg;
    w->timer = evtimer_new(ctx->base, on_timer, w);
    if (!w->timer)
        abort();
    w->next = ctx->works;
    if (ctx->works)
        ctx->works->prev = w;
    ctx->works = w;
    ctx->nworks++;
    set_gauge(ctx);
    return w;
}

static struct sched_lane *lane_find(struct sched_ctx *ctx, const char *key)
{
    struct sched_lane *l;

    for (l = ctx->lanes; l; l = l->next)
        if (strcmp(l->key, key) == 0)
            return l;
    return NULL;
}

static void lane_unlink(struct sched_ctx *ctx, struct sched_lane *lane)
{
    struct sched_lane **pp;

    for (pp = &ctx->lanes; *pp; pp = &(*pp)->next) {
        if (*pp == lane) {
            *pp = lane->next;
            break;
        }
    }
    free(lane->key);
    free(lane);
}

/* Starts a stage from the loop (not from inside the caller's stack). */
static void kick(struct sched_work *w)
{
    static const struct timeval now = {0, 0};

    if (w->ctx->stopping)
        return;
    evtimer_add(w->timer, &now);
}

void sched_work_start(struct sched_work *w, const char *key, sched_step_fn step)
{
    struct sched_ctx *ctx = w->ctx;
    struct sched_lane *lane;

    w->step = step;
    if (key) {
        lane = lane_find(ctx, key);
        if (lane) {
            w->lane = lane;
            lane->tail->lane_next = w;
            lane->tail = w;
            return; /* started when the items ahead release the lane */
        }
        lane = nf_xcalloc(1, sizeof(*lane));
        lane->key = nf_xstrdup(key);
        lane->head = lane->tail = w;
        lane->next = ctx->lanes;
        ctx->lanes = lane;
        w->lane = lane;
    }
    if (ctx->stopping)
        return;
    w->busy = true;
    w->step(w);
}

void sched_work_goto(struct sched_work *w, sched_step_fn step)
{
    w->backoff_ms = 0;
    w->step = step;
    w->busy = true;
    if (w->ctx->closing) {
        w->busy = false;
        return;
    }
    step(w);
}

void sched_work_retry(struct sched_work *w, const char *why)
{
    struct sched_ctx *ctx = w->ctx;
    struct timeval tv;
    char ms[16];

    w->busy = false;
    if (ctx->closing)
        return;
    nf_metrics_counter_add(ctx->m.step_retries, 1);
    if (ctx->stopping) {
        nf_log_kv(NF_LOG_WARN, "step_abandoned", "stage failed while stopping, left for redelivery",
                  "stage", w->what, "reason", why, NULL);
        return;
    }
    w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (w->backoff_ms > BACKOFF_MAX_MS)
        w->backoff_ms = BACKOFF_MAX_MS;
    snprintf(ms, sizeof(ms), "%d", w->backoff_ms);
    nf_log_kv(NF_LOG_WARN, "step_retry", "stage failed, retrying", "stage", w->what, "reason", why,
              "topic", w->msg ? w->msg->topic : NULL, "key", w->msg ? w->msg->key : NULL,
              "backoff_ms", ms, NULL);
    tv.tv_sec = w->backoff_ms / 1000;
    tv.tv_usec = (suseconds_t)(w->backoff_ms % 1000) * 1000;
    evtimer_add(w->timer, &tv);
}

void sched_work_delay(struct sched_work *w, int delay_ms, sched_step_fn step)
{
    struct timeval tv;

    w->busy = false;
    w->backoff_ms = 0;
    w->step = step;
    if (w->ctx->stopping)
        return;
    tv.tv_sec = delay_ms / 1000;
    tv.tv_usec = (suseconds_t)(delay_ms % 1000) * 1000;
    evtimer_add(w->timer, &tv);
}

void sched_work_release_lane(struct sched_work *w)
{
    struct sched_lane *lane = w->lane;
    struct sched_work **pp, *prev = NULL;

    if (!lane)
        return;
    w->lane = NULL;
    if (lane->head != w) {
        /* a waiting item leaves (teardown): unlink it from the middle */
        for (pp = &lane->head; *pp; prev = *pp, pp = &(*pp)->lane_next) {
            if (*pp == w) {
                *pp = w->lane_next;
                if (lane->tail == w)
                    lane->tail = prev;
                break;
            }
        }
        w->lane_next = NULL;
        return;
    }
    lane->head = w->lane_next;
    w->lane_next = NULL;
    if (!lane->head) {
        lane_unlink(w->ctx, lane);
        return;
    }
    kick(lane->head);
}

void sched_work_free(struct sched_work *w)
{
    struct sched_ctx *ctx;

    if (!w)
        return;
    ctx = w->ctx;
    sched_work_release_lane(w);
    if (w->prev)
        w->prev->next = w->next;
    else
        ctx->works = w->next;
    if (w->next)
        w->next->prev = w->prev;
    ctx->nworks--;
    set_gauge(ctx);
    if (w->timer)
        event_free(w->timer);
    if (w->dtor)
        w->dtor(w);
    free(w);
}

void sched_work_free_all(struct sched_ctx *ctx)
{
    struct sched_work *w, *next;
    struct sched_lane *lane;

    ctx->stopping = true; /* nothing is kicked while the lanes unwind */
    for (w = ctx->works; w; w = next) {
        next = w->next; /* freeing w unlinks only w */
        sched_work_free(w);
    }
    while ((lane = ctx->lanes)) { /* none should remain */
        ctx->lanes = lane->next;
        free(lane->key);
        free(lane);
    }
}

void sched_work_finish(struct sched_work *w)
{
    w->busy = false;
    if (w->msg && !w->ctx->closing)
        nf_kafka_msg_done(w->msg); /* msg freed by nf_kafka */
    w->msg = NULL;
    sched_work_free(w);
}

void sched_work_produce_begin(struct sched_work *w)
{
    w->pending = 1; /* held until produce_end, so early reports cannot complete the batch */
    w->produce_failed = false;
    w->after_produce = NULL;
}

static void produced(struct sched_work *w)
{
    if (w->pending > 0)
        return;
    if (w->ctx->closing) {
        w->busy = false;
        return;
    }
    if (w->produce_failed)
        sched_work_retry(w, "kafka produce failed");
    else
        sched_work_goto(w, w->after_produce);
}

static void on_delivery(int err, const char *errstr, void *arg)
{
    struct sched_work *w = arg;

    if (err) {
        w->produce_failed = true;
        if (!w->ctx->closing)
            nf_log_kv(NF_LOG_WARN, "produce_failed", "delivery failed", "stage", w->what, "error",
                      errstr, NULL);
    }
    w->pending--;
    produced(w);
}

void sched_work_produce(struct sched_work *w, const char *topic, const char *key, cJSON *ev)
{
    char *payload = nf_json_print(ev);
    int rc;

    cJSON_Delete(ev);
    w->pending++;
    rc = nf_kafka_produce(w->ctx->producer, topic, key, payload, strlen(payload), on_delivery, w);
    if (rc < 0) {
        w->pending--;
        w->produce_failed = true;
        nf_log_kv(NF_LOG_WARN, "produce_failed", "could not queue message", "topic", topic, "key",
                  key, NULL);
    }
    free(payload);
}

void sched_work_produce_end(struct sched_work *w, sched_step_fn then)
{
    w->after_produce = then;
    w->pending--;
    produced(w);
}

size_t sched_work_busy(const struct sched_ctx *ctx)
{
    const struct sched_work *w;
    size_t n = 0;

    for (w = ctx->works; w; w = w->next)
        if (w->busy)
            n++;
    return n;
}
