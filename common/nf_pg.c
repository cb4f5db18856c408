/*
 * nf_pg: a small pool of asynchronous libpq connections on libevent; the contract is in
 * nf_pg.h.
 *
 *   nf_pg_query/nf_pg_tx -> struct job (timer armed at enqueue) -> pg->queue (FIFO)
 *                                                                     | dispatch()
 *   conn:  DOWN --start_connect--> CONNECTING --PQconnectPoll OK--> IDLE <--> BUSY
 *           ^        (connect deadline, failure)         |           (lost, timeout)
 *           +-------- retry_ev: backoff 100 ms .. 2 s <--+-----------------+
 *
 *   A job runs as a list of steps on one connection: its statement, or for a transaction
 *   BEGIN, the statements, COMMIT. After each step the results are read until
 *   PQgetResult gives NULL; a failed step inside a transaction sends ROLLBACK before the
 *   callback fires.
 *
 * Every job ends in fire(): the callback runs once and the job is freed. A job's timer
 * counts from the enqueue; when it expires on a running job the connection is closed
 * (PQfinish, which also ends the server-side transaction) and reconnected, so the
 * callback still fires exactly once.
 *
 * Re-entrancy: a callback may call nf_pg_query, nf_pg_tx or nf_pg_free. Our libevent
 * callbacks count their nesting in pg->depth; nf_pg_free inside one fails the jobs at
 * once and leaves the freeing of connections and of the pool to the outermost callback
 * on its way out (leave()).
 */
#include "nf_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "nf_log.h"
#include "nf_mem.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define CONNECT_TIMEOUT_MIN_MS 2000
#define MAX_CONNS 64

struct stmt {
    char *sql;
    int nparams;
    char **params; /* NULL entries are SQL NULL */
};

struct job {
    struct nf_pg *pg;
    TAILQ_ENTRY(job) link; /* in pg->queue while waiting */
    struct conn *pc;       /* the connection running it, else NULL */
    nf_pg_cb cb;           /* may be NULL */
    void *arg;
    struct event *timer;
    struct stmt *stmts; /* owned copies */
    size_t n;
    bool tx;
    size_t step;       /* tx: 0 BEGIN, 1..n statements, n+1 COMMIT; else 0 */
    bool rolling_back; /* ROLLBACK sent after a failed step */
    PGresult *keep;    /* the result handed to the callback on success */
    bool failed;
    char err[512];
    char pgcode[8];
};

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

struct conn {
    struct nf_pg *pg;
    int idx;
    PGconn *conn;
    enum conn_state state;
    struct event *ev; /* socket event; rebuilt when the socket or interest changes */
    int ev_fd;
    short ev_what;
    bool flushing;          /* PQflush said more output is queued */
    struct event *retry_ev; /* reconnect after backoff_ms */
    struct event *deadline; /* connect attempt deadline */
    int backoff_ms;
    bool failing; /* the last connect failed: log the next ones at debug */
    struct job *job;
};

struct nf_pg {
    struct event_base *base;
    char *conninfo;
    int nconns;
    int timeout_ms;
    struct conn *conns;
    TAILQ_HEAD(job_queue, job) queue; /* waiting jobs, oldest first */
    int depth;                        /* nesting of our event callbacks and nf_pg_free */
    bool closing;                     /* nf_pg_free was called */
};

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (long)(ms % 1000) * 1000};
    return tv;
}

/* Copies a libpq message without its trailing newline. */
static void set_msg(char *dst, size_t len, const char *prefix, const char *msg)
{
    snprintf(dst, len, "%s%s", prefix, msg ? msg : "");
    size_t n = strlen(dst);
    while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
        dst[--n] = '\0';
}

static void notice_cb(void *arg, const char *message)
{
    char msg[512];
    set_msg(msg, sizeof(msg), "", message);
    nf_log_kv(NF_LOG_DEBUG, "pg_notice", "postgres notice", "notice", msg, NULL);
}

/* ---- jobs ---- */

static void stmt_copy(struct stmt *dst, const char *sql, int nparams, const char *const *params)
{
    dst->sql = nf_xstrdup(sql);
    dst->nparams = nparams;
    dst->params = nf_xcalloc((size_t)(nparams > 0 ? nparams : 1), sizeof(char *));
    for (int i = 0; i < nparams; i++)
        dst->params[i] = params[i] ? nf_xstrdup(params[i]) : NULL;
}

