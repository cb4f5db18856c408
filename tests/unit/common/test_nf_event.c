/* Unit tests for nf_event: envelope shape, validation failures and time formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nf_crypto.h"
#include "nf_event.h"
#include "nf_id.h"
#include "nf_json.h"
#include "nf_test.h"

static int init(void **state)
{
    return nf_crypto_init();
}

static void test_time_format(void **state)
{
    char out[32];

    nf_event_time(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    nf_event_time(1795900000123ULL, out);
    assert_string_equal(out, "2026-11-28T21:06:40.123Z");
    nf_event_time(951782400007ULL, out); /* leap day */
    assert_string_equal(out, "2000-02-29T00:00:00.007Z");
}

static void test_now_ms(void **state)
{
    uint64_t now = nf_now_ms(), sec = (uint64_t)time(NULL);

    assert_true(now / 1000 + 2 >= sec && now / 1000 <= sec + 2);
}

static void test_new_envelope(void **state)
{
    cJSON *data = nf_json_obj(), *ev;
    const char *type = NULL, *subject = NULL, *msg = NULL;
    const cJSON *d;
    uint64_t before = nf_now_ms();
    char lo[32], hi[32];

    nf_json_add_str(data, "job_id", "job_1");
    ev = nf_event_new("forge.job.queued", "nf-scheduler", "job_1", NULL, data);
    assert_non_null(ev);
    nf_event_time(before, lo);
    nf_event_time(nf_now_ms(), hi);
    assert_string_equal(nf_json_str(ev, "specversion"), "1.0");
    assert_string_equal(nf_json_str(ev, "type"), "forge.job.queued");
    assert_string_equal(nf_json_str(ev, "source"), "nf-scheduler");
    assert_string_equal(nf_json_str(ev, "subject"), "job_1");
    assert_string_equal(nf_json_str(ev, "datacontenttype"), "application/json");
    assert_true(nf_id_valid("evt", nf_json_str(ev, "id")));
    /* time is now in RFC 3339 UTC with milliseconds: same-format strings sort by time. */
    assert_int_equal(strlen(nf_json_str(ev, "time")), 24);
    assert_true(strcmp(lo, nf_json_str(ev, "time")) <= 0);
    assert_true(strcmp(nf_json_str(ev, "time"), hi) <= 0);

    d = nf_event_data(ev, &type, &subject, &msg);
    assert_ptr_equal(d, data);
    assert_string_equal(type, "forge.job.queued");
    assert_string_equal(subject, "job_1");
    assert_null(msg);
    assert_string_equal(nf_json_str(d, "job_id"), "job_1");
    cJSON_Delete(ev); /* frees data too */
}

static void test_new_given_id_and_null_data(void **state)
{
    cJSON *ev = nf_event_new("forge.usage.recorded", "nf-worker/w1", "usr_1", "use_abc", NULL);
    const cJSON *d;

    assert_string_equal(nf_json_str(ev, "id"), "use_abc");
    d = nf_event_data(ev, NULL, NULL, NULL);
    assert_non_null(d);
    assert_true(cJSON_IsObject(d));
    assert_null(d->child);
    cJSON_Delete(ev);
}

/* Parses txt and expects nf_event_data to refuse it with exactly `reason`. */
static void expect_bad(const char *txt, const char *reason)
{
    cJSON *ev = cJSON_Parse(txt);
    const char *type = "untouched", *subject = "untouched", *msg = NULL;

    assert_non_null(ev);
    assert_null(nf_event_data(ev, &type, &subject, &msg));
    assert_non_null(msg);
    assert_string_equal(msg, reason);
    assert_string_equal(type, "untouched");
    assert_string_equal(subject, "untouched");
    cJSON_Delete(ev);
}

static void test_data_rejects(void **state)
{
    const char *msg = NULL;

    expect_bad("[]", "event is not a JSON object");
    expect_bad("{\"id\":\"e\",\"source\":\"s\",\"type\":\"t\",\"subject\":\"j\",\"data\":{}}",
               "specversion must be \"1.0\"");
    expect_bad("{\"specversion\":\"0.3\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\","
               "\"subject\":\"j\",\"data\":{}}",
               "specversion must be \"1.0\"");
    expect_bad("{\"specversion\":1.0,\"id\":\"e\",\"source\":\"s\",\"type\":\"t\","
               "\"subject\":\"j\",\"data\":{}}",
               "specversion must be \"1.0\"");
    expect_bad("{\"specversion\":\"1.0\",\"id\":\"\",\"source\":\"s\",\"type\":\"t\","
               "\"subject\":\"j\",\"data\":{}}",
               "id must be a non-empty string");
    expect_bad("{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":7,\"type\":\"t\","
               "\"subject\":\"j\",\"data\":{}}",
               "source must be a non-empty string");
    expect_bad("{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\","
               "\"subject\":\"j\",\"data\":{}}",
               "type must be a non-empty string");
    expect_bad("{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\","
               "\"subject\":null,\"data\":{}}",
               "subject must be a non-empty string");
    expect_bad("{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\","
               "\"subject\":\"j\",\"data\":[1]}",
               "data must be an object");
    expect_bad("{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\","
               "\"subject\":\"j\",\"data\":\"{}\"}",
               "data must be an object");
    expect_bad("{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\","
               "\"subject\":\"j\"}",
               "data must be an object");
    expect_bad("{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\","
               "\"subject\":\"j\",\"time\":5,\"data\":{}}",
               "time must be a string");
    assert_null(nf_event_data(NULL, NULL, NULL, &msg));
    assert_string_equal(msg, "event is not a JSON object");
}

static void test_data_minimal_valid(void **state)
{
    const char *txt = "{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\","
                      "\"subject\":\"j\",\"data\":{\"x\":1}}";
    cJSON *ev = cJSON_Parse(txt);
    const char *type = NULL, *subject = NULL;
    const cJSON *d;

    d = nf_event_data(ev, &type, &subject, NULL);
    assert_non_null(d);
    assert_int_equal(nf_json_int(d, "x", 0), 1);
    assert_string_equal(type, "t");
    assert_string_equal(subject, "j");
    cJSON_Delete(ev);
}

int main(void)
{
    return NF_TEST_RUN_GROUP(init, NULL, test_time_format, test_now_ms, test_new_envelope,
                             test_new_given_id_and_null_data, test_data_rejects,
                             test_data_minimal_valid);
}
