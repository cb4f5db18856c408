/*
 * nf_pg against a real Postgres (NF_TEST_PG_DSN, a libpq conninfo; skipped when unset).
 * Each test works in its own schema nf_it_pg_<unique letters>, dropped at the end, so runs
 * can repeat against a shared test server. Lost connections are simulated with
 * pg_terminate_backend on our own backends only.
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
#include "nf_pg.h"
#include "nf_test.h"

struct env {
    struct event_base *base;
    const char *dsn;
    struct nf_pg *pg;
    char schema[64];
};

static struct nf_pg *open_pool(struct env *e, int nconns, int timeout_ms)
{
    struct nf_pg *pg = NULL;
    assert_int_equal(nf_pg_new(&pg, e->base, e->dsn, nconns, timeout_ms), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_ready, pg, 5000));
    return pg;
}

/* Runs one statement on pg and waits for its callback. */
static void q(struct env *e, struct nf_pg *pg, struct nf_test_pg *s, const char *sql, int n,
              const char *const *params)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(nf_pg_query(pg, sql, n, params, nf_test_on_pg, s), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, s, 5000));
    assert_int_equal(s->calls, 1);
}

/* Like q() but the statement must succeed. */
static void q_ok(struct env *e, struct nf_pg *pg, struct nf_test_pg *s, const char *sql)
{
    q(e, pg, s, sql, 0, NULL);
    if (!s->ok)
        fail_msg("%s: %s", sql, s->err);
}

static int setup(void **state)
{
    *state = NULL;
    const char *dsn = nf_test_env("NF_TEST_PG_DSN");
    if (dsn == NULL)
        return 0; /* each test skips itself: skip() in a setup counts as an error */
    struct env *e = calloc(1, sizeof(*e));
    e->dsn = dsn;
    e->base = event_base_new();
    nf_test_unique_name(e->schema, sizeof(e->schema), "nf_it_pg_");
    e->pg = open_pool(e, 2, 3000);
    struct nf_test_pg s;
    char sql[256];
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", e->schema);
    q_ok(e, e->pg, &s, sql);
    snprintf(sql, sizeof(sql), "CREATE TABLE %s.items (id text PRIMARY KEY, n int)", e->schema);
    q_ok(e, e->pg, &s, sql);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e == NULL)
        return 0;
    struct nf_pg *pg = open_pool(e, 1, 5000);
    struct nf_test_pg s;
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", e->schema);
    q_ok(e, pg, &s, sql);
    nf_pg_free(pg);
    nf_pg_free(e->pg);
    event_base_free(e->base);
    free(e);
    return 0;
}

static void count_items(struct env *e, const char *where, int want)
{
    struct nf_test_pg s;
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s.items %s", e->schema, where);
    q_ok(e, e->pg, &s, sql);
    assert_int_equal(atoi(s.v[0]), want);
}

static void test_select_params(void **state)
{
    struct env *e = nf_test_need(state);
    const char *params[] = {"41", "h\xc3\xa9llo 'quoted'", NULL};
    struct nf_test_pg s = {0};
    assert_int_equal(nf_pg_query(e->pg,
                                 "SELECT $1::int + 1 AS n, $2::text AS t, $3::text AS nul, "
                                 "$3::text IS NULL AS was_null",
                                 3, params, nf_test_on_pg, &s),
                     0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &s, 5000));
    assert_true(s.ok);
    assert_string_equal(s.pgcode, "");
    assert_int_equal(s.ntuples, 1);
    assert_string_equal(s.v[0], "42");
    assert_string_equal(s.v[1], "h\xc3\xa9llo 'quoted'");
    assert_true(s.isnull[2]);
    assert_string_equal(s.v[3], "t");
}

/* nf_pg_val on the live result inside the callback; checked after the loop returns. */
struct vals {
    int calls;
    int ntuples;
    const char *got[6];
    char copy[6][16];
};

static void val_cb(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct vals *v = arg;
    v->calls++;
    v->ntuples = PQntuples(res);
    v->got[0] = nf_pg_val(res, 0, "name");
    v->got[1] = nf_pg_val(res, 0, "nothing");
    v->got[2] = nf_pg_val(res, 1, "nothing");
    v->got[3] = nf_pg_val(res, 1, "name");
    v->got[4] = nf_pg_val(res, 2, "name");
    v->got[5] = nf_pg_val(res, 0, "nope");
    for (int i = 0; i < 6; i++)
        snprintf(v->copy[i], sizeof(v->copy[i]), "%s", v->got[i] ? v->got[i] : "(null)");
}

static bool vals_called(void *arg)
{
    return ((struct vals *)arg)->calls > 0;
}

