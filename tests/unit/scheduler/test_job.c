/*
 * job.c: the job object (internals.md field list), dispatch data, request and event
 * parsing with every failure path, artifacts, money formatting, deterministic ids, and
 * the parameters consume_events.c derives from an event.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_json.h"
#include "nf_test.h"
#include "sched.h"

#define JOB "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"
#define JOB2 "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9N"
#define ART "art_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"
#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static const char *const job_fields[] = {
    "job_id",     "job_type",     "status",          "params",     "metadata",    "priority",
    "attempt",    "max_attempts", "timeout_seconds", "gpu_type",   "gpu_count",   "labels",
    "worker_id",  "progress",     "result",          "error",      "artifacts",   "cost_usd",
    "cost_final", "created_at",   "updated_at",      "started_at", "finished_at",
};
#define NFIELDS (sizeof(job_fields) / sizeof(job_fields[0]))

static struct sched_job full_job(void)
{
    struct sched_job j = {
        .job_id = JOB,
        .error = NULL, /* it succeeded */
        .user_id = "usr_1",
        .job_type = "generate",
        .status = "succeeded",
        .params = "{\"domain\":\"math\",\"num_samples\":10}",
        .metadata = "{\"team\":\"a\"}",
        .labels = "{\"zone\":\"eu\"}",
        .result = "{\"rows\":10}",
        .priority = "7",
        .attempt = "2",
        .max_attempts = "3",
        .timeout_seconds = "600",
        .gpu_type = "a100",
        .gpu_count = "2",
        .worker_id = "wrk_1",
        .progress = "1",
        .cost_micros = "2500123",
        .cost_final = "t",
        .version = "9",
        .created_at = "2026-11-28T21:03:52.123Z",
        .updated_at = "2026-11-28T21:04:00.000Z",
        .started_at = "2026-11-28T21:03:53.000Z",
        .finished_at = "2026-11-28T21:04:00.000Z",
        .artifacts = "[{\"artifact_id\":\"" ART "\",\"name\":\"out.jsonl\",\"kind\":\"dataset\","
                     "\"uri\":\"file:///tmp/x\",\"bytes\":12,\"sha256\":null}]",
    };
    return j;
}

static void test_job_json_full(void **state)
{
    struct sched_job j = full_job();
    cJSON *o = sched_job_json(&j), *it;
    size_t i;

    assert_int_equal(cJSON_GetArraySize(o), NFIELDS);
    for (i = 0; i < NFIELDS; i++)
        assert_non_null(cJSON_GetObjectItemCaseSensitive(o, job_fields[i]));
    assert_null(cJSON_GetObjectItemCaseSensitive(o, "user_id")); /* not part of the object */
    assert_string_equal(nf_json_str(o, "job_id"), JOB);
    assert_string_equal(nf_json_str(o, "status"), "succeeded");
    assert_int_equal(nf_json_int(o, "priority", -1), 7);
    assert_int_equal(nf_json_int(o, "attempt", -1), 2);
    assert_int_equal(nf_json_int(o, "max_attempts", -1), 3);
    assert_int_equal(nf_json_int(o, "timeout_seconds", -1), 600);
    assert_int_equal(nf_json_int(o, "gpu_count", -1), 2);
    assert_string_equal(nf_json_str(o, "gpu_type"), "a100");
    assert_string_equal(nf_json_str(o, "worker_id"), "wrk_1");
    assert_string_equal(nf_json_str(o, "cost_usd"), "2.500123");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "cost_final")));
    it = cJSON_GetObjectItemCaseSensitive(o, "progress");
    assert_true(cJSON_IsNumber(it));
    assert_true(it->valuedouble == 1.0);
    it = cJSON_GetObjectItemCaseSensitive(o, "params");
    assert_int_equal(nf_json_int(it, "num_samples", -1), 10);
    assert_string_equal(nf_json_str(cJSON_GetObjectItemCaseSensitive(o, "labels"), "zone"), "eu");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "error")));
    it = cJSON_GetObjectItemCaseSensitive(o, "artifacts");
    assert_int_equal(cJSON_GetArraySize(it), 1);
    assert_string_equal(nf_json_str(cJSON_GetArrayItem(it, 0), "artifact_id"), ART);
    assert_string_equal(nf_json_str(o, "created_at"), "2026-11-28T21:03:52.123Z");
    assert_string_equal(nf_json_str(o, "finished_at"), "2026-11-28T21:04:00.000Z");
    cJSON_Delete(o);
}

