/*
 * The child process of a job: spawn, inputs, pipes, signals, exit.
 *
 *   wk_child_spawn --> fork (own process group, PR_SET_PDEATHSIG)
 *       child: fetch the inputs (stage.c) --> note STAGED --> exec handlers/<type>
 *              (a failed fetch: note FAILED with class, code and message, exit)
 *       stdin  <-- the job JSON (bufferevent, closed once written)
 *       stdout --> lines --> wk_report_stdout_line
 *       stderr --> lines --> agent log `handler_stderr` (last line kept for errors)
 *       notes  --> STAGED: the GPU meter starts (the child's clock) | FAILED | EXEC errno
 *   wk_child_terminate --> SIGTERM --> kill_grace_s --> SIGKILL (also while fetching)
 *   SIGCHLD --> waitpid --> exited; once stdout, stderr and the notes hit EOF (or 2 s
 *       passed) and the checkpoints it announced are recorded (job_ckpt.c) --> exit 0:
 *       wk_upload_start (job_upload.c); else wk_report_finish
 *
 * Without inputs only async-signal-safe calls happen between fork and exec (librdkafka
 * has threads). With inputs (or a checkpoint to resume from: the dispatch's "resume",
 * fetched into <job dir>/resume, NF_RESUME_DIR; or a base model or benchmark from the store:
 * storecache.c) the child runs libcurl before exec: it touches
 * nothing of the loop's or librdkafka's, and glibc keeps malloc and stdio usable after fork; its
 * signal handlers are reset first, so a cancel or timeout ends a download at once. This file sits
 * below job.c and above job_upload.c, job_report.c and job_set.c.
 */
#define _GNU_SOURCE /* pipe2, close_range */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "job.h"
#include "nf_event.h"
#include "nf_log.h"

extern char **environ;

#define EOF_WAIT_MS 2000        /* after exit, how long to wait for the pipes' EOF */
#define MAX_STDERR_LOGGED 10000 /* stderr lines logged per job */
#define STDERR_LOG_MAX 1024     /* a logged stderr line is cut to this */

/* A note from the child on its report pipe: one write() each, below PIPE_BUF. */
enum { NOTE_STAGED = 'S', NOTE_FAILED = 'F', NOTE_EXEC = 'E' };
struct note {
    char tag;
    int err;                 /* NOTE_EXEC: errno of execve */
    long long ms;            /* NOTE_STAGED: the child's clock, ms since the epoch */
    struct wk_stage_err why; /* NOTE_FAILED */
};

/* ---- stdout / stderr --------------------------------------------------------------------- */

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

static void one_line(struct wk_job *job, bool is_stdout, const char *line, size_t len)
{
    if (is_stdout) {
        wk_report_stdout_line(job, line, len);
        wk_ckpt_pump(job); /* a checkpoint it announced is uploaded at once */
    } else
        stderr_line(job, line, len);
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
                    one_line(job, is_stdout, rest, left);
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
        if (*skip)
            *skip = false; /* the tail of an over-long line */
        else
            one_line(job, is_stdout, line, n);
        free(line);
    }
}

/* Finishes the job once it exited and its pipes hit EOF (or the EOF wait ran out): after
 * an exit 0, its artifacts are uploaded first. */
static void check_done(struct wk_job *job)
{
    wk_ckpt_check(job);
    if (job->uploading) {
        wk_upload_check(job);
        return;
    }
    if (!job->exited || job->finished || job->plan != NULL)
        return;
    if ((job->out != NULL || job->err != NULL || job->rep != NULL) && !job->eof_waited)
        return;
    if (wk_ckpt_busy(job)) {
        /* the checkpoints it announced are recorded first, unless the attempt was stopped */
        if (job->stop != WK_STOP_NONE || job->lost)
            wk_ckpt_kill(job);
        return; /* wk_ckpt_pump activates check_ev once idle */
    }
    if (job->stop == WK_STOP_NONE && !job->lost && !job->failed && WIFEXITED(job->wstatus) &&
        WEXITSTATUS(job->wstatus) == 0) {
        wk_bev_free(&job->rep);
        wk_upload_start(job); /* finishes the job when done */
        return;
    }
    wk_report_finish(job);
}

/* ---- the child's notes ------------------------------------------------------------------- */

