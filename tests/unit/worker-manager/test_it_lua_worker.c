/*
 * The worker-manager's worker scripts against a real Redis (NF_TEST_REDIS_ADDR=host:port;
 * skipped when unset): heartbeat (renew, release, lost vs cancelled, drain/drained), the
 * lease reaper, the lost-worker scan, drain and the fleet view. The queue side is
 * test_it_lua.c; both share lua_fixture.c.
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

static void test_heartbeat(void **state)
{
    wmt_need_redis();
    char a[NF_ID_MAX], b[NF_ID_MAX], c[NF_ID_MAX], d[NF_ID_MAX], key[96];
    char expect[256];
    struct wmt_beat hb = {0};
    wmt_job_id(200, a);
    wmt_job_id(201, b);
    wmt_job_id(202, c);
    wmt_job_id(203, d);
    for (int i = 0; i < 4; i++)
        wmt_enqueue((const char *[]){a, b, c, d}[i], "deploy", 0, 1, NULL);
    redisReply *r;
    nf_test_redis_ok(wmt_rc, "HSET wm:worker:wrk_h hostname h");
    wmt_expect_pop("wrk_h", "deploy", "", 1, "{}", "lse_a", a);
    wmt_expect_pop("wrk_h", "deploy", "", 1, "{}", "lse_b", b);
    assert_string_equal(wmt_pop("wrk_h", "deploy", "", 1, "{}", "lse_c", WMT_T0 + 9000).job_id, c);
    wmt_expect_pop("wrk_other", "deploy", "", 1, "{}", "lse_d", d);
    nf_test_redis_ok(wmt_rc, "SADD wm:cancel:wrk_h %s", a);

    /* T0+1 s: a and b listed -> renewed and confirmed; a is also in the cancel set; c is
     * unlisted but was never confirmed -> kept */
    wmt_heartbeat(&hb, "wrk_h", WMT_T0 + 1000, a, "lse_a", b, "lse_b", NULL);
    assert_string_equal(hb.cancelled, a);
    assert_int_equal(hb.renewed, 2);
    assert_int_equal(hb.pg, 1);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:leases", a),
                     (long long)WMT_T0 + 1000 + WMT_TTL_MS);
    snprintf(key, sizeof(key), "wm:lease:%s", b);
    char *lease = wmt_get("GET %s", key);
    assert_non_null(strstr(lease, "\"confirmed\":true"));
    free(lease);
    assert_true(wmt_cmd_int("TTL %s", "wm:worker:wrk_h", NULL) > 0);

    /* T0+10 s: a listed, d listed (another worker's lease -> lost), b left out
     * (confirmed -> released), c left out (never confirmed -> kept for the reaper) */
    wmt_heartbeat(&hb, "wrk_h", WMT_T0 + 10000, a, "lse_a", d, "lse_d", NULL);
    assert_string_equal(hb.cancelled, a);
    assert_string_equal(hb.lost, d);
    assert_int_equal(hb.renewed, 1);
    assert_int_equal(hb.released, 1); /* b */
    assert_int_equal(hb.pg, 0);       /* Postgres last_seen_at at most once a minute */
    snprintf(key, sizeof(key), "wm:lease:%s", b);
    assert_int_equal(wmt_cmd_int("EXISTS %s", key, NULL), 0);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:leases", b), -2);
    assert_int_equal(wmt_cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_h", b), 0);
    snprintf(key, sizeof(key), "wm:job:%s", b);
    assert_true(wmt_cmd_int("TTL %s", key, NULL) > 0); /* kept for redelivery, then gone */
    snprintf(key, sizeof(key), "wm:lease:%s", c);
    assert_int_equal(wmt_cmd_int("EXISTS %s", key, NULL), 1);
    snprintf(key, sizeof(key), "wm:lease:%s", d);
    assert_int_equal(wmt_cmd_int("EXISTS %s", key, NULL), 1); /* another worker's: untouched */

    /* a wrong lease id -> lost, not renewed, not confirmed */
    wmt_heartbeat(&hb, "wrk_h", WMT_T0 + 11000, c, "lse_zzz", a, "lse_a", NULL);
    assert_string_equal(hb.cancelled, a); /* a: still in the cancel set */
    assert_string_equal(hb.lost, c);
    assert_string_equal(hb.lost_leases, "lse_zzz");
    (void)expect;
    assert_int_equal(hb.renewed, 1);
    /* c still never confirmed: a heartbeat without it keeps it; the reaper reports it */
    wmt_heartbeat(&hb, "wrk_h", WMT_T0 + 12000, a, "lse_a", NULL);
    snprintf(key, sizeof(key), "wm:lease:%s", c);
    assert_int_equal(wmt_cmd_int("EXISTS %s", key, NULL), 1);
    char now_s[24];
    snprintf(now_s, sizeof(now_s), "%llu", WMT_T0 + 9000 + WMT_TTL_MS + 1);
    r = wmt_eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
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
    wmt_heartbeat(&hb, "wrk_nobody", WMT_T0 + 99000, NULL);
    assert_int_equal(hb.pg, 0);
    assert_int_equal(wmt_cmd_int("EXISTS %s", "wm:worker:wrk_nobody", NULL), 0);
}