static void test_val_by_name(void **state)
{
    struct env *e = nf_test_need(state);
    struct vals v = {0};
    assert_int_equal(nf_pg_query(e->pg,
                                 "SELECT * FROM (VALUES ('b', NULL::text), ('c', 'x')) "
                                 "AS v(name, nothing) ORDER BY name",
                                 0, NULL, val_cb, &v),
                     0);
    assert_true(nf_test_run_until(e->base, vals_called, &v, 5000));
    assert_int_equal(v.ntuples, 2);
    assert_string_equal(v.copy[0], "b");
    assert_string_equal(v.copy[1], "(null)"); /* SQL NULL */
    assert_string_equal(v.copy[2], "x");
    assert_string_equal(v.copy[3], "c");
    assert_string_equal(v.copy[4], "(null)"); /* no such row */
    assert_string_equal(v.copy[5], "(null)"); /* no such column */
}

static void test_errors_carry_sqlstate(void **state)
{
    struct env *e = nf_test_need(state);
    char sql[256];
    snprintf(sql, sizeof(sql), "INSERT INTO %s.items (id, n) VALUES ($1, $2)", e->schema);
    const char *p[] = {"dup", "1"};
    struct nf_test_pg s;
    q(e, e->pg, &s, sql, 2, p);
    assert_true(s.ok);
    q(e, e->pg, &s, sql, 2, p);
    assert_false(s.ok);
    assert_string_equal(s.pgcode, "23505");
    assert_non_null(strstr(s.err, "duplicate key"));

    q(e, e->pg, &s, "SELEC 1", 0, NULL);
    assert_false(s.ok);
    assert_string_equal(s.pgcode, "42601");

    const char *bad[] = {"not a number"};
    q(e, e->pg, &s, "SELECT $1::int", 1, bad);
    assert_string_equal(s.pgcode, "22P02");

    /* both connections still serve queries afterwards */
    struct nf_test_pg a = {0}, b = {0};
    assert_int_equal(nf_pg_query(e->pg, "SELECT 1", 0, NULL, nf_test_on_pg, &a), 0);
    assert_int_equal(nf_pg_query(e->pg, "SELECT 2", 0, NULL, nf_test_on_pg, &b), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &b, 5000));
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &a, 5000));
    assert_true(a.ok && b.ok);
}

static void test_tx_commit(void **state)
{
    struct env *e = nf_test_need(state);
    char ins[256], sel[256];
    snprintf(ins, sizeof(ins), "INSERT INTO %s.items (id, n) VALUES ($1, $2)", e->schema);
    snprintf(sel, sizeof(sel), "SELECT count(*), sum(n) FROM %s.items", e->schema);
    const char *p1[] = {"t1", "10"}, *p2[] = {"t2", NULL};
    struct nf_pg_stmt st[] = {{ins, 2, p1}, {ins, 2, p2}, {sel, 0, NULL}};
    struct nf_test_pg s = {0};
    assert_int_equal(nf_pg_tx(e->pg, st, 3, nf_test_on_pg, &s), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &s, 5000));
    assert_true(s.ok);
    assert_string_equal(s.v[0], "2"); /* the last statement's result */
    assert_string_equal(s.v[1], "10");
    count_items(e, "", 2);
}

static void test_tx_rollback(void **state)
{
    struct env *e = nf_test_need(state);
    char ins[256];
    snprintf(ins, sizeof(ins), "INSERT INTO %s.items (id, n) VALUES ($1, 1)", e->schema);
    const char *first[] = {"r1"}, *dup[] = {"r1"}, *third[] = {"r3"};
    struct nf_pg_stmt st[] = {{ins, 1, first}, {ins, 1, dup}, {ins, 1, third}};
    struct nf_test_pg s = {0};
    assert_int_equal(nf_pg_tx(e->pg, st, 3, nf_test_on_pg, &s), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &s, 5000));
    assert_false(s.ok);
    assert_string_equal(s.pgcode, "23505");
    count_items(e, "", 0); /* nothing of the first statement */

    /* no connection is left inside the aborted transaction (every statement would fail
     * with 25P02): run on both, several times */
    for (int round = 0; round < 3; round++) {
        struct nf_test_pg a = {0}, b = {0};
        assert_int_equal(nf_pg_query(e->pg, "SELECT 1", 0, NULL, nf_test_on_pg, &a), 0);
        assert_int_equal(nf_pg_query(e->pg, "SELECT 1", 0, NULL, nf_test_on_pg, &b), 0);
        assert_true(nf_test_run_until(e->base, nf_test_pg_called, &a, 5000));
        assert_true(nf_test_run_until(e->base, nf_test_pg_called, &b, 5000));
        assert_true(a.ok && b.ok);
    }

    /* a failure in the first statement, and a statement that does not even parse */
    struct nf_pg_stmt st2[] = {{"SELEC oops", 0, NULL}, {ins, 1, third}};
    memset(&s, 0, sizeof(s));
    assert_int_equal(nf_pg_tx(e->pg, st2, 2, nf_test_on_pg, &s), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &s, 5000));
    assert_false(s.ok);
    assert_string_equal(s.pgcode, "42601");
    count_items(e, "", 0);
}

