/*
 * Integration (needs NF_TEST_PG_DSN): the statements of the job lifecycle against a real
 * Postgres - the queued event recorded with the row, durable retries (next_attempt_at set
 * by the events statement, found and cleared by the retry poller's statements), and
 * cancel (request and finalize, tenancy, finished jobs, repeats). Skips cleanly without
 * a database; its rows are deleted at the end.
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

#include "nf_event.h"
#include "nf_id.h"
#include "nf_pg.h"
#include "nf_test.h"
#include "sched.h"

#define USER "usr_it_lifecycle"

static PGconn *conn;

static void drop_rows(void)
{
    nf_test_pg_exec(conn,
                    "DELETE FROM sched.job_events WHERE job_id IN"
                    " (SELECT job_id FROM sched.jobs WHERE user_id LIKE 'usr_it_lifecycle%')",
                    0, NULL);
    nf_test_pg_exec(conn, "DELETE FROM sched.jobs WHERE user_id LIKE 'usr_it_lifecycle%'", 0, NULL);
}

static int setup(void **state)
{
    if (nf_test_pg_open(&conn, "sched", NF_SOURCE_DIR "/services/scheduler/migrations") < 0)
        return -1;
    if (conn)
        drop_rows();
    return 0;
}

static int teardown(void **state)
{
    if (conn)
        drop_rows();
    PQfinish(conn);
    conn = NULL;
    return 0;
}

static const char *val(const PGresult *res, const char *col)
{
    return nf_pg_val(res, 0, col);
}

/* The real insert statement for a generate request job_id of user with params (priority
 * 5, 3 attempts); its "inserted" column must be inserted. */
static void insert_request(const char *job_id, const char *user, const char *params,
                           const char *inserted)
{
    const char *p[SCHED_REQUESTED_NPARAMS] = {0};
    PGresult *res;

    p[0] = job_id;
    p[1] = user;
    p[2] = "generate";
    p[3] = params;
    p[6] = "5";
    p[7] = "3";
    res = nf_test_pg_run(conn, sched_requested_sql, SCHED_REQUESTED_NPARAMS, p);
    assert_string_equal(val(res, "inserted"), inserted);
    PQclear(res);
}

/* A job through the real insert statement (its queued event with it). */
static void insert_job(const char *user, char *id, size_t len)
{
    nf_id_new("job", id, len);
    insert_request(id, user, "{\"domain\":\"x\",\"num_samples\":1}", "1");
}

static void set_status(const char *id, const char *status, int attempt)
{
    char a[16];
    const char *p[3] = {id, status, a};

    snprintf(a, sizeof(a), "%d", attempt);
    nf_test_pg_exec(conn, "UPDATE sched.jobs SET status = $2, attempt = $3::int WHERE job_id = $1",
                    3, p);
}

/* Applies one event through the events statement; returns the outcome (caller frees). */
static char *apply(const char *job, const char *type, int attempt, const char *data_extra,
                   char **status)
{
    char text[1024], id[NF_ID_MAX];
    const char *params[SCHED_EVENTS_NPARAMS], *why = NULL;
    struct sched_events_bufs bufs;
    struct sched_event e;
    PGresult *res;
    cJSON *ev;
    char *outcome;

    nf_id_new("evt", id, sizeof(id));
    snprintf(text, sizeof(text),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"t\",\"type\":\"forge.job.%s\","
             "\"subject\":\"%s\",\"time\":\"2026-11-28T21:03:52.123Z\",\"data\":{\"job_id\":"
             "\"%s\",\"user_id\":\"" USER "\",\"attempt\":%d,\"status\":\"x\"%s}}",
             id, type, job, job, attempt, data_extra ? data_extra : "");
    ev = cJSON_Parse(text);
    if (sched_event_parse(ev, &e, &why) != 0)
        fail_msg("event: %s", why);
    sched_events_params(&e, 60, params, &bufs);
    res = nf_test_pg_run(conn, sched_events_sql, SCHED_EVENTS_NPARAMS, params);
    sched_events_params_free(&bufs);
    cJSON_Delete(ev);
    outcome = strdup(val(res, "outcome"));
    if (status)
        *status = strdup(val(res, "status"));
    PQclear(res);
    return outcome;
}

