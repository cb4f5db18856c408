/*
 * storecache.c against a real S3 server (NF_TEST_S3_*; skipped when unset): a base model
 * prefix fetched into the cache, found cached the second time, fetched again when an
 * object changed; an empty model prefix fails; a benchmark the store has none of removes
 * the cached copy and succeeds (the handler falls back to its samples).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_json.h"
#include "nf_test.h"
#include "wk.h"

struct env {
    struct nf_s3_conf conf;
    char tag[64];
    char root[PATH_MAX];
};

static int setup(void **state)
{
    const char *ep = nf_test_env("NF_TEST_S3_ENDPOINT");
    *state = NULL;
    if (ep == NULL)
        return 0;
    struct env *e = calloc(1, sizeof(*e));
    e->conf.endpoint = ep;
    e->conf.access_key = nf_test_env("NF_TEST_S3_ACCESS_KEY");
    e->conf.secret_key = nf_test_env("NF_TEST_S3_SECRET_KEY");
    e->conf.bucket = nf_test_env("NF_TEST_S3_BUCKET");
    e->conf.timeout_ms = 5000;
    nf_test_unique_name(e->tag, sizeof(e->tag), "t");
    nf_test_tmpdir(e->root, sizeof(e->root), "nf-wk-store-");
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e == NULL)
        return 0;
    nf_test_rmtree(e->root);
    free(e);
    return 0;
}

static void put(struct env *e, const char *key, const char *text)
{
    char path[PATH_MAX + 32], err[256];
    snprintf(path, sizeof(path), "%s/put.tmp", e->root);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
    if (nf_s3_upload_file(&e->conf, key, path, NULL, err, sizeof(err)) != 0)
        fail_msg("put %s: %s", key, err);
}

static void assert_file(const char *dir, const char *rel, const char *text)
{
    char path[PATH_MAX + 300], buf[256] = "";
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_string_equal(buf, text);
}

/* Runs wk_store_fetch with its log lines captured in a file; returns its rc. */
static int fetch(struct env *e, const struct wk_store_items *s, char *log, size_t cap,
                 struct wk_stage_err *why)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/log.txt", e->root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    memset(why, 0, sizeof(*why));
    int rc = wk_store_fetch(&e->conf, s, fd, why);
    ssize_t n = pread(fd, log, cap - 1, 0);
    log[n > 0 ? n : 0] = '\0';
    close(fd);
    return rc;
}

static void test_model_fetch(void **state)
{
    struct env *e = nf_test_need(state);
    char key[256], doc_text[1024], cache[PATH_MAX + 16], err[256], log[4096];
    struct wk_store_items s = {0};
    struct wk_stage_err why;

    snprintf(key, sizeof(key), "test-store/%s/m/config.json", e->tag);
    put(e, key, "{\"model_type\": \"llama\"}");
    snprintf(key, sizeof(key), "test-store/%s/m/sub/tokenizer.json", e->tag);
    put(e, key, "{}");
    snprintf(doc_text, sizeof(doc_text),
             "{\"job_type\": \"train\", \"models\": {\"model_id\": {\"kind\": \"base\", "
             "\"source\": \"s3://%s/test-store/%s/m/\"}, \"teacher_model\": {\"kind\": "
             "\"base\", \"source\": \"s3://%s/test-store/%s/empty/\"}}}",
             e->conf.bucket, e->tag, e->conf.bucket, e->tag);
    snprintf(cache, sizeof(cache), "%s/cache", e->root);
    cJSON *doc = cJSON_Parse(doc_text);
    assert_int_equal(wk_store_parse(doc, e->conf.bucket, cache, &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 2);
    s.n = 1; /* the model first; the empty prefix below */
    assert_int_equal(fetch(e, &s, log, sizeof(log), &why), 0);
    assert_non_null(strstr(log, "fetched s3://"));
    assert_file(s.v[0].dir, "config.json", "{\"model_type\": \"llama\"}");
    assert_file(s.v[0].dir, "sub/tokenizer.json", "{}");

    /* the same listing: the cached copy */
    assert_int_equal(fetch(e, &s, log, sizeof(log), &why), 0);
    assert_non_null(strstr(log, "in the worker's cache"));

    /* an object changed in the store: fetched again */
    snprintf(key, sizeof(key), "test-store/%s/m/config.json", e->tag);
    put(e, key, "{\"model_type\": \"mistral\"}");
    assert_int_equal(fetch(e, &s, log, sizeof(log), &why), 0);
    assert_non_null(strstr(log, "fetched s3://"));
    assert_file(s.v[0].dir, "config.json", "{\"model_type\": \"mistral\"}");

    /* a base model prefix with nothing under it */
    s.n = 2;
    assert_int_equal(fetch(e, &s, log, sizeof(log), &why), -1);
    assert_string_equal(why.klass, "infra");
    assert_string_equal(why.code, "model_missing");
    assert_non_null(strstr(why.message, "teacher_model"));
    wk_store_items_free(&s);
    cJSON_Delete(doc);
}

static void test_benchmark_none(void **state)
{
    struct env *e = nf_test_need(state);
    char cache[PATH_MAX + 16], err[256], log[4096], bench[96];
    struct wk_store_items s = {0};
    struct wk_stage_err why;
    struct stat st;

    /* a benchmark name nobody seeds: its stale cached copy goes */
    snprintf(bench, sizeof(bench), "none_%s", e->tag);
    for (char *c = bench; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
            *c = '_';
    cJSON *doc = cJSON_CreateObject();
    nf_json_add_str(doc, "job_type", "evaluate");
    cJSON *params = cJSON_AddObjectToObject(doc, "params");
    nf_json_add_str(params, "benchmark", bench);
    snprintf(cache, sizeof(cache), "%s/cache", e->root);
    assert_int_equal(wk_store_parse(doc, e->conf.bucket, cache, &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 1);
    char stale[PATH_MAX + 300];
    snprintf(stale, sizeof(stale), "%s", s.v[0].dir);
    assert_int_equal(wk_root_prepare(stale, stale, sizeof(stale)), 0);
    assert_int_equal(fetch(e, &s, log, sizeof(log), &why), 0);
    assert_non_null(strstr(log, "no data under"));
    assert_int_equal(stat(s.v[0].dir, &st), -1);
    wk_store_items_free(&s);
    cJSON_Delete(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_model_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_benchmark_none, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
