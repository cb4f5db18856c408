/*
 * Publishing for the agent: Kafka, or the API when the agent has no Kafka. Every message
 * is journalled in the outbox (outbox.c) first, so one the agent could not deliver before
 * it died is published by the next agent on the same work directory (wk_publish_replay).
 *
 *   wk_publish --> outbox append --produce--> delivered --> outbox done, wk_job_delivered
 *                                     |                     (slot freed when it was the
 *                                     |                      job's last message)
 *                                     +--> not queued / delivery failed --> the waiting
 *                                          line (0.5 s doubling to 10 s) --> produce again,
 *                                          oldest first; while anything waits, new messages
 *                                          queue behind it, so the order holds
 *
 *   without Kafka (NF_KAFKA_BROKERS empty): POST /api/workers/events (job events) or
 *   /api/workers/usage {worker_id, lease_id, event}, one request at a time, in order
 *                  --> 202 delivered
 *                  --> 409 the lease is gone: dropped (the job moved on without us)
 *                  --> other 4xx: dropped, logged (a bug: retrying cannot help)
 *                  --> no answer / 5xx / 429: retried like a Kafka failure
 *
 * Nothing a job published is dropped while the agent runs (job events, logs, progress and
 * usage alike): it is retried until Kafka (or the API) takes it. At teardown what is still
 * undelivered stays in the outbox (publish_deferred in the log). Below job_report.c, over
 * job_set.c (hold, delivered, lease): it never calls up.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "outbox.h"
#include "wk.h"

#define RETRY_FIRST_MS 500
#define RETRY_MAX_MS 10000

struct wk_out {
    struct wk_ctx *ctx;
    struct wk_job *job; /* held (wk_job_hold) until delivered; NULL = fire and forget */
    const char *topic;  /* these three point into text */
    const char *key;
    const char *payload;
    uint64_t seq;        /* in the outbox (0: not journalled) */
    bool retried;        /* its first failure is logged, not every retry */
    struct wk_out *next; /* in ctx->outs while waiting */
    char text[];         /* topic, key and payload, one allocation with the message */
};

static void produce(struct wk_out *o);
static void on_retry(evutil_socket_t fd, short what, void *arg);

/* Frees a message; `delivered`: its outbox record is done (else it stays for the next
 * agent). The job's hold goes either way. */
static void finish(struct wk_out *o, bool delivered)
{
    struct wk_job *job = o->job;
    if (o->seq != 0 && o->ctx->outbox != NULL && delivered)
        wk_outbox_done(o->ctx->outbox, o->seq);
    free(o);
    if (job != NULL)
        wk_job_delivered(job);
}

static void done(struct wk_out *o)
{
    finish(o, true);
}

static void arm_retry(struct wk_ctx *ctx)
{
    if (ctx->outs_timer == NULL) {
        ctx->outs_timer = evtimer_new(ctx->base, on_retry, ctx);
        if (ctx->outs_timer == NULL)
            abort();
    }
    if (evtimer_pending(ctx->outs_timer, NULL))
        return;
    int ms = ctx->outs_delay_ms > 0 ? ctx->outs_delay_ms : RETRY_FIRST_MS;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ctx->outs_timer, &tv);
    ctx->outs_delay_ms = ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : ms * 2;
}

/* Puts o at the end of the waiting line (in publish order) and arms its retry. */
static void enqueue(struct wk_out *o)
{
    struct wk_ctx *ctx = o->ctx;
    o->next = NULL;
    if (ctx->outs_tail != NULL)
        ctx->outs_tail->next = o;
    else
        ctx->outs = o;
    ctx->outs_tail = o;
    arm_retry(ctx);
}

/* The retry timer: the waiting messages go out again, oldest first. */
static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct wk_ctx *ctx = arg;
    struct wk_out *o = ctx->outs;
    ctx->outs = ctx->outs_tail = NULL;
    while (o != NULL) {
        struct wk_out *next = o->next;
        produce(o);
        o = next;
        if (ctx->outs != NULL) { /* that one waits again: the rest stay behind it */
            while (o != NULL) {
                next = o->next;
                enqueue(o);
                o = next;
            }
        }
    }
}