static void test_queued_event_recorded_with_the_row(void **state)
{
    char job[NF_ID_MAX], want[NF_ID_MAX], *v;
    const char *p[1] = {job};

    nf_test_skip_unless(conn != NULL);
    insert_job(USER, job, sizeof(job));
    sched_event_id("queued", job, 1, want, sizeof(want));
    v = nf_test_pg_one(conn,
                       "SELECT string_agg(event_id || ':' || type || ':' || attempt || ':' ||"
                       " (data->>'status'), ',') FROM sched.job_events WHERE job_id = $1",
                       1, p);
    char expect[128];
    snprintf(expect, sizeof(expect), "%s:queued:1:queued", want);
    assert_string_equal(v, expect); /* the id st_produce publishes: a duplicate when read */
    free(v);
    /* the scheduler's own queued event read back: a duplicate, nothing more recorded */
    {
        const char *params[SCHED_EVENTS_NPARAMS];
        struct sched_events_bufs bufs;
        struct sched_event e;
        const char *why = NULL;
        char text[512];
        cJSON *ev;
        PGresult *res;

        snprintf(text, sizeof(text),
                 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"t\",\"type\":"
                 "\"forge.job.queued\",\"subject\":\"%s\",\"data\":{\"job_id\":\"%s\","
                 "\"attempt\":1}}",
                 want, job, job);
        ev = cJSON_Parse(text);
        assert_int_equal(sched_event_parse(ev, &e, &why), 0);
        sched_events_params(&e, 60, params, &bufs);
        res = nf_test_pg_run(conn, sched_events_sql, SCHED_EVENTS_NPARAMS, params);
        assert_string_equal(val(res, "outcome"), "duplicate");
        PQclear(res);
        sched_events_params_free(&bufs);
        cJSON_Delete(ev);
    }
    v = nf_test_pg_one(conn, "SELECT count(*) FROM sched.job_events WHERE job_id = $1", 1, p);
    assert_string_equal(v, "1");
    free(v);
    /* a redelivered request inserts neither the row nor the event again */
    insert_request(job, USER, "{}", "0");
    v = nf_test_pg_one(conn, "SELECT count(*) FROM sched.job_events WHERE job_id = $1", 1, p);
    assert_string_equal(v, "1");
    free(v);
}

