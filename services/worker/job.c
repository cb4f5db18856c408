/*
 * Running one job: the handler child process and everything it reports.
 *
 *   wk_job_start --> mkdir <artifact_root>/<job_id> --> fork/exec handlers/<type>
 *       stdin  <-- the job JSON (bufferevent, closed once written)
 *       stdout --> lines --> proto.c --> progress (throttled), log, usage, artifact, result
 *       stderr --> lines --> agent log `handler_stderr` (last line kept for errors)
 *       timers: timeout_seconds (SIGTERM, grace, SIGKILL), GPU usage windows
 *   SIGCHLD --> waitpid --> exited; once stdout and stderr hit EOF (or 2 s passed)
 *       --> finish: usage records + terminal event (reliable) --> all delivered and the
 *       lease confirmed by a heartbeat (one is sent as the job starts) --> slot freed
 *
 * The child runs in its own process group so a timeout or cancel reaches its children
 * too, and gets SIGKILL if the agent dies (PR_SET_PDEATHSIG). Only async-signal-safe
 * calls happen between fork and exec (librdkafka has threads).
 *
 * Stops: timeout (failed, class timeout), cancel (forge.job.cancelled), shutdown (failed,
 * infra), lease lost (nothing reported: the job already has a new attempt elsewhere).
 */
#define _GNU_SOURCE /* pipe2, close_range */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "nf_event.h"
#include "nf_log.h"
#include "wk.h"

extern char **environ;

#define EOF_WAIT_MS 2000 /* after exit, how long to wait for the pipes' EOF */
#define MAX_ARTIFACTS 1000
#define MAX_STDERR_LOGGED 10000 /* stderr lines logged per job */
#define STDERR_LOG_MAX 1024     /* a logged stderr line is cut to this */

enum stop_reason { STOP_NONE = 0, STOP_TIMEOUT, STOP_CANCEL, STOP_SHUTDOWN, STOP_LOST };

struct wk_job {
    struct wk *ctx;
    struct wk_job *prev, *next;
    char job_id[NF_ID_MAX];
    char lease_id[NF_ID_MAX];
    char *user_id;
    char job_type[16];
    long long attempt;
    int gpu_count;
    long long timeout_s; /* 0 = none */
    char dir[PATH_MAX];  /* <artifact_root>/<job_id> */
    pid_t pid;           /* 0 before spawn */
    bool exited;
    int wstatus;
    struct bufferevent *in, *out, *err;
    bool out_skip, err_skip; /* discarding the rest of an over-long line */
    struct event *timeout_ev;
    struct event *kill_ev;
    struct event *window_ev;
    struct event *progress_ev;
    struct event *eof_ev;
    struct event *check_ev; /* deferred check_done after the exit was seen */
    bool eof_waited;
    enum stop_reason stop;
    double progress;
    bool progress_dirty;
    uint64_t progress_sent_ms;
    cJSON *result;    /* last {"result": ...} object */
    cJSON *artifacts; /* announced [{path, kind}] */
    long long input_tokens, output_tokens;
    char last_stderr[512];
    int malformed, logs, logs_dropped, stderr_lines;
    uint64_t started_ms, exited_ms;
    long long window; /* index of the open GPU usage window */
    int held;         /* reliable messages not yet delivered */
    bool finished;    /* terminal event queued */
    bool hb_listed;   /* listed in the heartbeat in flight */
    bool confirmed;   /* a heartbeat listing it was answered: the manager knows the worker
                         holds it, so leaving it out of the list releases it */
    bool lost;        /* the manager said the lease is gone: report nothing more */
};

static void finish(struct wk_job *job);

/* ---- bookkeeping ------------------------------------------------------------------------ */

static cJSON *event_data(const struct wk_job *job, const char *status)
{
    cJSON *data = nf_json_obj();
    nf_json_add_str(data, "job_id", job->job_id);
    nf_json_add_str(data, "user_id", job->user_id);
    nf_json_add_int(data, "attempt", job->attempt);
    nf_json_add_str(data, "status", status);
    return data;
}

static void free_event(struct event **ev)
{
    if (*ev != NULL) {
        event_free(*ev);
        *ev = NULL;
    }
}

