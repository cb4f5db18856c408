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

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nf_log.h"
#include "nf_redis.h"

/* ---- loop helpers ---- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Runs the loop until pred(arg) holds or max_ms passed; returns pred's final value. */
static bool run_until(struct event_base *base, bool (*pred)(void *), void *arg, int max_ms)
{
    struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 5000};
    event_add(t, &tv);
    long long end = now_ms() + max_ms;
    while (!(pred && pred(arg)) && now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return pred ? pred(arg) : false;
}

static void run_for(struct event_base *base, int ms)
{
    run_until(base, NULL, NULL, ms);
}

/* ---- replies seen by callbacks ---- */

struct seen {
    int calls;
    bool null;
    int type;
    long long integer;
    char str[128];
    long long at_ms;
};

static void on_reply(redisReply *reply, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    s->at_ms = now_ms();
    s->null = reply == NULL;
    if (reply) {
        s->type = reply->type;
        s->integer = reply->integer;
        if (reply->str)
            snprintf(s->str, sizeof(s->str), "%.*s", (int)reply->len, reply->str);
    }
}

static bool seen_called(void *arg)
{
    return ((struct seen *)arg)->calls > 0;
}

static bool redis_ready(void *arg)
{
    return nf_redis_ready(arg);
}

static bool redis_not_ready(void *arg)
{
    return !nf_redis_ready(arg);
}

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
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    f->lis =
        evconnlistener_new_bind(base, fake_accept, f, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(f->lis);
    struct sockaddr_in got;
    socklen_t len = sizeof(got);
    getsockname(evconnlistener_get_fd(f->lis), (struct sockaddr *)&got, &len);
    f->port = ntohs(got.sin_port);
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
    assert_true(run_until(base, rx_has, &w, 2000));
}

/* A port nothing listens on: bind to port 0, read the port, close. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    close(fd);
    return ntohs(sin.sin_port);
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
    assert_int_equal(nf_redis_new(&r, base, "127.0.0.1", closed_port(), 200), 0);
    assert_non_null(r);
    run_for(base, 350); /* a few reconnect attempts */
    assert_false(nf_redis_ready(r));

    struct seen s = {0};
    long long t0 = now_ms();
    assert_int_equal(nf_redis_cmd(r, on_reply, &s, "GET %s", "k"), -1);
    assert_int_equal(s.calls, 1);
    assert_true(s.null);
    assert_true(now_ms() - t0 < 50);

    struct seen s2 = {0};
    const char *argv[] = {"GET", "k"};
    assert_int_equal(nf_redis_cmd_argv(r, on_reply, &s2, 2, argv, NULL), -1);
    assert_int_equal(s2.calls, 1);
    assert_true(s2.null);

    struct nf_redis_script *sc = nf_redis_script_new(r, "return 1");
    assert_non_null(sc);
    struct seen s3 = {0};
    assert_int_equal(nf_redis_eval(r, sc, on_reply, &s3, 0, 0, NULL, NULL), -1);
    assert_int_equal(s3.calls, 1);

    /* cb may be NULL */
    assert_int_equal(nf_redis_cmd(r, NULL, NULL, "PING"), -1);

    run_for(base, 100);
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
    struct seen s = {0};
    assert_int_equal(nf_redis_cmd(r, on_reply, &s, "PING"), -1);
    assert_int_equal(s.calls, 1);
    nf_redis_free(r);
    run_for(base, 200); /* no events of the freed client fire */
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
    assert_true(run_until(e->base, redis_ready, e->r, 2000));
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
    struct seen a = {0}, b = {0};
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &a, "GET %s", "k1"), 0);
    const char *argv[] = {"HGET", "h", "f"};
    assert_int_equal(nf_redis_cmd_argv(e->r, on_reply, &b, 3, argv, NULL), 0);
    assert_int_equal(a.calls + b.calls, 0); /* never synchronously on success */
    wait_rx(e->base, &e->f, "HGET", 1);
    fake_send(&e->f, "$5\r\nhello\r\n-ERR wrong kind\r\n");
    assert_true(run_until(e->base, seen_called, &b, 1000));
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
    struct seen a = {0}, b = {0};
    long long t0 = now_ms();
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &a, "BLPOP %s 5", "q"), 0);
    assert_true(run_until(e->base, seen_called, &a, 2000));
    long long took = a.at_ms - t0;
    assert_true(a.null);
    assert_true(took >= 150 && took < 1000);

    /* the late answer to the BLPOP must be swallowed, the next command gets its own */
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &b, "PING"), 0);
    wait_rx(e->base, &e->f, "PING", 1);
    fake_send(&e->f, "*-1\r\n+PONG\r\n");
    assert_true(run_until(e->base, seen_called, &b, 1000));
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_string_equal(b.str, "PONG");
    assert_true(nf_redis_ready(e->r));
    run_for(e->base, 300); /* no second timeout for either */
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
}

