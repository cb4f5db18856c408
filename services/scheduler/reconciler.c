/*
 * The reconciler: periodic passes that repair what a lost message, a crash or a Redis
 * that lost its data left behind. Postgres is the truth; every pass reads it, compares
 * and acts idempotently (deterministic event ids, versioned snapshot writes), so several
 * scheduler copies may run the passes at once. What each pass does is a row of the table
 * in reconciler_passes.c; this file runs them, and depends on that table, never the
 * other way round.
 *
 *   every retry_poll_ms  retry_due: queued jobs whose next_attempt_at has come
 *   every reconcile_s    stuck_queued, timeouts, stuck_cancels, snapshots,
 *                        recent_snapshots
 *
 * Each pass is a work item (nf_work.h) without a Kafka message: backend failures retry with
 * backoff, shutdown waits for the busy ones, and at most one pass of each kind is alive.
 * The item's stage is always run_step (or the query), so a retry runs the failed step
 * again; rw->step says which step that is.
 */
#include "reconciler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "routes.h"

#define ARRAY_MAX (REC_BATCH * (NF_ID_MAX + 1) + 8)

/* Frees the page's rows (a retried query reads them again). */
static void drop_rows(struct rec_work *rw)
{
    int i;

    for (i = 0; i < rw->n; i++) {
        sched_snap_clear(&rw->snaps[i]);
        if (rw->dispatch)
            cJSON_Delete(rw->dispatch[i]);
    }
    free(rw->snaps);
    free(rw->dispatch);
    free(rw->attempt);
    free(rw->action);
    free(rw->age_s);
    rw->snaps = NULL;
    rw->dispatch = NULL;
    rw->attempt = NULL;
    rw->action = NULL;
    rw->age_s = NULL;
    rw->n = 0;
}

static void pass_dtor(struct nf_work *w)
{
    struct rec_work *rw = (struct rec_work *)w;

    if (sched_of(w)->rec)
        sched_of(w)->rec->busy[rw->pass - rec_passes] = false;
    drop_rows(rw);
}

/* Copies the rows of res into rw: snapshots, dispatch data, attempts and ages, or (ids_only)
 * the job ids alone. Rows without an attempt or an id are left out. */
static void take_rows(struct rec_work *rw, const PGresult *res)
{
    struct sched_job job;
    const char *job_id;
    int i, n = PQntuples(res);

    drop_rows(rw);
    rw->snaps = nf_xcalloc((size_t)n + 1, sizeof(*rw->snaps));
    rw->dispatch = nf_xcalloc((size_t)n + 1, sizeof(cJSON *));
    rw->attempt = nf_xcalloc((size_t)n + 1, sizeof(*rw->attempt));
    rw->action = nf_xcalloc((size_t)n + 1, sizeof(*rw->action));
    rw->age_s = nf_xcalloc((size_t)n + 1, sizeof(*rw->age_s));
    for (i = 0; i < n; i++) {
        if (rw->pass->ids_only) {
            job_id = nf_pg_val(res, i, "job_id");
            if (job_id)
                rw->snaps[rw->n++].job_id = nf_xstrdup(job_id);
            continue;
        }
        sched_job_from_row(res, i, &job);
        if (!job.attempt || sched_snap_from_job(&job, &rw->snaps[rw->n]) < 0)
            continue;
        rw->dispatch[rw->n] = sched_dispatch_data(&job);
        rw->attempt[rw->n] = (int)rec_num(job.attempt, 0);
        rw->age_s[rw->n] = rec_num(nf_pg_val(res, i, "age_s"), 0);
        rw->n++;
    }
}

static bool row_in(const struct rec_work *rw, int i, int rows)
{
    if (rows == REC_ROWS_ALL)
        return true;
    if (rows == REC_ROWS_ACTED)
        return rw->action[i] != REC_A_NONE;
    return rw->action[i] == rows;
}

/* "{a,b}" of the job ids and "{1,2}" of the attempts of the rows in `rows`. Returns how
 * many rows matched. */
