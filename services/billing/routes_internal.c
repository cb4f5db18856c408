/*
 * Internal billing reads (the gateway forwards /api/billing/... here with the caller's id):
 *
 *   GET /internal/summary?user_id=&period_start=&period_end=
 *       -> {user_id, period_start, period_end, currency,
 *           meters:    [line...]                   one per (meter, price version)
 *           job_types: [{job_type, lines: [line...], total_usd, total_micros}],
 *           total_usd, total_micros}               = the sum of the meter lines
 *       line = {meter, quantity, base_unit, unit, unit_size, rate, cost_usd,
 *               cost_micros, effective_from}: quantity base units at `rate` USD per
 *               `unit` of `unit_size` base units; cost = the sum of the line's cells,
 *               each cell (one job's compute meter in one hour; storage: one hour of
 *               a job type) quantity x rate / unit_size rounded half up once. So the
 *               costs of the jobs a period covers add up exactly to its lines.
 *   GET /internal/usage?user_id=&bucket=hour|day&meter=&job_type=&period_start=&period_end=
 *       -> {..., points: [{start, meter, quantity, cost_usd, cost_micros}]} (buckets with
 *          usage only, oldest first)
 *   GET /internal/jobs/{job_id}/cost?user_id= -> {job_id, cost_usd, cost_micros}
 *
 * Periods default to the current UTC month up to now. Usage is kept in hourly buckets: a
 * bucket counts when its hour starts in [period_start, period_end). Postgres prices and
 * sums the cells (billing.cell_cost_micros, the rule of bill_cost_micros in exact numeric
 * arithmetic); the totals are added here in integers.
 */
#include "bill.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_http.h"
#include "nf_json.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_pg.h"
#include "nf_time.h"
#include "routes.h"

/* clang-format off */
const char bill_summary_sql[] =
    "SELECT x.job_type, x.meter, p.unit, p.price_micros, p.per_units,"
    "  " BILL_TS("p.effective_from") " AS effective_from, sum(x.quantity)::text AS quantity,"
    "  " BILL_CELLS_COST " AS cost_micros"
    " FROM billing.cells x" BILL_PRICE_AT("x.hour")
    " WHERE x.user_id = $1 AND x.hour >= $2::timestamptz AND x.hour < $3::timestamptz"
    " GROUP BY x.job_type, x.meter, p.unit, p.price_micros, p.per_units, p.effective_from"
    " ORDER BY x.meter, p.effective_from, x.job_type";

static const char usage_sql[] =
    "SELECT " BILL_TS("date_trunc($4, x.hour, 'UTC')") " AS bucket, x.meter,"
    "  p.price_micros, p.per_units, sum(x.quantity)::text AS quantity,"
    "  " BILL_CELLS_COST " AS cost_micros"
    " FROM billing.cells x" BILL_PRICE_AT("x.hour")
    " WHERE x.user_id = $1 AND x.hour >= $2::timestamptz AND x.hour < $3::timestamptz"
    "  AND ($5::text IS NULL OR x.meter = $5) AND ($6::text IS NULL OR x.job_type = $6)"
    " GROUP BY 1, x.meter, p.price_micros, p.per_units, p.effective_from"
    " ORDER BY 1, 2, p.effective_from";

static const char job_cost_sql[] =
    "SELECT x.meter, p.price_micros, p.per_units, sum(x.quantity)::text AS quantity,"
    "  " BILL_CELLS_COST " AS cost_micros"
    " FROM billing.usage_jobs x" BILL_PRICE_AT("x.hour")
    " WHERE x.job_id = $1 AND x.user_id = $2"
    " GROUP BY x.meter, p.price_micros, p.per_units, p.effective_from";
/* clang-format on */

/* The period and filters of one read, kept until its query answers. */
struct read_req {
    char start[32], end[32];
    enum bill_bucket bucket;
    const char *meter, *job_type; /* static names, or NULL */
};

