/*
 * nf_redis without a Redis server: a closed port, and a scripted fake server (a libevent
 * listener on 127.0.0.1:0 whose replies the test writes by hand) for timeouts, late
 * replies, lost connections, free with commands in flight, and the EVALSHA/NOSCRIPT path
 * (which also checks our SHA-1 against the FIPS 180 test vectors).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_redis.h"
#include "nf_test.h"

/* ---- fake server ---- */

struct fake {
    struct event_base *base;
    struct evconnlistener *lis;
    struct bufferevent *bev; /* the latest accepted connection */
    struct evbuffer *rx;     /* everything received on it */
    int accepts;
    int port;
};

static void fake_read(struct bufferevent *bev, void *arg)
{
    struct fake *f = arg;
    evbuffer_add_buffer(f->rx, bufferevent_get_input(bev));
}

static void fake_event(struct bufferevent *bev, short what, void *arg)
{
    struct fake *f = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        bufferevent_free(bev);
        if (f->bev == bev)
            f->bev = NULL;
    }
}

static void fake_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                        int socklen, void *arg)
{
    struct fake *f = arg;
    if (f->bev)
        bufferevent_free(f->bev);
    f->bev = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(f->bev, fake_read, NULL, fake_event, f);
    bufferevent_enable(f->bev, EV_READ | EV_WRITE);
    evbuffer_drain(f->rx, evbuffer_get_length(f->rx));
    f->accepts++;
}

static void fake_start(struct fake *f, struct event_base *base)
{
    memset(f, 0, sizeof(*f));
    f->base = base;
    f->rx = evbuffer_new();
    f->lis = nf_test_listen(base, fake_accept, f, 0, &f->port);
}

static void fake_stop(struct fake *f)
{
    if (f->bev)
        bufferevent_free(f->bev);
    evconnlistener_free(f->lis);
    evbuffer_free(f->rx);
}

static void fake_send(struct fake *f, const char *resp)
{
    assert_non_null(f->bev);
    bufferevent_write(f->bev, resp, strlen(resp));
}

/* Returns the received bytes as a string, NUL bytes shown as '~' (caller frees). */
static char *fake_rx(struct fake *f)
{
    size_t n = evbuffer_get_length(f->rx);
    char *s = calloc(1, n + 1);
    evbuffer_copyout(f->rx, s, n);
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\0')
            s[i] = '~';
    return s;
}

struct rx_wait {
    struct fake *f;
    const char *needle;
    int count; /* occurrences wanted */
};

static int count_in(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static bool rx_has(void *arg)
{
    struct rx_wait *w = arg;
    char *s = fake_rx(w->f);
    bool ok = count_in(s, w->needle) >= w->count;
    free(s);
    return ok;
}

static void wait_rx(struct event_base *base, struct fake *f, const char *needle, int count)
{
    struct rx_wait w = {f, needle, count};
    assert_true(nf_test_run_until(base, rx_has, &w, 2000));
}

/* ---- tests ---- */

static void test_new_bad_args(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_redis *r = (struct nf_redis *)0x1;
    assert_int_equal(nf_redis_new(&r, base, NULL, 6379, 100), -1);
    assert_ptr_equal(r, (struct nf_redis *)0x1);
    assert_int_equal(nf_redis_new(&r, base, "127.0.0.1", 0, 100), -1);
    assert_int_equal(nf_redis_new(&r, base, "127.0.0.1", 6379, 0), -1);
    assert_int_equal(nf_redis_new(&r, NULL, "127.0.0.1", 6379, 100), -1);
    assert_ptr_equal(r, (struct nf_redis *)0x1);
    nf_redis_free(NULL);
    assert_false(nf_redis_ready(NULL));
    event_base_free(base);
}

static void test_closed_port_fails_fast(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_redis *r = NULL;
    assert_int_equal(nf_redis_new(&r, base, "127.0.0.1", nf_test_closed_port(), 200), 0);
    assert_non_null(r);
    nf_test_run_for(base, 350); /* a few reconnect attempts */
    assert_false(nf_redis_ready(r));

    struct nf_test_reply s = {0};
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_redis_cmd(r, nf_test_on_reply, &s, "GET %s", "k"), -1);
    assert_int_equal(s.calls, 1);
    assert_true(s.null);
    assert_true(nf_test_now_ms() - t0 < 50);

    struct nf_test_reply s2 = {0};
    const char *argv[] = {"GET", "k"};
    assert_int_equal(nf_redis_cmd_argv(r, nf_test_on_reply, &s2, 2, argv, NULL), -1);
    assert_int_equal(s2.calls, 1);
    assert_true(s2.null);

    struct nf_redis_script *sc = nf_redis_script_new(r, "return 1");
    assert_non_null(sc);
    struct nf_test_reply s3 = {0};
    assert_int_equal(nf_redis_eval(r, sc, nf_test_on_reply, &s3, 0, 0, NULL, NULL), -1);
    assert_int_equal(s3.calls, 1);

    /* cb may be NULL */
    assert_int_equal(nf_redis_cmd(r, NULL, NULL, "PING"), -1);

    nf_test_run_for(base, 100);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s2.calls, 1);
    assert_int_equal(s3.calls, 1);
    nf_redis_free(r);
    event_base_free(base);
}

