/*
 * Publishing for the agent: Kafka, or the API when the agent has no Kafka.
 *
 *   wk_publish --produce--> delivered --> wk_job_delivered (slot freed when it was the
 *                  |                        job's last message and the job finished)
 *                  +--> not queued / delivery failed --> timer (0.5 s doubling to 10 s)
 *                                                        --> produce again
 *
 *   without Kafka (NF_KAFKA_BROKERS empty): POST /api/workers/events (job events) or
 *   /api/workers/usage {worker_id, lease_id, event}, one request at a time, in order
 *                  --> 202 delivered
 *                  --> 409 the lease is gone: dropped (the job moved on without us)
 *                  --> other 4xx: dropped, logged (a bug: retrying cannot help)
 *                  --> no answer / 5xx / 429: retried like a Kafka failure
 *
 * Nothing a job accepted is dropped while the agent runs: a terminal event or a usage
 * record is retried until Kafka (or the API) takes it. Only teardown (after the drain)
 * gives up, and says so in the log. Below job_report.c, over job_set.c (hold, delivered,
 * lease): it never calls up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "wk.h"

#define RETRY_FIRST_MS 500
#define RETRY_MAX_MS 10000

struct wk_out {
    struct wk_ctx *ctx;
    struct wk_job *job; /* held (wk_job_hold) until delivered; NULL = fire and forget */
    const char *topic;  /* these three point into text */
    const char *key;
    const char *payload;
    int delay_ms;
    struct event *timer;
    bool waiting; /* linked in ctx->outs, timer armed */
    struct wk_out *prev, *next;
    char text[]; /* topic, key and payload, one allocation with the message */
};

static void produce(struct wk_out *o);

/* Takes o (waiting) off ctx->outs, the messages waiting for their retry timer. */
static void unlink_out(struct wk_out *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        o->ctx->outs = o->next;
    if (o->next)
        o->next->prev = o->prev;
    o->waiting = false;
    o->prev = o->next = NULL;
}

static void out_free(struct wk_out *o)
{
    if (o->waiting)
        unlink_out(o);
    if (o->timer)
        event_free(o->timer);
    free(o);
}

static void done(struct wk_out *o)
{
    struct wk_job *job = o->job;
    out_free(o);
    if (job != NULL)
        wk_job_delivered(job);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct wk_out *o = arg;
    unlink_out(o);
    produce(o);
}

static void retry_later(struct wk_out *o, const char *why)
{
    struct wk_ctx *ctx = o->ctx;
    if (ctx->closing || o->job == NULL) {
        nf_log_kv(NF_LOG_ERROR, "publish_lost", "message given up", "topic", o->topic, "key",
                  o->key, "error", why, NULL);
        done(o);
        return;
    }
    nf_log_kv(NF_LOG_WARN, "publish_retry", "message not delivered, retrying", "topic", o->topic,
              "key", o->key, "error", why, NULL);
    if (o->timer == NULL) {
        o->timer = evtimer_new(ctx->base, on_retry, o);
        if (o->timer == NULL)
            abort();
    }
    struct timeval tv = {o->delay_ms / 1000, (suseconds_t)(o->delay_ms % 1000) * 1000};
    evtimer_add(o->timer, &tv);
    o->delay_ms = o->delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : o->delay_ms * 2;
    o->waiting = true;
    o->prev = NULL;
    o->next = ctx->outs;
    if (ctx->outs)
        ctx->outs->prev = o;
    ctx->outs = o;
}

static void on_delivery(int err, const char *errstr, void *arg)
{
    struct wk_out *o = arg;
    if (err != 0) {
        retry_later(o, errstr ? errstr : "delivery failed");
        return;
    }
    done(o);
}

static void on_reported(const struct nf_http_resp *resp, void *arg)
{
    struct wk_out *o = arg;
    struct wk_ctx *ctx = o->ctx;
    char code[8];
    snprintf(code, sizeof(code), "%d", resp->status);
    if (resp->status == 202 || resp->status == 200) {
        done(o);
        return;
    }
    if (resp->status == 409) {
        nf_log_kv(NF_LOG_WARN, "publish_refused", "report refused: the lease is gone", "topic",
                  o->topic, "key", o->key, NULL);
        done(o);
        return;
    }
    if (resp->status >= 400 && resp->status < 500 && resp->status != 429 && !ctx->closing) {
        nf_log_kv(NF_LOG_ERROR, "publish_rejected", "report rejected by the API", "topic", o->topic,
                  "status", code, "body", resp->body, NULL);
        done(o);
        return;
    }
    retry_later(o, resp->error ? resp->error : code);
}

/* The HTTP fallback: one report through the API. -1 when it cannot be sent now. */
static int report(struct wk_out *o)
{
    struct wk_ctx *ctx = o->ctx;
    bool usage = strcmp(o->topic, NF_TOPIC_USAGE) == 0;
    cJSON *ev = nf_json_parse(o->payload, strlen(o->payload));
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    const char *lease = wk_job_lease(ctx, nf_json_str(data, "job_id"));
    if (ev == NULL || lease == NULL || ctx->worker_token == NULL || ctx->report_http == NULL) {
        cJSON_Delete(ev);
        return -1;
    }
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "worker_id", ctx->worker_id);
    nf_json_add_str(body, "lease_id", lease);
    cJSON_AddItemToObject(body, "event", ev); /* owned by body */
    return wk_post(ctx, ctx->report_http, usage ? "usage" : "events", ctx->worker_token, body, 0,
                   on_reported, o);
}

static void produce(struct wk_out *o)
{
    struct wk_ctx *ctx = o->ctx;
    if (ctx->producer == NULL) {
        if (ctx->cfg->brokers == NULL || ctx->cfg->brokers[0] != '\0') {
            retry_later(o, "no producer");
        } else if (wk_job_lease(ctx, o->key) == NULL && o->job == NULL) {
            done(o); /* a fire-and-forget event of a job already gone: nothing to attach */
        } else if (report(o) < 0) {
            retry_later(o, "report not sent");
        }
        return;
    }
    int rc = nf_kafka_produce(ctx->producer, o->topic, o->key, o->payload, strlen(o->payload),
                              on_delivery, o);
    if (rc != 0)
        retry_later(o, "not queued");
}

void wk_publish(struct wk_ctx *ctx, struct wk_job *job, const char *topic, const char *key,
                const char *payload)
{
    size_t nt = strlen(topic) + 1, nk = strlen(key) + 1, np = strlen(payload) + 1;
    struct wk_out *o = nf_xcalloc(1, sizeof(*o) + nt + nk + np);
    o->ctx = ctx;
    o->job = job;
    o->topic = memcpy(o->text, topic, nt);
    o->key = memcpy(o->text + nt, key, nk);
    o->payload = memcpy(o->text + nt + nk, payload, np);
    o->delay_ms = RETRY_FIRST_MS;
    if (job != NULL)
        wk_job_hold(job);
    produce(o);
}

void wk_publish_free(struct wk_ctx *ctx)
{
    struct wk_out *o = ctx->outs, *next;

    ctx->outs = NULL;
    for (; o != NULL; o = next) {
        next = o->next;
        o->waiting = false; /* the whole list is gone */
        done(o);
    }
}
