/*
 * config.c: the composite settings (API URL, labels, job types) and the table checks
 * (service.c's rows loaded through nf_svc_load, as nf-worker does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_svc.h"
#include "nf_test.h"
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

static struct nf_svc svc;
static struct wk_settings set;

/* Loads as nf-worker does (rows + desc->check), then derives the settings as init does. */
static int load(const struct wk_config **cfg, char *err, size_t errlen)
{
    if (nf_svc_load(&svc, &wk_service, err, errlen) != 0)
        return -1;
    *cfg = svc.own;
    return wk_settings_load(svc.own, &set, err, errlen);
}

static void unload(void)
{
    nf_svc_free(&svc);
    wk_settings_free(&set);
}

static void test_load(void **state)
{
    const struct wk_config *cfg = NULL;
    char err[512];
    setenv("NF_WORKER_REGISTRATION_TOKEN", "0123456789abcdef", 1);
    setenv("NF_WORKER_ARTIFACT_ROOT", "/tmp/nf-worker-test", 1);
    setenv("NF_WORKER_LABELS", "zone=eu", 1);
    setenv("NF_S3_ENDPOINT", "http://127.0.0.1:9000", 1);
    setenv("NF_S3_ACCESS_KEY", "forge", 1);
    setenv("NF_S3_SECRET_KEY", "forge-secret-key", 1);
    unsetenv("NF_WORKER_WORK_DIR");
    unsetenv("NF_WORKER_HOSTNAME");
    unsetenv("NF_API_URL");
    unsetenv("NF_WORKER_JOB_TYPES");
    assert_int_equal(load(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg->slots, 1);
    assert_int_equal(cfg->gpu_count, 1); /* jobs ask for one GPU by default */
    assert_string_equal(cfg->gpu_type, "");
    assert_int_equal(set.types, 0x3f);
    assert_int_equal(set.api_port, 8000);
    assert_true(strlen(set.hostname) > 0);
    assert_string_equal(nf_json_str(set.labels, "zone"), "eu");
    /* the work dir falls back to the older name; the object store's defaults */
    assert_string_equal(set.work_dir, "/tmp/nf-worker-test");
    assert_int_equal(set.max_input_bytes, 20LL << 30);
    assert_string_equal(set.s3.bucket, "nexa-forge");
    assert_string_equal(set.s3.region, "us-east-1");
    assert_string_equal(set.s3.secret_key, "forge-secret-key");
    /* nf_svc's SIGTERM deadline: drain timeout + kill grace + 30 s, no NF_WORKER_DRAIN_MS */
    assert_int_equal(svc.cfg.drain_ms, (60 + 10 + 30) * 1000);
    for (size_t i = 0; i < svc.nshared; i++)
        assert_string_not_equal(svc.shared_opts[i].env, "NF_WORKER_DRAIN_MS");
    unload();
    setenv("NF_WORKER_DRAIN_TIMEOUT_S", "600", 1);
    setenv("NF_WORKER_KILL_GRACE_S", "2", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), 0);
    assert_int_equal(svc.cfg.drain_ms, (600 + 2 + 30) * 1000);
    unload();
    unsetenv("NF_WORKER_DRAIN_TIMEOUT_S");
    unsetenv("NF_WORKER_KILL_GRACE_S");

    /* a short registration token, a bad URL, bad types: refused with the variable named */
    setenv("NF_WORKER_REGISTRATION_TOKEN", "short", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_REGISTRATION_TOKEN"));
    unload();
    setenv("NF_WORKER_REGISTRATION_TOKEN", "0123456789abcdef", 1);
    setenv("NF_API_URL", "https://api", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_API_URL"));
    unload();
    unsetenv("NF_API_URL");
    setenv("NF_WORKER_JOB_TYPES", "train,dance", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_JOB_TYPES"));
    unload();
    unsetenv("NF_WORKER_JOB_TYPES");

    /* a pre-registered identity: both or neither, and a real worker id; no Kafka is fine */
    setenv("NF_WORKER_ID", "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_TOKEN"));
    unload();
    setenv("NF_WORKER_TOKEN", "tok", 1);
    setenv("NF_KAFKA_BROKERS", "", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->worker_id, "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    assert_string_equal(cfg->brokers, "");
    unload();
    setenv("NF_WORKER_ID", "worker-1", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_ID"));
    unload();
    unsetenv("NF_WORKER_ID");
    unsetenv("NF_WORKER_TOKEN");
    unsetenv("NF_KAFKA_BROKERS");

    /* the work dir: the new name wins; neither set is refused */
    setenv("NF_WORKER_WORK_DIR", "/tmp/nf-worker-work", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), 0);
    assert_string_equal(set.work_dir, "/tmp/nf-worker-work");
    unload();
    unsetenv("NF_WORKER_WORK_DIR");
    unsetenv("NF_WORKER_ARTIFACT_ROOT");
    assert_int_equal(load(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_WORKER_WORK_DIR"));
    unload();
    setenv("NF_WORKER_WORK_DIR", "/tmp/nf-worker-work", 1);

    /* the input cap and the object store: required, checked, named */
    static const char *const bad_caps[] = {"0", "-1", "12x", "", "9999999999999999999"};
    for (size_t i = 0; i < sizeof(bad_caps) / sizeof(bad_caps[0]); i++) {
        setenv("NF_WORKER_MAX_INPUT_BYTES", bad_caps[i], 1);
        assert_int_equal(load(&cfg, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "NF_WORKER_MAX_INPUT_BYTES"));
        unload();
    }
    setenv("NF_WORKER_MAX_INPUT_BYTES", "1048576", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), 0);
    assert_int_equal(set.max_input_bytes, 1048576);
    unload();
    unsetenv("NF_WORKER_MAX_INPUT_BYTES");
    static const char *const required[] = {"NF_S3_ENDPOINT", "NF_S3_ACCESS_KEY",
                                           "NF_S3_SECRET_KEY"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        char *saved = strdup(getenv(required[i]));
        unsetenv(required[i]);
        assert_int_equal(load(&cfg, err, sizeof(err)), -1);
        assert_non_null(strstr(err, required[i]));
        unload();
        setenv(required[i], saved, 1);
        free(saved);
    }
    setenv("NF_S3_BUCKET", "No_Such_Bucket_Name", 1);
    assert_int_equal(load(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_S3_"));
    unload();
    unsetenv("NF_S3_BUCKET");
    unsetenv("NF_WORKER_WORK_DIR");
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(NULL, NULL, test_url, test_labels, test_types, test_load);
}