static void free_bev(struct bufferevent **bev)
{
    if (*bev != NULL) {
        bufferevent_free(*bev);
        *bev = NULL;
    }
}

static void job_release_io(struct wk_job *job)
{
    free_bev(&job->in);
    free_bev(&job->out);
    free_bev(&job->err);
    free_event(&job->timeout_ev);
    free_event(&job->kill_ev);
    free_event(&job->window_ev);
    free_event(&job->progress_ev);
    free_event(&job->eof_ev);
    free_event(&job->check_ev);
}

static void job_destroy(struct wk_job *job)
{
    struct wk *ctx = job->ctx;
    if (job->prev)
        job->prev->next = job->next;
    else
        ctx->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    ctx->njobs--;
    job_release_io(job);
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
    struct wk *ctx = job->ctx;
    if (job->held > 0 || !job->finished || !job->confirmed)
        return;
    nf_log_kv(NF_LOG_INFO, "job_released", "job reported, slot free", "job_id", job->job_id, NULL);
    job_destroy(job);
    if (!ctx->closing)
        wk_slot_freed(ctx);
}

void wk_job_delivered(struct wk_job *job)
{
    job->held--;
    maybe_release(job);
}

static struct wk_job *find_job(struct wk *ctx, const char *job_id, pid_t pid)
{
    for (struct wk_job *job = ctx->jobs; job != NULL; job = job->next)
        if ((job_id && strcmp(job->job_id, job_id) == 0) || (pid > 0 && job->pid == pid))
            return job;
    return NULL;
}

/* ---- usage ------------------------------------------------------------------------------ */

static void emit_usage(struct wk_job *job, const char *meter, long long quantity, long long window,
                       uint64_t start_ms, uint64_t end_ms)
{
    struct wk *ctx = job->ctx;
    struct wk_usage u = {.user_id = job->user_id,
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
    wk_publish(ctx, job, "forge.usage", job->user_id, payload);
    free(payload);
}

static void on_window(evutil_socket_t fd, short what, void *arg)
{
    struct wk_job *job = arg;
    uint64_t w = (uint64_t)job->ctx->cfg.usage_window_s * 1000;
    if (job->exited || job->finished)
        return; /* the final window is emitted by finish() */
    uint64_t start = job->started_ms + (uint64_t)job->window * w;
    emit_usage(job, "gpu_ms", (long long)wk_gpu_ms(w, job->gpu_count), job->window, start,
               start + w);
    job->window++;
}

static void emit_final_usage(struct wk_job *job)
{
    uint64_t w = (uint64_t)job->ctx->cfg.usage_window_s * 1000;
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

/* ---- stdout / stderr --------------------------------------------------------------------- */

static void send_progress(struct wk_job *job)
{
    cJSON *data = event_data(job, "running");
    cJSON_AddNumberToObject(data, "progress", job->progress);
    wk_publish_job_event(job->ctx, job, "forge.job.progress", data, false);
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
    int interval = job->ctx->cfg.progress_ms;
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
    cJSON *data = event_data(job, "running");
    if (strlen(message) > WK_LOG_MSG_MAX) {
        char *cut = nf_xcalloc(1, WK_LOG_MSG_MAX + 1);
        memcpy(cut, message, WK_LOG_MSG_MAX);
        nf_json_add_str(data, "message", cut);
        free(cut);
    } else {
        nf_json_add_str(data, "message", message);
    }
    wk_publish_job_event(job->ctx, job, "forge.job.log", data, false);
}

static long long sat_add(long long a, long long b)
{
    return a > LLONG_MAX - b ? LLONG_MAX : a + b;
}

static void stdout_line(struct wk_job *job, const char *line, size_t len)
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
    case WK_LINE_RESULT:
        cJSON_Delete(job->result);
        job->result = cJSON_DetachItemViaPointer(l.doc, l.result);
        break;
    }
    wk_line_clear(&l);
}