/* A bare BEGIN through nf_pg_query must not leak its transaction to the next caller. */
static void test_bare_begin_not_leaked(void **state)
{
    struct env *e = nf_test_need(state);
    struct nf_pg *pg = open_pool(e, 1, 3000);
    struct nf_test_pg s;
    q_ok(e, pg, &s, "BEGIN");
    char ins[256];
    snprintf(ins, sizeof(ins), "INSERT INTO %s.items (id, n) VALUES ('leak', 1)", e->schema);
    assert_true(nf_test_run_until(e->base, nf_test_pg_ready, pg, 3000));
    q_ok(e, pg, &s, ins);
    nf_pg_free(pg);
    count_items(e, "WHERE id = 'leak'", 1); /* committed: it did not run inside the BEGIN */
}

static void test_tx_not_interleaved(void **state)
{
    struct env *e = nf_test_need(state);
    /* a tx and plain queries at once on a pool of 2: each tx statement sees the same
     * backend and the same transaction */
    const char *sql = "SELECT pg_backend_pid()::text || ':' || txid_current()::text";
    struct nf_pg_stmt st[] = {{sql, 0, NULL}, {"SELECT pg_sleep(0.05)", 0, NULL}, {sql, 0, NULL}};
    struct nf_pg_stmt st1[] = {{sql, 0, NULL}};
    struct nf_test_pg t = {0}, t1 = {0}, others[6];
    memset(others, 0, sizeof(others));
    assert_int_equal(nf_pg_tx(e->pg, st1, 1, nf_test_on_pg, &t1), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(nf_pg_query(e->pg, sql, 0, NULL, nf_test_on_pg, &others[i]), 0);
    assert_int_equal(nf_pg_tx(e->pg, st, 3, nf_test_on_pg, &t), 0);
    for (int i = 3; i < 6; i++)
        assert_int_equal(nf_pg_query(e->pg, sql, 0, NULL, nf_test_on_pg, &others[i]), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &t, 5000));
    for (int i = 0; i < 6; i++) {
        assert_true(nf_test_run_until(e->base, nf_test_pg_called, &others[i], 5000));
        assert_true(others[i].ok);
        /* no plain query ran inside the tx's transaction */
        assert_string_not_equal(others[i].v[0], t.v[0]);
    }
    assert_true(t.ok && t1.ok);
}

static void test_pool_runs_concurrently(void **state)
{
    struct env *e = nf_test_need(state);
    struct nf_test_pg a = {0}, b = {0}, c = {0};
    const char *sql = "SELECT pg_backend_pid(), pg_sleep(0.4)";
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_pg_query(e->pg, sql, 0, NULL, nf_test_on_pg, &a), 0);
    assert_int_equal(nf_pg_query(e->pg, sql, 0, NULL, nf_test_on_pg, &b), 0);
    assert_int_equal(nf_pg_query(e->pg, sql, 0, NULL, nf_test_on_pg, &c), 0); /* waits its turn */
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &b, 5000));
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &a, 5000));
    long long both = nf_test_now_ms() - t0;
    assert_true(a.ok && b.ok);
    assert_string_not_equal(a.v[0], b.v[0]); /* two backends */
    assert_true(both < 780);                 /* in parallel, not 800 ms */
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &c, 5000));
    assert_true(c.ok);
    assert_true(c.at_ms - t0 >= 750); /* queued behind them */
}

static void test_timeout_then_pool_recovers(void **state)
{
    struct env *e = nf_test_need(state);
    struct nf_pg *pg = open_pool(e, 1, 300);
    struct nf_test_pg s, pid_before, pid_after;
    q_ok(e, pg, &pid_before, "SELECT pg_backend_pid()");

    long long t0 = nf_test_now_ms();
    q(e, pg, &s, "SELECT pg_sleep(3)", 0, NULL);
    assert_false(s.ok);
    assert_non_null(strstr(s.err, "timed out"));
    assert_true(s.at_ms - t0 >= 250 && s.at_ms - t0 < 1000);

    /* the pool reconnects and works; the query after the timeout is not lost */
    t0 = nf_test_now_ms();
    q_ok(e, pg, &pid_after, "SELECT pg_backend_pid()");
    assert_true(nf_test_now_ms() - t0 < 1000);
    assert_string_not_equal(pid_before.v[0], pid_after.v[0]);

    /* a transaction that times out leaves nothing behind */
    char ins[256];
    snprintf(ins, sizeof(ins), "INSERT INTO %s.items (id, n) VALUES ('slow', 1)", e->schema);
    struct nf_pg_stmt st[] = {{ins, 0, NULL}, {"SELECT pg_sleep(3)", 0, NULL}};
    struct nf_test_pg t = {0};
    assert_int_equal(nf_pg_tx(pg, st, 2, nf_test_on_pg, &t), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &t, 3000));
    assert_false(t.ok);
    assert_non_null(strstr(t.err, "timed out"));
    count_items(e, "", 0);
    nf_test_run_for(e->base, 200);
    assert_int_equal(t.calls, 1);
    nf_pg_free(pg);
}

