/*
 * The worker-manager's Redis scripts against a real Redis (NF_TEST_REDIS_ADDR=host:port;
 * skipped when unset). The scripts use fixed wm:* keys, so the test works in its own
 * database (SELECT 13) and empties it before each test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "wm.h"

#define TEST_DB 13
#define TTL_MS 30000

static redisContext *rc;

static bool hb_draining_arg; /* heartbeat(): the agent says it is stopping */

static int setup(void **state)
{
    hb_draining_arg = false;
    const char *addr = getenv("NF_TEST_REDIS_ADDR");
    if (addr == NULL || *addr == '\0')
        return 0; /* each test skips itself */
    char *host = NULL;
    int port = 0;
    if (nf_cfg_split_addr(addr, &host, &port) < 0)
        return -1;
    rc = redisConnect(host, port);
    free(host);
    if (rc == NULL || rc->err)
        return -1;
    redisReply *r = redisCommand(rc, "SELECT %d", TEST_DB);
    freeReplyObject(r);
    r = redisCommand(rc, "FLUSHDB");
    freeReplyObject(r);
    return 0;
}

static int teardown(void **state)
{
    if (rc != NULL) {
        redisReply *r = redisCommand(rc, "FLUSHDB");
        freeReplyObject(r);
        redisFree(rc);
        rc = NULL;
    }
    return 0;
}

#define NEED_REDIS()                                                                               \
    do {                                                                                           \
        if (rc == NULL)                                                                            \
            skip();                                                                                \
    } while (0)

/* EVAL script with nkeys keys then args (NULL-terminated list). Caller frees. */
static redisReply *eval(const char *script, int nkeys, ...)
{
    const char *argv[64];
    char nk[8];
    int argc = 0;
    va_list ap;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = nk;
    va_start(ap, nkeys);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    redisReply *r = redisCommandArgv(rc, argc, argv, NULL);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("script error: %s", r->str);
    return r;
}