static void stderr_line(struct wk_job *job, const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return;
    size_t keep = len < sizeof(job->last_stderr) - 1 ? len : sizeof(job->last_stderr) - 1;
    memcpy(job->last_stderr, line, keep);
    job->last_stderr[keep] = '\0';
    if (job->stderr_lines++ >= MAX_STDERR_LOGGED)
        return;
    char cut[STDERR_LOG_MAX + 1];
    size_t n = len < STDERR_LOG_MAX ? len : STDERR_LOG_MAX;
    memcpy(cut, line, n);
    cut[n] = '\0';
    nf_log_kv(NF_LOG_INFO, "handler_stderr", cut, "job_id", job->job_id, NULL);
}

static void read_lines(struct wk_job *job, struct bufferevent *bev, bool is_stdout, bool eof)
{
    struct evbuffer *buf = bufferevent_get_input(bev);
    bool *skip = is_stdout ? &job->out_skip : &job->err_skip;
    for (;;) {
        size_t n = 0;
        char *line = evbuffer_readln(buf, &n, EVBUFFER_EOL_LF);
        if (line == NULL) {
            size_t left = evbuffer_get_length(buf);
            if (left > WK_MAX_LINE || (eof && left > 0)) {
                if (eof && !*skip && left <= WK_MAX_LINE) {
                    /* a last line without newline */
                    char *rest = nf_xcalloc(1, left + 1);
                    evbuffer_remove(buf, rest, left);
                    if (is_stdout)
                        stdout_line(job, rest, left);
                    else
                        stderr_line(job, rest, left);
                    free(rest);
                } else {
                    evbuffer_drain(buf, left);
                    if (!*skip && is_stdout)
                        job->malformed++;
                    *skip = !eof;
                }
            }
            return;
        }
        if (*skip) {
            *skip = false; /* the tail of an over-long line */
        } else if (is_stdout) {
            stdout_line(job, line, n);
        } else {
            stderr_line(job, line, n);
        }
        free(line);
    }
}

static void check_done(struct wk_job *job)
{
    if (!job->exited || job->finished)
        return;
    if ((job->out != NULL || job->err != NULL) && !job->eof_waited)
        return;
    finish(job);
}

static void on_out_read(struct bufferevent *bev, void *arg)
{
    read_lines(arg, bev, true, false);
}

static void on_err_read(struct bufferevent *bev, void *arg)
{
    read_lines(arg, bev, false, false);
}

static void on_pipe_event(struct bufferevent *bev, short what, void *arg)
{
    struct wk_job *job = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    bool is_stdout = bev == job->out;
    read_lines(job, bev, is_stdout, true);
    if (is_stdout)
        free_bev(&job->out);
    else
        free_bev(&job->err);
    check_done(job);
}

static void on_in_written(struct bufferevent *bev, void *arg)
{
    struct wk_job *job = arg;
    free_bev(&job->in); /* closes the pipe: the handler sees EOF on stdin */
}

static void on_in_event(struct bufferevent *bev, short what, void *arg)
{
    struct wk_job *job = arg;
    free_bev(&job->in); /* the handler closed stdin early: fine */
}

static void on_check(evutil_socket_t fd, short what, void *arg)
{
    check_done(arg);
}

static void on_eof_wait(evutil_socket_t fd, short what, void *arg)
{
    struct wk_job *job = arg;
    job->eof_waited = true;
    check_done(job);
}

/* ---- process control ---------------------------------------------------------------------- */

static void signal_job(struct wk_job *job, int sig)
{
    if (job->pid <= 0 || job->exited)
        return;
    if (kill(-job->pid, sig) < 0)
        kill(job->pid, sig);
}

static void on_kill(evutil_socket_t fd, short what, void *arg)
{
    struct wk_job *job = arg;
    nf_log_kv(NF_LOG_WARN, "handler_killed", "handler ignored SIGTERM, sending SIGKILL", "job_id",
              job->job_id, NULL);
    signal_job(job, SIGKILL);
}

static void terminate(struct wk_job *job, enum stop_reason reason)
{
    static const char *const names[] = {"", "timeout", "cancelled", "shutdown", "lease_lost"};
    if (job->pid <= 0 || job->exited || job->stop != STOP_NONE)
        return;
    job->stop = reason;
    nf_log_kv(NF_LOG_INFO, "handler_terminate", "stopping handler", "job_id", job->job_id, "reason",
              names[reason], NULL);
    signal_job(job, SIGTERM);
    struct timeval tv = {job->ctx->cfg.kill_grace_s, 0};
    evtimer_add(job->kill_ev, &tv);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    terminate(arg, STOP_TIMEOUT);
}

