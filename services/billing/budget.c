/*
 * Pure budget logic: the monthly limit a user sets, whether they are over it, which alert
 * thresholds their spending has reached, and the events that announce both.
 *
 *   spent (month to date, micro-USD) vs limit (micro-USD, or none):
 *     over budget     <=> a budget exists and spent >= limit  (a zero budget stops all)
 *     threshold p hit <=> limit > 0 and 100 * spent >= p * limit   for p in 50, 80, 100
 *
 * All comparisons are exact integer arithmetic (128-bit where a product could overflow).
 */
#include "bill.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nf_event.h"
#include "nf_json.h"
#include "nf_time.h"

const int bill_alert_pcts[BILL_NALERTS] = {50, 80, 100};

int bill_usd_parse(const char *s, long long *micros)
{
    unsigned long long whole = 0, frac = 0;
    int digits = 0, decimals = 0;

    if (!s || !*s)
        return -1;
    for (; *s >= '0' && *s <= '9'; s++, digits++) {
        if (whole > 1000000000ULL) /* far above the limit: stop before overflowing */
            return -1;
        whole = whole * 10 + (unsigned long long)(*s - '0');
    }
    if (*s == '.') {
        for (s++; *s >= '0' && *s <= '9'; s++, decimals++) {
            if (decimals == 6)
                return -1;
            frac = frac * 10 + (unsigned long long)(*s - '0');
        }
        if (decimals == 0)
            return -1;
    }
    if (*s != '\0' || digits == 0)
        return -1;
    for (; decimals < 6; decimals++)
        frac *= 10;
    if (whole > (unsigned long long)BILL_MAX_BUDGET_MICROS / 1000000ULL)
        return -1;
    whole = whole * 1000000ULL + frac;
    if (whole > (unsigned long long)BILL_MAX_BUDGET_MICROS)
        return -1;
    *micros = (long long)whole;
    return 0;
}

/* A JSON number with at most 6 decimals (within double precision) as micro-USD. */
static int number_micros(double d, long long *micros)
{
    double x, r;

    if (!isfinite(d) || d < 0 || d > (double)BILL_MAX_BUDGET_MICROS / 1e6)
        return -1;
    x = d * 1e6;
    r = floor(x + 0.5);
    if (fabs(x - r) > fmax(1e-3, x * 1e-15))
        return -1;
    *micros = (long long)r;
    return *micros <= BILL_MAX_BUDGET_MICROS ? 0 : -1;
}

int bill_budget_parse(const cJSON *body, bool *has_limit, long long *micros,
                      struct nf_json_err *err)
{
    const cJSON *it;
    long long v = 0;

    if (!cJSON_IsObject(body))
        return nf_json_fail(err, "", "the body must be a JSON object");
    for (it = body->child; it; it = it->next)
        if (!it->string || strcmp(it->string, "monthly_limit_usd") != 0)
            return nf_json_fail(err, it->string ? it->string : "", "unknown key %s",
                                it->string ? it->string : "");
    it = cJSON_GetObjectItemCaseSensitive(body, "monthly_limit_usd");
    if (!it)
        return nf_json_fail(err, "monthly_limit_usd", "monthly_limit_usd is required");
    if (cJSON_IsNull(it)) {
        *has_limit = false;
        *micros = 0;
        return 0;
    }
    if ((cJSON_IsString(it) && bill_usd_parse(it->valuestring, &v) == 0) ||
        (cJSON_IsNumber(it) && number_micros(it->valuedouble, &v) == 0)) {
        *has_limit = true;
        *micros = v;
        return 0;
    }
    return nf_json_fail(err, "monthly_limit_usd",
                        "monthly_limit_usd must be a non-negative USD amount with at most 6 "
                        "decimals, at most 1000000000 (or null to remove the budget)");
}

bool bill_budget_over(long long spent, long long limit)
{
    return limit >= 0 && spent >= limit;
}

unsigned bill_budget_crossed(long long spent, long long limit)
{
    unsigned bits = 0;
    int i;

    if (limit <= 0 || spent <= 0)
        return 0;
    for (i = 0; i < BILL_NALERTS; i++)
        if ((__int128)spent * 100 >= (__int128)limit * bill_alert_pcts[i])
            bits |= 1u << i;
    return bits;
}

int bill_budget_percent(long long spent, long long limit)
{
    __int128 p;

    if (limit <= 0)
        return -1;
    if (spent <= 0)
        return 0;
    p = (__int128)spent * 100 / limit;
    return p > 999 ? 999 : (int)p;
}

/* "2026-11" of the month starting at month_ms. */
static void month_name(int64_t month_ms, char out[16])
{
    char t[32];

    nf_time_format_rfc3339(month_ms, t); /* "2026-11-01T00:00:00.000Z" */
    snprintf(out, 16, "%.7s", t);
}

void bill_alert_id(const char *user_id, int64_t month_ms, int pct, char out[40])
{
    char month[16];

    month_name(month_ms, month);
    nf_event_id(out, 40, "alr", "%s:%s:%d", user_id, month, pct);
}

cJSON *bill_alert_event(const char *user_id, int64_t month_ms, int pct, long long limit,
                        long long spent)
{
    char id[40], month[16], start[32], usd[32];
    cJSON *data = nf_json_obj();

    bill_alert_id(user_id, month_ms, pct, id);
    month_name(month_ms, month);
    nf_time_format_rfc3339(month_ms, start);
    nf_json_add_str(data, "user_id", user_id);
    nf_json_add_int(data, "threshold_percent", pct);
    nf_json_add_str(data, "month", month);
    nf_json_add_str(data, "period_start", start);
    bill_usd_format(limit, usd);
    nf_json_add_str(data, "monthly_limit_usd", usd);
    bill_usd_format(spent, usd);
    nf_json_add_str(data, "spent_usd", usd);
    nf_json_add_int(data, "percent_used", bill_budget_percent(spent, limit));
    return nf_event_new("forge.billing.budget_alert", BILL_SOURCE, user_id, id, data);
}

cJSON *bill_cost_event(const char *job_id, const char *user_id, long long cost_micros,
                       long long attempts_closed)
{
    char usd[32];
    cJSON *data = nf_json_obj();

    nf_json_add_str(data, "job_id", job_id);
    nf_json_add_str(data, "user_id", user_id);
    nf_json_add_int(data, "cost_micros", cost_micros);
    bill_usd_format(cost_micros, usd);
    nf_json_add_str(data, "cost_usd", usd);
    nf_json_add_int(data, "attempts_closed", attempts_closed);
    return nf_event_new("forge.billing.job_cost", BILL_SOURCE, job_id, NULL, data);
}