/* A fresh row: everything unknown is null, never missing; artifacts [] and cost 0. */
static void test_job_json_nulls(void **state)
{
    struct sched_job j = {.job_id = JOB, .user_id = "u", .job_type = "audit", .status = "queued"};
    cJSON *o = sched_job_json(&j);
    size_t i;

    assert_int_equal(cJSON_GetArraySize(o), NFIELDS);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "worker_id")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "started_at")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "result")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "progress")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "timeout_seconds")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "artifacts")), 0);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "artifacts")));
    assert_string_equal(nf_json_str(o, "cost_usd"), "0.000000");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "cost_final")));
    for (i = 0; i < NFIELDS; i++)
        assert_non_null(cJSON_GetObjectItemCaseSensitive(o, job_fields[i]));
    cJSON_Delete(o);
}

/* Garbage in a column degrades to null, it never breaks the object. */
static void test_job_json_bad_columns(void **state)
{
    struct sched_job j = full_job();
    cJSON *o;

    j.priority = "seven";
    j.attempt = "2x";
    j.progress = "1.5";
    j.params = "{not json";
    j.cost_micros = "lots";
    o = sched_job_json(&j);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "priority")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "attempt")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "progress")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "params")));
    assert_string_equal(nf_json_str(o, "cost_usd"), "0.000000");
    cJSON_Delete(o);
}

static void test_dispatch_data(void **state)
{
    struct sched_job j = full_job();
    cJSON *o = sched_dispatch_data(&j);

    assert_string_equal(nf_json_str(o, "job_id"), JOB);
    assert_string_equal(nf_json_str(o, "user_id"), "usr_1");
    assert_string_equal(nf_json_str(o, "job_type"), "generate");
    assert_int_equal(nf_json_int(o, "attempt", -1), 2);
    assert_int_equal(nf_json_int(o, "priority", -1), 7);
    assert_int_equal(nf_json_int(o, "max_attempts", -1), 3);
    assert_int_equal(nf_json_int(o, "gpu_count", -1), 2);
    assert_string_equal(nf_json_str(o, "created_at"), "2026-11-28T21:03:52.123Z");
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "params")));
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "labels")));
    assert_null(cJSON_GetObjectItemCaseSensitive(o, "status"));
    cJSON_Delete(o);
}

static void test_usd_format(void **state)
{
    char b[32];

    sched_usd_format(0, b);
    assert_string_equal(b, "0.000000");
    sched_usd_format(123, b);
    assert_string_equal(b, "0.000123");
    sched_usd_format(2500000, b);
    assert_string_equal(b, "2.500000");
    sched_usd_format(-1, b);
    assert_string_equal(b, "-0.000001");
    sched_usd_format(9223372036854775807LL, b);
    assert_string_equal(b, "9223372036854.775807");
}

