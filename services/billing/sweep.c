/*
 * The pending sweep: usage parked because its lease had not been seen yet.
 *
 *   every NF_BILLING_SWEEP_MS (one sweep at a time per process) -->
 *   ONE statement (bill_sweep_sql): up to BILL_SWEEP_PAGE pending rows whose lease is
 *   known now, or that waited longer than NF_BILLING_LEASE_WAIT_S, are taken out
 *   (FOR UPDATE SKIP LOCKED: several billing copies never take the same row) and
 *       lease names the same worker and user --> recorded like any usage (rollups)
 *       another worker or user                --> refused (not_leased)
 *       still no lease                        --> refused (lease_timeout; it still
 *                                                 counts towards its attempt's usage)
 *       its attempt closed meanwhile          --> refused (attempt_closed); when it
 *                                                 closed waived and the lease is right:
 *                                                 recorded as waived (never priced)
 *   --> overdue: jobs with an attempt that ended NF_BILLING_CLOSE_WAIT_S ago and is still
 *       missing usage (bill_overdue_sql, a page) join the touched jobs; effects.c closes
 *       those attempts, so a lost usage message cannot hold a cost open for ever
 *   --> effects.c: closes, costs, alerts, the refused ones rebuilt to forge.usage.dlq
 *   a full page --> the next sweep runs at once
 *
 * The rows leave usage_pending in the same transaction that records them, so a crash
 * anywhere leaves each event either pending or decided, never both or neither.
 */
#include "bill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "routes.h"

const char bill_overdue_sql[] =
    "SELECT DISTINCT job_id FROM billing.attempts"
    " WHERE closed_at IS NULL AND ended_at < now() - make_interval(secs => $1::int)"
    " LIMIT $2::int";

static void st_overdue(struct nf_work *w);

static long long ll(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

static void on_sweep(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_work *w = arg;
    struct bill_work *bw = bill_work_of(w);
    struct bill_ctx *ctx = bill_ctx_of(w);
    enum bill_meter m;
    int row, rows;

    if (nf_work_failed(w, res, err))
        return;
    rows = PQntuples(res);
    for (row = 0; row < rows; row++) {
        const char *id = nf_pg_val(res, row, "event_id");
        const char *verdict = nf_pg_val(res, row, "verdict");
        const char *job_id = nf_pg_val(res, row, "job_id");
        const char *user_id = nf_pg_val(res, row, "user_id");
        const char *meter = nf_pg_val(res, row, "meter");

        if (!id || !verdict || !job_id || !user_id || !meter)
            continue;
        if (strcmp(verdict, "waived") == 0) { /* its attempt closed waived meanwhile */
            bill_count_waived(ctx, bill_meter_parse(meter, &m) == 0 ? m : BILL_GPU_MS,
                              ll(nf_pg_val(res, row, "quantity")));
            continue;
        }
        if (strcmp(verdict, "recorded") == 0 || strcmp(verdict, "duplicate") == 0) {
            nf_metrics_counter_add(verdict[0] == 'r' ? ctx->m.recorded : ctx->m.duplicate, 1);
            if (strcmp(meter, "storage_byte_hours") != 0)
                bill_work_add_job(bw, job_id);
            bill_work_add_user(bw, user_id);
            continue;
        }
        nf_metrics_counter_add(ctx->m.refused, 1);
        nf_log_kv(
            NF_LOG_WARN, "usage_refused",
            strcmp(verdict, "expired") == 0  ? "usage without a lease in time refused"
            : strcmp(verdict, "closed") == 0 ? "usage for an attempt whose cost is final"
                                             : "usage from a worker that did not lease the job",
            "event_id", id, "job_id", job_id, "worker_id", nf_pg_val(res, row, "worker_id"), NULL);
        if (strcmp(verdict, "expired") == 0 && strcmp(meter, "storage_byte_hours") != 0)
            bill_work_add_job(bw, job_id); /* its attempt may be complete now */
        bill_work_add_out(bw, NF_TOPIC_USAGE_DLQ, user_id,
                          bill_usage_rebuild(id, user_id, job_id, nf_pg_val(res, row, "job_type"),
                                             ll(nf_pg_val(res, row, "attempt")),
                                             nf_pg_val(res, row, "worker_id"), meter,
                                             ll(nf_pg_val(res, row, "quantity")),
                                             nf_pg_val(res, row, "window_start"),
                                             nf_pg_val(res, row, "window_end")));
    }
    bw->sweep_full = rows >= BILL_SWEEP_PAGE;
    nf_work_goto(w, st_overdue);
}

static void on_overdue(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_work *w = arg;
    struct bill_work *bw = bill_work_of(w);
    int row, rows;

    if (nf_work_failed(w, res, err))
        return;
    rows = PQntuples(res);
    for (row = 0; row < rows; row++)
        if (nf_pg_val(res, row, "job_id"))
            bill_work_add_job(bw, nf_pg_val(res, row, "job_id"));
    if (rows >= BILL_SWEEP_PAGE)
        bw->sweep_full = true;
    bill_effects_start(w);
}

/* One page of a sweep query: $1 = a wait in seconds, $2 = the page size. */
static void query_page(struct nf_work *w, const char *what, const char *sql, int wait_s,
                       nf_pg_cb cb)
{
    char wait[16], page[16];
    const char *params[2] = {wait, page};

    w->what = what;
    snprintf(wait, sizeof(wait), "%d", wait_s);
    snprintf(page, sizeof(page), "%d", BILL_SWEEP_PAGE);
    if (nf_pg_query(bill_ctx_of(w)->pg, sql, 2, params, cb, w) < 0)
        nf_work_retry(w, "could not queue the query");
}

static void st_overdue(struct nf_work *w)
{
    query_page(w, "overdue", bill_overdue_sql, bill_ctx_of(w)->cfg->close_wait_s, on_overdue);
}

static void st_sweep(struct nf_work *w)
{
    query_page(w, "sweep", bill_sweep_sql, bill_ctx_of(w)->cfg->lease_wait_s, on_sweep);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct bill_ctx *ctx = arg;
    struct bill_work *bw;

    if (ctx->sweeping || *ctx->stopping || *ctx->closing)
        return;
    bw = bill_work_new(ctx, NULL);
    bw->sweep = true;
    ctx->sweeping = true;
    nf_work_goto(&bw->work, st_sweep);
}

int bill_sweep_start(struct bill_ctx *ctx)
{
    int ms = ctx->cfg->sweep_ms;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};

    ctx->sweep = event_new(ctx->base, -1, EV_PERSIST, on_tick, ctx);
    if (!ctx->sweep)
        return -1;
    return event_add(ctx->sweep, &tv);
}

void bill_sweep_close(struct bill_ctx *ctx)
{
    if (ctx->sweep)
        event_free(ctx->sweep);
    ctx->sweep = NULL;
}