static void job_free(struct job *job)
{
    for (size_t i = 0; i < job->n; i++) {
        for (int j = 0; j < job->stmts[i].nparams; j++)
            free(job->stmts[i].params[j]);
        free(job->stmts[i].params);
        free(job->stmts[i].sql);
    }
    free(job->stmts);
    if (job->timer)
        event_free(job->timer);
    PQclear(job->keep);
    free(job);
}

static void job_fail(struct job *job, const char *prefix, const char *msg)
{
    if (job->failed)
        return; /* keep the first, most specific error */
    job->failed = true;
    set_msg(job->err, sizeof(job->err), prefix, msg);
    job->pgcode[0] = '\0';
}

/* Runs the callback once and frees the job, which must be detached from queue and conn. */
static void fire(struct job *job)
{
    if (job->timer) {
        event_free(job->timer);
        job->timer = NULL;
    }
    if (job->cb) {
        if (job->failed)
            job->cb(NULL, job->err, job->pgcode, job->arg);
        else
            job->cb(job->keep, NULL, "", job->arg);
    }
    job_free(job);
}

/* ---- connections ---- */

static void conn_cb(evutil_socket_t fd, short what, void *arg);
static void dispatch(struct nf_pg *pg);
static void destroy(struct nf_pg *pg);

/* Leaves one of our callbacks: the outermost one frees a pool closed meanwhile. */
static void leave(struct nf_pg *pg)
{
    pg->depth--;
    if (pg->depth == 0 && pg->closing)
        destroy(pg);
}

/*
 * Watches the connection's current socket for `what` (persistently). While connecting,
 * libpq may close its socket and open another that gets the same number, which epoll
 * would no longer report: `fresh` rebuilds the event regardless.
 */
static int watch_fd(struct conn *pc, short what, bool fresh)
{
    int fd = PQsocket(pc->conn);
    if (fd < 0)
        return -1;
    if (!fresh && pc->ev && pc->ev_fd == fd && pc->ev_what == what)
        return 0;
    if (pc->ev)
        event_free(pc->ev);
    pc->ev = event_new(pc->pg->base, fd, (short)(what | EV_PERSIST), conn_cb, pc);
    if (pc->ev == NULL)
        abort();
    pc->ev_fd = fd;
    pc->ev_what = what;
    return event_add(pc->ev, NULL);
}

static int watch(struct conn *pc, short what)
{
    return watch_fd(pc, what, false);
}

/* Closes the socket and forgets the connection; the running job, if any, stays with the
 * caller. */
static void close_conn(struct conn *pc)
{
    if (pc->ev) {
        event_free(pc->ev);
        pc->ev = NULL;
    }
    if (pc->deadline)
        evtimer_del(pc->deadline);
    if (pc->conn) {
        PQfinish(pc->conn);
        pc->conn = NULL;
    }
    pc->flushing = false;
    pc->state = CONN_DOWN;
}

static void schedule_retry(struct conn *pc)
{
    if (pc->pg->closing)
        return;
    struct timeval tv = ms_tv(pc->backoff_ms);
    evtimer_add(pc->retry_ev, &tv);
    pc->backoff_ms *= 2;
    if (pc->backoff_ms > BACKOFF_MAX_MS)
        pc->backoff_ms = BACKOFF_MAX_MS;
}

static void connect_failed(struct conn *pc, const char *why)
{
    char msg[512];
    set_msg(msg, sizeof(msg), "", why);
    char idx[16];
    snprintf(idx, sizeof(idx), "%d", pc->idx);
    nf_log_kv(pc->failing ? NF_LOG_DEBUG : NF_LOG_WARN, "pg_connect_failed",
              "cannot connect to postgres", "conn", idx, "error", msg, NULL);
    pc->failing = true;
    close_conn(pc);
    schedule_retry(pc);
}

/*
 * The connection broke (or was given up) while up: fail its job with `why` and reconnect.
 * Fires the job's callback: callers return right after.
 */
