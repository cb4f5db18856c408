/* Unit tests for the job documents the gateway builds (job.c): the job object of a new
 * job and the forge.job.requested data, from validated requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_event.h"
#include "nf_test.h"

#define JOB "job_01ARYZ6S41041061050R3GG28A"
#define USR "usr_01ARYZ6S41041061050R3GG28B"
#define NOW 1796331832123ULL /* 2026-12-03T..., fixed */

static const char *const job_fields[] = {
    "job_id",     "job_type",     "status",          "params",     "metadata",    "priority",
    "attempt",    "max_attempts", "timeout_seconds", "gpu_type",   "gpu_count",   "labels",
    "worker_id",  "progress",     "result",          "error",      "artifacts",   "cost_usd",
    "cost_final", "created_at",   "updated_at",      "started_at", "finished_at",
};

static const char *const requested_fields[] = {
    "job_id",       "user_id",         "job_type", "params",    "metadata", "priority",
    "max_attempts", "timeout_seconds", "gpu_type", "gpu_count", "labels",   "created_at",
};

static cJSON *validated(const char *type, const char *json)
{
    struct nf_json_err err;
    cJSON *body = cJSON_Parse(json), *out = NULL;

    assert_non_null(body);
    if (gw_validate_job(type, body, &out, &err) != 0)
        fail_msg("%s: %s %s", json, err.param, err.msg);
    cJSON_Delete(body);
    return out;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* The object has exactly these keys, in this order. */
static void assert_keys(const cJSON *o, const char *const *keys, size_t n)
{
    const cJSON *it = o->child;
    size_t i;

    for (i = 0; i < n; i++, it = it->next) {
        assert_non_null(it);
        assert_string_equal(it->string, keys[i]);
    }
    assert_null(it);
}

static void test_job_object(void **state)
{
    cJSON *req = validated("generate", "{\"domain\":\"bio\",\"num_samples\":100,\"priority\":7,"
                                       "\"labels\":{\"zone\":\"eu\"}}");
    cJSON *job = gw_job_new(JOB, "generate", req, NOW);
    char now[32];

    nf_event_time(NOW, now);
    assert_keys(job, job_fields, sizeof(job_fields) / sizeof(job_fields[0]));
    assert_string_equal(cJSON_GetStringValue(get(job, "job_id")), JOB);
    assert_string_equal(cJSON_GetStringValue(get(job, "job_type")), "generate");
    assert_string_equal(cJSON_GetStringValue(get(job, "status")), "queued");
    assert_string_equal(cJSON_GetStringValue(get(get(job, "params"), "domain")), "bio");
    assert_string_equal(cJSON_GetStringValue(get(get(job, "params"), "format")), "jsonl");
    assert_int_equal((int)cJSON_GetNumberValue(get(job, "priority")), 7);
    assert_int_equal((int)cJSON_GetNumberValue(get(job, "attempt")), 1);
    assert_int_equal((int)cJSON_GetNumberValue(get(job, "max_attempts")), 3);
    assert_int_equal((int)cJSON_GetNumberValue(get(job, "timeout_seconds")), 3600);
    assert_true(cJSON_IsNull(get(job, "gpu_type")));
    assert_int_equal((int)cJSON_GetNumberValue(get(job, "gpu_count")), 1);
    assert_string_equal(cJSON_GetStringValue(get(get(job, "labels"), "zone")), "eu");
    assert_int_equal(cJSON_GetArraySize(get(job, "metadata")), 0);
    assert_true(cJSON_IsNull(get(job, "worker_id")));
    assert_true(cJSON_IsNumber(get(job, "progress")));
    assert_int_equal((int)cJSON_GetNumberValue(get(job, "progress")), 0);
    assert_true(cJSON_IsNull(get(job, "result")));
    assert_true(cJSON_IsNull(get(job, "error")));
    assert_true(cJSON_IsArray(get(job, "artifacts")));
    assert_int_equal(cJSON_GetArraySize(get(job, "artifacts")), 0);
    assert_string_equal(cJSON_GetStringValue(get(job, "cost_usd")), "0.000000");
    assert_true(cJSON_IsFalse(get(job, "cost_final")));
    assert_string_equal(cJSON_GetStringValue(get(job, "created_at")), now);
    assert_string_equal(cJSON_GetStringValue(get(job, "updated_at")), now);
    assert_true(cJSON_IsNull(get(job, "started_at")));
    assert_true(cJSON_IsNull(get(job, "finished_at")));

    /* the job owns copies: freeing the request first must be safe (ASan) */
    cJSON_Delete(req);
    assert_string_equal(cJSON_GetStringValue(get(get(job, "params"), "domain")), "bio");
    cJSON_Delete(job);
}

static void test_timestamps_format(void **state)
{
    cJSON *req = validated("deploy", "{\"model_id\":\"m\"}");
    cJSON *job = gw_job_new(JOB, "deploy", req, 1796331832005ULL);
    const char *ts = cJSON_GetStringValue(get(job, "created_at"));

    /* RFC 3339 UTC with milliseconds, as the contract's Timestamp pattern wants */
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[23], 'Z');
    assert_memory_equal(ts + 19, ".005", 4);
    cJSON_Delete(job);
    cJSON_Delete(req);
}

