/*
 * A job's outputs into the object store, after its handler exited 0.
 *
 *   wk_upload_start --> wk_artifact_plan (each announced file checked inside out/, its key
 *       tenants/<user>/jobs/<job>/<attempt>/<path>) --> nothing to upload: finish
 *       --> fork the uploader: per item wk_stage_out_one (open without symlinks, digest,
 *           upload) --> "ok <i> <bytes> <sha256>" | "err <message>" lines on a pipe
 *   pipe EOF + SIGCHLD (job_child.c: up_exited, then wk_upload_check) --> records {artifact_id,
 * name, kind, bytes, sha256, object_key, uri} --> wk_report_finish: succeeded; any failure: failed,
 *       class infra (the scheduler retries the attempt)
 *
 * The uploads block, so they run in a child process, never on the loop; the child uses
 * libcurl after a fork from a process with librdkafka threads: it touches nothing of theirs
 * (glibc keeps malloc and stdio usable in the child), and is killed with the agent
 * (PR_SET_PDEATHSIG). GPU time is not metered while it runs: the meter stopped when the
 * handler exited.
 *
 * This file sits below job_child.c (which starts it and reaps the uploader) and above
 * job_report.c.
 */
#define _GNU_SOURCE /* pipe2, close_range */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "job.h"
#include "nf_log.h"

#define MAX_RESULT_BYTES ((size_t)1024 * 1024) /* the uploader's lines, at most */

void wk_upload_child_init(int fd, pid_t parent)
{
    struct sigaction dfl;
    sigset_t none;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* the loop's handlers are not ours */
    dfl.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Keep only stdio and the result pipe (as fd 3): the agent's sockets must close when
     * the agent closes them, not when this child is done. */
    if (fd != 3 && (dup2(fd, 3) < 0))
        _exit(1);
    if (close_range(4, ~0U, 0) < 0)
        for (int k = 4; k < 65536; k++)
            close(k);
}

/* The uploader process: never returns. */
static void uploader(struct wk_job *job, int fd, pid_t parent)
{
    char line[640], err[512], sha[NF_SHA256_HEX_LEN + 1];
    int i = 0;

    wk_upload_child_init(fd, parent);
    const cJSON *item = NULL;
    cJSON_ArrayForEach(item, job->plan)
    {
        uint64_t bytes = 0;
        if (wk_stage_out_one(&job->ctx->set.s3, job->dir, nf_json_str(item, "path"),
                             nf_json_str(item, "object_key"), &bytes, sha, err, sizeof(err)) < 0) {
            for (char *c = err; *c; c++)
                if (*c == '\n' || *c == '\r')
                    *c = ' ';
            snprintf(line, sizeof(line), "err %s\n", err);
            wk_write_all(3, line, strlen(line));
            _exit(1);
        }
        snprintf(line, sizeof(line), "ok %d %llu %s\n", i++, (unsigned long long)bytes, sha);
        wk_write_all(3, line, strlen(line));
    }
    _exit(0);
}

/* Both the pipe's EOF and the exit are in: build the records (or the failure), finish. */
static void upload_done(struct wk_job *job)
{
    if (!job->uploading || !job->up_exited || job->up_out != NULL)
        return;
    job->uploading = false;
    job->up_pid = 0;
    int n = cJSON_GetArraySize(job->plan);
    cJSON *records = cJSON_CreateArray();
    char *text = job->up_lines;
    char *save = NULL;
    int got = 0;
    const char *error = NULL;
    for (char *l = text ? strtok_r(text, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, "err ", 4) == 0) {
            error = l + 4;
            break;
        }
        /* "ok <i> <bytes> <sha256>", i counting from 0 */
        char *end = NULL;
        if (strncmp(l, "ok ", 3) != 0)
            break;
        long i = strtol(l + 3, &end, 10);
        if (end == l + 3 || *end != ' ' || i != got || i >= n)
            break;
        char *num = end + 1;
        unsigned long long bytes = strtoull(num, &end, 10);
        const char *sha = end + 1;
        if (end == num || *end != ' ' || strlen(sha) != NF_SHA256_HEX_LEN ||
            strspn(sha, "0123456789abcdef") != NF_SHA256_HEX_LEN)
            break;
        cJSON_AddItemToArray(records,
                             wk_artifact_record(cJSON_GetArrayItem(job->plan, got), bytes, sha));
        got++;
    }
    bool ok = got == n && WIFEXITED(job->up_status) && WEXITSTATUS(job->up_status) == 0;
    if (ok) {
        job->records = records;
    } else {
        cJSON_Delete(records);
        if (error != NULL)
            wk_job_fail(job, "infra", "artifact_upload", "%s", error);
        else
            wk_job_fail(job, "infra", "artifact_upload",
                        "the artifact uploader failed (status %d) after %d of %d files",
                        job->up_status, got, n);
    }
    free(job->up_lines);
    job->up_lines = NULL;
    wk_report_finish(job);
}

