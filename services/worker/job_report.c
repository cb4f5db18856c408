/*
 * What a job reports: events and usage, from the handler's stdout to the terminal event.
 *
 *   stdout line --> proto.c --> progress  --> forge.job.progress (at most one per
 *                                             progress_ms; the last value is kept)
 *                               log       --> forge.job.log (WK_MAX_LOG_EVENTS, cut)
 *                               usage     --> token counters
 *                               artifact  --> announced list (checked at the end);
 *                                             a checkpoint: job_ckpt.c's queue
 *                               result    --> kept, the last one wins
 *                               metric    --> forge.job.metric {attempt, metric}
 *                                             (WK_MAX_METRIC_EVENTS per attempt)
 *   every usage_window_s --> forge.usage gpu_ms of the closed window
 *   finish --> last progress, final usage (open window, tokens) --> terminal event:
 *       succeeded (result + the records of the uploaded artifacts, job_upload.c) |
 *       failed (class, code) | cancelled | nothing (lease lost: another attempt owns the
 *       job) --> the job directory is removed (or kept for a deploy endpoint)
 *
 * Usage and terminal events are reliable (held against the job until delivered);
 * progress, logs and metrics are fire and forget (journalled in the outbox all the same). This file
 * sits below job.c and job_child.c, which call it, and above publish.c and job_set.c: it never
 * calls back up.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "job.h"
#include "nf_event.h"
#include "nf_log.h"

#define MAX_ARTIFACTS 1000

cJSON *wk_report_event_data(const struct wk_job *job, const char *status)
{
    cJSON *data = nf_json_obj();
    nf_json_add_str(data, "job_id", job->job_id);
    nf_json_add_str(data, "user_id", job->user_id);
    nf_json_add_int(data, "attempt", job->attempt);
    nf_json_add_str(data, "status", status);
    return data;
}

void wk_report_event(struct wk_job *job, const char *type, cJSON *data, bool reliable)
{
    cJSON *ev = nf_event_new(type, job->ctx->source, job->job_id, NULL, data);
    char *payload = nf_json_print(ev);

    wk_publish(job->ctx, reliable ? job : NULL, NF_TOPIC_JOBS_EVENTS, job->job_id, payload);
    free(payload);
    cJSON_Delete(ev);
}

/* ---- usage ------------------------------------------------------------------------------ */

static void emit_usage(struct wk_job *job, const char *meter, long long quantity, long long window,
                       uint64_t start_ms, uint64_t end_ms)
{
    struct wk_ctx *ctx = job->ctx;
    struct nf_usage u = {.user_id = job->user_id,
                         .job_id = job->job_id,
                         .job_type = job->job_type,
                         .attempt = job->attempt,
                         .worker_id = ctx->worker_id,
                         .meter = meter,
                         .quantity = quantity,
                         .window = window,
                         .start_ms = start_ms,
                         .end_ms = end_ms};
    char *payload = wk_usage_event(&u, ctx->source);
    wk_publish(ctx, job, NF_TOPIC_USAGE, job->user_id, payload);
    free(payload);
    job->usage_events++;
}

static void on_window(evutil_socket_t fd, short what, void *arg)
{
    struct wk_job *job = arg;
    uint64_t w = (uint64_t)job->ctx->cfg->usage_window_s * 1000;
    if (job->exited || job->finished)
        return; /* the final window is emitted by wk_report_finish() */
    uint64_t start = job->started_ms + (uint64_t)job->window * w;
    emit_usage(job, "gpu_ms", (long long)wk_gpu_ms(w, job->gpu_count), job->window, start,
               start + w);
    job->window++;
}

static void emit_final_usage(struct wk_job *job)
{
    uint64_t w = (uint64_t)job->ctx->cfg->usage_window_s * 1000;
    uint64_t end = job->exited_ms ? job->exited_ms : nf_now_ms();
    uint64_t start = job->started_ms + (uint64_t)job->window * w;
    if (job->started_ms != 0 && job->gpu_count > 0 && end > start)
        emit_usage(job, "gpu_ms", (long long)wk_gpu_ms(end - start, job->gpu_count), job->window,
                   start, end);
    if (job->input_tokens > 0)
        emit_usage(job, "input_tokens", job->input_tokens, 0, job->started_ms, end);
    if (job->output_tokens > 0)
        emit_usage(job, "output_tokens", job->output_tokens, 0, job->started_ms, end);
}