static void test_time_valid(void **state)
{
    assert_true(sched_time_valid("2026-11-28T21:03:52.123Z"));
    assert_true(sched_time_valid("2026-11-28T21:03:52Z"));
    assert_true(sched_time_valid("2026-11-28T21:03:52.123456789+02:00"));
    assert_true(sched_time_valid("2026-11-28T21:03:52-05:30"));
    assert_false(sched_time_valid(NULL));
    assert_false(sched_time_valid(""));
    assert_false(sched_time_valid("2026-11-28"));
    assert_false(sched_time_valid("2026-11-28 21:03:52Z"));
    assert_false(sched_time_valid("2026-13-28T21:03:52Z"));
    assert_false(sched_time_valid("2026-11-28T24:03:52Z"));
    assert_false(sched_time_valid("2026-11-28T21:03:52"));
    assert_false(sched_time_valid("2026-11-28T21:03:52.Z"));
    assert_false(sched_time_valid("2026-11-28T21:03:52Zjunk"));
    assert_false(sched_time_valid("1969-12-31T23:59:59Z"));
    assert_false(sched_time_valid("2026-11-28T21:03:52+2:00"));
}

/* ---------------------------------------------------------------------------------- */

static cJSON *request(void)
{
    return cJSON_Parse("{\"job_id\":\"" JOB "\",\"user_id\":\"usr_1\",\"job_type\":\"train\","
                       "\"params\":{\"model_id\":\"m\",\"dataset_uri\":\"s3://b/k\"},"
                       "\"created_at\":\"2026-11-28T21:03:52.123Z\"}");
}

static void test_request_defaults(void **state)
{
    cJSON *d = request();
    struct sched_request r;
    struct nf_json_err err;

    assert_int_equal(sched_request_parse(d, JOB, &r, &err), 0);
    assert_string_equal(r.job_id, JOB);
    assert_string_equal(r.user_id, "usr_1");
    assert_string_equal(r.job_type, "train");
    assert_int_equal(r.priority, 5);
    assert_int_equal(r.max_attempts, 3);
    assert_int_equal(r.timeout_seconds, 0);
    assert_int_equal(r.gpu_count, -1);
    assert_null(r.gpu_type);
    assert_null(r.metadata);
    assert_null(r.labels);
    assert_string_equal(r.created_at, "2026-11-28T21:03:52.123Z");
    /* subject may be NULL (not checked) */
    assert_int_equal(sched_request_parse(d, NULL, &r, &err), 0);
    cJSON_Delete(d);
}

static void test_request_all_fields(void **state)
{
    cJSON *d = cJSON_Parse("{\"job_id\":\"" JOB "\",\"user_id\":\"u\",\"job_type\":\"deploy\","
                           "\"params\":{},\"metadata\":{\"a\":\"b\"},\"labels\":{\"x\":\"y\"},"
                           "\"priority\":9,\"max_attempts\":10,\"timeout_seconds\":60,"
                           "\"gpu_type\":\"h100\",\"gpu_count\":8,\"created_at\":\"bogus\"}");
    struct sched_request r;
    struct nf_json_err err;

    assert_int_equal(sched_request_parse(d, JOB, &r, &err), 0);
    assert_int_equal(r.priority, 9);
    assert_int_equal(r.max_attempts, 10);
    assert_int_equal(r.timeout_seconds, 60);
    assert_int_equal(r.gpu_count, 8);
    assert_string_equal(r.gpu_type, "h100");
    assert_non_null(r.metadata);
    assert_non_null(r.labels);
    assert_null(r.created_at); /* not RFC 3339: the insert uses now() */
    cJSON_Delete(d);
}

/* Replaces (or with val NULL removes) one key of the good request and expects failure
 * naming `param`. */
static void expect_request_fail(const char *key, const char *val, const char *param)
{
    cJSON *d = request();
    struct sched_request r;
    struct nf_json_err err;

    cJSON_DeleteItemFromObjectCaseSensitive(d, key);
    if (val)
        cJSON_AddItemToObject(d, key, cJSON_Parse(val));
    memset(&err, 0, sizeof(err));
    if (sched_request_parse(d, JOB, &r, &err) != -1)
        fail_msg("%s=%s: accepted", key, val ? val : "(absent)");
    if (strcmp(err.param, param) != 0)
        fail_msg("%s=%s: param %s, expected %s", key, val ? val : "(absent)", err.param, param);
    assert_true(err.msg[0] != '\0');
    cJSON_Delete(d);
}