static void retry_later(struct wk_out *o, const char *why)
{
    struct wk_ctx *ctx = o->ctx;
    if (ctx->closing) {
        bool kept = o->seq != 0;
        nf_log_kv(kept ? NF_LOG_WARN : NF_LOG_ERROR, kept ? "publish_deferred" : "publish_lost",
                  kept ? "not delivered: kept in the outbox for the next agent"
                       : "message given up",
                  "topic", o->topic, "key", o->key, "error", why, NULL);
        finish(o, false);
        return;
    }
    if (!o->retried)
        nf_log_kv(NF_LOG_WARN, "publish_retry", "message not delivered, retrying", "topic",
                  o->topic, "key", o->key, "error", why, NULL);
    o->retried = true;
    enqueue(o);
}

static void on_delivery(int err, const char *errstr, void *arg)
{
    struct wk_out *o = arg;
    if (err != 0) {
        retry_later(o, errstr ? errstr : "delivery failed");
        return;
    }
    o->ctx->outs_delay_ms = RETRY_FIRST_MS;
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

static struct wk_out *out_new(struct wk_ctx *ctx, struct wk_job *job, const char *topic,
                              const char *key, const char *payload)
{
    size_t nt = strlen(topic) + 1, nk = strlen(key) + 1, np = strlen(payload) + 1;
    struct wk_out *o = nf_xcalloc(1, sizeof(*o) + nt + nk + np);
    o->ctx = ctx;
    o->job = job;
    o->topic = memcpy(o->text, topic, nt);
    o->key = memcpy(o->text + nt, key, nk);
    o->payload = memcpy(o->text + nt + nk, payload, np);
    if (job != NULL)
        wk_job_hold(job);
    return o;
}

/* Sends o now, or behind the messages already waiting (the order they were published). */
static void send_in_order(struct wk_out *o)
{
    if (o->ctx->outs != NULL)
        enqueue(o);
    else
        produce(o);
}

void wk_publish(struct wk_ctx *ctx, struct wk_job *job, const char *topic, const char *key,
                const char *payload)
{
    struct wk_out *o = out_new(ctx, job, topic, key, payload);
    if (ctx->outbox != NULL) {
        o->seq = wk_outbox_append(ctx->outbox, topic, key, payload);
        if (o->seq == 0)
            nf_log_kv(NF_LOG_ERROR, "outbox_write_failed",
                      "message not journalled: lost if this agent dies before it is delivered",
                      "topic", topic, "key", key, "error", strerror(errno), NULL);
    }
    send_in_order(o);
}

static void replay_one(uint64_t seq, const char *topic, const char *key, const char *payload,
                       void *arg)
{
    struct wk_out *o = out_new(arg, NULL, topic, key, payload);
    o->seq = seq;
    send_in_order(o);
}

void wk_publish_replay(struct wk_ctx *ctx)
{
    if (ctx->outbox == NULL || wk_outbox_count(ctx->outbox) == 0)
        return;
    char n[24];
    snprintf(n, sizeof(n), "%zu", wk_outbox_count(ctx->outbox));
    nf_log_kv(NF_LOG_INFO, "outbox_replay", "publishing what an earlier agent left undelivered",
              "messages", n, NULL);
    wk_outbox_pending(ctx->outbox, replay_one, ctx);
}

void wk_publish_free(struct wk_ctx *ctx)
{
    struct wk_out *o = ctx->outs, *next;

    ctx->outs = ctx->outs_tail = NULL;
    for (; o != NULL; o = next) {
        next = o->next;
        if (o->seq != 0)
            nf_log_kv(NF_LOG_WARN, "publish_deferred",
                      "not delivered: kept in the outbox for the next agent", "topic", o->topic,
                      "key", o->key, NULL);
        else
            nf_log_kv(NF_LOG_ERROR, "publish_lost", "message given up", "topic", o->topic, "key",
                      o->key, NULL);
        finish(o, false);
    }
    wk_event_free(&ctx->outs_timer);
    wk_outbox_close(ctx->outbox);
    ctx->outbox = NULL;
}
