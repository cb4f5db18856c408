/*
 * Integration (needs NF_TEST_REDIS_ADDR): the Idempotency-Key scripts against a real
 * Redis - first use, concurrent duplicates (exactly one "new"), replay, conflict, the
 * pending claim's TTL, and that finish/abort act only with the claim's token. Works in
 * its own database (SELECT 11), emptied before and after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_test.h"

#define TEST_DB 11
#define KEY "gw:idem:usr_a:order-42"
#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"

static struct nf_test_redis_db redis = {TEST_DB, NULL};

/* begin with hash and token: the parsed state (and the replayed body, copied). */
static enum gw_idem_state begin(const char *hash, const char *token, char *body, size_t len)
{
    const char *args[] = {KEY, hash, token, "30"};
    redisReply *r = nf_test_redis_eval(redis.rc, gw_idem_begin_lua, 1, 4, args);
    struct gw_idem_reply out;

    assert_int_equal(gw_idem_parse_reply(r, &out), 0);
    if (body && out.state == GW_IDEM_REPLAY)
        snprintf(body, len, "%.*s", (int)out.body_len, out.body);
    freeReplyObject(r);
    return out.state;
}

static long long finish(const char *token, const char *body)
{
    const char *args[] = {KEY, token, "202", body, "86400"};
    redisReply *r = nf_test_redis_eval(redis.rc, gw_idem_finish_lua, 1, 5, args);
    long long v = r->integer;

    freeReplyObject(r);
    return v;
}

static long long abort_claim(const char *token)
{
    const char *args[] = {KEY, token};
    redisReply *r = nf_test_redis_eval(redis.rc, gw_idem_abort_lua, 1, 2, args);
    long long v = r->integer;

    freeReplyObject(r);
    return v;
}

static long long ttl(void)
{
    redisReply *r = redisCommand(redis.rc, "TTL %s", KEY);
    long long v = r->integer;

    freeReplyObject(r);
    return v;
}

static void test_first_then_replay(void **state)
{
    char body[128] = "";

    nf_test_redis_fresh(redis.rc);
    assert_int_equal(begin(H1, "tok1", NULL, 0), GW_IDEM_NEW);
    assert_true(ttl() > 0 && ttl() <= 30); /* a pending claim expires */
    /* a duplicate while the first is in flight waits; another body conflicts */
    assert_int_equal(begin(H1, "tok2", NULL, 0), GW_IDEM_PENDING);
    assert_int_equal(begin(H2, "tok3", NULL, 0), GW_IDEM_CONFLICT);
    /* done: the original answer for 24 h, for the same body only */
    assert_int_equal(finish("tok1", "{\"job_id\":\"job_1\"}"), 1);
    assert_true(ttl() > 86000);
    assert_int_equal(begin(H1, "tok4", body, sizeof(body)), GW_IDEM_REPLAY);
    assert_string_equal(body, "{\"job_id\":\"job_1\"}");
    assert_int_equal(begin(H2, "tok5", NULL, 0), GW_IDEM_CONFLICT);
    /* a finished claim cannot be aborted or finished again by anyone */
    assert_int_equal(abort_claim("tok1"), 0);
    assert_int_equal(finish("tok1", "{\"job_id\":\"job_2\"}"), 0);
    assert_int_equal(begin(H1, "tok6", body, sizeof(body)), GW_IDEM_REPLAY);
    assert_string_equal(body, "{\"job_id\":\"job_1\"}");
}

static void test_only_the_claim_holder_finishes_or_aborts(void **state)
{
    nf_test_redis_fresh(redis.rc);
    assert_int_equal(begin(H1, "mine", NULL, 0), GW_IDEM_NEW);
    assert_int_equal(finish("theirs", "{}"), 0);
    assert_int_equal(abort_claim("theirs"), 0);
    assert_int_equal(begin(H1, "x", NULL, 0), GW_IDEM_PENDING);
    /* the holder's submit failed: the key is free again, for any body */
    assert_int_equal(abort_claim("mine"), 1);
    assert_int_equal(begin(H2, "again", NULL, 0), GW_IDEM_NEW);
}

static void test_concurrent_begins_one_winner(void **state)
{
    redisReply *r;
    const char *argv[7] = {"EVALSHA", NULL, "1", KEY, H1, NULL, "30"};
    char sha[64], tok[16];
    int i, news = 0, pendings = 0;
    struct gw_idem_reply out;

    nf_test_redis_fresh(redis.rc);
    r = redisCommand(redis.rc, "SCRIPT LOAD %s", gw_idem_begin_lua);
    snprintf(sha, sizeof(sha), "%s", r->str);
    freeReplyObject(r);
    argv[1] = sha;
    /* twenty claims pipelined back to back: Redis runs each script atomically */
    for (i = 0; i < 20; i++) {
        snprintf(tok, sizeof(tok), "t%d", i);
        argv[5] = tok;
        assert_int_equal(redisAppendCommandArgv(redis.rc, 7, argv, NULL), REDIS_OK);
    }
    for (i = 0; i < 20; i++) {
        assert_int_equal(redisGetReply(redis.rc, (void **)&r), REDIS_OK);
        assert_int_equal(gw_idem_parse_reply(r, &out), 0);
        news += out.state == GW_IDEM_NEW;
        pendings += out.state == GW_IDEM_PENDING;
        freeReplyObject(r);
    }
    assert_int_equal(news, 1);
    assert_int_equal(pendings, 19);
    /* and it is the first one's claim */
    assert_int_equal(finish("t0", "{\"job_id\":\"job_1\"}"), 1);
}

int main(void)
{
    return NF_TEST_RUN_STATE(&redis, nf_test_redis_db_setup, nf_test_redis_db_teardown,
                             test_first_then_replay, test_only_the_claim_holder_finishes_or_aborts,
                             test_concurrent_begins_one_winner);
}
