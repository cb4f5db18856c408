#pragma once
/*
 * The reconciler's private parts, shared by its two files:
 *   reconciler.c         the pass runner (one work item per pass, driven by the table),
 *                        the timers, start and free; uses the passes, never used by them
 *   reconciler_passes.c  the statements, the Lua checks, the table of passes and their
 *                        per-row actions, rec_num
 *
 * A pass is a page query followed by a list of steps; each step works on the rows whose
 * action it names, and the runner moves to the next step when it succeeded:
 *
 *   query --rows--> step 0 --> step 1 --> ... --> finish
 *     |  no rows          |  a failed backend call: the same step again after a backoff
 *     +--> finish         +  a check that leaves no row to act on: finish
 */
#include "sched.h"

#define REC_BATCH 100      /* rows per page of the dispatch, timeout and cancel passes */
#define REC_SNAP_BATCH 200 /* rows per page of the snapshot passes */

enum rec_pass {
    REC_RETRY,
    REC_STUCK,
    REC_TIMEOUT,
    REC_CANCEL,
    REC_SNAP,
    REC_SNAP_RECENT,
    REC_NPASSES
};

/* The reconciler's counters, registered in this order (REC_C_NONE: a step counts nothing). */
enum rec_counter {
    REC_C_NONE,
    REC_C_REDISPATCHED,   /* lost dispatches produced again */
    REC_C_REQUEUED,       /* stuck attempts requeued as attempt + 1 */
    REC_C_RETRY_DISPATCH, /* due retries dispatched */
    REC_C_TIMEOUT,        /* jobs failed for running past their timeout */
    REC_C_CANCEL_CHECK,   /* stuck cancels asked again */
    REC_C_REPAIRED,       /* snapshots rewritten */
    REC_NCOUNTERS
};

/* The Lua checks, loaded once at start. */
enum rec_script { REC_S_WM_CHECK, REC_S_SNAP_CHECK, REC_NSCRIPTS };

/* What a row is up for, decided by a check or an update. */
enum rec_action { REC_A_NONE, REC_A_REDISPATCH, REC_A_REQUEUE, REC_A_REWRITE };
#define REC_ROWS_ALL (-1)   /* a step's rows: every row */
#define REC_ROWS_ACTED (-2) /* a step's rows: those with an action */

struct sched_reconciler {
    struct event *retry_tick, *sweep_tick;
    bool busy[REC_NPASSES];        /* a pass of this kind is alive */
    bool wm_asked;                 /* the worker-manager's readiness asked before the stuck pass */
    char stuck_after[NF_ID_MAX];   /* the stuck pass walks queued jobs by id */
    long long snap_after_us;       /* the snapshot pass's position: updated_at ... */
    char snap_after_id[NF_ID_MAX]; /* ... and job id */
    struct nf_counter *count[REC_NCOUNTERS];
    struct nf_redis_script *script[REC_NSCRIPTS]; /* owned by ctx->redis */
};

/* One pass alive: the work item plus its page of rows, copied out of the result. */
struct rec_work {
    struct nf_work w;
    const struct rec_pass_def *pass;
    int step;                 /* index into pass->steps; -1 while querying */
    struct sched_snap *snaps; /* rows as snapshots (job_id, user_id, status, doc, version) */
    cJSON **dispatch;         /* per row: dispatch data (NULL with ids_only) */
    int *attempt;             /* per row */
    int *action;              /* per row: enum rec_action */
    long long *age_s;         /* per row: the age_s column, 0 without it */
    int n;                    /* rows */
    int next;                 /* snapshot writes: the next row to write */
};

enum rec_step_kind {
    REC_CHECK,   /* one Lua check in Redis: ask, then answer sets the rows' actions */
    REC_UPDATE,  /* one statement over the rows' job ids and attempts ($1, $2 arrays) */
    REC_PRODUCE, /* one produce batch: row() produces the events of each row */
    REC_EACH,    /* row() on each row, then the rows are counted */
    REC_WRITE,   /* the rows' snapshots written one after the other; row() when rewritten */
};

typedef void (*rec_row_fn)(struct rec_work *rw, int i);

struct rec_step {
    const char *what; /* the stage name in logs; NULL keeps the one before */
    rec_row_fn row;   /* PRODUCE, EACH, WRITE; may be NULL for EACH and WRITE */
    const char *sql;  /* UPDATE */
    /* UPDATE: the statement's result (may be NULL) */
    void (*result)(struct rec_work *rw, const PGresult *res);
    /* CHECK: sends the script with its keys and arguments; cb gets the reply */
    void (*ask)(struct rec_work *rw, struct nf_redis_script *script, nf_redis_cb cb);
    /* CHECK: sets the rows' actions from an array reply; the rows acted on, -1 malformed */
    int (*answer)(struct rec_work *rw, const redisReply *reply);
    enum rec_step_kind kind;
    int rows;                 /* the rows it works on: an enum rec_action or REC_ROWS_* */
    enum rec_counter counter; /* EACH: counts its rows; WRITE: the rewritten ones */
    enum rec_script script;   /* CHECK */
    bool dispatched;          /* EACH: the rows count as dispatched too (ctx->m.dispatched) */
};

/* A query argument, read when the pass starts. */
enum rec_arg {
    REC_ARG_NONE,        /* no (more) arguments */
    REC_ARG_STUCK_S,     /* cfg.stuck_s */
    REC_ARG_GRACE_S,     /* cfg.timeout_grace_s */
    REC_ARG_RECENT_S,    /* the recent snapshot pass's look back */
    REC_ARG_STUCK_AFTER, /* the stuck pass's position */
    REC_ARG_SNAP_POS,    /* the snapshot pass's position: updated_at ... */
    REC_ARG_SNAP_AFTER,  /* ... and job id */
};
#define REC_MAX_ARGS 2 /* the limit comes after them */

struct rec_pass_def {
    const char *name; /* the first stage's name in logs */
    const char *sql;  /* the page: its args, then the limit */
    /* remembers where the next page starts (may be NULL) */
    void (*paged)(struct rec_work *rw, const PGresult *res);
    const struct rec_step *steps;
    int nsteps;
    int limit;
    enum rec_arg args[REC_MAX_ARGS];
    bool on_sweep; /* started every reconcile_s; otherwise every retry_poll_ms */
    bool ids_only; /* the page has only job_id: rows carry it alone */
};

extern const struct rec_pass_def rec_passes[REC_NPASSES];

/* An integer column of our own rows; def when NULL or not a number (reconciler_passes.c). */
long long rec_num(const char *text, long long def);
