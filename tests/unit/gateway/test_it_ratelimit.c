/* Integration tests of the gateway's auth + rate-limit script (ratelimit.c) on a real
 * Redis: the record lookup and its outcomes, the GCRA decision against gw_rl_gcra, the
 * per-key lower limits, sessions limited per user, and the auth:used usage record.
 * Skipped unless NF_TEST_REDIS_ADDR (host:port) is set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "gw.h"
#include "nf_id.h"
#include "nf_test.h"

struct fixture {
    redisContext *c;
    char user_id[NF_ID_MAX];
    char key_id[NF_ID_MAX];
    char cache_key[128];
};

static int setup(void **state)
{
    redisContext *c;
    struct fixture *f;

    *state = NULL;
    if (nf_test_redis_open(&c, -1) < 0)
        return -1;
    if (c == NULL)
        return 0; /* NF_TEST_REDIS_ADDR not set: each test skips itself */
    f = calloc(1, sizeof(*f));
    f->c = c;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (f) {
        nf_test_redis_close(f->c, -1);
        free(f);
    }
    return 0;
}

/* Fresh ids per test, so runs never see each other's state. */
static int fresh(void **state)
{
    struct fixture *f = *state;
    char hash[NF_SHA256_HEX_LEN + 1];

    if (!f)
        return 0;
    nf_id_new("usr", f->user_id, sizeof(f->user_id));
    nf_id_new("key", f->key_id, sizeof(f->key_id));
    nf_crypto_sha256_hex(f->key_id, strlen(f->key_id), hash);
    snprintf(f->cache_key, sizeof(f->cache_key), "auth:key:%s", hash);
    return 0;
}

/* Runs the script; returns the reply (caller frees). */
static redisReply *run(struct fixture *f, const char *key, int rate, int burst, const char *rec)
{
    char rate_s[16], burst_s[16];
    const char *args[] = {key, rate_s, burst_s, rec};

    snprintf(rate_s, sizeof(rate_s), "%d", rate);
    snprintf(burst_s, sizeof(burst_s), "%d", burst);
    return nf_test_redis_eval(f->c, gw_rl_lua, 1, 4, args);
}

static int status_of(struct fixture *f, const char *key, const char *rec)
{
    redisReply *r = run(f, key, 600, 100, rec);
    struct gw_rl_reply out;
    int status;

    assert_int_equal(gw_rl_parse_reply(r, &out), 0);
    status = out.status;
    freeReplyObject(r);
    return status;
}

static void test_lookup_outcomes(void **state)
{
    struct fixture *f = nf_test_need(state);

    assert_int_equal(status_of(f, f->cache_key, ""), 0); /* not cached */
    nf_test_redis_ok(f->c, "SET %s revoked EX 60", f->cache_key);
    assert_int_equal(status_of(f, f->cache_key, ""), -1);
    nf_test_redis_ok(f->c, "SET %s %s EX 60", f->cache_key, "not json");
    assert_int_equal(status_of(f, f->cache_key, ""), -2);
    nf_test_redis_ok(f->c, "SET %s %s EX 60", f->cache_key, "{\"x\":1}");
    assert_int_equal(status_of(f, f->cache_key, ""), -2);
    nf_test_redis_ok(f->c, "SET %s %s EX 60", f->cache_key, "[1,2]");
    assert_int_equal(status_of(f, f->cache_key, ""), -2);
    nf_test_redis_ok(f->c, "DEL %s", f->cache_key);
}

/* One request; checks the Lua decision against gw_rl_gcra and returns it. */
static bool request(struct fixture *f, const char *key, int rate, int burst, const char *rec,
                    int want_rate, int want_burst)
{
    redisReply *r = run(f, key, rate, burst, rec);
    struct gw_rl_reply out;
    struct gw_rl rl;
    bool allowed;

    assert_int_equal(gw_rl_parse_reply(r, &out), 0);
    assert_int_equal(out.status, 1);
    assert_int_equal(out.rate_per_min, want_rate);
    assert_int_equal(out.burst, want_burst);
    gw_rl_gcra(out.now_us, out.tat_us, out.rate_per_min, out.burst, &rl);
    if (rl.allowed != out.allowed)
        fail_msg("lua says %d, c says %d (now %lld tat %lld)", out.allowed, rl.allowed,
                 (long long)out.now_us, (long long)out.tat_us);
    allowed = out.allowed;
    freeReplyObject(r);
    return allowed;
}