static int arrays_of(const struct rec_work *rw, int rows, char *ids, char *atts, size_t len)
{
    size_t a = 0, b = 0;
    int i, n = 0;

    ids[a++] = '{';
    atts[b++] = '{';
    for (i = 0; i < rw->n; i++) {
        if (!row_in(rw, i, rows))
            continue;
        a += (size_t)snprintf(ids + a, len - a, "%s%s", n ? "," : "", rw->snaps[i].job_id);
        b += (size_t)snprintf(atts + b, len - b, "%s%d", n ? "," : "", rw->attempt[i]);
        n++;
    }
    snprintf(ids + a, len - a, "}");
    snprintf(atts + b, len - b, "}");
    return n;
}

/* ---- the steps ------------------------------------------------------------------------- */

static void run_step(struct nf_work *w);

/* The current step is done: on to the next one, or the pass is over. */
static void next_step(struct nf_work *w)
{
    struct rec_work *rw = (struct rec_work *)w;

    rw->step++;
    rw->next = 0;
    if (rw->step >= rw->pass->nsteps) {
        nf_work_finish(w);
        return;
    }
    nf_work_goto(w, run_step);
}

static void on_checked(redisReply *reply, void *arg)
{
    struct rec_work *rw = arg;
    int acted;

    if (sched_redis_failed(&rw->w, reply, REDIS_REPLY_ARRAY))
        return;
    acted = rw->pass->steps[rw->step].answer(rw, reply);
    if (acted < 0) {
        nf_work_retry(&rw->w, "redis unavailable");
        return;
    }
    if (acted == 0) {
        nf_work_finish(&rw->w);
        return;
    }
    nf_work_goto(&rw->w, next_step);
}

static void on_updated(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct rec_work *rw = arg;
    const struct rec_step *s = &rw->pass->steps[rw->step];

    if (nf_work_failed(&rw->w, res, err))
        return;
    if (s->result)
        s->result(rw, res);
    nf_work_goto(&rw->w, next_step);
}

static void update(struct rec_work *rw, const struct rec_step *s)
{
    char *ids = nf_xmalloc(ARRAY_MAX), *atts = nf_xmalloc(ARRAY_MAX);
    const char *params[2] = {ids, atts};

    if (arrays_of(rw, s->rows, ids, atts, ARRAY_MAX) == 0)
        nf_work_goto(&rw->w, next_step);
    else if (nf_pg_query(sched_of(&rw->w)->pg, s->sql, 2, params, on_updated, rw) < 0)
        nf_work_retry(&rw->w, "could not queue the update");
    free(ids);
    free(atts);
}

static void produce(struct rec_work *rw, const struct rec_step *s)
{
    int i;

    nf_work_produce_begin(&rw->w);
    for (i = 0; i < rw->n; i++)
        if (row_in(rw, i, s->rows))
            s->row(rw, i);
    nf_work_produce_end(&rw->w, next_step);
}

static void each(struct rec_work *rw, const struct rec_step *s)
{
    struct sched_ctx *ctx = sched_of(&rw->w);
    int i, n = 0;

    for (i = 0; i < rw->n; i++) {
        if (!row_in(rw, i, s->rows))
            continue;
        if (s->row)
            s->row(rw, i);
        n++;
    }
    if (s->counter != REC_C_NONE)
        nf_metrics_counter_add(ctx->rec->count[s->counter], (uint64_t)n);
    if (s->dispatched)
        nf_metrics_counter_add(ctx->m.dispatched, (uint64_t)n);
    next_step(&rw->w);
}

static void on_written(redisReply *reply, void *arg)
{
    struct rec_work *rw = arg;
    const struct rec_step *s = &rw->pass->steps[rw->step];

    if (sched_redis_failed(&rw->w, reply, 0))
        return;
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        if (s->counter != REC_C_NONE)
            nf_metrics_counter_add(sched_of(&rw->w)->rec->count[s->counter], 1);
        if (s->row)
            s->row(rw, rw->next);
    }
    rw->next++;
    nf_work_goto(&rw->w, run_step);
}

/* Writes the next snapshot of the step's rows; the step is over after the last one. */
static void write_next(struct rec_work *rw, const struct rec_step *s)
{
    while (rw->next < rw->n && !row_in(rw, rw->next, s->rows))
        rw->next++;
    if (rw->next >= rw->n) {
        next_step(&rw->w);
        return;
    }
    (void)sched_snapshot_write(sched_of(&rw->w), &rw->snaps[rw->next], on_written, rw);
}

