/*
 * Integration (needs NF_TEST_PG_DSN): the insert-if-absent + hourly rollup statement of
 * consume_usage.c (a redelivered event changes nothing), and the seeded price book
 * matching the rates the price math is tested with. Skips cleanly without a database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bill.h"
#include "nf_id.h"
#include "nf_migrate.h"

static PGconn *conn;

static int setup(void **state)
{
    const char *dsn = getenv("NF_TEST_PG_DSN");
    char err[512];

    if (!dsn || !*dsn)
        return 0;
    if (nf_migrate_run(dsn, "billing", NF_SOURCE_DIR "/services/billing/migrations", err,
                       sizeof(err)) < 0) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    conn = PQconnectdb(dsn);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s\n", PQerrorMessage(conn));
        return -1;
    }
    /* a thousand small commits: no need to wait for each flush */
    PQclear(PQexec(conn, "SET synchronous_commit = off"));
    return 0;
}

static int teardown(void **state)
{
    if (conn)
        PQfinish(conn);
    conn = NULL;
    return 0;
}

#define NEED_PG()                                                                                  \
    do {                                                                                           \
        if (!conn)                                                                                 \
            skip();                                                                                \
    } while (0)

/* One usage event for user, built and validated through the real parser. */
static PGresult *record(const char *id, const char *user, const char *meter, long long q,
                        const char *start, const char *end)
{
    char buf[1024];
    const char *params[BILL_USAGE_NPARAMS], *why = NULL;
    struct bill_usage_bufs bufs;
    struct bill_usage u;
    PGresult *res;
    cJSON *ev;

    snprintf(buf, sizeof(buf),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"t\","
             "\"type\":\"forge.usage.recorded\",\"subject\":\"%s\",\"data\":{\"user_id\":\"%s\","
             "\"job_id\":\"job_it\",\"job_type\":\"train\",\"attempt\":1,\"meter\":\"%s\","
             "\"quantity\":%lld,\"window_start\":\"%s\",\"window_end\":\"%s\"}}",
             id, user, user, meter, q, start, end);
    ev = cJSON_Parse(buf);
    if (bill_usage_parse(ev, &u, &why) < 0)
        fail_msg("usage does not parse: %s", why);
    bill_usage_params(&u, params, &bufs);
    res = PQexecParams(conn, bill_usage_sql, BILL_USAGE_NPARAMS, NULL, params, NULL, NULL, 0);
    cJSON_Delete(ev);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("usage sql: %s", PQerrorMessage(conn));
    return res;
}

static char *hourly(const char *user, const char *meter, const char *hour)
{
    const char *p[3] = {user, meter, hour};
    PGresult *res = PQexecParams(conn,
                                 "SELECT quantity FROM billing.usage_hourly WHERE user_id = $1"
                                 " AND meter = $2 AND hour = $3::timestamptz",
                                 3, NULL, p, NULL, NULL, 0);
    char *v = PQntuples(res) ? strdup(PQgetvalue(res, 0, 0)) : strdup("none");

    PQclear(res);
    return v;
}

static void expect_hourly(const char *user, const char *meter, const char *hour, const char *want)
{
    char *got = hourly(user, meter, hour);

    assert_string_equal(got, want);
    free(got);
}

static void test_redelivery_changes_nothing(void **state)
{
    char user[NF_ID_MAX], id1[80], id2[80], id3[80];
    PGresult *res;

    NEED_PG();
    nf_id_new("usr", user, sizeof(user));
    snprintf(id1, sizeof(id1), "use_a_%s", user);
    snprintf(id2, sizeof(id2), "use_b_%s", user);
    snprintf(id3, sizeof(id3), "use_c_%s", user);
    res = record(id1, user, "gpu_ms", 60000, "2026-11-28T21:10:00Z", "2026-11-28T21:11:00Z");
    assert_string_equal(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    expect_hourly(user, "gpu_ms", "2026-11-28T21:00:00Z", "60000");
    /* the same event again: nothing inserted, rollup unchanged */
    res = record(id1, user, "gpu_ms", 60000, "2026-11-28T21:10:00Z", "2026-11-28T21:11:00Z");
    assert_string_equal(PQgetvalue(res, 0, 0), "0");
    assert_string_equal(PQgetvalue(res, 0, 1), "0");
    PQclear(res);
    expect_hourly(user, "gpu_ms", "2026-11-28T21:00:00Z", "60000");
    /* another event in the same hour adds up; the window's start hour decides */
    res = record(id2, user, "gpu_ms", 1500, "2026-11-28T21:59:59.999Z", "2026-11-28T22:00:30Z");
    PQclear(res);
    expect_hourly(user, "gpu_ms", "2026-11-28T21:00:00Z", "61500");
    expect_hourly(user, "gpu_ms", "2026-11-28T22:00:00Z", "none");
    /* an offset time lands in its UTC hour */
    res = record(id3, user, "gpu_ms", 7, "2026-11-28T23:30:00+01:00", "2026-11-28T23:31:00+01:00");
    PQclear(res);
    expect_hourly(user, "gpu_ms", "2026-11-28T22:00:00Z", "7");
}

static void test_price_book_matches_header(void **state)
{
    static const struct {
        const char *meter;
        struct bill_rate rate;
    } want[] = {
        {"gpu_ms", BILL_GPU_RATE},
        {"input_tokens", BILL_INPUT_RATE},
        {"output_tokens", BILL_OUTPUT_RATE},
        {"storage_byte_hours", BILL_STORAGE_RATE},
    };
    char price[32], per[32];
    const char *p[3];
    PGresult *res;
    size_t i;

    NEED_PG();
    for (i = 0; i < 4; i++) {
        snprintf(price, sizeof(price), "%lld", want[i].rate.price_micros);
        snprintf(per, sizeof(per), "%lld", want[i].rate.per_units);
        p[0] = want[i].meter;
        p[1] = price;
        p[2] = per;
        res = PQexecParams(conn,
                           "SELECT count(*) FROM billing.price_book WHERE meter = $1 AND"
                           " price_micros = $2::bigint AND per_units = $3::bigint AND"
                           " effective_from = '1970-01-01T00:00:00Z'",
                           3, NULL, p, NULL, NULL, 0);
        if (strcmp(PQgetvalue(res, 0, 0), "1") != 0)
            fail_msg("price_book has no seeded row %s %s/%s", want[i].meter, price, per);
        PQclear(res);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redelivery_changes_nothing),
        cmocka_unit_test(test_price_book_matches_header),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