static void on_up_read(struct bufferevent *bev, void *arg)
{
    struct wk_job *job = arg;
    struct evbuffer *buf = bufferevent_get_input(bev);
    if (evbuffer_get_length(buf) > MAX_RESULT_BYTES) {
        wk_upload_kill(job); /* cannot be ours: our lines are short */
        evbuffer_drain(buf, evbuffer_get_length(buf));
    }
}

static void on_up_event(struct bufferevent *bev, short what, void *arg)
{
    struct wk_job *job = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    struct evbuffer *buf = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(buf);
    free(job->up_lines); /* they wait here until the exit is seen too */
    job->up_lines = nf_xcalloc(1, len + 1);
    evbuffer_remove(buf, job->up_lines, len);
    wk_bev_free(&job->up_out);
    upload_done(job);
}

void wk_upload_check(struct wk_job *job)
{
    upload_done(job);
}

void wk_upload_kill(struct wk_job *job)
{
    if (job->uploading && job->up_pid > 0 && !job->up_exited)
        kill(job->up_pid, SIGKILL);
}

void wk_upload_start(struct wk_job *job)
{
    char prefix[256];
    const char *why = NULL, *bad = NULL;
    int fds[2];

    snprintf(prefix, sizeof(prefix), "tenants/%s/jobs/%s/%lld/", job->user_id, job->job_id,
             job->attempt);
    job->plan = wk_artifact_plan(job->dir, job->artifacts, prefix, &why, &bad);
    if (job->plan == NULL) {
        wk_job_fail(job, "user_error", "bad_artifact", "artifact \"%.300s\" refused: %s",
                    bad ? bad : "", why);
        wk_report_finish(job);
        return;
    }
    if (cJSON_GetArraySize(job->plan) == 0) {
        job->records = cJSON_CreateArray();
        wk_report_finish(job);
        return;
    }
    if (pipe2(fds, O_CLOEXEC) < 0) {
        wk_job_fail(job, "infra", "artifact_upload", "cannot create a pipe: %s", strerror(errno));
        wk_report_finish(job);
        return;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        uploader(job, fds[1], parent);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        wk_job_fail(job, "infra", "artifact_upload", "cannot fork the uploader: %s",
                    strerror(errno));
        wk_report_finish(job);
        return;
    }
    job->up_pid = pid;
    job->uploading = true;
    job->up_exited = false;
    evutil_make_socket_nonblocking(fds[0]);
    job->up_out = bufferevent_socket_new(job->ctx->base, fds[0], BEV_OPT_CLOSE_ON_FREE);
    if (job->up_out == NULL)
        abort(); /* out of memory */
    bufferevent_setwatermark(job->up_out, EV_READ, 0, 0);
    bufferevent_setcb(job->up_out, on_up_read, NULL, on_up_event, job);
    bufferevent_enable(job->up_out, EV_READ);
    nf_log_kv(NF_LOG_INFO, "artifacts_uploading", "uploading the job's artifacts", "job_id",
              job->job_id, NULL);
}