static long long integer(redisReply *r)
{
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static char *get(const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(rc, fmt, arg);
    char *out = r->type == REDIS_REPLY_STRING ? nf_xstrdup(r->str) : NULL;
    freeReplyObject(r);
    return out;
}

static long long cmd_int(const char *fmt, const char *a, const char *b)
{
    redisReply *r = redisCommand(rc, fmt, a, b);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    if (r->type == REDIS_REPLY_NIL)
        v = -2;
    freeReplyObject(r);
    return v;
}

static void job_id(int n, char out[NF_ID_MAX])
{
    uint8_t rnd[10] = {0};
    rnd[9] = (uint8_t)n;
    nf_id_new_at("job", 1700000000000ULL + (uint64_t)n, rnd, out, NF_ID_MAX);
}

/* Queues a dispatch via the enqueue script; returns the script's answer. */
static long long enqueue(const char *id, const char *type, int priority, int attempt,
                         const char *extra)
{
    char data[1024], key[96], lease[96], queue[64], att[16], score[16], tomb[96];
    snprintf(data, sizeof(data),
             "{\"job_id\":\"%s\",\"user_id\":\"usr_1\",\"job_type\":\"%s\",\"priority\":%d,"
             "\"attempt\":%d%s%s}",
             id, type, priority, attempt, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof(key), "wm:job:%s", id);
    snprintf(lease, sizeof(lease), "wm:lease:%s", id);
    snprintf(queue, sizeof(queue), "wm:queue:%s", type);
    snprintf(att, sizeof(att), "%d", attempt);
    snprintf(score, sizeof(score), "%d", 9 - priority);
    snprintf(tomb, sizeof(tomb), "wm:cancelled:%s", id);
    return integer(
        eval(wm_lua_enqueue, 5, key, queue, lease, "wm:leases", tomb, data, att, score, id, NULL));
}

struct popped {
    bool draining; /* the script answered -1 */
    bool got;
    char job_id[NF_ID_MAX];
    long long attempt;
};

/* Pops for worker wid over the given queue types (comma list) at time now. */
static struct popped pop(const char *wid, const char *types, const char *gpu_type, int gpu_count,
                         const char *labels, const char *lease_id, unsigned long long now)
{
    const char *argv[64];
    char nk[8], count[8], now_s[24], ttl[16], wkey[96], wlkey[96];
    char queues[WM_NJOB_TYPES][48];
    int argc = 0, nkeys = 3;
    snprintf(wkey, sizeof(wkey), "wm:worker:%s", wid);
    snprintf(wlkey, sizeof(wlkey), "wm:wleases:%s", wid);
    argv[argc++] = "EVAL";
    argv[argc++] = wm_lua_pop;
    argv[argc++] = nk;
    argv[argc++] = "wm:leases";
    argv[argc++] = wkey;
    argv[argc++] = wlkey;
    unsigned mask = 0;
    assert_int_equal(wm_types_parse(types, &mask), 0);
    for (int i = 0; i < WM_NJOB_TYPES; i++)
        if (mask & (1u << i)) {
            snprintf(queues[i], sizeof(queues[i]), "wm:queue:%s", wm_job_types[i]);
            argv[argc++] = queues[i];
            nkeys++;
        }
    snprintf(nk, sizeof(nk), "%d", nkeys);
    snprintf(count, sizeof(count), "%d", gpu_count);
    snprintf(now_s, sizeof(now_s), "%llu", now);
    snprintf(ttl, sizeof(ttl), "%d", TTL_MS);
    argv[argc++] = wid;
    argv[argc++] = gpu_type;
    argv[argc++] = count;
    argv[argc++] = labels;
    argv[argc++] = lease_id;
    argv[argc++] = now_s;
    argv[argc++] = ttl;
    argv[argc++] = "50";
    argv[argc++] = "15";
    redisReply *r = redisCommandArgv(rc, argc, argv, NULL);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("pop error: %s", r->str);
    struct popped p = {0};
    if (r->type == REDIS_REPLY_ARRAY) {
        assert_int_equal(r->elements, 3);
        p.got = true;
        snprintf(p.job_id, sizeof(p.job_id), "%s", r->element[0]->str);
        cJSON *data = cJSON_Parse(r->element[1]->str);
        assert_non_null(data);
        assert_string_equal(nf_json_str(data, "job_id"), p.job_id);
        cJSON_Delete(data);
        p.attempt = strtoll(r->element[2]->str, NULL, 10);
    } else if (r->type == REDIS_REPLY_INTEGER) {
        assert_int_equal(r->integer, -1);
        p.draining = true;
    } else {
        assert_int_equal(r->type, REDIS_REPLY_NIL);
    }
    freeReplyObject(r);
    return p;
}

static const unsigned long long T0 = 1800000000000ULL;

static void test_enqueue_idempotent(void **state)
{
    NEED_REDIS();
    char id[NF_ID_MAX];
    job_id(1, id);
    assert_int_equal(enqueue(id, "train", 7, 1, NULL), 1);
    assert_int_equal(enqueue(id, "train", 7, 1, NULL), 0); /* redelivery */
    assert_int_equal(cmd_int("ZCARD %s", "wm:queue:train", NULL), 1);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:queue:train", id), 2); /* 9 - 7 */

    /* leased: a redelivery of the same attempt still changes nothing */
    struct popped p = pop("wrk_a", "train", "", 1, "{}", "lse_1", T0);
    assert_true(p.got);
    assert_int_equal(enqueue(id, "train", 7, 1, NULL), 0);
    assert_int_equal(cmd_int("ZCARD %s", "wm:queue:train", NULL), 0);

    /* a retry (attempt 2) supersedes the old lease and queues again */
    assert_int_equal(enqueue(id, "train", 7, 2, NULL), 1);
    assert_int_equal(cmd_int("EXISTS %s%s", "wm:lease:", id), 0);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:leases", id), -2);
    assert_int_equal(cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_a", id), 0);
    assert_int_equal(cmd_int("ZCARD %s", "wm:queue:train", NULL), 1);
    /* an older attempt arriving late is ignored */
    assert_int_equal(enqueue(id, "train", 7, 1, NULL), 0);
    p = pop("wrk_b", "train", "", 1, "{}", "lse_2", T0);
    assert_true(p.got);
    assert_int_equal(p.attempt, 2);
}

static void test_pop_priority_and_age(void **state)
{
    NEED_REDIS();
    char low[NF_ID_MAX], high_old[NF_ID_MAX], high_new[NF_ID_MAX], other[NF_ID_MAX];
    job_id(10, low);
    job_id(11, high_old);
    job_id(12, high_new);
    job_id(13, other);
    enqueue(low, "generate", 1, 1, NULL);
    enqueue(high_new, "generate", 5, 1, NULL);
    enqueue(high_old, "generate", 5, 1, NULL);
    enqueue(other, "train", 9, 1, NULL);

    /* across the worker's queues: the highest priority first */
    struct popped p = pop("wrk_a", "generate,train", "", 1, "{}", "lse_1", T0);
    assert_string_equal(p.job_id, other);
    /* equal priority: the older id first */
    p = pop("wrk_a", "generate,train", "", 1, "{}", "lse_2", T0);
    assert_string_equal(p.job_id, high_old);
    p = pop("wrk_a", "generate", "", 1, "{}", "lse_3", T0);
    assert_string_equal(p.job_id, high_new);
    /* a worker not doing generate sees nothing */
    p = pop("wrk_b", "audit,train", "", 8, "{}", "lse_4", T0);
    assert_false(p.got);
    p = pop("wrk_a", "generate", "", 1, "{}", "lse_5", T0);
    assert_string_equal(p.job_id, low);
    p = pop("wrk_a", "generate", "", 1, "{}", "lse_6", T0);
    assert_false(p.got);
}

static void test_pop_requirements_and_lease(void **state)
{
    NEED_REDIS();
    char h100[NF_ID_MAX], big[NF_ID_MAX], eu[NF_ID_MAX], plain[NF_ID_MAX], orphan[NF_ID_MAX];
    job_id(20, h100);
    job_id(21, big);
    job_id(22, eu);
    job_id(23, plain);
    job_id(24, orphan);
    enqueue(h100, "evaluate", 9, 1, "\"gpu_type\":\"h100\",\"gpu_count\":1");
    enqueue(big, "evaluate", 9, 1, "\"gpu_type\":null,\"gpu_count\":8");
    enqueue(eu, "evaluate", 9, 1, "\"gpu_count\":1,\"labels\":{\"zone\":\"eu\"}");
    enqueue(plain, "evaluate", 0, 3, "\"gpu_count\":1,\"labels\":null");
    /* a queue member whose data vanished is dropped by the scan */
    redisReply *r = redisCommand(rc, "ZADD wm:queue:evaluate 0 %s", orphan);
    freeReplyObject(r);

    struct popped p = pop("wrk_a", "evaluate", "a100", 4, "{\"zone\":\"us\"}", "lse_x", T0);
    assert_true(p.got);
    assert_string_equal(p.job_id, plain); /* the three before it do not match */
    assert_int_equal(p.attempt, 3);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:queue:evaluate", orphan), -2);
    assert_int_equal(cmd_int("ZCARD %s", "wm:queue:evaluate", NULL), 3);

    /* the lease */
    char key[96];
    snprintf(key, sizeof(key), "wm:lease:%s", plain);
    char *lease = get("GET %s", key);
    assert_non_null(lease);
    cJSON *l = cJSON_Parse(lease);
    assert_string_equal(nf_json_str(l, "worker_id"), "wrk_a");
    assert_string_equal(nf_json_str(l, "lease_id"), "lse_x");
    assert_int_equal(nf_json_int(l, "attempt", 0), 3);
    assert_int_equal(nf_json_int(l, "granted_ms", 0), (long long)T0);
    cJSON_Delete(l);
    free(lease);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:leases", plain), (long long)T0 + TTL_MS);
    assert_int_equal(cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_a", plain), 1);
    assert_true(cmd_int("PTTL %s", key, NULL) > TTL_MS);

    /* each of the others goes to the worker that fits it */
    p = pop("wrk_b", "evaluate", "h100", 1, "{}", "lse_y", T0);
    assert_string_equal(p.job_id, h100);
    p = pop("wrk_c", "evaluate", "a100", 8, "{}", "lse_z", T0);
    assert_string_equal(p.job_id, big);
    p = pop("wrk_d", "evaluate", "", 1, "{\"zone\":\"us\"}", "lse_w", T0);
    assert_false(p.got);
    p = pop("wrk_d", "evaluate", "", 1, "{\"zone\":\"eu\",\"rack\":\"1\"}", "lse_w", T0);
    assert_string_equal(p.job_id, eu);
}

/* The pop script and wm_job_matches agree on a grid of jobs x workers. */
static void test_pop_agrees_with_c(void **state)
{
    NEED_REDIS();
    static const char *const jobs[] = {
        "",
        "\"gpu_type\":null,\"gpu_count\":0",
        "\"gpu_type\":\"a100\",\"gpu_count\":2",
        "\"gpu_type\":\"\",\"gpu_count\":1",
        "\"gpu_count\":3,\"labels\":{\"zone\":\"eu\"}",
        "\"labels\":{\"zone\":\"eu\",\"tier\":\"gold\"}",
        "\"labels\":{}",
        "\"gpu_type\":\"h100\"",
    };
    static const struct {
        const char *gpu_type;
        int gpu_count;
        const char *labels;
    } workers[] = {
        {"", 0, "{}"},
        {"a100", 2, "{\"zone\":\"eu\"}"},
        {"a100", 4, "{\"zone\":\"eu\",\"tier\":\"gold\"}"},
        {"h100", 1, "{\"tier\":\"gold\"}"},
    };
    int n = 100;
    for (size_t j = 0; j < sizeof(jobs) / sizeof(jobs[0]); j++) {
        for (size_t w = 0; w < sizeof(workers) / sizeof(workers[0]); w++) {
            char id[NF_ID_MAX], text[512];
            job_id(n++, id);
            assert_int_equal(enqueue(id, "audit", 0, 1, jobs[j][0] ? jobs[j] : NULL), 1);
            struct wm_worker wk = {0};
            wk.gpu_type = nf_xstrdup(workers[w].gpu_type);
            wk.gpu_count = workers[w].gpu_count;
            wk.labels = cJSON_Parse(workers[w].labels);
            snprintf(text, sizeof(text), "{%s}", jobs[j]);
            cJSON *job = cJSON_Parse(text);
            bool c = wm_job_matches(&wk, job);
            struct popped p = pop("wrk_g", "audit", workers[w].gpu_type, workers[w].gpu_count,
                                  workers[w].labels, "lse_g", T0);
            if (p.got != c)
                fail_msg("job {%s} worker %zu: lua %d, C %d", jobs[j], w, p.got, c);
            cJSON_Delete(job);
            wm_worker_clear(&wk);
            redisReply *r = redisCommand(rc, "DEL wm:queue:audit");
            freeReplyObject(r);
        }
    }
}

/* Runs the heartbeat script; cancelled (and, in hb_lost, the lost) ids joined by ','. */
static long long released, hb_draining, hb_drained;
static char hb_lost[512], hb_lost_leases[512];

static void join_ids(const redisReply *list, char *out, size_t len)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < list->elements; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%s", i ? "," : "", list->element[i]->str);
}

static void heartbeat(const char *wid, unsigned long long now, char *cancelled, size_t len,
                      long long *pg, long long *renewed, ...)
{
    const char *argv[64];
    char wkey[96], wlkey[96], ckey[96], now_s[24], ttl[16];
    int argc = 0;
    va_list ap;
    snprintf(wkey, sizeof(wkey), "wm:worker:%s", wid);
    snprintf(wlkey, sizeof(wlkey), "wm:wleases:%s", wid);
    snprintf(ckey, sizeof(ckey), "wm:cancel:%s", wid);
    snprintf(now_s, sizeof(now_s), "%llu", now);
    snprintf(ttl, sizeof(ttl), "%d", TTL_MS);
    argv[argc++] = "EVAL";
    argv[argc++] = wm_lua_heartbeat;
    argv[argc++] = "5";
    argv[argc++] = "wm:leases";
    argv[argc++] = wkey;
    argv[argc++] = wlkey;
    argv[argc++] = ckey;
    argv[argc++] = "wm:workers";
    argv[argc++] = wid;
    argv[argc++] = now_s;
    argv[argc++] = ttl;
    argv[argc++] = "15";     /* worker TTL s */
    argv[argc++] = "604800"; /* done TTL s */
    argv[argc++] = "60000";  /* pg every ms */
    argv[argc++] = hb_draining_arg ? "1" : "0";
    va_start(ap, renewed);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    redisReply *r = redisCommandArgv(rc, argc, argv, NULL);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("heartbeat error: %s", r->str);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 8);
    *pg = r->element[0]->integer;
    *renewed = r->element[2]->integer;
    released = r->element[3]->integer;
    hb_draining = r->element[5]->integer;
    hb_drained = r->element[6]->integer;
    join_ids(r->element[1], cancelled, len);
    join_ids(r->element[4], hb_lost, sizeof(hb_lost));
    join_ids(r->element[7], hb_lost_leases, sizeof(hb_lost_leases));
    assert_int_equal(r->element[4]->elements, r->element[7]->elements);
    freeReplyObject(r);
}

static void test_heartbeat(void **state)
{
    NEED_REDIS();
    char a[NF_ID_MAX], b[NF_ID_MAX], c[NF_ID_MAX], d[NF_ID_MAX], cancelled[512], key[96];
    char expect[256];
    long long pg = 0, renewed = 0;
    job_id(200, a);
    job_id(201, b);
    job_id(202, c);
    job_id(203, d);
    for (int i = 0; i < 4; i++)
        enqueue((const char *[]){a, b, c, d}[i], "deploy", 0, 1, NULL);
    redisReply *r = redisCommand(rc, "HSET wm:worker:wrk_h hostname h");
    freeReplyObject(r);
    assert_string_equal(pop("wrk_h", "deploy", "", 1, "{}", "lse_a", T0).job_id, a);
    assert_string_equal(pop("wrk_h", "deploy", "", 1, "{}", "lse_b", T0).job_id, b);
    assert_string_equal(pop("wrk_h", "deploy", "", 1, "{}", "lse_c", T0 + 9000).job_id, c);
    assert_string_equal(pop("wrk_other", "deploy", "", 1, "{}", "lse_d", T0).job_id, d);
    r = redisCommand(rc, "SADD wm:cancel:wrk_h %s", a);
    freeReplyObject(r);

    /* T0+1 s: a and b listed -> renewed and confirmed; a is also in the cancel set; c is
     * unlisted but was never confirmed -> kept */
    heartbeat("wrk_h", T0 + 1000, cancelled, sizeof(cancelled), &pg, &renewed, a, "lse_a", b,
              "lse_b", NULL);
    assert_string_equal(cancelled, a);
    assert_int_equal(renewed, 2);
    assert_int_equal(pg, 1);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:leases", a), (long long)T0 + 1000 + TTL_MS);
    snprintf(key, sizeof(key), "wm:lease:%s", b);
    char *lease = get("GET %s", key);
    assert_non_null(strstr(lease, "\"confirmed\":true"));
    free(lease);
    assert_true(cmd_int("TTL %s", "wm:worker:wrk_h", NULL) > 0);

    /* T0+10 s: a listed, d listed (another worker's lease -> lost), b left out
     * (confirmed -> released), c left out (never confirmed -> kept for the reaper) */
    heartbeat("wrk_h", T0 + 10000, cancelled, sizeof(cancelled), &pg, &renewed, a, "lse_a", d,
              "lse_d", NULL);
    assert_string_equal(cancelled, a);
    assert_string_equal(hb_lost, d);
    assert_int_equal(renewed, 1);
    assert_int_equal(released, 1); /* b */
    assert_int_equal(pg, 0);       /* Postgres last_seen_at at most once a minute */
    snprintf(key, sizeof(key), "wm:lease:%s", b);
    assert_int_equal(cmd_int("EXISTS %s", key, NULL), 0);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:leases", b), -2);
    assert_int_equal(cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_h", b), 0);
    snprintf(key, sizeof(key), "wm:job:%s", b);
    assert_true(cmd_int("TTL %s", key, NULL) > 0); /* kept for redelivery, then gone */
    snprintf(key, sizeof(key), "wm:lease:%s", c);
    assert_int_equal(cmd_int("EXISTS %s", key, NULL), 1);
    snprintf(key, sizeof(key), "wm:lease:%s", d);
    assert_int_equal(cmd_int("EXISTS %s", key, NULL), 1); /* another worker's: untouched */

    /* a wrong lease id -> lost, not renewed, not confirmed */
    heartbeat("wrk_h", T0 + 11000, cancelled, sizeof(cancelled), &pg, &renewed, c, "lse_zzz", a,
              "lse_a", NULL);
    assert_string_equal(cancelled, a); /* a: still in the cancel set */
    assert_string_equal(hb_lost, c);
    assert_string_equal(hb_lost_leases, "lse_zzz");
    (void)expect;
    assert_int_equal(renewed, 1);
    /* c still never confirmed: a heartbeat without it keeps it; the reaper reports it */
    heartbeat("wrk_h", T0 + 12000, cancelled, sizeof(cancelled), &pg, &renewed, a, "lse_a", NULL);
    snprintf(key, sizeof(key), "wm:lease:%s", c);
    assert_int_equal(cmd_int("EXISTS %s", key, NULL), 1);
    char now_s[24];
    snprintf(now_s, sizeof(now_s), "%llu", T0 + 9000 + TTL_MS + 1);
    r = eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    /* d (wrk_other never renewed it) and c; a was renewed at T0+12 s */
    assert_int_equal(r->elements, 6);
    bool found_c = false;
    for (size_t i = 0; i < r->elements; i += 3) {
        assert_string_not_equal(r->element[i]->str, a);
        found_c |= strcmp(r->element[i]->str, c) == 0;
    }
    freeReplyObject(r);
    assert_true(found_c);

    /* unknown worker hash: no liveness, no pg update */
    heartbeat("wrk_nobody", T0 + 99000, cancelled, sizeof(cancelled), &pg, &renewed, NULL);
    assert_int_equal(pg, 0);
    assert_int_equal(cmd_int("EXISTS %s", "wm:worker:wrk_nobody", NULL), 0);
}

static void test_reaper(void **state)
{
    NEED_REDIS();
    char a[NF_ID_MAX], key[96], now_s[24];
    job_id(300, a);
    enqueue(a, "train", 0, 2, NULL);
    assert_true(pop("wrk_r", "train", "", 1, "{}", "lse_r", T0).got);

    /* not yet expired */
    snprintf(now_s, sizeof(now_s), "%llu", T0 + TTL_MS - 1);
    redisReply *r = eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);

    /* expired: claimed once, with the lease and the job data */
    snprintf(now_s, sizeof(now_s), "%llu", T0 + TTL_MS + 5);
    r = eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 3);
    assert_string_equal(r->element[0]->str, a);
    cJSON *lease = cJSON_Parse(r->element[1]->str);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(lease, "reaping")));
    assert_string_equal(nf_json_str(lease, "lease_id"), "lse_r");
    assert_int_equal(nf_json_int(lease, "attempt", 0), 2);
    cJSON_Delete(lease);
    cJSON *job = cJSON_Parse(r->element[2]->str);
    assert_string_equal(nf_json_str(job, "user_id"), "usr_1");
    cJSON_Delete(job);
    freeReplyObject(r);
    /* a second round inside the reclaim window finds nothing */
    r = eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);

    /* the worker comes back: its reaped lease is lost (not cancelled), not renewed */
    char cancelled[256];
    long long pg, renewed;
    heartbeat("wrk_r", T0 + TTL_MS + 10, cancelled, sizeof(cancelled), &pg, &renewed, a, "lse_r",
              NULL);
    assert_string_equal(cancelled, "");
    assert_string_equal(hb_lost, a);
    assert_int_equal(renewed, 0);

    /* done with another lease id does nothing; with the right one removes everything */
    assert_int_equal(integer(eval(wm_lua_reap_done, 1, "wm:leases", a, "lse_other", "60", NULL)),
                     0);
    snprintf(key, sizeof(key), "wm:lease:%s", a);
    assert_int_equal(cmd_int("EXISTS %s", key, NULL), 1);
    assert_int_equal(integer(eval(wm_lua_reap_done, 1, "wm:leases", a, "lse_r", "60", NULL)), 1);
    assert_int_equal(cmd_int("EXISTS %s", key, NULL), 0);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:leases", a), -2);
    assert_int_equal(cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_r", a), 0);
    snprintf(key, sizeof(key), "wm:job:%s", a);
    assert_true(cmd_int("TTL %s", key, NULL) > 0);

    /* the scheduler's retry (attempt 3) queues again */
    assert_int_equal(enqueue(a, "train", 0, 3, NULL), 1);
    assert_int_equal(pop("wrk_s", "train", "", 1, "{}", "lse_s", T0 + 100000).attempt, 3);

    /* a lease key that vanished is still reported (with an empty lease) */
    char b[NF_ID_MAX];
    job_id(301, b);
    r = redisCommand(rc, "ZADD wm:leases 1 %s", b);
    freeReplyObject(r);
    r = eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 3);
    assert_string_equal(r->element[0]->str, b);
    assert_string_equal(r->element[1]->str, "");
    assert_string_equal(r->element[2]->str, "");
    freeReplyObject(r);
    assert_int_equal(integer(eval(wm_lua_reap_done, 1, "wm:leases", b, "", "60", NULL)), 1);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:leases", b), -2);
}

