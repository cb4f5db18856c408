#pragma once
/*
 * Private to job*.c: one running job of the worker agent, and the calls between its files.
 *
 *   job.c         lifecycle: start, cancel, lease lost, drain deadline, teardown
 *   job_child.c   the handler process: spawn (fork; the child fetches the inputs, then
 *                 execs; env, pipes), stdout/stderr lines, the child's notes (inputs
 *                 staged, or why not), signals (SIGTERM, grace, SIGKILL), SIGCHLD,
 *                 waiting for EOF
 *   job_ckpt.c    while the handler runs: each announced checkpoint is uploaded by a
 *                 forked uploader and recorded at once (forge.job.checkpoint)
 *   job_upload.c  the handler exited 0: a forked uploader puts each artifact in the store
 *   job_report.c  what the job tells the world: progress (throttled), logs, usage windows,
 *                 stdout protocol lines, the terminal event
 *   job_set.c     the list of jobs, hold/delivered, lease lookup, heartbeat confirmation,
 *                 freeing a job that is done, removing its directory
 *
 * Each calls only the ones below it in this order: job.c -> job_child.c -> job_ckpt.c
 * -> job_upload.c -> job_report.c -> (publish.c) -> job_set.c.
 *
 * Every other file of the worker sees a job only through wk.h.
 */
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wk.h"

enum wk_job_stop {
    WK_STOP_NONE = 0,
    WK_STOP_TIMEOUT,
    WK_STOP_CANCEL,
    WK_STOP_SHUTDOWN,
    WK_STOP_LOST
};

struct wk_job {
    struct wk_ctx *ctx;
    struct wk_job *next; /* ctx->jobs, newest first */
    char job_id[NF_ID_MAX];
    char lease_id[NF_ID_MAX];
    char *user_id;
    char job_type[16];
    long long attempt;
    int gpu_count;
    uint64_t gpu_mask;           /* bit i: pinned to ctx->gpu_devices[i] (gpus.c) */
    char gpus[256];              /* CUDA_VISIBLE_DEVICES for the handler, e.g. "2,3" */
    long long timeout_s;         /* 0 = none */
    char root_dir[PATH_MAX];     /* <work dir>/<job_id>-<attempt>; "" once removed */
    char dir[PATH_MAX];          /* root_dir/out: NF_ARTIFACT_DIR, the handler's cwd */
    struct wk_inputs inputs;     /* from the dispatch, checked */
    struct wk_inputs resume;     /* the dispatch's "resume" checkpoint (n 0 or 1): fetched into
                                    root_dir/resume, NF_RESUME_DIR */
    struct wk_store_items store; /* base models and benchmark data from the store (the
                                    worker's cache, fetched by the child) */
    pid_t pid;                   /* 0 before spawn */
    bool exited;
    int wstatus;
    struct bufferevent *in, *out, *err;
    struct bufferevent *rep; /* the child's notes: inputs staged, or why it failed */
    bool staged;             /* the child is about to exec the handler */
    bool failed;             /* fail holds why the attempt failed (before or after the
                                handler: inputs, exec, artifacts, upload) */
    struct wk_stage_err fail;
    /* the uploader (job_upload.c) */
    pid_t up_pid;
    bool uploading, up_exited;
    int up_status;
    struct bufferevent *up_out; /* its per-file result lines */
    char *up_lines;             /* all of them, once the pipe hit EOF */
    cJSON *plan;                /* wk_artifact_plan: what it uploads */
    cJSON *records;             /* the succeeded event's artifacts, once uploaded */
    /* in-run checkpoint uploads (job_ckpt.c), one at a time */
    cJSON *ck_queue;             /* announced checkpoints [{path, kind}] not yet uploaded */
    cJSON *ck_item;              /* the plan item being uploaded (NULL: none) */
    long long ck_epoch, ck_step; /* the handler's epoch and step of it (-1: not given) */
    pid_t ck_pid;                /* its uploader (0: none) */
    bool ck_exited;              /* reaped (SIGCHLD) */
    bool ck_killed;              /* stopped on purpose: nothing is reported */
    int ck_status;
    struct bufferevent *ck_out; /* its result line */
    char *ck_line;              /* that line, once the pipe hit EOF */
    int ck_recorded;            /* checkpoint events sent */
    bool out_skip, err_skip;    /* discarding the rest of an over-long line */
    struct event *timeout_ev;
    struct event *kill_ev;
    struct event *window_ev;
    struct event *progress_ev;
    struct event *eof_ev;
    struct event *check_ev; /* deferred check_done after the exit was seen */
    bool eof_waited;
    enum wk_job_stop stop;
    double progress;
    bool progress_dirty;
    uint64_t progress_sent_ms;
    cJSON *result;    /* last {"result": ...} object */
    cJSON *artifacts; /* announced [{path, kind}] */
    long long input_tokens, output_tokens;
    char last_stderr[512];
    int malformed, logs, logs_dropped, stderr_lines;
    int metrics, metrics_dropped; /* forge.job.metric events sent / over the cap */
    uint64_t started_ms, exited_ms;
    /* forge.usage events published for this attempt: its terminal event says how many, so
     * billing knows when it holds them all */
    long long usage_events;
    long long window; /* index of the open GPU usage window */
    int held;         /* reliable messages not yet delivered */
    bool finished;    /* terminal event queued */
    bool hb_listed;   /* listed in the heartbeat in flight */
    bool confirmed;   /* a heartbeat listing it was answered: the manager knows the worker
                         holds it, so leaving it out of the list releases it */
    bool lost;        /* the manager said the lease is gone: report nothing more */
};

