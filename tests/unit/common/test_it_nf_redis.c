/*
 * nf_redis against a real Redis (NF_TEST_REDIS_ADDR=host:port; skipped when unset).
 * Keys are prefixed with a per-run tag and deleted at the end, so runs can repeat against
 * a shared test server; nothing here blocks the server for other clients (a silent server
 * is covered by test_nf_redis.c's fake one).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_redis.h"
#include "nf_test.h"

struct env {
    struct event_base *base;
    char host[128];
    int port;
    struct nf_redis *r;
    char tag[64]; /* key prefix of this run */
};

static struct nf_redis *connect_redis(struct env *e, int timeout_ms)
{
    struct nf_redis *r = NULL;
    assert_int_equal(nf_redis_new(&r, e->base, e->host, e->port, timeout_ms), 0);
    assert_true(nf_test_run_until(e->base, nf_test_redis_ready, r, 3000));
    return r;
}

/* Runs one command on e->r and waits for its callback. */
static void cmd_wait(struct env *e, struct nf_test_reply *s, const char *fmt, const char *a,
                     const char *b)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, s, fmt, a, b), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, s, 3000));
    assert_int_equal(s->calls, 1);
}

static void key(struct env *e, char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s%s", e->tag, name);
}

static int setup(void **state)
{
    const char *addr = nf_test_env("NF_TEST_REDIS_ADDR");
    *state = NULL;
    if (addr == NULL)
        return 0; /* each test skips itself: skip() in a setup counts as an error */
    struct env *e = calloc(1, sizeof(*e));
    const char *colon = strrchr(addr, ':');
    assert_non_null(colon);
    snprintf(e->host, sizeof(e->host), "%.*s", (int)(colon - addr), addr);
    e->port = atoi(colon + 1);
    e->base = event_base_new();
    nf_test_unique_name(e->tag, sizeof(e->tag), "nf_test:redis:");
    strcat(e->tag, ":");
    e->r = connect_redis(e, 1000);
    *state = e;
    return 0;
}

static void del_run_keys(struct env *e)
{
    /* our keys only: KEYS is fine on a test server */
    struct nf_test_reply s;
    char pat[96];
    snprintf(pat, sizeof(pat), "%s*", e->tag);
    cmd_wait(e, &s, "KEYS %s", pat, NULL);
    assert_int_equal(s.type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < s.elements && i < 8; i++) {
        struct nf_test_reply d;
        cmd_wait(e, &d, "DEL %s", s.el[i], NULL);
    }
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e == NULL)
        return 0;
    if (e->r && nf_redis_ready(e->r))
        del_run_keys(e);
    nf_redis_free(e->r);
    event_base_free(e->base);
    free(e);
    return 0;
}

static void test_set_get(void **state)
{
    struct env *e = nf_test_need(state);
    char k[128];
    key(e, k, sizeof(k), "str");
    struct nf_test_reply s;
    cmd_wait(e, &s, "SET %s %s", k, "hello");
    assert_int_equal(s.type, REDIS_REPLY_STATUS);
    assert_string_equal(s.str, "OK");
    cmd_wait(e, &s, "GET %s", k, NULL);
    assert_int_equal(s.type, REDIS_REPLY_STRING);
    assert_string_equal(s.str, "hello");

    /* binary-safe value through %b */
    memset(&s, 0, sizeof(s));
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &s, "SET %s %b", k, "a\0b", (size_t)3),
                     0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &s, 3000));
    cmd_wait(e, &s, "GET %s", k, NULL);
    assert_int_equal(s.len, 3);
    assert_memory_equal(s.str, "a\0b", 3);

    key(e, k, sizeof(k), "absent");
    cmd_wait(e, &s, "GET %s", k, NULL);
    assert_false(s.null);
    assert_int_equal(s.type, REDIS_REPLY_NIL);
}