static void got_note(struct wk_job *job, const struct note *n)
{
    switch (n->tag) {
    case NOTE_STAGED:
        job->staged = true;
        /* the GPU meter runs from here: the download is not the handler's time */
        job->started_ms = n->ms > 0 ? (uint64_t)n->ms : nf_now_ms();
        if (job->gpu_count > 0 && !job->exited) {
            struct timeval tv = {job->ctx->cfg->usage_window_s, 0};
            event_add(job->window_ev, &tv);
        }
        break;
    case NOTE_FAILED: {
        struct wk_stage_err why = n->why;
        why.klass[sizeof(why.klass) - 1] = why.code[sizeof(why.code) - 1] = '\0';
        why.message[sizeof(why.message) - 1] = '\0';
        wk_job_fail(job, strcmp(why.klass, "user_error") == 0 ? "user_error" : "infra", why.code,
                    "%s", why.message);
        break;
    }
    case NOTE_EXEC:
        nf_log_kv(NF_LOG_ERROR, "handler_exec_failed", strerror(n->err), "job_id", job->job_id,
                  NULL);
        wk_job_fail(job, "infra", "handler_unavailable", "the handler could not be executed: %s",
                    strerror(n->err));
        break;
    default:
        break;
    }
}

static void on_rep_read(struct bufferevent *bev, void *arg)
{
    struct wk_job *job = arg;
    struct evbuffer *buf = bufferevent_get_input(bev);
    struct note n;
    while (evbuffer_get_length(buf) >= sizeof(n)) {
        evbuffer_remove(buf, &n, sizeof(n));
        got_note(job, &n);
    }
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
    if (bev == job->rep) {
        on_rep_read(bev, job);
        wk_bev_free(&job->rep);
        check_done(job);
        return;
    }
    read_lines(job, bev, is_stdout, true);
    if (is_stdout)
        wk_bev_free(&job->out);
    else
        wk_bev_free(&job->err);
    check_done(job);
}

static void on_in_written(struct bufferevent *bev, void *arg)
{
    struct wk_job *job = arg;
    wk_bev_free(&job->in); /* closes the pipe: the handler sees EOF on stdin */
}

static void on_in_event(struct bufferevent *bev, short what, void *arg)
{
    struct wk_job *job = arg;
    wk_bev_free(&job->in); /* the handler closed stdin early: fine */
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

void wk_child_signal(struct wk_job *job, int sig)
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
    wk_child_signal(job, SIGKILL);
}

void wk_child_terminate(struct wk_job *job, enum wk_job_stop reason)
{
    static const char *const names[] = {"", "timeout", "cancelled", "shutdown", "lease_lost"};
    if (job->pid <= 0 || job->exited || job->stop != WK_STOP_NONE)
        return;
    job->stop = reason;
    nf_log_kv(NF_LOG_INFO, "handler_terminate", "stopping handler", "job_id", job->job_id, "reason",
              names[reason], NULL);
    wk_child_signal(job, SIGTERM);
    struct timeval tv = {job->ctx->cfg->kill_grace_s, 0};
    evtimer_add(job->kill_ev, &tv);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    wk_child_terminate(arg, WK_STOP_TIMEOUT);
}

void wk_child_init(struct wk_job *job)
{
    struct event_base *base = job->ctx->base;
    job->timeout_ev = evtimer_new(base, on_timeout, job);
    job->kill_ev = evtimer_new(base, on_kill, job);
    job->eof_ev = evtimer_new(base, on_eof_wait, job);
    job->check_ev = evtimer_new(base, on_check, job);
    if (!job->timeout_ev || !job->kill_ev || !job->eof_ev || !job->check_ev)
        abort();
}

void wk_on_sigchld(evutil_socket_t fd, short what, void *arg)
{
    struct wk_ctx *ctx = arg;
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct wk_job *job = ctx->jobs;
        while (job != NULL && job->pid != pid && job->up_pid != pid && job->ck_pid != pid)
            job = job->next;
        if (job == NULL)
            continue;
        if (job->ck_pid == pid) {
            job->ck_exited = true;
            job->ck_status = status;
            event_active(job->check_ev, EV_TIMEOUT, 0); /* next turn: wk_ckpt_check */
            continue;
        }
        if (job->up_pid == pid) {
            job->up_exited = true;
            job->up_status = status;
            event_active(job->check_ev, EV_TIMEOUT, 0); /* next turn: not while reaping */
            continue;
        }
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

/* ---- spawn -------------------------------------------------------------------------------- */

/* Appends one "NAME=value" entry (cut to PATH_MAX + 31 bytes) at env[(*k)++]. */
static void env_add(char **env, size_t *k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void env_add(char **env, size_t *k, const char *fmt, ...)
{
    char buf[PATH_MAX + 32];
    va_list ap;
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    env[(*k)++] = nf_xstrdup(buf);
}

/* true when the NAME of "NAME=value" is an item of the comma-separated list. */
static bool env_listed(const char *entry, const char *list)
{
    size_t len = strcspn(entry, "=");

    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, ", ");
        if (n == len && strncmp(p, entry, len) == 0)
            return true;
    }
    return false;
}

