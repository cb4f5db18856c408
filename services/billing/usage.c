/*
 * Pure billing logic: what a valid usage event is, what a quantity costs, and the time
 * arithmetic of windows and periods. No backend calls, so every rule is unit tested.
 *
 * Price math: a rate is the exact fraction price_micros / per_units (micro-USD per base
 * unit). A line's cost is round_half_up(quantity * price_micros / per_units), computed in
 * 128-bit integers: quantity < 2^64 and price_micros < 2^63, so the product never
 * overflows. Seeded rates (GB = 1e9 bytes, month = 730 h):
 *   gpu_ms              2,500,000 / 3,600,000        ($2.50 per GPU hour)
 *   input_tokens       10,000,000 / 1,000,000        ($10 per 1M)
 *   output_tokens      30,000,000 / 1,000,000        ($30 per 1M)
 *   storage_byte_hours     20,000 / 730,000,000,000  ($0.02 per GB-month)
 */
#include "bill.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "nf_event.h"
#include "nf_json.h"

static const char *const meter_names[BILL_NMETERS] = {
    "gpu_ms",
    "input_tokens",
    "output_tokens",
    "storage_byte_hours",
};

static const long long meter_max[BILL_NMETERS] = {
    BILL_MAX_GPU_MS,
    BILL_MAX_TOKENS,
    BILL_MAX_TOKENS,
    BILL_MAX_STORAGE_BYTE_HOURS,
};

const char *const bill_job_types[6] = {
    "generate", "audit", "distill", "train", "evaluate", "deploy",
};

/* A GPU window may not claim more GPU time than this many GPUs running all along. */
#define MAX_GPUS_PER_WINDOW 64

int bill_job_type_index(const char *s)
{
    int i;

    for (i = 0; s && i < 6; i++)
        if (strcmp(s, bill_job_types[i]) == 0)
            return i;
    return -1;
}

const char *bill_meter_name(enum bill_meter m)
{
    return (unsigned)m < BILL_NMETERS ? meter_names[m] : "unknown";
}

int bill_meter_parse(const char *name, enum bill_meter *out)
{
    int i;

    if (!name)
        return -1;
    for (i = 0; i < BILL_NMETERS; i++) {
        if (strcmp(name, meter_names[i]) == 0) {
            *out = (enum bill_meter)i;
            return 0;
        }
    }
    return -1;
}

const char *bill_meter_base_unit(enum bill_meter m)
{
    static const char *const units[BILL_NMETERS] = {"ms", "token", "token", "byte-hour"};

    return (unsigned)m < BILL_NMETERS ? units[m] : "unknown";
}

long long bill_meter_max(enum bill_meter m)
{
    return (unsigned)m < BILL_NMETERS ? meter_max[m] : 0;
}

/* ------------------------------------------------------------------------------------
 * Time
 * ------------------------------------------------------------------------------------ */

/* Days since 1970-01-01 of a proleptic Gregorian date (y >= 1970 here). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : dm[m - 1];
}

static bool num(const char *s, int n, int *v)
{
    int i;

    *v = 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

/* RFC 3339 date-time; a plain date too when allow_date. */
static int parse_time(const char *s, bool allow_date, int64_t *out)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, oh, om, i;
    int64_t t;

    if (!s || !num(s, 4, &y) || s[4] != '-' || !num(s + 5, 2, &mo) || s[7] != '-' ||
        !num(s + 8, 2, &d))
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    t = days_from_civil(y, mo, d) * 86400000LL;
    s += 10;
    if (*s == '\0') {
        if (!allow_date)
            return -1;
        *out = t;
        return 0;
    }
    if (s[0] != 'T' || !num(s + 1, 2, &h) || s[3] != ':' || !num(s + 4, 2, &mi) || s[6] != ':' ||
        !num(s + 7, 2, &sec) || h > 23 || mi > 59 || sec > 60)
        return -1;
    s += 9;
    if (*s == '.') {
        for (i = 0, s++; *s >= '0' && *s <= '9'; s++, i++) {
            if (i < 3)
                ms = ms * 10 + (*s - '0');
        }
        if (i < 1 || i > 9)
            return -1;
        for (; i < 3; i++)
            ms *= 10;
    }
    t += ((int64_t)h * 3600 + (int64_t)mi * 60 + sec) * 1000 + ms;
    if (s[0] == 'Z' && s[1] == '\0') {
        *out = t;
        return 0;
    }
    if ((s[0] == '+' || s[0] == '-') && num(s + 1, 2, &oh) && s[3] == ':' && num(s + 4, 2, &om) &&
        s[6] == '\0' && oh <= 23 && om <= 59) {
        t -= (s[0] == '+' ? 1 : -1) * ((int64_t)oh * 60 + om) * 60000;
        if (t < 0)
            return -1;
        *out = t;
        return 0;
    }
    return -1;
}