static void test_terminated_backend(void **state)
{
    struct env *e = nf_test_need(state);
    struct nf_pg *victim = open_pool(e, 1, 5000);
    struct nf_test_pg pid, kill, s;
    q_ok(e, victim, &pid, "SELECT pg_backend_pid()::text");
    const char *p[] = {pid.v[0]};

    /* an idle connection terminated: noticed, reconnected, next query works */
    q(e, e->pg, &kill, "SELECT pg_terminate_backend($1::int)", 1, p);
    assert_true(kill.ok);
    assert_string_equal(kill.v[0], "t");
    nf_test_run_for(e->base, 300);
    q_ok(e, victim, &s, "SELECT pg_backend_pid()::text");
    assert_string_not_equal(s.v[0], pid.v[0]);

    /* a running query whose backend dies fails at once (not at its 5 s timeout) */
    const char *p2[] = {s.v[0]};
    struct nf_test_pg sleeping = {0};
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_pg_query(victim, "SELECT pg_sleep(4)", 0, NULL, nf_test_on_pg, &sleeping),
                     0);
    nf_test_run_for(e->base, 100);
    q(e, e->pg, &kill, "SELECT pg_terminate_backend($1::int)", 1, p2);
    assert_true(nf_test_run_until(e->base, nf_test_pg_called, &sleeping, 3000));
    assert_false(sleeping.ok);
    assert_true(sleeping.at_ms - t0 < 2000);
    assert_true(strcmp(sleeping.pgcode, "57P01") == 0 || sleeping.pgcode[0] == '\0');

    /* and the pool comes back */
    assert_true(nf_test_run_until(e->base, nf_test_pg_ready, victim, 3000));
    q_ok(e, victim, &s, "SELECT 1");
    nf_test_run_for(e->base, 200);
    assert_int_equal(sleeping.calls, 1);
    nf_pg_free(victim);
}

/* The socket changes while connecting (the first host refuses): PQsocket is re-read. */
static void test_second_host_after_refusal(void **state)
{
    struct env *e = nf_test_need(state);
    PGconn *probe = PQconnectdb(e->dsn);
    assert_int_equal(PQstatus(probe), CONNECTION_OK);
    char dsn[1024];
    snprintf(dsn, sizeof(dsn), "%s host=%s,%s port=1,%s", e->dsn, PQhost(probe), PQhost(probe),
             PQport(probe));
    PQfinish(probe);
    struct nf_pg *pg = NULL;
    assert_int_equal(nf_pg_new(&pg, e->base, dsn, 2, 3000), 0);
    assert_true(nf_test_run_until(e->base, nf_test_pg_ready, pg, 3000));
    struct nf_test_pg s;
    q_ok(e, pg, &s, "SELECT 41 + 1");
    assert_string_equal(s.v[0], "42");
    nf_pg_free(pg);
}

static void test_free_with_running_and_queued(void **state)
{
    struct env *e = nf_test_need(state);
    struct nf_pg *pg = open_pool(e, 1, 5000);
    struct nf_test_pg a = {0}, b = {0};
    assert_int_equal(nf_pg_query(pg, "SELECT pg_sleep(2)", 0, NULL, nf_test_on_pg, &a), 0);
    assert_int_equal(nf_pg_query(pg, "SELECT 1", 0, NULL, nf_test_on_pg, &b), 0);
    nf_test_run_for(e->base, 100);
    long long t0 = nf_test_now_ms();
    nf_pg_free(pg);
    assert_true(nf_test_now_ms() - t0 < 500);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_false(a.ok || b.ok);
    nf_test_run_for(e->base, 100);
    assert_int_equal(a.calls + b.calls, 2);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(
        setup, teardown, test_select_params, test_val_by_name, test_errors_carry_sqlstate,
        test_tx_commit, test_tx_rollback, test_bare_begin_not_leaked, test_tx_not_interleaved,
        test_pool_runs_concurrently, test_timeout_then_pool_recovers, test_terminated_backend,
        test_second_host_after_refusal, test_free_with_running_and_queued);
}