/* Environment of a handler: ours minus NF_* settings (secrets) but those the operator
 * names in NF_WORKER_HANDLER_ENV (the providers' file and keys), plus the job's. */
static char **build_env(const struct wk_job *job)
{
    const char *pass = job->ctx->cfg->handler_env;
    size_t n = 0, k = 0;
    while (environ[n] != NULL)
        n++;
    char **env = nf_xcalloc(n + 9, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "NF_", 3) == 0 && strncmp(environ[i], "NF_LOG_LEVEL=", 13) != 0 &&
            !env_listed(environ[i], pass))
            continue;
        if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) == 0 && job->ctx->ngpu_devices >= 0)
            continue; /* replaced by the job's own below */
        env[k++] = nf_xstrdup(environ[i]);
    }
    env_add(env, &k, "NF_JOB_ID=%s", job->job_id);
    env_add(env, &k, "NF_ARTIFACT_DIR=%s", job->dir);
    env_add(env, &k, "NF_GPU_COUNT=%d", job->gpu_count);
    /* pinned to its own GPUs (gpus.c); a job that asked for none sees none */
    if (job->ctx->ngpu_devices >= 0)
        env_add(env, &k, "CUDA_VISIBLE_DEVICES=%s", job->gpus);
    env_add(env, &k, "NF_JOB_TYPE=%s", job->job_type);
    env_add(env, &k, "NF_ATTEMPT=%lld", job->attempt);
    if (job->resume.n > 0)
        env_add(env, &k, "NF_RESUME_DIR=%s/resume", job->root_dir);
    env[k] = NULL;
    return env;
}

static void free_env(char **env)
{
    for (size_t i = 0; env[i] != NULL; i++)
        free(env[i]);
    free(env);
}

/* Writes one note on the report pipe (fd 3 in the child). */
static void send_note(const struct note *n)
{
    ssize_t w;
    do {
        w = write(3, n, sizeof(*n));
    } while (w < 0 && errno == EINTR);
}

/* What the child needs, prepared before fork (nothing is allocated for it after). */
struct child_args {
    const char *path; /* the handler */
    char *const *argv;
    char *const *env;
    int fd_in, fd_out, fd_err, fd_report;
    const char *dir;        /* the handler's cwd: out/ */
    const char *inputs_dir; /* where the inputs go */
    const struct wk_inputs *inputs;
    const char *resume_dir; /* where the resume checkpoint goes */
    const struct wk_inputs *resume;
    const struct wk_store_items *store; /* base models and benchmark data, into the cache */
    const struct wk_settings *set;      /* S3 and the input cap */
    pid_t parent;
};

/* Child side: the job's newest checkpoint into resume_dir (NF_RESUME_DIR) for a retried
 * attempt. A failure is not the attempt's: a {"log"} line says so and the handler starts
 * over. */
static int fetch_resume(const struct child_args *a)
{
    struct wk_stage_err why;
    char line[700];

    if (mkdir(a->resume_dir, 0700) < 0 && errno != EEXIST)
        return -1;
    if (wk_stage_in(&a->set->s3, a->resume, a->resume_dir, a->set->max_input_bytes, -1, &why) < 0) {
        cJSON *o = nf_json_obj();
        snprintf(line, sizeof(line),
                 "the checkpoint to resume from could not be fetched (%s): "
                 "starting over",
                 why.message);
        nf_json_add_str(o, "log", line);
        char *text = nf_json_print(o);
        wk_write_all(1, text, strlen(text));
        wk_write_all(1, "\n", 1);
        free(text);
        cJSON_Delete(o);
        return -1;
    }
    return 0;
}

