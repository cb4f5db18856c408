/*
 * A job's data plane end to end, with real handler processes (/bin/sh scripts): inputs
 * fetched into the private job directory before the handler runs, the handler's JSON
 * naming them, failures classed (missing: user_error, store trouble: infra), cancel while
 * fetching, outputs uploaded after exit 0, the directory removed (a deploy's kept while its
 * endpoint runs). Link-time fakes: publish.c (messages recorded here) and the object
 * store's blocking helpers (-Wl,--wrap, tests/unit/CMakeLists.txt), which copy files
 * from and to root/store/<key> inside the job's child processes. test_real_store runs a
 * job against a real S3 server instead (NF_TEST_S3_*; skipped when unset).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_test.h"
#include "wk.h"

/* ---- fakes: the publisher and the object store ---------------------------------------- */

#define MAX_SENT 256

static cJSON *sent[MAX_SENT];
static int nsent;
static struct wk_job *undelivered[MAX_SENT];
static int nundelivered;
static struct event *deliver_ev;
static char root[PATH_MAX], handlers[PATH_MAX + 16], work[PATH_MAX + 16];
static char spy[PATH_MAX + 16], store[PATH_MAX + 16];

static void deliver(evutil_socket_t fd, short what, void *arg)
{
    while (nundelivered > 0)
        wk_job_delivered(undelivered[--nundelivered]);
}

void wk_publish(struct wk_ctx *ctx, struct wk_job *job, const char *topic, const char *key,
                const char *payload)
{
    assert_true(nsent < MAX_SENT);
    sent[nsent++] = cJSON_Parse(payload);
    if (job != NULL) {
        wk_job_hold(job);
        undelivered[nundelivered++] = job;
        event_active(deliver_ev, EV_TIMEOUT, 0);
    }
}

void wk_publish_free(struct wk_ctx *ctx)
{
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Copies from -> to in this process (from may be /proc/self/fd/N), making to's parents. */
static int copy_file(const char *from, const char *to, mode_t mode)
{
    char dir[2 * PATH_MAX], buf[8192];
    snprintf(dir, sizeof(dir), "%s", to);
    for (char *p = strchr(dir + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
        *p = '\0';
        mkdir(dir, 0755);
        *p = '/';
    }
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    size_t n;
    while (out != NULL && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    return out != NULL && fclose(out) == 0 && chmod(to, mode) == 0 ? 0 : -1;
}

static bool real_store; /* test_real_store: the wraps call the real helpers */

int __real_nf_s3_download_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                               long long max_bytes, char *err, size_t errlen);
int __real_nf_s3_upload_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                             const char *content_type, char *err, size_t errlen);

/* Keys with "slow" take 30 s, "lag" 1.5 s, "flaky" fail like a 5xx. */
int __wrap_nf_s3_download_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                               long long max_bytes, char *err, size_t errlen)
{
    char from[2 * PATH_MAX];
    if (real_store)
        return __real_nf_s3_download_file(conf, key, path, max_bytes, err, errlen);
    if (strstr(key, "slow"))
        sleep(30);
    if (strstr(key, "lag"))
        usleep(1500 * 1000);
    if (strstr(key, "flaky")) {
        snprintf(err, errlen, "500 InternalError");
        return -EIO;
    }
    snprintf(from, sizeof(from), "%s/%s", store, key);
    if (access(from, R_OK) < 0)
        return -ENOENT;
    if (max_bytes > 0 && file_size(from) > max_bytes)
        return -EFBIG;
    return copy_file(from, path, 0600) == 0 ? 0 : -EIO;
}

/* Keys with "nope" fail. */
int __wrap_nf_s3_upload_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                             const char *content_type, char *err, size_t errlen)
{
    char to[2 * PATH_MAX];
    if (real_store)
        return __real_nf_s3_upload_file(conf, key, path, content_type, err, errlen);
    if (strstr(key, "nope")) {
        snprintf(err, errlen, "503 SlowDown");
        return -EIO;
    }
    snprintf(to, sizeof(to), "%s/%s", store, key);
    return copy_file(path, to, 0644) == 0 ? 0 : -EIO;
}

/* ---- fixture ------------------------------------------------------------------------------ */