static void test_hset_hgetall(void **state)
{
    struct env *e = nf_test_need(state);
    char k[128];
    key(e, k, sizeof(k), "hash");
    const char *argv[] = {"HSET", k, "f1", "v1", "f2", "v\0two"};
    const size_t lens[] = {4, strlen(k), 2, 2, 2, 5};
    struct nf_test_reply s = {0};
    assert_int_equal(nf_redis_cmd_argv(e->r, nf_test_on_reply, &s, 6, argv, lens), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &s, 3000));
    assert_int_equal(s.type, REDIS_REPLY_INTEGER);
    assert_int_equal(s.integer, 2);

    const char *argv2[] = {"HGETALL", k};
    memset(&s, 0, sizeof(s));
    assert_int_equal(nf_redis_cmd_argv(e->r, nf_test_on_reply, &s, 2, argv2, NULL), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &s, 3000));
    assert_int_equal(s.type, REDIS_REPLY_ARRAY);
    assert_int_equal(s.elements, 4);
    bool f1 = false, f2 = false;
    for (int i = 0; i < 4; i += 2) {
        if (strcmp(s.el[i], "f1") == 0 && strcmp(s.el[i + 1], "v1") == 0)
            f1 = true;
        if (strcmp(s.el[i], "f2") == 0 && strcmp(s.el[i + 1], "v") == 0) /* %s stops at NUL */
            f2 = true;
    }
    assert_true(f1 && f2);
}

static void test_error_reply(void **state)
{
    struct env *e = nf_test_need(state);
    char k[128];
    key(e, k, sizeof(k), "hash2");
    struct nf_test_reply s;
    cmd_wait(e, &s, "HSET %s f %s", k, "v");
    cmd_wait(e, &s, "INCR %s", k, NULL);
    assert_false(s.null);
    assert_int_equal(s.type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(s.str, "WRONGTYPE"));

    cmd_wait(e, &s, "NF_NO_SUCH_COMMAND %s", k, NULL);
    assert_int_equal(s.type, REDIS_REPLY_ERROR);
    assert_true(nf_redis_ready(e->r));
}

static void test_timeout_and_late_reply(void **state)
{
    struct env *e = nf_test_need(state);
    char k[128];
    key(e, k, sizeof(k), "list");
    struct nf_redis *slow = connect_redis(e, 200);

    struct nf_test_reply s = {0};
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_redis_cmd(slow, nf_test_on_reply, &s, "BLPOP %s 5", k), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &s, 3000));
    assert_true(s.null);
    assert_true(s.at_ms - t0 >= 150 && s.at_ms - t0 < 1000);

    /* unblock the BLPOP: its late reply must be dropped, PING behind it answered */
    struct nf_test_reply p = {0}, push;
    assert_int_equal(nf_redis_cmd(slow, nf_test_on_reply, &p, "PING"), 0);
    cmd_wait(e, &push, "RPUSH %s %s", k, "x");
    assert_true(nf_test_run_until(e->base, nf_test_replied, &p, 3000));
    assert_int_equal(p.type, REDIS_REPLY_STATUS);
    assert_string_equal(p.str, "PONG");
    nf_test_run_for(e->base, 300);
    assert_int_equal(s.calls, 1);
    assert_int_equal(p.calls, 1);
    /* the BLPOP did run: the list is empty again */
    struct nf_test_reply len;
    cmd_wait(e, &len, "LLEN %s", k, NULL);
    assert_int_equal(len.integer, 0);
    nf_redis_free(slow);
}

static void test_connection_killed_then_reconnect(void **state)
{
    struct env *e = nf_test_need(state);
    char k[128];
    key(e, k, sizeof(k), "list2");
    struct nf_redis *victim = connect_redis(e, 3000);

    struct nf_test_reply id = {0};
    assert_int_equal(nf_redis_cmd(victim, nf_test_on_reply, &id, "CLIENT ID"), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &id, 3000));
    char idstr[32];
    snprintf(idstr, sizeof(idstr), "%lld", id.integer);

    /* a blocked command is in flight when the server drops the connection */
    struct nf_test_reply blocked = {0};
    assert_int_equal(nf_redis_cmd(victim, nf_test_on_reply, &blocked, "BLPOP %s 5", k), 0);
    nf_test_run_for(e->base, 50);
    struct nf_test_reply kill;
    long long t0 = nf_test_now_ms();
    cmd_wait(e, &kill, "CLIENT KILL ID %s", idstr, NULL);
    assert_int_equal(kill.integer, 1);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &blocked, 1000));
    assert_true(blocked.null);
    assert_true(blocked.at_ms - t0 < 500); /* at once, not after the 3 s timeout */
    assert_true(nf_test_run_until(e->base, nf_test_redis_down, victim, 1000));

    struct nf_test_reply fast = {0};
    t0 = nf_test_now_ms();
    assert_int_equal(nf_redis_cmd(victim, nf_test_on_reply, &fast, "PING"), -1);
    assert_int_equal(fast.calls, 1);
    assert_true(fast.null);
    assert_true(nf_test_now_ms() - t0 < 50);

    assert_true(nf_test_run_until(e->base, nf_test_redis_ready, victim, 3000));
    struct nf_test_reply ok = {0};
    assert_int_equal(nf_redis_cmd(victim, nf_test_on_reply, &ok, "SET %s %s", k, "back"), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &ok, 3000));
    assert_string_equal(ok.str, "OK");
    assert_int_equal(blocked.calls, 1);
    assert_int_equal(fast.calls, 1);
    nf_redis_free(victim);
}