static void test_request_failures(void **state)
{
    static const struct {
        const char *key, *val, *param;
    } fails[] = {
        {"job_id", NULL, "job_id"},
        {"job_id", "\"job_123\"", "job_id"},
        {"job_id", "\"usr_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\"", "job_id"},
        {"job_id", "42", "job_id"},
        {"user_id", NULL, "user_id"},
        {"user_id", "\"\"", "user_id"},
        {"user_id", "7", "user_id"},
        {"job_type", NULL, "job_type"},
        {"job_type", "\"bake\"", "job_type"},
        {"params", NULL, "params"},
        {"params", "[1]", "params"},
        {"metadata", "\"x\"", "metadata"},
        {"labels", "[]", "labels"},
        {"priority", "10", "priority"},
        {"priority", "-1", "priority"},
        {"priority", "1.5", "priority"},
        {"max_attempts", "0", "max_attempts"},
        {"max_attempts", "11", "max_attempts"},
        {"timeout_seconds", "0", "timeout_seconds"},
        {"gpu_count", "65", "gpu_count"},
        {"gpu_type", "\"\"", "gpu_type"},
        {"gpu_type", "3", "gpu_type"},
        {"created_at", "5", "created_at"},
    };
    cJSON *d = request();
    struct sched_request r;
    struct nf_json_err err;

    for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++)
        expect_request_fail(fails[i].key, fails[i].val, fails[i].param);
    /* subject must be the job id */
    assert_int_equal(sched_request_parse(d, JOB2, &r, &err), -1);
    assert_string_equal(err.param, "subject");
    /* a data that is not an object */
    cJSON_Delete(d);
    d = cJSON_Parse("[1,2]");
    assert_int_equal(sched_request_parse(d, JOB, &r, &err), -1);
    cJSON_Delete(d);
}

/* ---------------------------------------------------------------------------------- */

static cJSON *envelope(const char *type, const char *subject, const char *data)
{
    char buf[2048];

    snprintf(buf, sizeof(buf),
             "{\"specversion\":\"1.0\",\"id\":\"evt_1\",\"source\":\"nf-worker/w1\","
             "\"type\":\"%s\",\"time\":\"2026-11-28T21:03:52.123Z\",\"subject\":\"%s\","
             "\"datacontenttype\":\"application/json\",\"data\":%s}",
             type, subject, data);
    return cJSON_Parse(buf);
}

static void test_event_parse_ok(void **state)
{
    cJSON *ev = envelope("forge.job.failed", JOB,
                         "{\"job_id\":\"" JOB "\",\"user_id\":\"u\",\"attempt\":2,"
                         "\"status\":\"failed\",\"worker_id\":\"w1\","
                         "\"error\":{\"code\":\"oom\",\"message\":\"m\",\"class\":\"infra\"}}");
    struct sched_event e;
    const char *why = NULL;

    assert_int_equal(sched_event_parse(ev, &e, &why), 0);
    assert_int_equal(e.type, SCHED_EV_FAILED);
    assert_int_equal(e.attempt, 2);
    assert_string_equal(e.id, "evt_1");
    assert_string_equal(e.job_id, JOB);
    assert_string_equal(e.worker_id, "w1");
    assert_string_equal(e.time, "2026-11-28T21:03:52.123Z");
    assert_int_equal(e.cls, SCHED_FAIL_INFRA);
    assert_non_null(e.error);
    assert_false(e.has_progress);
    cJSON_Delete(ev);

    ev = envelope("forge.job.progress", JOB,
                  "{\"job_id\":\"" JOB "\",\"attempt\":1,\"progress\":0.25}");
    assert_int_equal(sched_event_parse(ev, &e, &why), 0);
    assert_true(e.has_progress);
    assert_true(e.progress == 0.25);
    assert_int_equal(e.cls, SCHED_FAIL_NONE);
    cJSON_Delete(ev);
}

