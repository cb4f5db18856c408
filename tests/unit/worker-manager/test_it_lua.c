/*
 * The worker-manager's queue scripts against a real Redis (NF_TEST_REDIS_ADDR=host:port;
 * skipped when unset): enqueue and its tombstone, pop (matching, priority, age, the lease
 * it grants), requeue, cancel and the lease check. The worker side - heartbeat, reaper,
 * lost workers, drain, fleet - is test_it_lua_worker.c; both share lua_fixture.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_fixture.h"
#include "nf_log.h"
#include "nf_test.h"
#include "wm.h"

static void test_enqueue_idempotent(void **state)
{
    wmt_need_redis();
    char id[NF_ID_MAX];
    wmt_job_id(1, id);
    assert_int_equal(wmt_enqueue(id, "train", 7, 1, NULL), 1);
    assert_int_equal(wmt_enqueue(id, "train", 7, 1, NULL), 0); /* redelivery */
    assert_int_equal(wmt_cmd_int("ZCARD %s", "wm:queue:train", NULL), 1);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:queue:train", id), 2); /* 9 - 7 */

    /* leased: a redelivery of the same attempt still changes nothing */
    struct wmt_popped p = wmt_pop("wrk_a", "train", "", 1, "{}", "lse_1", WMT_T0);
    assert_true(p.got);
    assert_int_equal(wmt_enqueue(id, "train", 7, 1, NULL), 0);
    assert_int_equal(wmt_cmd_int("ZCARD %s", "wm:queue:train", NULL), 0);

    /* a retry (attempt 2) supersedes the old lease and queues again */
    assert_int_equal(wmt_enqueue(id, "train", 7, 2, NULL), 1);
    assert_int_equal(wmt_cmd_int("EXISTS %s%s", "wm:lease:", id), 0);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:leases", id), -2);
    assert_int_equal(wmt_cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_a", id), 0);
    assert_int_equal(wmt_cmd_int("ZCARD %s", "wm:queue:train", NULL), 1);
    /* an older attempt arriving late is ignored */
    assert_int_equal(wmt_enqueue(id, "train", 7, 1, NULL), 0);
    p = wmt_pop("wrk_b", "train", "", 1, "{}", "lse_2", WMT_T0);
    assert_true(p.got);
    assert_int_equal(p.attempt, 2);
}

static void test_pop_priority_and_age(void **state)
{
    wmt_need_redis();
    char low[NF_ID_MAX], high_old[NF_ID_MAX], high_new[NF_ID_MAX], other[NF_ID_MAX];
    wmt_job_id(10, low);
    wmt_job_id(11, high_old);
    wmt_job_id(12, high_new);
    wmt_job_id(13, other);
    wmt_enqueue(low, "generate", 1, 1, NULL);
    wmt_enqueue(high_new, "generate", 5, 1, NULL);
    wmt_enqueue(high_old, "generate", 5, 1, NULL);
    wmt_enqueue(other, "train", 9, 1, NULL);

    /* across the worker's queues: the highest priority first */
    wmt_expect_pop("wrk_a", "generate,train", "", 1, "{}", "lse_1", other);
    /* equal priority: the older id first */
    wmt_expect_pop("wrk_a", "generate,train", "", 1, "{}", "lse_2", high_old);
    wmt_expect_pop("wrk_a", "generate", "", 1, "{}", "lse_3", high_new);
    /* a worker not doing generate sees nothing */
    wmt_expect_pop("wrk_b", "audit,train", "", 8, "{}", "lse_4", NULL);
    wmt_expect_pop("wrk_a", "generate", "", 1, "{}", "lse_5", low);
    wmt_expect_pop("wrk_a", "generate", "", 1, "{}", "lse_6", NULL);
}

