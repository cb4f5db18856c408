/*
 * nf_work: work items, lanes, backoff, delays and produce fan-outs (see nf_work.h).
 */
#include "nf_work.h"

#include <stdlib.h>
#include <string.h>

#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

struct nf_work_lane {
    char *key;
    struct nf_work *head, *tail; /* head holds the lane, the others wait */
    struct nf_work_lane *next;
};

static bool stopping(const struct nf_work_queue *q)
{
    return *q->stopping;
}

static bool closing(const struct nf_work_queue *q)
{
    return *q->closing;
}

static void set_gauge(struct nf_work_queue *q)
{
    if (q->inflight)
        nf_metrics_gauge_set(q->inflight, (double)q->nworks);
}

static void arm(struct nf_work *w, int ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};

    evtimer_add(w->timer, &tv);
}

void nf_work_queue_init(struct nf_work_queue *q, struct event_base *base,
                        struct nf_kafka_producer *producer, const bool *stopping_flag,
                        const bool *closing_flag, void *ctx)
{
    memset(q, 0, sizeof(*q));
    q->base = base;
    q->producer = producer;
    q->stopping = stopping_flag;
    q->closing = closing_flag;
    q->ctx = ctx;
    LIST_INIT(&q->works);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct nf_work *w = arg;

    if (stopping(w->q))
        return; /* abandoned: redelivered after the restart */
    w->busy = true;
    w->step(w);
}

struct nf_work *nf_work_new(struct nf_work_queue *q, struct nf_kafka_msg *msg, size_t size)
{
    struct nf_work *w = nf_xcalloc(1, size < sizeof(*w) ? sizeof(*w) : size);

    w->q = q;
    w->ctx = q->ctx;
    w->msg = msg;
    w->timer = evtimer_new(q->base, on_timer, w);
    if (!w->timer)
        abort();
    LIST_INSERT_HEAD(&q->works, w, link);
    q->nworks++;
    set_gauge(q);
    return w;
}

static struct nf_work_lane *lane_find(struct nf_work_queue *q, const char *key)
{
    struct nf_work_lane *l;

    for (l = q->lanes; l; l = l->next)
        if (strcmp(l->key, key) == 0)
            return l;
    return NULL;
}

static void lane_unlink(struct nf_work_queue *q, struct nf_work_lane *lane)
{
    struct nf_work_lane **pp;

    for (pp = &q->lanes; *pp; pp = &(*pp)->next) {
        if (*pp == lane) {
            *pp = lane->next;
            break;
        }
    }
    free(lane->key);
    free(lane);
}

void nf_work_start(struct nf_work *w, const char *key, nf_work_step step)
{
    struct nf_work_queue *q = w->q;
    struct nf_work_lane *lane;

    w->step = step;
    if (key) {
        lane = lane_find(q, key);
        if (lane) {
            w->lane = lane;
            lane->tail->lane_next = w;
            lane->tail = w;
            return; /* started when the items ahead release the lane */
        }
        lane = nf_xcalloc(1, sizeof(*lane));
        lane->key = nf_xstrdup(key);
        lane->head = lane->tail = w;
        lane->next = q->lanes;
        q->lanes = lane;
        w->lane = lane;
    }
    if (stopping(q))
        return;
    w->busy = true;
    w->step(w);
}

void nf_work_goto(struct nf_work *w, nf_work_step step)
{
    w->backoff_ms = 0;
    w->step = step;
    w->busy = !closing(w->q);
    if (w->busy)
        step(w);
}

