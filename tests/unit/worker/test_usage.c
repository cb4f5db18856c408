/*
 * usage.c: deterministic usage ids and the usage record envelope.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_test.h"
#include "wk.h"

static void test_id_deterministic(void **state)
{
    char a[WK_USAGE_ID_LEN + 1], b[WK_USAGE_ID_LEN + 1], hex[NF_SHA256_HEX_LEN + 1];
    wk_usage_id("job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M", 2, "gpu_ms", 3, a);
    wk_usage_id("job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M", 2, "gpu_ms", 3, b);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), WK_USAGE_ID_LEN);
    assert_memory_equal(a, "use_", 4);
    /* exactly the documented formula: first 32 hex of SHA-256("job:attempt:meter:window") */
    const char *key = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M:2:gpu_ms:3";
    nf_crypto_sha256_hex(key, strlen(key), hex);
    assert_memory_equal(a + 4, hex, 32);
}

static void test_id_varies(void **state)
{
    char base[WK_USAGE_ID_LEN + 1], other[WK_USAGE_ID_LEN + 1];
    const char *job = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M";
    wk_usage_id(job, 1, "gpu_ms", 0, base);
    wk_usage_id(job, 2, "gpu_ms", 0, other);
    assert_string_not_equal(base, other); /* attempt */
    wk_usage_id(job, 1, "gpu_ms", 1, other);
    assert_string_not_equal(base, other); /* window */
    wk_usage_id(job, 1, "output_tokens", 0, other);
    assert_string_not_equal(base, other); /* meter */
    wk_usage_id("job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9N", 1, "gpu_ms", 0, other);
    assert_string_not_equal(base, other); /* job */
    /* "1:11" vs "11:1" style ambiguity is impossible thanks to the separators */
    wk_usage_id(job, 11, "gpu_ms", 1, base);
    wk_usage_id(job, 1, "gpu_ms", 11, other);
    assert_string_not_equal(base, other);
}

static void test_gpu_ms(void **state)
{
    assert_int_equal(wk_gpu_ms(60000, 1), 60000);
    assert_int_equal(wk_gpu_ms(60000, 8), 480000);
    assert_int_equal(wk_gpu_ms(60000, 0), 0);
    assert_int_equal(wk_gpu_ms(60000, -2), 0);
    assert_int_equal(wk_gpu_ms(0, 4), 0);
}

static void test_event(void **state)
{
    struct nf_usage u = {.user_id = "usr_7",
                         .job_id = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M",
                         .job_type = "train",
                         .attempt = 1,
                         .worker_id = "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M",
                         .meter = "gpu_ms",
                         .quantity = 120000,
                         .window = 2,
                         .start_ms = 1764363832000ULL,
                         .end_ms = 1764363892000ULL};
    char *text = wk_usage_event(&u, "nf-worker/wrk_x");
    char *again = wk_usage_event(&u, "nf-worker/wrk_x");
    cJSON *ev = cJSON_Parse(text), *ev2 = cJSON_Parse(again);
    const char *type = NULL, *subject = NULL, *msg = NULL;
    const cJSON *data = nf_event_data(ev, &type, &subject, &msg);
    assert_non_null(data);
    assert_string_equal(type, "forge.usage.recorded");
    assert_string_equal(subject, "usr_7");
    assert_string_equal(nf_json_str(ev, "source"), "nf-worker/wrk_x");
    /* the same window published twice is the same event for billing */
    assert_string_equal(nf_json_str(ev, "id"), nf_json_str(ev2, "id"));
    char id[WK_USAGE_ID_LEN + 1];
    wk_usage_id(u.job_id, 1, "gpu_ms", 2, id);
    assert_string_equal(nf_json_str(ev, "id"), id);
    assert_string_equal(nf_json_str(data, "meter"), "gpu_ms");
    assert_int_equal(nf_json_int(data, "quantity", 0), 120000);
    assert_int_equal(nf_json_int(data, "attempt", 0), 1);
    assert_string_equal(nf_json_str(data, "job_type"), "train");
    assert_string_equal(nf_json_str(data, "worker_id"), u.worker_id);
    assert_string_equal(nf_json_str(data, "window_start"), "2025-11-28T21:03:52.000Z");
    assert_string_equal(nf_json_str(data, "window_end"), "2025-11-28T21:04:52.000Z");
    cJSON_Delete(ev);
    cJSON_Delete(ev2);
    free(text);
    free(again);
}

/* A serving deployment's window: its own id space (job:serving:meter:window), attempt
 * null, the deployment id, the worker; the same window twice is the same event. */
static void test_serving_event(void **state)
{
    char id[WK_USAGE_ID_LEN + 1], hex[NF_SHA256_HEX_LEN + 1], attempt_id[WK_USAGE_ID_LEN + 1];
    const char *job = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M";
    struct nf_usage u = {.user_id = "usr_7",
                         .job_id = job,
                         .job_type = "deploy",
                         .attempt = 3, /* ignored */
                         .worker_id = "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M",
                         .meter = "gpu_ms",
                         .quantity = 2000,
                         .window = 4,
                         .start_ms = 1764363832000ULL,
                         .end_ms = 1764363834000ULL};

    wk_serving_usage_id(job, "gpu_ms", 4, id);
    const char *key = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M:serving:gpu_ms:4";
    nf_crypto_sha256_hex(key, strlen(key), hex);
    assert_memory_equal(id, "use_", 4);
    assert_memory_equal(id + 4, hex, 32);
    for (long long a = 0; a < 4; a++) { /* never an attempt's window id */
        wk_usage_id(job, a, "gpu_ms", 4, attempt_id);
        assert_string_not_equal(id, attempt_id);
    }
    char *text = wk_serving_event(&u, "dep-0123456789ab", "nf-worker/wrk_x");
    char *again = wk_serving_event(&u, "dep-0123456789ab", "nf-worker/wrk_x");
    cJSON *ev = cJSON_Parse(text), *ev2 = cJSON_Parse(again);
    const cJSON *data = nf_event_data(ev, NULL, NULL, NULL);
    assert_non_null(data);
    assert_string_equal(nf_json_str(ev, "id"), id);
    assert_string_equal(nf_json_str(ev2, "id"), id);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(data, "attempt")));
    assert_string_equal(nf_json_str(data, "deployment_id"), "dep-0123456789ab");
    assert_string_equal(nf_json_str(data, "worker_id"), "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    assert_string_equal(nf_json_str(data, "job_type"), "deploy");
    assert_int_equal(nf_json_int(data, "quantity", 0), 2000);
    cJSON_Delete(ev);
    cJSON_Delete(ev2);
    free(text);
    free(again);
}

static void test_deployment_id(void **state)
{
    assert_true(wk_deployment_id_valid("dep-0123456789ab"));
    assert_false(wk_deployment_id_valid(NULL));
    assert_false(wk_deployment_id_valid("dep-0123456789AB"));
    assert_false(wk_deployment_id_valid("dep-0123456789a"));
    assert_false(wk_deployment_id_valid("dep-0123456789abc"));
    assert_false(wk_deployment_id_valid("job-0123456789ab"));
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(NULL, NULL, test_id_deterministic, test_id_varies, test_gpu_ms, test_event,
                       test_serving_event, test_deployment_id);
}
