/*
 * Integration (needs NF_TEST_REDIS_ADDR): the scheduler's Redis scripts of the job
 * lifecycle - the reconciler's look at the worker-manager's keys, its snapshot version
 * check, and the read-your-writes list of recent unrecorded jobs. Works in its own
 * database (SELECT 12), emptied before and after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_test.h"
#include "sched.h"

#define TEST_DB 12
#define J1 "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"
#define J2 "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9N"
#define J3 "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9P"

static struct nf_test_redis_db redis = {TEST_DB, NULL};

static void test_wm_check(void **state)
{
    const char *args[] = {
        "wm:queue:generate",
        "wm:lease:" J1,
        "wm:job:" J1, /* queued */
        "wm:queue:generate",
        "wm:lease:" J2,
        "wm:job:" J2, /* leased */
        "wm:queue:audit",
        "wm:lease:" J3,
        "wm:job:" J3, /* lost */
        J1,
        J2,
        J3,
    };
    long long want[9] = {1, 0, 1, 0, 1, 2, 0, 0, -1};
    redisReply *r;
    size_t i;

    nf_test_redis_fresh(redis.rc);
    nf_test_redis_ok(redis.rc, "ZADD wm:queue:generate 4 %s", J1);
    nf_test_redis_ok(redis.rc, "SET wm:job:%s {\"attempt\":1}", J1);
    nf_test_redis_ok(redis.rc, "SET wm:lease:%s {\"worker_id\":\"w\"}", J2);
    nf_test_redis_ok(redis.rc, "SET wm:job:%s {\"attempt\":2}", J2);
    nf_test_redis_ok(redis.rc, "ZADD wm:queue:audit 4 %s",
                     J1); /* another job in that queue: not J3 */
    r = nf_test_redis_eval(redis.rc, sched_wm_check_lua, 9, 12, args);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 9);
    for (i = 0; i < 9; i++)
        assert_int_equal(r->element[i]->integer, want[i]);
    freeReplyObject(r);

    /* a corrupt wm:job value is "unknown attempt", never an error */
    nf_test_redis_ok(redis.rc, "SET wm:job:%s not-json", J3);
    r = nf_test_redis_eval(redis.rc, sched_wm_check_lua, 9, 12, args);
    assert_int_equal(r->element[8]->integer, -1);
    freeReplyObject(r);
}

static void test_snapshot_check(void **state)
{
    const char *args[] = {"job:" J1, "job:" J2, "job:" J3, "5", "5", "5", "h1", "h2", "h3"};
    redisReply *r;

    nf_test_redis_fresh(redis.rc);
    nf_test_redis_ok(redis.rc, "HSET job:%s ver 5 h h1 status running", J1); /* current */
    nf_test_redis_ok(redis.rc, "HSET job:%s ver 4 h h2 status queued", J2); /* older than its row */
    /* J3: no snapshot at all */
    r = nf_test_redis_eval(redis.rc, sched_snap_check_lua, 3, 9, args);
    assert_int_equal(r->elements, 2);
    assert_int_equal(r->element[0]->integer, 2);
    assert_int_equal(r->element[1]->integer, 3);
    freeReplyObject(r);

    /* the gateway's own snapshot (no ver) is older than any row; a newer one is left
     * alone; the same version with another doc (a racing writer) is rewritten */
    nf_test_redis_ok(redis.rc, "DEL job:%s", J1);
    nf_test_redis_ok(redis.rc, "HSET job:%s status queued", J1);
    nf_test_redis_ok(redis.rc, "HSET job:%s ver 9 h other", J2);
    nf_test_redis_ok(redis.rc, "HSET job:%s ver 5 h stale", J3);
    r = nf_test_redis_eval(redis.rc, sched_snap_check_lua, 3, 9, args);
    assert_int_equal(r->elements, 2);
    assert_int_equal(r->element[0]->integer, 1);
    assert_int_equal(r->element[1]->integer, 3);
    freeReplyObject(r);
}

static void test_snapshot_write_and_hash(void **state)
{
    char h[SCHED_DOC_HASH_LEN + 1], h2[SCHED_DOC_HASH_LEN + 1];
    const char *write[] = {"job:" J1, "usr_a", "running", "{\"a\":1}", "3", "60", NULL};
    const char *older[] = {"job:" J1, "usr_a", "queued", "{\"a\":0}", "2", "60", "x"};
    redisReply *r;

    nf_test_redis_fresh(redis.rc);
    sched_doc_hash("{\"a\":1}", h);
    sched_doc_hash("{\"a\":2}", h2);
    assert_int_equal(strlen(h), SCHED_DOC_HASH_LEN);
    assert_string_not_equal(h, h2);
    write[6] = h;
    r = nf_test_redis_eval(redis.rc, sched_snapshot_lua, 1, 7, write);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    r = nf_test_redis_eval(redis.rc, sched_snapshot_lua, 1, 7, older); /* an older row never wins */
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    r = redisCommand(redis.rc, "HMGET job:%s status ver h", J1);
    assert_string_equal(r->element[0]->str, "running");
    assert_string_equal(r->element[1]->str, "3");
    assert_string_equal(r->element[2]->str, h);
    freeReplyObject(r);
}

static void test_recent_unrecorded(void **state)
{
    const char *args[] = {"gw:recent:usr_a", "1000", "usr_a"};
    redisReply *r;

    nf_test_redis_fresh(redis.rc);
    nf_test_redis_ok(redis.rc, "ZADD gw:recent:usr_a 500 %s", J1);  /* too old */
    nf_test_redis_ok(redis.rc, "ZADD gw:recent:usr_a 2000 %s", J2); /* accepted, not recorded */
    nf_test_redis_ok(redis.rc, "ZADD gw:recent:usr_a 3000 %s", J3); /* recorded already (ver) */
    nf_test_redis_ok(redis.rc,
                     "ZADD gw:recent:usr_a 4000 job_gone"); /* snapshot deleted (failed submit) */
    nf_test_redis_ok(redis.rc, "HSET job:%s user_id usr_a doc {\"job_id\":\"%s\"}", J1, J1);
    nf_test_redis_ok(redis.rc, "HSET job:%s user_id usr_a doc {\"job_id\":\"%s\"}", J2, J2);
    nf_test_redis_ok(redis.rc, "HSET job:%s user_id usr_a doc {\"job_id\":\"%s\"} ver 1", J3, J3);
    r = nf_test_redis_eval(redis.rc, sched_recent_lua, 1, 3, args);
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->str, "{\"job_id\":\"" J2 "\"}");
    freeReplyObject(r);

    /* another user's snapshot under this user's list is never returned */
    nf_test_redis_ok(redis.rc, "HSET job:%s user_id usr_b", J2);
    r = nf_test_redis_eval(redis.rc, sched_recent_lua, 1, 3, args);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
}

int main(void)
{
    return NF_TEST_RUN_STATE(&redis, nf_test_redis_db_setup, nf_test_redis_db_teardown,
                             test_wm_check, test_snapshot_check, test_snapshot_write_and_hash,
                             test_recent_unrecorded);
}
