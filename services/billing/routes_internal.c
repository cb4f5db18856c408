/*
 * Internal billing routes (minimal; the billing issue extends them):
 *
 *   GET /internal/summary?user_id=&period_start=&period_end=
 *       -> {user_id, period_start, period_end, currency, meters: [{meter, quantity, unit,
 *           rate, cost_usd, cost_micros}], total_usd, total_micros}
 *       The period defaults to the current UTC month up to now. Hours are the rollup's
 *       buckets: an hour counts when it starts in [period_start, period_end).
 *   GET /internal/jobs/{job_id}/cost?user_id= -> {job_id, cost_usd, cost_micros}
 *
 * Postgres sums the quantities per (meter, price version); the money is computed here in
 * integers (usage.c): each (meter, price) line is rounded once, totals add lines.
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
#include "nf_mem.h"
#include "nf_pg.h"

/* clang-format off */
/* The price of a bucket: the latest price_book row effective at the given hour. */
#define PRICE_AT(hour)                                                                     \
    " JOIN LATERAL (SELECT b.unit, b.price_micros, b.per_units, b.effective_from"          \
    "  FROM billing.price_book b WHERE b.meter = x.meter AND b.effective_from <= " hour      \
    "  ORDER BY b.effective_from DESC LIMIT 1) p ON true"

static const char summary_sql[] =
    "SELECT x.meter, p.unit, p.price_micros, p.per_units, sum(x.quantity)::text AS quantity"
    " FROM billing.usage_hourly x"
    PRICE_AT("x.hour")
    " WHERE x.user_id = $1 AND x.hour >= $2::timestamptz AND x.hour < $3::timestamptz"
    " GROUP BY x.meter, p.unit, p.price_micros, p.per_units, p.effective_from"
    " ORDER BY x.meter, p.effective_from";

static const char job_cost_sql[] =
    "SELECT x.meter, p.unit, p.price_micros, p.per_units, sum(x.quantity)::text AS quantity"
    " FROM billing.usage_events x"
    PRICE_AT("date_trunc('hour', x.window_start, 'UTC')")
    " WHERE x.job_id = $1 AND x.user_id = $2"
    " GROUP BY x.meter, p.unit, p.price_micros, p.per_units, p.effective_from"
    " ORDER BY x.meter, p.effective_from";
/* clang-format on */

/* One meter's total over the rows of a result (several rows when the price changed). */
struct meter_line {
    bool used;
    uint64_t quantity;
    long long cost_micros;
    const char *unit; /* of the latest price; points into the result */
    long long price_micros;
};

struct lines {
    struct meter_line m[BILL_NMETERS];
    long long total_micros;
};

/* Adds up the rows; -1 (logged) when a value is malformed or overflows. */
static int sum_lines(const PGresult *res, struct lines *out)
{
    int row, n = PQntuples(res);
    enum bill_meter meter;
    struct bill_rate rate;
    uint64_t qty;
    long long cost;
    char *end;

    memset(out, 0, sizeof(*out));
    for (row = 0; row < n; row++) {
        const char *qs = nf_pg_val(res, row, "quantity");
        const char *ps = nf_pg_val(res, row, "price_micros");
        const char *us = nf_pg_val(res, row, "per_units");

        if (bill_meter_parse(nf_pg_val(res, row, "meter"), &meter) < 0 ||
            bill_u64_parse(qs, &qty) < 0 || !ps || !us)
            goto bad;
        errno = 0;
        rate.price_micros = strtoll(ps, &end, 10);
        if (errno || *end)
            goto bad;
        rate.per_units = strtoll(us, &end, 10);
        if (errno || *end)
            goto bad;
        if (bill_cost_micros(qty, &rate, &cost) < 0)
            goto bad;
        if (out->m[meter].quantity > UINT64_MAX - qty ||
            out->m[meter].cost_micros > INT64_MAX - cost || out->total_micros > INT64_MAX - cost)
            goto bad;
        out->m[meter].used = true;
        out->m[meter].quantity += qty;
        out->m[meter].cost_micros += cost;
        out->m[meter].unit = nf_pg_val(res, row, "unit");
        out->m[meter].price_micros = rate.price_micros;
        out->total_micros += cost;
    }
    return 0;
bad:
    nf_log_error("billing_sum_failed", "malformed or overflowing usage total in row %d", row);
    return -1;
}

static void add_raw_u64(cJSON *o, const char *key, uint64_t v)
{
    char buf[32];
    cJSON *it;

    /* raw digits: exact even beyond 2^53, where a JSON double would round */
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    it = cJSON_CreateRaw(buf);
    if (!it || !cJSON_AddItemToObject(o, key, it))
        abort();
}

struct summary_req {
    char start[32], end[32];
};

