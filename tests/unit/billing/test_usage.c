/*
 * usage.c: usage event validation (each failure path), the price math with exact values
 * for the seeded rates and the half-up rounding rule, and the month and period helpers
 * (RFC 3339 parsing itself is nf_time's, tested in test_nf_time).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "bill.h"
#include "nf_json.h"
#include "nf_test.h"
#include "nf_time.h"

static const struct bill_rate gpu = BILL_GPU_RATE;
static const struct bill_rate input = BILL_INPUT_RATE;
static const struct bill_rate output = BILL_OUTPUT_RATE;
static const struct bill_rate storage = BILL_STORAGE_RATE;

static long long cost(uint64_t q, const struct bill_rate *r)
{
    long long c = -1;

    assert_int_equal(bill_cost_micros(q, r, &c), 0);
    return c;
}

static void test_seeded_rates_exact(void **state)
{
    /* GPU: $2.50 per hour of one GPU */
    assert_int_equal(cost(3600000, &gpu), 2500000);             /* 1 GPU hour = $2.50 */
    assert_int_equal(cost(2 * 3600000ULL * 8, &gpu), 40000000); /* 8 GPUs x 2 h = $40 */
    assert_int_equal(cost(1800, &gpu), 1250);                   /* 1.8 s = 1250 micro-USD */
    assert_int_equal(cost(1000, &gpu), 694);                    /* 694.44 -> 694 */
    assert_int_equal(cost(1, &gpu), 1);                         /* 0.694 -> 1 */
    /* tokens */
    assert_int_equal(cost(1000000, &input), 10000000); /* 1M input = $10 */
    assert_int_equal(cost(1, &input), 10);
    assert_int_equal(cost(1000000, &output), 30000000); /* 1M output = $30 */
    assert_int_equal(cost(1234, &output), 37020);
    /* storage: $0.02 per GB-month, GB = 1e9 B, month = 730 h */
    assert_int_equal(cost(730000000000ULL, &storage), 20000);            /* 1 GB-month = $0.02 */
    assert_int_equal(cost(1000000000ULL * 730 * 50, &storage), 1000000); /* 50 GB-month */
    assert_int_equal(cost(1000000000ULL, &storage), 27); /* 1 GB for 1 h: 27.397 -> 27 */
    assert_int_equal(cost(0, &gpu), 0);
}

static void test_rounding_half_up(void **state)
{
    /* 18 ms x 25/36 = 12.5 exactly -> 13; 17 ms = 11.806 -> 12; 19 ms = 13.19 -> 13 */
    assert_int_equal(cost(18, &gpu), 13);
    assert_int_equal(cost(17, &gpu), 12);
    assert_int_equal(cost(19, &gpu), 13);
    /* storage: 18,250,000 byte-hours = 0.5 micro-USD exactly -> 1; one less -> 0 */
    assert_int_equal(cost(18250000, &storage), 1);
    assert_int_equal(cost(18249999, &storage), 0);
    /* a rate of 1/2: 1 -> 0.5 -> 1, 3 -> 1.5 -> 2, 2 -> 1 */
    {
        struct bill_rate half = {1, 2};

        assert_int_equal(cost(1, &half), 1);
        assert_int_equal(cost(3, &half), 2);
        assert_int_equal(cost(2, &half), 1);
    }
    /* per-line rounding: two lines round separately, the sum is not re-rounded */
    assert_int_equal(cost(18, &gpu) + cost(18, &gpu), 26);
    assert_int_equal(cost(36, &gpu), 25);
}

