/*
 * nf_pg without a Postgres server: argument and conninfo checks, a closed port, a server
 * that accepts and never answers, one that hangs up at once, freeing with queued queries
 * (also from inside a callback), and nf_pg_val on results built with libpq's own API.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
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
#include "nf_pg.h"

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
}

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

struct seen {
    int calls;
    bool res_null;
    bool err_null;
    char err[256];
    char pgcode[16];
    long long at_ms;
};

static void on_done(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    s->at_ms = now_ms();
    s->res_null = res == NULL;
    s->err_null = err == NULL;
    snprintf(s->err, sizeof(s->err), "%s", err ? err : "");
    snprintf(s->pgcode, sizeof(s->pgcode), "%s", pgcode ? pgcode : "(null)");
}

static bool seen_called(void *arg)
{
    return ((struct seen *)arg)->calls > 0;
}

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

/* A listener that accepts and then, per mode, keeps the socket silent or closes it. */
struct fake {
    struct evconnlistener *lis;
    int port;
    int accepts;
    bool hang_up;
    int fds[64];
    int nfds;
};

static void fake_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                        int socklen, void *arg)
{
    struct fake *f = arg;
    f->accepts++;
    if (f->hang_up || f->nfds == 64)
        close(fd);
    else
        f->fds[f->nfds++] = fd;
}

static void fake_start(struct fake *f, struct event_base *base, bool hang_up)
{
    memset(f, 0, sizeof(*f));
    f->hang_up = hang_up;
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
    for (int i = 0; i < f->nfds; i++)
        close(f->fds[i]);
    evconnlistener_free(f->lis);
}

static void dsn(char *out, size_t len, int port)
{
    snprintf(out, len, "host=127.0.0.1 port=%d dbname=nf user=nf sslmode=disable", port);
}

static void test_bad_args_and_conninfo(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_pg *pg = (struct nf_pg *)0x1;
    assert_int_equal(nf_pg_new(&pg, base, "this is not a conninfo", 1, 100), -1);
    assert_int_equal(nf_pg_new(&pg, base, "host=x bogus_option=1", 1, 100), -1);
    assert_int_equal(nf_pg_new(&pg, base, "postgresql://[::1", 1, 100), -1);
    assert_int_equal(nf_pg_new(&pg, base, NULL, 1, 100), -1);
    assert_int_equal(nf_pg_new(&pg, base, "host=127.0.0.1", 0, 100), -1);
    assert_int_equal(nf_pg_new(&pg, base, "host=127.0.0.1", 1, 0), -1);
    assert_int_equal(nf_pg_new(&pg, NULL, "host=127.0.0.1", 1, 100), -1);
    assert_ptr_equal(pg, (struct nf_pg *)0x1);
    nf_pg_free(NULL);
    assert_false(nf_pg_ready(NULL));
    event_base_free(base);
}

static void test_query_bad_args(void **state)
{
    struct event_base *base = event_base_new();
    char d[128];
    dsn(d, sizeof(d), closed_port());
    struct nf_pg *pg = NULL;
    assert_int_equal(nf_pg_new(&pg, base, d, 1, 200), 0);
    struct seen s = {0};
    assert_int_equal(nf_pg_query(pg, NULL, 0, NULL, on_done, &s), -1);
    assert_int_equal(nf_pg_query(pg, "SELECT $1", 1, NULL, on_done, &s), -1);
    assert_int_equal(nf_pg_query(pg, "SELECT 1", -1, NULL, on_done, &s), -1);
    assert_int_equal(nf_pg_query(NULL, "SELECT 1", 0, NULL, on_done, &s), -1);
    struct nf_pg_stmt st[] = {{"SELECT 1", 0, NULL}, {NULL, 0, NULL}};
    assert_int_equal(nf_pg_tx(pg, st, 0, on_done, &s), -1);
    assert_int_equal(nf_pg_tx(pg, st, 2, on_done, &s), -1);
    assert_int_equal(nf_pg_tx(pg, NULL, 1, on_done, &s), -1);
    run_for(base, 50);
    assert_int_equal(s.calls, 0); /* -1 means the callback never fires */
    nf_pg_free(pg);
    event_base_free(base);
}

