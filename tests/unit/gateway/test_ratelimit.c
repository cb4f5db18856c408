/* Unit tests for the gateway's rate limit (ratelimit.c): the GCRA arithmetic as a pure
 * function, and the reading of the script's answer. test_it_ratelimit checks that the Lua
 * script decides exactly like gw_rl_gcra on a real Redis. */
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

#define S 1000000LL           /* microseconds */
#define T0 (1800000000LL * S) /* some wall-clock instant */

/* Runs one request at now against *tat, storing the new tat when allowed. */
static struct gw_rl hit(int64_t now, int64_t *tat, int rate, int burst)
{
    struct gw_rl rl;

    memset(&rl, 0x5a, sizeof(rl));
    gw_rl_gcra(now, *tat, rate, burst, &rl);
    if (rl.allowed)
        *tat = rl.tat_us;
    else
        assert_true(rl.tat_us == *tat); /* a refusal stores nothing new */
    return rl;
}

static void test_burst_then_refused(void **state)
{
    int64_t tat = 0;
    struct gw_rl rl;
    int i;

    /* 600/min = one per 100 ms, bursts of 100: 100 at once, the 101st refused */
    for (i = 0; i < 100; i++) {
        rl = hit(T0, &tat, 600, 100);
        assert_true(rl.allowed);
        assert_int_equal(rl.limit, 100);
        assert_int_equal(rl.rate_per_min, 600);
        assert_int_equal(rl.remaining, 99 - i);
        assert_int_equal(rl.retry_after_s, 0);
    }
    assert_int_equal(rl.reset_s, 10); /* 100 x 100 ms until the burst is whole again */
    rl = hit(T0, &tat, 600, 100);
    assert_false(rl.allowed);
    assert_int_equal(rl.remaining, 0);
    assert_int_equal(rl.retry_after_s, 1); /* 100 ms, rounded up to whole seconds */
    assert_int_equal(rl.reset_s, 10);
    /* 99 ms later: still refused; 100 ms later: one more, and only one */
    assert_false(hit(T0 + 99999, &tat, 600, 100).allowed);
    rl = hit(T0 + 100000, &tat, 600, 100);
    assert_true(rl.allowed);
    assert_int_equal(rl.remaining, 0);
    assert_false(hit(T0 + 100000, &tat, 600, 100).allowed);
}

static void test_small_limits_and_retry_after(void **state)
{
    int64_t tat = 0;
    struct gw_rl rl;
    int i;

    /* 6/min = one per 10 s, bursts of 4 */
    for (i = 0; i < 4; i++)
        assert_true(hit(T0, &tat, 6, 4).allowed);
    rl = hit(T0, &tat, 6, 4);
    assert_false(rl.allowed);
    assert_int_equal(rl.retry_after_s, 10);
    assert_int_equal(rl.reset_s, 40);
    rl = hit(T0 + 3 * S + 1, &tat, 6, 4);
    assert_false(rl.allowed);
    assert_int_equal(rl.retry_after_s, 7); /* 6.999999 s, rounded up */
    assert_int_equal(rl.reset_s, 37);
    rl = hit(T0 + 10 * S, &tat, 6, 4);
    assert_true(rl.allowed);
    assert_int_equal(rl.remaining, 0);
    assert_int_equal(rl.reset_s, 40);
}

static void test_idle_restores_the_burst(void **state)
{
    int64_t tat = 0;
    struct gw_rl rl;
    int i;

    for (i = 0; i < 5; i++)
        assert_true(hit(T0, &tat, 60, 5).allowed);
    assert_false(hit(T0, &tat, 60, 5).allowed);
    /* 2.5 s later two are back (one per second), not three */
    assert_true(hit(T0 + 2500000, &tat, 60, 5).allowed);
    assert_true(hit(T0 + 2500000, &tat, 60, 5).allowed);
    assert_false(hit(T0 + 2500000, &tat, 60, 5).allowed);
    /* after a long pause the stored tat is in the past: a whole burst again */
    rl = hit(T0 + 3600 * S, &tat, 60, 5);
    assert_true(rl.allowed);
    assert_int_equal(rl.remaining, 4);
    assert_int_equal(rl.reset_s, 1);
}

static void test_steady_rate_never_refused(void **state)
{
    int64_t tat = 0, t = T0;
    int i;

    /* exactly one per emission interval (100 ms) with a burst of 1 is always allowed */
    for (i = 0; i < 1000; i++, t += 100000) {
        struct gw_rl rl = hit(t, &tat, 600, 1);

        assert_true(rl.allowed);
        assert_int_equal(rl.remaining, 0);
    }
    /* one microsecond early is refused */
    assert_false(hit(t - 100000 + 99999, &tat, 600, 1).allowed);
}

/* Hammering for a long time never lets more through than burst + elapsed / T, for rates
 * that do not divide a minute evenly. */
