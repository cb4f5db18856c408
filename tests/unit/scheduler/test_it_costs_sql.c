/*
 * Integration (needs NF_TEST_PG_DSN): the job cost update of consume_costs.c. A larger
 * total is stored (version + 1, the row returned for the snapshot); a smaller, equal or
 * another user's total changes nothing, so redelivered and reordered updates are harmless.
 * The closed attempts only grow too; a total with more attempts closed replaces the
 * stored one even when smaller (a waived attempt's usage left the cost), and cost_final (a
 * generated column) is true exactly when the job is terminal and billing closed every attempt it
 * had, whichever came last. Skips cleanly without a database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <libpq-fe.h>
#include <stdbool.h>
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

/* Applies a cost with attempts 1..closed closed; returns the new version ("" when nothing
 * changed); *final gets the job object's cost_final when final is not NULL. */
static char *apply_closed(const char *job, const char *user, const char *micros, const char *closed,
                          char *cost, bool *final)
{
    const char *p[SCHED_COSTS_NPARAMS] = {job, user, micros, closed};
    PGresult *res = nf_test_pg_run(conn, sched_costs_sql, SCHED_COSTS_NPARAMS, p);
    struct sched_job j;
    char *out;

    if (PQntuples(res) == 0) {
        PQclear(res);
        return strdup("");
    }
    sched_job_from_row(res, 0, &j);
    out = strdup(j.version);
    if (cost || final) {
        cJSON *doc = sched_job_json(&j);

        if (cost)
            snprintf(cost, 32, "%s", nf_json_str(doc, "cost_usd"));
        if (final)
            *final = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "cost_final"));
        cJSON_Delete(doc);
    }
    PQclear(res);
    return out;
}

static char *apply(const char *job, const char *user, const char *micros, char *cost)
{
    return apply_closed(job, user, micros, "0", cost, NULL);
}

/* cost_final as the row has it now. */
static bool row_final(const char *job)
{
    const char *p[1] = {job};
    PGresult *res =
        nf_test_pg_run(conn, "SELECT cost_final::text FROM sched.jobs WHERE job_id = $1", 1, p);
    bool final;

    assert_int_equal(PQntuples(res), 1);
    final = strcmp(PQgetvalue(res, 0, 0), "true") == 0;
    PQclear(res);
    return final;
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

static void set_state(const char *job, const char *status, const char *attempt)
{
    const char *p[3] = {job, status, attempt};

    nf_test_pg_exec(conn, "UPDATE sched.jobs SET status = $2, attempt = $3::int WHERE job_id = $1",
                    3, p);
}

static void test_cost_final(void **state)
{
    char job[NF_ID_MAX], user[NF_ID_MAX];
    const char *p[2];
    bool final = true;
    char *v;

    nf_test_skip_unless(conn != NULL);
    nf_id_new("job", job, sizeof(job));
    nf_id_new("usr", user, sizeof(user));
    p[0] = job;
    p[1] = user;
    nf_test_pg_exec(conn,
                    "INSERT INTO sched.jobs (job_id, user_id, job_type, status, params)"
                    " VALUES ($1, $2, 'generate', 'running', '{}')",
                    2, p);
    assert_false(row_final(job));

    /* attempt 1 closed while the scheduler still has the job running: not final yet */
    v = apply_closed(job, user, "100", "1", NULL, &final);
    assert_string_equal(v, "2");
    assert_false(final);
    free(v);
    /* the terminal event lands afterwards: final at once */
    set_state(job, "succeeded", "1");
    assert_true(row_final(job));
    /* a late, smaller message changes nothing */
    v = apply_closed(job, user, "50", "0", NULL, NULL);
    assert_string_equal(v, "");
    free(v);
    assert_true(row_final(job));

    /* a job that failed at attempt 2: attempt 1 closed is not enough */
    nf_id_new("job", job, sizeof(job));
    nf_test_pg_exec(conn,
                    "INSERT INTO sched.jobs (job_id, user_id, job_type, status, params, attempt)"
                    " VALUES ($1, $2, 'train', 'failed', '{}', 2)",
                    2, p);
    v = apply_closed(job, user, "100", "1", NULL, &final);
    assert_string_equal(v, "2");
    assert_false(final);
    free(v);
    /* attempt 2 closes: the same cost, but now final (the update is not a no-op) */
    v = apply_closed(job, user, "100", "2", NULL, &final);
    assert_string_equal(v, "3");
    assert_true(final);
    free(v);
    /* a live job is never final, whatever billing closed (back to failed afterwards: a
     * running service must find nothing of this test to work on) */
    set_state(job, "running", "2");
    assert_false(row_final(job));
    set_state(job, "failed", "2");
    assert_true(row_final(job));
}

/* A waived attempt (worker_lost, infra, preempted) takes its usage out of the cost when it
 * closes: a smaller total with more attempts closed replaces the larger one; a smaller
 * total with fewer or as many closed does not (reordered, redelivered). */
static void test_waived_close_lowers_the_cost(void **state)
{
    char job[NF_ID_MAX], user[NF_ID_MAX], cost[32];
    const char *p[2];
    bool final = true;
    char *v;

    nf_test_skip_unless(conn != NULL);
    nf_id_new("job", job, sizeof(job));
    nf_id_new("usr", user, sizeof(user));
    p[0] = job;
    p[1] = user;
    nf_test_pg_exec(conn,
                    "INSERT INTO sched.jobs (job_id, user_id, job_type, status, params)"
                    " VALUES ($1, $2, 'train', 'running', '{}')",
                    2, p);
    /* attempt 1 runs: its usage is priced while its end is not known */
    v = apply_closed(job, user, "700", "0", cost, NULL);
    assert_string_equal(v, "2");
    assert_string_equal(cost, "0.000700");
    free(v);
    /* its worker is lost: attempt 1 closes waived, the cost drops to 0 */
    v = apply_closed(job, user, "0", "1", cost, &final);
    assert_string_equal(v, "3");
    assert_string_equal(cost, "0.000000");
    assert_false(final);
    free(v);
    /* the provisional total arriving late (reordered, redelivered): nothing */
    v = apply_closed(job, user, "700", "0", NULL, NULL);
    assert_string_equal(v, "");
    free(v);
    /* attempt 2's usage grows the cost again; it succeeds and closes: final */
    v = apply_closed(job, user, "300", "1", cost, NULL);
    assert_string_equal(v, "4");
    assert_string_equal(cost, "0.000300");
    free(v);
    set_state(job, "succeeded", "2");
    v = apply_closed(job, user, "300", "2", cost, &final);
    assert_string_equal(v, "5");
    assert_true(final);
    free(v);
    v = apply_closed(job, user, "700", "1", NULL, NULL); /* stale: nothing */
    assert_string_equal(v, "");
    free(v);
    assert_true(row_final(job));
}

int main(void)
{
    return NF_TEST_RUN_GROUP(setup, teardown, test_cost_final, test_cost_only_grows,
                             test_waived_close_lowers_the_cost);
}
