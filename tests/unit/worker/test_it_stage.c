/*
 * stage.c against a real S3 server (NF_TEST_S3_ENDPOINT, NF_TEST_S3_ACCESS_KEY,
 * NF_TEST_S3_SECRET_KEY, NF_TEST_S3_BUCKET; skipped when unset): inputs fetched into a job
 * directory the way the job's child does it (in a forked process), a missing object, an
 * object over the cap, a store that does not answer; artifacts uploaded from a checked
 * descriptor and read back byte for byte, a symlink refused.
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
#include <sys/wait.h>
#include <unistd.h>

#include "nf_log.h"
#include "nf_test.h"
#include "wk.h"

struct env {
    struct nf_s3_conf conf;
    char tag[64];        /* unique user id of this run: keys under tenants/<tag>/ */
    char root[PATH_MAX]; /* a temporary directory */
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
    nf_test_unique_name(e->tag, sizeof(e->tag), "usr_");
    nf_test_tmpdir(e->root, sizeof(e->root), "nf-wk-it-");
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

/* Puts text at key (through the blocking upload helper). */
static void put(struct env *e, const char *key, const char *text, size_t len)
{
    char path[PATH_MAX + 32], err[256];
    snprintf(path, sizeof(path), "%s/put.tmp", e->root);
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
    if (nf_s3_upload_file(&e->conf, key, path, NULL, err, sizeof(err)) != 0)
        fail_msg("put %s: %s", key, err);
}

static char *slurp(const char *path, size_t *len)
{
    struct stat st;
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fstat(fileno(f), &st), 0);
    char *buf = calloc(1, (size_t)st.st_size + 1);
    *len = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    return buf;
}