static void expect_event_fail(const char *type, const char *subject, const char *data)
{
    cJSON *ev = envelope(type, subject, data);
    struct sched_event e;
    const char *why = NULL;

    if (!ev)
        fail_msg("test envelope does not parse: %s", data);
    if (sched_event_parse(ev, &e, &why) != -1)
        fail_msg("accepted: %s %s", type, data);
    assert_non_null(why);
    cJSON_Delete(ev);
}

static void test_event_parse_failures(void **state)
{
    cJSON *ev;
    struct sched_event e;
    const char *why = NULL;

    expect_event_fail("forge.job.exploded", JOB, "{\"job_id\":\"" JOB "\",\"attempt\":1}");
    expect_event_fail("forge.job.requested", JOB, "{\"job_id\":\"" JOB "\",\"attempt\":1}");
    expect_event_fail("forge.job.running", JOB2, "{\"job_id\":\"" JOB "\",\"attempt\":1}");
    expect_event_fail("forge.job.running", "job_x", "{\"job_id\":\"job_x\",\"attempt\":1}");
    expect_event_fail("forge.job.running", JOB, "{\"attempt\":1}");
    expect_event_fail("forge.job.running", JOB, "{\"job_id\":\"" JOB "\"}");
    expect_event_fail("forge.job.running", JOB, "{\"job_id\":\"" JOB "\",\"attempt\":0}");
    expect_event_fail("forge.job.running", JOB, "{\"job_id\":\"" JOB "\",\"attempt\":1.5}");
    expect_event_fail("forge.job.running", JOB, "{\"job_id\":\"" JOB "\",\"attempt\":\"1\"}");
    expect_event_fail("forge.job.running", JOB,
                      "{\"job_id\":\"" JOB "\",\"attempt\":1,\"worker_id\":\"\"}");
    expect_event_fail("forge.job.running", JOB,
                      "{\"job_id\":\"" JOB "\",\"attempt\":1,\"worker_id\":5}");
    expect_event_fail("forge.job.progress", JOB, "{\"job_id\":\"" JOB "\",\"attempt\":1}");
    expect_event_fail("forge.job.progress", JOB,
                      "{\"job_id\":\"" JOB "\",\"attempt\":1,\"progress\":1.5}");
    expect_event_fail("forge.job.progress", JOB,
                      "{\"job_id\":\"" JOB "\",\"attempt\":1,\"progress\":\"half\"}");
    expect_event_fail("forge.job.failed", JOB,
                      "{\"job_id\":\"" JOB "\",\"attempt\":1,\"error\":\"boom\"}");
    expect_event_fail("forge.job.failed", JOB,
                      "{\"job_id\":\"" JOB "\",\"attempt\":1,\"error\":{\"class\":3}}");
    expect_event_fail("forge.job.succeeded", JOB,
                      "{\"job_id\":\"" JOB "\",\"attempt\":1,\"artifacts\":{}}");
    expect_event_fail("forge.job.running", JOB, "[]");
    /* not an envelope at all */
    ev = cJSON_Parse("{\"hello\":1}");
    assert_int_equal(sched_event_parse(ev, &e, &why), -1);
    cJSON_Delete(ev);
    /* a bad envelope time is not fatal: it is just not used */
    ev = envelope("forge.job.running", JOB, "{\"job_id\":\"" JOB "\",\"attempt\":1}");
    cJSON_ReplaceItemInObject(ev, "time", cJSON_CreateString("yesterday"));
    assert_int_equal(sched_event_parse(ev, &e, &why), 0);
    assert_null(e.time);
    cJSON_Delete(ev);
}

