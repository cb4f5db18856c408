/*
 * Integration (needs NF_TEST_PG_DSN): the job cost update of consume_costs.c. A larger
 * total is stored (version + 1, the row returned for the snapshot); a smaller, equal or
 * another user's total changes nothing, so redelivered and reordered updates are harmless.
 * Skips cleanly without a database.
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

#include "nf_id.h"
#include "nf_migrate.h"
#include "sched.h"

static PGconn *conn;

static int setup(void **state)
{
    const char *dsn = getenv("NF_TEST_PG_DSN");
    char err[512];

    if (!dsn || !*dsn)
        return 0;
    if (nf_migrate_run(dsn, "sched", NF_SOURCE_DIR "/services/scheduler/migrations", err,
                       sizeof(err)) < 0) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    conn = PQconnectdb(dsn);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s\n", PQerrorMessage(conn));
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    if (conn)
        PQfinish(conn);
    conn = NULL;
    return 0;
}

/* Applies a cost; returns the new version ("" when nothing changed). */
static char *apply(const char *job, const char *user, const char *micros, char *cost)
{
    const char *p[SCHED_COSTS_NPARAMS] = {job, user, micros};
    PGresult *res =
        PQexecParams(conn, sched_costs_sql, SCHED_COSTS_NPARAMS, NULL, p, NULL, NULL, 0);
    struct sched_job j;
    char *out;

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("costs sql: %s", PQerrorMessage(conn));
    if (PQntuples(res) == 0) {
        PQclear(res);
        return strdup("");
    }
    sched_job_from_row(res, 0, &j);
    out = strdup(j.version);
    if (cost) {
        cJSON *doc = sched_job_json(&j);

        snprintf(cost, 32, "%s", nf_json_str(doc, "cost_usd"));
        cJSON_Delete(doc);
    }
    PQclear(res);
    return out;
}

static void expect(const char *job, const char *user, const char *micros, const char *version)
{
    char *v = apply(job, user, micros, NULL);

    assert_string_equal(v, version);
    free(v);
}

static void test_cost_only_grows(void **state)
{
    char job[NF_ID_MAX], user[NF_ID_MAX], other[NF_ID_MAX], cost[32];
    const char *p[2];
    PGresult *res;
    char *v;

    if (!conn)
        skip();
    nf_id_new("job", job, sizeof(job));
    nf_id_new("usr", user, sizeof(user));
    nf_id_new("usr", other, sizeof(other));
    p[0] = job;
    p[1] = user;
    res = PQexecParams(conn,
                       "INSERT INTO sched.jobs (job_id, user_id, job_type, status, params)"
                       " VALUES ($1, $2, 'train', 'running', '{}')",
                       2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("insert: %s", PQerrorMessage(conn));
    PQclear(res);

    v = apply(job, user, "41667", cost);
    assert_string_equal(v, "2"); /* version 1 -> 2: the snapshot write supersedes */
    assert_string_equal(cost, "0.041667");
    free(v);
    expect(job, user, "41667", "");    /* the same total again: nothing */
    expect(job, user, "10000", "");    /* an older total arriving late: nothing */
    expect(job, other, "99999", "");   /* another user's job id: nothing */
    expect("job_nope", user, "5", ""); /* an unknown job: nothing */
    v = apply(job, user, "51667", cost);
    assert_string_equal(v, "3");
    assert_string_equal(cost, "0.051667");
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost_only_grows),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