static void conn_lost(struct conn *pc, const char *prefix, const char *why)
{
    struct job *job = pc->job;
    char msg[512];
    set_msg(msg, sizeof(msg), prefix, why);
    char idx[16];
    snprintf(idx, sizeof(idx), "%d", pc->idx);
    nf_log_kv(NF_LOG_WARN, "pg_conn_lost", "postgres connection closed", "conn", idx, "error", msg,
              NULL);
    pc->job = NULL;
    close_conn(pc);
    schedule_retry(pc);
    if (job) {
        job->pc = NULL;
        job_fail(job, "", msg);
        fire(job);
    }
}

static void connected(struct conn *pc)
{
    evtimer_del(pc->deadline);
    if (PQsetnonblocking(pc->conn, 1) != 0 || watch_fd(pc, EV_READ, true) < 0) {
        connect_failed(pc, PQerrorMessage(pc->conn));
        return;
    }
    pc->state = CONN_IDLE;
    pc->backoff_ms = BACKOFF_MIN_MS;
    if (pc->failing || pc->idx == 0) {
        char idx[16];
        snprintf(idx, sizeof(idx), "%d", pc->idx);
        nf_log_kv(NF_LOG_INFO, "pg_connected", "connected to postgres", "conn", idx, NULL);
    }
    pc->failing = false;
    dispatch(pc->pg);
}

/* One PQconnectPoll step; the socket may change between steps. */
static void poll_connect(struct conn *pc)
{
    switch (PQconnectPoll(pc->conn)) {
    case PGRES_POLLING_READING:
        if (watch_fd(pc, EV_READ, true) < 0)
            connect_failed(pc, "no socket");
        break;
    case PGRES_POLLING_WRITING:
        if (watch_fd(pc, EV_WRITE, true) < 0)
            connect_failed(pc, "no socket");
        break;
    case PGRES_POLLING_OK:
        connected(pc);
        break;
    default:
        connect_failed(pc, PQerrorMessage(pc->conn));
        break;
    }
}

static void start_connect(struct conn *pc)
{
    struct nf_pg *pg = pc->pg;
    const char *const keys[] = {"dbname", NULL};
    const char *const vals[] = {pg->conninfo, NULL};

    pc->conn = PQconnectStartParams(keys, vals, 1); /* expand_dbname: conninfo or URI */
    if (pc->conn == NULL)
        abort(); /* out of memory */
    if (PQstatus(pc->conn) == CONNECTION_BAD) {
        connect_failed(pc, PQerrorMessage(pc->conn));
        return;
    }
    PQsetNoticeProcessor(pc->conn, notice_cb, NULL);
    pc->state = CONN_CONNECTING;
    int ms = pg->timeout_ms > CONNECT_TIMEOUT_MIN_MS ? pg->timeout_ms : CONNECT_TIMEOUT_MIN_MS;
    struct timeval tv = ms_tv(ms);
    evtimer_add(pc->deadline, &tv);
    /* libpq: after PQconnectStart, act as if PQconnectPoll had said WRITING */
    if (watch_fd(pc, EV_WRITE, true) < 0)
        connect_failed(pc, "no socket");
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *pc = arg;
    struct nf_pg *pg = pc->pg;
    pg->depth++;
    if (!pg->closing && pc->state == CONN_DOWN)
        start_connect(pc);
    leave(pg);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *pc = arg;
    struct nf_pg *pg = pc->pg;
    pg->depth++;
    if (pc->state == CONN_CONNECTING)
        connect_failed(pc, "connect timed out");
    leave(pg);
}

/* ---- running jobs ---- */

static size_t nsteps(const struct job *job)
{
    return job->tx ? job->n + 2 : 1;
}

/* Sends the job's current step (or ROLLBACK) and starts flushing it. */
static int send_step(struct conn *pc)
{
    struct job *job = pc->job;
    const char *sql;
    int nparams = 0;
    const char *const *params = NULL;

    if (job->rolling_back) {
        sql = "ROLLBACK";
    } else if (job->tx && job->step == 0) {
        sql = "BEGIN";
    } else if (job->tx && job->step == job->n + 1) {
        sql = "COMMIT";
    } else {
        const struct stmt *st = &job->stmts[job->tx ? job->step - 1 : 0];
        sql = st->sql;
        nparams = st->nparams;
        params = (const char *const *)st->params;
    }
    if (!PQsendQueryParams(pc->conn, sql, nparams, NULL, params, NULL, NULL, 0))
        return -1;
    int rc = PQflush(pc->conn);
    if (rc < 0)
        return -1;
    pc->flushing = rc == 1;
    return watch(pc, pc->flushing ? EV_READ | EV_WRITE : EV_READ);
}

