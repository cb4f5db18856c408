/*
 * What follows a commit of usage (a batch, a sweep), of an attempt's end or of a budget
 * change:
 *
 *   st_close    (touched jobs only) one transaction: the jobs locked exclusively
 *               (BILL_LOCK_CLASS), then their ended, open attempts closed when their
 *               usage is complete (usage_events recorded, or refused for want of a
 *               lease), when the platform ended them (no count) or when they ended
 *               NF_BILLING_CLOSE_WAIT_S ago; usage still pending for a closed attempt
 *               is refused with it (attempt_closed, to the DLQ); a waived attempt
 *               (failed worker_lost, infra or preempted) has its recorded compute
 *               usage moved out of the job's cells (usage_jobs) into usage_waived in
 *               the same statement, and its pending usage is left to the sweep
 *   st_query    ONE statement: the cost of every touched job (its cells in usage_jobs x
 *               price book, BILL_CELLS_COST) with attempts_closed, the longest run 1..n
 *               of its closed attempts, and, for every touched user with a budget, the
 *               month's spending (its cells), limit and the alerts already sent
 *   st_produce  forge.billing.job_cost per job (the scheduler keeps the job object's
 *               cost_usd with it), forge.billing.budget_alert per newly reached
 *               threshold (forge.audit), and the work's DLQ copies; all delivery reports
 *               must be ok, else the whole stage is produced again
 *   st_markers  the alerts just delivered are recorded in billing.budget_alerts, so each
 *               threshold is announced once per user and month
 *   finish      the Kafka messages of the work are marked done (nf_work_finish)
 *
 * Every stage is safe to repeat: a close only closes, a cost update carries the job's
 * total and closed attempts (the scheduler keeps the larger values; the query runs after
 * the close committed, so a message that says an attempt is closed counts all its usage),
 * an alert has a deterministic id and its marker is insert-if-absent. A crash between
 * the produce and the markers re-sends an alert with the same id, which consumers can
 * drop.
 */
#include "bill.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "nf_time.h"

/* clang-format off */
const char bill_effects_sql[] =
    "SELECT 'job' AS kind, j.job_id AS id,"
    "  coalesce(min(x.user_id),"
    "   (SELECT min(a.user_id) FROM billing.attempts a WHERE a.job_id = j.job_id)) AS user_id,"
    "  x.meter, p.price_micros, p.per_units, sum(x.quantity)::text AS quantity,"
    "  " BILL_CELLS_COST " AS cost_micros,"
    "  NULL::bigint AS limit_micros, NULL::text AS alerted,"
    "  (SELECT coalesce(max(c.attempt), 0) FROM (SELECT a.attempt,"
    "    row_number() OVER (ORDER BY a.attempt) AS n FROM billing.attempts a"
    "    WHERE a.job_id = j.job_id AND a.closed_at IS NOT NULL) c"
    "   WHERE c.attempt = c.n) AS attempts_closed"
    " FROM (SELECT DISTINCT jsonb_array_elements_text($1::jsonb) AS job_id) j"
    " LEFT JOIN billing.usage_jobs x ON x.job_id = j.job_id" BILL_PRICE_AT("x.hour")
    " GROUP BY j.job_id, x.meter, p.price_micros, p.per_units, p.effective_from"
    " UNION ALL"
    " SELECT 'user', u.user_id, u.user_id, x.meter, p.price_micros, p.per_units,"
    "  sum(x.quantity)::text, " BILL_CELLS_COST ", u.monthly_limit_micros,"
    "  (SELECT string_agg(a.threshold::text, ',') FROM billing.budget_alerts a"
    "   WHERE a.user_id = u.user_id AND a.month = $4::date), NULL::bigint"
    " FROM billing.budgets u"
    " LEFT JOIN billing.cells x ON x.user_id = u.user_id"
    "  AND x.hour >= $3::timestamptz" BILL_PRICE_AT("x.hour")
    " WHERE u.user_id IN (SELECT jsonb_array_elements_text($2::jsonb))"
    " GROUP BY u.user_id, u.monthly_limit_micros, x.meter, p.price_micros, p.per_units,"
    "  p.effective_from"
    " ORDER BY 1, 2";