static void test_cost_errors(void **state)
{
    struct bill_rate bad_per = {1, 0}, neg_price = {-1, 1}, neg_per = {1, -5};
    struct bill_rate big = {LLONG_MAX, 1};
    long long c = 42;

    assert_int_equal(bill_cost_micros(1, &bad_per, &c), -EINVAL);
    assert_int_equal(bill_cost_micros(1, &neg_price, &c), -EINVAL);
    assert_int_equal(bill_cost_micros(1, &neg_per, &c), -EINVAL);
    assert_int_equal(bill_cost_micros(1, NULL, &c), -EINVAL);
    assert_int_equal(c, 42); /* untouched on error */
    assert_int_equal(bill_cost_micros(2, &big, &c), -ERANGE);
    assert_int_equal(bill_cost_micros(UINT64_MAX, &output, &c), -ERANGE);
    assert_int_equal(c, 42);
    /* the largest product: 2^64-1 x (2^63-1) / (2^63-1) does not overflow internally */
    {
        struct bill_rate one = {LLONG_MAX, LLONG_MAX};

        assert_int_equal(bill_cost_micros((uint64_t)LLONG_MAX, &one, &c), 0);
        assert_int_equal(c, LLONG_MAX);
        assert_int_equal(bill_cost_micros(UINT64_MAX, &one, &c), -ERANGE);
    }
    /* the largest event quantities cost what they should, no overflow */
    assert_int_equal(cost(BILL_MAX_STORAGE_BYTE_HOURS, &storage), 246575342LL);
    assert_int_equal(cost(BILL_MAX_TOKENS, &output), 3000000000000LL);
}

static void test_usd_format(void **state)
{
    char b[32];

    bill_usd_format(0, b);
    assert_string_equal(b, "0.000000");
    bill_usd_format(1250, b);
    assert_string_equal(b, "0.001250");
    bill_usd_format(2500000, b);
    assert_string_equal(b, "2.500000");
    bill_usd_format(-20000, b);
    assert_string_equal(b, "-0.020000");
}

/* ---------------------------------------------------------------------------------- */

static const char *good_data =
    "{\"user_id\":\"usr_1\",\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\","
    "\"attempt\":1,\"worker_id\":\"wrk_1\",\"meter\":\"gpu_ms\",\"quantity\":60000,"
    "\"window_start\":\"2026-11-28T21:00:00.000Z\",\"window_end\":\"2026-11-28T21:01:00Z\"}";

static cJSON *usage_event(const char *type, const char *data)
{
    char buf[2048];

    snprintf(buf, sizeof(buf),
             "{\"specversion\":\"1.0\",\"id\":\"use_0123456789abcdef0123456789abcdef\","
             "\"source\":\"nf-worker/wrk_1\",\"type\":\"%s\",\"subject\":\"usr_1\","
             "\"time\":\"2026-11-28T21:01:00.000Z\",\"data\":%s}",
             type, data);
    return cJSON_Parse(buf);
}

static void test_usage_ok(void **state)
{
    cJSON *ev = usage_event("forge.usage.recorded", good_data);
    struct bill_usage u;
    const char *why = NULL;

    assert_int_equal(bill_usage_parse(ev, &u, &why), 0);
    assert_string_equal(u.event_id, "use_0123456789abcdef0123456789abcdef");
    assert_string_equal(u.user_id, "usr_1");
    assert_string_equal(u.job_type, "train");
    assert_int_equal(u.meter, BILL_GPU_MS);
    assert_int_equal(u.quantity, 60000);
    assert_int_equal(u.attempt, 1);
    assert_string_equal(u.worker_id, "wrk_1");
    assert_int_equal(u.end_ms - u.start_ms, 60000);
    cJSON_Delete(ev);

    /* optional fields absent or null */
    ev = usage_event("forge.usage.recorded",
                     "{\"user_id\":\"usr_1\",\"job_id\":\"j\",\"job_type\":\"deploy\","
                     "\"meter\":\"storage_byte_hours\",\"quantity\":9000000000000000,"
                     "\"worker_id\":null,\"window_start\":\"2026-11-28T21:00:00Z\","
                     "\"window_end\":\"2026-11-28T21:00:00Z\"}");
    assert_int_equal(bill_usage_parse(ev, &u, &why), 0);
    assert_int_equal(u.attempt, 0);
    assert_null(u.worker_id);
    assert_int_equal(u.quantity, BILL_MAX_STORAGE_BYTE_HOURS);
    cJSON_Delete(ev);
}

