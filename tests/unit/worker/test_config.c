/*
 * config.c: the composite settings (API URL, labels, job types) and the table checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "wk.h"

static void test_url(void **state)
{
    char *host = NULL, *prefix = NULL;
    int port = 0;
    assert_int_equal(wk_parse_url("http://127.0.0.1:8000", &host, &port, &prefix), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8000);
    assert_string_equal(prefix, "");
    free(host);
    free(prefix);
    assert_int_equal(wk_parse_url("http://api.forge.local/base/", &host, &port, &prefix), 0);
    assert_string_equal(host, "api.forge.local");
    assert_int_equal(port, 80);
    assert_string_equal(prefix, "/base");
    free(host);
    free(prefix);
    static const char *const bad[] = {
        "https://x:443", "ftp://x",        "http://",        "http://:80",
        "http://x:",     "http://x:0",     "http://x:70000", "http://x:80a",
        "http://x y",    "http://x/a?b=1", "127.0.0.1:8000", NULL,
    };
    for (size_t i = 0; bad[i] != NULL; i++) {
        host = prefix = NULL;
        if (wk_parse_url(bad[i], &host, &port, &prefix) != -1)
            fail_msg("accepted: %s", bad[i]);
        assert_null(host);
        assert_null(prefix);
    }
    assert_int_equal(wk_parse_url(NULL, &host, &port, &prefix), -1);
}

static void test_labels(void **state)
{
    cJSON *labels = NULL;
    char err[256] = "";
    assert_int_equal(wk_parse_labels("zone=eu, tier = gold ,empty=", &labels, err, sizeof(err)), 0);
    assert_string_equal(nf_json_str(labels, "zone"), "eu");
    assert_string_equal(nf_json_str(labels, "tier"), "gold");
    assert_string_equal(nf_json_str(labels, "empty"), "");
    assert_int_equal(cJSON_GetArraySize(labels), 3);
    cJSON_Delete(labels);
    assert_int_equal(wk_parse_labels("", &labels, err, sizeof(err)), 0);
    assert_int_equal(cJSON_GetArraySize(labels), 0);
    cJSON_Delete(labels);
    assert_int_equal(wk_parse_labels(",,", &labels, err, sizeof(err)), 0);
    cJSON_Delete(labels);

    static const char *const bad[] = {"zone", "=eu", "a=1,a=2", " =x", NULL};
    for (size_t i = 0; bad[i] != NULL; i++) {
        labels = NULL;
        err[0] = '\0';
        if (wk_parse_labels(bad[i], &labels, err, sizeof(err)) != -1)
            fail_msg("accepted: %s", bad[i]);
        assert_null(labels);
        assert_non_null(strstr(err, "NF_WORKER_LABELS"));
    }
}

static void test_types(void **state)
{
    unsigned mask = 0;
    assert_int_equal(wk_parse_types("generate,audit,distill,train,evaluate,deploy", &mask), 0);
    assert_int_equal(mask, 0x3f);
    assert_int_equal(wk_parse_types(" train , deploy", &mask), 0);
    assert_int_equal(mask, (1u << 3) | (1u << 5));
    assert_int_equal(wk_parse_types("", &mask), -1);
    assert_int_equal(wk_parse_types("train,paint", &mask), -1);
    assert_int_equal(wk_parse_types("averyveryverylongname", &mask), -1);
}

static void test_load(void **state)
{
    struct wk_config cfg = {0};
    struct wk_settings set = {0};
    char err[512];
    setenv("NF_WORKER_REGISTRATION_TOKEN", "0123456789abcdef", 1);
    setenv("NF_WORKER_ARTIFACT_ROOT", "/tmp/nf-worker-test", 1);
    setenv("NF_WORKER_LABELS", "zone=eu", 1);
    unsetenv("NF_WORKER_HOSTNAME");
    unsetenv("NF_API_URL");
    unsetenv("NF_WORKER_JOB_TYPES");
    assert_int_equal(wk_config_load(&cfg, &set, err, sizeof(err)), 0);
    assert_int_equal(cfg.slots, 1);
    assert_int_equal(cfg.gpu_count, 1); /* jobs ask for one GPU by default */
    assert_string_equal(cfg.gpu_type, "");
    assert_int_equal(set.types, 0x3f);
    assert_int_equal(set.api_port, 8000);
    assert_true(strlen(set.hostname) > 0);
    assert_string_equal(nf_json_str(set.labels, "zone"), "eu");
    wk_config_free(&cfg, &set);

    /* a short registration token, a bad URL, bad types: refused with the variable named */
    setenv("NF_WORKER_REGISTRATION_TOKEN", "short", 1);
    assert_int_equal(wk_config_load(&cfg, &set, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_REGISTRATION_TOKEN"));
    wk_config_free(&cfg, &set);
    setenv("NF_WORKER_REGISTRATION_TOKEN", "0123456789abcdef", 1);
    setenv("NF_API_URL", "https://api", 1);
    assert_int_equal(wk_config_load(&cfg, &set, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_API_URL"));
    wk_config_free(&cfg, &set);
    unsetenv("NF_API_URL");
    setenv("NF_WORKER_JOB_TYPES", "train,dance", 1);
    assert_int_equal(wk_config_load(&cfg, &set, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_JOB_TYPES"));
    wk_config_free(&cfg, &set);
    unsetenv("NF_WORKER_JOB_TYPES");

    /* a pre-registered identity: both or neither, and a real worker id; no Kafka is fine */
    setenv("NF_WORKER_ID", "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M", 1);
    assert_int_equal(wk_config_load(&cfg, &set, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_TOKEN"));
    wk_config_free(&cfg, &set);
    setenv("NF_WORKER_TOKEN", "tok", 1);
    setenv("NF_KAFKA_BROKERS", "", 1);
    assert_int_equal(wk_config_load(&cfg, &set, err, sizeof(err)), 0);
    assert_string_equal(cfg.worker_id, "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    assert_string_equal(cfg.brokers, "");
    wk_config_free(&cfg, &set);
    setenv("NF_WORKER_ID", "worker-1", 1);
    assert_int_equal(wk_config_load(&cfg, &set, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_ID"));
    wk_config_free(&cfg, &set);
    unsetenv("NF_WORKER_ID");
    unsetenv("NF_WORKER_TOKEN");
    unsetenv("NF_KAFKA_BROKERS");

    unsetenv("NF_WORKER_ARTIFACT_ROOT");
    assert_int_equal(wk_config_load(&cfg, &set, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_ARTIFACT_ROOT"));
    wk_config_free(&cfg, &set);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
