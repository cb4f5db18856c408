/*
 * Budgets (internal; the gateway forwards GET/PUT /api/billing/budget with the caller's
 * id, the scheduler asks GET before it dispatches a new job):
 *
 *   GET /internal/budget?user_id=
 *       -> {user_id, monthly_limit_usd|null, monthly_limit_micros|null, spent_usd,
 *           spent_micros, remaining_usd|null, percent_used|null, over_budget,
 *           period_start, alerts_sent: [50, 80, 100 reached this month], updated_at|null}
 *   PUT /internal/budget?user_id=  {"monthly_limit_usd": "50.00" | 50 | null}
 *       -> the same object, after the change; null removes the budget. Then an alert
 *          check runs in the background (effects.c), so lowering a budget below this
 *          month's spending announces the thresholds it crossed.
 *
 * Spending is the month to date (UTC): every hourly bucket since the first of the month,
 * priced like the summary.
 */
#include "bill.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_http.h"
#include "nf_json.h"
#include "nf_log.h"
#include "nf_pg.h"
#include "nf_time.h"
#include "routes.h"

/* clang-format off */
static const char budget_sql[] =
    "SELECT b.monthly_limit_micros, " BILL_TS("b.updated_at") " AS updated_at, x.meter,"
    "  p.price_micros, p.per_units, sum(x.quantity)::text AS quantity,"
    "  " BILL_CELLS_COST " AS cost_micros,"
    "  (SELECT string_agg(a.threshold::text, ',' ORDER BY a.threshold)"
    "   FROM billing.budget_alerts a WHERE a.user_id = $1 AND a.month = $3::date) AS alerted"
    " FROM (SELECT $1::text AS user_id) u"
    " LEFT JOIN billing.budgets b ON b.user_id = u.user_id"
    " LEFT JOIN billing.cells x ON x.user_id = u.user_id"
    "  AND x.hour >= $2::timestamptz" BILL_PRICE_AT("x.hour")
    " GROUP BY b.monthly_limit_micros, b.updated_at, x.meter, p.price_micros, p.per_units,"
    "  p.effective_from";

static const char set_sql[] =
    "INSERT INTO billing.budgets (user_id, monthly_limit_micros) VALUES ($1, $2::bigint)"
    " ON CONFLICT (user_id) DO UPDATE SET monthly_limit_micros = excluded.monthly_limit_micros,"
    "  updated_at = now()";

static const char unset_sql[] = "DELETE FROM billing.budgets WHERE user_id = $1";
/* clang-format on */

/* Month start and its date, for budget_sql's $2 / $3. */
struct month {
    char start[32], date[16];
};

static void month_now(struct month *m)
{
    nf_time_format_rfc3339(bill_month_start((int64_t)nf_now_ms()), m->start);
    snprintf(m->date, sizeof(m->date), "%.10s", m->start);
}

static cJSON *budget_body(const PGresult *res, const char *user_id, const char *period_start)
{
    const char *ls = nf_pg_val(res, 0, "monthly_limit_micros");
    const char *alerted = nf_pg_val(res, 0, "alerted");
    long long limit = -1, spent;
    cJSON *body, *arr;
    char usd[32], *end;

    if (PQntuples(res) < 1 || bill_rows_cost(res, 0, PQntuples(res), &spent) < 0)
        return NULL;
    if (ls) {
        errno = 0;
        limit = strtoll(ls, &end, 10);
        if (errno || *end || limit < 0)
            return NULL;
    }
    body = nf_json_obj();
    nf_json_add_str(body, "user_id", user_id);
    bill_usd_format(limit, usd);
    nf_json_add_str(body, "monthly_limit_usd", limit >= 0 ? usd : NULL);
    if (limit >= 0)
        nf_json_add_int(body, "monthly_limit_micros", limit);
    else if (!cJSON_AddNullToObject(body, "monthly_limit_micros"))
        abort();
    bill_usd_format(spent, usd);
    nf_json_add_str(body, "spent_usd", usd);
    nf_json_add_int(body, "spent_micros", spent);
    bill_usd_format(limit > spent ? limit - spent : 0, usd);
    nf_json_add_str(body, "remaining_usd", limit >= 0 ? usd : NULL);
    if (limit > 0)
        nf_json_add_int(body, "percent_used", bill_budget_percent(spent, limit));
    else if (limit == 0)
        nf_json_add_int(body, "percent_used", 100);
    else if (!cJSON_AddNullToObject(body, "percent_used"))
        abort();
    if (!cJSON_AddBoolToObject(body, "over_budget", bill_budget_over(spent, limit)))
        abort();
    nf_json_add_str(body, "period_start", period_start);
    arr = cJSON_AddArrayToObject(body, "alerts_sent");
    if (!arr)
        abort();
    while (alerted && *alerted) { /* "50,80" */
        if (!cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)strtol(alerted, NULL, 10))))
            abort();
        alerted = strchr(alerted, ',');
        if (alerted)
            alerted++;
    }
    nf_json_add_str(body, "updated_at", nf_pg_val(res, 0, "updated_at"));
    return body;
}