/* A deployment's request usage, metered by the gateway: no worker, no attempt. */
static void test_usage_deployment(void **state)
{
    static const char *const datas[][2] = {
        {"\"attempt\":null,\"deployment_id\":\"dep-0123456789ab\"", NULL},
        {"\"deployment_id\":\"dep-0123456789ab\"", NULL},
        {"\"attempt\":null", "required for compute meters"},
        {"\"attempt\":null,\"deployment_id\":\"dep-XYZ\"", "required for compute meters"},
        {"\"attempt\":2,\"deployment_id\":\"dep-0123456789ab\"", "no data.attempt"},
        {"\"worker_id\":\"wrk_1\",\"deployment_id\":\"dep-0123456789ab\"", "no data.worker_id"},
    };
    char data[1024];
    struct bill_usage u;
    const char *why;
    cJSON *ev;

    (void)state;
    for (size_t i = 0; i < sizeof(datas) / sizeof(datas[0]); i++) {
        snprintf(data, sizeof(data),
                 "{\"user_id\":\"usr_1\",\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\","
                 "\"job_type\":\"deploy\",%s,\"meter\":\"output_tokens\",\"quantity\":12,"
                 "\"window_start\":\"2026-11-28T21:00:00Z\","
                 "\"window_end\":\"2026-11-28T21:00:01Z\"}",
                 datas[i][0]);
        ev = usage_event("forge.usage.recorded", data);
        why = NULL;
        if (datas[i][1] == NULL) {
            assert_int_equal(bill_usage_parse(ev, &u, &why), 0);
            assert_int_equal(u.attempt, 0);
            assert_null(u.worker_id);
            assert_int_equal(u.meter, BILL_OUTPUT_TOKENS);
        } else {
            assert_int_equal(bill_usage_parse(ev, &u, &why), -1);
            assert_non_null(why);
            if (!strstr(why, datas[i][1]))
                fail_msg("case %zu: reason '%s'", i, why);
        }
        cJSON_Delete(ev);
    }
}

/* A deployment's GPU time while it serves, metered by the worker serving it: a worker, no
 * attempt. */
static void test_usage_deployment_gpu(void **state)
{
    static const char *const datas[][2] = {
        {"\"attempt\":null,\"worker_id\":\"wrk_1\",\"deployment_id\":\"dep-0123456789ab\"", NULL},
        {"\"worker_id\":\"wrk_1\",\"deployment_id\":\"dep-0123456789ab\"", NULL},
        {"\"attempt\":null,\"deployment_id\":\"dep-0123456789ab\"", "needs data.worker_id"},
        {"\"attempt\":1,\"worker_id\":\"wrk_1\",\"deployment_id\":\"dep-0123456789ab\"",
         "no data.attempt"},
        {"\"attempt\":null,\"worker_id\":\"wrk_1\"", "required for compute meters"},
    };
    char data[1024];
    struct bill_usage u;
    const char *why;
    cJSON *ev;

    (void)state;
    for (size_t i = 0; i < sizeof(datas) / sizeof(datas[0]); i++) {
        snprintf(data, sizeof(data),
                 "{\"user_id\":\"usr_1\",\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\","
                 "\"job_type\":\"deploy\",%s,\"meter\":\"gpu_ms\",\"quantity\":2000,"
                 "\"window_start\":\"2026-11-28T21:00:00Z\","
                 "\"window_end\":\"2026-11-28T21:00:02Z\"}",
                 datas[i][0]);
        ev = usage_event("forge.usage.recorded", data);
        why = NULL;
        if (datas[i][1] == NULL) {
            assert_int_equal(bill_usage_parse(ev, &u, &why), 0);
            assert_int_equal(u.attempt, 0);
            assert_string_equal(u.worker_id, "wrk_1");
            assert_int_equal(u.meter, BILL_GPU_MS);
        } else {
            assert_int_equal(bill_usage_parse(ev, &u, &why), -1);
            assert_non_null(why);
            if (!strstr(why, datas[i][1]))
                fail_msg("case %zu: reason '%s'", i, why);
        }
        cJSON_Delete(ev);
    }
}

