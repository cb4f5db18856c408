/*
 * storage_meter.c (pure part) and budget.c: byte-hour arithmetic, window boundaries, the
 * storage usage event (its deterministic id, its fields), and reading billing's budget
 * answer into dispatch / refuse / unknown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <limits.h>
#include <string.h>

#include "nf_json.h"
#include "nf_test.h"
#include "sched.h"

static void test_byte_hours(void **state)
{
    assert_int_equal(sched_storage_byte_hours(1000, 3600000), 1000); /* 1 kB for an hour */
    assert_int_equal(sched_storage_byte_hours(1000, 1800000), 500);  /* half an hour */
    assert_int_equal(sched_storage_byte_hours(1, 3599999), 0);       /* rounded down */
    assert_int_equal(sched_storage_byte_hours(3, 1200000), 1);       /* 1/3 h x 3 B */
    assert_int_equal(sched_storage_byte_hours(1000000000, 3600000), 1000000000); /* 1 GB-hour */
    assert_int_equal(sched_storage_byte_hours(0, 3600000), 0);
    assert_int_equal(sched_storage_byte_hours(1000, 0), 0);
    assert_int_equal(sched_storage_byte_hours(-5, 3600000), 0);
    assert_int_equal(sched_storage_byte_hours(1000, -1), 0);
    /* no overflow: 9 EB for a day is capped at billing's per-event maximum */
    assert_int_equal(sched_storage_byte_hours(LLONG_MAX, 86400000), 9000000000000000LL);
}

static void test_window_end(void **state)
{
    const int64_t hour = 3600000;

    /* aligned: the next boundary */
    assert_true(sched_storage_window_end(1795824000000LL, hour) == 1795824000000LL + hour);
    /* mid-window (a changed window length): up to the next boundary only */
    assert_true(sched_storage_window_end(1795824000000LL + 60000, hour) == 1795824000000LL + hour);
    assert_true(sched_storage_window_end(1795824000000LL - 1, hour) == 1795824000000LL);
    assert_true(sched_storage_window_end(10000, 5000) == 15000);
    assert_true(sched_storage_window_end(12345, 0) == 12345); /* a bad length moves nothing */
}

static void test_storage_event(void **state)
{
    cJSON *a =
        sched_storage_event("job_1", "usr_1", "train", 2, 4096, 1795824000000LL, 1795827600000LL);
    cJSON *b =
        sched_storage_event("job_1", "usr_1", "train", 2, 9999, 1795824000000LL, 1795827600000LL);
    cJSON *c =
        sched_storage_event("job_1", "usr_1", "train", 2, 4096, 1795827600000LL, 1795831200000LL);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(a, "data");
    const char *id = nf_json_str(a, "id");

    /* the same job and window: the same id, whatever was counted (billing dedupes) */
    assert_string_equal(id, nf_json_str(b, "id"));
    assert_string_not_equal(id, nf_json_str(c, "id"));
    assert_int_equal(strlen(id), 36);
    assert_memory_equal(id, "use_", 4);
    /* "job_1:2:storage_byte_hours:1795824000" */
    assert_string_equal(id, "use_2963d1c83c58336313b69e3513ab5649");
    assert_string_equal(nf_json_str(a, "type"), "forge.usage.recorded");
    assert_string_equal(nf_json_str(a, "source"), "nf-scheduler");
    assert_string_equal(nf_json_str(a, "subject"), "usr_1");
    assert_string_equal(nf_json_str(data, "meter"), "storage_byte_hours");
    assert_string_equal(nf_json_str(data, "job_type"), "train");
    assert_int_equal(nf_json_int(data, "attempt", 0), 2);
    assert_int_equal(nf_json_int(data, "quantity", 0), 4096);
    assert_string_equal(nf_json_str(data, "window_start"), "2026-11-28T00:00:00.000Z");
    assert_string_equal(nf_json_str(data, "window_end"), "2026-11-28T01:00:00.000Z");
    assert_null(cJSON_GetObjectItemCaseSensitive(data, "worker_id")); /* the platform's */
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(c);
}

static int over(const char *body)
{
    return sched_budget_over(body, body ? strlen(body) : 0);
}

static void test_budget_answer(void **state)
{
    cJSON *err;
    const char *ok = "{\"over_budget\":false,\"monthly_limit_usd\":null}";
    const char *no = "{\"over_budget\":true,\"monthly_limit_usd\":\"5.000000\","
                     "\"spent_usd\":\"5.250000\"}";

    assert_int_equal(over(ok), 0);
    assert_int_equal(over(no), 1);
    /* anything else is not an answer: the check is retried, never guessed */
    assert_int_equal(over("{\"over_budget\":\"yes\"}"), -1);
    assert_int_equal(over("{}"), -1);
    assert_int_equal(over("<html>"), -1);
    assert_int_equal(over(""), -1);
    assert_int_equal(over(NULL), -1);

    err = sched_budget_error(no, strlen(no));
    assert_string_equal(nf_json_str(err, "code"), "budget_exceeded");
    assert_string_equal(nf_json_str(err, "class"), "user_error");
    assert_non_null(strstr(nf_json_str(err, "message"), "5.250000"));
    assert_non_null(strstr(nf_json_str(err, "message"), "5.000000"));
    cJSON_Delete(err);
    err = sched_budget_error("{}", 2); /* still a clear error without the figures */
    assert_string_equal(nf_json_str(err, "code"), "budget_exceeded");
    assert_non_null(strstr(nf_json_str(err, "message"), "budget"));
    cJSON_Delete(err);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_byte_hours, test_window_end, test_storage_event,
                       test_budget_answer);
}
