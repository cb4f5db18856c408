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
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nf_event.h"
#include "nf_json.h"
#include "nf_str.h"
#include "nf_time.h"

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

/* A GPU window may not claim more GPU time than this many GPUs running all along. */
#define MAX_GPUS_PER_WINDOW 64

const char *bill_meter_name(enum bill_meter m)
{
    return (unsigned)m < BILL_NMETERS ? meter_names[m] : "unknown";
}

int bill_meter_parse(const char *name, enum bill_meter *out)
{
    int i = nf_str_index(meter_names, BILL_NMETERS, name);

    if (i < 0)
        return -1;
    *out = (enum bill_meter)i;
    return 0;
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

int64_t bill_month_start(int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    int into; /* seconds since the month began, under 31 days */

    gmtime_r(&sec, &tm);
    into = (tm.tm_mday - 1) * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    return ((int64_t)sec - into) * 1000;
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

/* A deployment's usage while it serves (job_type deploy, a dep-<12 hex>
 * data.deployment_id): its requests' tokens, metered by the gateway, or its GPU time,
 * metered by the worker that serves it. */
static bool serving_usage(const cJSON *data, const struct bill_usage *u)
{
    const char *dep = nf_json_str(data, "deployment_id");

    if (!dep || !u->job_type || strcmp(u->job_type, "deploy") != 0 ||
        (u->meter != BILL_INPUT_TOKENS && u->meter != BILL_OUTPUT_TOKENS &&
         u->meter != BILL_GPU_MS))
        return false;
    if (strncmp(dep, "dep-", 4) != 0 || strlen(dep) != 16)
        return false;
    for (const char *c = dep + 4; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
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
    meter = nf_json_str(data, "meter");
    if (bill_meter_parse(meter, &u.meter) < 0) {
        *why = "data.meter is not a known meter";
        return -1;
    }
    /* "files": the storage of an uploaded file (job_id = its artifact id) */
    if (nf_job_type_index(u.job_type) < 0 &&
        !(u.job_type && strcmp(u.job_type, "files") == 0 && u.meter == BILL_STORAGE_BYTE_HOURS)) {
        *why = "data.job_type is not a known job type";
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
    if (nf_time_parse_rfc3339(u.window_start, 0, &u.start_ms) < 0) {
        *why = "data.window_start must be an RFC 3339 time";
        return -1;
    }
    if (nf_time_parse_rfc3339(u.window_end, 0, &u.end_ms) < 0) {
        *why = "data.window_end must be an RFC 3339 time";
        return -1;
    }
    if (u.end_ms < u.start_ms) {
        *why = "data.window_end is before data.window_start";
        return -1;
    }
    /* compute is metered by the worker that leased the job: it must say who it is; a
     * deployment's requests are metered by the gateway that proxied them, on the deploy
     * job, with data.deployment_id and no worker or attempt (the job's attempts are
     * closed: the endpoint serves after its job succeeded); its GPU time while it serves
     * by the worker serving it: data.worker_id (a worker that leased the job, checked
     * like any lease) and no attempt */
    if (serving_usage(data, &u)) {
        if (u.attempt > 0) {
            *why = "a deployment's usage has no data.attempt";
            return -1;
        }
        if (u.meter == BILL_GPU_MS ? !u.worker_id : u.worker_id != NULL) {
            *why = u.worker_id ? "a deployment's request usage has no data.worker_id"
                               : "a deployment's GPU time needs data.worker_id";
            return -1;
        }
    } else if (u.meter != BILL_STORAGE_BYTE_HOURS && (!u.worker_id || u.attempt < 1)) {
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
 * Envelopes
 * ------------------------------------------------------------------------------------ */

cJSON *bill_usage_rebuild(const char *event_id, const char *user_id, const char *job_id,
                          const char *job_type, long long attempt, const char *worker_id,
                          const char *meter, long long quantity, const char *start, const char *end)
{
    cJSON *data = nf_json_obj();

    nf_json_add_str(data, "user_id", user_id);
    nf_json_add_str(data, "job_id", job_id);
    nf_json_add_str(data, "job_type", job_type);
    if (attempt > 0)
        nf_json_add_int(data, "attempt", attempt);
    else if (!cJSON_AddNullToObject(data, "attempt")) /* a deployment's serving usage */
        abort();
    nf_json_add_str(data, "worker_id", worker_id);
    nf_json_add_str(data, "meter", meter);
    nf_json_add_int(data, "quantity", quantity);
    nf_json_add_str(data, "window_start", start);
    nf_json_add_str(data, "window_end", end);
    return nf_event_new("forge.usage.recorded", BILL_SOURCE, user_id, event_id, data);
}

/* ------------------------------------------------------------------------------------
 * Waived attempts
 * ------------------------------------------------------------------------------------ */

bool bill_class_waived(const char *error_class)
{
    static const char *const free_classes[] = {"worker_lost", "infra", "preempted"};

    return error_class && nf_str_index(free_classes, 3, error_class) >= 0;
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

    if (ps && *ps && nf_time_parse_rfc3339(ps, NF_TIME_DATE, &s) < 0)
        return nf_json_fail(err, "period_start",
                            "period_start must be an RFC 3339 time or a date (YYYY-MM-DD)");
    if (pe && *pe && nf_time_parse_rfc3339(pe, NF_TIME_DATE, &e) < 0)
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