int bill_time_parse(const char *s, int64_t *ms)
{
    return parse_time(s, true, ms);
}

void bill_time_format(int64_t ms, char out[32])
{
    nf_event_time(ms < 0 ? 0 : (uint64_t)ms, out);
}

int64_t bill_month_start(int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&sec, &tm);
    return days_from_civil(tm.tm_year + 1900, tm.tm_mon + 1, 1) * 86400000LL;
}

int bill_u64_parse(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Money
 * ------------------------------------------------------------------------------------ */

int bill_cost_micros(uint64_t quantity, const struct bill_rate *rate, long long *out)
{
    unsigned __int128 prod, q;
    uint64_t per, rem;

    if (!rate || rate->price_micros < 0 || rate->per_units <= 0)
        return -EINVAL;
    per = (uint64_t)rate->per_units;
    prod = (unsigned __int128)quantity * (uint64_t)rate->price_micros;
    q = prod / per;
    rem = (uint64_t)(prod % per);
    if (rem >= per - rem) /* 2 * rem >= per without overflowing: half rounds up */
        q++;
    if (q > (unsigned __int128)LLONG_MAX)
        return -ERANGE;
    *out = (long long)q;
    return 0;
}

void bill_usd_format(long long micros, char out[32])
{
    unsigned long long u =
        micros < 0 ? 0ULL - (unsigned long long)micros : (unsigned long long)micros;

    snprintf(out, 32, "%s%llu.%06llu", micros < 0 ? "-" : "", u / 1000000ULL, u % 1000000ULL);
}

/* ------------------------------------------------------------------------------------
 * Usage events
 * ------------------------------------------------------------------------------------ */

static bool str_ok(const char *s, size_t max)
{
    return s && s[0] != '\0' && strlen(s) <= max;
}

int bill_usage_parse(const cJSON *ev, struct bill_usage *out, const char **why)
{
    struct bill_usage u;
    const char *type = NULL, *subject = NULL, *meter;
    const cJSON *data, *it;
    double d;

    memset(&u, 0, sizeof(u));
    data = nf_event_data(ev, &type, &subject, why);
    if (!data)
        return -1;
    if (strcmp(type, "forge.usage.recorded") != 0) {
        *why = "type is not forge.usage.recorded";
        return -1;
    }
    u.event_id = nf_json_str(ev, "id");
    if (!str_ok(u.event_id, 128)) {
        *why = "id longer than 128 characters";
        return -1;
    }
    u.user_id = nf_json_str(data, "user_id");
    if (!str_ok(u.user_id, 128)) {
        *why = "data.user_id must be a string of 1 to 128 characters";
        return -1;
    }
    u.job_id = nf_json_str(data, "job_id");
    if (!str_ok(u.job_id, 128)) {
        *why = "data.job_id must be a string of 1 to 128 characters";
        return -1;
    }
    if (strcmp(subject, u.user_id) != 0) {
        *why = "subject must be data.user_id";
        return -1;
    }
    u.job_type = nf_json_str(data, "job_type");
    if (bill_job_type_index(u.job_type) < 0) {
        *why = "data.job_type is not a known job type";
        return -1;
    }
    meter = nf_json_str(data, "meter");
    if (bill_meter_parse(meter, &u.meter) < 0) {
        *why = "data.meter is not a known meter";
        return -1;
    }
    it = cJSON_GetObjectItemCaseSensitive(data, "quantity");
    d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!isfinite(d) || floor(d) != d) {
        *why = "data.quantity must be an integer";
        return -1;
    }
    if (d <= 0) {
        *why = "data.quantity must be positive";
        return -1;
    }
    if (d > (double)bill_meter_max(u.meter)) {
        *why = "data.quantity exceeds the meter's maximum per event";
        return -1;
    }
    u.quantity = (long long)d;
    it = cJSON_GetObjectItemCaseSensitive(data, "attempt");
    if (it && !cJSON_IsNull(it)) {
        d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
        if (!isfinite(d) || floor(d) != d || d < 1 || d > 1000) {
            *why = "data.attempt must be an integer between 1 and 1000";
            return -1;
        }
        u.attempt = (long long)d;
    }
    it = cJSON_GetObjectItemCaseSensitive(data, "worker_id");
    if (it && !cJSON_IsNull(it)) {
        u.worker_id = cJSON_IsString(it) ? it->valuestring : NULL;
        if (!str_ok(u.worker_id, 128)) {
            *why = "data.worker_id must be a string of 1 to 128 characters";
            return -1;
        }
    }
    u.window_start = nf_json_str(data, "window_start");
    u.window_end = nf_json_str(data, "window_end");
    if (parse_time(u.window_start, false, &u.start_ms) < 0) {
        *why = "data.window_start must be an RFC 3339 time";
        return -1;
    }
    if (parse_time(u.window_end, false, &u.end_ms) < 0) {
        *why = "data.window_end must be an RFC 3339 time";
        return -1;
    }
    if (u.end_ms < u.start_ms) {
        *why = "data.window_end is before data.window_start";
        return -1;
    }
    /* compute is metered by the worker that leased the job: it must say who it is */
    if (u.meter != BILL_STORAGE_BYTE_HOURS && (!u.worker_id || u.attempt < 1)) {
        *why = "data.worker_id and data.attempt are required for compute meters";
        return -1;
    }
    if (u.meter == BILL_GPU_MS &&
        (uint64_t)u.quantity > (uint64_t)(u.end_ms - u.start_ms) * MAX_GPUS_PER_WINDOW) {
        *why = "data.quantity is more GPU time than the window holds";
        return -1;
    }
    *out = u;
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Query parameters
 * ------------------------------------------------------------------------------------ */

int bill_bucket_parse(const char *s, enum bill_bucket *out)
{
    if (!s || !*s || strcmp(s, "hour") == 0) {
        *out = BILL_BUCKET_HOUR;
        return 0;
    }
    if (strcmp(s, "day") == 0) {
        *out = BILL_BUCKET_DAY;
        return 0;
    }
    return -1;
}

const char *bill_bucket_name(enum bill_bucket b)
{
    return b == BILL_BUCKET_DAY ? "day" : "hour";
}

int bill_period_parse(const char *ps, const char *pe, int64_t now_ms, int64_t *start, int64_t *end,
                      struct nf_json_err *err)
{
    int64_t s = bill_month_start(now_ms), e = now_ms;

    if (ps && *ps && bill_time_parse(ps, &s) < 0)
        return nf_json_fail(err, "period_start",
                            "period_start must be an RFC 3339 time or a date (YYYY-MM-DD)");
    if (pe && *pe && bill_time_parse(pe, &e) < 0)
        return nf_json_fail(err, "period_end",
                            "period_end must be an RFC 3339 time or a date (YYYY-MM-DD)");
    if (e <= s)
        return nf_json_fail(err, (pe && *pe) ? "period_end" : "period_start",
                            "period_end must be after period_start");
    if (e - s > BILL_MAX_PERIOD_MS)
        return nf_json_fail(err, "period_end", "a period may cover at most 366 days");
    *start = s;
    *end = e;
    return 0;
}
