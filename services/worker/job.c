/*
 * Running one job: its life from the next_job answer to the freed slot.
 *
 *   wk_job_start --> inputs checked (inputs.c) --> <work dir>/<job_id>-<attempt>/{inputs,
 *       out} (jobdir.c, 0700) --> wk_child_spawn (job_child.c: the child fetches the
 *       inputs, then execs the handler with "inputs": {param: path} on stdin)
 *       --> forge.job.running; timers: timeout_seconds (fetching included), GPU usage
 *       windows from the handler's exec (job_report.c)
 *   handler output and exit --> exit 0: artifacts uploaded (job_upload.c) -->
 *       wk_report_finish: usage records + terminal event (reliable), the job directory
 *       removed --> all delivered (wk_job_delivered) and the lease confirmed by a
 *       heartbeat (one is sent as the job starts) --> slot freed (job_set.c)
 *
 * Stops: timeout (failed, class timeout), cancel (forge.job.cancelled), shutdown (failed,
 * infra), lease lost (nothing reported: the job already has a new attempt elsewhere).
 * The child runs in its own process group so a timeout or cancel reaches its children
 * too, and gets SIGKILL if the agent dies (PR_SET_PDEATHSIG).
 *
 * This file sits above job_child.c, job_report.c and job_set.c and below api.c, which it
 * reaches only through the context's hooks (heartbeat_now).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "job.h"
#include "nf_log.h"

/* ---- lease ---------------------------------------------------------------------------------- */

void wk_job_cancel(struct wk_ctx *ctx, const char *job_id)
{
    for (struct wk_job *job = ctx->jobs; job != NULL; job = job->next)
        if (strcmp(job->job_id, job_id) == 0 && !job->finished && !job->lost)
            wk_child_terminate(job, WK_STOP_CANCEL);
}

/* The lease of job is gone: stop it, report nothing more for it. */
static void job_lost(struct wk_job *job)
{
    /* The manager no longer counts this lease as ours: leaving the job out of the next
     * heartbeat cannot release anything, so the slot may be freed without a confirmation. */
    job->confirmed = true;
    if (job->lost)
        return;
    job->lost = true;
    if (job->finished) {
        nf_log_kv(NF_LOG_WARN, "job_lease_lost", "lease lost after the job finished", "job_id",
                  job->job_id, "lease_id", job->lease_id, NULL);
        return;
    }
    nf_log_kv(NF_LOG_WARN, "job_lease_lost",
              "lease lost (missed heartbeats or superseded): stopping the handler, no report",
              "job_id", job->job_id, "lease_id", job->lease_id, NULL);
    wk_child_terminate(job, WK_STOP_LOST);
    wk_upload_kill(job); /* its uploads belong to no attempt any more */
    wk_ckpt_kill(job);
}

void wk_job_lost(struct wk_ctx *ctx, const char *job_id, const char *lease_id)
{
    struct wk_job *next;
    for (struct wk_job *job = ctx->jobs; job != NULL; job = next) {
        next = job->next; /* job_lost never frees job, but stay safe */
        if (strcmp(job->job_id, job_id) == 0 &&
            (lease_id == NULL || strcmp(job->lease_id, lease_id) == 0))
            job_lost(job);
    }
}

void wk_jobs_terminate(struct wk_ctx *ctx)
{
    for (struct wk_job *job = ctx->jobs; job != NULL; job = job->next)
        if (!job->finished)
            wk_child_terminate(job, WK_STOP_SHUTDOWN);
}

/* ---- start -------------------------------------------------------------------------------- */

static struct wk_job *job_new(struct wk_ctx *ctx, const cJSON *doc, const char *lease_id)
{
    const char *job_id = nf_json_str(doc, "job_id");
    const char *type = nf_json_str(doc, "job_type");
    const char *user_id = nf_json_str(doc, "user_id");
    long long attempt = nf_json_int(doc, "attempt", 1);
    /* job_id, user_id and attempt name the job's directory and object keys */
    if (job_id == NULL || !nf_id_valid("job", job_id) || nf_job_type_index(type) < 0 ||
        lease_id == NULL || strlen(lease_id) >= NF_ID_MAX || !wk_user_id_valid(user_id) ||
        attempt < 1 || attempt > 1000000) {
        nf_log_kv(NF_LOG_ERROR, "job_invalid", "next_job answer without a valid job; ignored",
                  "job_id", job_id, NULL);
        return NULL;
    }
    /* An older attempt of this job still here (this worker lost its lease, then got the
     * retry): that attempt belongs to nobody now. */
    for (struct wk_job *old = ctx->jobs; old != NULL; old = old->next)
        if (strcmp(old->job_id, job_id) == 0 && strcmp(old->lease_id, lease_id) != 0)
            job_lost(old);
    struct wk_job *job = nf_xcalloc(1, sizeof(*job));
    job->ctx = ctx;
    snprintf(job->job_id, sizeof(job->job_id), "%s", job_id);
    snprintf(job->lease_id, sizeof(job->lease_id), "%s", lease_id);
    snprintf(job->job_type, sizeof(job->job_type), "%s", type);
    job->user_id = nf_xstrdup(user_id);
    job->attempt = attempt;
    long long gc = nf_json_int(doc, "gpu_count", 0);
    job->gpu_count = gc < 0 ? 0 : gc > 64 ? 64 : (int)gc;
    wk_gpus_take(job);
    long long to = nf_json_int(doc, "timeout_seconds", 0);
    job->timeout_s = to > 0 ? to : 0;
    job->artifacts = cJSON_CreateArray();
    wk_child_init(job);
    wk_report_init(job);
    job->next = ctx->jobs;
    ctx->jobs = job;
    ctx->njobs++;
    return job;
}