/* Child side: fetch the inputs (if any), then exec the handler; never returns. */
static void child_exec(const struct child_args *a)
{
    sigset_t none;
    struct sigaction act;
    struct note n;
    struct timespec ts;

    memset(&n, 0, sizeof(n));
    setpgid(0, 0);
    /* The handler dies with the agent: a SIGKILLed agent's job is requeued elsewhere, and
     * an orphan must not keep the GPU busy or write artifacts for a lost attempt. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != a->parent)
        _exit(127);
    if (dup2(a->fd_in, 0) < 0 || dup2(a->fd_out, 1) < 0 || dup2(a->fd_err, 2) < 0 ||
        (a->fd_report != 3 && dup2(a->fd_report, 3) < 0))
        _exit(127);
    /* Every other descriptor (sockets of the agent) is closed now: a download may take a
     * while, and the agent's connections must end when the agent ends them. */
    if (close_range(4, ~0U, 0) < 0)
        for (int fd = 4; fd < 65536; fd++)
            close(fd);
    fcntl(3, F_SETFD, FD_CLOEXEC); /* EOF for the agent at exec */
    if (chdir(a->dir) < 0)
        goto fail;
    /* The loop's signal handlers are not ours: SIGTERM must end a download. */
    memset(&act, 0, sizeof(act));
    act.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGPIPE)
            sigaction(sig, &act, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (a->inputs->n > 0 && wk_stage_in(&a->set->s3, a->inputs, a->inputs_dir,
                                        a->set->max_input_bytes, 1, &n.why) < 0) {
        n.tag = NOTE_FAILED;
        send_note(&n);
        _exit(1);
    }
    if (a->store->n > 0 && wk_store_fetch(&a->set->s3, a->store, 1, &n.why) < 0) {
        n.tag = NOTE_FAILED;
        send_note(&n);
        _exit(1);
    }
    if (a->resume->n > 0 && fetch_resume(a) < 0)
        wk_rmtree(a->resume_dir); /* the handler starts over */
    clock_gettime(CLOCK_REALTIME, &ts);
    n.tag = NOTE_STAGED;
    n.ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    send_note(&n);
    sigaction(SIGPIPE, &act, NULL);
    execve(a->path, a->argv, a->env);
fail:
    n.tag = NOTE_EXEC;
    n.err = errno;
    send_note(&n);
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

int wk_child_spawn(struct wk_job *job, const cJSON *doc, const char **why)
{
    struct wk_ctx *ctx = job->ctx;
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    char path[PATH_MAX];
    int rc = -1;

    snprintf(path, sizeof(path), "%s/%s", ctx->cfg->handlers, job->job_type);
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
    char inputs_dir[PATH_MAX + 16], resume_dir[PATH_MAX + 16];
    snprintf(inputs_dir, sizeof(inputs_dir), "%s/inputs", job->root_dir);
    snprintf(resume_dir, sizeof(resume_dir), "%s/resume", job->root_dir);
    char **env = build_env(job);
    struct child_args args = {.path = path,
                              .argv = argv,
                              .env = env,
                              .fd_in = in[0],
                              .fd_out = out[1],
                              .fd_err = err[1],
                              .fd_report = rep[1],
                              .dir = job->dir,
                              .inputs_dir = inputs_dir,
                              .inputs = &job->inputs,
                              .resume_dir = resume_dir,
                              .resume = &job->resume,
                              .store = &job->store,
                              .set = &ctx->set,
                              .parent = getpid()};
    pid_t pid = fork();
    if (pid == 0)
        child_exec(&args);
    free_env(env);
    if (pid < 0) {
        *why = "fork failed";
        goto close_pipes;
    }
    setpgid(pid, pid); /* also done by the child; whichever runs first */
    job->pid = pid;
    close(rep[1]);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    in[0] = out[1] = err[1] = -1;
    rep[1] = -1;
    int fd_in = in[1], fd_out = out[0], fd_err = err[0], fd_rep = rep[0];
    in[1] = out[0] = err[0] = rep[0] = -1;
    if (nonblock_bev(job, fd_in, &job->in) < 0 || nonblock_bev(job, fd_out, &job->out) < 0 ||
        nonblock_bev(job, fd_err, &job->err) < 0 || nonblock_bev(job, fd_rep, &job->rep) < 0) {
        /* cannot happen short of out of memory; the child is stopped below by the caller */
        *why = "cannot watch the handler's pipes";
        rc = -2;
        goto close_pipes;
    }
    bufferevent_setcb(job->out, on_out_read, NULL, on_pipe_event, job);
    bufferevent_setcb(job->err, on_err_read, NULL, on_pipe_event, job);
    bufferevent_setcb(job->rep, on_rep_read, NULL, on_pipe_event, job);
    bufferevent_enable(job->rep, EV_READ);
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