static void test_free_while_connecting(void **state)
{
    struct event_base *base = event_base_new();
    struct fake f;
    fake_start(&f, base);
    struct nf_redis *r = NULL;
    assert_int_equal(nf_redis_new(&r, base, "127.0.0.1", f.port, 200), 0);
    assert_false(nf_redis_ready(r)); /* connect in progress */
    struct nf_test_reply s = {0};
    assert_int_equal(nf_redis_cmd(r, nf_test_on_reply, &s, "PING"), -1);
    assert_int_equal(s.calls, 1);
    nf_redis_free(r);
    nf_test_run_for(base, 200); /* no events of the freed client fire */
    fake_stop(&f);
    event_base_free(base);
}

struct env {
    struct event_base *base;
    struct fake f;
    struct nf_redis *r;
};

static int env_setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    e->base = event_base_new();
    fake_start(&e->f, e->base);
    assert_int_equal(nf_redis_new(&e->r, e->base, "127.0.0.1", e->f.port, 200), 0);
    assert_true(nf_test_run_until(e->base, nf_test_redis_ready, e->r, 2000));
    assert_int_equal(e->f.accepts, 1);
    *state = e;
    return 0;
}

static int env_teardown(void **state)
{
    struct env *e = *state;
    nf_redis_free(e->r);
    fake_stop(&e->f);
    event_base_free(e->base);
    free(e);
    return 0;
}

static void test_reply_and_error_reply(void **state)
{
    struct env *e = *state;
    struct nf_test_reply a = {0}, b = {0};
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &a, "GET %s", "k1"), 0);
    const char *argv[] = {"HGET", "h", "f"};
    assert_int_equal(nf_redis_cmd_argv(e->r, nf_test_on_reply, &b, 3, argv, NULL), 0);
    assert_int_equal(a.calls + b.calls, 0); /* never synchronously on success */
    wait_rx(e->base, &e->f, "HGET", 1);
    fake_send(&e->f, "$5\r\nhello\r\n-ERR wrong kind\r\n");
    assert_true(nf_test_run_until(e->base, nf_test_replied, &b, 1000));
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.type, REDIS_REPLY_STRING);
    assert_string_equal(a.str, "hello");
    assert_int_equal(b.calls, 1);
    assert_false(b.null);
    assert_int_equal(b.type, REDIS_REPLY_ERROR);
    assert_string_equal(b.str, "ERR wrong kind");
}

static void test_timeout_then_late_reply(void **state)
{
    struct env *e = *state;
    struct nf_test_reply a = {0}, b = {0};
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &a, "BLPOP %s 5", "q"), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &a, 2000));
    long long took = a.at_ms - t0;
    assert_true(a.null);
    assert_true(took >= 150 && took < 1000);

    /* the late answer to the BLPOP must be swallowed, the next command gets its own */
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &b, "PING"), 0);
    wait_rx(e->base, &e->f, "PING", 1);
    fake_send(&e->f, "*-1\r\n+PONG\r\n");
    assert_true(nf_test_run_until(e->base, nf_test_replied, &b, 1000));
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_string_equal(b.str, "PONG");
    assert_true(nf_redis_ready(e->r));
    nf_test_run_for(e->base, 300); /* no second timeout for either */
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
}