static void on_summary(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    struct summary_req *sr = nf_http_req_data(req);
    struct lines lines;
    cJSON *body, *arr, *o;
    char usd[32];
    int i;

    if (!res) {
        nf_log_kv(NF_LOG_WARN, "summary_failed", "summary query failed", "error", err, NULL);
        free(sr);
        nf_http_set_header(req, "Retry-After", "1");
        nf_http_reply_error(req, 503, "unavailable", NULL, "billing store unavailable, retry");
        return;
    }
    if (sum_lines(res, &lines) < 0) {
        free(sr);
        nf_http_reply_error(req, 500, "internal", NULL, "usage total out of range");
        return;
    }
    body = nf_json_obj();
    nf_json_add_str(body, "user_id", nf_http_req_query(req, "user_id"));
    nf_json_add_str(body, "period_start", sr->start);
    nf_json_add_str(body, "period_end", sr->end);
    nf_json_add_str(body, "currency", "USD");
    arr = cJSON_AddArrayToObject(body, "meters");
    if (!arr)
        abort();
    for (i = 0; i < BILL_NMETERS; i++) {
        if (!lines.m[i].used)
            continue;
        o = nf_json_obj();
        nf_json_add_str(o, "meter", bill_meter_name((enum bill_meter)i));
        add_raw_u64(o, "quantity", lines.m[i].quantity);
        nf_json_add_str(o, "unit", lines.m[i].unit);
        bill_usd_format(lines.m[i].price_micros, usd);
        nf_json_add_str(o, "rate", usd); /* USD per unit */
        bill_usd_format(lines.m[i].cost_micros, usd);
        nf_json_add_str(o, "cost_usd", usd);
        nf_json_add_int(o, "cost_micros", lines.m[i].cost_micros);
        if (!cJSON_AddItemToArray(arr, o))
            abort();
    }
    bill_usd_format(lines.total_micros, usd);
    nf_json_add_str(body, "total_usd", usd);
    nf_json_add_int(body, "total_micros", lines.total_micros);
    free(sr);
    nf_http_reply_json(req, 200, body);
}

static void get_summary(struct nf_http_req *req, void *arg)
{
    struct bill_ctx *ctx = arg;
    const char *user_id = nf_http_req_query(req, "user_id");
    const char *ps = nf_http_req_query(req, "period_start");
    const char *pe = nf_http_req_query(req, "period_end");
    int64_t now = (int64_t)nf_now_ms(), start, end;
    struct summary_req *sr;
    const char *params[3];

    if (!user_id || !*user_id) {
        nf_http_reply_error(req, 400, "invalid_request", "user_id", "user_id is required");
        return;
    }
    if (ps && *ps) {
        if (bill_time_parse(ps, &start) < 0) {
            nf_http_reply_error(req, 400, "invalid_request", "period_start",
                                "period_start must be an RFC 3339 time or a date");
            return;
        }
    } else {
        start = bill_month_start(now);
    }
    if (pe && *pe) {
        if (bill_time_parse(pe, &end) < 0) {
            nf_http_reply_error(req, 400, "invalid_request", "period_end",
                                "period_end must be an RFC 3339 time or a date");
            return;
        }
    } else {
        end = now;
    }
    if (end <= start) {
        nf_http_reply_error(req, 400, "invalid_request", "period_end",
                            "period_end must be after period_start");
        return;
    }
    sr = nf_xcalloc(1, sizeof(*sr));
    bill_time_format(start, sr->start);
    bill_time_format(end, sr->end);
    params[0] = user_id;
    params[1] = sr->start;
    params[2] = sr->end;
    nf_http_req_set_data(req, sr);
    if (nf_pg_query(ctx->pg, summary_sql, 3, params, on_summary, req) < 0) {
        free(sr);
        nf_http_reply_error(req, 503, "unavailable", NULL, "billing store unavailable, retry");
    }
}

static void on_job_cost(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    struct lines lines;
    cJSON *body;
    char usd[32];

    if (!res) {
        nf_log_kv(NF_LOG_WARN, "job_cost_failed", "job cost query failed", "error", err, NULL);
        nf_http_set_header(req, "Retry-After", "1");
        nf_http_reply_error(req, 503, "unavailable", NULL, "billing store unavailable, retry");
        return;
    }
    if (sum_lines(res, &lines) < 0) {
        nf_http_reply_error(req, 500, "internal", NULL, "usage total out of range");
        return;
    }
    body = nf_json_obj();
    nf_json_add_str(body, "job_id", nf_http_req_param(req, "job_id"));
    bill_usd_format(lines.total_micros, usd);
    nf_json_add_str(body, "cost_usd", usd);
    nf_json_add_int(body, "cost_micros", lines.total_micros);
    nf_http_reply_json(req, 200, body);
}

static void get_job_cost(struct nf_http_req *req, void *arg)
{
    struct bill_ctx *ctx = arg;
    const char *params[2];

    params[0] = nf_http_req_param(req, "job_id");
    params[1] = nf_http_req_query(req, "user_id");
    if (!params[1] || !*params[1]) {
        nf_http_reply_error(req, 400, "invalid_request", "user_id", "user_id is required");
        return;
    }
    if (nf_pg_query(ctx->pg, job_cost_sql, 2, params, on_job_cost, req) < 0)
        nf_http_reply_error(req, 503, "unavailable", NULL, "billing store unavailable, retry");
}

int bill_routes_internal(struct bill_ctx *ctx)
{
    if (nf_http_route(ctx->http, "GET", "/internal/summary", get_summary, ctx) < 0 ||
        nf_http_route(ctx->http, "GET", "/internal/jobs/{job_id}/cost", get_job_cost, ctx) < 0)
        return -1;
    return 0;
}