static void test_durable_retry(void **state)
{
    char job[NF_ID_MAX], other[NF_ID_MAX], *v, *outcome, *status;
    const char *p[1] = {job}, *lim[1] = {"1000"};
    char ids[128], atts[32];
    const char *clear[2] = {ids, atts};
    PGresult *res;
    int i, found;

    nf_test_skip_unless(conn != NULL);
    insert_job(USER, job, sizeof(job));
    set_status(job, "running", 1);
    outcome = apply(job, "failed", 1,
                    ",\"error\":{\"code\":\"x\",\"message\":\"m\",\"class\":"
                    "\"infra\"}",
                    &status);
    assert_string_equal(outcome, "apply");
    assert_string_equal(status, "queued");
    free(outcome);
    free(status);
    /* due in 2^1 s: set, in the future, not yet picked by the poller */
    v = nf_test_pg_one(conn,
                       "SELECT round(extract(epoch FROM next_attempt_at - updated_at))::int"
                       " FROM sched.jobs WHERE job_id = $1",
                       1, p);
    assert_string_equal(v, "2");
    free(v);
    res = nf_test_pg_run(conn, sched_retry_due_sql, 1, lim);
    for (i = 0, found = 0; i < PQntuples(res); i++)
        found += strcmp(PQgetvalue(res, i, PQfnumber(res, "job_id")), job) == 0;
    assert_int_equal(found, 0);
    PQclear(res);
    /* once due, it is picked, with the new attempt */
    nf_test_pg_exec(conn,
                    "UPDATE sched.jobs SET next_attempt_at = now() - interval '1 second'"
                    " WHERE job_id = $1",
                    1, p);
    res = nf_test_pg_run(conn, sched_retry_due_sql, 1, lim);
    for (i = 0, found = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, PQfnumber(res, "job_id")), job) != 0)
            continue;
        found++;
        assert_string_equal(PQgetvalue(res, i, PQfnumber(res, "attempt")), "2");
    }
    assert_int_equal(found, 1);
    PQclear(res);
    /* clearing another attempt changes nothing; clearing this one does */
    snprintf(ids, sizeof(ids), "{%s}", job);
    snprintf(atts, sizeof(atts), "{1}");
    nf_test_pg_exec(conn, sched_retry_clear_sql, 2, clear);
    v = nf_test_pg_one(conn, "SELECT next_attempt_at IS NOT NULL FROM sched.jobs WHERE job_id = $1",
                       1, p);
    assert_string_equal(v, "t");
    free(v);
    snprintf(atts, sizeof(atts), "{2}");
    nf_test_pg_exec(conn, sched_retry_clear_sql, 2, clear);
    v = nf_test_pg_one(conn,
                       "SELECT (next_attempt_at IS NULL) || ':' || (dispatched_at IS NOT NULL)"
                       " FROM sched.jobs WHERE job_id = $1",
                       1, p);
    assert_string_equal(v, "true:true");
    free(v);

    /* a user error is final: no due time */
    insert_job(USER, other, sizeof(other));
    set_status(other, "running", 1);
    outcome =
        apply(other, "failed", 1,
              ",\"error\":{\"code\":\"x\",\"message\":\"m\",\"class\":\"user_error\"}", &status);
    assert_string_equal(status, "failed");
    free(outcome);
    free(status);
    p[0] = other;
    v = nf_test_pg_one(conn, "SELECT next_attempt_at IS NULL FROM sched.jobs WHERE job_id = $1", 1,
                       p);
    assert_string_equal(v, "t");
    free(v);

    /* a job waiting for its retry that leaves queued (a cancel) loses its due time */
    p[0] = job;
    nf_test_pg_exec(conn,
                    "UPDATE sched.jobs SET next_attempt_at = now() + interval '1 hour'"
                    " WHERE job_id = $1",
                    1, p);
    {
        const char *c[2] = {job, USER};

        res = nf_test_pg_run(conn, sched_cancel_request_sql, 2, c);
        assert_string_equal(val(res, "status"), "cancel_requested");
        PQclear(res);
    }
    v = nf_test_pg_one(conn, "SELECT next_attempt_at IS NULL FROM sched.jobs WHERE job_id = $1", 1,
                       p);
    assert_string_equal(v, "t");
    free(v);
}