const char bill_close_lock_sql[] =
    "SELECT pg_advisory_xact_lock(" BILL_LOCK_CLASS ", hashtext(j.job_id))"
    " FROM (SELECT DISTINCT jsonb_array_elements_text($1::jsonb) AS job_id ORDER BY 1) j";

/* An attempt's usage is complete when billing holds as many of its events as its worker
 * published: recorded, or refused for want of a lease (those will never be recorded). */
const char bill_close_sql[] =
    "WITH due AS ("
    " SELECT a.job_id, a.attempt,"
    "  CASE WHEN a.usage_events IS NULL THEN 'ended'"
    "   WHEN a.usage_events <= (SELECT count(*) FROM ("
    "     SELECT e.event_id FROM billing.usage_events e"
    "     WHERE e.job_id = a.job_id AND e.attempt = a.attempt"
    "     UNION SELECT r.event_id FROM billing.usage_refused r"
    "     WHERE r.job_id = a.job_id AND r.attempt = a.attempt"
    "      AND r.reason = 'lease_timeout') n) THEN 'complete'"
    "   WHEN a.ended_at < now() - make_interval(secs => $2::int) THEN 'timeout'"
    "  END AS why"
    " FROM billing.attempts a"
    " WHERE a.job_id IN (SELECT jsonb_array_elements_text($1::jsonb)) AND a.closed_at IS NULL"
    "), closed AS ("
    " UPDATE billing.attempts a SET closed_at = now() FROM due d"
    " WHERE a.job_id = d.job_id AND a.attempt = d.attempt AND d.why IS NOT NULL"
    " RETURNING a.job_id, a.attempt, d.why, a.waived"
    "), moved AS ("
    /* a waived attempt's recorded compute usage, per meter and hour: out of the job's
     * cells into usage_waived, once (closed_at is set once, under the exclusive lock) */
    " SELECT e.job_id, e.attempt, min(e.user_id) AS user_id, min(e.job_type) AS job_type,"
    "  e.meter, date_trunc('hour', e.window_start, 'UTC') AS hour, sum(e.quantity) AS quantity"
    " FROM billing.usage_events e JOIN closed c"
    "  ON c.job_id = e.job_id AND c.attempt = e.attempt AND c.waived"
    " WHERE e.meter <> 'storage_byte_hours'"
    " GROUP BY e.job_id, e.attempt, e.meter, 6"
    "), waive AS ("
    " INSERT INTO billing.usage_waived AS w (job_id, attempt, user_id, job_type, meter, hour,"
    "  quantity)"
    " SELECT job_id, attempt, user_id, job_type, meter, hour, quantity FROM moved"
    " ORDER BY 1, 2, 5, 6"
    " ON CONFLICT (job_id, attempt, meter, hour)"
    " DO UPDATE SET quantity = w.quantity + excluded.quantity"
    " RETURNING 1"
    "), unpriced AS ("
    " UPDATE billing.usage_jobs j SET quantity = j.quantity - m.quantity"
    " FROM (SELECT job_id, meter, hour, sum(quantity) AS quantity FROM moved"
    "       GROUP BY 1, 2, 3) m"
    " WHERE j.job_id = m.job_id AND j.meter = m.meter AND j.hour = m.hour"
    " RETURNING 1"
    "), gone AS ("
    /* pending usage of a waived attempt stays: the sweep records it as waived once its
     * lease shows (or refuses it) */
    " DELETE FROM billing.usage_pending p USING closed c"
    " WHERE p.job_id = c.job_id AND p.attempt = c.attempt AND NOT c.waived"
    " RETURNING p.*"
    "), ref AS ("
    " INSERT INTO billing.usage_refused (event_id, user_id, job_id, attempt, worker_id,"
    "  meter, quantity, reason)"
    " SELECT event_id, user_id, job_id, attempt, worker_id, meter, quantity, 'attempt_closed'"
    " FROM gone ON CONFLICT (event_id) DO NOTHING"
    " RETURNING 1"
    ")"
    " SELECT 'closed' AS kind, c.job_id, c.attempt, c.why, NULL AS event_id,"
    "  NULL AS user_id, NULL AS job_type, NULL AS worker_id, NULL AS meter,"
    "  NULL::bigint AS quantity, NULL AS window_start, NULL AS window_end,"
    "  c.waived::text AS waived"
    " FROM closed c"
    " UNION ALL"
    " SELECT 'refused', g.job_id, g.attempt, NULL, g.event_id, g.user_id, g.job_type,"
    "  g.worker_id, g.meter, g.quantity, " BILL_TS("g.window_start") ","
    "  " BILL_TS("g.window_end") ", NULL"
    " FROM gone g"
    " ORDER BY 1, 2, 3";