static void test_never_more_than_the_limit(void **state)
{
    static const int rates[][2] = {{7, 3}, {600, 100}, {1, 1}, {59, 10}, {1000000, 1}};
    size_t r;

    for (r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        int rate = rates[r][0], burst = rates[r][1];
        int64_t interval = (60 * S + rate - 1) / rate, tat = 0, t, step = interval / 7 + 1;
        int64_t span = 600 * S, allowed = 0, max, min;

        if (rate == 1000000)
            span = 2 * S;
        for (t = T0; t < T0 + span; t += step)
            allowed += hit(t, &tat, rate, burst).allowed;
        /* at most the burst plus one per interval; at least that when every allowed
         * request could come up to one step late */
        max = burst + span / interval;
        min = burst + span / (interval + step) - 1;
        if (allowed > max || allowed < min)
            fail_msg("rate %d burst %d: %lld allowed in %lld us, want %lld..%lld", rate, burst,
                     (long long)allowed, (long long)span, (long long)min, (long long)max);
    }
}

static void test_clamps(void **state)
{
    int64_t tat = 0;
    struct gw_rl rl;

    rl = hit(T0, &tat, 0, 0); /* treated as 1/min, burst 1 */
    assert_true(rl.allowed);
    assert_int_equal(rl.limit, 1);
    assert_int_equal(rl.rate_per_min, 1);
    rl = hit(T0, &tat, -5, -5);
    assert_false(rl.allowed);
    assert_int_equal(rl.retry_after_s, 60);
}

/* ---- the script's answer ---------------------------------------------------------------- */

static redisReply *r_int(long long v)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static redisReply *r_str(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = REDIS_REPLY_STRING;
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *r_arr(size_t n, ...)
{
    redisReply *r = calloc(1, sizeof(*r));
    va_list ap;
    size_t i;

    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof(*r->element));
    va_start(ap, n);
    for (i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static void r_free(redisReply *r)
{
    size_t i;

    for (i = 0; i < r->elements; i++)
        r_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

static void test_parse_reply(void **state)
{
    struct gw_rl_reply out;
    redisReply *r;

    r = r_arr(7, r_int(1), r_str("{\"k\":1}"), r_int(1), r_str("1800000000123456"), r_str("0"),
              r_int(600), r_int(100));
    assert_int_equal(gw_rl_parse_reply(r, &out), 0);
    assert_int_equal(out.status, 1);
    assert_int_equal(out.record_len, 7);
    assert_memory_equal(out.record, "{\"k\":1}", 7);
    assert_true(out.allowed);
    assert_true(out.now_us == 1800000000123456LL);
    assert_true(out.tat_us == 0);
    assert_int_equal(out.rate_per_min, 600);
    assert_int_equal(out.burst, 100);
    r_free(r);

    r = r_arr(7, r_int(1), r_str("{}"), r_int(0), r_int(5), r_int(6), r_int(7), r_int(8));
    assert_int_equal(gw_rl_parse_reply(r, &out), 0);
    assert_false(out.allowed);
    assert_true(out.now_us == 5 && out.tat_us == 6);
    r_free(r);

    /* miss, tombstone, unreadable record */
    r = r_arr(1, r_int(0));
    assert_int_equal(gw_rl_parse_reply(r, &out), 0);
    assert_int_equal(out.status, 0);
    r_free(r);
    r = r_arr(1, r_int(-1));
    assert_int_equal(gw_rl_parse_reply(r, &out), 0);
    assert_int_equal(out.status, -1);
    r_free(r);
    r = r_arr(1, r_int(-2));
    assert_int_equal(gw_rl_parse_reply(r, &out), 0);
    assert_int_equal(out.status, -2);
    r_free(r);
}

static void test_parse_reply_refusals(void **state)
{
    struct gw_rl_reply out;
    redisReply *bad[] = {
        r_int(1),
        r_str("OK"),
        r_arr(0),
        r_arr(1, r_int(2)),   /* unknown status */
        r_arr(1, r_int(1)),   /* found, but nothing else */
        r_arr(1, r_str("x")), /* status not a number */
        r_arr(7, r_int(1), r_int(5), r_int(1), r_int(1), r_int(1), r_int(1), r_int(1)),
        r_arr(7, r_int(1), r_str("{}"), r_int(1), r_str("12x"), r_int(1), r_int(1), r_int(1)),
        r_arr(7, r_int(1), r_str("{}"), r_int(1), r_int(1), r_int(1), r_int(0), r_int(1)),
        r_arr(7, r_int(1), r_str("{}"), r_int(1), r_int(1), r_int(1), r_int(1), r_int(0)),
        r_arr(6, r_int(1), r_str("{}"), r_int(1), r_int(1), r_int(1), r_int(1)),
        r_arr(7, r_int(1), r_str("{}"), r_int(1), r_int(1), r_int(1), r_int(1LL << 40), r_int(1)),
    };
    size_t i;

    assert_int_equal(gw_rl_parse_reply(NULL, &out), -1);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (gw_rl_parse_reply(bad[i], &out) != -1)
            fail_msg("accepted answer %zu", i);
        r_free(bad[i]);
    }
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_burst_then_refused, test_small_limits_and_retry_after,
                       test_idle_restores_the_burst, test_steady_rate_never_refused,
                       test_never_more_than_the_limit, test_clamps, test_parse_reply,
                       test_parse_reply_refusals);
}