static void check(struct rec_work *rw, const struct rec_step *s)
{
    s->ask(rw, sched_of(&rw->w)->rec->script[s->script], on_checked);
}

/* The stage of every step: runs (or runs again) rw->step. */
static void run_step(struct nf_work *w)
{
    static void (*const run[])(struct rec_work * rw, const struct rec_step *s) = {
        [REC_CHECK] = check, [REC_UPDATE] = update,    [REC_PRODUCE] = produce,
        [REC_EACH] = each,   [REC_WRITE] = write_next,
    };
    struct rec_work *rw = (struct rec_work *)w;
    const struct rec_step *s = &rw->pass->steps[rw->step];

    if (s->what)
        w->what = s->what;
    run[s->kind](rw, s);
}

/* ---- the page query -------------------------------------------------------------------- */

static void on_rows(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct rec_work *rw = arg;

    if (nf_work_failed(&rw->w, res, err))
        return;
    take_rows(rw, res);
    if (rw->pass->paged)
        rw->pass->paged(rw, res);
    if (rw->n == 0) {
        nf_work_finish(&rw->w);
        return;
    }
    nf_work_goto(&rw->w, next_step);
}

/* One argument of the page query, formatted into buf or pointing into rec. */
static const char *arg_value(struct sched_ctx *ctx, enum rec_arg a, char buf[24])
{
    struct sched_reconciler *rec = ctx->rec;
    long long v = 0;

    switch (a) {
    case REC_ARG_STUCK_AFTER:
        return rec->stuck_after;
    case REC_ARG_SNAP_AFTER:
        return rec->snap_after_id;
    case REC_ARG_STUCK_S:
        v = ctx->cfg->stuck_s;
        break;
    case REC_ARG_GRACE_S:
        v = ctx->cfg->timeout_grace_s;
        break;
    case REC_ARG_RECENT_S:
        /* two sweeps and a margin: every change is looked at at least once after it settled */
        v = 2LL * ctx->cfg->reconcile_s + 10;
        break;
    case REC_ARG_SNAP_POS:
        v = rec->snap_after_us;
        break;
    case REC_ARG_NONE:
        break;
    }
    snprintf(buf, 24, "%lld", v);
    return buf;
}

static void query(struct nf_work *w)
{
    struct rec_work *rw = (struct rec_work *)w;
    const struct rec_pass_def *p = rw->pass;
    char bufs[REC_MAX_ARGS + 1][24];
    const char *params[REC_MAX_ARGS + 1];
    int i;

    w->what = p->name;
    for (i = 0; i < REC_MAX_ARGS && p->args[i] != REC_ARG_NONE; i++)
        params[i] = arg_value(sched_of(w), p->args[i], bufs[i]);
    snprintf(bufs[i], sizeof(bufs[i]), "%d", p->limit);
    params[i] = bufs[i];
    if (nf_pg_query(sched_of(w)->pg, p->sql, i + 1, params, on_rows, w) < 0)
        nf_work_retry(w, "could not queue the query");
}

/* ---- timers ----------------------------------------------------------------------------- */

static void start_pass(struct sched_ctx *ctx, enum rec_pass kind)
{
    struct sched_reconciler *rec = ctx->rec;
    struct rec_work *rw;

    if (rec->busy[kind] || ctx->svc->stopping)
        return;
    rec->busy[kind] = true;
    rw = (struct rec_work *)nf_work_new(&ctx->work, NULL, sizeof(*rw));
    rw->w.dtor = pass_dtor;
    rw->w.what = rec_passes[kind].name;
    rw->pass = &rec_passes[kind];
    rw->step = -1;
    nf_work_start(&rw->w, NULL, query);
}

/* The worker-manager's /readyz before the stuck pass: 200 -> the pass runs. */
static void on_wm_ready(const struct nf_http_resp *resp, void *arg)
{
    struct sched_ctx *ctx = arg;

    if (!ctx->rec || ctx->svc->closing || ctx->svc->stopping)
        return;
    ctx->rec->wm_asked = false;
    if (resp->status == 200) {
        start_pass(ctx, REC_STUCK);
        return;
    }
    nf_log_kv(NF_LOG_INFO, "stuck_pass_skipped",
              "the worker-manager is not ready: dispatches may still be on their way to it",
              "status", resp->status ? "503" : "unreachable", "reason",
              resp->status ? resp->body : resp->error, NULL);
}

