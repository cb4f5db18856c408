/*
 * inputs.c: the dispatch's inputs are hostile until checked - keys outside the job owner's
 * prefix, names that are paths, odd params are refused - and the handler's job JSON maps
 * each param to its local path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_test.h"
#include "wk.h"

/* A dispatch for user usr_a with the given inputs array text. */
static cJSON *dispatch(const char *inputs)
{
    char text[8192];
    snprintf(text, sizeof(text),
             "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"user_id\":\"usr_a\","
             "\"job_type\":\"audit\",\"attempt\":1,\"params\":{\"dataset_uri\":\"s3://b/d.csv\"},"
             "\"inputs\":%s}",
             inputs);
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    return doc;
}

static void test_names(void **state)
{
    static const char *const good[] = {"data.parquet", "a",     ".hidden",    "x..y",
                                       "UP_low-1.2~",  "a=b,c", "my data.csv"};
    static const char *const bad[] = {"",      ".",           "..",   "a/b",  "/etc",
                                      "tab\t", "back\\slash", "nl\n", "\x7f", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!wk_file_name_valid(good[i]))
            fail_msg("refused \"%s\"", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wk_file_name_valid(bad[i]))
            fail_msg("accepted \"%s\"", bad[i]);
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_false(wk_file_name_valid(longname));
    longname[WK_NAME_MAX] = '\0';
    assert_true(wk_file_name_valid(longname));
    assert_false(wk_file_name_valid(NULL));

    assert_true(wk_param_valid("dataset_uri"));
    assert_true(wk_param_valid("model_id"));
    assert_false(wk_param_valid(""));
    assert_false(wk_param_valid("Dataset"));
    assert_false(wk_param_valid("1st"));
    assert_false(wk_param_valid("../x"));
    assert_false(wk_param_valid("a-b"));

    assert_true(wk_user_id_valid("usr_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"));
    assert_false(wk_user_id_valid(""));
    assert_false(wk_user_id_valid("usr/x"));
    assert_false(wk_user_id_valid(".."));
    assert_false(wk_user_id_valid(NULL));
}