static void test_requeue(void **state)
{
    NEED_REDIS();
    char a[NF_ID_MAX], key[96];
    job_id(400, a);
    enqueue(a, "distill", 4, 1, NULL);
    assert_true(pop("wrk_q", "distill", "", 1, "{}", "lse_q", T0).got);
    assert_int_equal(
        integer(eval(wm_lua_requeue, 2, "wm:leases", "wm:queue:distill", a, "lse_no", "5", NULL)),
        0);
    assert_int_equal(
        integer(eval(wm_lua_requeue, 2, "wm:leases", "wm:queue:distill", a, "lse_q", "5", NULL)),
        1);
    snprintf(key, sizeof(key), "wm:lease:%s", a);
    assert_int_equal(cmd_int("EXISTS %s", key, NULL), 0);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:queue:distill", a), 5);
    assert_int_equal(cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_q", a), 0);
    assert_true(pop("wrk_q2", "distill", "", 1, "{}", "lse_q2", T0).got);
}

static long long drain(const char *wid)
{
    char wkey[96], wlkey[96];
    snprintf(wkey, sizeof(wkey), "wm:worker:%s", wid);
    snprintf(wlkey, sizeof(wlkey), "wm:wleases:%s", wid);
    return integer(eval(wm_lua_drain, 3, wkey, wlkey, "wm:workers", wid, NULL));
}

static void test_drain(void **state)
{
    NEED_REDIS();
    char a[NF_ID_MAX], b[NF_ID_MAX], cancelled[256];
    long long pg = 0, renewed = 0;
    job_id(500, a);
    job_id(501, b);
    enqueue(a, "audit", 5, 1, NULL);
    enqueue(b, "audit", 5, 1, NULL);
    redisReply *r = redisCommand(rc, "HSET wm:worker:wrk_d hostname d");
    freeReplyObject(r);
    assert_string_equal(pop("wrk_d", "audit", "", 1, "{}", "lse_d1", T0).job_id, a);
    heartbeat("wrk_d", T0 + 1000, cancelled, sizeof(cancelled), &pg, &renewed, a, "lse_d1", NULL);
    assert_int_equal(renewed, 1);
    assert_int_equal(hb_draining, 0);
    assert_int_equal(hb_drained, 0);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_d"), (long long)T0 + 1000);

    /* drained by the operator with a job running: draining, the job keeps its lease, the
     * worker gets nothing new */
    assert_int_equal(drain("wrk_d"), 1);
    struct popped p = pop("wrk_d", "audit", "", 1, "{}", "lse_d2", T0 + 1500);
    assert_true(p.draining);
    assert_false(p.got);
    assert_int_equal(cmd_int("ZCARD %s", "wm:queue:audit", NULL), 1); /* b still queued */
    heartbeat("wrk_d", T0 + 2000, cancelled, sizeof(cancelled), &pg, &renewed, a, "lse_d1", NULL);
    assert_int_equal(renewed, 1);
    assert_int_equal(hb_draining, 1);
    assert_int_equal(hb_drained, 0);
    assert_int_equal(pg, 0);
    /* the job is reported and left out: the lease goes, the worker is drained, once, and
     * leaves the liveness set (it is not "lost" when it then stops) */
    heartbeat("wrk_d", T0 + 3000, cancelled, sizeof(cancelled), &pg, &renewed, NULL);
    assert_int_equal(released, 1);
    assert_int_equal(hb_drained, 1);
    assert_int_equal(pg, 1);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_d"), -2);
    heartbeat("wrk_d", T0 + 4000, cancelled, sizeof(cancelled), &pg, &renewed, NULL);
    assert_int_equal(hb_drained, 2);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_d"), -2);
    assert_int_equal(drain("wrk_d"), 2);
    /* another worker still gets b */
    assert_string_equal(pop("wrk_x", "audit", "", 1, "{}", "lse_x", T0 + 5000).job_id, b);

    /* unknown (or expired) worker: nothing to drain */
    assert_int_equal(drain("wrk_nobody"), -1);
    assert_int_equal(cmd_int("EXISTS %s", "wm:worker:wrk_nobody", NULL), 0);

    /* an idle worker is drained at once; a stale wleases entry does not hold it back */
    r = redisCommand(rc, "HSET wm:worker:wrk_i hostname i");
    freeReplyObject(r);
    r = redisCommand(rc, "SADD wm:wleases:wrk_i %s", b); /* b is wrk_x's lease */
    freeReplyObject(r);
    r = redisCommand(rc, "ZADD wm:workers 1 wrk_i");
    freeReplyObject(r);
    assert_int_equal(drain("wrk_i"), 3);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_i"), -2);

    /* an agent stopping on SIGTERM says so in its heartbeat: idle -> drained at once */
    r = redisCommand(rc, "HSET wm:worker:wrk_t hostname t");
    freeReplyObject(r);
    hb_draining_arg = true;
    heartbeat("wrk_t", T0 + 6000, cancelled, sizeof(cancelled), &pg, &renewed, NULL);
    assert_int_equal(hb_draining, 1);
    assert_int_equal(hb_drained, 1);
    assert_int_equal(pg, 1);
    char *v = get("HGET wm:worker:%s draining", "wrk_t");
    assert_string_equal(v, "1");
    free(v);
}

static void test_lost_claim(void **state)
{
    NEED_REDIS();
    char a[NF_ID_MAX], now_s[24];
    job_id(600, a);
    enqueue(a, "train", 0, 1, NULL);
    redisReply *r = redisCommand(rc, "HSET wm:worker:wrk_l1 hostname l1");
    freeReplyObject(r);
    assert_true(pop("wrk_l1", "train", "", 1, "{}", "lse_l1", T0).got);
    r = redisCommand(rc, "ZADD wm:workers %llu wrk_l1 %llu wrk_l2 %llu wrk_l3", T0, T0 + 5000, T0);
    freeReplyObject(r);
    /* wrk_l3 beat later than its stamp says (the stamp lagged): re-stamped, not lost */
    r = redisCommand(rc, "HSET wm:worker:wrk_l3 last_seen_ms %llu", T0 + 9000);
    freeReplyObject(r);

    snprintf(now_s, sizeof(now_s), "%llu", T0 + 1000);
    r = eval(wm_lua_lost_claim, 1, "wm:workers", now_s, "100", NULL);
    assert_int_equal(r->elements, 3);
    assert_string_equal(r->element[0]->str, "wrk_l1");
    assert_int_equal(strtoll(r->element[1]->str, NULL, 10), (long long)T0);
    assert_int_equal(r->element[2]->elements, 1);
    assert_string_equal(r->element[2]->element[0]->str, a);
    freeReplyObject(r);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_l1"), -2);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_l2"), (long long)T0 + 5000);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_l3"), (long long)T0 + 9000);
    /* reported once */
    r = eval(wm_lua_lost_claim, 1, "wm:workers", now_s, "100", NULL);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
    /* its lease is untouched: the lease reaper requeues the job when it expires */
    char key[96];
    snprintf(key, sizeof(key), "wm:lease:%s", a);
    assert_int_equal(cmd_int("EXISTS %s", key, NULL), 1);

    /* the worker comes back: its heartbeat stamps it in again */
    char cancelled[64];
    long long pg, renewed;
    heartbeat("wrk_l1", T0 + 20000, cancelled, sizeof(cancelled), &pg, &renewed, a, "lse_l1", NULL);
    assert_int_equal(renewed, 1);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_l1"), (long long)T0 + 20000);
    /* a heartbeat of an unknown worker (no hash) stamps nothing */
    heartbeat("wrk_ghost", T0 + 20000, cancelled, sizeof(cancelled), &pg, &renewed, NULL);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:workers", "wrk_ghost"), -2);
}