static void test_cancel_statements(void **state)
{
    char job[NF_ID_MAX], want[NF_ID_MAX], *v;
    const char *req[2], *fin[1], *p[1];
    PGresult *res;

    nf_test_skip_unless(conn != NULL);
    insert_job(USER, job, sizeof(job));
    req[0] = fin[0] = p[0] = job;
    /* another user: no row at all (404) */
    req[1] = USER "_other";
    res = nf_test_pg_run(conn, sched_cancel_request_sql, 2, req);
    assert_int_equal(PQntuples(res), 0);
    PQclear(res);
    v = nf_test_pg_one(conn, "SELECT status FROM sched.jobs WHERE job_id = $1", 1, p);
    assert_string_equal(v, "queued");
    free(v);

    /* the owner: queued -> cancel_requested, its event recorded with the id we publish */
    req[1] = USER;
    res = nf_test_pg_run(conn, sched_cancel_request_sql, 2, req);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(val(res, "old_status"), "queued");
    assert_string_equal(val(res, "status"), "cancel_requested");
    assert_string_equal(val(res, "changed"), "1");
    assert_string_equal(val(res, "version"), "2");
    PQclear(res);
    sched_event_id("cancel_requested", job, 1, want, sizeof(want));
    v = nf_test_pg_one(conn,
                       "SELECT event_id || ':' || (data->>'status') || ':' || (data->>'user_id')"
                       " FROM sched.job_events WHERE job_id = $1 AND type = 'cancel_requested'",
                       1, p);
    char expect[160];
    snprintf(expect, sizeof(expect), "%s:cancel_requested:" USER, want);
    assert_string_equal(v, expect);
    free(v);

    /* asked again: nothing changes, the caller asks the worker-manager again */
    res = nf_test_pg_run(conn, sched_cancel_request_sql, 2, req);
    assert_string_equal(val(res, "old_status"), "cancel_requested");
    assert_string_equal(val(res, "changed"), "0");
    assert_string_equal(val(res, "version"), "2");
    PQclear(res);

    /* finalize: cancelled, finished, its event; a second finalize changes nothing */
    res = nf_test_pg_run(conn, sched_cancel_finalize_sql, 1, fin);
    assert_string_equal(val(res, "status"), "cancelled");
    assert_string_equal(val(res, "changed"), "1");
    assert_non_null(val(res, "finished_at"));
    PQclear(res);
    res = nf_test_pg_run(conn, sched_cancel_finalize_sql, 1, fin);
    assert_string_equal(val(res, "status"), "cancelled");
    assert_string_equal(val(res, "changed"), "0");
    PQclear(res);
    sched_event_id("cancelled", job, 1, want, sizeof(want));
    v = nf_test_pg_one(
        conn, "SELECT string_agg(type, ',' ORDER BY seq) FROM sched.job_events WHERE job_id = $1",
        1, p);
    assert_string_equal(v, "queued,cancel_requested,cancelled");
    free(v);

    /* a finished job: old_status says so, nothing changes (409) */
    res = nf_test_pg_run(conn, sched_cancel_request_sql, 2, req);
    assert_string_equal(val(res, "old_status"), "cancelled");
    assert_string_equal(val(res, "changed"), "0");
    PQclear(res);
    set_status(job, "succeeded", 1);
    res = nf_test_pg_run(conn, sched_cancel_request_sql, 2, req);
    assert_string_equal(val(res, "old_status"), "succeeded");
    assert_string_equal(val(res, "status"), "succeeded");
    PQclear(res);
    /* finalize never touches a job that is not in cancel_requested */
    res = nf_test_pg_run(conn, sched_cancel_finalize_sql, 1, fin);
    assert_string_equal(val(res, "status"), "succeeded");
    assert_string_equal(val(res, "changed"), "0");
    PQclear(res);

    /* the worker's cancelled event for a cancel_requested job applies; a late running of
     * the cancelled job is ignored */
    {
        char other[NF_ID_MAX], *outcome, *status;

        insert_job(USER, other, sizeof(other));
        set_status(other, "running", 1);
        req[0] = other;
        nf_test_pg_exec(conn, sched_cancel_request_sql, 2, req);
        outcome = apply(other, "cancelled", 1, NULL, &status);
        assert_string_equal(outcome, "apply");
        assert_string_equal(status, "cancelled");
        free(outcome);
        free(status);
        outcome = apply(other, "running", 1, ",\"worker_id\":\"wrk_1\"", &status);
        assert_string_equal(outcome, "ignore");
        assert_string_equal(status, "cancelled");
        free(outcome);
        free(status);
    }
}

/* Runs sql and tells whether job is among the rows (and its value of col). */
static bool has_row(const char *sql, int n, const char *const *params, const char *job,
                    const char *col, char *out, size_t len)
{
    PGresult *res = nf_test_pg_run(conn, sql, n, params);
    bool found = false;
    int i;

    for (i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, PQfnumber(res, "job_id")), job) != 0)
            continue;
        found = true;
        if (col)
            snprintf(out, len, "%s", PQgetvalue(res, i, PQfnumber(res, col)));
    }
    PQclear(res);
    return found;
}