static void test_keys(void **state)
{
    assert_true(wk_tenant_key_valid("tenants/usr_a/files/b/d.csv", "usr_a"));
    assert_true(wk_tenant_key_valid("tenants/usr_a/jobs/job_1/1/samples.jsonl", "usr_a"));
    static const char *const bad[] = {
        "tenants/usr_b/files/b/d.csv",       /* another tenant */
        "tenants/usr_ab/files/b/d.csv",      /* a tenant whose id starts with ours */
        "tenants/usr_a",                     /* the prefix itself */
        "tenants/usr_a/",                    /* nothing after it */
        "tenants/usr_a/files/../../usr_b/x", /* climbs out */
        "tenants/usr_a/./x",
        "tenants/usr_a//x", /* empty segment */
        "tenants/usr_a/x/",
        "/tenants/usr_a/x",
        "tenants/usr_a/a b",
        "tenants/usr_a/a\\b",
        "tenants/usr_a/\x01",
        "files/usr_a/x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wk_tenant_key_valid(bad[i], "usr_a"))
            fail_msg("accepted \"%s\"", bad[i]);
    assert_false(wk_tenant_key_valid("tenants//x", ""));
    assert_false(wk_tenant_key_valid(NULL, "usr_a"));
    /* at most NF_S3_KEY_MAX bytes */
    char key[NF_S3_KEY_MAX + 16];
    int n = snprintf(key, sizeof(key), "tenants/usr_a/");
    while (n < NF_S3_KEY_MAX) {
        key[n] = n % 100 == 0 ? '/' : 'k';
        key[++n] = '\0';
    }
    assert_true(wk_tenant_key_valid(key, "usr_a"));
    key[n++] = 'k';
    key[n] = '\0';
    assert_false(wk_tenant_key_valid(key, "usr_a"));
}

static void test_parse(void **state)
{
    struct wk_inputs in = {0};
    char err[256];
    cJSON *doc = dispatch("[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/d.csv\","
                          "\"object_key\":\"tenants/usr_a/files/b/d.csv\",\"name\":\"d.csv\","
                          "\"bytes\":1234},"
                          "{\"param\":\"model_id\",\"uri\":\"artifact://art_1\","
                          "\"object_key\":\"tenants/usr_a/jobs/job_1/1/model.json\","
                          "\"name\":\"model.json\"}]");
    assert_int_equal(wk_inputs_parse(doc, &in, err, sizeof(err)), 0);
    assert_int_equal(in.n, 2);
    assert_string_equal(in.v[0].param, "dataset_uri");
    assert_string_equal(in.v[0].name, "d.csv");
    assert_string_equal(in.v[0].object_key, "tenants/usr_a/files/b/d.csv");
    assert_string_equal(in.v[0].uri, "s3://b/d.csv");
    assert_int_equal(in.v[0].bytes, 1234);
    assert_int_equal(in.v[1].bytes, -1);

    /* the handler's JSON: the array becomes {param: path}, the rest unchanged */
    cJSON *h = wk_inputs_job_json(doc, &in, "/w/job_x-1/inputs");
    const cJSON *map = cJSON_GetObjectItem(h, "inputs");
    assert_true(cJSON_IsObject(map));
    assert_int_equal(cJSON_GetArraySize(map), 2);
    assert_string_equal(nf_json_str(map, "dataset_uri"), "/w/job_x-1/inputs/dataset_uri/d.csv");
    assert_string_equal(nf_json_str(map, "model_id"), "/w/job_x-1/inputs/model_id/model.json");
    assert_string_equal(nf_json_str(cJSON_GetObjectItem(h, "params"), "dataset_uri"),
                        "s3://b/d.csv");
    assert_string_equal(nf_json_str(h, "user_id"), "usr_a");
    char *text = cJSON_PrintUnformatted(h);
    assert_null(strstr(text, "tenants/")); /* nothing of the store's keys */
    free(text);
    cJSON_Delete(h);
    /* doc itself is untouched */
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(doc, "inputs")));
    wk_inputs_free(&in);
    cJSON_Delete(doc);

    /* none: absent, null or [] -> no inputs, an empty object for the handler */
    static const char *const none[] = {"null", "[]"};
    for (size_t i = 0; i < 2; i++) {
        doc = dispatch(none[i]);
        assert_int_equal(wk_inputs_parse(doc, &in, err, sizeof(err)), 0);
        assert_int_equal(in.n, 0);
        h = wk_inputs_job_json(doc, &in, "/w/x/inputs");
        assert_true(cJSON_IsObject(cJSON_GetObjectItem(h, "inputs")));
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(h, "inputs")), 0);
        cJSON_Delete(h);
        wk_inputs_free(&in);
        cJSON_Delete(doc);
    }
}