/* A deploy attempt that succeeded leaves its endpoint serving: its GPU time from the
 * handler's exit on is metered by serving.c (the attempt's own windows end there). */
static void serve_deployment(struct wk_job *job)
{
    const char *dep = nf_json_str(job->result, "deployment_id");

    if (strcmp(job->job_type, "deploy") != 0 || job->stop != WK_STOP_NONE || job->failed ||
        !WIFEXITED(job->wstatus) || WEXITSTATUS(job->wstatus) != 0 || job->root_dir[0] == '\0')
        return;
    if (!wk_deployment_id_valid(dep)) {
        nf_log_kv(NF_LOG_WARN, "deployment_meter_off",
                  "the deploy result has no deployment_id: its GPU time is not metered", "job_id",
                  job->job_id, NULL);
        return;
    }
    wk_serving_start(job->ctx, job->job_id, job->user_id, dep, job->gpu_count,
                     job->exited_ms ? job->exited_ms : nf_now_ms(), job->root_dir);
}

/* ---- progress and logs ------------------------------------------------------------------- */

static void send_progress(struct wk_job *job)
{
    cJSON *data = wk_report_event_data(job, "running");
    cJSON_AddNumberToObject(data, "progress", job->progress);
    wk_report_event(job, "forge.job.progress", data, false);
    job->progress_dirty = false;
    job->progress_sent_ms = nf_now_ms();
}

static void on_progress_timer(evutil_socket_t fd, short what, void *arg)
{
    struct wk_job *job = arg;
    if (job->progress_dirty && !job->finished)
        send_progress(job);
}

static void got_progress(struct wk_job *job, double progress)
{
    int interval = job->ctx->cfg->progress_ms;
    uint64_t now = nf_now_ms();
    job->progress = progress;
    job->progress_dirty = true;
    if (now >= job->progress_sent_ms + (uint64_t)interval) {
        send_progress(job);
        return;
    }
    if (!evtimer_pending(job->progress_ev, NULL)) {
        uint64_t wait = job->progress_sent_ms + (uint64_t)interval - now;
        struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
        evtimer_add(job->progress_ev, &tv);
    }
}

static void got_log(struct wk_job *job, const char *message)
{
    if (job->logs >= WK_MAX_LOG_EVENTS) {
        job->logs_dropped++;
        return;
    }
    job->logs++;
    cJSON *data = wk_report_event_data(job, "running");
    if (strlen(message) > WK_LOG_MSG_MAX) {
        char *cut = nf_xcalloc(1, WK_LOG_MSG_MAX + 1);
        memcpy(cut, message, WK_LOG_MSG_MAX);
        nf_json_add_str(data, "message", cut);
        free(cut);
    } else {
        nf_json_add_str(data, "message", message);
    }
    wk_report_event(job, "forge.job.log", data, false);
}

/* A checked metric (proto.c) as forge.job.metric: the scheduler keeps it per attempt and
 * serves it as GET /api/jobs/{id}/metrics (and its SSE). */
static void got_metric(struct wk_job *job, const cJSON *metric)
{
    if (job->metrics >= WK_MAX_METRIC_EVENTS) {
        job->metrics_dropped++;
        return;
    }
    job->metrics++;
    cJSON *data = wk_report_event_data(job, "running");
    cJSON *copy = cJSON_Duplicate(metric, true);
    if (copy == NULL || !cJSON_AddItemToObject(data, "metric", copy))
        abort();
    wk_report_event(job, "forge.job.metric", data, false);
}

void wk_report_init(struct wk_job *job)
{
    struct event_base *base = job->ctx->base;
    job->window_ev = event_new(base, -1, EV_PERSIST, on_window, job);
    job->progress_ev = evtimer_new(base, on_progress_timer, job);
    if (!job->window_ev || !job->progress_ev)
        abort();
}