static void test_lost_connection_and_reconnect(void **state)
{
    struct env *e = *state;
    struct nf_test_reply a = {0}, b = {0}, c = {0};
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &a, "GET %s", "k"), 0);
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &b, "GET %s", "k2"), 0);
    wait_rx(e->base, &e->f, "k2", 1);

    long long t0 = nf_test_now_ms();
    bufferevent_free(e->f.bev); /* server side goes away */
    e->f.bev = NULL;
    assert_true(nf_test_run_until(e->base, nf_test_replied, &b, 1000));
    assert_true(nf_test_now_ms() - t0 < 150); /* well before the 200 ms command timeout */
    assert_true(a.null && b.null);
    assert_false(nf_redis_ready(e->r));

    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &c, "PING"), -1);
    assert_int_equal(c.calls, 1);
    assert_true(c.null);

    assert_true(nf_test_run_until(e->base, nf_test_redis_ready, e->r, 2000));
    assert_int_equal(e->f.accepts, 2);
    struct nf_test_reply d = {0};
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &d, "PING"), 0);
    wait_rx(e->base, &e->f, "PING", 1);
    fake_send(&e->f, "+PONG\r\n");
    assert_true(nf_test_run_until(e->base, nf_test_replied, &d, 1000));
    assert_string_equal(d.str, "PONG");
    nf_test_run_for(e->base, 250);
    assert_int_equal(a.calls + b.calls + c.calls + d.calls, 4);
}

static void test_backoff_grows(void **state)
{
    struct env *e = *state;
    /* stop accepting: reconnects fail; count attempts over ~1.6 s: 100+200+400+800 ms */
    evconnlistener_free(e->f.lis);
    e->f.lis = NULL;
    bufferevent_free(e->f.bev);
    e->f.bev = NULL;
    assert_true(nf_test_run_until(e->base, nf_test_redis_down, e->r, 1000));
    nf_test_run_for(e->base, 1600);
    assert_false(nf_redis_ready(e->r));
    /* listen again on the same port: the client comes back within the 2 s cap */
    e->f.lis = nf_test_listen(e->base, fake_accept, &e->f, e->f.port, NULL);
    long long t0 = nf_test_now_ms();
    assert_true(nf_test_run_until(e->base, nf_test_redis_ready, e->r, 3000));
    assert_true(nf_test_now_ms() - t0 <= 2300);
}

static void test_free_with_pending(void **state)
{
    struct env *e = *state;
    struct nf_test_reply a = {0}, b = {0};
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &a, "GET %s", "k"), 0);
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &b, "GET %s", "k2"), 0);
    wait_rx(e->base, &e->f, "k2", 1); /* written, in flight */
    struct nf_test_reply c = {0};
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &c, "GET %s", "k3"), 0); /* not written */
    nf_redis_free(e->r);
    e->r = NULL;
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(c.calls, 1);
    assert_true(a.null && b.null && c.null);
    fake_send(&e->f, "$1\r\nx\r\n");
    nf_test_run_for(e->base, 300); /* no timers of freed commands fire */
    assert_int_equal(a.calls + b.calls + c.calls, 3);
}

struct free_in_cb {
    struct nf_redis **r;
    struct nf_test_reply *first;
};

static void free_from_cb(redisReply *reply, void *arg)
{
    struct free_in_cb *x = arg;
    nf_test_on_reply(reply, x->first);
    nf_redis_free(*x->r);
    *x->r = NULL;
}