static void test_closed_port_fails_in_bounded_time(void **state)
{
    struct event_base *base = event_base_new();
    char d[128];
    dsn(d, sizeof(d), closed_port());
    struct nf_pg *pg = NULL;
    assert_int_equal(nf_pg_new(&pg, base, d, 2, 250), 0);
    assert_false(nf_pg_ready(pg));

    struct seen q = {0}, t = {0};
    const char *params[] = {"1", NULL};
    long long t0 = now_ms();
    assert_int_equal(nf_pg_query(pg, "SELECT $1::int, $2::text", 2, params, on_done, &q), 0);
    struct nf_pg_stmt st[] = {{"SELECT 1", 0, NULL}, {"SELECT 2", 0, NULL}};
    assert_int_equal(nf_pg_tx(pg, st, 2, on_done, &t), 0);
    assert_int_equal(q.calls + t.calls, 0); /* never synchronously */
    assert_true(run_until(base, seen_called, &t, 2000));
    assert_int_equal(q.calls, 1);
    assert_true(q.res_null);
    assert_false(q.err_null);
    assert_non_null(strstr(q.err, "timed out"));
    assert_string_equal(q.pgcode, "");
    assert_true(q.at_ms - t0 >= 200 && q.at_ms - t0 < 1000);
    assert_int_equal(t.calls, 1);
    assert_true(t.res_null);
    run_for(base, 400); /* reconnect attempts go on quietly, nothing fires twice */
    assert_false(nf_pg_ready(pg));
    assert_int_equal(q.calls + t.calls, 2);
    nf_pg_free(pg);
    event_base_free(base);
}

static void test_silent_server(void **state)
{
    struct event_base *base = event_base_new();
    struct fake f;
    fake_start(&f, base, false);
    char d[128];
    dsn(d, sizeof(d), f.port);
    struct nf_pg *pg = NULL;
    assert_int_equal(nf_pg_new(&pg, base, d, 1, 300), 0);
    struct seen q = {0};
    long long t0 = now_ms();
    assert_int_equal(nf_pg_query(pg, "SELECT 1", 0, NULL, on_done, &q), 0);
    assert_true(run_until(base, seen_called, &q, 2000));
    assert_true(q.res_null && !q.err_null);
    assert_true(q.at_ms - t0 >= 250 && q.at_ms - t0 < 1000);
    assert_false(nf_pg_ready(pg));
    assert_int_equal(f.accepts, 1);
    /* the hung connect is given up (2 s deadline) and tried again */
    run_for(base, 2600);
    assert_true(f.accepts >= 2);
    assert_int_equal(q.calls, 1);
    nf_pg_free(pg);
    fake_stop(&f);
    event_base_free(base);
}

static void test_server_hangs_up(void **state)
{
    struct event_base *base = event_base_new();
    struct fake f;
    fake_start(&f, base, true);
    char d[128];
    dsn(d, sizeof(d), f.port);
    struct nf_pg *pg = NULL;
    assert_int_equal(nf_pg_new(&pg, base, d, 1, 1500), 0);
    /* backoff: attempts at ~0, 100, 300, 700 ms: 3..5 of them in 900 ms */
    run_for(base, 900);
    assert_true(f.accepts >= 3 && f.accepts <= 5);
    assert_false(nf_pg_ready(pg));
    nf_pg_free(pg);
    fake_stop(&f);
    event_base_free(base);
}

