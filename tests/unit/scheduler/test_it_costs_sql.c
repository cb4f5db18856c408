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
#include "nf_test.h"
#include "sched.h"

static PGconn *conn;

static int setup(void **state)
{
    return nf_test_pg_open(&conn, "sched", NF_SOURCE_DIR "/services/scheduler/migrations");
}

static int teardown(void **state)
{
    PQfinish(conn);
    conn = NULL;
    return 0;
}

/* Applies a cost; returns the new version ("" when nothing changed). */
static char *apply(const char *job, const char *user, const char *micros, char *cost)
{
    const char *p[SCHED_COSTS_NPARAMS] = {job, user, micros};
    PGresult *res = nf_test_pg_run(conn, sched_costs_sql, SCHED_COSTS_NPARAMS, p);
    struct sched_job j;
    char *out;

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
    char *v;

    nf_test_skip_unless(conn != NULL);
    nf_id_new("job", job, sizeof(job));
    nf_id_new("usr", user, sizeof(user));
    nf_id_new("usr", other, sizeof(other));
    p[0] = job;
    p[1] = user;
    nf_test_pg_exec(conn,
                    "INSERT INTO sched.jobs (job_id, user_id, job_type, status, params)"
                    " VALUES ($1, $2, 'train', 'running', '{}')",
                    2, p);

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
    return NF_TEST_RUN_GROUP(setup, teardown, test_cost_only_grows);
}