void wk_job_cancel(struct wk *ctx, const char *job_id)
{
    for (struct wk_job *job = ctx->jobs; job != NULL; job = job->next)
        if (strcmp(job->job_id, job_id) == 0 && !job->finished && !job->lost)
            terminate(job, STOP_CANCEL);
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
    terminate(job, STOP_LOST);
}

void wk_job_lost(struct wk *ctx, const char *job_id, const char *lease_id)
{
    struct wk_job *next;
    for (struct wk_job *job = ctx->jobs; job != NULL; job = next) {
        next = job->next; /* job_lost never frees job, but stay safe */
        if (strcmp(job->job_id, job_id) == 0 &&
            (lease_id == NULL || strcmp(job->lease_id, lease_id) == 0))
            job_lost(job);
    }
}

const char *wk_job_lease(struct wk *ctx, const char *job_id)
{
    for (struct wk_job *job = ctx->jobs; job != NULL; job = job->next)
        if (!job->lost && strcmp(job->job_id, job_id) == 0)
            return job->lease_id;
    return NULL;
}

void wk_jobs_terminate(struct wk *ctx)
{
    for (struct wk_job *job = ctx->jobs; job != NULL; job = job->next)
        if (!job->finished)
            terminate(job, STOP_SHUTDOWN);
}

void wk_on_sigchld(evutil_socket_t fd, short what, void *arg)
{
    struct wk *ctx = arg;
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct wk_job *job = find_job(ctx, NULL, pid);
        if (job == NULL)
            continue;
        job->exited = true;
        job->wstatus = status;
        job->exited_ms = nf_now_ms();
        evtimer_del(job->timeout_ev);
        evtimer_del(job->kill_ev);
        struct timeval tv = {EOF_WAIT_MS / 1000, (suseconds_t)(EOF_WAIT_MS % 1000) * 1000};
        evtimer_add(job->eof_ev, &tv);
        event_active(job->check_ev, EV_TIMEOUT, 0); /* next turn: not while reaping */
    }
}

/* Environment of a handler: ours minus NF_* settings (secrets), plus the job's. */
static char **build_env(const struct wk_job *job)
{
    size_t n = 0, k = 0;
    while (environ[n] != NULL)
        n++;
    char **env = nf_xcalloc(n + 8, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "NF_", 3) == 0 && strncmp(environ[i], "NF_LOG_LEVEL=", 13) != 0)
            continue;
        env[k++] = nf_xstrdup(environ[i]);
    }
    char buf[PATH_MAX + 32];
    snprintf(buf, sizeof(buf), "NF_JOB_ID=%s", job->job_id);
    env[k++] = nf_xstrdup(buf);
    snprintf(buf, sizeof(buf), "NF_ARTIFACT_DIR=%s", job->dir);
    env[k++] = nf_xstrdup(buf);
    snprintf(buf, sizeof(buf), "NF_GPU_COUNT=%d", job->gpu_count);
    env[k++] = nf_xstrdup(buf);
    snprintf(buf, sizeof(buf), "NF_JOB_TYPE=%s", job->job_type);
    env[k++] = nf_xstrdup(buf);
    snprintf(buf, sizeof(buf), "NF_ATTEMPT=%lld", job->attempt);
    env[k++] = nf_xstrdup(buf);
    env[k] = NULL;
    return env;
}

static void free_env(char **env)
{
    for (size_t i = 0; env[i] != NULL; i++)
        free(env[i]);
    free(env);
}

