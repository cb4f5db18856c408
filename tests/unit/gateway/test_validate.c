/* Unit tests for the gateway's job request validation (validate.c, DESIGN §4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_json.h"
#include "nf_test.h"

/* A valid artifact id (art_ + ULID) for URI tests. */
#define ART "artifact://art_01ARYZ6S41041061050R3GG28A"

/* The members of a valid flat generate and train request, for bodies that add one more. */
#define GEN "\"domain\":\"d\",\"num_samples\":1"
#define TRAIN "\"model_id\":\"m\",\"dataset_uri\":\"s3://b/k\""

/* Validates json for type and expects success; returns the normalised request. */
static cJSON *ok(const char *type, const char *json)
{
    struct nf_json_err err = {{0}, {0}};
    cJSON *body = cJSON_Parse(json), *out = NULL;
    int rc;

    assert_non_null(body);
    rc = gw_validate_job(type, body, &out, &err);
    if (rc != 0)
        fail_msg("%s %s: unexpected failure param=%s msg=%s", type, json, err.param, err.msg);
    assert_non_null(out);
    cJSON_Delete(body);
    return out;
}

static void ok_free(const char *type, const char *json)
{
    cJSON_Delete(ok(type, json));
}

/* Expects failure naming param; *out must stay untouched and a message must be set. */
static void bad(const char *type, const char *json, const char *param)
{
    struct nf_json_err err = {{0}, {0}};
    cJSON *body = cJSON_Parse(json), *sentinel = (cJSON *)&err, *out = sentinel;
    int rc;

    assert_non_null(body);
    rc = gw_validate_job(type, body, &out, &err);
    if (rc != -1)
        fail_msg("%s %s: accepted, expected a failure on %s", type, json, param);
    assert_ptr_equal(out, sentinel);
    if (strcmp(err.param, param) != 0)
        fail_msg("%s %s: failed on '%s' (%s), expected '%s'", type, json, err.param, err.msg,
                 param);
    assert_true(strlen(err.msg) > 0);
    cJSON_Delete(body);
}

/* A body of a job type that must be refused, and the param the failure names. */
struct refusal {
    const char *json;
    const char *param;
};