static void test_reaper(void **state)
{
    wmt_need_redis();
    char a[NF_ID_MAX], key[96], now_s[24];
    wmt_job_id(300, a);
    wmt_enqueue(a, "train", 0, 2, NULL);
    assert_true(wmt_pop("wrk_r", "train", "", 1, "{}", "lse_r", WMT_T0).got);

    /* not yet expired */
    snprintf(now_s, sizeof(now_s), "%llu", WMT_T0 + WMT_TTL_MS - 1);
    redisReply *r = wmt_eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);

    /* expired: claimed once, with the lease and the job data */
    snprintf(now_s, sizeof(now_s), "%llu", WMT_T0 + WMT_TTL_MS + 5);
    r = wmt_eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
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
    r = wmt_eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);

    /* the worker comes back: its reaped lease is lost (not cancelled), not renewed */
    struct wmt_beat hb = {0};
    wmt_heartbeat(&hb, "wrk_r", WMT_T0 + WMT_TTL_MS + 10, a, "lse_r", NULL);
    assert_string_equal(hb.cancelled, "");
    assert_string_equal(hb.lost, a);
    assert_int_equal(hb.renewed, 0);

    /* done with another lease id does nothing; with the right one removes everything */
    assert_int_equal(
        wmt_integer(wmt_eval(wm_lua_reap_done, 1, "wm:leases", a, "lse_other", "60", NULL)), 0);
    snprintf(key, sizeof(key), "wm:lease:%s", a);
    assert_int_equal(wmt_cmd_int("EXISTS %s", key, NULL), 1);
    assert_int_equal(
        wmt_integer(wmt_eval(wm_lua_reap_done, 1, "wm:leases", a, "lse_r", "60", NULL)), 1);
    assert_int_equal(wmt_cmd_int("EXISTS %s", key, NULL), 0);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:leases", a), -2);
    assert_int_equal(wmt_cmd_int("SISMEMBER %s %s", "wm:wleases:wrk_r", a), 0);
    snprintf(key, sizeof(key), "wm:job:%s", a);
    assert_true(wmt_cmd_int("TTL %s", key, NULL) > 0);

    /* the scheduler's retry (attempt 3) queues again */
    assert_int_equal(wmt_enqueue(a, "train", 0, 3, NULL), 1);
    assert_int_equal(wmt_pop("wrk_s", "train", "", 1, "{}", "lse_s", WMT_T0 + 100000).attempt, 3);

    /* a lease key that vanished is still reported (with an empty lease) */
    char b[NF_ID_MAX];
    wmt_job_id(301, b);
    nf_test_redis_ok(wmt_rc, "ZADD wm:leases 1 %s", b);
    r = wmt_eval(wm_lua_reap_claim, 1, "wm:leases", now_s, "100", "30000", NULL);
    assert_int_equal(r->elements, 3);
    assert_string_equal(r->element[0]->str, b);
    assert_string_equal(r->element[1]->str, "");
    assert_string_equal(r->element[2]->str, "");
    freeReplyObject(r);
    assert_int_equal(wmt_integer(wmt_eval(wm_lua_reap_done, 1, "wm:leases", b, "", "60", NULL)), 1);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:leases", b), -2);
}

static long long drain(const char *wid)
{
    char wkey[96], wlkey[96];
    snprintf(wkey, sizeof(wkey), "wm:worker:%s", wid);
    snprintf(wlkey, sizeof(wlkey), "wm:wleases:%s", wid);
    return wmt_integer(wmt_eval(wm_lua_drain, 3, wkey, wlkey, "wm:workers", wid, NULL));
}