/* Runs wk_stage_in in a forked child, as job_child.c does; its error back through a pipe. */
static int stage_in_forked(struct env *e, const struct nf_s3_conf *conf, const struct wk_inputs *in,
                           const char *dir, long long max, struct wk_stage_err *err)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct wk_stage_err why;
        memset(&why, 0, sizeof(why));
        int rc = wk_stage_in(conf, in, dir, max, -1, &why);
        if (write(fds[1], &why, sizeof(why)) < 0)
            _exit(2);
        _exit(rc == 0 ? 0 : 1);
    }
    close(fds[1]);
    memset(err, 0, sizeof(*err));
    assert_int_equal(read(fds[0], err, sizeof(*err)), (ssize_t)sizeof(*err));
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void test_stage_in(void **state)
{
    struct env *e = nf_test_need(state);
    char key[256], big_key[256], doc_text[2048], dir[PATH_MAX + 32], path[PATH_MAX + 64], err[256];
    struct wk_inputs in = {0};
    struct wk_stage_err why;

    snprintf(key, sizeof(key), "tenants/%s/files/b/data.parquet", e->tag);
    snprintf(big_key, sizeof(big_key), "tenants/%s/files/b/big.bin", e->tag);
    put(e, key, "PAR1 rows PAR1", 14);
    char *big = malloc(300000);
    for (int i = 0; i < 300000; i++)
        big[i] = (char)(i * 7);
    put(e, big_key, big, 300000);
    snprintf(doc_text, sizeof(doc_text),
             "{\"user_id\":\"%s\",\"inputs\":[{\"param\":\"dataset_uri\",\"uri\":"
             "\"s3://b/data.parquet\",\"object_key\":\"%s\",\"name\":\"data.parquet\"},"
             "{\"param\":\"validation_uri\",\"uri\":\"s3://b/big.bin\",\"object_key\":\"%s\","
             "\"name\":\"big.bin\"}]}",
             e->tag, key, big_key);
    cJSON *doc = cJSON_Parse(doc_text);
    assert_int_equal(wk_inputs_parse(doc, &in, err, sizeof(err)), 0);
    snprintf(dir, sizeof(dir), "%s/inputs", e->root);
    mkdir(dir, 0700);

    assert_int_equal(stage_in_forked(e, &e->conf, &in, dir, 1 << 20, &why), 0);
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/dataset_uri/data.parquet", dir);
    char *got = slurp(path, &len);
    assert_int_equal(len, 14);
    assert_memory_equal(got, "PAR1 rows PAR1", 14);
    free(got);
    snprintf(path, sizeof(path), "%s/validation_uri/big.bin", dir);
    got = slurp(path, &len);
    assert_int_equal(len, 300000);
    assert_memory_equal(got, big, 300000);
    free(got);
    struct stat st;
    snprintf(path, sizeof(path), "%s/dataset_uri", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    /* over the cap (the two together are 300014 bytes) */
    assert_int_equal(stage_in_forked(e, &e->conf, &in, dir, 300000, &why), -1);
    assert_string_equal(why.klass, "user_error");
    assert_string_equal(why.code, "input_too_large");
    assert_non_null(strstr(why.message, "input validation_uri"));

    /* a store that does not answer: infra */
    struct nf_s3_conf down = e->conf;
    char ep[64];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", nf_test_closed_port());
    down.endpoint = ep;
    down.timeout_ms = 1000;
    assert_int_equal(stage_in_forked(e, &down, &in, dir, 1 << 20, &why), -1);
    assert_string_equal(why.klass, "infra");
    assert_string_equal(why.code, "input_fetch");
    assert_non_null(strstr(why.message, "cannot fetch s3://b/data.parquet"));
    wk_inputs_free(&in);
    cJSON_Delete(doc);

    /* no such object: user_error naming the user's URI */
    snprintf(doc_text, sizeof(doc_text),
             "{\"user_id\":\"%s\",\"inputs\":[{\"param\":\"dataset_uri\",\"uri\":"
             "\"s3://b/missing.parquet\",\"object_key\":\"tenants/%s/files/b/missing.parquet\","
             "\"name\":\"missing.parquet\"}]}",
             e->tag, e->tag);
    doc = cJSON_Parse(doc_text);
    assert_int_equal(wk_inputs_parse(doc, &in, err, sizeof(err)), 0);
    assert_int_equal(stage_in_forked(e, &e->conf, &in, dir, 1 << 20, &why), -1);
    assert_string_equal(why.klass, "user_error");
    assert_string_equal(why.code, "input_missing");
    assert_string_equal(why.message, "input dataset_uri: no such object s3://b/missing.parquet");
    snprintf(path, sizeof(path), "%s/dataset_uri/missing.parquet", dir);
    assert_int_equal(access(path, F_OK), -1);
    wk_inputs_free(&in);
    cJSON_Delete(doc);
    free(big);
}

static void test_stage_out(void **state)
{
    struct env *e = nf_test_need(state);
    char out[PATH_MAX + 32], p[PATH_MAX + 64], key[256], err[512], back[PATH_MAX + 64];
    char sha[NF_SHA256_HEX_LEN + 1], expect[NF_SHA256_HEX_LEN + 1];
    uint64_t bytes = 0;

    snprintf(out, sizeof(out), "%s/out", e->root);
    mkdir(out, 0700);
    snprintf(p, sizeof(p), "%s/sub", out);
    mkdir(p, 0700);
    size_t n = 6 * 1024 * 1024 + 3; /* over one part: a multipart upload */
    char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 13 + 1);
    snprintf(p, sizeof(p), "%s/sub/model.bin", out);
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    snprintf(key, sizeof(key), "tenants/%s/jobs/job_x/1/sub/model.bin", e->tag);
    struct nf_s3_conf conf = e->conf;
    conf.part_size = NF_S3_PART_MIN;
    assert_int_equal(
        wk_stage_out_one(&conf, out, "sub/model.bin", key, &bytes, sha, err, sizeof(err)), 0);
    assert_int_equal(bytes, n);
    nf_crypto_sha256_hex(data, n, expect);
    assert_string_equal(sha, expect);
    /* read back: the same bytes */
    snprintf(back, sizeof(back), "%s/back.bin", e->root);
    assert_int_equal(nf_s3_download_file(&e->conf, key, back, 0, err, sizeof(err)), 0);
    size_t len = 0;
    char *got = slurp(back, &len);
    assert_int_equal(len, n);
    assert_memory_equal(got, data, n);
    free(got);
    free(data);

    /* a symlink is never followed, even to a readable file */
    snprintf(p, sizeof(p), "%s/leak", out);
    assert_int_equal(symlink("/etc/hostname", p), 0);
    snprintf(key, sizeof(key), "tenants/%s/jobs/job_x/1/leak", e->tag);
    assert_int_equal(wk_stage_out_one(&e->conf, out, "leak", key, &bytes, sha, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "artifact leak"));
    assert_int_equal(nf_s3_download_file(&e->conf, key, back, 0, err, sizeof(err)), -ENOENT);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(setup, teardown, test_stage_in, test_stage_out);
}