/* The good event with one data key replaced (val NULL: removed); must fail with reason. */
static void expect_usage_fail(const char *key, const char *val, const char *reason)
{
    cJSON *ev = usage_event("forge.usage.recorded", good_data);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    struct bill_usage u;
    const char *why = NULL;

    cJSON_DeleteItemFromObjectCaseSensitive(data, key);
    if (val)
        cJSON_AddItemToObject(data, key, cJSON_Parse(val));
    if (bill_usage_parse(ev, &u, &why) != -1)
        fail_msg("%s=%s accepted", key, val ? val : "(absent)");
    if (!why || !strstr(why, reason))
        fail_msg("%s=%s: reason '%s', expected '%s'", key, val ? val : "(absent)",
                 why ? why : "(null)", reason);
    cJSON_Delete(ev);
}

static void test_usage_failures(void **state)
{
    static const struct {
        const char *key, *val, *reason;
    } fails[] = {
        {"meter", "\"cpu_ms\"", "meter"},
        {"meter", NULL, "meter"},
        {"meter", "3", "meter"},
        {"quantity", NULL, "quantity must be an integer"},
        {"quantity", "\"5\"", "quantity must be an integer"},
        {"quantity", "1.5", "quantity must be an integer"},
        {"quantity", "0", "quantity must be positive"},
        {"quantity", "-3", "quantity must be positive"},
        {"quantity", "10000000001", "maximum"},
        {"user_id", NULL, "user_id"},
        {"user_id", "\"\"", "user_id"},
        {"job_id", NULL, "job_id"},
        {"job_id", "12", "job_id"},
        {"job_type", NULL, "job_type"},
        {"job_type", "\"bake\"", "job_type"},
        {"attempt", "0", "attempt"},
        {"attempt", "\"1\"", "attempt"},
        {"worker_id", "\"\"", "worker_id"},
        {"worker_id", "9", "worker_id"},
        {"window_start", NULL, "window_start"},
        {"window_start", "\"2026-11-28\"", "window_start"}, /* a date is not a time */
        {"window_start", "\"2026-02-30T00:00:00Z\"", "window_start"},
        {"window_end", "\"soon\"", "window_end"},
        {"window_end", "\"2026-11-28T20:59:59.999Z\"", "before"},
        /* compute meters come from the worker that leased the job: it must say who it is */
        {"worker_id", NULL, "required for compute meters"},
        {"worker_id", "null", "required for compute meters"},
        {"attempt", NULL, "required for compute meters"},
        /* more GPU time than 64 GPUs fill in the 60 s window: absurd */
        {"quantity", "3840001", "more GPU time than the window holds"},
        {"window_end", "\"2026-11-28T21:00:00.000Z\"", "more GPU time"},
        /* the message key is the subject, which must be the user the usage is billed to */
        {"user_id", "\"usr_2\"", "subject"},
    };
    cJSON *ev;
    struct bill_usage u;
    const char *why = NULL;
    char longid[200];

    for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++)
        expect_usage_fail(fails[i].key, fails[i].val, fails[i].reason);

    /* the window's own limit: exactly 64 GPUs for 60 s is fine */
    {
        cJSON *e2 = usage_event("forge.usage.recorded", good_data);
        cJSON *d = cJSON_GetObjectItemCaseSensitive(e2, "data");

        cJSON_ReplaceItemInObject(d, "quantity", cJSON_CreateNumber(3840000.0));
        assert_int_equal(bill_usage_parse(e2, &u, &why), 0);
        cJSON_Delete(e2);
    }

    /* per-meter maxima */
    {
        cJSON *e2 = usage_event("forge.usage.recorded", good_data);
        cJSON *d = cJSON_GetObjectItemCaseSensitive(e2, "data");

        cJSON_ReplaceItemInObject(d, "meter", cJSON_CreateString("input_tokens"));
        cJSON_ReplaceItemInObject(d, "quantity", cJSON_CreateNumber(100000000000.0));
        assert_int_equal(bill_usage_parse(e2, &u, &why), 0);
        cJSON_ReplaceItemInObject(d, "quantity", cJSON_CreateNumber(100000000001.0));
        assert_int_equal(bill_usage_parse(e2, &u, &why), -1);
        cJSON_ReplaceItemInObject(d, "meter", cJSON_CreateString("storage_byte_hours"));
        assert_int_equal(bill_usage_parse(e2, &u, &why), 0);
        cJSON_ReplaceItemInObject(d, "quantity", cJSON_CreateNumber(9000000000000001.0));
        assert_int_equal(bill_usage_parse(e2, &u, &why), -1);
        cJSON_Delete(e2);
    }

    /* envelope problems */
    ev = usage_event("forge.job.running", good_data);
    assert_int_equal(bill_usage_parse(ev, &u, &why), -1);
    assert_non_null(strstr(why, "type"));
    cJSON_Delete(ev);
    ev = usage_event("forge.usage.recorded", "[1]");
    assert_int_equal(bill_usage_parse(ev, &u, &why), -1);
    cJSON_Delete(ev);
    ev = cJSON_Parse("{\"data\":{}}");
    assert_int_equal(bill_usage_parse(ev, &u, &why), -1);
    cJSON_Delete(ev);
    ev = usage_event("forge.usage.recorded", good_data);
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    cJSON_ReplaceItemInObject(ev, "id", cJSON_CreateString(longid));
    assert_int_equal(bill_usage_parse(ev, &u, &why), -1);
    assert_non_null(strstr(why, "id"));
    cJSON_Delete(ev);
}