/* bad() for each of the n refusals of type. */
static void bad_all(const char *type, const struct refusal *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bad(type, r[i].json, r[i].param);
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const cJSON *param(const cJSON *req, const char *k)
{
    return get(get(req, "params"), k);
}

/* "x" repeated n times inside a JSON string. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);

    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- job types and URIs -------------------------------------------------------- */

static void test_job_types(void **state)
{
    assert_int_equal(nf_job_type_index("generate"), 0);
    assert_int_equal(nf_job_type_index("audit"), 1);
    assert_int_equal(nf_job_type_index("distill"), 2);
    assert_int_equal(nf_job_type_index("train"), 3);
    assert_int_equal(nf_job_type_index("evaluate"), 4);
    assert_int_equal(nf_job_type_index("deploy"), 5);
    assert_int_equal(nf_job_type_index("Generate"), -1);
    assert_int_equal(nf_job_type_index("gen"), -1);
    assert_int_equal(nf_job_type_index(""), -1);
    assert_int_equal(nf_job_type_index(NULL), -1);
    bad("nope", "{}", "job_type");
    bad(NULL, "{}", "job_type");
}

static void test_uris(void **state)
{
    char *longkey;
    char buf[2100];

    assert_true(gw_validate_uri("s3://bucket/key.jsonl"));
    assert_true(gw_validate_uri("s3://my.bucket-1/dir/sub/data.parquet"));
    assert_true(gw_validate_uri(ART));

    assert_false(gw_validate_uri(NULL));
    assert_false(gw_validate_uri(""));
    /* never a path on a machine, never a fetch from anywhere (DESIGN §4, §12) */
    assert_false(gw_validate_uri("file:///data/set.jsonl"));
    assert_false(gw_validate_uri("file:///etc/passwd"));
    assert_false(gw_validate_uri("https://example.com/d.jsonl"));
    assert_false(gw_validate_uri("http://example.com/d.jsonl"));
    assert_false(gw_validate_uri("ftp://example.com/d"));
    assert_false(gw_validate_uri("S3://bucket/key"));
    assert_false(gw_validate_uri("s3://"));
    assert_false(gw_validate_uri("s3://bucket"));  /* a key is needed */
    assert_false(gw_validate_uri("s3://bucket/")); /* ... not empty */
    assert_false(gw_validate_uri("s3:///key"));
    assert_false(gw_validate_uri("s3://Bucket/key"));  /* lowercase */
    assert_false(gw_validate_uri("s3://-bucket/key")); /* starts alphanumeric */
    assert_false(gw_validate_uri("s3://bucket-/key"));
    assert_false(gw_validate_uri("s3://b_ucket/key"));
    assert_false(gw_validate_uri("s3://bucket//key"));
    assert_false(gw_validate_uri("s3://bucket/a//b"));
    assert_false(gw_validate_uri("s3://bucket/../other/key"));
    assert_false(gw_validate_uri("s3://bucket/a/../../b"));
    assert_false(gw_validate_uri("s3://bucket/a/./b"));
    assert_false(gw_validate_uri("s3://bucket/a/.."));
    assert_false(gw_validate_uri("s3://bucket/a/"));
    assert_false(gw_validate_uri("s3://bucket/a\\b"));
    assert_false(gw_validate_uri("artifact://"));
    assert_false(gw_validate_uri("artifact://art_123"));
    assert_false(gw_validate_uri("artifact://job_01ARYZ6S41041061050R3GG28A"));
    assert_false(gw_validate_uri(ART "/extra"));
    assert_false(gw_validate_uri("s3://bucket/with space"));
    assert_false(gw_validate_uri("s3://bucket/tab\there"));
    assert_false(gw_validate_uri("/data/set.jsonl"));
    assert_false(gw_validate_uri("data.jsonl"));

    /* keys up to 1024 bytes */
    longkey = repeat('a', GW_S3_KEY_MAX);
    snprintf(buf, sizeof(buf), "s3://bkt/%s", longkey);
    assert_true(gw_validate_uri(buf));
    snprintf(buf, sizeof(buf), "s3://bkt/%sa", longkey);
    assert_false(gw_validate_uri(buf));
    free(longkey);
}

/* Model references: a name or artifact://; a path or another scheme is a 422. */
static void test_model_refs(void **state)
{
    static const struct refusal refused[] = {
        {"{\"model_id\":\"file:///etc/passwd\",\"benchmark\":\"mmlu\"}", "model_id"},
        {"{\"model_id\":\"/srv/models/m.json\",\"benchmark\":\"mmlu\"}", "model_id"},
        {"{\"model_id\":\"s3://b/model\",\"benchmark\":\"mmlu\"}", "model_id"},
        {"{\"model_id\":\"artifact://art_1\",\"benchmark\":\"mmlu\"}", "model_id"},
    };

    ok_free("evaluate", "{\"model_id\":\"llama-3-8b\",\"benchmark\":\"mmlu\"}");
    ok_free("evaluate", "{\"model_id\":\"" ART "\",\"benchmark\":\"mmlu\"}");
    bad_all("evaluate", refused, sizeof(refused) / sizeof(refused[0]));
}

/* ---- generate ------------------------------------------------------------------ */

static void test_generate_flat_defaults(void **state)
{
    cJSON *req = ok("generate", "{\"domain\":\"biology\",\"num_samples\":100}");
    const cJSON *p = get(req, "params");

    assert_string_equal(cJSON_GetStringValue(param(req, "domain")), "biology");
    assert_int_equal((int)cJSON_GetNumberValue(param(req, "num_samples")), 100);
    assert_string_equal(cJSON_GetStringValue(param(req, "format")), "jsonl");
    assert_null(param(req, "model"));
    assert_null(param(req, "seed"));
    assert_int_equal(cJSON_GetArraySize(p), 3);
    /* every common field with its default */
    assert_true(cJSON_IsObject(get(req, "metadata")));
    assert_int_equal(cJSON_GetArraySize(get(req, "metadata")), 0);
    assert_int_equal((int)cJSON_GetNumberValue(get(req, "priority")), 5);
    assert_int_equal((int)cJSON_GetNumberValue(get(req, "max_attempts")), 3);
    assert_int_equal((int)cJSON_GetNumberValue(get(req, "timeout_seconds")), 3600);
    assert_true(cJSON_IsNull(get(req, "gpu_type")));
    assert_int_equal((int)cJSON_GetNumberValue(get(req, "gpu_count")), 1);
    assert_true(cJSON_IsObject(get(req, "labels")));
    assert_int_equal(cJSON_GetArraySize(get(req, "labels")), 0);
    assert_int_equal(cJSON_GetArraySize(req), 8);
    cJSON_Delete(req);
}

static void test_flat_and_nested_agree(void **state)
{
    cJSON *a = ok("generate", "{\"domain\":\"bio\",\"num_samples\":7,\"priority\":9,"
                              "\"metadata\":{\"team\":\"x\"}}");
    cJSON *b = ok("generate", "{\"params\":{\"domain\":\"bio\",\"num_samples\":7},"
                              "\"priority\":9,\"metadata\":{\"team\":\"x\"}}");
    char *sa = cJSON_PrintUnformatted(a), *sb = cJSON_PrintUnformatted(b);

    assert_string_equal(sa, sb);
    free(sa);
    free(sb);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_generate_all_params(void **state)
{
    cJSON *req = ok("generate", "{\"params\":{\"domain\":\"law\",\"num_samples\":1000000,"
                                "\"model\":\"llama-3-8b\",\"seed\":42,\"format\":\"jsonl\"}}");

    assert_string_equal(cJSON_GetStringValue(param(req, "model")), "llama-3-8b");
    assert_int_equal((int)cJSON_GetNumberValue(param(req, "seed")), 42);
    assert_int_equal((int)cJSON_GetNumberValue(param(req, "num_samples")), 1000000);
    cJSON_Delete(req);
    ok_free("generate", "{\"domain\":\"d\",\"num_samples\":1,\"seed\":0}");
    ok_free("generate", "{\"domain\":\"d\",\"num_samples\":1,\"seed\":9007199254740991}");
    /* optional params given as null count as absent */
    ok_free("generate", "{\"domain\":\"d\",\"num_samples\":1,\"seed\":null,\"model\":null}");
}

static void test_generate_failures(void **state)
{
    static const struct refusal refused[] = {
        {"{\"num_samples\":100}", "domain"},
        {"{\"domain\":\"bio\"}", "num_samples"},
        {"{}", "domain"},
        {"{\"params\":{}}", "domain"},
        {"{\"domain\":null,\"num_samples\":1}", "domain"},
        {"{\"domain\":\"\",\"num_samples\":1}", "domain"},
        {"{\"domain\":5,\"num_samples\":1}", "domain"},
        {"{\"domain\":[\"a\"],\"num_samples\":1}", "domain"},
        {"{\"domain\":\"d\",\"num_samples\":0}", "num_samples"},
        {"{\"domain\":\"d\",\"num_samples\":-1}", "num_samples"},
        {"{\"domain\":\"d\",\"num_samples\":1000001}", "num_samples"},
        {"{\"domain\":\"d\",\"num_samples\":1.5}", "num_samples"},
        {"{\"domain\":\"d\",\"num_samples\":\"100\"}", "num_samples"},
        {"{\"domain\":\"d\",\"num_samples\":true}", "num_samples"},
        {"{\"domain\":\"d\",\"num_samples\":1e300}", "num_samples"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"format\":\"csv\"}", "format"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"format\":\"JSONL\"}", "format"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"format\":1}", "format"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"seed\":-1}", "seed"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"seed\":9007199254740993}", "seed"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"seed\":1.5}", "seed"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"model\":\"\"}", "model"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"model\":{}}", "model"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"task\":\"poem\"}", "task"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"temperature\":2.5}", "temperature"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"generator\":\"file:///x\"}", "generator"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"seed_topics\":[\"\"]}", "seed_topics"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"seed_topics\":[\"a\"],"
         "\"dataset_uri\":\"s3://b/k\"}",
         "seed_topics"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"output_format\":\"csv\"}", "output_format"},
        {"{\"domain\":\"d\",\"num_samples\":1,\"near_duplicate_threshold\":0}",
         "near_duplicate_threshold"},
    };
    char json[600];
    char *s;

    bad_all("generate", refused, sizeof(refused) / sizeof(refused[0]));
    /* a model generator (issue 21): its params, temperature 0 (greedy) included */
    ok_free("generate", "{\"domain\":\"d\",\"num_samples\":5,\"generator\":\"gpt-4\","
                        "\"task\":\"chat\",\"temperature\":0,\"seed_topics\":[\"cells\"],"
                        "\"system_prompt\":\"be brief\",\"output_format\":\"parquet\","
                        "\"max_tokens\":64,\"near_duplicate_threshold\":0.7}");
    ok_free("distill", "{\"teacher_model\":\"gpt-4\",\"student_model\":\"llama-3-8b\","
                       "\"dataset_uri\":\"s3://b/k\",\"method\":\"logits\",\"holdout\":0.2,"
                       "\"epochs\":2,\"train_method\":\"full\",\"kd_alpha\":0.5,"
                       "\"temperature\":0}");
    bad("distill",
        "{\"teacher_model\":\"t\",\"student_model\":\"s\",\"dataset_uri\":"
        "\"s3://b/k\",\"method\":\"lora\"}",
        "method");

    /* domain: 128 characters is the limit (proto/openapi.yaml GenerateParams) */
    s = repeat('d', 128);
    snprintf(json, sizeof(json), "{\"domain\":\"%s\",\"num_samples\":1}", s);
    ok_free("generate", json);
    free(s);
    s = repeat('d', 129);
    snprintf(json, sizeof(json), "{\"domain\":\"%s\",\"num_samples\":1}", s);
    bad("generate", json, "domain");
    free(s);
}

/* ---- body shape and keys ------------------------------------------------------- */

static void test_unknown_and_duplicate_keys(void **state)
{
    /* a typo is reported before the missing required param */
    bad("generate", "{\"domain\":\"d\",\"num_sample\":1}", "num_sample");
    bad("generate", "{\"params\":{\"domain\":\"d\",\"num_samples\":1,\"foo\":1}}", "foo");
    /* flat params next to "params" are unknown fields */
    bad("generate", "{\"params\":{\"num_samples\":1},\"domain\":\"d\"}", "domain");
    /* params of another job type */
    bad("generate", "{" GEN ",\"epochs\":3}", "epochs");
    bad("train", "{\"params\":{\"model_id\":\"m\",\"dataset_uri\":\"s3://b/k\",\"domain\":\"x\"}}",
        "domain");
    /* fields the server owns */
    bad("generate", "{" GEN ",\"user_id\":\"usr_x\"}", "user_id");
    bad("generate", "{" GEN ",\"status\":\"succeeded\"}", "status");
    bad("generate", "{" GEN ",\"cost_usd\":\"0\"}", "cost_usd");
    bad("generate", "{" GEN ",\"job_id\":\"job_x\"}", "job_id");
    /* keys are case-sensitive */
    bad("generate", "{\"Domain\":\"d\",\"num_samples\":1}", "Domain");
    bad("generate", "{" GEN ",\"Priority\":1}", "Priority");
    /* duplicates are ambiguous */
    bad("generate", "{\"domain\":\"a\",\"domain\":\"b\",\"num_samples\":1}", "domain");
    bad("generate", "{\"params\":{\"domain\":\"a\",\"num_samples\":1,\"num_samples\":2}}",
        "num_samples");
    bad("generate", "{\"domain\":\"a\",\"num_samples\":1,\"priority\":1,\"priority\":2}",
        "priority");
    bad("generate", "{\"params\":{\"domain\":\"a\",\"num_samples\":1},\"params\":{}}", "params");
}

static void test_params_shape(void **state)
{
    static const struct refusal refused[] = {
        {"{\"params\":[1]}", "params"},
        {"{\"params\":null}", "params"},
        {"{\"params\":\"domain=x\"}", "params"},
        {"[1,2]", "body"},
    };

    bad_all("generate", refused, sizeof(refused) / sizeof(refused[0]));
    /* nested with common fields */
    ok_free("generate", "{\"params\":{\"domain\":\"d\",\"num_samples\":1},\"priority\":0,"
                        "\"max_attempts\":10,\"timeout_seconds\":604800,\"gpu_type\":\"a100\","
                        "\"gpu_count\":16,\"labels\":{\"zone\":\"eu\"},\"metadata\":{}}");
}

/* ---- audit, distill ------------------------------------------------------------- */

/* type's json is refused with a message holding needle. */
static void refusal_says(const char *type, const char *json, const char *needle)
{
    struct nf_json_err err = {{0}, {0}};
    cJSON *body = cJSON_Parse(json), *out = NULL;

    assert_non_null(body);
    assert_int_equal(gw_validate_job(type, body, &out, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("%s %s: message '%s' lacks '%s'", type, json, err.msg, needle);
    cJSON_Delete(body);
}

static void test_audit(void **state)
{
    static const struct refusal refused[] = {
        {"{}", "dataset_uri"},
        {"{\"checks\":[\"pii\"]}", "dataset_uri"},
        {"{\"dataset_uri\":\"http://h/x\"}", "dataset_uri"},
        {"{\"dataset_uri\":\"gs://b/x\"}", "dataset_uri"},
        {"{\"dataset_uri\":\"artifact://art_nope\"}", "dataset_uri"},
        {"{\"dataset_uri\":42}", "dataset_uri"},
        {"{\"dataset_uri\":\"s3://b/k\",\"checks\":\"pii\"}", "checks"},
        {"{\"dataset_uri\":\"s3://b/k\",\"checks\":[1]}", "checks"},
        {"{\"dataset_uri\":\"s3://b/k\",\"checks\":[\"\"]}", "checks"},
        {"{\"dataset_uri\":\"s3://b/k\",\"checks\":[null]}", "checks"},
        {"{\"dataset_uri\":\"s3://b/k\",\"checks\":[]}", "checks"},
        {"{\"dataset_uri\":\"s3://b/k\",\"checks\":[\"pii\",\"dedup\"]}", "checks"},
        {"{\"dataset_uri\":\"s3://b/k\",\"checks\":[\"judge\"]}", "judge"}, /* no model */
        {"{\"dataset_uri\":\"s3://b/k\",\"judge\":\"\"}", "judge"},
        {"{\"dataset_uri\":\"s3://b/k\",\"judge\":\"gpt-4\",\"judge_max_rows\":0}",
         "judge_max_rows"},
        {"{\"dataset_uri\":\"s3://b/k\",\"near_duplicate_threshold\":0}",
         "near_duplicate_threshold"},
        {"{\"dataset_uri\":\"s3://b/k\",\"near_duplicate_threshold\":1.01}",
         "near_duplicate_threshold"},
        {"{\"dataset_uri\":\"s3://b/k\",\"near_duplicate_threshold\":\"0.8\"}",
         "near_duplicate_threshold"},
        {"{\"dataset_uri\":\"s3://b/k\",\"max_seq_length\":0}", "max_seq_length"},
        {"{\"dataset_uri\":\"s3://b/k\",\"max_seq_length\":1.5}", "max_seq_length"},
        {"{\"dataset_uri\":\"s3://b/k\",\"fix\":\"yes\"}", "fix"},
        {"{\"dataset_uri\":\"s3://b/k\",\"tokenizer_model\":\"\"}", "tokenizer_model"},
        {"{\"dataset_uri\":\"s3://b/k\",\"tokenizer_model\":\"file:///x\"}", "tokenizer_model"},
        {"{\"dataset_uri\":\"s3://b/k\",\"tokenizer\":\"llama-3-8b\"}", "tokenizer"},
    };
    cJSON *req = ok("audit", "{\"dataset_uri\":\"s3://b/d.jsonl\",\"checks\":[\"pii\","
                             "\"near_duplicates\"],\"near_duplicate_threshold\":0.9,"
                             "\"tokenizer_model\":\"llama-3-8b\",\"max_seq_length\":256,"
                             "\"fix\":true}");

    assert_string_equal(cJSON_GetStringValue(param(req, "dataset_uri")), "s3://b/d.jsonl");
    assert_int_equal(cJSON_GetArraySize(param(req, "checks")), 2);
    assert_true(cJSON_GetNumberValue(param(req, "near_duplicate_threshold")) == 0.9);
    assert_string_equal(cJSON_GetStringValue(param(req, "tokenizer_model")), "llama-3-8b");
    assert_int_equal(cJSON_GetNumberValue(param(req, "max_seq_length")), 256);
    assert_true(cJSON_IsTrue(param(req, "fix")));
    cJSON_Delete(req);
    req = ok("audit", "{\"dataset_uri\":\"" ART "\"}");
    assert_null(param(req, "checks"));
    assert_null(param(req, "near_duplicate_threshold"));
    assert_null(param(req, "fix"));
    cJSON_Delete(req);
    ok_free("audit", "{\"dataset_uri\":\"s3://bkt/x.jsonl\",\"checks\":[\"duplicates\","
                     "\"near_duplicates\",\"pii\",\"language\",\"token_lengths\","
                     "\"training_format\",\"empty_fields\",\"length_stats\",\"schema\"],"
                     "\"near_duplicate_threshold\":1,\"tokenizer_model\":\"" ART "\"}");

    bad_all("audit", refused, sizeof(refused) / sizeof(refused[0]));
    refusal_says("audit", "{\"dataset_uri\":\"s3://b/k\",\"checks\":[\"pii\",\"dedup\"]}",
                 "unknown check \"dedup\"");
    refusal_says("audit", "{\"dataset_uri\":\"s3://b/k\",\"checks\":[\"judge\"]}",
                 "the judge check needs a model");
    ok_free("audit", "{\"dataset_uri\":\"s3://b/k\",\"checks\":[\"pii\",\"judge\"],"
                     "\"judge\":\"gpt-4\",\"judge_max_rows\":50}");
}

static void test_audit_checks_limit(void **state)
{
    char json[1024];
    size_t len;
    int i;

    for (int n = 32; n <= 33; n++) {
        len = (size_t)snprintf(json, sizeof(json), "{\"dataset_uri\":\"s3://b/k\",\"checks\":[");
        for (i = 0; i < n; i++)
            len += (size_t)snprintf(json + len, sizeof(json) - len, "%s\"pii\"", i ? "," : "");
        snprintf(json + len, sizeof(json) - len, "]}");
        if (n == 32)
            ok_free("audit", json);
        else
            bad("audit", json, "checks");
    }
}

static void test_distill(void **state)
{
    static const struct refusal refused[] = {
        {"{\"student_model\":\"s\",\"dataset_uri\":\"s3://b/k\"}", "teacher_model"},
        {"{\"teacher_model\":\"t\",\"dataset_uri\":\"s3://b/k\"}", "student_model"},
        {"{\"teacher_model\":\"t\",\"student_model\":\"s\"}", "dataset_uri"},
        {"{\"teacher_model\":\"t\",\"student_model\":\"s\",\"dataset_uri\":\"s3://b/k\","
         "\"num_samples\":0}",
         "num_samples"},
        {"{\"teacher_model\":\"t\",\"student_model\":\"s\",\"dataset_uri\":\"s3://b/k\","
         "\"num_samples\":2000000}",
         "num_samples"},
        {"{\"teacher_model\":1,\"student_model\":\"s\",\"dataset_uri\":\"s3://b/k\"}",
         "teacher_model"},
    };
    cJSON *req = ok("distill", "{\"teacher_model\":\"big\",\"student_model\":\"small\","
                               "\"dataset_uri\":\"s3://b/d\",\"num_samples\":500}");

    assert_int_equal((int)cJSON_GetNumberValue(param(req, "num_samples")), 500);
    cJSON_Delete(req);
    req = ok("distill", "{\"teacher_model\":\"big\",\"student_model\":\"small\","
                        "\"dataset_uri\":\"s3://b/d\"}");
    assert_null(param(req, "num_samples")); /* optional, no default */
    cJSON_Delete(req);

    bad_all("distill", refused, sizeof(refused) / sizeof(refused[0]));
}

/* ---- train, evaluate, deploy ---------------------------------------------------- */

static void test_train(void **state)
{
    static const struct refusal refused[] = {
        {"{\"dataset_uri\":\"s3://b/k\"}", "model_id"},
        {"{\"model_id\":\"m\"}", "dataset_uri"},
        {"{" TRAIN ",\"epochs\":0}", "epochs"},
        {"{" TRAIN ",\"epochs\":101}", "epochs"},
        {"{" TRAIN ",\"epochs\":2.5}", "epochs"},
        {"{" TRAIN ",\"learning_rate\":0}", "learning_rate"},
        {"{" TRAIN ",\"learning_rate\":-0.1}", "learning_rate"},
        {"{" TRAIN ",\"learning_rate\":1.5}", "learning_rate"},
        {"{" TRAIN ",\"learning_rate\":\"0.1\"}", "learning_rate"},
        {"{" TRAIN ",\"lora\":\"yes\"}", "lora"},
        {"{" TRAIN ",\"lora\":1}", "lora"},
        {"{" TRAIN ",\"method\":\"qlora\"}", "method"},
        {"{" TRAIN ",\"method\":\"full\",\"lora\":true}", "lora"},
        {"{" TRAIN ",\"lora_r\":0}", "lora_r"},
        {"{" TRAIN ",\"lora_alpha\":0}", "lora_alpha"},
        {"{" TRAIN ",\"lora_dropout\":1}", "lora_dropout"},
        {"{" TRAIN ",\"lora_dropout\":-0.1}", "lora_dropout"},
        {"{" TRAIN ",\"warmup_ratio\":1.5}", "warmup_ratio"},
        {"{" TRAIN ",\"learning_rate_multiplier\":0}", "learning_rate_multiplier"},
        {"{" TRAIN ",\"learning_rate_multiplier\":101}", "learning_rate_multiplier"},
        {"{" TRAIN ",\"batch_size\":0}", "batch_size"},
        {"{" TRAIN ",\"max_seq_length\":4}", "max_seq_length"},
        {"{" TRAIN ",\"seed\":-1}", "seed"},
        {"{" TRAIN ",\"train_on_inputs\":\"no\"}", "train_on_inputs"},
        {"{" TRAIN ",\"metric_every\":0}", "metric_every"},
        {"{" TRAIN ",\"validation_split\":0.2,\"validation_uri\":\"s3://b/v\"}",
         "validation_split"},
        {"{" TRAIN ",\"validation_uri\":\"file:///etc/passwd\"}", "validation_uri"},
        /* early stopping needs validation data, given */
        {"{" TRAIN ",\"early_stopping_patience\":2}", "early_stopping_patience"},
        {"{" TRAIN ",\"early_stopping_patience\":2,\"validation_split\":0}",
         "early_stopping_patience"},
        {"{" TRAIN ",\"early_stopping_patience\":0,\"validation_split\":0.2}",
         "early_stopping_patience"},
        {"{" TRAIN ",\"early_stopping_patience\":1.5,\"validation_split\":0.2}",
         "early_stopping_patience"},
        {"{" TRAIN ",\"early_stopping_patience\":\"2\",\"validation_split\":0.2}",
         "early_stopping_patience"},
        {"{" TRAIN ",\"output_model\":\"\"}", "output_model"},
        {"{" TRAIN ",\"output_model\":\"My-Model\"}", "output_model"},
        {"{" TRAIN ",\"output_model\":\"a/b\"}", "output_model"},
        {"{" TRAIN ",\"output_model\":7}", "output_model"},
        {"{" TRAIN ",\"from_checkpoint\":\"s3://b/ckpt.tar\"}", "from_checkpoint"},
        {"{" TRAIN ",\"from_checkpoint\":\"file:///etc/passwd\"}", "from_checkpoint"},
        {"{" TRAIN ",\"from_checkpoint\":3}", "from_checkpoint"},
        {"{" TRAIN
         ",\"output_model\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
         "output_model"}, /* 65 */
    };
    cJSON *req = ok("train", "{\"model_id\":\"m\",\"dataset_uri\":\"" ART "\"}");

    assert_int_equal((int)cJSON_GetNumberValue(param(req, "epochs")), 3); /* default */
    assert_null(param(req, "learning_rate"));
    assert_null(param(req, "lora"));
    cJSON_Delete(req);
    req = ok("train", "{" TRAIN ",\"epochs\":100,\"learning_rate\":0.0002,\"lora\":true}");
    assert_int_equal((int)cJSON_GetNumberValue(param(req, "epochs")), 100);
    assert_true(cJSON_GetNumberValue(param(req, "learning_rate")) > 0.00019);
    assert_true(cJSON_IsTrue(param(req, "lora")));
    cJSON_Delete(req);
    ok_free("train", "{" TRAIN ",\"epochs\":1,\"learning_rate\":1,\"lora\":false}");
    /* the SFT knobs of the PyTorch trainer */
    req = ok("train", "{" TRAIN ",\"method\":\"lora\",\"lora_r\":16,\"lora_alpha\":32,"
                      "\"lora_dropout\":0,\"batch_size\":4,\"warmup_ratio\":0.1,"
                      "\"learning_rate_multiplier\":2.5,\"max_seq_length\":256,\"seed\":7,"
                      "\"train_on_inputs\":true,\"validation_split\":0.2,\"merge\":true,"
                      "\"metric_every\":5}");
    assert_int_equal((int)cJSON_GetNumberValue(param(req, "lora_r")), 16);
    assert_true(cJSON_GetNumberValue(param(req, "lora_dropout")) == 0);
    assert_true(cJSON_GetNumberValue(param(req, "learning_rate_multiplier")) == 2.5);
    assert_string_equal(cJSON_GetStringValue(param(req, "method")), "lora");
    assert_true(cJSON_IsTrue(param(req, "merge")));
    cJSON_Delete(req);
    ok_free("train", "{" TRAIN ",\"validation_uri\":\"s3://b/v.jsonl\",\"method\":\"full\"}");
    req = ok("train", "{" TRAIN ",\"early_stopping_patience\":2,\"validation_split\":0.2}");
    assert_int_equal((int)cJSON_GetNumberValue(param(req, "early_stopping_patience")), 2);
    cJSON_Delete(req);
    ok_free("train",
            "{" TRAIN ",\"early_stopping_patience\":1,\"validation_uri\":\"s3://b/v.jsonl\"}");
    req = ok("train", "{" TRAIN ",\"output_model\":\"my-model_v1.2\"}");
    assert_string_equal(cJSON_GetStringValue(param(req, "output_model")), "my-model_v1.2");
    cJSON_Delete(req);
    assert_true(gw_model_name_valid("Qwen2-0.5B", true));
    assert_false(gw_model_name_valid("Qwen2-0.5B", false));
    assert_false(gw_model_name_valid("a b", true));
    assert_false(gw_model_name_valid(NULL, true));

    bad_all("train", refused, sizeof(refused) / sizeof(refused[0]));
}

static void test_evaluate(void **state)
{
    static const struct refusal refused[] = {
        {"{\"benchmark\":\"mmlu\"}", "model_id"},
        {"{\"model_id\":\"m\"}", "benchmark"},
        {"{\"model_id\":\"m\",\"benchmark\":\"squad\"}", "benchmark"},
        {"{\"model_id\":\"m\",\"benchmark\":\"MMLU\"}", "benchmark"},
        {"{\"model_id\":\"m\",\"benchmark\":[\"mmlu\"]}", "benchmark"},
        {"{\"model_id\":\"m\",\"benchmark\":\"custom\"}", "dataset_uri"},
        {"{\"model_id\":\"m\",\"benchmark\":\"custom\",\"dataset_uri\":\"x\"}", "dataset_uri"},
        {"{\"model_id\":\"m\",\"benchmark\":\"mmlu\",\"dataset_uri\":\"s3://b/k\"}", "dataset_uri"},
        {"{\"model_id\":\"m\",\"benchmark\":\"mmlu\",\"compare_to\":\"/etc/passwd\"}",
         "compare_to"},
        {"{\"model_id\":\"m\",\"benchmark\":\"mmlu\",\"compare_to\":\"s3://b/k\"}", "compare_to"},
        {"{\"model_id\":\"m\",\"benchmark\":\"mmlu\",\"compare_to\":7}", "compare_to"},
    };
    cJSON *req;

    ok_free("evaluate", "{\"model_id\":\"m\",\"benchmark\":\"mmlu\"}");
    ok_free("evaluate", "{\"model_id\":\"m\",\"benchmark\":\"gsm8k\"}");
    ok_free("evaluate", "{\"model_id\":\"m\",\"benchmark\":\"hellaswag\"}");
    ok_free("evaluate", "{\"model_id\":\"m\",\"benchmark\":\"arc_easy\",\"compare_to\":\"base\"}");
    ok_free("evaluate", "{\"model_id\":\"m\",\"benchmark\":\"mmlu\",\"compare_to\":"
                        "\"artifact://art_01ARYZ6S41041061050R3GG28A\"}");
    req = ok("evaluate",
             "{\"model_id\":\"m\",\"benchmark\":\"custom\",\"dataset_uri\":\"s3://b/e\"}");
    assert_string_equal(cJSON_GetStringValue(param(req, "dataset_uri")), "s3://b/e");
    cJSON_Delete(req);

    bad_all("evaluate", refused, sizeof(refused) / sizeof(refused[0]));
}

static void test_deploy(void **state)
{
    static const struct refusal refused[] = {
        {"{}", "model_id"},
        {"{\"region\":\"us-east-1\"}", "model_id"},
        {"{\"model_id\":\"m\",\"replicas\":0}", "replicas"},
        {"{\"model_id\":\"m\",\"replicas\":65}", "replicas"},
        {"{\"model_id\":\"m\",\"replicas\":\"2\"}", "replicas"},
        {"{\"model_id\":\"m\",\"region\":\"\"}", "region"},
        {"{\"model_id\":\"m\",\"region\":\"US-EAST-1\"}", "region"},
        {"{\"model_id\":\"m\",\"region\":\"us east\"}", "region"},
        {"{\"model_id\":\"m\",\"region\":\"-us\"}", "region"},
        {"{\"model_id\":\"m\",\"region\":5}", "region"},
        {"{\"model_id\":\"m\",\"region\":\"a-very-long-region-name-of-33-chars\"}", "region"},
        /* the region picks the workers: a labels.region that says otherwise is refused */
        {"{\"model_id\":\"m\",\"region\":\"eu-west-2\",\"labels\":{\"region\":\"us-east-1\"}}",
         "region"},
        {"{\"model_id\":\"m\",\"labels\":{\"region\":\"eu-west-2\"}}", "region"},
    };
    cJSON *req = ok("deploy", "{\"model_id\":\"m\"}");

    assert_string_equal(cJSON_GetStringValue(param(req, "region")), "us-east-1");
    assert_string_equal(nf_json_str(get(req, "labels"), "region"), "us-east-1");
    cJSON_Delete(req);
    req = ok("deploy", "{\"model_id\":\"m\",\"region\":\"eu-west-2\",\"labels\":{\"pool\":\"a\"}}");
    assert_string_equal(nf_json_str(get(req, "labels"), "region"), "eu-west-2");
    assert_string_equal(nf_json_str(get(req, "labels"), "pool"), "a");
    assert_int_equal((int)cJSON_GetNumberValue(param(req, "replicas")), 1);
    cJSON_Delete(req);
    req = ok("deploy", "{\"model_id\":\"m\",\"region\":\"eu-west-2\",\"replicas\":64}");
    assert_string_equal(cJSON_GetStringValue(param(req, "region")), "eu-west-2");
    assert_int_equal((int)cJSON_GetNumberValue(param(req, "replicas")), 64);
    cJSON_Delete(req);

    bad_all("deploy", refused, sizeof(refused) / sizeof(refused[0]));
}

/* ---- common fields -------------------------------------------------------------- */

static void test_common_bounds(void **state)
{
    cJSON *req;

    ok_free("generate", "{" GEN ",\"priority\":0}");
    ok_free("generate", "{" GEN ",\"priority\":9}");
    bad("generate", "{" GEN ",\"priority\":10}", "priority");
    bad("generate", "{" GEN ",\"priority\":-1}", "priority");
    bad("generate", "{" GEN ",\"priority\":\"5\"}", "priority");
    bad("generate", "{" GEN ",\"priority\":4.5}", "priority");

    ok_free("generate", "{" GEN ",\"max_attempts\":1}");
    ok_free("generate", "{" GEN ",\"max_attempts\":10}");
    bad("generate", "{" GEN ",\"max_attempts\":0}", "max_attempts");
    bad("generate", "{" GEN ",\"max_attempts\":11}", "max_attempts");

    ok_free("generate", "{" GEN ",\"timeout_seconds\":1}");
    ok_free("generate", "{" GEN ",\"timeout_seconds\":604800}");
    bad("generate", "{" GEN ",\"timeout_seconds\":0}", "timeout_seconds");
    bad("generate", "{" GEN ",\"timeout_seconds\":604801}", "timeout_seconds");

    req = ok("generate", "{" GEN ",\"gpu_type\":\"a100\",\"gpu_count\":0}");
    assert_string_equal(cJSON_GetStringValue(get(req, "gpu_type")), "a100");
    assert_int_equal((int)cJSON_GetNumberValue(get(req, "gpu_count")), 0);
    cJSON_Delete(req);
    req = ok("generate", "{" GEN ",\"gpu_type\":null}");
    assert_true(cJSON_IsNull(get(req, "gpu_type")));
    cJSON_Delete(req);
    ok_free("generate", "{" GEN ",\"gpu_count\":16}");
    bad("generate", "{" GEN ",\"gpu_type\":\"\"}", "gpu_type");
    bad("generate", "{" GEN ",\"gpu_type\":1}", "gpu_type");
    bad("generate", "{" GEN ",\"gpu_count\":17}", "gpu_count");
    bad("generate", "{" GEN ",\"gpu_count\":-1}", "gpu_count");
}

/* {"<field>":{"k0":"v",...}} with n entries, keys of klen and values of vlen characters. */
static char *map_json(const char *field, int n, size_t klen, size_t vlen)
{
    size_t cap = 256 + (size_t)n * (klen + vlen + 16), len;
    char *s = malloc(cap), *k = repeat('k', klen), *v = repeat('v', vlen);
    int i;

    assert_non_null(s);
    len = (size_t)snprintf(s, cap, "{" GEN ",\"%s\":{", field);
    for (i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s\"%.*s%02d\":\"%s\"", i ? "," : "",
                                (int)(klen - 2), k, i, v);
    snprintf(s + len, cap - len, "}}");
    free(k);
    free(v);
    return s;
}

static void check_map(const char *field)
{
    char *s;
    cJSON *req;

    s = map_json(field, 16, 64, 512);
    req = ok("generate", s);
    assert_int_equal(cJSON_GetArraySize(get(req, field)), 16);
    cJSON_Delete(req);
    free(s);
    s = map_json(field, 17, 8, 8);
    bad("generate", s, field);
    free(s);
    s = map_json(field, 1, 65, 8);
    bad("generate", s, field);
    free(s);
    s = map_json(field, 1, 8, 513);
    bad("generate", s, field);
    free(s);
}

static void test_metadata_and_labels(void **state)
{
    static const struct refusal refused[] = {
        {"{" GEN ",\"metadata\":\"x\"}", "metadata"},
        {"{" GEN ",\"metadata\":[]}", "metadata"},
        {"{" GEN ",\"metadata\":{\"n\":1}}", "metadata"},
        {"{" GEN ",\"metadata\":{\"n\":null}}", "metadata"},
        {"{" GEN ",\"metadata\":{\"n\":{\"x\":\"y\"}}}", "metadata"},
        {"{" GEN ",\"metadata\":{\"\":\"v\"}}", "metadata"},
        {"{" GEN ",\"metadata\":{\"a\":\"1\",\"a\":\"2\"}}", "metadata"},
        {"{" GEN ",\"labels\":{\"gpu\":true}}", "labels"},
        {"{" GEN ",\"labels\":5}", "labels"},
    };
    cJSON *req = ok("generate", "{" GEN ",\"metadata\":{\"team\":\"bio\",\"run\":\"7\"},"
                                "\"labels\":{\"zone\":\"eu\"}}");

    assert_string_equal(cJSON_GetStringValue(get(get(req, "metadata"), "team")), "bio");
    assert_string_equal(cJSON_GetStringValue(get(get(req, "labels"), "zone")), "eu");
    cJSON_Delete(req);
    check_map("metadata");
    check_map("labels");
    bad_all("generate", refused, sizeof(refused) / sizeof(refused[0]));
    /* null means absent: the default empty object */
    req = ok("generate", "{" GEN ",\"metadata\":null,\"labels\":null}");
    assert_int_equal(cJSON_GetArraySize(get(req, "metadata")), 0);
    cJSON_Delete(req);
}

static void test_output_is_a_copy(void **state)
{
    cJSON *body = cJSON_Parse("{\"domain\":\"d\",\"num_samples\":1,\"metadata\":{\"a\":\"b\"}}");
    struct nf_json_err err;
    cJSON *out = NULL;

    assert_int_equal(gw_validate_job("generate", body, &out, &err), 0);
    cJSON_Delete(body); /* out must not point into body (ASan would catch it) */
    assert_string_equal(cJSON_GetStringValue(param(out, "domain")), "d");
    assert_string_equal(cJSON_GetStringValue(get(get(out, "metadata"), "a")), "b");
    cJSON_Delete(out);
}

int main(void)
{
    return NF_TEST_RUN(
        NULL, NULL, test_job_types, test_uris, test_model_refs, test_generate_flat_defaults,
        test_flat_and_nested_agree, test_generate_all_params, test_generate_failures,
        test_unknown_and_duplicate_keys, test_params_shape, test_audit, test_audit_checks_limit,
        test_distill, test_train, test_evaluate, test_deploy, test_common_bounds,
        test_metadata_and_labels, test_output_is_a_copy);
}
