/*
 * Checkpoints uploaded and recorded while the handler still runs (DESIGN §15): a retried
 * attempt resumes from the job's newest recorded checkpoint, so each one must reach the
 * store and the artifact registry before the attempt ends - even when it later fails or
 * this agent is SIGKILLed.
 *
 *   stdout {"artifact": {"path", "kind": "checkpoint"}} (job_report.c: ck_queue)
 *     --> wk_ckpt_pump: none uploading? plan it (wk_artifact_plan: inside out/, key
 *         tenants/<user>/jobs/<job>/<attempt>/<path>) --> fork the uploader
 *         --> wk_stage_out_one --> "ok <bytes> <sha256>" | "err <message>" on a pipe
 *     --> pipe EOF + SIGCHLD (job_child.c) --> wk_ckpt_check: forge.job.checkpoint
 *         {artifacts: [record], epoch, step} (reliable; the scheduler records it at
 *         once; epoch and step when the handler gave them) --> next
 *
 * One upload at a time, in announce order. A failed upload is logged and skipped: the
 * attempt goes on (a retry then resumes from an older checkpoint, or starts over). The
 * handler's exit waits for the queue (job_child.c check_done) unless the attempt was
 * stopped or lost (wk_ckpt_kill). Checkpoints never join the final upload plan.
 *
 * This file sits below job_child.c and above job_upload.c (the child set-up) and
 * job_report.c (the event).
 */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "job.h"
#include "nf_log.h"

#define MAX_LINE_BYTES 4096 /* the uploader writes one short line */

bool wk_ckpt_busy(const struct wk_job *job)
{
    return job->ck_pid > 0 || cJSON_GetArraySize(job->ck_queue) > 0;
}

