/*
 * job.c end to end with real handler processes (small /bin/sh scripts) and a link-time
 * fake of publish.c: this file defines wk_publish and wk_publish_free, so the archive's
 * publish.o is never linked and every message the job code sends is recorded here instead
 * of going to Kafka. Deliveries are reported on the
 * next loop turn, or held back to check that a slot stays taken until they arrive.
 * The object store is faked with -Wl,--wrap (tests/unit/CMakeLists.txt): uploads are
 * copied under root/store/<key>. test_job_data.c covers inputs and outputs in depth.
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

/* ---- the fake publisher --------------------------------------------------------------- */

#define MAX_SENT 512

struct sent {
    char topic[32];
    char *payload;
    cJSON *ev;
};

static struct sent sent[MAX_SENT];
static int nsent;
static struct wk_job *undelivered[MAX_SENT];
static int nundelivered;
static bool hold_deliveries;
static bool heartbeats_fail; /* the simulated heartbeats are not answered 200 */
static struct event *deliver_ev;

static void deliver(evutil_socket_t fd, short what, void *arg)
{
    if (hold_deliveries)
        return;
    while (nundelivered > 0)
        wk_job_delivered(undelivered[--nundelivered]);
}

void wk_publish(struct wk_ctx *ctx, struct wk_job *job, const char *topic, const char *key,
                const char *payload)
{
    assert_true(nsent < MAX_SENT);
    snprintf(sent[nsent].topic, sizeof(sent[nsent].topic), "%s", topic);
    sent[nsent].payload = nf_xstrdup(payload);
    sent[nsent].ev = cJSON_Parse(payload);
    assert_non_null(sent[nsent].ev);
    nsent++;
    if (job != NULL) {
        wk_job_hold(job);
        undelivered[nundelivered++] = job;
        event_active(deliver_ev, EV_TIMEOUT, 0);
    }
}

void wk_publish_free(struct wk_ctx *ctx)
{
}

/* ---- fixture ------------------------------------------------------------------------------ */

static char root[PATH_MAX];
static char handlers[PATH_MAX + 16];
static char artifacts[PATH_MAX + 16]; /* the work dir */
static char spy[PATH_MAX + 16];       /* where handlers leave what the tests check */
static char store[PATH_MAX + 16];     /* the fake object store */

/* ---- the fake object store (runs in the job's child processes) -------------------------- */

/* Copies from -> to in this process (from may be /proc/self/fd/N), making to's parents. */
static int copy_file(const char *from, const char *to)
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
    return out != NULL && fclose(out) == 0 ? 0 : -1;
}

int __wrap_nf_s3_download_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                               long long max_bytes, char *err, size_t errlen)
{
    char from[2 * PATH_MAX];
    snprintf(from, sizeof(from), "%s/%s", store, key);
    return access(from, R_OK) == 0 && copy_file(from, path) == 0 ? 0 : -ENOENT;
}

int __wrap_nf_s3_upload_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                             const char *content_type, char *err, size_t errlen)
{
    char to[2 * PATH_MAX];
    snprintf(to, sizeof(to), "%s/%s", store, key);
    return copy_file(path, to) == 0 ? 0 : -EIO;
}
static struct wk_config cfg;
static struct wk_ctx *ctx;

static void script(const char *type, const char *body)
{
    char path[PATH_MAX + 64], text[4096];
    snprintf(path, sizeof(path), "%s/%s", handlers, type);
    assert_true((size_t)snprintf(text, sizeof(text), "#!/bin/sh\n%s\n", body) < sizeof(text));
    nf_test_write_file(path, text, 0755);
}

static void noop(evutil_socket_t fd, short what, void *arg)
{
}