static void test_drain(void **state)
{
    wmt_need_redis();
    char a[NF_ID_MAX], b[NF_ID_MAX];
    struct wmt_beat hb = {0};
    wmt_job_id(500, a);
    wmt_job_id(501, b);
    wmt_enqueue(a, "audit", 5, 1, NULL);
    wmt_enqueue(b, "audit", 5, 1, NULL);
    nf_test_redis_ok(wmt_rc, "HSET wm:worker:wrk_d hostname d");
    wmt_expect_pop("wrk_d", "audit", "", 1, "{}", "lse_d1", a);
    wmt_heartbeat(&hb, "wrk_d", WMT_T0 + 1000, a, "lse_d1", NULL);
    assert_int_equal(hb.renewed, 1);
    assert_int_equal(hb.draining, 0);
    assert_int_equal(hb.drained, 0);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_d"), (long long)WMT_T0 + 1000);

    /* drained by the operator with a job running: draining, the job keeps its lease, the
     * worker gets nothing new */
    assert_int_equal(drain("wrk_d"), 1);
    struct wmt_popped p = wmt_pop("wrk_d", "audit", "", 1, "{}", "lse_d2", WMT_T0 + 1500);
    assert_true(p.draining);
    assert_false(p.got);
    assert_int_equal(wmt_cmd_int("ZCARD %s", "wm:queue:audit", NULL), 1); /* b still queued */
    wmt_heartbeat(&hb, "wrk_d", WMT_T0 + 2000, a, "lse_d1", NULL);
    assert_int_equal(hb.renewed, 1);
    assert_int_equal(hb.draining, 1);
    assert_int_equal(hb.drained, 0);
    assert_int_equal(hb.pg, 0);
    /* the job is reported and left out: the lease goes, the worker is drained, once, and
     * leaves the liveness set (it is not "lost" when it then stops) */
    wmt_heartbeat(&hb, "wrk_d", WMT_T0 + 3000, NULL);
    assert_int_equal(hb.released, 1);
    assert_int_equal(hb.drained, 1);
    assert_int_equal(hb.pg, 1);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_d"), -2);
    wmt_heartbeat(&hb, "wrk_d", WMT_T0 + 4000, NULL);
    assert_int_equal(hb.drained, 2);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_d"), -2);
    assert_int_equal(drain("wrk_d"), 2);
    /* another worker still gets b */
    assert_string_equal(wmt_pop("wrk_x", "audit", "", 1, "{}", "lse_x", WMT_T0 + 5000).job_id, b);

    /* unknown (or expired) worker: nothing to drain */
    assert_int_equal(drain("wrk_nobody"), -1);
    assert_int_equal(wmt_cmd_int("EXISTS %s", "wm:worker:wrk_nobody", NULL), 0);

    /* an idle worker is drained at once; a stale wleases entry does not hold it back */
    nf_test_redis_ok(wmt_rc, "HSET wm:worker:wrk_i hostname i");
    nf_test_redis_ok(wmt_rc, "SADD wm:wleases:wrk_i %s", b); /* b is wrk_x's lease */
    nf_test_redis_ok(wmt_rc, "ZADD wm:workers 1 wrk_i");
    assert_int_equal(drain("wrk_i"), 3);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_i"), -2);

    /* an agent stopping on SIGTERM says so in its heartbeat: idle -> drained at once */
    nf_test_redis_ok(wmt_rc, "HSET wm:worker:wrk_t hostname t");
    hb.stopping = true;
    wmt_heartbeat(&hb, "wrk_t", WMT_T0 + 6000, NULL);
    assert_int_equal(hb.draining, 1);
    assert_int_equal(hb.drained, 1);
    assert_int_equal(hb.pg, 1);
    char *v = wmt_get("HGET wm:worker:%s draining", "wrk_t");
    assert_string_equal(v, "1");
    free(v);
}