/* The uploader process: one item, never returns. */
static void ck_uploader(struct wk_job *job, int fd, pid_t parent)
{
    char line[640], err[512], sha[NF_SHA256_HEX_LEN + 1];
    uint64_t bytes = 0;

    wk_upload_child_init(fd, parent);
    if (wk_stage_out_one(&job->ctx->set.s3, job->dir, nf_json_str(job->ck_item, "path"),
                         nf_json_str(job->ck_item, "object_key"), &bytes, sha, err,
                         sizeof(err)) < 0) {
        for (char *c = err; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
        snprintf(line, sizeof(line), "err %s\n", err);
        wk_write_all(3, line, strlen(line));
        _exit(1);
    }
    snprintf(line, sizeof(line), "ok %llu %s\n", (unsigned long long)bytes, sha);
    wk_write_all(3, line, strlen(line));
    _exit(0);
}

/* Records the finished upload: the event whose data carries the artifact record. */
static void record(struct wk_job *job, unsigned long long bytes, const char *sha)
{
    cJSON *rec = wk_artifact_record(job->ck_item, bytes, sha);
    cJSON *data = wk_report_event_data(job, "running");
    cJSON *arr = cJSON_CreateArray();
    char n[24];

    cJSON_AddItemToArray(arr, rec);
    cJSON_AddItemToObject(data, "artifacts", arr);
    if (job->ck_epoch >= 0)
        nf_json_add_int(data, "epoch", job->ck_epoch);
    if (job->ck_step >= 0)
        nf_json_add_int(data, "step", job->ck_step);
    snprintf(n, sizeof(n), "%llu", bytes);
    nf_log_kv(NF_LOG_INFO, "checkpoint_uploaded", "checkpoint uploaded and recorded", "job_id",
              job->job_id, "path", nf_json_str(job->ck_item, "path"), "bytes", n, NULL);
    wk_report_event(job, "forge.job.checkpoint", data, true);
    job->ck_recorded++;
}

/* "ok <bytes> <sha256>": 0 with its values; -1 otherwise. */
static int parse_ok(const char *l, unsigned long long *bytes, const char **sha)
{
    char *end = NULL;

    if (l == NULL || strncmp(l, "ok ", 3) != 0)
        return -1;
    *bytes = strtoull(l + 3, &end, 10);
    if (end == l + 3 || *end != ' ')
        return -1;
    *sha = end + 1;
    if (strcspn(*sha, "\n") != NF_SHA256_HEX_LEN ||
        strspn(*sha, "0123456789abcdef") != NF_SHA256_HEX_LEN)
        return -1;
    return 0;
}

void wk_ckpt_check(struct wk_job *job)
{
    unsigned long long bytes = 0;
    const char *sha = NULL;

    if (job->ck_pid <= 0 || !job->ck_exited || job->ck_out != NULL)
        return;
    bool ok = WIFEXITED(job->ck_status) && WEXITSTATUS(job->ck_status) == 0 &&
              parse_ok(job->ck_line, &bytes, &sha) == 0;
    if (job->ck_killed || job->lost || job->finished) {
        /* stopped on purpose: the attempt is over here */
    } else if (ok) {
        char hex[NF_SHA256_HEX_LEN + 1];
        memcpy(hex, sha, NF_SHA256_HEX_LEN);
        hex[NF_SHA256_HEX_LEN] = '\0';
        record(job, bytes, hex);
    } else {
        const char *why = job->ck_line && strncmp(job->ck_line, "err ", 4) == 0
                              ? job->ck_line + 4
                              : "the checkpoint uploader failed";
        nf_log_kv(NF_LOG_WARN, "checkpoint_upload_failed", why, "job_id", job->job_id, "path",
                  nf_json_str(job->ck_item, "path"), NULL);
    }
    cJSON_Delete(job->ck_item);
    job->ck_item = NULL;
    free(job->ck_line);
    job->ck_line = NULL;
    job->ck_pid = 0;
    job->ck_exited = false;
    wk_ckpt_pump(job);
}

static void on_ck_read(struct bufferevent *bev, void *arg)
{
    struct wk_job *job = arg;
    struct evbuffer *buf = bufferevent_get_input(bev);
    if (evbuffer_get_length(buf) > MAX_LINE_BYTES) {
        kill(job->ck_pid, SIGKILL); /* cannot be ours: our line is short */
        evbuffer_drain(buf, evbuffer_get_length(buf));
    }
}

static void on_ck_event(struct bufferevent *bev, short what, void *arg)
{
    struct wk_job *job = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    struct evbuffer *buf = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(buf);
    free(job->ck_line);
    job->ck_line = nf_xcalloc(1, len + 1);
    evbuffer_remove(buf, job->ck_line, len);
    wk_bev_free(&job->ck_out);
    wk_ckpt_check(job);
}

/* Forks the uploader of job->ck_item; -1 (item dropped) when it cannot. */
static int spawn(struct wk_job *job)
{
    int fds[2];

    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        ck_uploader(job, fds[1], parent);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    job->ck_pid = pid;
    job->ck_exited = false;
    evutil_make_socket_nonblocking(fds[0]);
    job->ck_out = bufferevent_socket_new(job->ctx->base, fds[0], BEV_OPT_CLOSE_ON_FREE);
    if (job->ck_out == NULL)
        abort(); /* out of memory */
    bufferevent_setcb(job->ck_out, on_ck_read, NULL, on_ck_event, job);
    bufferevent_enable(job->ck_out, EV_READ);
    return 0;
}

void wk_ckpt_pump(struct wk_job *job)
{
    char prefix[256];

    while (job->ck_pid <= 0 && !job->ck_killed && !job->lost && !job->finished &&
           cJSON_GetArraySize(job->ck_queue) > 0) {
        const char *why = NULL, *bad = NULL;
        cJSON *one = cJSON_CreateArray();
        cJSON *next = cJSON_DetachItemFromArray(job->ck_queue, 0);
        job->ck_epoch = nf_json_int(next, "epoch", -1);
        job->ck_step = nf_json_int(next, "step", -1);
        cJSON_AddItemToArray(one, next);
        snprintf(prefix, sizeof(prefix), "tenants/%s/jobs/%s/%lld/", job->user_id, job->job_id,
                 job->attempt);
        cJSON *plan = wk_artifact_plan(job->dir, one, prefix, &why, &bad);
        cJSON_Delete(one);
        if (plan == NULL || cJSON_GetArraySize(plan) != 1) {
            nf_log_kv(NF_LOG_WARN, "checkpoint_refused", why ? why : "not a file", "job_id",
                      job->job_id, "path", bad ? bad : "", NULL);
            cJSON_Delete(plan);
            continue;
        }
        job->ck_item = cJSON_DetachItemFromArray(plan, 0);
        cJSON_Delete(plan);
        if (spawn(job) < 0) {
            nf_log_kv(NF_LOG_WARN, "checkpoint_upload_failed", strerror(errno), "job_id",
                      job->job_id, "path", nf_json_str(job->ck_item, "path"), NULL);
            cJSON_Delete(job->ck_item);
            job->ck_item = NULL;
        }
    }
    /* idle with the handler gone: let check_done (job_child.c) finish the attempt */
    if (!wk_ckpt_busy(job) && job->exited && job->check_ev != NULL)
        event_active(job->check_ev, EV_TIMEOUT, 0);
}

void wk_ckpt_kill(struct wk_job *job)
{
    job->ck_killed = true;
    while (cJSON_GetArraySize(job->ck_queue) > 0)
        cJSON_DeleteItemFromArray(job->ck_queue, 0);
    if (job->ck_pid > 0 && !job->ck_exited)
        kill(job->ck_pid, SIGKILL);
}
