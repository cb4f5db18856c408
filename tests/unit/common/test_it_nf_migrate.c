/*
 * nf_migrate against a real Postgres (NF_TEST_PG_DSN; skipped when unset). Each test
 * uses its own schema (letters only, per run) and a temporary migrations directory, and
 * drops both at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nf_log.h"
#include "nf_migrate.h"
#include "nf_test.h"

struct env {
    const char *dsn;
    char schema[64];
    char dir[128];
    PGconn *conn; /* for checks */
};

static int setup(void **state)
{
    *state = NULL;
    const char *dsn = nf_test_env("NF_TEST_PG_DSN");
    if (dsn == NULL)
        return 0; /* each test skips itself: skip() in a setup counts as an error */
    struct env *e = calloc(1, sizeof(*e));
    e->dsn = dsn;
    nf_test_unique_name(e->schema, sizeof(e->schema), "nf_it_mig_"); /* [a-z_]+ */
    e->conn = PQconnectdb(dsn);
    assert_int_equal(PQstatus(e->conn), CONNECTION_OK);
    nf_test_tmpdir(e->dir, sizeof(e->dir), "nf_it_mig_");
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e == NULL)
        return 0;
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", e->schema);
    PQclear(PQexec(e->conn, "SET client_min_messages = warning"));
    nf_test_pg_exec(e->conn, sql, 0, NULL);
    PQfinish(e->conn);
    int rc = nf_test_rmtree(e->dir);
    free(e);
    return rc;
}

/* Writes dir/name with the text, "%S" replaced by the schema name. */
static void put(struct env *e, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", e->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (const char *p = text; *p; p++) {
        if (p[0] == '%' && p[1] == 'S') {
            fputs(e->schema, f);
            p++;
        } else {
            fputc(*p, f);
        }
    }
    fclose(f);
}

/* The first column of a one-row query, as text ("" for no row or NULL). */
static void one(struct env *e, const char *fmt, char *out, size_t len)
{
    char sql[512];
    snprintf(sql, sizeof(sql), fmt, e->schema);
    char *v = nf_test_pg_one(e->conn, sql, 0, NULL);
    snprintf(out, len, "%s", v ? v : "");
    free(v);
}

static int run(struct env *e, char *err, size_t errlen)
{
    return nf_migrate_run(e->dsn, e->schema, e->dir, err, errlen);
}

static void test_applies_in_order_once(void **state)
{
    struct env *e = nf_test_need(state);
    /* written out of order; each depends on the one before */
    put(e, "0010_c.sql",
        "INSERT INTO %S.log (name) VALUES ('0010');\n"
        "INSERT INTO %S.t2 (id, t1_id) VALUES (1, 1);");
    put(e, "0001_a.sql",
        "CREATE TABLE %S.log (seq serial PRIMARY KEY, name text);\n"
        "CREATE TABLE %S.t1 (id int PRIMARY KEY);\n"
        "INSERT INTO %S.log (name) VALUES ('0001');\n"
        "INSERT INTO %S.t1 VALUES (1);");
    put(e, "0002_b.sql",
        "CREATE TABLE %S.t2 (id int PRIMARY KEY, t1_id int REFERENCES %S.t1);\n"
        "INSERT INTO %S.log (name) VALUES ('0002');");
    put(e, "README.md", "not a migration");
    put(e, "0005_skip.sql.bak", "this is not sql");
    put(e, "0003_empty.sql", "");

    char err[512] = "x";
    assert_int_equal(run(e, err, sizeof(err)), 4);
    assert_string_equal(err, "");
    char got[256];
    one(e, "SELECT string_agg(name, ',' ORDER BY seq) FROM %s.log", got, sizeof(got));
    assert_string_equal(got, "0001,0002,0010");
    one(e, "SELECT string_agg(version, ',' ORDER BY version) FROM %s.schema_migrations", got,
        sizeof(got));
    assert_string_equal(got, "0001_a.sql,0002_b.sql,0003_empty.sql,0010_c.sql");
    one(e, "SELECT count(*) FROM %s.schema_migrations WHERE applied_at <= now()", got, sizeof(got));
    assert_string_equal(got, "4");

    /* idempotent: nothing again */
    assert_int_equal(run(e, err, sizeof(err)), 0);
    one(e, "SELECT count(*) FROM %s.log", got, sizeof(got));
    assert_string_equal(got, "3");

    /* a new file is picked up alone */
    put(e, "0011_d.sql", "INSERT INTO %S.log (name) VALUES ('0011');");
    assert_int_equal(run(e, err, sizeof(err)), 1);
    one(e, "SELECT string_agg(name, ',' ORDER BY seq) FROM %s.log", got, sizeof(got));
    assert_string_equal(got, "0001,0002,0010,0011");
}

static void test_failure_stops_and_reports(void **state)
{
    struct env *e = nf_test_need(state);
    put(e, "0001_ok.sql", "CREATE TABLE %S.a (id int);");
    /* the first statement works, the second fails: the whole file must be undone */
    put(e, "0002_bad.sql", "CREATE TABLE %S.b (id int);\nINSERT INTO %S.nope VALUES (1);");
    put(e, "0003_later.sql", "CREATE TABLE %S.c (id int);");

    char err[512] = "";
    assert_int_equal(run(e, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "0002_bad.sql"));
    assert_non_null(strstr(err, "does not exist")); /* Postgres' message */
    char got[256];
    one(e, "SELECT string_agg(version, ',') FROM %s.schema_migrations", got, sizeof(got));
    assert_string_equal(got, "0001_ok.sql");
    one(e,
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM "
        "information_schema.tables WHERE table_schema = '%s'",
        got, sizeof(got));
    assert_string_equal(got, "a,schema_migrations"); /* no b (rolled back), no c */

    /* the lock was released: fixing the file lets a later run finish */
    put(e, "0002_bad.sql", "CREATE TABLE %S.b (id int);");
    assert_int_equal(run(e, err, sizeof(err)), 2);
    one(e, "SELECT string_agg(version, ',' ORDER BY version) FROM %s.schema_migrations", got,
        sizeof(got));
    assert_string_equal(got, "0001_ok.sql,0002_bad.sql,0003_later.sql");
}

static void test_concurrent_runs_apply_once(void **state)
{
    struct env *e = nf_test_need(state);
    put(e, "0001_slow.sql",
        "CREATE TABLE %S.hits (name text);\n"
        "SELECT pg_sleep(0.5);\n"
        "INSERT INTO %S.hits VALUES ('0001');");
    put(e, "0002_next.sql", "INSERT INTO %S.hits VALUES ('0002');");
    put(e, "0003_last.sql", "INSERT INTO %S.hits VALUES ('0003');");

    enum { NPROC = 3 };
    pid_t pids[NPROC];
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char err[512];
            int n = run(e, err, sizeof(err));
            if (n < 0)
                fprintf(stderr, "child: %s\n", err);
            _exit(n < 0 ? 100 : n);
        }
    }
    int total = 0;
    for (int i = 0; i < NPROC; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_true(WEXITSTATUS(status) <= 3);
        total += WEXITSTATUS(status);
    }
    assert_int_equal(total, 3); /* each migration applied by exactly one process */
    char got[256];
    one(e, "SELECT string_agg(name, ',' ORDER BY name) FROM %s.hits", got, sizeof(got));
    assert_string_equal(got, "0001,0002,0003");
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(setup, teardown, test_applies_in_order_once, test_failure_stops_and_reports,
                       test_concurrent_runs_apply_once);
}