static redisReply *cancel(const char *id)
{
    char jkey[96], lkey[96], tkey[96];
    snprintf(jkey, sizeof(jkey), "wm:job:%s", id);
    snprintf(lkey, sizeof(lkey), "wm:lease:%s", id);
    snprintf(tkey, sizeof(tkey), "wm:cancelled:%s", id);
    redisReply *r = eval(wm_lua_cancel, 3, jkey, lkey, tkey, id, "600", NULL);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    return r;
}

static void test_cancel(void **state)
{
    NEED_REDIS();
    char queued[NF_ID_MAX], leased[NF_ID_MAX], ghost[NF_ID_MAX], other[NF_ID_MAX];
    char cancelled[256], key[96];
    long long pg, renewed;
    job_id(700, queued);
    job_id(701, leased);
    job_id(702, ghost);
    job_id(703, other);
    enqueue(queued, "generate", 5, 1, NULL);
    enqueue(leased, "generate", 9, 1, NULL);
    enqueue(other, "generate", 0, 1, NULL);
    redisReply *r = redisCommand(rc, "HSET wm:worker:wrk_c hostname c");
    freeReplyObject(r);
    assert_string_equal(pop("wrk_c", "generate", "", 1, "{}", "lse_c", T0).job_id, leased);

    /* queued: out of the queue at once, and a redelivered dispatch stays out */
    r = cancel(queued);
    assert_string_equal(r->element[0]->str, "dequeued");
    assert_string_equal(r->element[1]->str, "");
    freeReplyObject(r);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:queue:generate", queued), -2);
    assert_int_equal(enqueue(queued, "generate", 5, 1, NULL), 0);
    assert_int_equal(enqueue(queued, "generate", 5, 2, NULL), 0);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:queue:generate", queued), -2);
    snprintf(key, sizeof(key), "wm:cancelled:%s", queued);
    assert_true(cmd_int("TTL %s", key, NULL) > 0);

    /* leased: the worker's next heartbeat lists it as cancelled */
    r = cancel(leased);
    assert_string_equal(r->element[0]->str, "signalled");
    assert_string_equal(r->element[1]->str, "wrk_c");
    freeReplyObject(r);
    assert_int_equal(cmd_int("SISMEMBER %s %s", "wm:cancel:wrk_c", leased), 1);
    heartbeat("wrk_c", T0 + 1000, cancelled, sizeof(cancelled), &pg, &renewed, leased, "lse_c",
              NULL);
    assert_string_equal(cancelled, leased);
    assert_string_equal(hb_lost, "");
    /* the worker reports and drops it: lease and cancel entry go */
    heartbeat("wrk_c", T0 + 2000, cancelled, sizeof(cancelled), &pg, &renewed, NULL);
    assert_int_equal(released, 1);
    assert_int_equal(cmd_int("SISMEMBER %s %s", "wm:cancel:wrk_c", leased), 0);

    /* neither queued nor leased (e.g. still in Kafka): unknown, but a later dispatch of it
     * is dropped */
    r = cancel(ghost);
    assert_string_equal(r->element[0]->str, "unknown");
    freeReplyObject(r);
    assert_int_equal(enqueue(ghost, "generate", 5, 1, NULL), 0);
    assert_int_equal(cmd_int("ZSCORE %s %s", "wm:queue:generate", ghost), -2);
    /* other jobs are untouched */
    assert_string_equal(pop("wrk_c", "generate", "", 1, "{}", "lse_c2", T0).job_id, other);
}