static void test_meters(void **state)
{
    enum bill_meter m;
    int i;

    for (i = 0; i < BILL_NMETERS; i++) {
        assert_int_equal(bill_meter_parse(bill_meter_name((enum bill_meter)i), &m), 0);
        assert_int_equal(m, i);
        assert_true(bill_meter_max((enum bill_meter)i) > 0);
        assert_true(bill_meter_max((enum bill_meter)i) <= (1LL << 53));
    }
    assert_int_equal(bill_meter_parse("GPU_MS", &m), -1);
    assert_int_equal(bill_meter_parse(NULL, &m), -1);
    assert_int_equal(bill_meter_max(BILL_NMETERS), 0);
    assert_string_equal(bill_meter_name(BILL_NMETERS), "unknown");
}

/* ---------------------------------------------------------------------------------- */

static void test_month_start(void **state)
{
    int64_t ms;
    char buf[32];

    nf_time_parse_rfc3339("2026-11-28T21:03:52.123Z", 0, &ms);
    nf_time_format_rfc3339(bill_month_start(ms), buf);
    assert_string_equal(buf, "2026-11-01T00:00:00.000Z");
    nf_time_parse_rfc3339("2024-03-01T00:00:00Z", 0, &ms);
    nf_time_format_rfc3339(bill_month_start(ms - 1), buf);
    assert_string_equal(buf, "2024-02-01T00:00:00.000Z");
    nf_time_format_rfc3339(bill_month_start(ms), buf);
    assert_string_equal(buf, "2024-03-01T00:00:00.000Z");
    nf_time_parse_rfc3339("2024-02-29T23:59:59.999Z", 0, &ms); /* leap day */
    assert_int_equal(bill_month_start(ms), 1706745600000LL);   /* 2024-02-01 */
    nf_time_parse_rfc3339("2026-12-31T23:59:59.999Z", 0, &ms);
    nf_time_format_rfc3339(bill_month_start(ms), buf);
    assert_string_equal(buf, "2026-12-01T00:00:00.000Z");
    assert_int_equal(bill_month_start(999), 0);
}