static void test_requested_data(void **state)
{
    cJSON *req = validated("train", "{\"params\":{\"model_id\":\"m\",\"dataset_uri\":\"s3://b/k\"},"
                                    "\"gpu_type\":\"a100\",\"gpu_count\":2,"
                                    "\"metadata\":{\"run\":\"7\"}}");
    cJSON *data = gw_job_requested(JOB, USR, "train", req, NOW);
    char now[32];

    nf_event_time(NOW, now);
    assert_keys(data, requested_fields, sizeof(requested_fields) / sizeof(requested_fields[0]));
    assert_string_equal(cJSON_GetStringValue(get(data, "job_id")), JOB);
    assert_string_equal(cJSON_GetStringValue(get(data, "user_id")), USR);
    assert_string_equal(cJSON_GetStringValue(get(data, "job_type")), "train");
    assert_int_equal((int)cJSON_GetNumberValue(get(get(data, "params"), "epochs")), 3);
    assert_string_equal(cJSON_GetStringValue(get(data, "gpu_type")), "a100");
    assert_int_equal((int)cJSON_GetNumberValue(get(data, "gpu_count")), 2);
    assert_string_equal(cJSON_GetStringValue(get(get(data, "metadata"), "run")), "7");
    assert_int_equal((int)cJSON_GetNumberValue(get(data, "priority")), 5);
    assert_string_equal(cJSON_GetStringValue(get(data, "created_at")), now);
    /* no job-object fields leak into the request */
    assert_null(get(data, "status"));
    assert_null(get(data, "attempt"));
    cJSON_Delete(req);
    cJSON_Delete(data);
}

static void test_envelope(void **state)
{
    cJSON *req = validated("audit", "{\"dataset_uri\":\"s3://bkt/d.jsonl\"}");
    cJSON *ev = nf_event_new("forge.job.requested", "nf-gateway", JOB, NULL,
                             gw_job_requested(JOB, USR, "audit", req, NOW));
    const char *type = NULL, *subject = NULL, *msg = NULL;
    const cJSON *data = nf_event_data(ev, &type, &subject, &msg);

    assert_non_null(data);
    assert_string_equal(type, "forge.job.requested");
    assert_string_equal(subject, JOB);
    assert_string_equal(cJSON_GetStringValue(get(ev, "source")), "nf-gateway");
    assert_string_equal(cJSON_GetStringValue(get(data, "job_id")), JOB);
    cJSON_Delete(ev);
    cJSON_Delete(req);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_job_object, test_timestamps_format, test_requested_data,
                       test_envelope);
}
