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

#include <event2/event.h>
#include <event2/listener.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nf_log.h"
#include "nf_pg.h"
#include "nf_test.h"

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
    f->lis = nf_test_listen(base, fake_accept, f, 0, &f->port);
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

/* A pool of conns connections to 127.0.0.1:port with a timeout of timeout_ms. */
static struct nf_pg *pool_at(struct event_base *base, int port, int conns, int timeout_ms)
{
    struct nf_pg *pg = NULL;
    char d[128];

    dsn(d, sizeof(d), port);
    assert_int_equal(nf_pg_new(&pg, base, d, conns, timeout_ms), 0);
    return pg;
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
    struct nf_pg *pg = pool_at(base, nf_test_closed_port(), 1, 200);
    struct nf_test_pg s = {0};
    assert_int_equal(nf_pg_query(pg, NULL, 0, NULL, nf_test_on_pg, &s), -1);
    assert_int_equal(nf_pg_query(pg, "SELECT $1", 1, NULL, nf_test_on_pg, &s), -1);
    assert_int_equal(nf_pg_query(pg, "SELECT 1", -1, NULL, nf_test_on_pg, &s), -1);
    assert_int_equal(nf_pg_query(NULL, "SELECT 1", 0, NULL, nf_test_on_pg, &s), -1);
    struct nf_pg_stmt st[] = {{"SELECT 1", 0, NULL}, {NULL, 0, NULL}};
    assert_int_equal(nf_pg_tx(pg, st, 0, nf_test_on_pg, &s), -1);
    assert_int_equal(nf_pg_tx(pg, st, 2, nf_test_on_pg, &s), -1);
    assert_int_equal(nf_pg_tx(pg, NULL, 1, nf_test_on_pg, &s), -1);
    nf_test_run_for(base, 50);
    assert_int_equal(s.calls, 0); /* -1 means the callback never fires */
    nf_pg_free(pg);
    event_base_free(base);
}

static void test_closed_port_fails_in_bounded_time(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_pg *pg = pool_at(base, nf_test_closed_port(), 2, 250);
    assert_false(nf_pg_ready(pg));

    struct nf_test_pg q = {0}, t = {0};
    const char *params[] = {"1", NULL};
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_pg_query(pg, "SELECT $1::int, $2::text", 2, params, nf_test_on_pg, &q), 0);
    struct nf_pg_stmt st[] = {{"SELECT 1", 0, NULL}, {"SELECT 2", 0, NULL}};
    assert_int_equal(nf_pg_tx(pg, st, 2, nf_test_on_pg, &t), 0);
    assert_int_equal(q.calls + t.calls, 0); /* never synchronously */
    assert_true(nf_test_run_until(base, nf_test_pg_called, &t, 2000));
    assert_int_equal(q.calls, 1);
    assert_true(q.res_null);
    assert_false(q.err_null);
    assert_non_null(strstr(q.err, "timed out"));
    assert_string_equal(q.pgcode, "");
    assert_true(q.at_ms - t0 >= 200 && q.at_ms - t0 < 1000);
    assert_int_equal(t.calls, 1);
    assert_true(t.res_null);
    nf_test_run_for(base, 400); /* reconnect attempts go on quietly, nothing fires twice */
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
    struct nf_pg *pg = pool_at(base, f.port, 1, 300);
    struct nf_test_pg q = {0};
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_pg_query(pg, "SELECT 1", 0, NULL, nf_test_on_pg, &q), 0);
    assert_true(nf_test_run_until(base, nf_test_pg_called, &q, 2000));
    assert_true(q.res_null && !q.err_null);
    assert_true(q.at_ms - t0 >= 250 && q.at_ms - t0 < 1000);
    assert_false(nf_pg_ready(pg));
    assert_int_equal(f.accepts, 1);
    /* the hung connect is given up (2 s deadline) and tried again */
    nf_test_run_for(base, 2600);
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
    struct nf_pg *pg = pool_at(base, f.port, 1, 1500);
    /* backoff: attempts at ~0, 100, 300, 700 ms: 3..5 of them in 900 ms */
    nf_test_run_for(base, 900);
    assert_true(f.accepts >= 3 && f.accepts <= 5);
    assert_false(nf_pg_ready(pg));
    nf_pg_free(pg);
    fake_stop(&f);
    event_base_free(base);
}

static void test_free_fails_queued(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_pg *pg = pool_at(base, nf_test_closed_port(), 1, 5000);
    struct nf_test_pg a = {0}, b = {0};
    assert_int_equal(nf_pg_query(pg, "SELECT 1", 0, NULL, nf_test_on_pg, &a), 0);
    struct nf_pg_stmt st[] = {{"SELECT 1", 0, NULL}};
    assert_int_equal(nf_pg_tx(pg, st, 1, nf_test_on_pg, &b), 0);
    assert_int_equal(nf_pg_query(pg, "SELECT 2", 0, NULL, NULL, NULL), 0); /* cb NULL */
    nf_test_run_for(base, 50);
    nf_pg_free(pg);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_true(a.res_null && !a.err_null);
    assert_non_null(strstr(a.err, "closed"));
    nf_test_run_for(base, 100);
    assert_int_equal(a.calls + b.calls, 2);
    event_base_free(base);
}

struct reentry {
    struct nf_pg **pg;
    struct nf_test_pg *mine;
    struct nf_test_pg *late; /* a query issued from the callback after the free */
};

static void free_from_cb(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct reentry *x = arg;
    nf_test_on_pg(res, err, pgcode, x->mine);
    nf_pg_free(*x->pg);
    nf_pg_free(*x->pg); /* twice: harmless while closing */
    assert_int_equal(nf_pg_query(*x->pg, "SELECT 1", 0, NULL, nf_test_on_pg, x->late), 0);
    *x->pg = NULL;
}

static void test_free_inside_callback(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_pg *pg = pool_at(base, nf_test_closed_port(), 1, 200);
    struct nf_test_pg mine = {0}, late = {0}, other = {0};
    struct reentry x = {&pg, &mine, &late};
    assert_int_equal(nf_pg_query(pg, "SELECT 1", 0, NULL, free_from_cb, &x), 0);
    nf_test_run_for(base, 100);
    assert_int_equal(nf_pg_query(pg, "SELECT 2", 0, NULL, nf_test_on_pg, &other), 0);
    assert_true(nf_test_run_until(base, nf_test_pg_called, &mine, 2000));
    assert_null(pg);
    assert_int_equal(late.calls, 1); /* failed at once: the pool is closing */
    assert_int_equal(other.calls, 1);
    assert_true(other.res_null);
    nf_test_run_for(base, 300);
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
    return NF_TEST_RUN(NULL, NULL, test_bad_args_and_conninfo, test_query_bad_args,
                       test_closed_port_fails_in_bounded_time, test_silent_server,
                       test_server_hangs_up, test_free_fails_queued, test_free_inside_callback,
                       test_val);
}