const char bill_markers_sql[] =
    "INSERT INTO billing.budget_alerts (user_id, month, threshold)"
    " SELECT x.user_id, $2::date, x.threshold"
    " FROM jsonb_to_recordset($1::jsonb) AS x(user_id text, threshold int)"
    " ON CONFLICT DO NOTHING";
/* clang-format on */

static int ll_col(const char *s, long long *out)
{
    char *end;

    if (!s || !*s)
        return -1;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno || *end ? -1 : 0;
}

int bill_rows_cost(const PGresult *res, int first, int last, long long *total)
{
    enum bill_meter meter;
    long long cost, sum = 0;
    const char *m;
    int row;

    for (row = first; row < last; row++) {
        m = nf_pg_val(res, row, "meter");
        if (!m)
            continue; /* a budget without usage this month, a job without usage */
        if (bill_meter_parse(m, &meter) < 0 ||
            ll_col(nf_pg_val(res, row, "cost_micros"), &cost) < 0 || cost < 0 ||
            sum > LLONG_MAX - cost) {
            nf_log_error("billing_sum_failed", "malformed or overflowing usage total in row %d",
                         row);
            return -1;
        }
        sum += cost;
    }
    *total = sum;
    return 0;
}

static long long ll_or0(const char *s)
{
    long long v;

    return ll_col(s, &v) < 0 ? 0 : v;
}

static void st_close(struct nf_work *w);
static void st_query(struct nf_work *w);
static void st_produce(struct nf_work *w);
static void st_markers(struct nf_work *w);

static cJSON *str_array(char **arr, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    size_t i;

    if (!a)
        abort();
    for (i = 0; i < n; i++)
        if (!cJSON_AddItemToArray(a, cJSON_CreateString(arr[i])))
            abort();
    return a;
}