static void test_free_inside_callback(void **state)
{
    struct env *e = *state;
    struct nf_test_reply first = {0}, second = {0};
    struct free_in_cb x = {&e->r, &first};
    assert_int_equal(nf_redis_cmd(e->r, free_from_cb, &x, "GET %s", "a"), 0);
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &second, "GET %s", "b"), 0);
    wait_rx(e->base, &e->f, "$1\r\nb", 1);
    fake_send(&e->f, "$1\r\n1\r\n"); /* answers only the first */
    assert_true(nf_test_run_until(e->base, nf_test_replied, &first, 1000));
    assert_null(e->r);
    assert_int_equal(second.calls, 1);
    assert_true(second.null);
    fake_send(&e->f, "$1\r\n2\r\n");
    nf_test_run_for(e->base, 300);
    assert_int_equal(first.calls, 1);
    assert_int_equal(second.calls, 1);
}

static void test_free_inside_timeout_callback(void **state)
{
    struct env *e = *state;
    struct nf_test_reply first = {0}, second = {0};
    struct free_in_cb x = {&e->r, &first};
    assert_int_equal(nf_redis_cmd(e->r, free_from_cb, &x, "GET %s", "a"), 0);
    nf_test_run_for(e->base, 50);
    assert_int_equal(nf_redis_cmd(e->r, nf_test_on_reply, &second, "GET %s", "b"), 0);
    assert_true(nf_test_run_until(e->base, nf_test_replied, &first, 1000));
    assert_true(first.null);
    assert_null(e->r);
    assert_int_equal(second.calls, 1);
    nf_test_run_for(e->base, 300);
    assert_int_equal(first.calls + second.calls, 2);
}

/* Extracts the SHA sent in the n-th EVALSHA (0-based) from the raw RESP bytes. */
static void sent_sha(struct fake *f, int n, char out[41])
{
    char *s = fake_rx(f);
    char *p = s;
    for (int i = 0; i <= n; i++) {
        p = strstr(p, "EVALSHA\r\n");
        assert_non_null(p);
        p += 9;
    }
    /* "$40\r\n<sha>\r\n" */
    assert_memory_equal(p, "$40\r\n", 5);
    memcpy(out, p + 5, 40);
    out[40] = '\0';
    free(s);
}

static void check_sha(struct env *e, const char *lua, const char *want)
{
    struct nf_redis_script *sc = nf_redis_script_new(e->r, lua);
    struct nf_test_reply a = {0};
    evbuffer_drain(e->f.rx, evbuffer_get_length(e->f.rx));
    assert_int_equal(nf_redis_eval(e->r, sc, nf_test_on_reply, &a, 0, 0, NULL, NULL), 0);
    wait_rx(e->base, &e->f, "EVALSHA", 1);
    char sha[41];
    sent_sha(&e->f, 0, sha);
    assert_string_equal(sha, want);
    fake_send(&e->f, ":1\r\n");
    assert_true(nf_test_run_until(e->base, nf_test_replied, &a, 1000));
}

