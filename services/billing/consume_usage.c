/*
 * forge.usage: metering.
 *
 *   msg --validate (usage.c)--> bad:  produce the raw message to forge.usage.dlq, count,
 *                                     done after the delivery report
 *                           --> good: ONE statement: insert the event if its id is new
 *                                     and, only then, add its quantity to usage_hourly
 *                                     --> done after the commit
 *
 * A backend failure (Postgres down, DLQ produce failed) retries the same stage with
 * backoff (100 ms doubling to 5 s) and never marks the message done, so nothing is lost;
 * a redelivered event inserts nothing and so adds nothing to the rollup.
 */
#include "bill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

/* clang-format off */
const char bill_usage_sql[] =
    "WITH ins AS ("
    " INSERT INTO billing.usage_events (event_id, user_id, job_id, job_type, attempt,"
    "  worker_id, meter, quantity, window_start, window_end)"
    " VALUES ($1, $2, $3, $4, $5::int, $6, $7, $8::bigint, $9::timestamptz,"
    "  $10::timestamptz)"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING user_id, job_type, meter, quantity, window_start"
    "), roll AS ("
    " INSERT INTO billing.usage_hourly AS h (user_id, job_type, meter, hour, quantity)"
    " SELECT user_id, job_type, meter, date_trunc('hour', window_start, 'UTC'), quantity"
    " FROM ins"
    " ON CONFLICT (user_id, job_type, meter, hour)"
    " DO UPDATE SET quantity = h.quantity + excluded.quantity"
    " RETURNING 1"
    ")"
    " SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM roll) AS rolled";
/* clang-format on */

struct bill_work {
    struct bill_ctx *ctx;
    struct nf_kafka_msg *msg;      /* ours until nf_kafka_msg_done */
    struct bill_work *prev, *next; /* ctx->works */
    struct event *timer;           /* backoff */
    void (*step)(struct bill_work *w);
    const char *what;
    int backoff_ms;
    bool busy; /* waiting on a backend callback */
    cJSON *ev; /* parsed envelope; u points into it */
    struct bill_usage u;
};

static void work_free(struct bill_work *w)
{
    struct bill_ctx *ctx = w->ctx;

    if (w->prev)
        w->prev->next = w->next;
    else
        ctx->works = w->next;
    if (w->next)
        w->next->prev = w->prev;
    ctx->nworks--;
    nf_metrics_gauge_set(ctx->m.inflight, (double)ctx->nworks);
    event_free(w->timer);
    cJSON_Delete(w->ev);
    free(w);
}

static void work_finish(struct bill_work *w)
{
    w->busy = false;
    if (w->msg && !w->ctx->closing)
        nf_kafka_msg_done(w->msg);
    w->msg = NULL;
    work_free(w);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct bill_work *w = arg;

    if (w->ctx->stopping)
        return; /* abandoned: redelivered after the restart */
    w->busy = true;
    w->step(w);
}

static void work_retry(struct bill_work *w, const char *why)
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
              "key", w->msg ? w->msg->key : NULL, "backoff_ms", ms, NULL);
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
        work_free(w);
    }
}

void bill_usage_params(const struct bill_usage *u, const char *params[BILL_USAGE_NPARAMS],
                       struct bill_usage_bufs *b)
{
    snprintf(b->attempt, sizeof(b->attempt), "%lld", u->attempt);
    snprintf(b->quantity, sizeof(b->quantity), "%lld", u->quantity);
    bill_time_format(u->start_ms, b->start);
    bill_time_format(u->end_ms, b->end);
    params[0] = u->event_id;
    params[1] = u->user_id;
    params[2] = u->job_id;
    params[3] = u->job_type;
    params[4] = u->attempt > 0 ? b->attempt : NULL;
    params[5] = u->worker_id;
    params[6] = bill_meter_name(u->meter);
    params[7] = b->quantity;
    params[8] = b->start;
    params[9] = b->end;
}

static void on_record(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct bill_work *w = arg;
    struct bill_ctx *ctx = w->ctx;
    const char *inserted;
    char labels[64];

    if (ctx->closing) {
        w->busy = false;
        return;
    }
    if (!res) {
        work_retry(w, err);
        return;
    }
    inserted = nf_pg_val(res, 0, "inserted");
    if (inserted && strcmp(inserted, "1") == 0) {
        snprintf(labels, sizeof(labels), "meter=\"%s\"", bill_meter_name(w->u.meter));
        nf_metrics_counter_add(nf_metrics_counter(ctx->metrics, "nf_bill_usage_quantity_total",
                                                  "metered quantity recorded, base units", labels),
                               (uint64_t)w->u.quantity);
        nf_metrics_counter_add(ctx->m.recorded, 1);
    } else {
        nf_metrics_counter_add(ctx->m.duplicate, 1);
        nf_log_kv(NF_LOG_DEBUG, "usage_duplicate", "usage event already recorded", "event_id",
                  w->u.event_id, NULL);
    }
    work_finish(w);
}

static void st_record(struct bill_work *w)
{
    const char *params[BILL_USAGE_NPARAMS];
    struct bill_usage_bufs bufs;

    w->what = "record";
    bill_usage_params(&w->u, params, &bufs);
    if (nf_pg_query(w->ctx->pg, bill_usage_sql, BILL_USAGE_NPARAMS, params, on_record, w) < 0)
        work_retry(w, "could not queue the insert");
}

static void on_dlq(int err, const char *errstr, void *arg)
{
    struct bill_work *w = arg;

    if (w->ctx->closing) {
        w->busy = false;
        return;
    }
    if (err) {
        work_retry(w, errstr ? errstr : "dlq delivery failed");
        return;
    }
    nf_metrics_counter_add(w->ctx->m.invalid, 1);
    work_finish(w);
}

static void st_dlq(struct bill_work *w)
{
    w->what = "dlq";
    if (nf_kafka_produce(w->ctx->producer, BILL_TOPIC_DLQ, w->msg->key, w->msg->payload,
                         w->msg->len, on_dlq, w) < 0)
        work_retry(w, "could not queue the dlq message");
}

void bill_usage_handle(struct bill_ctx *ctx, struct nf_kafka_msg *msg)
{
    struct bill_work *w = nf_xcalloc(1, sizeof(*w));
    const char *why = "payload is not a JSON object";
    char part[16], off[24];

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
    nf_metrics_gauge_set(ctx->m.inflight, (double)ctx->nworks);

    w->ev = nf_json_parse(msg->payload, msg->len);
    if (w->ev && bill_usage_parse(w->ev, &w->u, &why) == 0) {
        w->step = st_record;
    } else {
        snprintf(part, sizeof(part), "%d", (int)msg->partition);
        snprintf(off, sizeof(off), "%lld", (long long)msg->offset);
        nf_log_kv(NF_LOG_WARN, "usage_invalid", "invalid usage event sent to the dlq", "reason",
                  why, "partition", part, "offset", off, "key", msg->key, NULL);
        w->step = st_dlq;
    }
    w->busy = true;
    w->step(w);
}