static bool alerted(const char *list, int pct)
{
    char want[8];
    const char *p;
    size_t n;

    if (!list)
        return false;
    n = (size_t)snprintf(want, sizeof(want), "%d", pct);
    for (p = list; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] ? 1 : 0))
        if (strncmp(p, want, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* One user's rows: the alerts their spending calls for that were not sent yet. */
static int user_alerts(struct bill_work *bw, const PGresult *res, int first, int last)
{
    const char *user_id = nf_pg_val(res, first, "id");
    const char *list = nf_pg_val(res, first, "alerted");
    long long limit, spent;
    unsigned bits;
    int i;

    if (ll_col(nf_pg_val(res, first, "limit_micros"), &limit) < 0 ||
        bill_rows_cost(res, first, last, &spent) < 0)
        return -1;
    bits = bill_budget_crossed(spent, limit);
    for (i = 0; i < BILL_NALERTS; i++) {
        int pct = bill_alert_pcts[i];

        if (!(bits & (1u << i)) || alerted(list, pct))
            continue;
        bill_work_add_out(bw, NF_TOPIC_AUDIT, user_id,
                          bill_alert_event(user_id, bw->month_ms, pct, limit, spent));
        bw->alerts = nf_xrealloc(bw->alerts, (bw->nalerts + 1) * sizeof(*bw->alerts));
        bw->alerts[bw->nalerts].user_id = nf_xstrdup(user_id);
        bw->alerts[bw->nalerts].pct = pct;
        bw->nalerts++;
    }
    return 0;
}

static void on_query(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_work *w = arg;
    struct bill_work *bw = bill_work_of(w);
    struct bill_ctx *ctx = bill_ctx_of(w);
    int row, first, rows;
    long long cost, closed;

    if (nf_work_failed(w, res, err))
        return;
    rows = PQntuples(res);
    for (first = 0; first < rows; first = row) {
        const char *kind = nf_pg_val(res, first, "kind");
        const char *id = nf_pg_val(res, first, "id");

        for (row = first + 1; row < rows; row++) {
            const char *k = nf_pg_val(res, row, "kind"), *i = nf_pg_val(res, row, "id");

            if (!k || !i || !kind || !id || strcmp(k, kind) != 0 || strcmp(i, id) != 0)
                break;
        }
        if (!kind || !id)
            continue;
        if (strcmp(kind, "job") == 0) {
            const char *user_id = nf_pg_val(res, first, "user_id");

            if (!user_id || bill_rows_cost(res, first, row, &cost) < 0 ||
                ll_col(nf_pg_val(res, first, "attempts_closed"), &closed) < 0)
                continue; /* logged; the other jobs still get theirs */
            bill_work_add_out(bw, NF_TOPIC_BILLING_COSTS, id,
                              bill_cost_event(id, user_id, cost, closed));
            nf_metrics_counter_add(ctx->m.costs, 1);
        } else if (user_alerts(bw, res, first, row) < 0) {
            nf_log_kv(NF_LOG_ERROR, "budget_check_failed", "cannot evaluate a budget", "user_id",
                      id, NULL);
        }
    }
    nf_work_goto(w, st_produce);
}

static void on_close(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_work *w = arg;
    struct bill_work *bw = bill_work_of(w);
    struct bill_ctx *ctx = bill_ctx_of(w);
    int row, rows;

    if (nf_work_failed(w, res, err))
        return;
    rows = PQntuples(res);
    for (row = 0; row < rows; row++) {
        const char *kind = nf_pg_val(res, row, "kind"), *job_id = nf_pg_val(res, row, "job_id");
        const char *attempt = nf_pg_val(res, row, "attempt"), *why = nf_pg_val(res, row, "why");
        const char *id = nf_pg_val(res, row, "event_id"), *user_id = nf_pg_val(res, row, "user_id");

        if (!kind || !job_id || !attempt)
            continue;
        if (strcmp(kind, "closed") == 0) {
            const char *waived = nf_pg_val(res, row, "waived");

            nf_metrics_counter_add(ctx->m.closed, 1);
            if (waived && strcmp(waived, "true") == 0) {
                nf_metrics_counter_add(ctx->m.attempts_waived, 1);
                nf_log_kv(NF_LOG_INFO, "attempt_waived",
                          "attempt failed through the platform's fault: its usage is not charged",
                          "job_id", job_id, "attempt", attempt, NULL);
            }
            if (why && strcmp(why, "timeout") == 0)
                nf_log_kv(NF_LOG_WARN, "attempt_close_timeout",
                          "attempt closed with usage missing after the close wait", "job_id",
                          job_id, "attempt", attempt, NULL);
            continue;
        }
        if (!id || !user_id)
            continue;
        nf_metrics_counter_add(ctx->m.refused, 1);
        nf_log_kv(NF_LOG_WARN, "usage_refused", "usage for an attempt whose cost is final",
                  "event_id", id, "job_id", job_id, "worker_id", nf_pg_val(res, row, "worker_id"),
                  NULL);
        bill_work_add_out(bw, NF_TOPIC_USAGE_DLQ, user_id,
                          bill_usage_rebuild(id, user_id, job_id, nf_pg_val(res, row, "job_type"),
                                             ll_or0(attempt), nf_pg_val(res, row, "worker_id"),
                                             nf_pg_val(res, row, "meter"),
                                             ll_or0(nf_pg_val(res, row, "quantity")),
                                             nf_pg_val(res, row, "window_start"),
                                             nf_pg_val(res, row, "window_end")));
    }
    nf_work_goto(w, st_query);
}

static void st_close(struct nf_work *w)
{
    struct bill_work *bw = bill_work_of(w);
    struct bill_ctx *ctx = bill_ctx_of(w);
    cJSON *jobs = str_array(bw->jobs, bw->njobs);
    char *pj = nf_json_print(jobs), wait[16];
    const char *lock_params[1] = {pj};
    const char *params[2] = {pj, wait};
    const struct nf_pg_stmt stmts[] = {
        {bill_close_lock_sql, 1, lock_params},
        {bill_close_sql, 2, params},
    };

    w->what = "close";
    snprintf(wait, sizeof(wait), "%d", ctx->cfg->close_wait_s);
    if (nf_pg_tx(ctx->pg, stmts, 2, on_close, w) < 0)
        nf_work_retry(w, "could not queue the attempt close");
    cJSON_Delete(jobs);
    free(pj);
}

/* The month's start as RFC 3339 and as a date, for the statements' parameters. */
static void month_params(int64_t month_ms, char start[32], char month[16])
{
    nf_time_format_rfc3339(month_ms, start);
    snprintf(month, 16, "%.10s", start);
}

static void st_query(struct nf_work *w)
{
    struct bill_work *bw = bill_work_of(w);
    char start[32], month[16];
    const char *params[4];
    cJSON *jobs = str_array(bw->jobs, bw->njobs), *users = str_array(bw->users, bw->nusers);
    char *pj = nf_json_print(jobs), *pu = nf_json_print(users);

    w->what = "effects";
    bw->month_ms = bill_month_start((int64_t)nf_now_ms());
    month_params(bw->month_ms, start, month);
    params[0] = pj;
    params[1] = pu;
    params[2] = start;
    params[3] = month;
    if (nf_pg_query(bill_ctx_of(w)->pg, bill_effects_sql, 4, params, on_query, w) < 0)
        nf_work_retry(w, "could not queue the effects query");
    cJSON_Delete(jobs);
    cJSON_Delete(users);
    free(pj);
    free(pu);
}

/* Every message of the work; a failed delivery produces them all again (nf_work). The
 * loop stops at the first message the producer would not queue: the stage is retried. */
static void st_produce(struct nf_work *w)
{
    struct bill_work *bw = bill_work_of(w);
    size_t i;

    w->what = "produce";
    nf_work_produce_begin(w);
    for (i = 0; i < bw->nouts && !w->produce_failed; i++)
        nf_work_produce_raw(w, bw->outs[i].topic, bw->outs[i].key, bw->outs[i].payload,
                            bw->outs[i].len);
    nf_work_produce_end(w, st_markers);
}

static void on_markers(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_work *w = arg;
    struct bill_work *bw = bill_work_of(w);
    struct bill_ctx *ctx = bill_ctx_of(w);
    size_t i;
    char pct[8];

    if (nf_work_failed(w, res, err))
        return;
    for (i = 0; i < bw->nalerts; i++) {
        snprintf(pct, sizeof(pct), "%d", bw->alerts[i].pct);
        nf_log_kv(NF_LOG_INFO, "budget_alert", "budget alert sent", "user_id",
                  bw->alerts[i].user_id, "threshold_percent", pct, NULL);
    }
    nf_metrics_counter_add(ctx->m.alerts, bw->nalerts);
    nf_work_finish(w);
}

static void st_markers(struct nf_work *w)
{
    struct bill_work *bw = bill_work_of(w);
    char start[32], month[16], *text;
    const char *params[2];
    cJSON *arr, *o;
    size_t i;

    w->what = "markers";
    if (bw->nalerts == 0) {
        nf_work_finish(w);
        return;
    }
    arr = cJSON_CreateArray();
    if (!arr)
        abort();
    for (i = 0; i < bw->nalerts; i++) {
        o = nf_json_obj();
        nf_json_add_str(o, "user_id", bw->alerts[i].user_id);
        nf_json_add_int(o, "threshold", bw->alerts[i].pct);
        if (!cJSON_AddItemToArray(arr, o))
            abort();
    }
    text = nf_json_print(arr);
    cJSON_Delete(arr);
    month_params(bw->month_ms, start, month);
    params[0] = text;
    params[1] = month;
    if (nf_pg_query(bill_ctx_of(w)->pg, bill_markers_sql, 2, params, on_markers, w) < 0)
        nf_work_retry(w, "could not queue the alert markers");
    free(text);
}

void bill_effects_start(struct nf_work *w)
{
    struct bill_work *bw = bill_work_of(w);

    bill_work_dedupe(bw);
    nf_work_goto(w, bw->njobs ? st_close : bw->nusers ? st_query : st_produce);
}