static void test_lost_claim(void **state)
{
    wmt_need_redis();
    char a[NF_ID_MAX], now_s[24];
    wmt_job_id(600, a);
    wmt_enqueue(a, "train", 0, 1, NULL);
    redisReply *r;
    nf_test_redis_ok(wmt_rc, "HSET wm:worker:wrk_l1 hostname l1");
    assert_true(wmt_pop("wrk_l1", "train", "", 1, "{}", "lse_l1", WMT_T0).got);
    nf_test_redis_ok(wmt_rc, "ZADD wm:workers %llu wrk_l1 %llu wrk_l2 %llu wrk_l3", WMT_T0,
                     WMT_T0 + 5000, WMT_T0);
    /* wrk_l3 beat later than its stamp says (the stamp lagged): re-stamped, not lost */
    nf_test_redis_ok(wmt_rc, "HSET wm:worker:wrk_l3 last_seen_ms %llu", WMT_T0 + 9000);

    snprintf(now_s, sizeof(now_s), "%llu", WMT_T0 + 1000);
    r = wmt_eval(wm_lua_lost_claim, 1, "wm:workers", now_s, "100", NULL);
    assert_int_equal(r->elements, 3);
    assert_string_equal(r->element[0]->str, "wrk_l1");
    assert_int_equal(strtoll(r->element[1]->str, NULL, 10), (long long)WMT_T0);
    assert_int_equal(r->element[2]->elements, 1);
    assert_string_equal(r->element[2]->element[0]->str, a);
    freeReplyObject(r);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_l1"), -2);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_l2"), (long long)WMT_T0 + 5000);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_l3"), (long long)WMT_T0 + 9000);
    /* reported once */
    r = wmt_eval(wm_lua_lost_claim, 1, "wm:workers", now_s, "100", NULL);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
    /* its lease is untouched: the lease reaper requeues the job when it expires */
    char key[96];
    snprintf(key, sizeof(key), "wm:lease:%s", a);
    assert_int_equal(wmt_cmd_int("EXISTS %s", key, NULL), 1);

    /* the worker comes back: its heartbeat stamps it in again */
    struct wmt_beat hb = {0};
    wmt_heartbeat(&hb, "wrk_l1", WMT_T0 + 20000, a, "lse_l1", NULL);
    assert_int_equal(hb.renewed, 1);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_l1"),
                     (long long)WMT_T0 + 20000);
    /* a heartbeat of an unknown worker (no hash) stamps nothing */
    wmt_heartbeat(&hb, "wrk_ghost", WMT_T0 + 20000, NULL);
    assert_int_equal(wmt_cmd_int("ZSCORE %s %s", "wm:workers", "wrk_ghost"), -2);
}

static void test_fleet(void **state)
{
    wmt_need_redis();
    char a[NF_ID_MAX], b[NF_ID_MAX], c[NF_ID_MAX];
    wmt_job_id(900, a);
    wmt_job_id(901, b);
    wmt_job_id(902, c);
    wmt_enqueue(a, "deploy", 0, 1, NULL);
    wmt_enqueue(b, "deploy", 0, 1, NULL);
    wmt_enqueue(c, "deploy", 0, 1, NULL);
    assert_true(wmt_pop("wrk_f", "deploy", "", 1, "{}", "lse_f1", WMT_T0).got);
    assert_true(wmt_pop("wrk_f", "deploy", "", 1, "{}", "lse_f2", WMT_T0).got);
    assert_true(wmt_pop("wrk_g", "deploy", "", 1, "{}", "lse_g", WMT_T0).got);
    /* a stale entry: c is wrk_g's */
    redisReply *r;
    nf_test_redis_ok(wmt_rc, "SADD wm:wleases:wrk_f %s", c);
    nf_test_redis_ok(wmt_rc, "HSET wm:worker:wrk_f last_seen_ms 123 draining 1");
    r = wmt_eval(wm_lua_fleet, 0, "wrk_f", "wrk_none", NULL);
    assert_int_equal(r->elements, 2);
    const redisReply *f = r->element[0], *n = r->element[1];
    assert_int_equal(f->elements, 4);
    assert_string_equal(f->element[0]->str, "123");
    assert_string_equal(f->element[1]->str, "1");
    assert_int_equal(f->element[2]->elements, 2);
    assert_string_equal(f->element[2]->element[0]->str, a); /* sorted: a < b */
    assert_string_equal(f->element[2]->element[1]->str, b);
    /* each job's owner, for a user's view of the fleet (the dispatch's user_id) */
    assert_int_equal(f->element[3]->elements, 2);
    assert_string_equal(f->element[3]->element[0]->str, "usr_1");
    assert_string_equal(f->element[3]->element[1]->str, "usr_1");
    assert_string_equal(n->element[0]->str, "");
    assert_string_equal(n->element[1]->str, "");
    assert_int_equal(n->element[2]->elements, 0);
    assert_int_equal(n->element[3]->elements, 0);
    freeReplyObject(r);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(wmt_setup, wmt_teardown, test_heartbeat, test_reaper, test_drain,
                       test_lost_claim, test_fleet);
}