static void test_u64_parse(void **state)
{
    uint64_t v = 3;

    assert_int_equal(bill_u64_parse("0", &v), 0);
    assert_true(v == 0);
    assert_int_equal(bill_u64_parse("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    v = 3;
    assert_int_equal(bill_u64_parse("18446744073709551616", &v), -1);
    assert_int_equal(bill_u64_parse("-1", &v), -1);
    assert_int_equal(bill_u64_parse("12a", &v), -1);
    assert_int_equal(bill_u64_parse("", &v), -1);
    assert_int_equal(bill_u64_parse(NULL, &v), -1);
    assert_true(v == 3);
}

static void test_usage_json(void **state)
{
    cJSON *ev = usage_event("forge.usage.recorded", good_data), *o;
    struct bill_usage u;
    const char *why;

    assert_int_equal(bill_usage_parse(ev, &u, &why), 0);
    o = bill_usage_json(&u);
    assert_string_equal(nf_json_str(o, "event_id"), "use_0123456789abcdef0123456789abcdef");
    assert_int_equal(nf_json_int(o, "attempt", -1), 1);
    assert_string_equal(nf_json_str(o, "worker_id"), "wrk_1");
    assert_string_equal(nf_json_str(o, "meter"), "gpu_ms");
    assert_int_equal(nf_json_int(o, "quantity", -1), 60000);
    assert_string_equal(nf_json_str(o, "window_start"), "2026-11-28T21:00:00.000Z");
    assert_string_equal(nf_json_str(o, "window_end"), "2026-11-28T21:01:00.000Z"); /* canonical */
    cJSON_Delete(o);
    /* platform storage: no attempt, no worker -> JSON nulls (SQL NULLs) */
    u.attempt = 0;
    u.worker_id = NULL;
    o = bill_usage_json(&u);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "attempt")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "worker_id")));
    cJSON_Delete(o);
    cJSON_Delete(ev);
}

/* A rebuilt envelope (the DLQ copy of a pending event) parses back to the same usage. */
static void test_usage_rebuild(void **state)
{
    cJSON *ev = bill_usage_rebuild("use_0123456789abcdef0123456789abcdef", "usr_1", "job_1",
                                   "train", 2, "wrk_9", "output_tokens", 77,
                                   "2026-11-28T21:00:00.000Z", "2026-11-28T21:01:00.000Z");
    struct bill_usage u;
    const char *why = NULL;

    assert_int_equal(bill_usage_parse(ev, &u, &why), 0);
    assert_string_equal(u.event_id, "use_0123456789abcdef0123456789abcdef");
    assert_string_equal(u.worker_id, "wrk_9");
    assert_int_equal(u.attempt, 2);
    assert_int_equal(u.meter, BILL_OUTPUT_TOKENS);
    assert_int_equal(u.quantity, 77);
    assert_string_equal(nf_json_str(ev, "source"), "nf-billing");
    cJSON_Delete(ev);
}

static void test_bucket_parse(void **state)
{
    enum bill_bucket b = BILL_BUCKET_DAY;

    assert_int_equal(bill_bucket_parse(NULL, &b), 0);
    assert_int_equal(b, BILL_BUCKET_HOUR);
    assert_int_equal(bill_bucket_parse("day", &b), 0);
    assert_int_equal(b, BILL_BUCKET_DAY);
    assert_int_equal(bill_bucket_parse("", &b), 0);
    assert_int_equal(b, BILL_BUCKET_HOUR);
    assert_int_equal(bill_bucket_parse("hour", &b), 0);
    assert_int_equal(bill_bucket_parse("week", &b), -1);
    assert_int_equal(bill_bucket_parse("Day", &b), -1);
    assert_int_equal(bill_bucket_parse("hours", &b), -1);
    assert_string_equal(bill_bucket_name(BILL_BUCKET_DAY), "day");
    assert_string_equal(bill_bucket_name(BILL_BUCKET_HOUR), "hour");
}