/* ---- stdout protocol ----------------------------------------------------------------------- */

static long long sat_add(long long a, long long b)
{
    return a > LLONG_MAX - b ? LLONG_MAX : a + b;
}

void wk_report_stdout_line(struct wk_job *job, const char *line, size_t len)
{
    struct wk_line l;
    switch (wk_proto_parse(line, len, &l)) {
    case WK_LINE_EMPTY:
        break;
    case WK_LINE_MALFORMED:
        if (job->malformed++ < 5)
            nf_log_kv(NF_LOG_DEBUG, "handler_line_malformed", "handler line ignored", "job_id",
                      job->job_id, NULL);
        break;
    case WK_LINE_PROGRESS:
        got_progress(job, l.progress);
        break;
    case WK_LINE_LOG:
        got_log(job, l.message);
        break;
    case WK_LINE_USAGE:
        job->input_tokens = sat_add(job->input_tokens, l.input_tokens);
        job->output_tokens = sat_add(job->output_tokens, l.output_tokens);
        break;
    case WK_LINE_ARTIFACT: {
        if (strcmp(l.art_kind, "checkpoint") == 0) {
            /* uploaded and recorded during the run (job_ckpt.c), not at the end */
            if (job->ck_queue == NULL)
                job->ck_queue = cJSON_CreateArray();
            if (cJSON_GetArraySize(job->ck_queue) >= MAX_ARTIFACTS) {
                job->malformed++;
                break;
            }
            cJSON *c = nf_json_obj();
            nf_json_add_str(c, "path", l.path);
            nf_json_add_str(c, "kind", l.art_kind);
            /* the handler's epoch and step of it, when given: they go into the event */
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(l.doc, "artifact");
            long long epoch = nf_json_int(a, "epoch", -1), step = nf_json_int(a, "step", -1);
            if (epoch >= 0)
                nf_json_add_int(c, "epoch", epoch);
            if (step >= 0)
                nf_json_add_int(c, "step", step);
            cJSON_AddItemToArray(job->ck_queue, c);
            break;
        }
        if (cJSON_GetArraySize(job->artifacts) >= MAX_ARTIFACTS) {
            job->malformed++;
            break;
        }
        cJSON *a = nf_json_obj();
        nf_json_add_str(a, "path", l.path);
        nf_json_add_str(a, "kind", l.art_kind);
        cJSON_AddItemToArray(job->artifacts, a);
        break;
    }
    case WK_LINE_METRIC:
        got_metric(job, l.metric);
        break;
    case WK_LINE_RESULT:
        cJSON_Delete(job->result);
        job->result = cJSON_DetachItemViaPointer(l.doc, l.result);
        break;
    }
    wk_line_clear(&l);
}

/* ---- outcome -------------------------------------------------------------------------------- */

/*
 * The data of a terminal event (succeeded, failed, cancelled): also usage_events, how many
 * forge.usage events this attempt published. Billing closes the attempt once it holds that
 * many, and only then calls the job's cost final (internals.md, "Final costs").
 */
static cJSON *terminal_data(const struct wk_job *job, const char *status)
{
    cJSON *data = wk_report_event_data(job, status);
    nf_json_add_int(data, "usage_events", job->usage_events);
    return data;
}

static void report_failed(struct wk_job *job, const char *klass, const char *code,
                          const char *message)
{
    cJSON *data = terminal_data(job, "failed");
    cJSON *error = nf_json_obj();
    nf_json_add_str(error, "code", code);
    nf_json_add_str(error, "message", message);
    nf_json_add_str(error, "class", klass);
    cJSON_AddItemToObject(data, "error", error);
    nf_log_kv(NF_LOG_WARN, "job_failed", message, "job_id", job->job_id, "class", klass, "code",
              code, NULL);
    wk_report_event(job, "forge.job.failed", data, true);
}