static void test_lost_connection_and_reconnect(void **state)
{
    struct env *e = *state;
    struct seen a = {0}, b = {0}, c = {0};
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &a, "GET %s", "k"), 0);
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &b, "GET %s", "k2"), 0);
    wait_rx(e->base, &e->f, "k2", 1);

    long long t0 = now_ms();
    bufferevent_free(e->f.bev); /* server side goes away */
    e->f.bev = NULL;
    assert_true(run_until(e->base, seen_called, &b, 1000));
    assert_true(now_ms() - t0 < 150); /* well before the 200 ms command timeout */
    assert_true(a.null && b.null);
    assert_false(nf_redis_ready(e->r));

    assert_int_equal(nf_redis_cmd(e->r, on_reply, &c, "PING"), -1);
    assert_int_equal(c.calls, 1);
    assert_true(c.null);

    assert_true(run_until(e->base, redis_ready, e->r, 2000));
    assert_int_equal(e->f.accepts, 2);
    struct seen d = {0};
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &d, "PING"), 0);
    wait_rx(e->base, &e->f, "PING", 1);
    fake_send(&e->f, "+PONG\r\n");
    assert_true(run_until(e->base, seen_called, &d, 1000));
    assert_string_equal(d.str, "PONG");
    run_for(e->base, 250);
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
    assert_true(run_until(e->base, redis_not_ready, e->r, 1000));
    run_for(e->base, 1600);
    assert_false(nf_redis_ready(e->r));
    /* listen again on the same port: the client comes back within the 2 s cap */
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                              .sin_port = htons((uint16_t)e->f.port)};
    e->f.lis = evconnlistener_new_bind(e->base, fake_accept, &e->f,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                       (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(e->f.lis);
    long long t0 = now_ms();
    assert_true(run_until(e->base, redis_ready, e->r, 3000));
    assert_true(now_ms() - t0 <= 2300);
}

static void test_free_with_pending(void **state)
{
    struct env *e = *state;
    struct seen a = {0}, b = {0};
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &a, "GET %s", "k"), 0);
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &b, "GET %s", "k2"), 0);
    wait_rx(e->base, &e->f, "k2", 1); /* written, in flight */
    struct seen c = {0};
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &c, "GET %s", "k3"), 0); /* not written */
    nf_redis_free(e->r);
    e->r = NULL;
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(c.calls, 1);
    assert_true(a.null && b.null && c.null);
    fake_send(&e->f, "$1\r\nx\r\n");
    run_for(e->base, 300); /* no timers of freed commands fire */
    assert_int_equal(a.calls + b.calls + c.calls, 3);
}

struct free_in_cb {
    struct nf_redis **r;
    struct seen *first;
};

static void free_from_cb(redisReply *reply, void *arg)
{
    struct free_in_cb *x = arg;
    on_reply(reply, x->first);
    nf_redis_free(*x->r);
    *x->r = NULL;
}

static void test_free_inside_callback(void **state)
{
    struct env *e = *state;
    struct seen first = {0}, second = {0};
    struct free_in_cb x = {&e->r, &first};
    assert_int_equal(nf_redis_cmd(e->r, free_from_cb, &x, "GET %s", "a"), 0);
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &second, "GET %s", "b"), 0);
    wait_rx(e->base, &e->f, "$1\r\nb", 1);
    fake_send(&e->f, "$1\r\n1\r\n"); /* answers only the first */
    assert_true(run_until(e->base, seen_called, &first, 1000));
    assert_null(e->r);
    assert_int_equal(second.calls, 1);
    assert_true(second.null);
    fake_send(&e->f, "$1\r\n2\r\n");
    run_for(e->base, 300);
    assert_int_equal(first.calls, 1);
    assert_int_equal(second.calls, 1);
}