/* Child side: only async-signal-safe calls until execve. */
static void child_exec(const char *path, char *const argv[], char *const env[], int fd_in,
                       int fd_out, int fd_err, int fd_report, const char *dir, pid_t parent)
{
    sigset_t none;
    struct sigaction dfl;
    int e;

    setpgid(0, 0);
    /* The handler dies with the agent: a SIGKILLed agent's job is requeued elsewhere, and
     * an orphan must not keep the GPU busy or write artifacts for a lost attempt. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    if (dup2(fd_in, 0) < 0 || dup2(fd_out, 1) < 0 || dup2(fd_err, 2) < 0)
        goto fail;
    /* Every other descriptor (sockets of the agent) closes at exec. */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        for (int fd = 3; fd < 4096; fd++)
            if (fd != fd_report)
                fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (chdir(dir) < 0)
        goto fail;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, NULL);
    execve(path, argv, env);
fail:
    e = errno;
    if (write(fd_report, &e, sizeof(e)) < 0)
        _exit(126);
    _exit(127);
}

static int nonblock_bev(struct wk_job *job, int fd, struct bufferevent **out)
{
    evutil_make_socket_nonblocking(fd);
    *out = bufferevent_socket_new(job->ctx->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (*out == NULL) {
        close(fd);
        return -1;
    }
    return 0;
}

/* Starts the handler; -1 with *why when it could not run (an infra failure). */
static int spawn(struct wk_job *job, const cJSON *doc, const char **why)
{
    struct wk *ctx = job->ctx;
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    char path[PATH_MAX];
    int rc = -1, e = 0;

    snprintf(path, sizeof(path), "%s/%s", ctx->cfg.handlers, job->job_type);
    if (access(path, X_OK) < 0) {
        *why = "no executable handler for this job type";
        return -1;
    }
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        pipe2(rep, O_CLOEXEC) < 0) {
        *why = "cannot create pipes";
        goto close_pipes;
    }
    char *argv[] = {path, NULL};
    char **env = build_env(job);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        child_exec(path, argv, env, in[0], out[1], err[1], rep[1], job->dir, parent);
    free_env(env);
    if (pid < 0) {
        *why = "fork failed";
        goto close_pipes;
    }
    setpgid(pid, pid); /* also done by the child; whichever runs first */
    close(rep[1]);
    rep[1] = -1;
    ssize_t n;
    do {
        n = read(rep[0], &e, sizeof(e)); /* EOF at exec; an errno if it failed */
    } while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof(e)) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        nf_log_kv(NF_LOG_ERROR, "handler_exec_failed", strerror(e), "job_id", job->job_id, "path",
                  path, NULL);
        *why = "the handler could not be executed";
        goto close_pipes;
    }
    job->pid = pid;
    job->started_ms = nf_now_ms();
    close(in[0]);
    close(out[1]);
    close(err[1]);
    in[0] = out[1] = err[1] = -1;
    int fd_in = in[1], fd_out = out[0], fd_err = err[0];
    in[1] = out[0] = err[0] = -1;
    if (nonblock_bev(job, fd_in, &job->in) < 0 || nonblock_bev(job, fd_out, &job->out) < 0 ||
        nonblock_bev(job, fd_err, &job->err) < 0) {
        /* cannot happen short of out of memory; the child is stopped below by the caller */
        *why = "cannot watch the handler's pipes";
        rc = -2;
        goto close_pipes;
    }
    bufferevent_setcb(job->out, on_out_read, NULL, on_pipe_event, job);
    bufferevent_setcb(job->err, on_err_read, NULL, on_pipe_event, job);
    bufferevent_setcb(job->in, NULL, on_in_written, on_in_event, job);
    bufferevent_enable(job->out, EV_READ);
    bufferevent_enable(job->err, EV_READ);
    char *text = nf_json_print(doc);
    bufferevent_write(job->in, text, strlen(text));
    bufferevent_write(job->in, "\n", 1);
    free(text);
    bufferevent_enable(job->in, EV_WRITE);
    rc = 0;
close_pipes:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
        if (rep[i] >= 0)
            close(rep[i]);
    }
    return rc;
}

/* ---- outcome -------------------------------------------------------------------------------- */