void nf_work_retry(struct nf_work *w, const char *why)
{
    struct nf_work_queue *q = w->q;
    char ms[16];

    w->busy = false;
    if (closing(q))
        return;
    if (q->retries)
        nf_metrics_counter_add(q->retries, 1);
    if (stopping(q)) {
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
    arm(w, w->backoff_ms);
}

bool nf_work_closing(struct nf_work *w)
{
    if (!closing(w->q))
        return false;
    w->busy = false;
    return true;
}

bool nf_work_failed(struct nf_work *w, const void *res, const char *err)
{
    if (nf_work_closing(w))
        return true;
    if (!res) {
        nf_work_retry(w, err);
        return true;
    }
    return false;
}

void nf_work_delay(struct nf_work *w, int delay_ms, nf_work_step step)
{
    w->busy = false;
    w->backoff_ms = 0;
    w->step = step;
    if (!stopping(w->q))
        arm(w, delay_ms);
}

void nf_work_cancel_delay(struct nf_work *w)
{
    evtimer_del(w->timer);
}

void nf_work_release_lane(struct nf_work *w)
{
    struct nf_work_lane *lane = w->lane;
    struct nf_work **pp, *prev = NULL;

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
        lane_unlink(w->q, lane);
        return;
    }
    if (!stopping(w->q))
        arm(lane->head, 0); /* from the loop, not from inside the caller's stack */
}

void nf_work_free(struct nf_work *w)
{
    struct nf_work_queue *q;

    if (!w)
        return;
    q = w->q;
    nf_work_release_lane(w);
    LIST_REMOVE(w, link);
    q->nworks--;
    set_gauge(q);
    event_free(w->timer);
    if (w->dtor)
        w->dtor(w);
    free(w);
}

void nf_work_free_all(struct nf_work_queue *q)
{
    static const bool yes = true;
    struct nf_work *w, *next;
    struct nf_work_lane *lane;
    const bool *was = q->stopping;

    q->stopping = &yes; /* nothing is kicked while the lanes unwind */
    for (w = LIST_FIRST(&q->works); w; w = next) {
        next = LIST_NEXT(w, link); /* freeing w unlinks only w */
        nf_work_free(w);
    }
    while ((lane = q->lanes)) { /* none should remain */
        q->lanes = lane->next;
        free(lane->key);
        free(lane);
    }
    q->stopping = was;
}

void nf_work_finish(struct nf_work *w)
{
    w->busy = false;
    if (!closing(w->q)) {
        if (w->done)
            w->done(w);
        else if (w->msg)
            nf_kafka_msg_done(w->msg); /* msg freed by nf_kafka */
    }
    w->msg = NULL;
    nf_work_free(w);
}

size_t nf_work_busy(const struct nf_work_queue *q)
{
    const struct nf_work *w;
    size_t n = 0;

    LIST_FOREACH(w, &q->works, link)
    {
        if (w->busy)
            n++;
    }
    return n;
}

/* ------------------------------------------------------------------ produce fan-out */

void nf_work_produce_begin(struct nf_work *w)
{
    w->pending = 1; /* held until produce_end, so early reports cannot complete it */
    w->produce_failed = false;
    w->after_produce = NULL;
}

static void produced(struct nf_work *w)
{
    if (w->pending > 0)
        return;
    if (closing(w->q)) {
        w->busy = false;
        return;
    }
    if (w->produce_failed)
        nf_work_retry(w, "kafka produce failed");
    else
        nf_work_goto(w, w->after_produce);
}

static void on_delivery(int err, const char *errstr, void *arg)
{
    struct nf_work *w = arg;

    if (err) {
        w->produce_failed = true;
        if (!closing(w->q))
            nf_log_kv(NF_LOG_WARN, "produce_failed", "delivery failed", "stage", w->what, "error",
                      errstr, NULL);
    }
    w->pending--;
    produced(w);
}

void nf_work_produce_raw(struct nf_work *w, const char *topic, const char *key, const char *payload,
                         size_t len)
{
    w->pending++;
    if (nf_kafka_produce(w->q->producer, topic, key, payload, len, on_delivery, w) == 0)
        return;
    w->pending--;
    w->produce_failed = true;
    nf_log_kv(NF_LOG_WARN, "produce_failed", "could not queue message", "topic", topic, "key", key,
              NULL);
}

void nf_work_produce(struct nf_work *w, const char *topic, const char *key, cJSON *ev)
{
    char *payload = nf_json_print(ev);

    cJSON_Delete(ev);
    nf_work_produce_raw(w, topic, key, payload, strlen(payload));
    free(payload);
}

void nf_work_produce_end(struct nf_work *w, nf_work_step then)
{
    w->after_produce = then;
    w->pending--;
    produced(w);
}