static void test_reconciler_statements(void **state)
{
    char job[NF_ID_MAX], other[NF_ID_MAX], age[32], ids[128], *v;
    const char *p[1] = {job}, *stuck[3] = {"30", "", "1000"}, *tmo[2] = {"60", "1000"};
    const char *req[2] = {ids, "{1}"};
    PGresult *res;

    nf_test_skip_unless(conn != NULL);
    insert_job(USER, job, sizeof(job));
    /* just queued: not stuck yet */
    assert_false(has_row(sched_stuck_sql, 3, stuck, job, NULL, NULL, 0));
    /* queued for 5 minutes: a candidate, with its age */
    nf_test_pg_exec(conn,
                    "UPDATE sched.jobs SET updated_at = now() - interval '5 minutes'"
                    " WHERE job_id = $1",
                    1, p);
    assert_true(has_row(sched_stuck_sql, 3, stuck, job, "age_s", age, sizeof(age)));
    assert_true(atoi(age) >= 299 && atoi(age) <= 302);
    /* dispatched again a moment ago: not a candidate; waiting for a retry: neither */
    nf_test_pg_exec(conn, "UPDATE sched.jobs SET dispatched_at = now() WHERE job_id = $1", 1, p);
    assert_false(has_row(sched_stuck_sql, 3, stuck, job, NULL, NULL, 0));
    nf_test_pg_exec(conn,
                    "UPDATE sched.jobs SET dispatched_at = NULL,"
                    " next_attempt_at = now() + interval '1 hour' WHERE job_id = $1",
                    1, p);
    assert_false(has_row(sched_stuck_sql, 3, stuck, job, NULL, NULL, 0));
    nf_test_pg_exec(conn, "UPDATE sched.jobs SET next_attempt_at = NULL WHERE job_id = $1", 1, p);
    /* the walk by job id: a position past it skips it */
    stuck[1] = job;
    assert_false(has_row(sched_stuck_sql, 3, stuck, job, NULL, NULL, 0));
    stuck[1] = "";

    /* requeue: only the attempt named, only while queued; the new attempt's queued event
     * is recorded with it */
    snprintf(ids, sizeof(ids), "{%s}", job);
    req[1] = "{2}";
    res = nf_test_pg_run(conn, sched_requeue_sql, 2, req);
    assert_int_equal(PQntuples(res), 0);
    PQclear(res);
    req[1] = "{1}";
    res = nf_test_pg_run(conn, sched_requeue_sql, 2, req);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(val(res, "attempt"), "2");
    assert_string_equal(val(res, "status"), "queued");
    assert_string_equal(val(res, "version"), "2");
    assert_string_equal(val(res, "artifacts"), "[]");
    PQclear(res);
    v = nf_test_pg_one(conn,
                       "SELECT string_agg(type || ':' || attempt, ',' ORDER BY seq)"
                       " FROM sched.job_events WHERE job_id = $1",
                       1, p);
    assert_string_equal(v, "queued:1,queued:2");
    free(v);
    res = nf_test_pg_run(conn, sched_requeue_sql, 2, req); /* the same requeue again: nothing */
    assert_int_equal(PQntuples(res), 0);
    PQclear(res);
    /* requeued just now: not a candidate */
    assert_false(has_row(sched_stuck_sql, 3, stuck, job, NULL, NULL, 0));

    /* timeouts: running past timeout_seconds + grace, whatever started it */
    insert_job(USER, other, sizeof(other));
    p[0] = other;
    nf_test_pg_exec(conn,
                    "UPDATE sched.jobs SET status = 'running', timeout_seconds = 60,"
                    " started_at = now() - interval '100 seconds' WHERE job_id = $1",
                    1, p);
    assert_false(has_row(sched_timeout_sql, 2, tmo, other, NULL, NULL, 0)); /* 60 + 60 */
    tmo[0] = "30";
    assert_true(has_row(sched_timeout_sql, 2, tmo, other, NULL, NULL, 0));
    /* assigned (never started): counted from when it was assigned */
    nf_test_pg_exec(conn,
                    "UPDATE sched.jobs SET status = 'assigned', started_at = NULL,"
                    " updated_at = now() - interval '100 seconds' WHERE job_id = $1",
                    1, p);
    assert_true(has_row(sched_timeout_sql, 2, tmo, other, NULL, NULL, 0));
    /* finished jobs and jobs without a timeout are never timed out */
    nf_test_pg_exec(conn, "UPDATE sched.jobs SET status = 'succeeded' WHERE job_id = $1", 1, p);
    assert_false(has_row(sched_timeout_sql, 2, tmo, other, NULL, NULL, 0));
    nf_test_pg_exec(conn,
                    "UPDATE sched.jobs SET status = 'running', timeout_seconds = NULL"
                    " WHERE job_id = $1",
                    1, p);
    assert_false(has_row(sched_timeout_sql, 2, tmo, other, NULL, NULL, 0));
}

int main(void)
{
    return NF_TEST_RUN_GROUP(setup, teardown, test_queued_event_recorded_with_the_row,
                             test_durable_retry, test_cancel_statements,
                             test_reconciler_statements);
}