/* ---- job_child.c ------------------------------------------------------------------------ */

/* Creates the job's process timers (timeout, kill grace, EOF wait, deferred check);
 * aborts when libevent cannot. */
void wk_child_init(struct wk_job *job);
/*
 * Forks the job's child, which fetches job->inputs into root_dir/inputs and then execs
 * handlers/<job_type> with doc (not consumed) on its stdin; watches its stdout, stderr
 * and notes. -1 with *why (static) when it could not start (an infra failure); -2 when it
 * runs but its pipes cannot be watched: the caller must kill it.
 */
int wk_child_spawn(struct wk_job *job, const cJSON *doc, const char **why);
/* Sends sig to the handler's process group (or the handler alone); no-op once exited. */
void wk_child_signal(struct wk_job *job, int sig);
/* SIGTERM now, SIGKILL after kill_grace_s; the first reason sticks. */
void wk_child_terminate(struct wk_job *job, enum wk_job_stop reason);

/* ---- job_ckpt.c ------------------------------------------------------------------------- */

/* Starts uploading the next announced checkpoint when none is uploading (a no-op once the
 * job is lost or stopping). Called after each stdout line. */
void wk_ckpt_pump(struct wk_job *job);
/* The checkpoint uploader's exit or EOF came in: once both did, its upload is recorded
 * (forge.job.checkpoint, reliable) and the next one starts. Idempotent. */
void wk_ckpt_check(struct wk_job *job);
/* An upload runs or waits. */
bool wk_ckpt_busy(const struct wk_job *job);
/* Drops the waiting ones and SIGKILLs the running one (nothing is reported for it). */
void wk_ckpt_kill(struct wk_job *job);

/* ---- job_upload.c ----------------------------------------------------------------------- */

/* In a freshly forked uploader: dies with the agent, default signals, keeps only stdio
 * and fd (as fd 3). _exit(1) when the agent is already gone. */
void wk_upload_child_init(int fd, pid_t parent);

/* The handler exited 0: checks the announced artifacts and forks the uploader; the job
 * finishes (wk_report_finish) once it is done, or at once when there is nothing to upload
 * or an artifact is refused. */
void wk_upload_start(struct wk_job *job);
/* The uploader's exit (up_exited, set by SIGCHLD) or its pipe's EOF came in: once both
 * did, the job finishes. */
void wk_upload_check(struct wk_job *job);
/* SIGKILL to the uploader (lease lost, teardown); no-op when none runs. */
void wk_upload_kill(struct wk_job *job);

/* ---- job_set.c -------------------------------------------------------------------------- */

/* Frees the pipes and every timer of the job (NULL-safe, idempotent). */
void wk_job_release(struct wk_job *job);
/* The attempt is over: its directory is removed (a deploy job's that ran its handler is
 * kept while the endpoint runs). Idempotent. */
void wk_job_dir_done(struct wk_job *job);
/* Records why the attempt failed (the first reason sticks). */
void wk_job_fail(struct wk_job *job, const char *klass, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Takes job off ctx->jobs and frees it; the slot is not reported free. */
void wk_job_destroy(struct wk_job *job);

/* ---- job_report.c ----------------------------------------------------------------------- */

/* Creates the job's report timers (usage window, progress throttle); aborts when libevent
 * cannot. */
void wk_report_init(struct wk_job *job);
/* A new event data object {job_id, user_id, attempt, status}, owned by the caller. */
cJSON *wk_report_event_data(const struct wk_job *job, const char *status);
/* One line of the handler's stdout (len bytes, no newline): progress, log, usage,
 * artifact or result. */
void wk_report_stdout_line(struct wk_job *job, const char *line, size_t len);
/* The handler exited and its pipes are done: last progress, usage, terminal event. Once. */
void wk_report_finish(struct wk_job *job);
/* A job that never ran: reported failed with klass (infra: retried by the scheduler). */
void wk_report_finish_early(struct wk_job *job, const char *klass, const char *code,
                            const char *message);
/* A job event on forge.jobs.events (CloudEvents; data consumed). reliable: retried until
 * delivered and counted against the job; else fire and forget. */
void wk_report_event(struct wk_job *job, const char *type, cJSON *data, bool reliable);