/* Hands idle connections the oldest waiting jobs. Never fires a callback. */
static void dispatch(struct nf_pg *pg)
{
    if (pg->closing)
        return;
    for (int i = 0; i < pg->nconns && !TAILQ_EMPTY(&pg->queue); i++) {
        struct conn *pc = &pg->conns[i];
        if (pc->state != CONN_IDLE)
            continue;
        struct job *job = TAILQ_FIRST(&pg->queue);
        TAILQ_REMOVE(&pg->queue, job, link);
        pc->job = job;
        job->pc = pc;
        job->step = 0;
        pc->state = CONN_BUSY;
        if (send_step(pc) < 0) {
            /* nothing ran: the job goes back to the front, the connection is redone */
            char msg[512];
            set_msg(msg, sizeof(msg), "", PQerrorMessage(pc->conn));
            nf_log_kv(NF_LOG_WARN, "pg_conn_lost", "postgres connection closed", "error", msg,
                      NULL);
            pc->job = NULL;
            job->pc = NULL;
            TAILQ_INSERT_HEAD(&pg->queue, job, link);
            close_conn(pc);
            schedule_retry(pc);
        }
    }
}

/* Takes one result of the current step. Returns -1 when the connection is unusable. */
static int absorb(struct job *job, PGresult *res)
{
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY: {
        bool last = job->tx ? job->step == job->n : true;
        if (last && !job->rolling_back && !job->failed) {
            PQclear(job->keep);
            job->keep = res;
            return 0;
        }
        PQclear(res);
        return 0;
    }
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        PQclear(res);
        job_fail(job, "", "COPY is not supported");
        return -1;
    default:
        if (!job->failed) {
            const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            job->failed = true;
            /* the primary message only: DETAIL may quote row values */
            const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            set_msg(job->err, sizeof(job->err), "", primary ? primary : PQresultErrorMessage(res));
            if (job->err[0] == '\0')
                set_msg(job->err, sizeof(job->err), "", PQresStatus(PQresultStatus(res)));
            snprintf(job->pgcode, sizeof(job->pgcode), "%s", code ? code : "");
        }
        PQclear(res);
        return 0;
    }
}

/* The current step has all its results: next step, ROLLBACK, or the end of the job. */
static void step_done(struct conn *pc)
{
    struct job *job = pc->job;
    bool next = false;

    if (job->rolling_back) {
        next = false;
    } else if (job->failed) {
        /* inside a transaction (after BEGIN, before COMMIT): roll it back first */
        if (job->tx && job->step > 0 && job->step <= job->n) {
            job->rolling_back = true;
            next = true;
        }
    } else if (++job->step < nsteps(job)) {
        next = true;
    }

    if (next) {
        if (send_step(pc) < 0)
            conn_lost(pc, "", PQerrorMessage(pc->conn));
        return;
    }

    pc->job = NULL;
    job->pc = NULL;
    pc->state = CONN_IDLE;
    if (PQtransactionStatus(pc->conn) != PQTRANS_IDLE) {
        /* a statement opened a transaction (a bare BEGIN) or a ROLLBACK failed: never
         * hand that session to the next caller */
        nf_log_kv(NF_LOG_WARN, "pg_conn_reset", "postgres session left inside a transaction", NULL);
        close_conn(pc);
        schedule_retry(pc);
    } else if (watch(pc, EV_READ) < 0) {
        close_conn(pc);
        schedule_retry(pc);
    }
    dispatch(pc->pg);
    fire(job);
}