/* An alert check in the background (effects.c), so lowering a budget below this month's
 * spending announces the thresholds it crossed. */
static void check_alerts(struct bill_ctx *ctx, const char *user_id)
{
    struct bill_work *bw;

    if (*ctx->stopping || *ctx->closing)
        return;
    bw = bill_work_new(ctx, NULL);
    bill_work_add_user(bw, user_id);
    bill_effects_start(&bw->work);
}

static void on_budget(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    const char *user_id = nf_http_req_query(req, "user_id");
    struct bill_ctx *ctx = nf_http_req_data(req);
    struct month m;
    cJSON *body;

    if (!res) {
        nf_log_kv(NF_LOG_WARN, "budget_failed", "budget query failed", "error", err, NULL);
        nf_http_set_header(req, "Retry-After", "1");
        nf_http_reply_error(req, 503, "unavailable", NULL, "billing store unavailable, retry");
        return;
    }
    month_now(&m);
    body = budget_body(res, user_id, m.start);
    if (!body) {
        nf_log_error("budget_failed", "malformed or overflowing budget row");
        nf_http_reply_error(req, 500, "internal", NULL, "budget out of range");
        return;
    }
    if (strcmp(nf_http_req_method(req), "PUT") == 0 && ctx)
        check_alerts(ctx, user_id);
    nf_http_reply_json(req, 200, body);
}

static const char *require_user(struct nf_http_req *req)
{
    const char *user_id = nf_http_req_query(req, "user_id");

    if (!user_id || !*user_id || strlen(user_id) > 128) {
        nf_http_reply_error(req, 400, "invalid_request", "user_id", "user_id is required");
        return NULL;
    }
    return user_id;
}

void bill_budget_get(struct nf_http_req *req, void *arg)
{
    struct bill_ctx *ctx = arg;
    const char *user_id = require_user(req);
    const char *params[3];
    struct month m;

    if (!user_id)
        return;
    month_now(&m);
    params[0] = user_id;
    params[1] = m.start;
    params[2] = m.date;
    nf_http_req_set_data(req, NULL); /* not a change: no alert check */
    if (nf_pg_query(ctx->pg, budget_sql, 3, params, on_budget, req) < 0)
        nf_http_reply_error(req, 503, "unavailable", NULL, "billing store unavailable, retry");
}

void bill_budget_put(struct nf_http_req *req, void *arg)
{
    struct bill_ctx *ctx = arg;
    const char *user_id = require_user(req);
    struct nf_json_err err = {{0}, {0}};
    struct nf_pg_stmt stmts[2];
    const char *set[2], *get[3];
    char micros_s[24];
    long long micros;
    bool has_limit;
    struct month m;
    cJSON *body;

    if (!user_id)
        return;
    body = nf_http_req_json(req); /* owned by req; NULL: it answered 400 */
    if (!body)
        return;
    if (bill_budget_parse(body, &has_limit, &micros, &err) < 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    snprintf(micros_s, sizeof(micros_s), "%lld", micros);
    month_now(&m);
    set[0] = user_id;
    set[1] = micros_s;
    get[0] = user_id;
    get[1] = m.start;
    get[2] = m.date;
    stmts[0].sql = has_limit ? set_sql : unset_sql;
    stmts[0].nparams = has_limit ? 2 : 1;
    stmts[0].params = set;
    stmts[1].sql = budget_sql;
    stmts[1].nparams = 3;
    stmts[1].params = get;
    nf_log_kv(NF_LOG_INFO, "budget_set", has_limit ? "budget set" : "budget removed", "user_id",
              user_id, "monthly_limit_micros", has_limit ? micros_s : NULL, NULL);
    nf_http_req_set_data(req, ctx);
    if (nf_pg_tx(ctx->pg, stmts, 2, on_budget, req) < 0)
        nf_http_reply_error(req, 503, "unavailable", NULL, "billing store unavailable, retry");
}
