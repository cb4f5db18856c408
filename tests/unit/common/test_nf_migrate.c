/*
 * nf_migrate without a Postgres server: the checks made before connecting (schema name,
 * migrations directory) and a connection failure, each reported in err.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nf_log.h"
#include "nf_migrate.h"
#include "nf_test.h"

static void test_rejects_bad_schema_names(void **state)
{
    const char *bad[] = {"",    "Auth",
                         "a-b", "x;drop table y",
                         "a b", "sch\"ema",
                         "s1",  "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl"};
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(nf_migrate_run("host=127.0.0.1 port=1", bad[i], "/tmp", err, sizeof(err)),
                         -1);
        assert_non_null(strstr(err, "invalid schema name"));
    }
    assert_int_equal(nf_migrate_run("host=127.0.0.1 port=1", NULL, "/tmp", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "invalid schema name"));
    /* err may be NULL */
    assert_int_equal(nf_migrate_run("host=127.0.0.1 port=1", "A", "/tmp", NULL, 0), -1);
}

static void test_missing_dir(void **state)
{
    char err[256] = "";
    assert_int_equal(nf_migrate_run("host=127.0.0.1 port=1", "nf_x", "/nonexistent/nf/migrations",
                                    err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "/nonexistent/nf/migrations"));
    assert_int_equal(nf_migrate_run(NULL, "nf_x", "/tmp", err, sizeof(err)), -1);
    assert_int_equal(nf_migrate_run("host=127.0.0.1", "nf_x", NULL, err, sizeof(err)), -1);
}

static void test_cannot_connect(void **state)
{
    char dsn[128], err[512] = "";
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%d dbname=x user=x connect_timeout=2",
             nf_test_closed_port());
    time_t t0 = time(NULL);
    assert_int_equal(nf_migrate_run(dsn, "nf_x", "/tmp", err, sizeof(err)), -1);
    assert_true(time(NULL) - t0 <= 3);
    assert_non_null(strstr(err, "cannot connect"));
    assert_int_equal(nf_migrate_run("not a conninfo", "nf_x", "/tmp", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot connect"));
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(NULL, NULL, test_rejects_bad_schema_names, test_missing_dir,
                       test_cannot_connect);
}