static int setup(void **state)
{
    nf_test_tmpdir(root, sizeof(root), "nf-wk-job-");
    snprintf(handlers, sizeof(handlers), "%s/handlers", root);
    snprintf(artifacts, sizeof(artifacts), "%s/work", root);
    snprintf(spy, sizeof(spy), "%s/spy", root);
    snprintf(store, sizeof(store), "%s/store", root);
    mkdir(handlers, 0755);
    mkdir(spy, 0755);
    mkdir(store, 0755);
    setenv("NF_WORKER_REGISTRATION_TOKEN", "do-not-leak-this-token", 1);
    setenv("NF_S3_SECRET_KEY", "do-not-leak-this-key", 1);
    setenv("WK_SPY", spy, 1);

    ctx = calloc(1, sizeof(*ctx));
    ctx->base = event_base_new();
    memset(&cfg, 0, sizeof(cfg));
    cfg.handlers = nf_xstrdup(handlers);
    cfg.artifact_root = nf_xstrdup(artifacts);
    ctx->set.max_input_bytes = 1 << 20;
    if (wk_root_prepare(artifacts, ctx->root, sizeof(ctx->root)) < 0)
        return -1;
    cfg.slots = 8;
    cfg.kill_grace_s = 1;
    cfg.usage_window_s = 1;
    cfg.progress_ms = 100;
    ctx->cfg = &cfg;
    snprintf(ctx->worker_id, sizeof(ctx->worker_id), "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    snprintf(ctx->source, sizeof(ctx->source), "nf-worker/%s", ctx->worker_id);
    ctx->sigchld = evsignal_new(ctx->base, SIGCHLD, wk_on_sigchld, ctx);
    event_add(ctx->sigchld, NULL);
    deliver_ev = evtimer_new(ctx->base, deliver, NULL);
    /* api.c's hooks, as wk_api_start sets them; what wk_slot_freed may touch: the retry
     * timer (poll) and the shutdown event */
    ctx->heartbeat_now = wk_api_heartbeat_now;
    ctx->slot_freed = wk_slot_freed;
    ctx->retry = evtimer_new(ctx->base, noop, NULL);
    ctx->finish = evtimer_new(ctx->base, noop, NULL);
    nsent = nundelivered = 0;
    hold_deliveries = false;
    heartbeats_fail = false;
    return 0;
}

static int teardown(void **state)
{
    ctx->closing = true;
    hold_deliveries = false;
    wk_jobs_free(ctx);
    wk_jobdir_free_all(ctx);
    for (int i = 0; i < nsent; i++) {
        free(sent[i].payload);
        cJSON_Delete(sent[i].ev);
    }
    nsent = nundelivered = 0;
    event_free(deliver_ev);
    event_free(ctx->retry);
    event_free(ctx->finish);
    event_free(ctx->sigchld);
    event_base_free(ctx->base);
    free(cfg.handlers);
    free(cfg.artifact_root);
    free(ctx);
    return nf_test_rmtree(root);
}

/* Every loop tick doubles as a heartbeat round trip (what api.c does every few seconds). */
static void heartbeat_round(void *arg)
{
    cJSON_Delete(wk_jobs_heartbeat(ctx));
    wk_jobs_heartbeat_done(ctx, !heartbeats_fail);
}

static bool idle(void *arg)
{
    return ctx->njobs == 0;
}

/* Runs the loop until no job is left (or max_ms). */
static bool run_until_idle(int max_ms)
{
    return nf_test_run_ticking(ctx->base, idle, NULL, max_ms, 10, heartbeat_round, NULL);
}

static void run_for(int ms)
{
    nf_test_run_ticking(ctx->base, NULL, NULL, ms, 10, heartbeat_round, NULL);
}

static int n_job = 0;

static void start(const char *type, int gpu_count, int timeout_s, char out_id[NF_ID_MAX])
{
    uint8_t rnd[10] = {0};
    rnd[9] = (uint8_t)++n_job;
    nf_id_new_at("job", 1700000000000ULL + (uint64_t)n_job, rnd, out_id, NF_ID_MAX);
    char text[512];
    snprintf(text, sizeof(text),
             "{\"job_id\":\"%s\",\"user_id\":\"usr_1\",\"job_type\":\"%s\",\"attempt\":2,"
             "\"gpu_count\":%d,\"timeout_seconds\":%d,\"params\":{\"domain\":\"law\"}}",
             out_id, type, gpu_count, timeout_s);
    cJSON *job = cJSON_Parse(text);
    wk_job_start(ctx, job, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    cJSON_Delete(job);
}

/* The data of the first event of `type` about job_id, or NULL. */
static const cJSON *event(const char *type, const char *job_id)
{
    for (int i = 0; i < nsent; i++) {
        const char *t = NULL, *subject = NULL, *msg = NULL;
        const cJSON *data = nf_event_data(sent[i].ev, &t, &subject, &msg);
        if (data && strcmp(t, type) == 0 && strcmp(nf_json_str(data, "job_id"), job_id) == 0)
            return data;
    }
    return NULL;
}

static int count(const char *type, const char *job_id)
{
    int n = 0;
    for (int i = 0; i < nsent; i++) {
        const char *t = NULL, *subject = NULL, *msg = NULL;
        const cJSON *data = nf_event_data(sent[i].ev, &t, &subject, &msg);
        if (data && strcmp(t, type) == 0 && strcmp(nf_json_str(data, "job_id"), job_id) == 0)
            n++;
    }
    return n;
}

/* Sum of usage quantities of a meter for job_id. */
static long long usage(const char *meter, const char *job_id, int *events)
{
    long long sum = 0;
    *events = 0;
    for (int i = 0; i < nsent; i++) {
        const cJSON *data = cJSON_GetObjectItem(sent[i].ev, "data");
        if (strcmp(sent[i].topic, "forge.usage") != 0 ||
            strcmp(nf_json_str(data, "job_id"), job_id) != 0 ||
            strcmp(nf_json_str(data, "meter"), meter) != 0)
            continue;
        sum += nf_json_int(data, "quantity", 0);
        (*events)++;
    }
    return sum;
}

static const cJSON *error_of(const char *job_id)
{
    const cJSON *failed = event("forge.job.failed", job_id);
    assert_non_null(failed);
    return cJSON_GetObjectItem(failed, "error");
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_success(void **state)
{
    char id[NF_ID_MAX], path[PATH_MAX + 128];
    script(
        "generate",
        "cat > \"$WK_SPY/$NF_JOB_ID.stdin.json\"\n"
        "echo \"$NF_JOB_ID $NF_GPU_COUNT $NF_ARTIFACT_DIR ${NF_WORKER_REGISTRATION_TOKEN:-none}\""
        " ${NF_S3_SECRET_KEY:-none} > \"$WK_SPY/$NF_JOB_ID.env\"\n"
        "echo '{\"progress\":0.5}'\n"
        "echo 'this is not json'\n"
        "echo '{\"log\":\"hello from the handler\"}'\n"
        "echo '{\"usage\":{\"input_tokens\":5,\"output_tokens\":7}}'\n"
        "echo '{\"usage\":{\"output_tokens\":3}}'\n"
        "printf x > out.txt\n"
        "echo '{\"artifact\":{\"path\":\"out.txt\",\"kind\":\"dataset\"}}'\n"
        "echo '{\"result\":{\"n\":1}}'\n"
        "echo 'a warning' >&2\n"
        "sleep 1.2\n"
        "printf '{\"result\":{\"n\":2}}'\n" /* last line without newline */
        "exit 0");
    start("generate", 2, 0, id);
    assert_int_equal(ctx->njobs, 1);
    assert_true(run_until_idle(10000));

    /* the handler got the job on stdin, its env, and not the agent's secrets */
    snprintf(path, sizeof(path), "%s/%s.stdin.json", spy, id);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[8192] = "";
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    cJSON *in = cJSON_Parse(buf);
    assert_string_equal(nf_json_str(in, "job_id"), id);
    /* no inputs: an empty object all the same */
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(in, "inputs")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(in, "inputs")), 0);
    cJSON_Delete(in);
    snprintf(path, sizeof(path), "%s/%s.env", spy, id);
    f = fopen(path, "r");
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    char expect[8192];
    snprintf(expect, sizeof(expect), "%s 2 %s/%s-2/out none none\n", id, ctx->root, id);
    assert_string_equal(buf, expect);
    /* the attempt's directory is gone */
    snprintf(path, sizeof(path), "%s/%s-2", ctx->root, id);
    assert_int_equal(access(path, F_OK), -1);

    const cJSON *running = event("forge.job.running", id);
    assert_non_null(running);
    assert_string_equal(nf_json_str(running, "worker_id"), ctx->worker_id);
    assert_int_equal(nf_json_int(running, "attempt", 0), 2);
    assert_string_equal(nf_json_str(running, "user_id"), "usr_1");
    assert_int_equal(count("forge.job.progress", id), 1);
    const cJSON *log = event("forge.job.log", id);
    assert_non_null(log);
    assert_string_equal(nf_json_str(log, "message"), "hello from the handler");

    const cJSON *ok = event("forge.job.succeeded", id);
    assert_non_null(ok);
    assert_null(event("forge.job.failed", id));
    assert_int_equal(nf_json_int(cJSON_GetObjectItem(ok, "result"), "n", 0), 2);
    const cJSON *arts = cJSON_GetObjectItem(ok, "artifacts");
    assert_int_equal(cJSON_GetArraySize(arts), 1);
    const cJSON *a = cJSON_GetArrayItem(arts, 0);
    assert_string_equal(nf_json_str(a, "name"), "out.txt");
    assert_string_equal(nf_json_str(a, "kind"), "dataset");
    assert_int_equal(nf_json_int(a, "bytes", 0), 1);
    char sha[NF_SHA256_HEX_LEN + 1];
    nf_crypto_sha256_hex("x", 1, sha);
    assert_string_equal(nf_json_str(a, "sha256"), sha);
    /* uploaded under the attempt's prefix; its uri names the artifact */
    char key[160], uri[128];
    snprintf(key, sizeof(key), "tenants/usr_1/jobs/%s/2/out.txt", id);
    assert_string_equal(nf_json_str(a, "object_key"), key);
    snprintf(uri, sizeof(uri), "artifact://%s", nf_json_str(a, "artifact_id"));
    assert_string_equal(nf_json_str(a, "uri"), uri);
    char stored[2 * PATH_MAX];
    snprintf(stored, sizeof(stored), "%s/%s", store, key);
    assert_int_equal(access(stored, R_OK), 0);

    int n = 0;
    assert_int_equal(usage("output_tokens", id, &n), 10);
    assert_int_equal(n, 1);
    assert_int_equal(usage("input_tokens", id, &n), 5);
    /* ran >= 1.2 s with 2 GPUs in 1 s windows: >= 2 windows, gpu_ms ~ 2 x wall time */
    long long gpu = usage("gpu_ms", id, &n);
    assert_true(n >= 2);
    assert_true(gpu >= 2400 && gpu < 2 * 4000);
    /* the terminal event counts them all: billing closes the attempt when it has them */
    int total = 0;
    for (int i = 0; i < nsent; i++)
        total += strcmp(sent[i].topic, "forge.usage") == 0 &&
                 strcmp(nf_json_str(cJSON_GetObjectItem(sent[i].ev, "data"), "job_id"), id) == 0;
    assert_int_equal(nf_json_int(ok, "usage_events", -1), total);
    assert_int_equal(total, n + 2);
    /* every usage event has a distinct deterministic id */
    for (int i = 0; i < nsent; i++)
        for (int j = i + 1; j < nsent; j++)
            if (strcmp(sent[i].topic, "forge.usage") == 0 &&
                strcmp(sent[j].topic, "forge.usage") == 0)
                assert_string_not_equal(nf_json_str(sent[i].ev, "id"),
                                        nf_json_str(sent[j].ev, "id"));
}

static void test_exit_codes(void **state)
{
    char retry[NF_ID_MAX], user[NF_ID_MAX], sig[NF_ID_MAX];
    script("audit", "echo 'temporary glitch' >&2\nexit 75");
    script("distill", "echo 'first' >&2\necho 'bad dataset given' >&2\nexit 3");
    script("evaluate", "kill -9 $$");
    start("audit", 0, 0, retry);
    start("distill", 0, 0, user);
    start("evaluate", 0, 0, sig);
    assert_true(run_until_idle(10000));

    const cJSON *e = error_of(retry);
    assert_string_equal(nf_json_str(e, "class"), "infra");
    assert_non_null(strstr(nf_json_str(e, "message"), "temporary glitch"));
    e = error_of(user);
    assert_string_equal(nf_json_str(e, "class"), "user_error");
    assert_string_equal(nf_json_str(e, "code"), "handler_failed");
    assert_non_null(strstr(nf_json_str(e, "message"), "code 3"));
    assert_non_null(strstr(nf_json_str(e, "message"), "bad dataset given"));
    e = error_of(sig);
    assert_string_equal(nf_json_str(e, "class"), "user_error");
    assert_non_null(strstr(nf_json_str(e, "message"), "signal 9"));
    /* no GPU asked: no gpu_ms usage at all */
    int n = 0;
    usage("gpu_ms", retry, &n);
    assert_int_equal(n, 0);
    assert_null(event("forge.job.succeeded", retry));
    /* and a failed attempt that published no usage says so */
    assert_int_equal(nf_json_int(event("forge.job.failed", retry), "usage_events", -1), 0);
}

static void test_timeout_and_kill(void **state)
{
    char polite[NF_ID_MAX], stubborn[NF_ID_MAX];
    script("train", "sleep 30");
    script("deploy", "trap '' TERM\nsleep 30");
    long long t0 = nf_test_now_ms();
    start("train", 1, 1, polite);
    start("deploy", 1, 1, stubborn);
    assert_true(run_until_idle(10000));
    long long took = nf_test_now_ms() - t0;
    assert_true(took >= 1900 && took < 6000); /* 1 s timeout + 1 s grace for the stubborn */
    const cJSON *e = error_of(polite);
    assert_string_equal(nf_json_str(e, "class"), "timeout");
    e = error_of(stubborn);
    assert_string_equal(nf_json_str(e, "class"), "timeout");
}

static void test_bad_artifact_and_long_lines(void **state)
{
    char esc[NF_ID_MAX], flood[NF_ID_MAX];
    script("deploy", "echo secret > ../escape.txt\n"
                     "echo '{\"artifact\":{\"path\":\"../escape.txt\"}}'");
    /* a 100 KB line without a newline, then a normal result */
    script("generate", "head -c 100000 /dev/zero | tr '\\0' a\n"
                       "echo\n"
                       "echo '{\"result\":{\"ok\":true}}'");
    start("deploy", 0, 0, esc);
    start("generate", 0, 0, flood);
    assert_true(run_until_idle(10000));
    const cJSON *e = error_of(esc);
    assert_string_equal(nf_json_str(e, "class"), "user_error");
    assert_string_equal(nf_json_str(e, "code"), "bad_artifact");
    assert_non_null(strstr(nf_json_str(e, "message"), "escapes"));
    const cJSON *ok = event("forge.job.succeeded", flood);
    assert_non_null(ok);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(ok, "result"), "ok")));
}