static void reply_unavailable(struct nf_http_req *req, const char *what, const char *err)
{
    nf_log_kv(NF_LOG_WARN, "read_failed", "billing read failed", "read", what, "error", err, NULL);
    nf_http_set_header(req, "Retry-After", "1");
    nf_http_reply_error(req, 503, "unavailable", NULL, "billing store unavailable, retry");
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

static int ll_val(const PGresult *res, int row, const char *col, long long *out)
{
    const char *s = nf_pg_val(res, row, col);
    char *end;

    if (!s || !*s)
        return -1;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno || *end ? -1 : 0;
}

/* A row's rate; -1 when the meter has no price (never for the seeded book). */
static int row_rate(const PGresult *res, int row, struct bill_rate *rate)
{
    return ll_val(res, row, "price_micros", &rate->price_micros) < 0 ||
                   ll_val(res, row, "per_units", &rate->per_units) < 0
               ? -1
               : 0;
}

/* One priced line: qty at rate costs cost (the sum of its cells). */
static cJSON *line_json(enum bill_meter meter, uint64_t qty, const struct bill_rate *rate,
                        const char *unit, const char *effective_from, long long cost)
{
    char usd[32];
    cJSON *o = nf_json_obj();

    nf_json_add_str(o, "meter", bill_meter_name(meter));
    add_raw_u64(o, "quantity", qty);
    nf_json_add_str(o, "base_unit", bill_meter_base_unit(meter));
    nf_json_add_str(o, "unit", unit);
    nf_json_add_int(o, "unit_size", rate->per_units);
    bill_usd_format(rate->price_micros, usd);
    nf_json_add_str(o, "rate", usd);
    bill_usd_format(cost, usd);
    nf_json_add_str(o, "cost_usd", usd);
    nf_json_add_int(o, "cost_micros", cost);
    nf_json_add_str(o, "effective_from", effective_from);
    return o;
}

static void add_total(cJSON *o, long long micros)
{
    char usd[32];

    bill_usd_format(micros, usd);
    nf_json_add_str(o, "total_usd", usd);
    nf_json_add_int(o, "total_micros", micros);
}

static cJSON *add_array(cJSON *o, const char *key)
{
    cJSON *a = cJSON_AddArrayToObject(o, key);

    if (!a)
        abort();
    return a;
}

/* The summary's groups: the six job types, then "files" (the storage of uploaded files,
 * which no job made). */
#define NGROUPS 7
static const char *const group_names[NGROUPS] = {"generate", "audit",  "distill", "train",
                                                 "evaluate", "deploy", "files"};

static int group_index(const char *job_type)
{
    for (int t = 0; job_type && t < NGROUPS; t++)
        if (strcmp(group_names[t], job_type) == 0)
            return t;
    return -1;
}

static bool same_line(const PGresult *res, int a, int b)
{
    const char *ma = nf_pg_val(res, a, "meter"), *mb = nf_pg_val(res, b, "meter");
    const char *ea = nf_pg_val(res, a, "effective_from"), *eb = nf_pg_val(res, b, "effective_from");

    return ma && mb && ea && eb && strcmp(ma, mb) == 0 && strcmp(ea, eb) == 0;
}

/*
 * The summary body from rows ordered by meter, price version, job type, each a job type
 * line with the cost of its cells. A meter line adds its job type lines (quantities and
 * costs: the cells are the same), the total adds the meter lines. NULL on a malformed
 * or overflowing row (logged).
 */
static cJSON *summary_body(const PGresult *res, const char *user_id, const struct read_req *rr)
{
    cJSON *body = nf_json_obj(), *meters, *types, *jt[NGROUPS] = {0}, *jl[NGROUPS] = {0}, *line;
    long long jt_total[NGROUPS] = {0}, total = 0, cost, sum_cost;
    int rows = PQntuples(res), row, first, t;
    enum bill_meter meter;
    struct bill_rate rate;
    uint64_t qty, sum;

    nf_json_add_str(body, "user_id", user_id);
    nf_json_add_str(body, "period_start", rr->start);
    nf_json_add_str(body, "period_end", rr->end);
    nf_json_add_str(body, "currency", "USD");
    meters = add_array(body, "meters");
    for (first = 0; first < rows; first = row) {
        if (bill_meter_parse(nf_pg_val(res, first, "meter"), &meter) < 0 ||
            row_rate(res, first, &rate) < 0)
            goto bad;
        sum = 0;
        sum_cost = 0;
        for (row = first; row < rows && (row == first || same_line(res, first, row)); row++) {
            t = group_index(nf_pg_val(res, row, "job_type"));
            if (bill_u64_parse(nf_pg_val(res, row, "quantity"), &qty) < 0 || t < 0 ||
                sum > UINT64_MAX - qty || ll_val(res, row, "cost_micros", &cost) < 0 || cost < 0 ||
                jt_total[t] > LLONG_MAX - cost || sum_cost > LLONG_MAX - cost)
                goto bad;
            sum += qty;
            sum_cost += cost;
            line = line_json(meter, qty, &rate, nf_pg_val(res, row, "unit"),
                             nf_pg_val(res, row, "effective_from"), cost);
            if (!jt[t]) {
                jt[t] = nf_json_obj();
                nf_json_add_str(jt[t], "job_type", group_names[t]);
                jl[t] = add_array(jt[t], "lines");
            }
            if (!cJSON_AddItemToArray(jl[t], line))
                abort();
            jt_total[t] += cost;
        }
        if (total > LLONG_MAX - sum_cost)
            goto bad;
        line = line_json(meter, sum, &rate, nf_pg_val(res, first, "unit"),
                         nf_pg_val(res, first, "effective_from"), sum_cost);
        if (!cJSON_AddItemToArray(meters, line))
            abort();
        total += sum_cost;
    }
    types = add_array(body, "job_types");
    for (t = 0; t < NGROUPS; t++) {
        if (!jt[t])
            continue;
        add_total(jt[t], jt_total[t]);
        if (!cJSON_AddItemToArray(types, jt[t]))
            abort();
        jt[t] = NULL;
    }
    add_total(body, total);
    return body;
bad:
    nf_log_error("summary_failed", "malformed or overflowing usage total in row %d", first);
    for (t = 0; t < NGROUPS; t++)
        cJSON_Delete(jt[t]);
    cJSON_Delete(body);
    return NULL;
}

typedef cJSON *(*read_body_fn)(const PGresult *res, const char *user_id, const struct read_req *rr);

/* A read's answer: the body built from its rows, 503 when the store failed. */
static void read_done(struct nf_http_req *req, const PGresult *res, const char *err,
                      const char *what, read_body_fn body_of)
{
    struct read_req *rr = nf_http_req_data(req);
    cJSON *body;

    if (!res) {
        free(rr);
        reply_unavailable(req, what, err);
        return;
    }
    body = body_of(res, nf_http_req_query(req, "user_id"), rr);
    free(rr);
    if (!body) {
        nf_http_reply_error(req, 500, "internal", NULL, "usage total out of range");
        return;
    }
    nf_http_reply_json(req, 200, body);
}

static void on_summary(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    read_done(arg, res, err, "summary", summary_body);
}

/*
 * The common query parameters: user_id (the gateway's caller), the period, and for the
 * time series bucket / meter / job_type. On a bad value answers 400/422 and returns NULL.
 */
static struct read_req *read_params(struct nf_http_req *req, bool series)
{
    const char *user_id = nf_http_req_query(req, "user_id");
    const char *v;
    struct nf_json_err err = {{0}, {0}};
    struct read_req rr = {{0}, {0}, BILL_BUCKET_HOUR, NULL, NULL};
    enum bill_meter meter;
    int64_t start, end;
    int t;

    if (!user_id || !*user_id) {
        nf_http_reply_error(req, 400, "invalid_request", "user_id", "user_id is required");
        return NULL;
    }
    if (bill_period_parse(nf_http_req_query(req, "period_start"),
                          nf_http_req_query(req, "period_end"), (int64_t)nf_now_ms(), &start, &end,
                          &err) < 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return NULL;
    }
    if (series) {
        if (bill_bucket_parse(nf_http_req_query(req, "bucket"), &rr.bucket) < 0) {
            nf_http_reply_error(req, 422, "invalid_params", "bucket", "bucket must be hour or day");
            return NULL;
        }
        v = nf_http_req_query(req, "meter");
        if (v && *v) {
            if (bill_meter_parse(v, &meter) < 0) {
                nf_http_reply_error(req, 422, "invalid_params", "meter",
                                    "meter must be gpu_ms, input_tokens, output_tokens or "
                                    "storage_byte_hours");
                return NULL;
            }
            rr.meter = bill_meter_name(meter);
        }
        v = nf_http_req_query(req, "job_type");
        if (v && *v) {
            t = group_index(v);
            if (t < 0) {
                nf_http_reply_error(req, 422, "invalid_params", "job_type",
                                    "job_type must be generate, audit, distill, train, evaluate, "
                                    "deploy or files");
                return NULL;
            }
            rr.job_type = group_names[t];
        }
    }
    nf_time_format_rfc3339(start, rr.start);
    nf_time_format_rfc3339(end, rr.end);
    return memcpy(nf_xmalloc(sizeof(rr)), &rr, sizeof(rr));
}

/*
 * Reads the query (read_params) and sends sql with $1 user_id, $2 $3 the period and, for
 * the time series, $4 bucket, $5 meter, $6 job_type; rr is owned by req until read_done.
 */
static void read_send(struct bill_ctx *ctx, struct nf_http_req *req, bool series, const char *sql,
                      nf_pg_cb cb, const char *what)
{
    struct read_req *rr = read_params(req, series);
    const char *params[6];

    if (!rr)
        return;
    params[0] = nf_http_req_query(req, "user_id");
    params[1] = rr->start;
    params[2] = rr->end;
    params[3] = bill_bucket_name(rr->bucket);
    params[4] = rr->meter;
    params[5] = rr->job_type;
    nf_http_req_set_data(req, rr);
    if (nf_pg_query(ctx->pg, sql, series ? 6 : 3, params, cb, req) < 0) {
        free(rr);
        reply_unavailable(req, what, "could not queue");
    }
}

void bill_internal_summary(struct nf_http_req *req, void *arg)
{
    read_send(arg, req, false, bill_summary_sql, on_summary, "summary");
}

/* The time series body from rows ordered by bucket, meter, price version. */
static cJSON *usage_body(const PGresult *res, const char *user_id, const struct read_req *rr)
{
    cJSON *body = nf_json_obj(), *points, *o;
    int rows = PQntuples(res), row, first;
    enum bill_meter meter;
    long long cost, sum_cost;
    uint64_t qty, sum;
    char usd[32];

    nf_json_add_str(body, "user_id", user_id);
    nf_json_add_str(body, "bucket", bill_bucket_name(rr->bucket));
    nf_json_add_str(body, "period_start", rr->start);
    nf_json_add_str(body, "period_end", rr->end);
    nf_json_add_str(body, "meter", rr->meter);
    nf_json_add_str(body, "job_type", rr->job_type);
    points = add_array(body, "points");
    for (first = 0; first < rows; first = row) {
        const char *bucket = nf_pg_val(res, first, "bucket");
        const char *m = nf_pg_val(res, first, "meter");

        if (!bucket || bill_meter_parse(m, &meter) < 0)
            goto bad;
        sum = 0;
        sum_cost = 0;
        for (row = first; row < rows; row++) {
            const char *b = nf_pg_val(res, row, "bucket"), *m2 = nf_pg_val(res, row, "meter");

            if (!b || !m2 || strcmp(b, bucket) != 0 || strcmp(m2, m) != 0)
                break;
            if (bill_u64_parse(nf_pg_val(res, row, "quantity"), &qty) < 0 ||
                ll_val(res, row, "cost_micros", &cost) < 0 || cost < 0 || sum > UINT64_MAX - qty ||
                sum_cost > LLONG_MAX - cost)
                goto bad;
            sum += qty;
            sum_cost += cost;
        }
        o = nf_json_obj();
        nf_json_add_str(o, "start", bucket);
        nf_json_add_str(o, "meter", m);
        add_raw_u64(o, "quantity", sum);
        bill_usd_format(sum_cost, usd);
        nf_json_add_str(o, "cost_usd", usd);
        nf_json_add_int(o, "cost_micros", sum_cost);
        if (!cJSON_AddItemToArray(points, o))
            abort();
    }
    return body;
bad:
    nf_log_error("usage_series_failed", "malformed or overflowing usage in row %d", first);
    cJSON_Delete(body);
    return NULL;
}

static void on_usage(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    read_done(arg, res, err, "usage", usage_body);
}

void bill_internal_usage(struct nf_http_req *req, void *arg)
{
    read_send(arg, req, true, usage_sql, on_usage, "usage");
}

static void on_job_cost(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    long long total;
    cJSON *body;
    char usd[32];

    if (!res) {
        reply_unavailable(req, "job_cost", err);
        return;
    }
    if (bill_rows_cost(res, 0, PQntuples(res), &total) < 0) {
        nf_http_reply_error(req, 500, "internal", NULL, "usage total out of range");
        return;
    }
    body = nf_json_obj();
    nf_json_add_str(body, "job_id", nf_http_req_param(req, "job_id"));
    bill_usd_format(total, usd);
    nf_json_add_str(body, "cost_usd", usd);
    nf_json_add_int(body, "cost_micros", total);
    nf_http_reply_json(req, 200, body);
}

void bill_internal_job_cost(struct nf_http_req *req, void *arg)
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
        reply_unavailable(req, "job_cost", "could not queue");
}