/* inputs[]: resolved by the gateway; each entry must name the job's own user prefix. */
static void test_request_inputs(void **state)
{
    static const char *const bad[] = {
        "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/k\",\"object_key\":"
        "\"tenants/usr_2/files/b/k\",\"name\":\"k\",\"bytes\":1}]", /* another user */
        "[{\"param\":\"epochs\",\"uri\":\"s3://b/k\",\"object_key\":"
        "\"tenants/usr_1/files/b/k\",\"name\":\"k\",\"bytes\":1}]", /* not an input */
        "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/k\",\"object_key\":"
        "\"tenants/usr_1/files/b/k\",\"name\":\"../k\",\"bytes\":1}]", /* a path */
        "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/k\",\"object_key\":"
        "\"tenants/usr_1/\",\"name\":\"k\",\"bytes\":1}]", /* the prefix alone */
        "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/k\",\"object_key\":"
        "\"tenants/usr_1/files/b/k\",\"name\":\"k\",\"bytes\":-1}]",
        "{}",
        "[1,2,3,4,5,6,7,8,9]",
    };
    struct sched_request r;
    struct nf_json_err err;
    cJSON *d = request(), *in;
    size_t i;

    in = cJSON_Parse("[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/k\",\"object_key\":"
                     "\"tenants/usr_1/files/b/k\",\"name\":\"k\",\"bytes\":12}]");
    cJSON_AddItemToObject(d, "inputs", in);
    assert_int_equal(sched_request_parse(d, JOB, &r, &err), 0);
    assert_ptr_equal(r.inputs, in);
    /* a train's from_checkpoint: a checkpoint artifact of an earlier job of the user */
    in = cJSON_Parse("[{\"param\":\"from_checkpoint\",\"uri\":\"artifact://art_1\","
                     "\"object_key\":\"tenants/usr_1/jobs/job_1/1/checkpoint-epoch-1.tar\","
                     "\"name\":\"checkpoint-epoch-1.tar\",\"bytes\":12}]");
    cJSON_ReplaceItemInObject(d, "inputs", in);
    assert_int_equal(sched_request_parse(d, JOB, &r, &err), 0);
    /* audit's tokenizer_model is an input too (a model train wrote) */
    cJSON_ReplaceItemInObject(d, "inputs",
                              cJSON_Parse("[{\"param\":\"tokenizer_model\",\"uri\":\"" ART
                                          "\",\"object_key\":\"tenants/usr_1/jobs/j/1/"
                                          "model.tar\",\"name\":\"model.tar\",\"bytes\":9}]"));
    assert_int_equal(sched_request_parse(d, JOB, &r, &err), 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON_ReplaceItemInObject(d, "inputs", cJSON_Parse(bad[i]));
        assert_int_equal(sched_request_parse(d, JOB, &r, &err), -1);
        assert_string_equal(err.param, "inputs");
    }
    cJSON_Delete(d);
}

static void test_artifacts_clean(void **state)
{
    cJSON *in = cJSON_Parse(
        "[{\"artifact_id\":\"" ART "\",\"name\":\"a\",\"kind\":\"dataset\",\"uri\":\"file:///a\","
        "\"bytes\":5,\"sha256\":\"" SHA "\"},"
        "{\"artifact_id\":\"art_bad\",\"name\":\"a\",\"kind\":\"k\",\"uri\":\"u\",\"bytes\":1},"
        "{\"artifact_id\":\"" ART "\",\"kind\":\"k\",\"uri\":\"u\",\"bytes\":1},"
        "{\"artifact_id\":\"" ART "\",\"name\":\"a\",\"kind\":\"k\",\"uri\":\"u\",\"bytes\":-1},"
        "{\"artifact_id\":\"" ART "\",\"name\":\"a\",\"kind\":\"k\",\"uri\":\"u\",\"bytes\":1,"
        "\"sha256\":\"XYZ\"},"
        "{\"artifact_id\":\"" ART "\",\"name\":\"b\",\"kind\":\"model\",\"uri\":\"s3://b\","
        "\"bytes\":0},"
        "7]");
    cJSON *out;
    int dropped = -1;

    out = sched_artifacts_clean(in, &dropped);
    assert_int_equal(dropped, 5);
    assert_int_equal(cJSON_GetArraySize(out), 2);
    assert_string_equal(nf_json_str(cJSON_GetArrayItem(out, 0), "sha256"), SHA);
    assert_true(
        cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(out, 1), "sha256")));
    assert_int_equal(nf_json_int(cJSON_GetArrayItem(out, 0), "bytes", -1), 5);
    cJSON_Delete(out);
    out = sched_artifacts_clean(NULL, &dropped);
    assert_int_equal(dropped, 0);
    assert_int_equal(cJSON_GetArraySize(out), 0);
    cJSON_Delete(out);
    cJSON_Delete(in);
}