static void busy_io(struct conn *pc, short what)
{
    if ((what & EV_READ) && !PQconsumeInput(pc->conn)) {
        conn_lost(pc, "", PQerrorMessage(pc->conn));
        return;
    }
    if (pc->flushing) {
        int rc = PQflush(pc->conn);
        if (rc < 0) {
            conn_lost(pc, "", PQerrorMessage(pc->conn));
            return;
        }
        pc->flushing = rc == 1;
        if (watch(pc, pc->flushing ? EV_READ | EV_WRITE : EV_READ) < 0) {
            conn_lost(pc, "", "no socket");
            return;
        }
    }
    while (!PQisBusy(pc->conn)) {
        PGresult *res = PQgetResult(pc->conn);
        if (res == NULL) {
            step_done(pc);
            return;
        }
        if (absorb(pc->job, res) < 0) {
            conn_lost(pc, "", pc->job->err);
            return;
        }
    }
    if (PQstatus(pc->conn) == CONNECTION_BAD)
        conn_lost(pc, "", PQerrorMessage(pc->conn));
}

/* Input on an idle connection: notices, notifications, or the server going away. */
static void idle_io(struct conn *pc)
{
    if (!PQconsumeInput(pc->conn) || PQstatus(pc->conn) == CONNECTION_BAD) {
        conn_lost(pc, "", PQerrorMessage(pc->conn));
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(pc->conn)) != NULL)
        PQfreemem(n);
}

static void conn_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *pc = arg;
    struct nf_pg *pg = pc->pg;
    pg->depth++;
    switch (pc->state) {
    case CONN_CONNECTING:
        poll_connect(pc);
        break;
    case CONN_IDLE:
        idle_io(pc);
        break;
    case CONN_BUSY:
        busy_io(pc, what);
        break;
    case CONN_DOWN:
        break;
    }
    leave(pg);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct job *job = arg;
    struct nf_pg *pg = job->pg;
    char msg[64];
    snprintf(msg, sizeof(msg), "query timed out after %d ms", pg->timeout_ms);
    pg->depth++;
    event_free(job->timer);
    job->timer = NULL;
    if (job->pc) {
        /* Running: PQcancel would block; close the connection (the server ends the
         * statement and any transaction) and reconnect. */
        struct conn *pc = job->pc;
        pc->job = NULL;
        job->pc = NULL;
        nf_log_kv(NF_LOG_WARN, "pg_query_timeout", "postgres query timed out, reconnecting", NULL);
        close_conn(pc);
        pc->backoff_ms = BACKOFF_MIN_MS;
        schedule_retry(pc);
    } else {
        TAILQ_REMOVE(&pg->queue, job, link);
        nf_log_kv(NF_LOG_WARN, "pg_query_timeout", "postgres query timed out in queue", NULL);
    }
    job_fail(job, "", msg); /* a failed transaction being rolled back keeps its error */
    fire(job);
    leave(pg);
}

/* ---- public ---- */

static int enqueue(struct nf_pg *pg, struct job *job)
{
    job->pg = pg;
    if (pg->closing) {
        job_fail(job, "", "postgres pool is closing");
        fire(job);
        return 0;
    }
    job->timer = evtimer_new(pg->base, timeout_cb, job);
    if (job->timer == NULL)
        abort();
    struct timeval tv = ms_tv(pg->timeout_ms);
    evtimer_add(job->timer, &tv);
    TAILQ_INSERT_TAIL(&pg->queue, job, link);
    dispatch(pg);
    return 0;
}

int nf_pg_query(struct nf_pg *pg, const char *sql, int nparams, const char *const *params,
                nf_pg_cb cb, void *arg)
{
    if (pg == NULL || sql == NULL || nparams < 0 || (nparams > 0 && params == NULL))
        return -1;
    struct job *job = nf_xcalloc(1, sizeof(*job));
    job->cb = cb;
    job->arg = arg;
    job->n = 1;
    job->stmts = nf_xcalloc(1, sizeof(*job->stmts));
    stmt_copy(&job->stmts[0], sql, nparams, params);
    return enqueue(pg, job);
}

