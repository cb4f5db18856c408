/*
 * Work items: one usage batch, one job event, one sweep or one alert check.
 *
 *   new --> stage 1 --> ... each stage calls one backend; its callback either
 *           goto(next stage) | retry(this stage, 100 ms doubling to 5 s) | finish
 *   finish --> every Kafka message of the item marked done (offsets may be stored)
 *          --> freed
 *
 * Nothing is marked done before the last stage succeeded, so a crash or a failed backend
 * only ever leads to redelivery, which every stage tolerates (insert-if-absent, the same
 * event ids, monotonic cost updates).
 *
 * Shutdown: `busy` items (a stage waits on a backend) may finish; items in a backoff or
 * a linger are abandoned, their messages left un-done for the next consumer.
 */
#include "bill.h"

#include <stdlib.h>
#include <string.h>

#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct bill_work *w = arg;

    if (w->ctx->stopping)
        return; /* abandoned: redelivered after the restart */
    w->busy = true;
    w->step(w);
}

struct bill_work *bill_work_new(struct bill_ctx *ctx)
{
    struct bill_work *w = nf_xcalloc(1, sizeof(*w));

    w->ctx = ctx;
    w->timer = evtimer_new(ctx->base, on_timer, w);
    if (!w->timer)
        abort();
    w->next = ctx->works;
    if (ctx->works)
        ctx->works->prev = w;
    ctx->works = w;
    ctx->nworks++;
    nf_metrics_gauge_set(ctx->m.inflight, (double)ctx->nworks);
    return w;
}

void bill_work_free(struct bill_work *w)
{
    struct bill_ctx *ctx;
    size_t i;

    if (!w)
        return;
    ctx = w->ctx;
    if (w->prev)
        w->prev->next = w->next;
    else
        ctx->works = w->next;
    if (w->next)
        w->next->prev = w->prev;
    ctx->nworks--;
    nf_metrics_gauge_set(ctx->m.inflight, (double)ctx->nworks);
    if (ctx->open == w)
        ctx->open = NULL;
    if (w->sweep) {
        ctx->sweeping = false;
        if (w->sweep_full && !ctx->stopping && ctx->sweep)
            event_active(ctx->sweep, EV_TIMEOUT, 0); /* more to do: at once */
    }
    event_free(w->timer);
    cJSON_Delete(w->ev);
    for (i = 0; i < w->nitems; i++)
        cJSON_Delete(w->items[i].ev);
    free(w->items);
    for (i = 0; i < w->njobs; i++)
        free(w->jobs[i]);
    free(w->jobs);
    for (i = 0; i < w->nusers; i++)
        free(w->users[i]);
    free(w->users);
    for (i = 0; i < w->nouts; i++) {
        free(w->outs[i].key);
        free(w->outs[i].payload);
    }
    free(w->outs);
    for (i = 0; i < w->nalerts; i++)
        free(w->alerts[i].user_id);
    free(w->alerts);
    free(w);
}

void bill_work_finish(struct bill_work *w)
{
    struct bill_ctx *ctx = w->ctx;
    size_t i;

    w->busy = false;
    if (!ctx->closing) {
        if (w->msg)
            nf_kafka_msg_done(w->msg); /* msg freed by nf_kafka */
        for (i = 0; i < w->nitems; i++)
            nf_kafka_msg_done(w->items[i].msg);
    }
    w->msg = NULL;
    for (i = 0; i < w->nitems; i++)
        w->items[i].msg = NULL;
    bill_work_free(w);
}

void bill_work_goto(struct bill_work *w, bill_step_fn step)
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

void bill_work_retry(struct bill_work *w, const char *why)
{
    struct bill_ctx *ctx = w->ctx;
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
              "backoff_ms", ms, NULL);
    tv.tv_sec = w->backoff_ms / 1000;
    tv.tv_usec = (suseconds_t)(w->backoff_ms % 1000) * 1000;
    evtimer_add(w->timer, &tv);
}

size_t bill_work_busy(const struct bill_ctx *ctx)
{
    const struct bill_work *w;
    size_t n = 0;

    for (w = ctx->works; w; w = w->next)
        if (w->busy)
            n++;
    return n;
}

void bill_work_free_all(struct bill_ctx *ctx)
{
    struct bill_work *w, *next;

    for (w = ctx->works; w; w = next) {
        next = w->next; /* freeing w unlinks only w */
        bill_work_free(w);
    }
}

static void add_str(char ***arr, size_t *n, const char *s)
{
    if (!s || !*s)
        return;
    *arr = nf_xrealloc(*arr, (*n + 1) * sizeof(**arr));
    (*arr)[(*n)++] = nf_xstrdup(s);
}

void bill_work_add_job(struct bill_work *w, const char *job_id)
{
    add_str(&w->jobs, &w->njobs, job_id);
}

void bill_work_add_user(struct bill_work *w, const char *user_id)
{
    add_str(&w->users, &w->nusers, user_id);
}

void bill_work_add_raw(struct bill_work *w, const char *topic, const char *key, const char *payload,
                       size_t len)
{
    struct bill_out *o;

    w->outs = nf_xrealloc(w->outs, (w->nouts + 1) * sizeof(*w->outs));
    o = &w->outs[w->nouts++];
    o->topic = topic;
    o->key = nf_xstrdup(key ? key : "");
    o->payload = nf_xstrndup(payload, len);
    o->len = len;
}

void bill_work_add_out(struct bill_work *w, const char *topic, const char *key, cJSON *ev)
{
    char *text = nf_json_print(ev);

    bill_work_add_raw(w, topic, key, text, strlen(text));
    free(text);
    cJSON_Delete(ev);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void uniq(char **arr, size_t *n)
{
    size_t i, k = 0;

    if (*n < 2)
        return;
    qsort(arr, *n, sizeof(*arr), cmp_str);
    for (i = 1; i < *n; i++) {
        if (strcmp(arr[i], arr[k]) == 0) {
            free(arr[i]);
            continue;
        }
        arr[++k] = arr[i];
    }
    *n = k + 1;
}

void bill_work_dedupe(struct bill_work *w)
{
    uniq(w->jobs, &w->njobs);
    uniq(w->users, &w->nusers);
}