static void test_script_sha1_vectors(void **state)
{
    struct env *e = *state;
    check_sha(e, "", "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    check_sha(e, "abc", "a9993e364706816aba3e25717850c26c9cd0d89d");
    check_sha(e, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
              "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    char *million = malloc(1000001);
    memset(million, 'a', 1000000);
    million[1000000] = '\0';
    check_sha(e, million, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(million);
}

static void test_eval_noscript_reload(void **state)
{
    struct env *e = *state;
    struct nf_redis_script *sc = nf_redis_script_new(e->r, "return 7");
    struct nf_test_reply a = {0};
    const char *argv[] = {"key1", "arg\0x"};
    const size_t lens[] = {4, 5};
    assert_int_equal(nf_redis_eval(e->r, sc, nf_test_on_reply, &a, 1, 2, argv, lens), 0);
    wait_rx(e->base, &e->f, "EVALSHA", 1);
    char *rx = fake_rx(&e->f);
    assert_non_null(strstr(rx, "$1\r\n1\r\n$4\r\nkey1\r\n$5\r\narg~x\r\n"));
    free(rx);
    fake_send(&e->f, "-NOSCRIPT No matching script. Please use EVAL.\r\n");
    wait_rx(e->base, &e->f, "EVALSHA", 2);
    rx = fake_rx(&e->f);
    assert_non_null(strstr(rx, "SCRIPT\r\n$4\r\nLOAD\r\n$8\r\nreturn 7\r\n"));
    char *first = strstr(rx, "EVALSHA"), *second = strstr(first + 1, "EVALSHA");
    char *load = strstr(rx, "LOAD");
    assert_true(first < load && load < second); /* the load goes before the resend */
    free(rx);
    assert_int_equal(a.calls, 0);
    fake_send(&e->f, "$40\r\n0123456789012345678901234567890123456789\r\n:7\r\n");
    assert_true(nf_test_run_until(e->base, nf_test_replied, &a, 1000));
    assert_int_equal(a.type, REDIS_REPLY_INTEGER);
    assert_int_equal(a.integer, 7);

    /* a second NOSCRIPT after the reload goes to the caller, no endless retry */
    struct nf_test_reply b = {0};
    evbuffer_drain(e->f.rx, evbuffer_get_length(e->f.rx));
    assert_int_equal(nf_redis_eval(e->r, sc, nf_test_on_reply, &b, 0, 0, NULL, NULL), 0);
    wait_rx(e->base, &e->f, "EVALSHA", 1);
    fake_send(&e->f, "-NOSCRIPT gone\r\n");
    wait_rx(e->base, &e->f, "EVALSHA", 2);
    fake_send(&e->f, "-ERR Error compiling script\r\n-NOSCRIPT still gone\r\n");
    assert_true(nf_test_run_until(e->base, nf_test_replied, &b, 1000));
    assert_int_equal(b.type, REDIS_REPLY_ERROR);
    assert_string_equal(b.str, "NOSCRIPT still gone");
    nf_test_run_for(e->base, 300);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
}

static void test_eval_bad_args(void **state)
{
    struct env *e = *state;
    struct nf_redis_script *sc = nf_redis_script_new(e->r, "return 1");
    struct nf_test_reply a = {0}, b = {0};
    const char *argv[] = {"k"};
    assert_int_equal(nf_redis_eval(e->r, sc, nf_test_on_reply, &a, 2, 1, argv, NULL), -1);
    assert_int_equal(a.calls, 1);
    assert_int_equal(nf_redis_eval(e->r, NULL, nf_test_on_reply, &b, 0, 0, NULL, NULL), -1);
    assert_int_equal(b.calls, 1);
    assert_null(nf_redis_script_new(NULL, "return 1"));
}

static void test_timeout_during_noscript_retry(void **state)
{
    struct env *e = *state;
    struct nf_redis_script *sc = nf_redis_script_new(e->r, "return 8");
    struct nf_test_reply a = {0};
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_redis_eval(e->r, sc, nf_test_on_reply, &a, 0, 0, NULL, NULL), 0);
    wait_rx(e->base, &e->f, "EVALSHA", 1);
    fake_send(&e->f, "-NOSCRIPT x\r\n");
    assert_true(nf_test_run_until(e->base, nf_test_replied, &a, 1000));
    assert_true(a.null); /* the retry counts against the same timeout */
    assert_true(a.at_ms - t0 < 600);
    fake_send(&e->f, "$40\r\n0123456789012345678901234567890123456789\r\n:8\r\n");
    nf_test_run_for(e->base, 200);
    assert_int_equal(a.calls, 1);
    assert_true(nf_redis_ready(e->r));
}

int main(void)
{
    int rc;

    nf_log_init("test", NF_LOG_ERROR);
    rc = NF_TEST_RUN(NULL, NULL, test_new_bad_args, test_closed_port_fails_fast,
                     test_free_while_connecting);
    rc |= NF_TEST_RUN(
        env_setup, env_teardown, test_reply_and_error_reply, test_timeout_then_late_reply,
        test_lost_connection_and_reconnect, test_backoff_grows, test_free_with_pending,
        test_free_inside_callback, test_free_inside_timeout_callback, test_script_sha1_vectors,
        test_eval_noscript_reload, test_eval_bad_args, test_timeout_during_noscript_retry);
    return rc;
}