static long long lease_check(const char *id, const char *wid, const char *lid, const char *att)
{
    char key[96];
    snprintf(key, sizeof(key), "wm:lease:%s", id);
    return integer(eval(wm_lua_lease_check, 1, key, wid, lid, att, NULL));
}

static void test_lease_check(void **state)
{
    NEED_REDIS();
    char a[NF_ID_MAX], now_s[24];
    job_id(800, a);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "2"), 0); /* no lease at all */
    enqueue(a, "evaluate", 0, 2, NULL);
    assert_true(pop("wrk_k", "evaluate", "", 1, "{}", "lse_k", T0).got);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "2"), 1);
    assert_int_equal(lease_check(a, "wrk_other", "lse_k", "2"), 0);
    assert_int_equal(lease_check(a, "wrk_k", "lse_other", "2"), 0);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "1"), 0);
    /* being reaped: the worker lost it */
    snprintf(now_s, sizeof(now_s), "%llu", T0 + TTL_MS + 1);
    redisReply *r = eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 3);
    freeReplyObject(r);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "2"), 0);
    /* the retry leased to another worker: the first one's report is refused */
    enqueue(a, "evaluate", 0, 3, NULL);
    assert_true(pop("wrk_k2", "evaluate", "", 1, "{}", "lse_k2", T0 + 40000).got);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "2"), 0);
    assert_int_equal(lease_check(a, "wrk_k2", "lse_k2", "3"), 1);
}

