/*
 * models.c: the operator's base model catalogue (parse, find) and the model names an
 * account may use; the shipped deploy/models.json must load.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <string.h>

#include "nf_test.h"
#include "sched.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

static int parse(const char *text, cJSON **out, char *err, size_t n)
{
    err[0] = '\0';
    return sched_catalogue_parse(text, strlen(text), out, err, n);
}

static void test_names(void **state)
{
    (void)state;
    assert_true(sched_model_name_valid("my-model-v1"));
    assert_true(sched_model_name_valid("llama-3.1_8b"));
    assert_false(sched_model_name_valid(""));
    assert_false(sched_model_name_valid(NULL));
    assert_false(sched_model_name_valid("My-Model"));
    assert_false(sched_model_name_valid("a/b"));
    assert_false(sched_model_name_valid("a b"));
    assert_true(sched_model_name_valid(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 64 */
    assert_false(sched_model_name_valid(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 65 */
    assert_true(sched_model_lookup_valid("Qwen2-0.5B"));
    assert_false(sched_model_lookup_valid("../etc"));
}

static void test_parse(void **state)
{
    cJSON *cat = NULL;
    const cJSON *m;
    char err[256];

    (void)state;
    assert_int_equal(parse("{\"models\":{\"llama-3-8b\":{\"architecture\":\"llama\","
                           "\"parameters\":8030261248,\"source\":\"hf:meta-llama/Meta-Llama-3-8B\","
                           "\"stand_in\":true,\"owned_by\":\"meta-llama\",\"created\":5},"
                           "\"b\":{\"architecture\":\"bigram\",\"parameters\":null,"
                           "\"source\":\"builtin:bigram\",\"owned_by\":\"x\"}}}",
                           &cat, err, sizeof(err)),
                     0);
    assert_int_equal(cJSON_GetArraySize(cat), 2);
    m = sched_catalogue_find(cat, "llama-3-8b");
    assert_non_null(m);
    assert_string_equal(nf_json_str(m, "object"), "model");
    assert_string_equal(nf_json_str(m, "kind"), "base");
    assert_string_equal(nf_json_str(m, "owned_by"), "meta-llama");
    assert_int_equal(nf_json_int(m, "parameters", 0), 8030261248LL);
    assert_int_equal(nf_json_int(m, "created", 0), 5);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "stand_in")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(m, "artifact_id")));
    m = sched_catalogue_find(cat, "b");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(m, "parameters")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(m, "stand_in")));
    assert_null(sched_catalogue_find(cat, "c"));
    assert_null(sched_catalogue_find(cat, NULL));
    cJSON_Delete(cat);
}

static void test_parse_refuses(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[]", "not a JSON object"},
        {"{\"models\":[]}", "\"models\""},
        {"{\"models\":{\"a b\":{}}}", "its name"},
        {"{\"models\":{\"a\":{\"source\":\"s3://b/p/\",\"owned_by\":\"o\"}}}", "architecture"},
        {"{\"models\":{\"a\":{\"architecture\":\"x\",\"source\":\"file:///"
         "w\",\"owned_by\":\"o\"}}}",
         "source"},
        {"{\"models\":{\"a\":{\"architecture\":\"x\",\"source\":\"/w\",\"owned_by\":\"o\","
         "\"parameters\":-1}}}",
         "parameters"},
        {"{\"models\":{\"a\":{\"architecture\":\"x\",\"source\":\"/w\",\"owned_by\":\"o\","
         "\"stand_in\":\"yes\"}}}",
         "stand_in"},
        {"{\"models\":{\"a\":{\"architecture\":\"x\",\"source\":\"/w\"}}}", "owned_by"},
        {"{\"models\":{\"a\":{\"architecture\":\"x\",\"source\":\"/w\",\"owned_by\":\"o\"},"
         "\"a\":{\"architecture\":\"x\",\"source\":\"/w\",\"owned_by\":\"o\"}}}",
         "given twice"},
    };
    cJSON *cat = NULL;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(cases[i].text, &cat, err, sizeof(err)), -1);
        assert_non_null(strstr(err, cases[i].want));
        assert_null(cat);
    }
}

/* The shipped catalogue loads and has the seed's names. */
static void test_shipped(void **state)
{
    cJSON *cat = NULL;
    char err[256] = "";

    (void)state;
    assert_int_equal(
        sched_catalogue_load(NF_SOURCE_DIR "/deploy/models.json", &cat, err, sizeof(err)), 0);
    assert_non_null(sched_catalogue_find(cat, "llama-3-8b"));
    assert_non_null(sched_catalogue_find(cat, "mistral-7b"));
    assert_non_null(sched_catalogue_find(cat, "tiny-bigram"));
    cJSON_Delete(cat);
    assert_int_equal(sched_catalogue_load("/nonexistent/models.json", &cat, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/models.json"));
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_names, test_parse, test_parse_refuses, test_shipped);
}
