/*
 * artifacts.c: paths a handler announces must resolve to regular files inside the job's
 * directory - escapes through "..", absolute paths and symlinks are refused; the upload
 * plan and records; opening for the upload follows no symlink.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_log.h"
#include "nf_test.h"
#include "wk.h"

static char root[PATH_MAX]; /* mkdtemp: root/job (the artifact dir) and root/outside */
static char dir[PATH_MAX + 8];

static int setup(void **state)
{
    char p[PATH_MAX + 64];
    nf_test_tmpdir(root, sizeof(root), "nf-wk-art-");
    snprintf(dir, sizeof(dir), "%s/job", root);
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/sub", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/outside.txt", root);
    nf_test_write_file(p, "secret", 0644);
    snprintf(p, sizeof(p), "%s/data.jsonl", dir);
    nf_test_write_file(p, "{\"a\":1}\n", 0644);
    snprintf(p, sizeof(p), "%s/sub/m.bin", dir);
    nf_test_write_file(p, "", 0644);
    snprintf(p, sizeof(p), "%s/link_out", dir);
    char target[PATH_MAX + 32];
    snprintf(target, sizeof(target), "%s/outside.txt", root);
    if (symlink(target, p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/link_in", dir);
    if (symlink("data.jsonl", p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/link_etc", dir);
    if (symlink("/etc", p) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    return nf_test_rmtree(root);
}

static void test_resolve_inside(void **state)
{
    char out[PATH_MAX], expect[PATH_MAX + 32], abs[PATH_MAX + 32];
    const char *why = NULL;
    char real_dir[PATH_MAX];
    assert_non_null(realpath(dir, real_dir));

    assert_int_equal(wk_artifact_resolve(dir, "data.jsonl", out, sizeof(out), &why), 0);
    snprintf(expect, sizeof(expect), "%s/data.jsonl", real_dir);
    assert_string_equal(out, expect);
    assert_int_equal(wk_artifact_resolve(dir, "./sub/../data.jsonl", out, sizeof(out), &why), 0);
    assert_string_equal(out, expect);
    snprintf(abs, sizeof(abs), "%s/data.jsonl", dir);
    assert_int_equal(wk_artifact_resolve(dir, abs, out, sizeof(out), &why), 0);
    assert_string_equal(out, expect);
    /* a symlink staying inside resolves to its target */
    assert_int_equal(wk_artifact_resolve(dir, "link_in", out, sizeof(out), &why), 0);
    assert_string_equal(out, expect);
    assert_int_equal(wk_artifact_resolve(dir, "sub/m.bin", out, sizeof(out), &why), 0);
}

static void test_resolve_refused(void **state)
{
    char out[PATH_MAX], abs[PATH_MAX + 32];
    static const char *const bad[] = {
        "../outside.txt", /* climbs out */
        "sub/../../outside.txt",
        "link_out",          /* symlink to a file outside */
        "link_etc/hostname", /* through a symlinked directory */
        "/etc/hostname",     /* absolute, elsewhere */
        "missing.txt",       /* does not exist */
        "sub",               /* a directory */
        ".",                 /* the directory itself */
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        if (wk_artifact_resolve(dir, bad[i], out, sizeof(out), &why) != -1)
            fail_msg("accepted: \"%s\" -> %s", bad[i], out);
        assert_non_null(why);
    }
    const char *why = NULL;
    snprintf(abs, sizeof(abs), "%s/outside.txt", root);
    assert_int_equal(wk_artifact_resolve(dir, abs, out, sizeof(out), &why), -1);
    assert_string_equal(why, "path escapes the artifact directory");
    /* a sibling whose name starts with the directory's name is still outside */
    char sibling[PATH_MAX + 32];
    snprintf(sibling, sizeof(sibling), "%s/jobx", root);
    mkdir(sibling, 0755);
    snprintf(abs, sizeof(abs), "%s/jobx/f", root);
    nf_test_write_file(abs, "x", 0644);
    assert_int_equal(wk_artifact_resolve(dir, abs, out, sizeof(out), &why), -1);
    assert_int_equal(wk_artifact_resolve(dir, "../jobx/f", out, sizeof(out), &why), -1);
    /* an output buffer too small is an error, not a truncation */
    char tiny[8];
    assert_int_equal(wk_artifact_resolve(dir, "data.jsonl", tiny, sizeof(tiny), &why), -1);
    /* a missing directory */
    assert_int_equal(wk_artifact_resolve("/nonexistent/dir", "a", out, sizeof(out), &why), -1);
}

static void test_digest_and_record(void **state)
{
    char path[PATH_MAX + 32], sha[NF_SHA256_HEX_LEN + 1], expect[NF_SHA256_HEX_LEN + 1];
    uint64_t bytes = 0;
    snprintf(path, sizeof(path), "%s/data.jsonl", dir);
    assert_int_equal(wk_artifact_digest(path, &bytes, sha), 0);
    assert_int_equal(bytes, 8);
    nf_crypto_sha256_hex("{\"a\":1}\n", 8, expect);
    assert_string_equal(sha, expect);
    snprintf(path, sizeof(path), "%s/sub/m.bin", dir);
    assert_int_equal(wk_artifact_digest(path, &bytes, sha), 0);
    assert_int_equal(bytes, 0);
    assert_string_equal(sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(wk_artifact_digest("/nonexistent", &bytes, sha), -1);

    /* a big file is streamed in chunks: compare against hashing it whole */
    size_t big = 300 * 1024 + 17;
    char *buf = malloc(big);
    for (size_t i = 0; i < big; i++)
        buf[i] = (char)(i * 31 + 7);
    snprintf(path, sizeof(path), "%s/big.bin", dir);
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, big, f);
    fclose(f);
    assert_int_equal(wk_artifact_digest(path, &bytes, sha), 0);
    assert_int_equal(bytes, big);
    nf_crypto_sha256_hex(buf, big, expect);
    assert_string_equal(sha, expect);
    free(buf);
}

/* The output plan: relative paths, keys under the attempt's prefix, one item per file. */
static void test_plan(void **state)
{
    const char *why = NULL, *bad = NULL;
    cJSON *ann = cJSON_Parse("[{\"path\":\"data.jsonl\",\"kind\":\"dataset\"},"
                             "{\"path\":\"sub/m.bin\",\"kind\":\"model\"},"
                             "{\"path\":\"link_in\",\"kind\":\"dataset\"},"
                             "{\"path\":\"./data.jsonl\",\"kind\":\"file\"}]");
    cJSON *plan = wk_artifact_plan(dir, ann, "tenants/u/jobs/j/1/", &why, &bad);
    assert_non_null(plan);
    assert_int_equal(cJSON_GetArraySize(plan), 2); /* link_in and ./data.jsonl: the same file */
    const cJSON *a = cJSON_GetArrayItem(plan, 0), *b = cJSON_GetArrayItem(plan, 1);
    assert_true(nf_id_valid("art", nf_json_str(a, "artifact_id")));
    assert_string_equal(nf_json_str(a, "path"), "data.jsonl");
    assert_string_equal(nf_json_str(a, "name"), "data.jsonl");
    assert_string_equal(nf_json_str(a, "kind"), "dataset");
    assert_string_equal(nf_json_str(a, "object_key"), "tenants/u/jobs/j/1/data.jsonl");
    assert_string_equal(nf_json_str(b, "path"), "sub/m.bin");
    assert_string_equal(nf_json_str(b, "name"), "m.bin");
    assert_string_equal(nf_json_str(b, "object_key"), "tenants/u/jobs/j/1/sub/m.bin");
    assert_string_not_equal(nf_json_str(a, "artifact_id"), nf_json_str(b, "artifact_id"));

    char sha[NF_SHA256_HEX_LEN + 1];
    nf_crypto_sha256_hex("{\"a\":1}\n", 8, sha);
    cJSON *rec = wk_artifact_record(a, 8, sha);
    char uri[64];
    snprintf(uri, sizeof(uri), "artifact://%s", nf_json_str(a, "artifact_id"));
    assert_string_equal(nf_json_str(rec, "uri"), uri);
    assert_string_equal(nf_json_str(rec, "artifact_id"), nf_json_str(a, "artifact_id"));
    assert_string_equal(nf_json_str(rec, "name"), "data.jsonl");
    assert_string_equal(nf_json_str(rec, "kind"), "dataset");
    assert_int_equal(nf_json_int(rec, "bytes", -1), 8);
    assert_string_equal(nf_json_str(rec, "sha256"), sha);
    assert_string_equal(nf_json_str(rec, "object_key"), "tenants/u/jobs/j/1/data.jsonl");
    assert_null(cJSON_GetObjectItem(rec, "path")); /* no local path leaves the worker */
    cJSON_Delete(rec);
    cJSON_Delete(plan);
    cJSON_Delete(ann);

    /* one refused path refuses the plan, naming it */
    char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/a b.txt", dir);
    nf_test_write_file(p, "x", 0644);
    static const char *const bad_paths[] = {"../outside.txt", "link_out", "a b.txt", "sub"};
    for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
        cJSON *one = cJSON_CreateArray();
        cJSON *item = nf_json_obj();
        nf_json_add_str(item, "path", bad_paths[i]);
        cJSON_AddItemToArray(one, item);
        why = bad = NULL;
        assert_null(wk_artifact_plan(dir, one, "tenants/u/jobs/j/1/", &why, &bad));
        assert_non_null(why);
        assert_string_equal(bad, bad_paths[i]);
        cJSON_Delete(one);
    }
    /* nothing announced: an empty plan */
    cJSON *none = cJSON_CreateArray();
    plan = wk_artifact_plan(dir, none, "tenants/u/jobs/j/1/", &why, &bad);
    assert_int_equal(cJSON_GetArraySize(plan), 0);
    cJSON_Delete(plan);
    cJSON_Delete(none);
}

/* Opening for the upload follows no symlink, anywhere in the path. */
static void test_open(void **state)
{
    const char *why = NULL;
    int fd = wk_artifact_open(dir, "data.jsonl", &why);
    assert_true(fd >= 0);
    close(fd);
    fd = wk_artifact_open(dir, "sub/m.bin", &why);
    assert_true(fd >= 0);
    close(fd);
    char p[PATH_MAX + 64], target[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/sublink", dir);
    snprintf(target, sizeof(target), "%s/sub", dir);
    assert_int_equal(symlink(target, p), 0); /* a symlinked directory, even inside */
    snprintf(p, sizeof(p), "%s/fifo", dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    static const char *const bad[] = {"link_in",
                                      "link_out",
                                      "link_etc/hostname",
                                      "sublink/m.bin",
                                      "sub",
                                      "fifo",
                                      "missing",
                                      "../outside.txt",
                                      "",
                                      "sub/../data.jsonl"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        fd = wk_artifact_open(dir, bad[i], &why);
        if (fd >= 0)
            fail_msg("opened \"%s\"", bad[i]);
        assert_non_null(why);
    }
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(setup, teardown, test_resolve_inside, test_resolve_refused,
                       test_digest_and_record, test_plan, test_open);
}