static void test_event_id(void **state)
{
    char a[64], b[64], c[64];
    size_t i;

    sched_event_id("queued", JOB, 1, a, sizeof(a));
    sched_event_id("queued", JOB, 1, b, sizeof(b));
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 4 + 32);
    assert_memory_equal(a, "evt_", 4);
    for (i = 4; i < strlen(a); i++)
        assert_non_null(strchr("0123456789abcdef", a[i]));
    sched_event_id("queued", JOB, 2, c, sizeof(c));
    assert_string_not_equal(a, c);
    sched_event_id("dispatch", JOB, 1, c, sizeof(c));
    assert_string_not_equal(a, c);
    sched_event_id("queued", JOB2, 1, c, sizeof(c));
    assert_string_not_equal(a, c);
}

static void test_snap(void **state)
{
    struct sched_job j = full_job();
    struct sched_snap s = {0};
    cJSON *doc;

    assert_int_equal(sched_snap_from_job(&j, &s), 0);
    assert_string_equal(s.job_id, JOB);
    assert_string_equal(s.user_id, "usr_1");
    assert_string_equal(s.status, "succeeded");
    assert_int_equal(s.version, 9);
    doc = cJSON_Parse(s.doc);
    assert_non_null(doc);
    assert_string_equal(nf_json_str(doc, "job_id"), JOB);
    cJSON_Delete(doc);
    sched_snap_clear(&s);
    assert_null(s.doc);
    sched_snap_clear(&s); /* twice is fine */
    sched_snap_clear(NULL);
    j.user_id = NULL;
    assert_int_equal(sched_snap_from_job(&j, &s), -1);
    assert_null(s.doc);
}

static void test_job_types(void **state)
{
    /* The one list is libnf's (nf_jobs); the scheduler validates through it. */
    assert_int_equal(nf_job_type_index("generate"), 0);
    assert_int_equal(nf_job_type_index("deploy"), 5);
    assert_int_equal(nf_job_type_index("Generate"), -1);
    assert_int_equal(nf_job_type_index(""), -1);
    assert_int_equal(nf_job_type_index(NULL), -1);
}

/* ---------------------------------------------------------------------------------- */

static void parse_ok(const char *type, const char *data, struct sched_event *e, cJSON **ev)
{
    const char *why = NULL;

    *ev = envelope(type, JOB, data);
    if (sched_event_parse(*ev, e, &why) != 0)
        fail_msg("%s: %s", type, why);
}

/* An event of JOB and the statement parameters sched_events_params gives for it. */
struct params {
    cJSON *ev;
    struct sched_event e;
    struct sched_events_bufs b;
    const char *p[SCHED_EVENTS_NPARAMS];
};

/* Parses type/data and fills ps->p with a retry cap of 60 s. */
static void params_open(struct params *ps, const char *type, const char *data)
{
    parse_ok(type, data, &ps->e, &ps->ev);
    assert_int_equal(sched_events_params(&ps->e, 60, ps->p, &ps->b), 0);
}

