/*
 * The set of jobs the agent holds (ctx->jobs) and the bookkeeping the files above it
 * share: the reliable messages held against a job, the lease lookup, the heartbeat list
 * and its confirmation, the release of a job that is done, and the end of its directory
 * (jobdir.c: removed, or kept for a deploy endpoint) and the reason it failed.
 *
 *   wk_job_hold (a reliable message queued) ... wk_job_delivered (it arrived)
 *   finished + nothing held + lease confirmed by a heartbeat --> the job is freed
 *       --> ctx->slot_freed (api.c: poll again, or finish a stop)
 *
 * The bottom of the job files: publish.c, job_report.c, job_child.c, job.c and api.c use
 * it, and it calls none of them; api.c hears of a free slot through its context hook.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "nf_log.h"

void wk_job_release(struct wk_job *job)
{
    wk_bev_free(&job->in);
    wk_bev_free(&job->out);
    wk_bev_free(&job->err);
    wk_bev_free(&job->rep);
    wk_bev_free(&job->up_out);
    wk_bev_free(&job->ck_out);
    wk_event_free(&job->timeout_ev);
    wk_event_free(&job->kill_ev);
    wk_event_free(&job->window_ev);
    wk_event_free(&job->progress_ev);
    wk_event_free(&job->eof_ev);
    wk_event_free(&job->check_ev);
}

void wk_job_fail(struct wk_job *job, const char *klass, const char *code, const char *fmt, ...)
{
    va_list ap;
    if (job->failed)
        return;
    job->failed = true;
    snprintf(job->fail.klass, sizeof(job->fail.klass), "%s", klass);
    snprintf(job->fail.code, sizeof(job->fail.code), "%s", code);
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(job->fail.message, sizeof(job->fail.message), fmt, ap);
    va_end(ap);
}

void wk_job_dir_done(struct wk_job *job)
{
    if (job->root_dir[0] == '\0')
        return;
    /* a deploy handler that ran may have left its endpoint serving from the directory */
    if (strcmp(job->job_type, "deploy") == 0 && job->staged)
        wk_jobdir_keep(job->ctx, job->root_dir);
    else if (wk_rmtree(job->root_dir) < 0)
        nf_log_kv(NF_LOG_WARN, "job_dir_remove_failed", strerror(errno), "path", job->root_dir,
                  NULL);
    job->root_dir[0] = '\0';
}

void wk_job_destroy(struct wk_job *job)
{
    struct wk_ctx *ctx = job->ctx;
    struct wk_job **link = &ctx->jobs;
    while (*link != job)
        link = &(*link)->next;
    *link = job->next;
    ctx->njobs--;
    wk_gpus_give(job);
    wk_job_release(job);
    wk_job_dir_done(job);
    wk_inputs_free(&job->inputs);
    wk_inputs_free(&job->resume);
    wk_store_items_free(&job->store);
    cJSON_Delete(job->ck_queue);
    cJSON_Delete(job->ck_item);
    free(job->ck_line);
    cJSON_Delete(job->plan);
    cJSON_Delete(job->records);
    free(job->up_lines);
    cJSON_Delete(job->result);
    cJSON_Delete(job->artifacts);
    free(job->user_id);
    free(job);
}

void wk_job_hold(struct wk_job *job)
{
    job->held++;
}

/* Frees the job once it finished, all its messages are delivered and its lease was
 * confirmed; then the slot is free. */
static void maybe_release(struct wk_job *job)
{
    struct wk_ctx *ctx = job->ctx;
    if (job->held > 0 || !job->finished || !job->confirmed)
        return;
    nf_log_kv(NF_LOG_INFO, "job_released", "job reported, slot free", "job_id", job->job_id, NULL);
    wk_job_destroy(job);
    if (!ctx->closing && ctx->slot_freed != NULL)
        ctx->slot_freed(ctx);
}

void wk_job_delivered(struct wk_job *job)
{
    job->held--;
    maybe_release(job);
}

const char *wk_job_lease(struct wk_ctx *ctx, const char *job_id)
{
    for (struct wk_job *job = ctx->jobs; job != NULL; job = job->next)
        if (!job->lost && strcmp(job->job_id, job_id) == 0)
            return job->lease_id;
    return NULL;
}

cJSON *wk_jobs_heartbeat(struct wk_ctx *ctx)
{
    cJSON *arr = cJSON_CreateArray();
    for (struct wk_job *job = ctx->jobs; job != NULL; job = job->next) {
        cJSON *j = nf_json_obj();
        nf_json_add_str(j, "job_id", job->job_id);
        nf_json_add_str(j, "lease_id", job->lease_id);
        cJSON_AddNumberToObject(j, "progress", job->progress);
        cJSON_AddItemToArray(arr, j);
        job->hb_listed = true;
    }
    return arr;
}

void wk_jobs_heartbeat_done(struct wk_ctx *ctx, bool ok)
{
    struct wk_job *next;
    for (struct wk_job *job = ctx->jobs; job != NULL; job = next) {
        next = job->next;
        if (job->hb_listed && ok)
            job->confirmed = true;
        job->hb_listed = false;
        maybe_release(job); /* may free job */
    }
}