static void test_key_burst_and_lower_limit(void **state)
{
    struct fixture *f = nf_test_need(state);
    char rec[256], rl_key[128];
    redisReply *r;
    struct timeval tv;
    long long ms;
    int i, allowed = 0;

    /* the key's own lower limit (6/min, burst 3) wins over the default (600, 100) */
    snprintf(rec, sizeof(rec),
             "{\"key_id\":\"%s\",\"user_id\":\"%s\",\"expires_at\":null,"
             "\"rate_limit_per_minute\":6,\"burst\":3}",
             f->key_id, f->user_id);
    nf_test_redis_ok(f->c, "SET %s %s EX 60", f->cache_key, rec);
    for (i = 0; i < 10; i++)
        allowed += request(f, f->cache_key, 600, 100, "", 6, 3);
    assert_int_equal(allowed, 3);

    /* the limiter state lives in gw:rl:<key_id>, with a TTL */
    snprintf(rl_key, sizeof(rl_key), "gw:rl:%s", f->key_id);
    r = redisCommand(f->c, "PTTL %s", rl_key);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_true(r->integer > 29000 && r->integer <= 31000); /* 3 x 10 s + 1 s */
    freeReplyObject(r);

    /* usage recorded for nf-auth: auth:used <key_id> = now in ms */
    r = redisCommand(f->c, "HGET auth:used %s", f->key_id);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    gettimeofday(&tv, NULL);
    ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    assert_true(llabs(strtoll(r->str, NULL, 10) - ms) < 5000);
    freeReplyObject(r);
    nf_test_redis_ok(f->c, "HDEL auth:used %s", f->key_id);
    nf_test_redis_ok(f->c, "DEL %s %s", f->cache_key, rl_key);
}

static void test_default_limit_and_record_argument(void **state)
{
    struct fixture *f = nf_test_need(state);
    char rec[256], rl_key[128];
    int i, allowed = 0;

    /* a record asking for more than the default gets the default; the record is passed
     * in (the gateway's second run after nf-auth answered): no cache entry needed */
    snprintf(rec, sizeof(rec),
             "{\"key_id\":\"%s\",\"user_id\":\"%s\",\"rate_limit_per_minute\":100000,"
             "\"burst\":1000}",
             f->key_id, f->user_id);
    for (i = 0; i < 8; i++)
        allowed += request(f, f->cache_key, 60, 5, rec, 60, 5);
    assert_int_equal(allowed, 5);
    snprintf(rl_key, sizeof(rl_key), "gw:rl:%s", f->key_id);
    nf_test_redis_ok(f->c, "HDEL auth:used %s", f->key_id);
    nf_test_redis_ok(f->c, "DEL %s", rl_key);
}

static void test_session_limited_per_user(void **state)
{
    struct fixture *f = nf_test_need(state);
    char rec[256], rl_key[128], k1[128], k2[128];
    redisReply *r;
    int i, allowed = 0;

    /* two sessions of one user share the user's limit */
    snprintf(rec, sizeof(rec), "{\"user_id\":\"%s\",\"expires_at\":null}", f->user_id);
    snprintf(k1, sizeof(k1), "auth:session:1%s", f->key_id);
    snprintf(k2, sizeof(k2), "auth:session:2%s", f->key_id);
    nf_test_redis_ok(f->c, "SET %s %s EX 60", k1, rec);
    nf_test_redis_ok(f->c, "SET %s %s EX 60", k2, rec);
    for (i = 0; i < 6; i++) {
        allowed += request(f, k1, 60, 4, "", 60, 4);
        allowed += request(f, k2, 60, 4, "", 60, 4);
    }
    assert_int_equal(allowed, 4);
    snprintf(rl_key, sizeof(rl_key), "gw:rl:%s", f->user_id);
    r = redisCommand(f->c, "EXISTS %s", rl_key);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    /* a session records no key usage */
    r = redisCommand(f->c, "HEXISTS auth:used %s", f->user_id);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    nf_test_redis_ok(f->c, "DEL %s %s %s", k1, k2, rl_key);
}

static void test_refusal_stores_nothing(void **state)
{
    struct fixture *f = nf_test_need(state);
    char rec[256], rl_key[128];
    redisReply *r;
    char before[64];

    snprintf(rec, sizeof(rec), "{\"key_id\":\"%s\",\"user_id\":\"%s\"}", f->key_id, f->user_id);
    assert_true(request(f, f->cache_key, 1, 1, rec, 1, 1));
    snprintf(rl_key, sizeof(rl_key), "gw:rl:%s", f->key_id);
    r = redisCommand(f->c, "GET %s", rl_key);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    snprintf(before, sizeof(before), "%s", r->str);
    freeReplyObject(r);
    assert_false(request(f, f->cache_key, 1, 1, rec, 1, 1));
    assert_false(request(f, f->cache_key, 1, 1, rec, 1, 1));
    r = redisCommand(f->c, "GET %s", rl_key);
    assert_string_equal(r->str, before); /* refused requests do not push the tat */
    freeReplyObject(r);
    nf_test_redis_ok(f->c, "HDEL auth:used %s", f->key_id);
    nf_test_redis_ok(f->c, "DEL %s", rl_key);
}

int main(void)
{
    return NF_TEST_RUN_ALL(setup, teardown, NULL, fresh, NULL, test_lookup_outcomes,
                           test_key_burst_and_lower_limit, test_default_limit_and_record_argument,
                           test_session_limited_per_user, test_refusal_stores_nothing);
}