static void test_parse_refused(void **state)
{
    static const struct {
        const char *inputs, *want;
    } bad[] = {
        {"{}", "must be an array"},
        {"[1]", "not an object"},
        {"[{\"param\":\"Dataset\",\"object_key\":\"tenants/usr_a/x\",\"name\":\"x\"}]", "param"},
        {"[{\"object_key\":\"tenants/usr_a/x\",\"name\":\"x\"}]", "param"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_b/x\",\"name\":\"x\"}]",
         "object_key must be a key under tenants/usr_a/"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/../usr_b/x\","
         "\"name\":\"x\"}]",
         "object_key"},
        {"[{\"param\":\"dataset_uri\",\"name\":\"x\"}]", "object_key"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/x\",\"name\":\"../x\"}]",
         "plain file name"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/x\",\"name\":\"..\"}]",
         "plain file name"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/x\",\"name\":\"a/b\"}]",
         "plain file name"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/x\",\"name\":7}]",
         "plain file name"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/x\",\"name\":\"x\","
         "\"uri\":\"s3://b/\\n\"}]",
         "uri"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/x\",\"name\":\"x\","
         "\"bytes\":-1}]",
         "bytes"},
        {"[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/x\",\"name\":\"x\"},"
         "{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_a/y\",\"name\":\"y\"}]",
         "given twice"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct wk_inputs in = {.n = -7};
        char err[256] = "";
        cJSON *doc = dispatch(bad[i].inputs);
        if (wk_inputs_parse(doc, &in, err, sizeof(err)) != -1)
            fail_msg("accepted %s", bad[i].inputs);
        if (strstr(err, bad[i].want) == NULL)
            fail_msg("%s: error \"%s\" lacks \"%s\"", bad[i].inputs, err, bad[i].want);
        assert_int_equal(in.n, -7); /* untouched */
        cJSON_Delete(doc);
    }
    /* too many */
    char many[8192];
    size_t off = (size_t)snprintf(many, sizeof(many), "[");
    for (int i = 0; i <= WK_MAX_INPUTS; i++)
        off += (size_t)snprintf(
            many + off, sizeof(many) - off,
            "%s{\"param\":\"p%d\",\"object_key\":\"tenants/usr_a/x\",\"name\":\"x\"}", i ? "," : "",
            i);
    snprintf(many + off, sizeof(many) - off, "]");
    struct wk_inputs in = {0};
    char err[256];
    cJSON *doc = dispatch(many);
    assert_int_equal(wk_inputs_parse(doc, &in, err, sizeof(err)), -1);
    cJSON_Delete(doc);
    /* a dispatch without a usable user id cannot have inputs */
    doc = cJSON_Parse("{\"user_id\":\"../x\",\"inputs\":[{\"param\":\"d\","
                      "\"object_key\":\"tenants/../x\",\"name\":\"x\"}]}");
    assert_int_equal(wk_inputs_parse(doc, &in, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "user_id"));
    cJSON_Delete(doc);
}

/* The dispatch's "resume": none, one checkpoint (an input named "checkpoint"), or refused
 * (another tenant's key, a path for a name, not an object) with out untouched. */
static void test_resume(void **state)
{
    struct wk_inputs in = {0};
    char err[256];
    cJSON *doc = cJSON_Parse("{\"user_id\":\"usr_a\"}");
    assert_int_equal(wk_resume_parse(doc, &in, err, sizeof(err)), 0);
    assert_int_equal(in.n, 0);
    cJSON_Delete(doc);
    doc = cJSON_Parse("{\"user_id\":\"usr_a\",\"resume\":{\"artifact_id\":\"art_1\","
                      "\"name\":\"checkpoint-epoch-2.tar\",\"bytes\":10,\"param\":\"x\","
                      "\"object_key\":\"tenants/usr_a/jobs/job_1/1/checkpoint-epoch-2.tar\","
                      "\"uri\":\"artifact://art_1\"}}");
    assert_int_equal(wk_resume_parse(doc, &in, err, sizeof(err)), 0);
    assert_int_equal(in.n, 1);
    assert_string_equal(in.v[0].param, "checkpoint");
    assert_string_equal(in.v[0].name, "checkpoint-epoch-2.tar");
    assert_string_equal(in.v[0].object_key, "tenants/usr_a/jobs/job_1/1/checkpoint-epoch-2.tar");
    assert_int_equal(in.v[0].bytes, 10);
    wk_inputs_free(&in);
    cJSON_Delete(doc);
    static const char *const bad[] = {
        "{\"user_id\":\"usr_a\",\"resume\":{\"name\":\"c.tar\","
        "\"object_key\":\"tenants/usr_b/jobs/j/1/c.tar\"}}",
        "{\"user_id\":\"usr_a\",\"resume\":{\"name\":\"../c.tar\","
        "\"object_key\":\"tenants/usr_a/jobs/j/1/c.tar\"}}",
        "{\"user_id\":\"usr_a\",\"resume\":\"tenants/usr_a/x\"}",
        "{\"user_id\":\"../x\",\"resume\":{\"name\":\"c.tar\",\"object_key\":\"tenants/x\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        in.n = -7;
        doc = cJSON_Parse(bad[i]);
        assert_non_null(doc);
        assert_int_equal(wk_resume_parse(doc, &in, err, sizeof(err)), -1);
        assert_int_equal(in.n, -7);
        cJSON_Delete(doc);
    }
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(NULL, NULL, test_names, test_keys, test_parse, test_parse_refused,
                       test_resume);
}