static void test_free_fails_queued(void **state)
{
    struct event_base *base = event_base_new();
    char d[128];
    dsn(d, sizeof(d), closed_port());
    struct nf_pg *pg = NULL;
    assert_int_equal(nf_pg_new(&pg, base, d, 1, 5000), 0);
    struct seen a = {0}, b = {0};
    assert_int_equal(nf_pg_query(pg, "SELECT 1", 0, NULL, on_done, &a), 0);
    struct nf_pg_stmt st[] = {{"SELECT 1", 0, NULL}};
    assert_int_equal(nf_pg_tx(pg, st, 1, on_done, &b), 0);
    assert_int_equal(nf_pg_query(pg, "SELECT 2", 0, NULL, NULL, NULL), 0); /* cb NULL */
    run_for(base, 50);
    nf_pg_free(pg);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_true(a.res_null && !a.err_null);
    assert_non_null(strstr(a.err, "closed"));
    run_for(base, 100);
    assert_int_equal(a.calls + b.calls, 2);
    event_base_free(base);
}

struct reentry {
    struct nf_pg **pg;
    struct seen *mine;
    struct seen *late; /* a query issued from the callback after the free */
};

static void free_from_cb(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct reentry *x = arg;
    on_done(res, err, pgcode, x->mine);
    nf_pg_free(*x->pg);
    nf_pg_free(*x->pg); /* twice: harmless while closing */
    assert_int_equal(nf_pg_query(*x->pg, "SELECT 1", 0, NULL, on_done, x->late), 0);
    *x->pg = NULL;
}

static void test_free_inside_callback(void **state)
{
    struct event_base *base = event_base_new();
    char d[128];
    dsn(d, sizeof(d), closed_port());
    struct nf_pg *pg = NULL;
    assert_int_equal(nf_pg_new(&pg, base, d, 1, 200), 0);
    struct seen mine = {0}, late = {0}, other = {0};
    struct reentry x = {&pg, &mine, &late};
    assert_int_equal(nf_pg_query(pg, "SELECT 1", 0, NULL, free_from_cb, &x), 0);
    run_for(base, 100);
    assert_int_equal(nf_pg_query(pg, "SELECT 2", 0, NULL, on_done, &other), 0);
    assert_true(run_until(base, seen_called, &mine, 2000));
    assert_null(pg);
    assert_int_equal(late.calls, 1); /* failed at once: the pool is closing */
    assert_int_equal(other.calls, 1);
    assert_true(other.res_null);
    run_for(base, 300);
    assert_int_equal(mine.calls + late.calls + other.calls, 3);
    event_base_free(base);
}

static void test_val(void **state)
{
    assert_null(nf_pg_val(NULL, 0, "a"));
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    assert_non_null(res);
    PGresAttDesc attrs[2] = {{.name = "id", .format = 0}, {.name = "note", .format = 0}};
    assert_true(PQsetResultAttrs(res, 2, attrs));
    assert_true(PQsetvalue(res, 0, 0, "7", 1));
    assert_true(PQsetvalue(res, 0, 1, NULL, -1)); /* SQL NULL */
    assert_true(PQsetvalue(res, 1, 0, "8", 1));
    assert_true(PQsetvalue(res, 1, 1, "", 0));
    assert_string_equal(nf_pg_val(res, 0, "id"), "7");
    assert_null(nf_pg_val(res, 0, "note"));
    assert_string_equal(nf_pg_val(res, 1, "id"), "8");
    assert_string_equal(nf_pg_val(res, 1, "note"), "");
    assert_null(nf_pg_val(res, 2, "id"));
    assert_null(nf_pg_val(res, -1, "id"));
    assert_null(nf_pg_val(res, 0, "missing"));
    assert_null(nf_pg_val(res, 0, NULL));
    PQclear(res);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args_and_conninfo),
        cmocka_unit_test(test_query_bad_args),
        cmocka_unit_test(test_closed_port_fails_in_bounded_time),
        cmocka_unit_test(test_silent_server),
        cmocka_unit_test(test_server_hangs_up),
        cmocka_unit_test(test_free_fails_queued),
        cmocka_unit_test(test_free_inside_callback),
        cmocka_unit_test(test_val),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