static void report_succeeded(struct wk_job *job)
{
    cJSON *data = terminal_data(job, "succeeded");
    cJSON_AddItemToObject(data, "result", job->result ? job->result : cJSON_CreateNull());
    job->result = NULL; /* owned by data */
    cJSON_AddItemToObject(data, "artifacts", job->records ? job->records : cJSON_CreateArray());
    job->records = NULL; /* owned by data */
    nf_log_kv(NF_LOG_INFO, "job_succeeded", "job succeeded", "job_id", job->job_id, NULL);
    wk_report_event(job, "forge.job.succeeded", data, true);
}

static void report_outcome(struct wk_job *job)
{
    char msg[768];
    const char *tail = job->last_stderr[0] ? job->last_stderr : "no stderr output";

    if (job->lost || job->stop == WK_STOP_LOST) {
        nf_log_kv(NF_LOG_WARN, "job_abandoned_lost",
                  "job stopped after its lease was lost; "
                  "another attempt owns it",
                  "job_id", job->job_id, NULL);
    } else if (job->stop == WK_STOP_CANCEL) {
        nf_log_kv(NF_LOG_INFO, "job_cancelled", "job cancelled", "job_id", job->job_id, NULL);
        wk_report_event(job, "forge.job.cancelled", terminal_data(job, "cancelled"), true);
    } else if (job->stop == WK_STOP_TIMEOUT) {
        snprintf(msg, sizeof(msg), "handler exceeded timeout_seconds=%lld", job->timeout_s);
        report_failed(job, "timeout", "timeout", msg);
    } else if (job->stop == WK_STOP_SHUTDOWN) {
        report_failed(job, "infra", "worker_shutdown",
                      "the worker shut down before the handler finished");
    } else if (job->failed) {
        report_failed(job, job->fail.klass, job->fail.code, job->fail.message);
    } else if (WIFEXITED(job->wstatus) && WEXITSTATUS(job->wstatus) == 0) {
        report_succeeded(job);
    } else if (WIFEXITED(job->wstatus) && WEXITSTATUS(job->wstatus) == WK_EXIT_RETRYABLE) {
        snprintf(msg, sizeof(msg), "handler exited with code %d (retryable): %s", WK_EXIT_RETRYABLE,
                 tail);
        report_failed(job, "infra", "handler_retryable", msg);
    } else if (WIFEXITED(job->wstatus)) {
        snprintf(msg, sizeof(msg), "handler exited with code %d: %s", WEXITSTATUS(job->wstatus),
                 tail);
        report_failed(job, "user_error", "handler_failed", msg);
    } else {
        int sig = WIFSIGNALED(job->wstatus) ? WTERMSIG(job->wstatus) : 0;
        snprintf(msg, sizeof(msg), "handler killed by signal %d: %s", sig, tail);
        report_failed(job, "user_error", "handler_killed", msg);
    }
}

void wk_report_finish(struct wk_job *job)
{
    if (job->finished)
        return;
    job->finished = true;
    wk_job_release(job);
    if (job->malformed > 0 || job->logs_dropped > 0 || job->metrics_dropped > 0) {
        char m[16], d[16], md[16];
        snprintf(m, sizeof(m), "%d", job->malformed);
        snprintf(d, sizeof(d), "%d", job->logs_dropped);
        snprintf(md, sizeof(md), "%d", job->metrics_dropped);
        nf_log_kv(NF_LOG_INFO, "handler_output_ignored", "handler lines ignored", "job_id",
                  job->job_id, "malformed", m, "logs_dropped", d, "metrics_dropped", md, NULL);
    }
    wk_job_hold(job); /* keep job alive while queuing its messages */
    if (job->lost) {
        report_outcome(job); /* logged only: the attempt belongs to nobody here any more */
        wk_job_dir_done(job);
        wk_job_delivered(job);
        return;
    }
    if (job->progress_dirty)
        send_progress(job); /* the last value the throttle held back */
    emit_final_usage(job);
    serve_deployment(job);
    report_outcome(job);
    wk_job_dir_done(job);
    wk_job_delivered(job);
}

void wk_report_finish_early(struct wk_job *job, const char *klass, const char *code,
                            const char *message)
{
    job->finished = true;
    wk_job_release(job);
    wk_job_hold(job);
    report_failed(job, klass, code, message);
    wk_job_dir_done(job);
    wk_job_delivered(job);
}