static void test_free_inside_timeout_callback(void **state)
{
    struct env *e = *state;
    struct seen first = {0}, second = {0};
    struct free_in_cb x = {&e->r, &first};
    assert_int_equal(nf_redis_cmd(e->r, free_from_cb, &x, "GET %s", "a"), 0);
    run_for(e->base, 50);
    assert_int_equal(nf_redis_cmd(e->r, on_reply, &second, "GET %s", "b"), 0);
    assert_true(run_until(e->base, seen_called, &first, 1000));
    assert_true(first.null);
    assert_null(e->r);
    assert_int_equal(second.calls, 1);
    run_for(e->base, 300);
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
    struct seen a = {0};
    evbuffer_drain(e->f.rx, evbuffer_get_length(e->f.rx));
    assert_int_equal(nf_redis_eval(e->r, sc, on_reply, &a, 0, 0, NULL, NULL), 0);
    wait_rx(e->base, &e->f, "EVALSHA", 1);
    char sha[41];
    sent_sha(&e->f, 0, sha);
    assert_string_equal(sha, want);
    fake_send(&e->f, ":1\r\n");
    assert_true(run_until(e->base, seen_called, &a, 1000));
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
    struct seen a = {0};
    const char *argv[] = {"key1", "arg\0x"};
    const size_t lens[] = {4, 5};
    assert_int_equal(nf_redis_eval(e->r, sc, on_reply, &a, 1, 2, argv, lens), 0);
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
    assert_true(run_until(e->base, seen_called, &a, 1000));
    assert_int_equal(a.type, REDIS_REPLY_INTEGER);
    assert_int_equal(a.integer, 7);

    /* a second NOSCRIPT after the reload goes to the caller, no endless retry */
    struct seen b = {0};
    evbuffer_drain(e->f.rx, evbuffer_get_length(e->f.rx));
    assert_int_equal(nf_redis_eval(e->r, sc, on_reply, &b, 0, 0, NULL, NULL), 0);
    wait_rx(e->base, &e->f, "EVALSHA", 1);
    fake_send(&e->f, "-NOSCRIPT gone\r\n");
    wait_rx(e->base, &e->f, "EVALSHA", 2);
    fake_send(&e->f, "-ERR Error compiling script\r\n-NOSCRIPT still gone\r\n");
    assert_true(run_until(e->base, seen_called, &b, 1000));
    assert_int_equal(b.type, REDIS_REPLY_ERROR);
    assert_string_equal(b.str, "NOSCRIPT still gone");
    run_for(e->base, 300);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
}

static void test_eval_bad_args(void **state)
{
    struct env *e = *state;
    struct nf_redis_script *sc = nf_redis_script_new(e->r, "return 1");
    struct seen a = {0}, b = {0};
    const char *argv[] = {"k"};
    assert_int_equal(nf_redis_eval(e->r, sc, on_reply, &a, 2, 1, argv, NULL), -1);
    assert_int_equal(a.calls, 1);
    assert_int_equal(nf_redis_eval(e->r, NULL, on_reply, &b, 0, 0, NULL, NULL), -1);
    assert_int_equal(b.calls, 1);
    assert_null(nf_redis_script_new(NULL, "return 1"));
}

static void test_timeout_during_noscript_retry(void **state)
{
    struct env *e = *state;
    struct nf_redis_script *sc = nf_redis_script_new(e->r, "return 8");
    struct seen a = {0};
    long long t0 = now_ms();
    assert_int_equal(nf_redis_eval(e->r, sc, on_reply, &a, 0, 0, NULL, NULL), 0);
    wait_rx(e->base, &e->f, "EVALSHA", 1);
    fake_send(&e->f, "-NOSCRIPT x\r\n");
    assert_true(run_until(e->base, seen_called, &a, 1000));
    assert_true(a.null); /* the retry counts against the same timeout */
    assert_true(a.at_ms - t0 < 600);
    fake_send(&e->f, "$40\r\n0123456789012345678901234567890123456789\r\n:8\r\n");
    run_for(e->base, 200);
    assert_int_equal(a.calls, 1);
    assert_true(nf_redis_ready(e->r));
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_bad_args),
        cmocka_unit_test(test_closed_port_fails_fast),
        cmocka_unit_test(test_free_while_connecting),
        cmocka_unit_test_setup_teardown(test_reply_and_error_reply, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_timeout_then_late_reply, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_lost_connection_and_reconnect, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(test_backoff_grows, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_callback, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_timeout_callback, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_script_sha1_vectors, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_eval_noscript_reload, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_eval_bad_args, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_timeout_during_noscript_retry, env_setup,
                                        env_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