static void report_failed(struct wk_job *job, const char *klass, const char *code,
                          const char *message)
{
    cJSON *data = event_data(job, "failed");
    cJSON *error = nf_json_obj();
    nf_json_add_str(error, "code", code);
    nf_json_add_str(error, "message", message);
    nf_json_add_str(error, "class", klass);
    cJSON_AddItemToObject(data, "error", error);
    nf_log_kv(NF_LOG_WARN, "job_failed", message, "job_id", job->job_id, "class", klass, "code",
              code, NULL);
    wk_publish_job_event(job->ctx, job, "forge.job.failed", data, true);
}

static void report_succeeded(struct wk_job *job)
{
    cJSON *records = cJSON_CreateArray();
    const cJSON *a = NULL;
    cJSON_ArrayForEach(a, job->artifacts)
    {
        const char *why = NULL;
        const char *path = nf_json_str(a, "path");
        cJSON *rec = wk_artifact_record(job->dir, path, nf_json_str(a, "kind"), &why);
        if (rec == NULL) {
            char msg[512];
            snprintf(msg, sizeof(msg), "artifact \"%.300s\" refused: %s", path, why);
            cJSON_Delete(records);
            report_failed(job, "user_error", "bad_artifact", msg);
            return;
        }
        cJSON_AddItemToArray(records, rec);
    }
    cJSON *data = event_data(job, "succeeded");
    cJSON_AddItemToObject(data, "result", job->result ? job->result : cJSON_CreateNull());
    job->result = NULL; /* owned by data */
    cJSON_AddItemToObject(data, "artifacts", records);
    nf_log_kv(NF_LOG_INFO, "job_succeeded", "job succeeded", "job_id", job->job_id, NULL);
    wk_publish_job_event(job->ctx, job, "forge.job.succeeded", data, true);
}