static void test_pop_requirements_and_lease(void **state)
{
    wmt_need_redis();
    char h100[NF_ID_MAX], big[NF_ID_MAX], eu[NF_ID_MAX], plain[NF_ID_MAX], orphan[NF_ID_MAX];
    wmt_job_id(20, h100);
    wmt_job_id(21, big);
    wmt_job_id(22, eu);
    wmt_job_id(23, plain);
    wmt_job_id(24, orphan);
    wmt_enqueue(h100, "evaluate", 9, 1, "\"gpu_type\":\"h100\",\"gpu_count\":1");
    wmt_enqueue(big, "evaluate", 9, 1, "\"gpu_type\":null,\"gpu_count\":8");
    wmt_enqueue(eu, "evaluate", 9, 1, "\"gpu_count\":1,\"labels\":{\"zone\":\"eu\"}");
    wmt_enqueue(plain, "evaluate", 0, 3, "\"gpu_count\":1,\"labels\":null");
    /* a queue member whose data vanished is dropped by the scan */
    nf_test_redis_ok(wmt_rc, "ZADD wm:queue:evaluate 0 %s", orphan);

    struct wmt_popped p =
        wmt_pop("wrk_a", "evaluate", "a100", 4, "{\"zone\":\"us\"}", "lse_x", WMT_T0);
    assert_true(p.got);
    assert_string_equal(p.job_id, plain); /* the three before it do not match */
    assert_int_equal(p.attempt, 3);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:queue:evaluate", orphan), -2);
    assert_int_equal(wmt_cmd_int("ZCARD %s", "wm:queue:evaluate", NULL), 3);

    /* the lease */
    char key[96];
    snprintf(key, sizeof(key), "wm:lease:%s", plain);
    char *lease = wmt_get("GET %s", key);
    assert_non_null(lease);
    cJSON *l = cJSON_Parse(lease);
    assert_string_equal(nf_json_str(l, "worker_id"), "wrk_a");
    assert_string_equal(nf_json_str(l, "lease_id"), "lse_x");
    assert_int_equal(nf_json_int(l, "attempt", 0), 3);
    assert_int_equal(nf_json_int(l, "granted_ms", 0), (long long)WMT_T0);
    cJSON_Delete(l);
    free(lease);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:leases", plain),
                     (long long)WMT_T0 + WMT_TTL_MS);
    assert_int_equal(wmt_cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_a", plain), 1);
    assert_true(wmt_cmd_int("PTTL %s", key, NULL) > WMT_TTL_MS);

    /* each of the others goes to the worker that fits it */
    wmt_expect_pop("wrk_b", "evaluate", "h100", 1, "{}", "lse_y", h100);
    wmt_expect_pop("wrk_c", "evaluate", "a100", 8, "{}", "lse_z", big);
    wmt_expect_pop("wrk_d", "evaluate", "", 1, "{\"zone\":\"us\"}", "lse_w", NULL);
    wmt_expect_pop("wrk_d", "evaluate", "", 1, "{\"zone\":\"eu\",\"rack\":\"1\"}", "lse_w", eu);
}

/* The pop script and wm_job_matches agree on a grid of jobs x workers. */
static void test_pop_agrees_with_c(void **state)
{
    wmt_need_redis();
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
            wmt_job_id(n++, id);
            assert_int_equal(wmt_enqueue(id, "audit", 0, 1, jobs[j][0] ? jobs[j] : NULL), 1);
            struct wm_worker wk = {0};
            wk.gpu_type = nf_xstrdup(workers[w].gpu_type);
            wk.gpu_count = workers[w].gpu_count;
            wk.labels = cJSON_Parse(workers[w].labels);
            snprintf(text, sizeof(text), "{%s}", jobs[j]);
            cJSON *job = cJSON_Parse(text);
            bool c = wm_job_matches(&wk, job);
            struct wmt_popped p = wmt_pop("wrk_g", "audit", workers[w].gpu_type,
                                          workers[w].gpu_count, workers[w].labels, "lse_g", WMT_T0);
            if (p.got != c)
                fail_msg("job {%s} worker %zu: lua %d, C %d", jobs[j], w, p.got, c);
            cJSON_Delete(job);
            wm_worker_clear(&wk);
            nf_test_redis_ok(wmt_rc, "DEL wm:queue:audit");
        }
    }
}