int nf_pg_tx(struct nf_pg *pg, const struct nf_pg_stmt *stmts, size_t n, nf_pg_cb cb, void *arg)
{
    if (pg == NULL || stmts == NULL || n == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (stmts[i].sql == NULL || stmts[i].nparams < 0 ||
            (stmts[i].nparams > 0 && stmts[i].params == NULL))
            return -1;
    struct job *job = nf_xcalloc(1, sizeof(*job));
    job->cb = cb;
    job->arg = arg;
    job->tx = true;
    job->n = n;
    job->stmts = nf_xcalloc(n, sizeof(*job->stmts));
    for (size_t i = 0; i < n; i++)
        stmt_copy(&job->stmts[i], stmts[i].sql, stmts[i].nparams, stmts[i].params);
    return enqueue(pg, job);
}

int nf_pg_new(struct nf_pg **out, struct event_base *base, const char *conninfo, int nconns,
              int timeout_ms)
{
    if (out == NULL || base == NULL || conninfo == NULL || nconns <= 0 || nconns > MAX_CONNS ||
        timeout_ms <= 0)
        return -1;

    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (opts == NULL) {
        char msg[512];
        set_msg(msg, sizeof(msg), "", perr ? perr : "out of memory");
        nf_log_kv(NF_LOG_ERROR, "pg_bad_conninfo", "cannot parse postgres conninfo", "error", msg,
                  NULL);
        PQfreemem(perr);
        return -1;
    }
    PQconninfoFree(opts);

    struct nf_pg *pg = nf_xcalloc(1, sizeof(*pg));
    pg->base = base;
    pg->conninfo = nf_xstrdup(conninfo);
    pg->nconns = nconns;
    pg->timeout_ms = timeout_ms;
    TAILQ_INIT(&pg->queue);
    pg->conns = nf_xcalloc((size_t)nconns, sizeof(*pg->conns));
    for (int i = 0; i < nconns; i++) {
        struct conn *pc = &pg->conns[i];
        pc->pg = pg;
        pc->idx = i;
        pc->backoff_ms = BACKOFF_MIN_MS;
        pc->retry_ev = evtimer_new(base, retry_cb, pc);
        pc->deadline = evtimer_new(base, deadline_cb, pc);
        if (pc->retry_ev == NULL || pc->deadline == NULL)
            goto err_free;
    }
    for (int i = 0; i < nconns; i++)
        start_connect(&pg->conns[i]); /* failures schedule a retry */
    *out = pg;
    return 0;

err_free:
    destroy(pg);
    return -1;
}

bool nf_pg_ready(const struct nf_pg *pg)
{
    if (pg == NULL || pg->closing)
        return false;
    for (int i = 0; i < pg->nconns; i++)
        if (pg->conns[i].state == CONN_IDLE || pg->conns[i].state == CONN_BUSY)
            return true;
    return false;
}

/* Frees connections and the pool; no jobs may be left. */
static void destroy(struct nf_pg *pg)
{
    for (int i = 0; i < pg->nconns; i++) {
        struct conn *pc = &pg->conns[i];
        close_conn(pc);
        if (pc->retry_ev)
            event_free(pc->retry_ev);
        if (pc->deadline)
            event_free(pc->deadline);
    }
    free(pg->conns);
    free(pg->conninfo);
    free(pg);
}

void nf_pg_free(struct nf_pg *pg)
{
    if (pg == NULL || pg->closing)
        return;
    pg->closing = true;
    pg->depth++;
    for (int i = 0; i < pg->nconns; i++) {
        struct conn *pc = &pg->conns[i];
        struct job *job = pc->job;
        if (job == NULL)
            continue;
        pc->job = NULL;
        job->pc = NULL;
        job_fail(job, "", "postgres pool closed");
        fire(job); /* jobs started from here fail at once: closing is set */
    }
    while (!TAILQ_EMPTY(&pg->queue)) {
        struct job *job = TAILQ_FIRST(&pg->queue);
        TAILQ_REMOVE(&pg->queue, job, link);
        job_fail(job, "", "postgres pool closed");
        fire(job);
    }
    leave(pg);
}

const char *nf_pg_val(const PGresult *res, int row, const char *col)
{
    if (res == NULL || col == NULL || row < 0 || row >= PQntuples(res))
        return NULL;
    int c = PQfnumber(res, col);
    if (c < 0 || PQgetisnull(res, row, c))
        return NULL;
    return PQgetvalue(res, row, c);
}
