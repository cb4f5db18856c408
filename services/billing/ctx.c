/*
 * The bottom of nf-billing: the context's metrics and the billing parts of a work item
 * (the follow-up lists that effects.c turns into messages, the dtor that frees them, the
 * done hook of a batch). Everything generic about work items (stages, backoff, produce
 * fan-out, drain) is nf_work's. It calls nothing above it.
 */
#include "bill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_mem.h"
#include "nf_metrics.h"

#define USAGE_EVENTS "nf_bill_usage_events_total"

void bill_metrics_register(struct bill_ctx *ctx)
{
    struct nf_metrics *m = ctx->metrics;

    ctx->m.recorded =
        nf_metrics_counter(m, USAGE_EVENTS, "usage events recorded", "result=\"recorded\"");
    ctx->m.duplicate =
        nf_metrics_counter(m, USAGE_EVENTS, "usage events recorded", "result=\"duplicate\"");
    ctx->m.invalid =
        nf_metrics_counter(m, USAGE_EVENTS, "usage events recorded", "result=\"invalid\"");
    ctx->m.refused =
        nf_metrics_counter(m, USAGE_EVENTS, "usage events recorded", "result=\"refused\"");
    ctx->m.pending =
        nf_metrics_counter(m, USAGE_EVENTS, "usage events recorded", "result=\"pending\"");
    ctx->m.waived =
        nf_metrics_counter(m, USAGE_EVENTS, "usage events recorded", "result=\"waived\"");
    ctx->m.attempts_waived =
        nf_metrics_counter(m, "nf_bill_attempts_waived_total",
                           "attempts closed free of charge (worker_lost, infra, preempted)", NULL);
    ctx->m.leases = nf_metrics_counter(m, "nf_bill_leases_total",
                                       "job leases recorded (assigned events)", NULL);
    ctx->m.ends = nf_metrics_counter(m, "nf_bill_attempt_ends_total",
                                     "attempt ends recorded (succeeded, failed, cancelled)", NULL);
    ctx->m.closed = nf_metrics_counter(m, "nf_bill_attempts_closed_total",
                                       "attempts closed: no usage is added to them any more", NULL);
    ctx->m.alerts =
        nf_metrics_counter(m, "nf_bill_budget_alerts_total", "budget alerts sent", NULL);
    ctx->m.costs =
        nf_metrics_counter(m, "nf_bill_job_costs_total", "job cost updates produced", NULL);
    ctx->m.batches = nf_metrics_counter(m, "nf_bill_batches_total",
                                        "usage batches committed (one statement each)", NULL);
    ctx->m.step_retries = nf_metrics_counter(m, "nf_bill_step_retries_total",
                                             "backend failures retried with backoff", NULL);
    ctx->m.inflight =
        nf_metrics_gauge(m, "nf_bill_inflight_messages", "Kafka messages being handled", NULL);
}

void bill_count_waived(struct bill_ctx *ctx, enum bill_meter meter, long long q)
{
    char labels[64];

    nf_metrics_counter_add(ctx->m.waived, 1);
    snprintf(labels, sizeof(labels), "meter=\"%s\"", bill_meter_name(meter));
    nf_metrics_counter_add(nf_metrics_counter(ctx->metrics, "nf_bill_usage_waived_quantity_total",
                                              "metered quantity of waived attempts recorded after "
                                              "their close, base units",
                                              labels),
                           (uint64_t)q);
}

/* ------------------------------------------------------------------ work items */

static void free_strs(char **arr, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(arr[i]);
    free(arr);
}

/* nf_work_free calls this last: the billing fields, and the context's view of the item. */
static void work_dtor(struct nf_work *w)
{
    struct bill_work *bw = bill_work_of(w);
    struct bill_ctx *ctx = bill_ctx_of(w);
    size_t i;

    if (ctx->open == bw)
        ctx->open = NULL;
    if (bw->sweep) {
        ctx->sweeping = false;
        if (bw->sweep_full && !*ctx->stopping && ctx->sweep)
            event_active(ctx->sweep, EV_TIMEOUT, 0); /* more to do: at once */
    }
    cJSON_Delete(bw->ev);
    for (i = 0; i < bw->nitems; i++)
        cJSON_Delete(bw->items[i].ev);
    free(bw->items);
    free_strs(bw->jobs, bw->njobs);
    free_strs(bw->users, bw->nusers);
    for (i = 0; i < bw->nouts; i++) {
        free(bw->outs[i].key);
        free(bw->outs[i].payload);
    }
    free(bw->outs);
    for (i = 0; i < bw->nalerts; i++)
        free(bw->alerts[i].user_id);
    free(bw->alerts);
}

/* nf_work_finish (not closing): every message of a batch is done; nf_kafka frees them. */
static void batch_done(struct nf_work *w)
{
    struct bill_work *bw = bill_work_of(w);
    size_t i;

    for (i = 0; i < bw->nitems; i++) {
        nf_kafka_msg_done(bw->items[i].msg);
        bw->items[i].msg = NULL;
    }
}

struct bill_work *bill_work_new(struct bill_ctx *ctx, struct nf_kafka_msg *msg)
{
    struct bill_work *bw = bill_work_of(nf_work_new(&ctx->work, msg, sizeof(struct bill_work)));

    bw->work.dtor = work_dtor;
    if (!msg)
        bw->work.done = batch_done; /* a batch's messages; nothing for a sweep or a check */
    return bw;
}

static void add_str(char ***arr, size_t *n, const char *s)
{
    if (!s || !*s)
        return;
    *arr = nf_xrealloc(*arr, (*n + 1) * sizeof(**arr));
    (*arr)[(*n)++] = nf_xstrdup(s);
}

void bill_work_add_job(struct bill_work *bw, const char *job_id)
{
    add_str(&bw->jobs, &bw->njobs, job_id);
}

void bill_work_add_user(struct bill_work *bw, const char *user_id)
{
    add_str(&bw->users, &bw->nusers, user_id);
}

void bill_work_add_raw(struct bill_work *bw, const char *topic, const char *key,
                       const char *payload, size_t len)
{
    struct bill_out *o;

    bw->outs = nf_xrealloc(bw->outs, (bw->nouts + 1) * sizeof(*bw->outs));
    o = &bw->outs[bw->nouts++];
    o->topic = topic;
    o->key = nf_xstrdup(key ? key : "");
    o->payload = nf_xstrndup(payload, len);
    o->len = len;
}

void bill_work_add_out(struct bill_work *bw, const char *topic, const char *key, cJSON *ev)
{
    char *text = nf_json_print(ev);

    bill_work_add_raw(bw, topic, key, text, strlen(text));
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

void bill_work_dedupe(struct bill_work *bw)
{
    uniq(bw->jobs, &bw->njobs);
    uniq(bw->users, &bw->nusers);
}