/*
 * The stuck pass dispatches again what the worker-manager does not hold. While it is not
 * consuming (restarting, partitions being handed over, no progress) a dispatch can wait
 * on its topic longer than stuck_s: the pass would only make duplicates, so it waits for
 * the worker-manager to say it is ready.
 */
static void start_stuck(struct sched_ctx *ctx)
{
    if (ctx->rec->busy[REC_STUCK] || ctx->rec->wm_asked || !ctx->wm)
        return;
    ctx->rec->wm_asked = true;
    if (nf_http_client_request(ctx->wm, "GET", "/readyz", NULL, NULL, 0, 0, on_wm_ready, ctx) != 0)
        ctx->rec->wm_asked = false;
}

static void start_passes(struct sched_ctx *ctx, bool sweep)
{
    int kind;

    for (kind = 0; kind < REC_NPASSES; kind++) {
        if (rec_passes[kind].on_sweep != sweep)
            continue;
        if (kind == REC_STUCK)
            start_stuck(ctx);
        else
            start_pass(ctx, (enum rec_pass)kind);
    }
}

static void on_retry_tick(evutil_socket_t fd, short what, void *arg)
{
    start_passes(arg, false);
}

static void on_sweep_tick(evutil_socket_t fd, short what, void *arg)
{
    start_passes(arg, true);
}

int sched_reconciler_start(struct sched_ctx *ctx)
{
    static const char *const labels[REC_NCOUNTERS] = {
        [REC_C_REDISPATCHED] = "kind=\"redispatched\"",
        [REC_C_REQUEUED] = "kind=\"requeued\"",
        [REC_C_TIMEOUT] = "kind=\"timeout\"",
        [REC_C_CANCEL_CHECK] = "kind=\"cancel_recheck\"",
        [REC_C_REPAIRED] = "kind=\"snapshot\""};
    static const char *const lua[REC_NSCRIPTS] = {sched_wm_check_lua, sched_snap_check_lua};
    struct sched_reconciler *rec = nf_xcalloc(1, sizeof(*rec));
    struct nf_metrics *m = ctx->metrics;
    struct timeval retry = {ctx->cfg->retry_poll_ms / 1000,
                            (suseconds_t)(ctx->cfg->retry_poll_ms % 1000) * 1000};
    struct timeval sweep = {ctx->cfg->reconcile_s, 0};
    bool ok = true;
    int i;

    ctx->rec = rec;
    for (i = REC_C_NONE + 1; i < REC_NCOUNTERS; i++)
        rec->count[i] = i == REC_C_RETRY_DISPATCH
                            ? nf_metrics_counter(m, "nf_sched_retries_dispatched_total",
                                                 "retried attempts dispatched when due", NULL)
                            : nf_metrics_counter(m, "nf_sched_reconciler_total",
                                                 "reconciler repairs by kind", labels[i]);
    for (i = 0; i < REC_NSCRIPTS; i++) {
        rec->script[i] = nf_redis_script_new(ctx->redis, lua[i]);
        ok = ok && rec->script[i];
    }
    rec->retry_tick = event_new(ctx->base, -1, EV_PERSIST, on_retry_tick, ctx);
    rec->sweep_tick = event_new(ctx->base, -1, EV_PERSIST, on_sweep_tick, ctx);
    if (!ok || !rec->retry_tick || !rec->sweep_tick || event_add(rec->retry_tick, &retry) < 0 ||
        event_add(rec->sweep_tick, &sweep) < 0) {
        nf_log_error("reconciler_failed", "cannot start the reconciler");
        return -1; /* the free hook frees what was made */
    }
    return 0;
}

void sched_reconciler_free(struct sched_ctx *ctx)
{
    struct sched_reconciler *rec = ctx ? ctx->rec : NULL;

    if (!rec)
        return;
    if (rec->retry_tick)
        event_free(rec->retry_tick);
    if (rec->sweep_tick)
        event_free(rec->sweep_tick);
    free(rec);
    ctx->rec = NULL;
}