static void test_fleet(void **state)
{
    NEED_REDIS();
    char a[NF_ID_MAX], b[NF_ID_MAX], c[NF_ID_MAX];
    job_id(900, a);
    job_id(901, b);
    job_id(902, c);
    enqueue(a, "deploy", 0, 1, NULL);
    enqueue(b, "deploy", 0, 1, NULL);
    enqueue(c, "deploy", 0, 1, NULL);
    assert_true(pop("wrk_f", "deploy", "", 1, "{}", "lse_f1", T0).got);
    assert_true(pop("wrk_f", "deploy", "", 1, "{}", "lse_f2", T0).got);
    assert_true(pop("wrk_g", "deploy", "", 1, "{}", "lse_g", T0).got);
    /* a stale entry: c is wrk_g's */
    redisReply *r = redisCommand(rc, "SADD wm:wleases:wrk_f %s", c);
    freeReplyObject(r);
    r = redisCommand(rc, "HSET wm:worker:wrk_f last_seen_ms 123 draining 1");
    freeReplyObject(r);
    r = eval(wm_lua_fleet, 0, "wrk_f", "wrk_none", NULL);
    assert_int_equal(r->elements, 2);
    const redisReply *f = r->element[0], *n = r->element[1];
    assert_int_equal(f->elements, 3);
    assert_string_equal(f->element[0]->str, "123");
    assert_string_equal(f->element[1]->str, "1");
    assert_int_equal(f->element[2]->elements, 2);
    assert_string_equal(f->element[2]->element[0]->str, a); /* sorted: a < b */
    assert_string_equal(f->element[2]->element[1]->str, b);
    assert_string_equal(n->element[0]->str, "");
    assert_string_equal(n->element[1]->str, "");
    assert_int_equal(n->element[2]->elements, 0);
    freeReplyObject(r);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_enqueue_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pop_priority_and_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pop_requirements_and_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pop_agrees_with_c, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reaper, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fleet, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