static void report_outcome(struct wk_job *job)
{
    char msg[768];
    const char *tail = job->last_stderr[0] ? job->last_stderr : "no stderr output";

    if (job->lost || job->stop == STOP_LOST) {
        nf_log_kv(NF_LOG_WARN, "job_abandoned_lost",
                  "job stopped after its lease was lost; "
                  "another attempt owns it",
                  "job_id", job->job_id, NULL);
    } else if (job->stop == STOP_CANCEL) {
        nf_log_kv(NF_LOG_INFO, "job_cancelled", "job cancelled", "job_id", job->job_id, NULL);
        wk_publish_job_event(job->ctx, job, "forge.job.cancelled", event_data(job, "cancelled"),
                             true);
    } else if (job->stop == STOP_TIMEOUT) {
        snprintf(msg, sizeof(msg), "handler exceeded timeout_seconds=%lld", job->timeout_s);
        report_failed(job, "timeout", "timeout", msg);
    } else if (job->stop == STOP_SHUTDOWN) {
        report_failed(job, "infra", "worker_shutdown",
                      "the worker shut down before the handler finished");
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

static void finish(struct wk_job *job)
{
    if (job->finished)
        return;
    job->finished = true;
    job_release_io(job);
    if (job->malformed > 0 || job->logs_dropped > 0) {
        char m[16], d[16];
        snprintf(m, sizeof(m), "%d", job->malformed);
        snprintf(d, sizeof(d), "%d", job->logs_dropped);
        nf_log_kv(NF_LOG_INFO, "handler_output_ignored", "handler lines ignored", "job_id",
                  job->job_id, "malformed", m, "logs_dropped", d, NULL);
    }
    wk_job_hold(job); /* keep job alive while queuing its messages */
    if (job->lost) {
        report_outcome(job); /* logged only: the attempt belongs to nobody here any more */
        wk_job_delivered(job);
        return;
    }
    if (job->progress_dirty)
        send_progress(job); /* the last value the throttle held back */
    emit_final_usage(job);
    report_outcome(job);
    wk_job_delivered(job);
}

/* A job that never ran: report it failed (infra, retried by the scheduler). */
static void finish_early(struct wk_job *job, const char *code, const char *message)
{
    job->finished = true;
    job_release_io(job);
    wk_job_hold(job);
    report_failed(job, "infra", code, message);
    wk_job_delivered(job);
}

/* ---- start -------------------------------------------------------------------------------- */

static struct wk_job *job_new(struct wk *ctx, const cJSON *doc, const char *lease_id)
{
    const char *job_id = nf_json_str(doc, "job_id");
    const char *type = nf_json_str(doc, "job_type");
    if (job_id == NULL || !nf_id_valid("job", job_id) || wk_job_type_index(type) < 0 ||
        lease_id == NULL || strlen(lease_id) >= NF_ID_MAX) {
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
    const char *user_id = nf_json_str(doc, "user_id");
    job->user_id = nf_xstrdup(user_id ? user_id : "");
    job->attempt = nf_json_int(doc, "attempt", 1);
    long long gc = nf_json_int(doc, "gpu_count", 0);
    job->gpu_count = gc < 0 ? 0 : gc > 64 ? 64 : (int)gc;
    long long to = nf_json_int(doc, "timeout_seconds", 0);
    job->timeout_s = to > 0 ? to : 0;
    job->artifacts = cJSON_CreateArray();
    snprintf(job->dir, sizeof(job->dir), "%s/%s", ctx->cfg.artifact_root, job_id);
    job->timeout_ev = evtimer_new(ctx->base, on_timeout, job);
    job->kill_ev = evtimer_new(ctx->base, on_kill, job);
    job->window_ev = event_new(ctx->base, -1, EV_PERSIST, on_window, job);
    job->progress_ev = evtimer_new(ctx->base, on_progress_timer, job);
    job->eof_ev = evtimer_new(ctx->base, on_eof_wait, job);
    job->check_ev = evtimer_new(ctx->base, on_check, job);
    if (!job->timeout_ev || !job->kill_ev || !job->window_ev || !job->progress_ev || !job->eof_ev ||
        !job->check_ev)
        abort();
    job->next = ctx->jobs;
    if (ctx->jobs)
        ctx->jobs->prev = job;
    ctx->jobs = job;
    ctx->njobs++;
    return job;
}

void wk_job_start(struct wk *ctx, const cJSON *doc, const char *lease_id)
{
    const char *why = NULL;
    struct wk_job *job = job_new(ctx, doc, lease_id);
    if (job == NULL)
        return;
    nf_log_kv(NF_LOG_INFO, "job_started", "job received", "job_id", job->job_id, "job_type",
              job->job_type, "lease_id", job->lease_id, NULL);
    wk_api_heartbeat_now(ctx); /* confirm the lease at once */
    if (ctx->stopping) {
        finish_early(job, "worker_shutdown", "the worker is shutting down");
        return;
    }
    if (mkdir(job->dir, 0755) < 0 && errno != EEXIST) {
        nf_log_kv(NF_LOG_ERROR, "artifact_dir_failed", strerror(errno), "path", job->dir, NULL);
        finish_early(job, "artifact_dir", "cannot create the job's artifact directory");
        return;
    }
    int rc = spawn(job, doc, &why);
    if (rc == -2) {
        signal_job(job, SIGKILL);
        job->stop = STOP_SHUTDOWN; /* reaped by SIGCHLD, then reported infra */
        return;
    }
    if (rc < 0) {
        finish_early(job, "handler_unavailable", why);
        return;
    }
    cJSON *data = event_data(job, "running");
    nf_json_add_str(data, "worker_id", ctx->worker_id);
    wk_publish_job_event(ctx, job, "forge.job.running", data, true);

    if (job->timeout_s > 0) {
        struct timeval tv = {(time_t)job->timeout_s, 0};
        evtimer_add(job->timeout_ev, &tv);
    }
    if (job->gpu_count > 0) {
        struct timeval tv = {ctx->cfg.usage_window_s, 0};
        event_add(job->window_ev, &tv);
    }
}

cJSON *wk_jobs_heartbeat(struct wk *ctx)
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

void wk_jobs_heartbeat_done(struct wk *ctx, bool ok)
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

void wk_jobs_free(struct wk *ctx)
{
    struct wk_job *next;
    for (struct wk_job *job = ctx->jobs; job != NULL; job = next) {
        next = job->next;
        if (job->pid > 0 && !job->exited) {
            nf_log_kv(NF_LOG_ERROR, "job_abandoned", "handler killed at exit, job not reported",
                      "job_id", job->job_id, NULL);
            signal_job(job, SIGKILL);
        }
        job_destroy(job);
    }
}