static void test_cannot_run(void **state)
{
    char missing[NF_ID_MAX], stopping[NF_ID_MAX], path[PATH_MAX + 128];
    snprintf(path, sizeof(path), "%s/train", handlers);
    unlink(path);
    start("train", 1, 0, missing);
    ctx->stopping = true;
    script("audit", "exit 0");
    start("audit", 1, 0, stopping);
    assert_true(run_until_idle(5000));
    const cJSON *e = error_of(missing);
    assert_string_equal(nf_json_str(e, "class"), "infra");
    assert_string_equal(nf_json_str(e, "code"), "handler_unavailable");
    e = error_of(stopping);
    assert_string_equal(nf_json_str(e, "class"), "infra");
    assert_string_equal(nf_json_str(e, "code"), "worker_shutdown");
    assert_null(event("forge.job.running", stopping));
    /* never started: no job directory, no usage */
    snprintf(path, sizeof(path), "%s/%s-2", ctx->root, stopping);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_cancel_and_shutdown(void **state)
{
    char cancelled[NF_ID_MAX], drained[NF_ID_MAX];
    script("evaluate", "sleep 30");
    script("distill", "sleep 30");
    start("evaluate", 1, 0, cancelled);
    start("distill", 1, 0, drained);
    run_for(300);
    cJSON *hb = wk_jobs_heartbeat(ctx);
    assert_int_equal(cJSON_GetArraySize(hb), 2);
    assert_string_equal(nf_json_str(cJSON_GetArrayItem(hb, 0), "lease_id"),
                        "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    cJSON_Delete(hb);
    wk_job_cancel(ctx, cancelled);
    wk_job_cancel(ctx, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ"); /* unknown: ignored */
    wk_jobs_terminate(ctx);
    assert_true(run_until_idle(5000));
    assert_non_null(event("forge.job.cancelled", cancelled));
    assert_null(event("forge.job.failed", cancelled));
    const cJSON *e = error_of(drained);
    assert_string_equal(nf_json_str(e, "class"), "infra");
    assert_string_equal(nf_json_str(e, "code"), "worker_shutdown");
}

static void test_slot_held_until_delivered(void **state)
{
    char id[NF_ID_MAX];
    script("generate", "echo '{\"result\":{}}'");
    hold_deliveries = true;
    heartbeats_fail = true;
    start("generate", 1, 0, id);
    run_for(1500);
    assert_non_null(event("forge.job.succeeded", id));
    assert_int_equal(ctx->njobs, 1); /* finished, but Kafka has not confirmed yet */
    cJSON *hb = wk_jobs_heartbeat(ctx);
    assert_int_equal(cJSON_GetArraySize(hb), 1); /* its lease is still renewed */
    cJSON_Delete(hb);
    hold_deliveries = false;
    event_active(deliver_ev, EV_TIMEOUT, 0);
    /* delivered, but no heartbeat confirmed the lease yet: the manager could still think
     * the job never reached this worker, so the job stays listed */
    run_for(300);
    assert_int_equal(nundelivered, 0);
    assert_int_equal(ctx->njobs, 1);
    heartbeats_fail = false;
    assert_true(run_until_idle(2000));
}

/* A cancel reaches a handler that ignores SIGTERM within the kill grace: SIGKILL, then
 * forge.job.cancelled (not a failure). */
static void test_cancel_stubborn(void **state)
{
    char id[NF_ID_MAX];
    script("train", "trap '' TERM\necho '{\"progress\":0.1}'\nsleep 30");
    start("train", 2, 0, id);
    run_for(300);
    long long t0 = nf_test_now_ms();
    wk_job_cancel(ctx, id);
    assert_true(run_until_idle(5000));
    long long took = nf_test_now_ms() - t0;
    assert_true(took >= 900 && took < 3000); /* kill_grace_s = 1 */
    assert_non_null(event("forge.job.cancelled", id));
    assert_null(event("forge.job.failed", id));
    assert_null(event("forge.job.succeeded", id));
    int n = 0;
    assert_true(usage("gpu_ms", id, &n) > 0); /* the GPU time it did use is metered */
}

/* The lease was lost (reaped, or the job retried elsewhere): the handler is stopped and
 * nothing more is reported for this attempt; the slot is free again. */
static void test_lost(void **state)
{
    char id[NF_ID_MAX], done[NF_ID_MAX];
    script("audit", "echo '{\"progress\":0.5}'\nsleep 30\necho '{\"result\":{}}'");
    script("generate", "echo '{\"result\":{\"n\":1}}'");
    heartbeats_fail = true; /* never confirmed: the loss alone must free the slot */
    start("audit", 1, 0, id);
    run_for(300);
    int before = nsent;
    wk_job_lost(ctx, id, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ"); /* another lease: not this one */
    run_for(300);
    assert_int_equal(ctx->njobs, 1);
    wk_job_lost(ctx, id, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    wk_job_lost(ctx, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ", NULL); /* unknown: ignored */
    assert_true(run_until_idle(5000));
    for (int i = before; i < nsent; i++) {
        const char *type = nf_json_str(sent[i].ev, "type");
        if (strcmp(sent[i].topic, "forge.usage") == 0 ||
            (type &&
             (strstr(type, "succeeded") || strstr(type, "failed") || strstr(type, "cancelled"))))
            fail_msg("reported %s %s after the lease was lost", sent[i].topic, type);
    }
    /* a job that finishes, then hears its lease is gone, keeps its report */
    heartbeats_fail = false;
    start("generate", 0, 0, done);
    run_for(200);
    wk_job_lost(ctx, done, NULL);
    assert_true(run_until_idle(2000));
    assert_non_null(event("forge.job.succeeded", done));
    assert_null(wk_job_lease(ctx, done));
}

/* This worker lost a job's lease (a long stall) and is then given the retry of the same
 * job: the old attempt is stopped without a report, the new one runs and reports. */
static void test_retry_supersedes_old_attempt(void **state)
{
    static const char *const id = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1AAA";
    script("train", "echo '{\"progress\":0.1}'\nsleep \"$(cat /dev/stdin | grep -c slow | "
                    "sed 's/1/30/;s/^0$/0/')\"\necho '{\"result\":{\"ok\":1}}'");
    cJSON *old = cJSON_Parse("{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1AAA\",\"user_id\":\"u\","
                             "\"job_type\":\"train\",\"attempt\":1,\"params\":{\"m\":\"slow\"}}");
    cJSON *retry = cJSON_Parse("{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1AAA\",\"user_id\":\"u\","
                               "\"job_type\":\"train\",\"attempt\":2,\"params\":{}}");
    wk_job_start(ctx, old, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1OLD");
    run_for(300);
    wk_job_start(ctx, retry, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1NEW");
    assert_string_equal(wk_job_lease(ctx, id), "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1NEW");
    /* the manager's late notice about the old lease does not touch the new attempt */
    wk_job_lost(ctx, id, "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1OLD");
    assert_true(run_until_idle(5000));
    cJSON_Delete(old);
    cJSON_Delete(retry);
    int succeeded = 0, terminal = 0;
    for (int i = 0; i < nsent; i++) {
        const char *t = nf_json_str(sent[i].ev, "type");
        const cJSON *data = cJSON_GetObjectItem(sent[i].ev, "data");
        if (t == NULL || strcmp(sent[i].topic, "forge.jobs.events") != 0)
            continue;
        if (strstr(t, "succeeded") || strstr(t, "failed") || strstr(t, "cancelled")) {
            terminal++;
            assert_int_equal(nf_json_int(data, "attempt", 0), 2);
        }
        succeeded += strstr(t, "succeeded") != NULL;
    }
    assert_int_equal(terminal, 1);
    assert_int_equal(succeeded, 1);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN); /* as nf_app does: a handler may exit before reading stdin */
    return NF_TEST_RUN(setup, teardown, test_success, test_exit_codes, test_timeout_and_kill,
                       test_bad_artifact_and_long_lines, test_cannot_run, test_cancel_and_shutdown,
                       test_slot_held_until_delivered, test_cancel_stubborn, test_lost,
                       test_retry_supersedes_old_attempt);
}