void wk_job_start(struct wk_ctx *ctx, const cJSON *doc, const char *lease_id)
{
    const char *why = NULL;
    char err[PATH_MAX + 64];
    struct wk_job *job = job_new(ctx, doc, lease_id);
    if (job == NULL)
        return;
    nf_log_kv(NF_LOG_INFO, "job_started", "job received", "job_id", job->job_id, "job_type",
              job->job_type, "lease_id", job->lease_id, NULL);
    if (ctx->heartbeat_now != NULL)
        ctx->heartbeat_now(ctx); /* api.c: confirm the lease at once */
    if (ctx->stopping) {
        wk_report_finish_early(job, "infra", "worker_shutdown", "the worker is shutting down");
        return;
    }
    if (wk_inputs_parse(doc, &job->inputs, err, sizeof(err)) < 0) {
        wk_report_finish_early(job, "user_error", "bad_input", err);
        return;
    }
    if (wk_store_parse(doc, ctx->set.s3.bucket, ctx->set.store_cache, &job->store, err,
                       sizeof(err)) < 0) {
        wk_report_finish_early(job, "infra", "bad_model_source", err);
        return;
    }
    if (wk_resume_parse(doc, &job->resume, err, sizeof(err)) < 0)
        nf_log_kv(NF_LOG_WARN, "resume_refused", err, "job_id", job->job_id, NULL);
    else if (job->resume.n > 0)
        nf_log_kv(NF_LOG_INFO, "job_resume", "the attempt resumes from the job's checkpoint",
                  "job_id", job->job_id, "object_key", job->resume.v[0].object_key, NULL);
    if (wk_jobdir_create(ctx->root, job->job_id, job->attempt, job->root_dir,
                         sizeof(job->root_dir)) < 0 ||
        (size_t)snprintf(job->dir, sizeof(job->dir), "%s/out", job->root_dir) >= sizeof(job->dir)) {
        nf_log_kv(NF_LOG_ERROR, "job_dir_failed", strerror(errno), "path", job->root_dir, NULL);
        wk_report_finish_early(job, "infra", "job_dir", "cannot create the job's directory");
        return;
    }
    snprintf(err, sizeof(err), "%s/inputs", job->root_dir);
    cJSON *hdoc = wk_inputs_job_json(doc, &job->inputs, err);
    if (hdoc == NULL) {
        wk_report_finish_early(job, "user_error", "bad_input", "an input path is too long");
        return;
    }
    wk_store_job_json(hdoc, &job->store);
    int rc = wk_child_spawn(job, hdoc, &why);
    cJSON_Delete(hdoc);
    if (rc == -2) {
        wk_child_signal(job, SIGKILL);
        job->stop = WK_STOP_SHUTDOWN; /* reaped by SIGCHLD, then reported infra */
        return;
    }
    if (rc < 0) {
        wk_report_finish_early(job, "infra", "handler_unavailable", why);
        return;
    }
    cJSON *data = wk_report_event_data(job, "running");
    nf_json_add_str(data, "worker_id", ctx->worker_id);
    wk_report_event(job, "forge.job.running", data, true);

    if (job->timeout_s > 0) {
        struct timeval tv = {(time_t)job->timeout_s, 0};
        evtimer_add(job->timeout_ev, &tv);
    }
}

/* ---- teardown ------------------------------------------------------------------------------ */

void wk_jobs_free(struct wk_ctx *ctx)
{
    struct wk_job *next;
    for (struct wk_job *job = ctx->jobs; job != NULL; job = next) {
        next = job->next;
        if (job->pid > 0 && !job->exited) {
            nf_log_kv(NF_LOG_ERROR, "job_abandoned", "handler killed at exit, job not reported",
                      "job_id", job->job_id, NULL);
            wk_child_signal(job, SIGKILL);
        }
        wk_upload_kill(job);
        wk_ckpt_kill(job);
        wk_job_destroy(job);
    }
}
