/*
 * storecache.c, the pure parts: which store prefixes a dispatch may name (our bucket,
 * outside tenants/, plain segments), what a job needs (base models with an s3:// source,
 * an evaluate job's benchmark) and where the handler's JSON says they will be.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "nf_json.h"
#include "wk.h"

static void test_prefix(void **state)
{
    char p[256];
    (void)state;
    assert_int_equal(
        wk_store_prefix("s3://nexa-forge/models/base/llama-3-8b/", "nexa-forge", p, sizeof(p)), 0);
    assert_string_equal(p, "models/base/llama-3-8b/");
    assert_int_equal(wk_store_prefix("s3://nexa-forge/weights/x", "nexa-forge", p, sizeof(p)), 0);
    assert_string_equal(p, "weights/x/");
    /* another bucket, an account's data, a path that climbs, nothing at all */
    assert_int_equal(wk_store_prefix("s3://other/models/x/", "nexa-forge", p, sizeof(p)), -1);
    assert_int_equal(wk_store_prefix("s3://nexa-forgex/m/", "nexa-forge", p, sizeof(p)), -1);
    assert_int_equal(
        wk_store_prefix("s3://nexa-forge/tenants/usr_1/files/m/", "nexa-forge", p, sizeof(p)), -1);
    assert_int_equal(wk_store_prefix("s3://nexa-forge/tenants/", "nexa-forge", p, sizeof(p)), -1);
    assert_int_equal(
        wk_store_prefix("s3://nexa-forge/models/../tenants/u/", "nexa-forge", p, sizeof(p)), -1);
    assert_int_equal(wk_store_prefix("s3://nexa-forge/a//b/", "nexa-forge", p, sizeof(p)), -1);
    assert_int_equal(wk_store_prefix("s3://nexa-forge/", "nexa-forge", p, sizeof(p)), -1);
    assert_int_equal(wk_store_prefix("builtin:stand-in/x", "nexa-forge", p, sizeof(p)), -1);
    assert_int_equal(wk_store_prefix("s3://nexa-forge/a b/", "nexa-forge", p, sizeof(p)), -1);
}

static cJSON *doc_of(const char *text)
{
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    return doc;
}

static void test_parse_and_json(void **state)
{
    struct wk_store_items s = {0};
    char err[512];
    (void)state;
    cJSON *doc = doc_of(
        "{\"job_type\": \"evaluate\", \"params\": {\"model_id\": \"llama-3-8b\", \"benchmark\": "
        "\"mmlu\", \"compare_to\": \"mine\"}, \"models\": {\"model_id\": {\"id\": "
        "\"llama-3-8b\", \"kind\": \"base\", \"source\": "
        "\"s3://nexa-forge/models/base/llama-3-8b/\"}, \"compare_to\": {\"kind\": "
        "\"fine_tuned\", \"source\": \"artifact://art_1\"}}}");
    assert_int_equal(wk_store_parse(doc, "nexa-forge", "/c", &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.v[0].kind, WK_STORE_MODEL);
    assert_string_equal(s.v[0].param, "model_id");
    assert_string_equal(s.v[0].prefix, "models/base/llama-3-8b/");
    assert_string_equal(s.v[0].dir, "/c/nexa-forge/models/base/llama-3-8b");
    assert_int_equal(s.v[1].kind, WK_STORE_BENCHMARK);
    assert_string_equal(s.v[1].param, "mmlu");
    assert_string_equal(s.v[1].prefix, "benchmarks/mmlu/");
    assert_string_equal(s.v[1].uri, "s3://nexa-forge/benchmarks/mmlu/");

    wk_store_job_json(doc, &s);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(doc, "models"), "model_id");
    assert_string_equal(nf_json_str(m, "local_dir"), "/c/nexa-forge/models/base/llama-3-8b");
    m = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "models"),
                                         "compare_to");
    assert_null(nf_json_str(m, "local_dir"));
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(doc, "benchmark_data");
    assert_string_equal(nf_json_str(b, "name"), "mmlu");
    assert_string_equal(nf_json_str(b, "dir"), "/c/nexa-forge/benchmarks/mmlu");
    wk_store_items_free(&s);
    cJSON_Delete(doc);

    /* builtin sources, custom benchmarks and other job types need nothing */
    doc = doc_of("{\"job_type\": \"evaluate\", \"params\": {\"benchmark\": \"custom\"}, "
                 "\"models\": {\"model_id\": {\"kind\": \"base\", \"source\": "
                 "\"builtin:stand-in/llama-3-8b\"}}}");
    assert_int_equal(wk_store_parse(doc, "nexa-forge", "/c", &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 0);
    wk_store_items_free(&s);
    cJSON_Delete(doc);
    doc = doc_of("{\"job_type\": \"train\", \"params\": {\"benchmark\": \"mmlu\"}}");
    assert_int_equal(wk_store_parse(doc, "nexa-forge", "/c", &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 0);
    cJSON_Delete(doc);

    /* a base model pointing into an account's data is refused, naming the model */
    doc = doc_of("{\"job_type\": \"train\", \"models\": {\"model_id\": {\"kind\": \"base\", "
                 "\"source\": \"s3://nexa-forge/tenants/usr_x/files/m/\"}}}");
    s.n = 99; /* untouched on error */
    assert_int_equal(wk_store_parse(doc, "nexa-forge", "/c", &s, err, sizeof(err)), -1);
    assert_int_equal(s.n, 99);
    assert_non_null(strstr(err, "model_id"));
    cJSON_Delete(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_parse_and_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
