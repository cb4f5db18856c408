/*
 * Kafka events the worker-manager emits: job events (assigned; failed from the reaper) on
 * forge.jobs.events and worker events (registered, lost, drained) on forge.workers.events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "wm.h"

#define SOURCE "nf-worker-manager"

/* State of a fire-and-forget event until its delivery report. */
struct delivery {
    struct wm_ctx *ctx;
    char type[48];
    char subject[NF_ID_MAX];
};

static void on_delivery(int err, const char *errstr, void *arg)
{
    struct delivery *d = arg;
    if (err != 0) {
        nf_log_kv(NF_LOG_ERROR, "event_delivery_failed", "event not delivered", "type", d->type,
                  "subject", d->subject, "error", errstr, NULL);
        nf_metrics_counter_add(d->ctx->m.events_failed, 1);
    }
    free(d);
}

int wm_event_send(struct wm_ctx *ctx, const char *topic, const char *type, const char *subject,
                  cJSON *data, nf_kafka_delivery_cb cb, void *arg)
{
    cJSON *ev = nf_event_new(type, SOURCE, subject, NULL, data);
    char *payload = nf_json_print(ev);
    int rc = nf_kafka_produce(ctx->producer, topic, subject, payload, strlen(payload), cb, arg);
    if (rc != 0)
        nf_log_kv(NF_LOG_ERROR, "event_produce_failed", "event not queued", "type", type, "subject",
                  subject, NULL);
    free(payload);
    cJSON_Delete(ev);
    return rc != 0 ? -1 : 0;
}

static void send_logged(struct wm_ctx *ctx, const char *topic, const char *type,
                        const char *subject, cJSON *data)
{
    struct delivery *d = nf_xcalloc(1, sizeof(*d));
    d->ctx = ctx;
    snprintf(d->type, sizeof(d->type), "%s", type);
    snprintf(d->subject, sizeof(d->subject), "%s", subject);
    if (wm_event_send(ctx, topic, type, subject, data, on_delivery, d) < 0) {
        nf_metrics_counter_add(ctx->m.events_failed, 1);
        free(d);
    }
}

void wm_event_worker(struct wm_ctx *ctx, const char *type, const char *worker_id, cJSON *data)
{
    send_logged(ctx, NF_TOPIC_WORKERS_EVENTS, type, worker_id, data);
}

void wm_worker_drained(struct wm_ctx *ctx, const char *worker_id, const char *reason)
{
    char now[32];
    nf_event_time(nf_now_ms(), now);
    cJSON *data = nf_json_obj();
    nf_json_add_str(data, "worker_id", worker_id);
    nf_json_add_str(data, "drained_at", now);
    nf_json_add_str(data, "reason", reason);
    nf_metrics_counter_add(ctx->m.workers_drained, 1);
    nf_log_kv(NF_LOG_INFO, "worker_drained", "worker drained: no jobs left, none given",
              "worker_id", worker_id, NULL);
    wm_event_worker(ctx, "forge.worker.drained", worker_id, data);
}