static void test_requeue(void **state)
{
    wmt_need_redis();
    char a[NF_ID_MAX], key[96];
    wmt_job_id(400, a);
    wmt_enqueue(a, "distill", 4, 1, NULL);
    assert_true(wmt_pop("wrk_q", "distill", "", 1, "{}", "lse_q", WMT_T0).got);
    assert_int_equal(wmt_integer(wmt_eval(wm_lua_requeue, 2, "wm:leases", "wm:queue:distill", a,
                                          "lse_no", "5", NULL)),
                     0);
    assert_int_equal(wmt_integer(wmt_eval(wm_lua_requeue, 2, "wm:leases", "wm:queue:distill", a,
                                          "lse_q", "5", NULL)),
                     1);
    snprintf(key, sizeof(key), "wm:lease:%s", a);
    assert_int_equal(wmt_cmd_int("EXISTS %s", key, NULL), 0);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:queue:distill", a), 5);
    assert_int_equal(wmt_cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_q", a), 0);
    assert_true(wmt_pop("wrk_q2", "distill", "", 1, "{}", "lse_q2", WMT_T0).got);
}

static redisReply *cancel(const char *id)
{
    char jkey[96], lkey[96], tkey[96];
    snprintf(jkey, sizeof(jkey), "wm:job:%s", id);
    snprintf(lkey, sizeof(lkey), "wm:lease:%s", id);
    snprintf(tkey, sizeof(tkey), "wm:cancelled:%s", id);
    redisReply *r = wmt_eval(wm_lua_cancel, 3, jkey, lkey, tkey, id, "600", NULL);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    return r;
}

static void test_cancel(void **state)
{
    wmt_need_redis();
    char queued[NF_ID_MAX], leased[NF_ID_MAX], ghost[NF_ID_MAX], other[NF_ID_MAX];
    char key[96];
    struct wmt_beat hb = {0};
    wmt_job_id(700, queued);
    wmt_job_id(701, leased);
    wmt_job_id(702, ghost);
    wmt_job_id(703, other);
    wmt_enqueue(queued, "generate", 5, 1, NULL);
    wmt_enqueue(leased, "generate", 9, 1, NULL);
    wmt_enqueue(other, "generate", 0, 1, NULL);
    redisReply *r;
    nf_test_redis_ok(wmt_rc, "HSET wm:worker:wrk_c hostname c");
    wmt_expect_pop("wrk_c", "generate", "", 1, "{}", "lse_c", leased);

    /* queued: out of the queue at once, and a redelivered dispatch stays out */
    r = cancel(queued);
    assert_string_equal(r->element[0]->str, "dequeued");
    assert_string_equal(r->element[1]->str, "");
    freeReplyObject(r);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:queue:generate", queued), -2);
    assert_int_equal(wmt_enqueue(queued, "generate", 5, 1, NULL), 0);
    assert_int_equal(wmt_enqueue(queued, "generate", 5, 2, NULL), 0);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:queue:generate", queued), -2);
    snprintf(key, sizeof(key), "wm:cancelled:%s", queued);
    assert_true(wmt_cmd_int("TTL %s", key, NULL) > 0);

    /* leased: the worker's next heartbeat lists it as cancelled */
    r = cancel(leased);
    assert_string_equal(r->element[0]->str, "signalled");
    assert_string_equal(r->element[1]->str, "wrk_c");
    freeReplyObject(r);
    assert_int_equal(wmt_cmd_int("SISMEMBER %s %s", "wm:cancel:wrk_c", leased), 1);
    wmt_heartbeat(&hb, "wrk_c", WMT_T0 + 1000, leased, "lse_c", NULL);
    assert_string_equal(hb.cancelled, leased);
    assert_string_equal(hb.lost, "");
    /* the worker reports and drops it: lease and cancel entry go */
    wmt_heartbeat(&hb, "wrk_c", WMT_T0 + 2000, NULL);
    assert_int_equal(hb.released, 1);
    assert_int_equal(wmt_cmd_int("SISMEMBER %s %s", "wm:cancel:wrk_c", leased), 0);

    /* neither queued nor leased (e.g. still in Kafka): unknown, but a later dispatch of it
     * is dropped */
    r = cancel(ghost);
    assert_string_equal(r->element[0]->str, "unknown");
    freeReplyObject(r);
    assert_int_equal(wmt_enqueue(ghost, "generate", 5, 1, NULL), 0);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:queue:generate", ghost), -2);
    /* other jobs are untouched */
    wmt_expect_pop("wrk_c", "generate", "", 1, "{}", "lse_c2", other);
}

static long long lease_check(const char *id, const char *wid, const char *lid, const char *att)
{
    char key[96];
    snprintf(key, sizeof(key), "wm:lease:%s", id);
    return wmt_integer(wmt_eval(wm_lua_lease_check, 1, key, wid, lid, att, NULL));
}

static void test_lease_check(void **state)
{
    wmt_need_redis();
    char a[NF_ID_MAX], now_s[24];
    wmt_job_id(800, a);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "2"), 0); /* no lease at all */
    wmt_enqueue(a, "evaluate", 0, 2, NULL);
    assert_true(wmt_pop("wrk_k", "evaluate", "", 1, "{}", "lse_k", WMT_T0).got);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "2"), 1);
    assert_int_equal(lease_check(a, "wrk_other", "lse_k", "2"), 0);
    assert_int_equal(lease_check(a, "wrk_k", "lse_other", "2"), 0);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "1"), 0);
    /* being reaped: the worker lost it */
    snprintf(now_s, sizeof(now_s), "%llu", WMT_T0 + WMT_TTL_MS + 1);
    redisReply *r = wmt_eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 3);
    freeReplyObject(r);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "2"), 0);
    /* the retry leased to another worker: the first one's report is refused */
    wmt_enqueue(a, "evaluate", 0, 3, NULL);
    assert_true(wmt_pop("wrk_k2", "evaluate", "", 1, "{}", "lse_k2", WMT_T0 + 40000).got);
    assert_int_equal(lease_check(a, "wrk_k", "lse_k", "2"), 0);
    assert_int_equal(lease_check(a, "wrk_k2", "lse_k2", "3"), 1);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(wmt_setup, wmt_teardown, test_enqueue_idempotent, test_pop_priority_and_age,
                       test_pop_requirements_and_lease, test_pop_agrees_with_c, test_requeue,
                       test_cancel, test_lease_check);
}