static void test_eval_and_noscript_reload(void **state)
{
    struct env *e = nf_test_need(state);
    char k[128], lua[256];
    key(e, k, sizeof(k), "evalkey");
    /* a unique comment: the script is new to the server, so the first call takes the
     * NOSCRIPT path too */
    snprintf(lua, sizeof(lua),
             "-- %s\nredis.call('SET', KEYS[1], ARGV[1]); return {KEYS[1], ARGV[1], "
             "redis.call('GET', KEYS[1])}",
             e->tag);
    struct nf_redis_script *sc = nf_redis_script_new(e->r, lua);
    assert_non_null(sc);
    const char *argv[] = {k, "v1"};

    for (int round = 0; round < 3; round++) {
        if (round == 2) {
            struct nf_test_reply f;
            cmd_wait(e, &f, "SCRIPT FLUSH", NULL, NULL);
            assert_string_equal(f.str, "OK");
        }
        struct nf_test_reply s = {0};
        assert_int_equal(nf_redis_eval(e->r, sc, nf_test_on_reply, &s, 1, 2, argv, NULL), 0);
        assert_true(nf_test_run_until(e->base, nf_test_replied, &s, 3000));
        assert_int_equal(s.calls, 1);
        assert_int_equal(s.type, REDIS_REPLY_ARRAY);
        assert_int_equal(s.elements, 3);
        assert_string_equal(s.el[0], k);
        assert_string_equal(s.el[1], "v1");
        assert_string_equal(s.el[2], "v1");
    }

    /* our SHA-1 is the server's: after a SCRIPT LOAD the script exists under it */
    struct nf_test_reply load, exists;
    cmd_wait(e, &load, "SCRIPT LOAD %s", lua, NULL);
    cmd_wait(e, &exists, "SCRIPT EXISTS %s", load.str, NULL);
    assert_string_equal(exists.el[0], "1");

    /* a script error is an error reply, not NULL */
    struct nf_redis_script *bad = nf_redis_script_new(e->r, "return redis.error_reply('nf boom')");
    struct nf_test_reply s = {0};
    assert_int_equal(nf_redis_eval(e->r, bad, nf_test_on_reply, &s, 0, 0, NULL, NULL), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &s, 3000));
    assert_int_equal(s.type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(s.str, "nf boom"));

    /* a script that does not compile: the reload fails, the caller gets an error */
    struct nf_redis_script *broken = nf_redis_script_new(e->r, "return (((");
    memset(&s, 0, sizeof(s));
    assert_int_equal(nf_redis_eval(e->r, broken, nf_test_on_reply, &s, 0, 0, NULL, NULL), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &s, 3000));
    assert_int_equal(s.type, REDIS_REPLY_ERROR);
    nf_test_run_for(e->base, 100);
    assert_int_equal(s.calls, 1);
    assert_true(nf_redis_ready(e->r));
}

static void test_free_with_pending(void **state)
{
    struct env *e = nf_test_need(state);
    char k[128];
    key(e, k, sizeof(k), "list3");
    struct nf_redis *r = connect_redis(e, 3000);
    struct nf_test_reply a = {0}, b = {0}, c = {0};
    assert_int_equal(nf_redis_cmd(r, nf_test_on_reply, &a, "BLPOP %s 5", k), 0);
    nf_test_run_for(e->base, 50); /* written and blocked on the server */
    assert_int_equal(nf_redis_cmd(r, nf_test_on_reply, &b, "PING"), 0);
    assert_int_equal(nf_redis_cmd(r, nf_test_on_reply, &c, "GET %s", k), 0);
    nf_redis_free(r);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(c.calls, 1);
    assert_true(a.null && b.null && c.null);
    nf_test_run_for(e->base, 200);
    assert_int_equal(a.calls + b.calls + c.calls, 3);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(setup, teardown, test_set_get, test_hset_hgetall, test_error_reply,
                       test_timeout_and_late_reply, test_connection_killed_then_reconnect,
                       test_eval_and_noscript_reload, test_free_with_pending);
}