static void expect_period_fail(const char *ps, const char *pe, const char *param)
{
    struct nf_json_err err = {{0}, {0}};
    int64_t s = 42, e = 43;

    if (bill_period_parse(ps, pe, 1795900000000LL, &s, &e, &err) != -1)
        fail_msg("period %s .. %s accepted", ps ? ps : "-", pe ? pe : "-");
    assert_string_equal(err.param, param);
    assert_true(err.msg[0] != '\0');
    assert_true(s == 42 && e == 43); /* untouched */
}

static void test_period_parse(void **state)
{
    struct nf_json_err err = {{0}, {0}};
    int64_t now = 1795900000000LL; /* 2026-11-28T21:06:40Z */
    int64_t s, e;

    /* defaults: this month to date */
    assert_int_equal(bill_period_parse(NULL, NULL, now, &s, &e, &err), 0);
    assert_true(s == 1793491200000LL); /* 2026-11-01T00:00:00Z */
    assert_true(e == now);
    assert_int_equal(bill_period_parse("", "", now, &s, &e, &err), 0);
    assert_true(s == 1793491200000LL && e == now);
    /* dates and times, offsets */
    assert_int_equal(bill_period_parse("2026-10-01", "2026-11-01", now, &s, &e, &err), 0);
    assert_true(s == 1790812800000LL && e == 1793491200000LL);
    assert_int_equal(
        bill_period_parse("2026-11-28T01:00:00+01:00", "2026-11-28T00:30:00.5Z", now, &s, &e, &err),
        0);
    assert_true(s == 1795824000000LL && e == s + 1800500); /* 2026-11-28T00:00:00Z */
    /* only one end given: the other defaults */
    assert_int_equal(bill_period_parse("2026-11-20", NULL, now, &s, &e, &err), 0);
    assert_true(e == now);
    /* bad values name their parameter */
    expect_period_fail("yesterday", NULL, "period_start");
    expect_period_fail("2026-13-01", NULL, "period_start");
    expect_period_fail("2026-02-29", NULL, "period_start"); /* not a leap year */
    expect_period_fail(NULL, "2026-11-28T25:00:00Z", "period_end");
    expect_period_fail(NULL, "1969-12-31", "period_end");
    expect_period_fail("2026-11-02", "2026-11-01", "period_end"); /* reversed */
    expect_period_fail("2026-11-01", "2026-11-01", "period_end"); /* empty */
    expect_period_fail("2026-12-01", NULL, "period_start");       /* starts after now */
    expect_period_fail("2024-01-01", "2025-01-02", "period_end"); /* 367 days */
    assert_int_equal(bill_period_parse("2024-01-01", "2025-01-01", now, &s, &e, &err), 0);
}

/* The charge of an attempt: the platform's faults are free, everything else is billed. */
static void test_class_waived(void **state)
{
    assert_true(bill_class_waived("worker_lost"));
    assert_true(bill_class_waived("infra"));
    assert_true(bill_class_waived("preempted"));
    assert_false(bill_class_waived("user_error"));
    assert_false(bill_class_waived("timeout")); /* the job's own time limit */
    assert_false(bill_class_waived(NULL));      /* succeeded, cancelled */
    assert_false(bill_class_waived(""));
    assert_false(bill_class_waived("Infra")); /* exact names only */
    assert_false(bill_class_waived("infra "));
    assert_false(bill_class_waived("worker"));
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_seeded_rates_exact, test_rounding_half_up, test_cost_errors,
                       test_usd_format, test_usage_ok, test_usage_deployment,
                       test_usage_deployment_gpu, test_usage_failures, test_meters,
                       test_month_start, test_u64_parse, test_usage_json, test_usage_rebuild,
                       test_bucket_parse, test_period_parse, test_class_waived);
}