static struct wk_config cfg;
static struct wk_ctx *ctx;

static void script(const char *type, const char *body)
{
    char path[PATH_MAX + 64], text[4096];
    snprintf(path, sizeof(path), "%s/%s", handlers, type);
    snprintf(text, sizeof(text), "#!/bin/sh\n%s\n", body);
    nf_test_write_file(path, text, 0755);
}

static void put(const char *key, const char *text)
{
    char path[2 * PATH_MAX], dir[2 * PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", store, key);
    snprintf(dir, sizeof(dir), "mkdir -p \"$(dirname '%s')\"", path);
    assert_int_equal(system(dir), 0);
    nf_test_write_file(path, text, 0644);
}

static void noop(evutil_socket_t fd, short what, void *arg)
{
}

static int setup(void **state)
{
    nf_test_tmpdir(root, sizeof(root), "nf-wk-data-");
    snprintf(handlers, sizeof(handlers), "%s/handlers", root);
    snprintf(work, sizeof(work), "%s/work", root);
    snprintf(spy, sizeof(spy), "%s/spy", root);
    snprintf(store, sizeof(store), "%s/store", root);
    mkdir(handlers, 0755);
    mkdir(spy, 0755);
    mkdir(store, 0755);
    setenv("WK_SPY", spy, 1);
    ctx = calloc(1, sizeof(*ctx));
    ctx->base = event_base_new();
    memset(&cfg, 0, sizeof(cfg));
    cfg.handlers = nf_xstrdup(handlers);
    cfg.slots = 8;
    cfg.kill_grace_s = 1;
    cfg.usage_window_s = 60;
    cfg.progress_ms = 100;
    ctx->cfg = &cfg;
    ctx->set.max_input_bytes = 1000;
    if (wk_root_prepare(work, ctx->root, sizeof(ctx->root)) < 0)
        return -1;
    snprintf(ctx->worker_id, sizeof(ctx->worker_id), "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    snprintf(ctx->source, sizeof(ctx->source), "nf-worker/%s", ctx->worker_id);
    ctx->sigchld = evsignal_new(ctx->base, SIGCHLD, wk_on_sigchld, ctx);
    event_add(ctx->sigchld, NULL);
    deliver_ev = evtimer_new(ctx->base, deliver, NULL);
    ctx->retry = evtimer_new(ctx->base, noop, NULL);
    ctx->finish = evtimer_new(ctx->base, noop, NULL);
    nsent = nundelivered = 0;
    real_store = false;
    return 0;
}

static int teardown(void **state)
{
    ctx->closing = true;
    wk_jobs_free(ctx);
    wk_jobdir_free_all(ctx);
    for (int i = 0; i < nsent; i++)
        cJSON_Delete(sent[i]);
    nsent = nundelivered = 0;
    event_free(deliver_ev);
    event_free(ctx->retry);
    event_free(ctx->finish);
    event_free(ctx->sigchld);
    event_base_free(ctx->base);
    free(cfg.handlers);
    free(ctx);
    return nf_test_rmtree(root);
}

static void heartbeat_round(void *arg)
{
    cJSON_Delete(wk_jobs_heartbeat(ctx));
    wk_jobs_heartbeat_done(ctx, true);
}

static bool idle(void *arg)
{
    return ctx->njobs == 0;
}

static bool run_until_idle(int max_ms)
{
    return nf_test_run_ticking(ctx->base, idle, NULL, max_ms, 10, heartbeat_round, NULL);
}

static int n_job = 0;

/* Starts a job of `type` for usr_1, attempt 2, with the inputs array text. */
static void start(const char *type, int gpu_count, const char *inputs, char id[NF_ID_MAX])
{
    uint8_t rnd[10] = {0};
    char text[4096];
    rnd[9] = (uint8_t)++n_job;
    nf_id_new_at("job", 1700000000000ULL + (uint64_t)n_job, rnd, id, NF_ID_MAX);
    snprintf(text, sizeof(text),
             "{\"job_id\":\"%s\",\"user_id\":\"usr_1\",\"job_type\":\"%s\",\"attempt\":2,"
             "\"gpu_count\":%d,\"params\":{\"dataset_uri\":\"s3://b/data.jsonl\"},"
             "\"inputs\":%s}",
             id, type, gpu_count, inputs);
    cJSON *job = cJSON_Parse(text);
    assert_non_null(job);
    wk_job_start(ctx, job, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    cJSON_Delete(job);
}

static const cJSON *event(const char *type, const char *job_id)
{
    for (int i = 0; i < nsent; i++) {
        const char *t = NULL, *subject = NULL, *msg = NULL;
        const cJSON *data = nf_event_data(sent[i], &t, &subject, &msg);
        if (data && strcmp(t, type) == 0 && strcmp(nf_json_str(data, "job_id"), job_id) == 0)
            return data;
    }
    return NULL;
}

static const cJSON *error_of(const char *job_id)
{
    const cJSON *failed = event("forge.job.failed", job_id);
    assert_non_null(failed);
    return cJSON_GetObjectItem(failed, "error");
}

static bool spied(const char *id, const char *what)
{
    char path[PATH_MAX + 128];
    snprintf(path, sizeof(path), "%s/%s.%s", spy, id, what);
    return access(path, F_OK) == 0;
}

static char *spy_text(const char *id, const char *what)
{
    char path[PATH_MAX + 128], *buf = calloc(1, 65536);
    snprintf(path, sizeof(path), "%s/%s.%s", spy, id, what);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static bool dir_exists(const char *id)
{
    char path[PATH_MAX + 128];
    snprintf(path, sizeof(path), "%s/%s-2", ctx->root, id);
    return access(path, F_OK) == 0;
}

static long long gpu_ms(const char *id)
{
    long long sum = 0;
    for (int i = 0; i < nsent; i++) {
        const cJSON *data = cJSON_GetObjectItem(sent[i], "data");
        if (strcmp(nf_json_str(sent[i], "type"), "forge.usage.recorded") == 0 &&
            strcmp(nf_json_str(data, "job_id"), id) == 0 &&
            strcmp(nf_json_str(data, "meter"), "gpu_ms") == 0)
            sum += nf_json_int(data, "quantity", 0);
    }
    return sum;
}

#define DATA_INPUT                                                                                 \
    "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/data.jsonl\","                                   \
    "\"object_key\":\"tenants/usr_1/files/b/data.jsonl\",\"name\":\"data.jsonl\"}]"

/* ---- tests --------------------------------------------------------------------------------- */

static void test_inputs_fetched(void **state)
{
    char id[NF_ID_MAX], expect[PATH_MAX + 128];
    put("tenants/usr_1/files/b/data.jsonl", "{\"t\":\"hello\"}\n");
    put("tenants/usr_1/jobs/job_1/1/model.json", "{}");
    script("audit", "cat > \"$WK_SPY/$NF_JOB_ID.stdin\"\n"
                    "stat -c %a .. ../inputs . ../inputs/dataset_uri "
                    "../inputs/dataset_uri/data.jsonl > \"$WK_SPY/$NF_JOB_ID.modes\"\n"
                    "cat ../inputs/dataset_uri/data.jsonl ../inputs/model_id/model.json "
                    "> \"$WK_SPY/$NF_JOB_ID.data\"\n"
                    "echo '{\"result\":{\"ok\":true}}'");
    start("audit", 0,
          "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/data.jsonl\","
          "\"object_key\":\"tenants/usr_1/files/b/data.jsonl\",\"name\":\"data.jsonl\","
          "\"bytes\":14},{\"param\":\"model_id\",\"uri\":\"artifact://art_1\","
          "\"object_key\":\"tenants/usr_1/jobs/job_1/1/model.json\",\"name\":\"model.json\"}]",
          id);
    assert_true(run_until_idle(10000));
    assert_non_null(event("forge.job.succeeded", id));

    /* the handler read {"inputs": {param: local path}} and found the files there */
    char *text = spy_text(id, "stdin");
    cJSON *doc = cJSON_Parse(text);
    free(text);
    const cJSON *map = cJSON_GetObjectItem(doc, "inputs");
    snprintf(expect, sizeof(expect), "%s/%s-2/inputs/dataset_uri/data.jsonl", ctx->root, id);
    assert_string_equal(nf_json_str(map, "dataset_uri"), expect);
    snprintf(expect, sizeof(expect), "%s/%s-2/inputs/model_id/model.json", ctx->root, id);
    assert_string_equal(nf_json_str(map, "model_id"), expect);
    cJSON_Delete(doc);
    text = spy_text(id, "data");
    assert_string_equal(text, "{\"t\":\"hello\"}\n{}");
    free(text);
    /* every directory private; the input file the fetch's 0600 */
    text = spy_text(id, "modes");
    assert_string_equal(text, "700\n700\n700\n700\n600\n");
    free(text);
    /* the user sees each fetch in the job's log; the directory is gone after */
    const cJSON *log = event("forge.job.log", id);
    assert_non_null(log);
    assert_string_equal(nf_json_str(log, "message"), "input dataset_uri fetched (14 bytes)");
    assert_false(dir_exists(id));
}

static void test_input_failures(void **state)
{
    char missing[NF_ID_MAX], flaky[NF_ID_MAX], big[NF_ID_MAX], other[NF_ID_MAX];
    char escape[NF_ID_MAX];
    char big_text[1200];
    memset(big_text, 'x', sizeof(big_text) - 1);
    big_text[sizeof(big_text) - 1] = '\0';
    put("tenants/usr_1/files/b/big.jsonl", big_text); /* over max_input_bytes = 1000 */
    put("tenants/usr_2/files/b/data.jsonl", "theirs");
    script("audit", "touch \"$WK_SPY/$NF_JOB_ID.ran\"\necho '{\"result\":{}}'");
    start("audit", 1,
          "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/missing.jsonl\","
          "\"object_key\":\"tenants/usr_1/files/b/missing.jsonl\",\"name\":\"missing.jsonl\"}]",
          missing);
    start("audit", 1,
          "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/flaky.jsonl\","
          "\"object_key\":\"tenants/usr_1/files/b/flaky.jsonl\",\"name\":\"flaky.jsonl\"}]",
          flaky);
    start("audit", 1,
          "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/big.jsonl\","
          "\"object_key\":\"tenants/usr_1/files/b/big.jsonl\",\"name\":\"big.jsonl\"}]",
          big);
    /* hostile dispatches: another tenant's key, a name that climbs out */
    start("audit", 1,
          "[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_2/files/b/data.jsonl\","
          "\"name\":\"data.jsonl\"}]",
          other);
    start("audit", 1,
          "[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_1/files/b/data.jsonl\","
          "\"name\":\"../../x\"}]",
          escape);
    assert_true(run_until_idle(10000));

    const cJSON *e = error_of(missing);
    assert_string_equal(nf_json_str(e, "class"), "user_error");
    assert_string_equal(nf_json_str(e, "code"), "input_missing");
    assert_string_equal(nf_json_str(e, "message"),
                        "input dataset_uri: no such object s3://b/missing.jsonl");
    e = error_of(flaky);
    assert_string_equal(nf_json_str(e, "class"), "infra"); /* retried by the scheduler */
    assert_string_equal(nf_json_str(e, "code"), "input_fetch");
    assert_non_null(strstr(nf_json_str(e, "message"), "500 InternalError"));
    e = error_of(big);
    assert_string_equal(nf_json_str(e, "class"), "user_error");
    assert_string_equal(nf_json_str(e, "code"), "input_too_large");
    assert_non_null(strstr(nf_json_str(e, "message"), "1000 bytes"));
    e = error_of(other);
    assert_string_equal(nf_json_str(e, "class"), "user_error");
    assert_string_equal(nf_json_str(e, "code"), "bad_input");
    assert_non_null(strstr(nf_json_str(e, "message"), "tenants/usr_1/"));
    e = error_of(escape);
    assert_string_equal(nf_json_str(e, "code"), "bad_input");
    const char *ids[] = {missing, flaky, big, other, escape};
    for (size_t i = 0; i < 5; i++) {
        assert_false(spied(ids[i], "ran"));  /* no handler ran */
        assert_int_equal(gpu_ms(ids[i]), 0); /* no GPU time billed */
        assert_false(dir_exists(ids[i]));    /* nothing left behind */
        assert_null(event("forge.job.succeeded", ids[i]));
    }
    /* refused before anything ran: no running event, no directory ever made */
    assert_null(event("forge.job.running", other));
}

/* A cancel reaches a fetch in progress: the child dies at once; the fetch is not GPU time. */
static void test_cancel_while_fetching(void **state)
{
    char slow[NF_ID_MAX], lag[NF_ID_MAX];
    script("train", "touch \"$WK_SPY/$NF_JOB_ID.ran\"\necho '{\"result\":{}}'");
    put("tenants/usr_1/files/b/lag.jsonl", "x\n");
    start("train", 2,
          "[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_1/files/b/slow.jsonl\","
          "\"name\":\"slow.jsonl\"}]",
          slow);
    start("train", 2,
          "[{\"param\":\"dataset_uri\",\"object_key\":\"tenants/usr_1/files/b/lag.jsonl\","
          "\"name\":\"lag.jsonl\"}]",
          lag);
    nf_test_run_for(ctx->base, 300);
    long long t0 = nf_test_now_ms();
    wk_job_cancel(ctx, slow);
    assert_true(run_until_idle(10000));
    assert_non_null(event("forge.job.cancelled", slow));
    assert_false(spied(slow, "ran"));
    assert_int_equal(gpu_ms(slow), 0);
    assert_true(nf_test_now_ms() - t0 < 5000);
    /* a 1.5 s fetch, then a handler that exits at once: metered well under the fetch */
    assert_non_null(event("forge.job.succeeded", lag));
    assert_true(spied(lag, "ran"));
    assert_true(gpu_ms(lag) < 2 * 1000);
    assert_false(dir_exists(slow));
    assert_false(dir_exists(lag));
}

static void test_outputs(void **state)
{
    char ok[NF_ID_MAX], bad[NF_ID_MAX], path[2 * PATH_MAX];
    script("generate", "mkdir -p sub && printf abc > sub/a.txt && printf d > b.json\n"
                       "echo '{\"artifact\":{\"path\":\"sub/a.txt\",\"kind\":\"dataset\"}}'\n"
                       "echo \"{\\\"artifact\\\":{\\\"path\\\":\\\"$PWD/b.json\\\"}}\"\n"
                       "echo '{\"result\":{}}'");
    script("distill", "printf x > nope.txt\n"
                      "echo '{\"artifact\":{\"path\":\"nope.txt\",\"kind\":\"dataset\"}}'");
    start("generate", 0, "[]", ok);
    start("distill", 0, "null", bad);
    assert_true(run_until_idle(10000));

    const cJSON *s = event("forge.job.succeeded", ok);
    assert_non_null(s);
    const cJSON *arts = cJSON_GetObjectItem(s, "artifacts");
    assert_int_equal(cJSON_GetArraySize(arts), 2);
    const cJSON *a = cJSON_GetArrayItem(arts, 0), *b = cJSON_GetArrayItem(arts, 1);
    char key[256], sha[NF_SHA256_HEX_LEN + 1], uri[64];
    snprintf(key, sizeof(key), "tenants/usr_1/jobs/%s/2/sub/a.txt", ok);
    assert_string_equal(nf_json_str(a, "object_key"), key);
    assert_string_equal(nf_json_str(a, "name"), "a.txt");
    assert_string_equal(nf_json_str(a, "kind"), "dataset");
    assert_int_equal(nf_json_int(a, "bytes", -1), 3);
    nf_crypto_sha256_hex("abc", 3, sha);
    assert_string_equal(nf_json_str(a, "sha256"), sha);
    snprintf(uri, sizeof(uri), "artifact://%s", nf_json_str(a, "artifact_id"));
    assert_string_equal(nf_json_str(a, "uri"), uri);
    snprintf(path, sizeof(path), "%s/%s", store, key);
    assert_int_equal(file_size(path), 3);
    snprintf(key, sizeof(key), "tenants/usr_1/jobs/%s/2/b.json", ok);
    assert_string_equal(nf_json_str(b, "object_key"), key);
    assert_string_equal(nf_json_str(b, "kind"), "file");
    assert_int_equal(cJSON_GetArraySize(b), 7); /* exactly the record's fields */
    assert_false(dir_exists(ok));

    /* the store refuses an upload: the attempt fails as infra (retried) */
    const cJSON *e = error_of(bad);
    assert_string_equal(nf_json_str(e, "class"), "infra");
    assert_string_equal(nf_json_str(e, "code"), "artifact_upload");
    assert_non_null(strstr(nf_json_str(e, "message"), "503 SlowDown"));
    assert_null(event("forge.job.succeeded", bad));
    assert_false(dir_exists(bad));
}

/* Starts a train job for usr_1, attempt 2, with extra top-level fields (",\"k\":v..."). */
static void start_with(const char *extra, char id[NF_ID_MAX])
{
    uint8_t rnd[10] = {0};
    char text[4096];
    rnd[9] = (uint8_t)++n_job;
    nf_id_new_at("job", 1700000000000ULL + (uint64_t)n_job, rnd, id, NF_ID_MAX);
    snprintf(text, sizeof(text),
             "{\"job_id\":\"%s\",\"user_id\":\"usr_1\",\"job_type\":\"train\",\"attempt\":2,"
             "\"params\":{}%s}",
             id, extra);
    cJSON *job = cJSON_Parse(text);
    assert_non_null(job);
    wk_job_start(ctx, job, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    cJSON_Delete(job);
}

static int index_of(const char *type, const char *job_id, int from)
{
    for (int i = from; i < nsent; i++) {
        const char *t = NULL, *subject = NULL, *msg = NULL;
        const cJSON *data = nf_event_data(sent[i], &t, &subject, &msg);
        if (data && strcmp(t, type) == 0 && strcmp(nf_json_str(data, "job_id"), job_id) == 0)
            return i;
    }
    return -1;
}

/* Checkpoints are uploaded and recorded while the handler runs, before its terminal
 * event, whether it then succeeds or fails; they never join the final upload. */
static void test_checkpoints_recorded_during_the_run(void **state)
{
    char ok[NF_ID_MAX], bad[NF_ID_MAX], key[256], path[2 * PATH_MAX];
    script("train", "printf one > checkpoint-epoch-1.tar\n"
                    "echo '{\"artifact\":{\"path\":\"checkpoint-epoch-1.tar\","
                    "\"kind\":\"checkpoint\",\"epoch\":1,\"step\":70}}'\n"
                    "sleep 0.5\n"
                    "printf two > checkpoint-epoch-2.tar\n"
                    "echo '{\"artifact\":{\"path\":\"checkpoint-epoch-2.tar\","
                    "\"kind\":\"checkpoint\"}}'\n"
                    "echo '{\"artifact\":{\"path\":\"../nope\",\"kind\":\"checkpoint\"}}'\n"
                    "printf m > model.tar\n"
                    "echo '{\"artifact\":{\"path\":\"model.tar\",\"kind\":\"model\"}}'\n"
                    "echo '{\"result\":{}}'\n"
                    "[ -e fail ] && exit 3; exit 0");
    start_with("", ok);
    assert_true(run_until_idle(10000));
    int first = index_of("forge.job.checkpoint", ok, 0);
    assert_true(first >= 0);
    int second = index_of("forge.job.checkpoint", ok, first + 1);
    assert_true(second > first);
    assert_int_equal(index_of("forge.job.checkpoint", ok, second + 1), -1); /* ../nope */
    int done = index_of("forge.job.succeeded", ok, 0);
    assert_true(done > second);
    const cJSON *data = cJSON_GetObjectItem(sent[first], "data");
    assert_string_equal(nf_json_str(data, "status"), "running");
    assert_int_equal(nf_json_int(data, "attempt", 0), 2);
    assert_int_equal(nf_json_int(data, "epoch", -1), 1);
    assert_int_equal(nf_json_int(data, "step", -1), 70);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(sent[second], "data"), "epoch"));
    const cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItem(data, "artifacts"), 0);
    snprintf(key, sizeof(key), "tenants/usr_1/jobs/%s/2/checkpoint-epoch-1.tar", ok);
    assert_string_equal(nf_json_str(a, "object_key"), key);
    assert_string_equal(nf_json_str(a, "kind"), "checkpoint");
    assert_string_equal(nf_json_str(a, "name"), "checkpoint-epoch-1.tar");
    assert_int_equal(nf_json_int(a, "bytes", -1), 3);
    snprintf(path, sizeof(path), "%s/%s", store, key);
    assert_int_equal(file_size(path), 3);
    const cJSON *arts = cJSON_GetObjectItem(cJSON_GetObjectItem(sent[done], "data"), "artifacts");
    assert_int_equal(cJSON_GetArraySize(arts), 1); /* model.tar only */
    assert_string_equal(nf_json_str(cJSON_GetArrayItem(arts, 0), "kind"), "model");
    assert_false(dir_exists(ok));

    /* a failing attempt: the checkpoint it announced last is still recorded first */
    script("train", "printf one > checkpoint-epoch-1.tar\n"
                    "echo '{\"artifact\":{\"path\":\"checkpoint-epoch-1.tar\","
                    "\"kind\":\"checkpoint\"}}'\n"
                    "exit 75");
    start_with("", bad);
    assert_true(run_until_idle(10000));
    first = index_of("forge.job.checkpoint", bad, 0);
    assert_true(first >= 0);
    assert_true(index_of("forge.job.failed", bad, 0) > first);
    assert_string_equal(nf_json_str(error_of(bad), "class"), "infra");
}

/* A retried attempt's dispatch names the job's newest checkpoint: fetched into
 * resume/checkpoint/<name> before exec, NF_RESUME_DIR names resume/; a checkpoint that
 * cannot be fetched is logged and the handler starts over (no NF_RESUME_DIR content). */
static void test_resume_checkpoint_fetched(void **state)
{
    char id[NF_ID_MAX], gone[NF_ID_MAX], extra[512];
    put("tenants/usr_1/jobs/job_prev/1/checkpoint-epoch-3.tar", "state3");
    script("train", "echo \"$NF_RESUME_DIR\" > \"$WK_SPY/$NF_JOB_ID.env\"\n"
                    "cat \"$NF_RESUME_DIR/checkpoint/checkpoint-epoch-3.tar\" "
                    "> \"$WK_SPY/$NF_JOB_ID.data\" 2>/dev/null\n"
                    "echo '{\"result\":{}}'");
    snprintf(extra, sizeof(extra),
             ",\"resume\":{\"artifact_id\":\"art_1\",\"uri\":\"artifact://art_1\","
             "\"name\":\"checkpoint-epoch-3.tar\",\"bytes\":6,"
             "\"object_key\":\"tenants/usr_1/jobs/job_prev/1/checkpoint-epoch-3.tar\"}");
    start_with(extra, id);
    snprintf(extra, sizeof(extra),
             ",\"resume\":{\"name\":\"checkpoint-epoch-3.tar\","
             "\"object_key\":\"tenants/usr_1/jobs/job_prev/1/gone.tar\"}");
    start_with(extra, gone);
    assert_true(run_until_idle(10000));
    assert_non_null(event("forge.job.succeeded", id));
    char *data = spy_text(id, "data"), *env = spy_text(id, "env");
    assert_string_equal(data, "state3");
    assert_non_null(strstr(env, "/resume"));
    free(data);
    free(env);
    assert_non_null(event("forge.job.succeeded", gone));
    data = spy_text(gone, "data");
    assert_string_equal(data, "");
    free(data);
    bool logged = false;
    for (int i = 0; i < nsent; i++) {
        const cJSON *d = cJSON_GetObjectItem(sent[i], "data");
        const char *m = nf_json_str(d, "message");
        if (strcmp(nf_json_str(d, "job_id"), gone) == 0 && m && strstr(m, "starting over"))
            logged = true;
    }
    assert_true(logged);
}

/* A deploy job's directory stays while its endpoint runs, and goes once it stopped. */
static void test_deploy_dir_kept(void **state)
{
    char id[NF_ID_MAX];
    script("deploy", "sleep 30 > /dev/null 2>&1 &\necho $! > endpoint.pid\n"
                     "cp endpoint.pid \"$WK_SPY/$NF_JOB_ID.pid\"\necho '{\"result\":{}}'");
    start("deploy", 0, "[]", id);
    assert_true(run_until_idle(10000));
    assert_non_null(event("forge.job.succeeded", id));
    nf_test_run_for(ctx->base, 2200);
    assert_true(dir_exists(id));
    char *text = spy_text(id, "pid");
    kill((pid_t)atoi(text), SIGKILL);
    free(text);
    nf_test_run_for(ctx->base, 2500);
    assert_false(dir_exists(id));
}

/* The same path against a real S3 server: the job's children run libcurl after fork. */
static void test_real_store(void **state)
{
    const char *ep = nf_test_env("NF_TEST_S3_ENDPOINT");
    nf_test_skip_unless(ep != NULL);
    char user[64], key[256], inputs[1024], err[256], path[PATH_MAX + 128], id[NF_ID_MAX];
    ctx->set.s3 = (struct nf_s3_conf){.endpoint = ep,
                                      .access_key = nf_test_env("NF_TEST_S3_ACCESS_KEY"),
                                      .secret_key = nf_test_env("NF_TEST_S3_SECRET_KEY"),
                                      .bucket = nf_test_env("NF_TEST_S3_BUCKET"),
                                      .timeout_ms = 5000};
    real_store = true;
    nf_test_unique_name(user, sizeof(user), "usr_");
    snprintf(key, sizeof(key), "tenants/%s/files/b/data.csv", user);
    snprintf(path, sizeof(path), "%s/data.csv", root);
    nf_test_write_file(path, "a,b\n1,2\n", 0644);
    assert_int_equal(__real_nf_s3_upload_file(&ctx->set.s3, key, path, NULL, err, sizeof(err)), 0);
    snprintf(inputs, sizeof(inputs),
             "[{\"param\":\"dataset_uri\",\"uri\":\"s3://b/data.csv\",\"object_key\":\"%s\","
             "\"name\":\"data.csv\"}]",
             key);
    script("audit", "tr 1 9 < ../inputs/dataset_uri/data.csv > report.csv\n"
                    "echo '{\"artifact\":{\"path\":\"report.csv\",\"kind\":\"report\"}}'");
    uint8_t rnd[10] = {0};
    char text[2048];
    rnd[9] = (uint8_t)++n_job;
    nf_id_new_at("job", 1700000000000ULL + (uint64_t)n_job, rnd, id, NF_ID_MAX);
    snprintf(text, sizeof(text),
             "{\"job_id\":\"%s\",\"user_id\":\"%s\",\"job_type\":\"audit\",\"attempt\":1,"
             "\"inputs\":%s}",
             id, user, inputs);
    cJSON *job = cJSON_Parse(text);
    wk_job_start(ctx, job, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    cJSON_Delete(job);
    assert_true(run_until_idle(20000));
    const cJSON *ok = event("forge.job.succeeded", id);
    if (ok == NULL)
        fail_msg("not succeeded: %s", nf_json_str(error_of(id), "message"));
    const cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItem(ok, "artifacts"), 0);
    snprintf(key, sizeof(key), "tenants/%s/jobs/%s/1/report.csv", user, id);
    assert_string_equal(nf_json_str(a, "object_key"), key);
    assert_int_equal(nf_json_int(a, "bytes", -1), 8);
    snprintf(path, sizeof(path), "%s/back.csv", root);
    assert_int_equal(__real_nf_s3_download_file(&ctx->set.s3, key, path, 0, err, sizeof(err)), 0);
    FILE *f = fopen(path, "r");
    char back[64] = "";
    assert_int_equal(fread(back, 1, sizeof(back) - 1, f), 8);
    fclose(f);
    assert_string_equal(back, "a,b\n9,2\n");
    snprintf(path, sizeof(path), "%s/%s-1", ctx->root, id);
    assert_int_equal(access(path, F_OK), -1);
}

int main(void)
{
    nf_log_init("test", getenv("DBG") ? NF_LOG_DEBUG : NF_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    return NF_TEST_RUN(setup, teardown, test_inputs_fetched, test_input_failures,
                       test_cancel_while_fetching, test_outputs,
                       test_checkpoints_recorded_during_the_run, test_resume_checkpoint_fetched,
                       test_deploy_dir_kept, test_real_store);
}