static void params_close(struct params *ps)
{
    sched_events_params_free(&ps->b);
    cJSON_Delete(ps->ev);
}

static void test_events_params(void **state)
{
    struct params ps;
    const char **p = ps.p;
    cJSON *arts;

    params_open(&ps, "forge.job.failed",
                "{\"job_id\":\"" JOB "\",\"attempt\":2,\"error\":{\"class\":\"user_error\"}}");
    assert_string_equal(p[0], JOB);
    assert_string_equal(p[1], "evt_1");
    assert_string_equal(p[2], "failed");
    assert_string_equal(p[3], "2");
    assert_string_equal(p[4], "{queued,assigned,running,cancel_requested}");
    assert_string_equal(p[5], "{}");
    assert_null(p[8]);
    assert_string_equal(p[9], "final");
    assert_string_equal(p[10], "false");
    assert_non_null(p[14]);
    assert_null(p[13]);
    assert_null(p[17]);
    assert_string_equal(p[16], "2026-11-28T21:03:52.123Z");
    params_close(&ps);

    params_open(&ps, "forge.job.failed",
                "{\"job_id\":\"" JOB "\",\"attempt\":1,\"error\":{\"class\":\"preempted\"}}");
    assert_string_equal(p[9], "retryable");
    assert_string_equal(p[18], "2000"); /* next_attempt_at: 2^1 s after attempt 1 */
    sched_events_params_free(&ps.b);
    sched_events_params(&ps.e, 1, p, &ps.b);
    assert_string_equal(p[18], "1000"); /* capped */
    params_close(&ps);

    params_open(&ps, "forge.job.progress",
                "{\"job_id\":\"" JOB "\",\"attempt\":1,\"progress\":0.5}");
    assert_string_equal(p[12], "0.500000");
    assert_null(p[8]); /* no status change */
    assert_null(p[9]);
    assert_string_equal(p[4], "{assigned,running,cancel_requested}");
    params_close(&ps);

    params_open(&ps, "forge.job.cancel_requested", "{\"job_id\":\"" JOB "\",\"attempt\":1}");
    assert_string_equal(p[8], "cancel_requested");
    assert_string_equal(p[6], "{queued,assigned,running}");
    assert_string_equal(p[4], "{}");
    params_close(&ps);

    params_open(&ps, "forge.job.log", "{\"job_id\":\"" JOB "\",\"attempt\":1,\"message\":\"hi\"}");
    assert_string_equal(p[10], "true");
    params_close(&ps);

    params_open(&ps, "forge.job.succeeded",
                "{\"job_id\":\"" JOB "\",\"attempt\":1,\"result\":{\"ok\":true},\"artifacts\":["
                "{\"artifact_id\":\"" ART "\",\"name\":\"a\",\"kind\":\"k\",\"uri\":\"u\","
                "\"bytes\":1},{\"bad\":1}]}");
    assert_string_equal(p[8], "succeeded");
    assert_string_equal(p[13], "{\"ok\":true}");
    assert_int_equal(ps.b.dropped_artifacts, 1);
    arts = cJSON_Parse(p[17]);
    assert_int_equal(cJSON_GetArraySize(arts), 1);
    cJSON_Delete(arts);
    params_close(&ps);

    params_open(&ps, "forge.job.retrying", "{\"job_id\":\"" JOB "\",\"attempt\":3}");
    assert_string_equal(p[5], "{queued,assigned,running}");
    assert_string_equal(p[7], "{queued}");
    assert_string_equal(p[8], "queued");
    params_close(&ps);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_job_json_full, test_job_json_nulls,
                       test_job_json_bad_columns, test_dispatch_data, test_usd_format,
                       test_time_valid, test_request_defaults, test_request_all_fields,
                       test_request_failures, test_event_parse_ok, test_event_parse_failures,
                       test_request_inputs, test_artifacts_clean, test_event_id, test_snap,
                       test_job_types, test_events_params);
}
