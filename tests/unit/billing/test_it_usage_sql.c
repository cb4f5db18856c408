/*
 * Integration (needs NF_TEST_PG_DSN): the batch statement of consume_usage.c and the
 * sweep, on a real Postgres with the billing migrations:
 *   - a redelivered or in-batch duplicated event changes no rollup;
 *   - the lease rule: the leasing worker's usage is recorded, another worker's refused,
 *     usage before its lease parked and later recorded (or refused) by the sweep;
 *   - platform storage (no worker) needs no lease;
 *   - usage_jobs follows the compute meters only;
 *   - the effects query prices jobs and budgets; the seeded price book matches the header;
 *   - attempts: an ended attempt closes when its usage is complete, at once without a
 *     count, after the close wait otherwise; a closed attempt refuses new usage (also the
 *     pending kind) but not redeliveries; the effects query says which attempts are closed;
 *   - money is priced per cell (a job's meter in an hour) in SQL exactly as
 *     bill_cost_micros does, so a user's job costs add up to the summary's lines even where
 *     pricing each line once would not.
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

#include "bill.h"
#include "nf_id.h"
#include "nf_json.h"
#include "nf_test.h"

/* The day of the usage windows: DAY "21:00:00Z" is 21:00 UTC on it. */
#define DAY "2026-11-28T"

static PGconn *conn;

static int setup(void **state)
{
    if (nf_test_pg_open(&conn, "billing", NF_SOURCE_DIR "/services/billing/migrations") < 0)
        return -1;
    if (conn)
        nf_test_pg_exec(conn, "SET synchronous_commit = off", 0, NULL);
    return 0;
}

static int teardown(void **state)
{
    PQfinish(conn);
    conn = NULL;
    return 0;
}

/* Test identities: fresh per test so runs never see each other's rows. */
struct ids {
    char user[NF_ID_MAX], job[NF_ID_MAX], worker[NF_ID_MAX], other[NF_ID_MAX];
};

static void ids_new(struct ids *x)
{
    nf_id_new("usr", x->user, sizeof(x->user));
    nf_id_new("job", x->job, sizeof(x->job));
    nf_id_new("wrk", x->worker, sizeof(x->worker));
    nf_id_new("wrk", x->other, sizeof(x->other));
}

/* One usage event of x's job, built and validated through the real parser; worker NULL:
 * platform storage. Appended to arr (the batch statement's $1). */
static void add_event_at(cJSON *arr, const struct ids *x, const char *tag, const char *worker,
                         int attempt, const char *meter, long long q, const char *start,
                         const char *end)
{
    char buf[1024], id[96], wk[96];
    const char *why = NULL;
    struct bill_usage u;
    cJSON *ev;

    snprintf(id, sizeof(id), "use_%s_%s", tag, x->job);
    if (worker)
        snprintf(wk, sizeof(wk), "\"worker_id\":\"%s\",", worker);
    else
        wk[0] = '\0';
    snprintf(buf, sizeof(buf),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"t\","
             "\"type\":\"forge.usage.recorded\",\"subject\":\"%s\",\"data\":{\"user_id\":\"%s\","
             "\"job_id\":\"%s\",\"job_type\":\"train\",\"attempt\":%d,%s\"meter\":\"%s\","
             "\"quantity\":%lld,\"window_start\":\"%s\",\"window_end\":\"%s\"}}",
             id, x->user, x->user, x->job, attempt, wk, meter, q, start, end);
    ev = cJSON_Parse(buf);
    if (bill_usage_parse(ev, &u, &why) < 0)
        fail_msg("usage does not parse: %s", why);
    cJSON_AddItemToArray(arr, bill_usage_json(&u));
    cJSON_Delete(ev);
}

static void add_event(cJSON *arr, const struct ids *x, const char *tag, const char *worker,
                      const char *meter, long long q, const char *start, const char *end)
{
    add_event_at(arr, x, tag, worker, 1, meter, q, start, end);
}

/* Runs the batch statement on arr (consumed); returns "verdict,verdict,..." in id order. */
static char *run_batch(cJSON *arr)
{
    char *text = nf_json_print(arr), out[1024] = "";
    const char *p[1] = {text};
    PGresult *res;
    int i;

    res = nf_test_pg_run(conn, bill_batch_sql, 1, p);
    for (i = 0; i < PQntuples(res); i++) {
        strcat(out, i ? "," : "");
        strcat(out, PQgetvalue(res, i, 1));
    }
    PQclear(res);
    free(text);
    cJSON_Delete(arr);
    return strdup(out);
}

static void expect_batch(cJSON *arr, const char *want)
{
    char *got = run_batch(arr);

    assert_string_equal(got, want);
    free(got);
}

static char *scalar(const char *sql, const char *a, const char *b)
{
    const char *p[2] = {a, b};
    char *v = nf_test_pg_one(conn, sql, b ? 2 : 1, p);

    return v ? v : strdup("none");
}

static void expect_scalar(const char *sql, const char *a, const char *b, const char *want)
{
    char *got = scalar(sql, a, b);

    assert_string_equal(got, want);
    free(got);
}

#define HOURLY                                                                                     \
    "SELECT sum(quantity)::text FROM billing.usage_hourly WHERE user_id = $1 AND meter = $2"
#define JOBS "SELECT sum(quantity)::text FROM billing.usage_jobs WHERE job_id = $1 AND meter = $2"

static void lease(const struct ids *x, const char *worker)
{
    const char *p[4] = {x->job, "1", worker, x->user};

    nf_test_pg_exec(conn, bill_lease_sql, 4, p);
}

static void test_duplicates_change_nothing(void **state)
{
    struct ids x;
    cJSON *arr;

    nf_test_skip_unless(conn != NULL);
    ids_new(&x);
    lease(&x, x.worker);
    arr = cJSON_CreateArray();
    add_event(arr, &x, "a", x.worker, "gpu_ms", 60000, DAY "21:10:00Z", DAY "21:11:00Z");
    add_event(arr, &x, "a", x.worker, "gpu_ms", 60000, DAY "21:10:00Z",
              DAY "21:11:00Z"); /* the same event twice in one batch */
    add_event(arr, &x, "b", x.worker, "input_tokens", 500, DAY "21:10:00Z", DAY "21:11:00Z");
    expect_batch(arr, "recorded,recorded");
    expect_scalar(HOURLY, x.user, "gpu_ms", "60000");
    expect_scalar(JOBS, x.job, "input_tokens", "500");
    /* redelivery of the whole batch: nothing new */
    arr = cJSON_CreateArray();
    add_event(arr, &x, "a", x.worker, "gpu_ms", 60000, DAY "21:10:00Z", DAY "21:11:00Z");
    add_event(arr, &x, "b", x.worker, "input_tokens", 500, DAY "21:10:00Z", DAY "21:11:00Z");
    add_event(arr, &x, "c", x.worker, "gpu_ms", 1500, DAY "21:59:59.999Z", DAY "22:00:01Z");
    expect_batch(arr, "duplicate,duplicate,recorded");
    expect_scalar(HOURLY, x.user, "gpu_ms", "61500");
    expect_scalar(JOBS, x.job, "gpu_ms", "61500");
    /* the window's start hour decides the bucket */
    expect_scalar("SELECT quantity::text FROM billing.usage_hourly WHERE user_id = $1 AND"
                  " hour = $2::timestamptz AND meter = 'gpu_ms'",
                  x.user, DAY "21:00:00Z", "61500");
}

static void test_lease_rule(void **state)
{
    struct ids x;
    cJSON *arr;

    nf_test_skip_unless(conn != NULL);
    ids_new(&x);
    /* before the lease is known: parked, nothing billed */
    arr = cJSON_CreateArray();
    add_event(arr, &x, "early", x.worker, "gpu_ms", 1000, DAY "21:00:00Z", DAY "21:01:00Z");
    add_event(arr, &x, "sneak", x.other, "gpu_ms", 2000, DAY "21:00:00Z", DAY "21:01:00Z");
    expect_batch(arr, "pending,pending");
    expect_scalar(HOURLY, x.user, "gpu_ms", "none");
    expect_scalar("SELECT count(*)::text FROM billing.usage_pending WHERE job_id = $1", x.job, NULL,
                  "2");
    /* the lease arrives; the same worker's next event is recorded, another's refused */
    lease(&x, x.worker);
    lease(&x, x.other); /* a second lease for the same attempt: the first one stands */
    arr = cJSON_CreateArray();
    add_event(arr, &x, "late", x.worker, "gpu_ms", 3000, DAY "21:01:00Z", DAY "21:02:00Z");
    add_event(arr, &x, "other", x.other, "gpu_ms", 4000, DAY "21:01:00Z", DAY "21:02:00Z");
    add_event(arr, &x, "disk", NULL, "storage_byte_hours", 5000, DAY "21:00:00Z", DAY "22:00:00Z");
    expect_batch(arr, "recorded,recorded,refused"); /* ids: disk, late, other */
    expect_scalar(HOURLY, x.user, "gpu_ms", "3000");
    expect_scalar(HOURLY, x.user, "storage_byte_hours", "5000");
    expect_scalar(JOBS, x.job, "storage_byte_hours", "none"); /* not a job cost */
    expect_scalar("SELECT reason FROM billing.usage_refused WHERE worker_id = $1", x.other, NULL,
                  "not_leased");
}

static void test_sweep(void **state)
{
    struct ids x;
    cJSON *arr;
    PGresult *res;
    const char *p[2] = {"3600", "1000"};
    int i, recorded = 0, refused = 0;

    nf_test_skip_unless(conn != NULL);
    ids_new(&x);
    arr = cJSON_CreateArray();
    add_event(arr, &x, "p1", x.worker, "output_tokens", 10, DAY "21:00:00Z", DAY "21:01:00Z");
    add_event(arr, &x, "p2", x.other, "output_tokens", 20, DAY "21:00:00Z", DAY "21:01:00Z");
    expect_batch(arr, "pending,pending");
    lease(&x, x.worker);
    res = nf_test_pg_run(conn, bill_sweep_sql, 2, p);
    for (i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 2), x.job) != 0)
            continue; /* other tests' leftovers */
        recorded += strcmp(PQgetvalue(res, i, 1), "recorded") == 0;
        refused += strcmp(PQgetvalue(res, i, 1), "refused") == 0;
    }
    PQclear(res);
    assert_int_equal(recorded, 1);
    assert_int_equal(refused, 1);
    expect_scalar(HOURLY, x.user, "output_tokens", "10");
    expect_scalar("SELECT count(*)::text FROM billing.usage_pending WHERE job_id = $1", x.job, NULL,
                  "0");
    /* a sweep again finds nothing of this job */
    res = nf_test_pg_run(conn, bill_sweep_sql, 2, p);
    for (i = 0; i < PQntuples(res); i++)
        assert_string_not_equal(PQgetvalue(res, i, 2), x.job);
    PQclear(res);
    expect_scalar(HOURLY, x.user, "output_tokens", "10");
    /* without any lease, the wait (here 0 s) refuses */
    ids_new(&x);
    arr = cJSON_CreateArray();
    add_event(arr, &x, "orphan", x.worker, "gpu_ms", 5, DAY "21:00:00Z", DAY "21:01:00Z");
    expect_batch(arr, "pending");
    p[0] = "0";
    nf_test_pg_exec(conn, bill_sweep_sql, 2, p);
    expect_scalar("SELECT reason FROM billing.usage_refused WHERE job_id = $1", x.job, NULL,
                  "lease_timeout");
    expect_scalar(HOURLY, x.user, "gpu_ms", "none");
}

static void test_effects_query(void **state)
{
    struct ids x;
    cJSON *arr;
    char jobs[128], users[128], limit[] = "50000";
    const char *p[4] = {jobs, users, "2026-11-01T00:00:00Z", "2026-11-01"};
    const char *b[2];
    PGresult *res;
    long long total;
    int i, first = -1, last = -1, ufirst = -1, ulast = -1;

    nf_test_skip_unless(conn != NULL);
    ids_new(&x);
    lease(&x, x.worker);
    arr = cJSON_CreateArray();
    add_event(arr, &x, "g", x.worker, "gpu_ms", 3600000, DAY "21:00:00Z",
              DAY "22:00:00Z"); /* $2.50 */
    add_event(arr, &x, "o", x.worker, "output_tokens", 1234, DAY "21:00:00Z",
              DAY "21:01:00Z"); /* $0.03702 */
    add_event(arr, &x, "s", NULL, "storage_byte_hours", 1000000000, DAY "21:00:00Z",
              DAY "22:00:00Z"); /* 27 micro-USD, the user's not the job's */
    expect_batch(arr, "recorded,recorded,recorded");
    b[0] = x.user;
    b[1] = limit;
    nf_test_pg_exec(conn,
                    "INSERT INTO billing.budgets (user_id, monthly_limit_micros)"
                    " VALUES ($1, $2::bigint)",
                    2, b);
    snprintf(jobs, sizeof(jobs), "[\"%s\"]", x.job);
    snprintf(users, sizeof(users), "[\"%s\"]", x.user);
    res = nf_test_pg_run(conn, bill_effects_sql, 4, p);
    for (i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 0), "job") == 0) {
            first = first < 0 ? i : first;
            last = i + 1;
        } else {
            ufirst = ufirst < 0 ? i : ufirst;
            ulast = i + 1;
        }
    }
    assert_true(first >= 0 && ufirst >= 0);
    assert_int_equal(bill_rows_cost(res, first, last, &total), 0);
    assert_int_equal(total, 2500000 + 37020);
    assert_int_equal(bill_rows_cost(res, ufirst, ulast, &total), 0);
    /* the month's spending includes storage (and only this month's hours) */
    assert_int_equal(total, 2500000 + 37020 + 27);
    assert_string_equal(PQgetvalue(res, ufirst, PQfnumber(res, "limit_micros")), "50000");
    PQclear(res);
}

/* An attempt's end as consume_events.c records it; count NULL: ended by the platform. */
static void end_attempt(const struct ids *x, const char *attempt, const char *count)
{
    const char *p[BILL_ATTEMPT_NPARAMS] = {x->job, attempt, x->user, count};

    nf_test_pg_exec(conn, bill_attempt_sql, BILL_ATTEMPT_NPARAMS, p);
}

/* The close transaction of effects.c for x's job; returns "kind:attempt:why|event,...". */
static char *close_job(const struct ids *x, const char *wait)
{
    char jobs[128], out[1024] = "";
    const char *p[2] = {jobs, wait};
    PGresult *res;
    int i;

    snprintf(jobs, sizeof(jobs), "[\"%s\"]", x->job);
    nf_test_pg_exec(conn, "BEGIN", 0, NULL);
    nf_test_pg_exec(conn, bill_close_lock_sql, 1, p);
    res = nf_test_pg_run(conn, bill_close_sql, 2, p);
    nf_test_pg_exec(conn, "COMMIT", 0, NULL);
    for (i = 0; i < PQntuples(res); i++) {
        char item[160];

        snprintf(item, sizeof(item), "%s%s:%s:%s", i ? "," : "", PQgetvalue(res, i, 0),
                 PQgetvalue(res, i, 2),
                 PQgetisnull(res, i, 3) ? PQgetvalue(res, i, 4) : PQgetvalue(res, i, 3));
        strcat(out, item);
    }
    PQclear(res);
    return strdup(out);
}

static void expect_close(const struct ids *x, const char *wait, const char *want)
{
    char *got = close_job(x, wait);

    assert_string_equal(got, want);
    free(got);
}

/* The effects query's job row for x: "user cost attempts_closed". */
static char *job_effect(const struct ids *x)
{
    char jobs[128], out[256];
    const char *p[4] = {jobs, "[]", "2026-11-01T00:00:00Z", "2026-11-01"};
    PGresult *res;
    long long total;

    snprintf(jobs, sizeof(jobs), "[\"%s\"]", x->job);
    res = nf_test_pg_run(conn, bill_effects_sql, 4, p);
    assert_true(PQntuples(res) >= 1);
    assert_int_equal(bill_rows_cost(res, 0, PQntuples(res), &total), 0);
    snprintf(out, sizeof(out), "%s %lld %s",
             strcmp(PQgetvalue(res, 0, 2), x->user) == 0 ? "user" : PQgetvalue(res, 0, 2), total,
             PQgetvalue(res, 0, PQfnumber(res, "attempts_closed")));
    PQclear(res);
    return strdup(out);
}

static void expect_effect(const struct ids *x, const char *want)
{
    char *got = job_effect(x);

    assert_string_equal(got, want);
    free(got);
}

static void test_attempt_close(void **state)
{
    struct ids x;
    cJSON *arr;
    const char *p[1];

    nf_test_skip_unless(conn != NULL);
    ids_new(&x);
    lease(&x, x.worker);
    arr = cJSON_CreateArray();
    add_event(arr, &x, "w0", x.worker, "gpu_ms", 3600000, "2026-11-28T21:00:00Z",
              "2026-11-28T22:00:00Z"); /* $2.50 */
    expect_batch(arr, "recorded");
    /* the worker says it published 2 events: one is missing, nothing closes */
    end_attempt(&x, "1", "2");
    end_attempt(&x, "1", NULL); /* a later end of the same attempt (first wins) */
    expect_close(&x, "3600", "");
    expect_effect(&x, "user 2500000 0");
    /* the second arrives: complete, closed */
    arr = cJSON_CreateArray();
    add_event(arr, &x, "w1", x.worker, "output_tokens", 1234, "2026-11-28T21:00:00Z",
              "2026-11-28T21:01:00Z"); /* $0.03702 */
    expect_batch(arr, "recorded");
    expect_close(&x, "3600", "closed:1:complete");
    expect_close(&x, "3600", ""); /* closing again: nothing */
    expect_effect(&x, "user 2537020 1");
    /* after the close: a redelivery is a duplicate, anything new is refused */
    arr = cJSON_CreateArray();
    add_event(arr, &x, "w1", x.worker, "output_tokens", 1234, "2026-11-28T21:00:00Z",
              "2026-11-28T21:01:00Z");
    add_event(arr, &x, "w2", x.worker, "gpu_ms", 1000, "2026-11-28T21:00:00Z",
              "2026-11-28T21:01:00Z");
    expect_batch(arr, "duplicate,closed");
    expect_scalar("SELECT reason FROM billing.usage_refused WHERE job_id = $1", x.job, NULL,
                  "attempt_closed");
    expect_effect(&x, "user 2537020 1");

    /* attempt 2: usage parked for want of a lease, then the platform ends the attempt (no
     * count): closed at once, the parked usage refused with it */
    arr = cJSON_CreateArray();
    add_event_at(arr, &x, "a2", x.worker, 2, "gpu_ms", 5000, "2026-11-28T21:10:00Z",
                 "2026-11-28T21:11:00Z");
    expect_batch(arr, "pending");
    end_attempt(&x, "2", NULL);
    {
        char want[160];

        snprintf(want, sizeof(want), "closed:2:ended,refused:2:use_a2_%s", x.job);
        expect_close(&x, "3600", want);
    }
    expect_scalar("SELECT count(*)::text FROM billing.usage_pending WHERE job_id = $1", x.job, NULL,
                  "0");
    expect_effect(&x, "user 2537020 2");

    /* a job whose worker published nothing (0 events): closed at its end; cost 0 */
    ids_new(&x);
    end_attempt(&x, "1", "0");
    expect_effect(&x, "user 0 0");
    expect_close(&x, "3600", "closed:1:complete");
    expect_effect(&x, "user 0 1");

    /* a usage event that never comes: open until the close wait, then closed anyway */
    ids_new(&x);
    end_attempt(&x, "1", "3");
    expect_close(&x, "3600", "");
    p[0] = x.job;
    nf_test_pg_exec(conn,
                    "UPDATE billing.attempts SET ended_at = now() - interval '1 hour'"
                    " WHERE job_id = $1",
                    1, p);
    {
        const char *q[2] = {"600", "100000"};
        PGresult *res = nf_test_pg_run(conn, bill_overdue_sql, 2, q);
        int i, found = 0;

        for (i = 0; i < PQntuples(res); i++)
            found += strcmp(PQgetvalue(res, i, 0), x.job) == 0;
        PQclear(res);
        assert_int_equal(found, 1);
    }
    expect_close(&x, "600", "closed:1:timeout");
    /* attempt 2 never ended: attempts 1..1 closed */
    expect_effect(&x, "user 0 1");
}

/* billing.cell_cost_micros is bill_cost_micros: the half-up boundary, big products. */
/* A serving deployment's GPU time (job_type deploy, attempt null, deployment_id), metered
 * by the worker serving it: recorded when that worker leased the job (any attempt), even
 * after the attempt closed; waiting like any event before the lease is seen (attempt null
 * in usage_pending: 0006), recorded by the sweep once it is; another worker's refused. It
 * never counts towards the attempt's usage. */
static void add_serving(cJSON *arr, const struct ids *x, const char *tag, const char *worker,
                        long long q, const char *start, const char *end)
{
    char buf[1024], id[96];
    const char *why = NULL;
    struct bill_usage u;
    cJSON *ev;

    snprintf(id, sizeof(id), "use_%s_%s", tag, x->job);
    snprintf(buf, sizeof(buf),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"t\","
             "\"type\":\"forge.usage.recorded\",\"subject\":\"%s\",\"data\":{\"user_id\":\"%s\","
             "\"job_id\":\"%s\",\"job_type\":\"deploy\",\"attempt\":null,\"worker_id\":\"%s\","
             "\"deployment_id\":\"dep-0123456789ab\",\"meter\":\"gpu_ms\",\"quantity\":%lld,"
             "\"window_start\":\"%s\",\"window_end\":\"%s\"}}",
             id, x->user, x->user, x->job, worker, q, start, end);
    ev = cJSON_Parse(buf);
    if (bill_usage_parse(ev, &u, &why) < 0)
        fail_msg("serving usage does not parse: %s", why);
    cJSON_AddItemToArray(arr, bill_usage_json(&u));
    cJSON_Delete(ev);
}

static void test_serving_gpu_time(void **state)
{
    struct ids x;
    cJSON *arr;
    const char *p[2] = {"3600", "1000"};

    nf_test_skip_unless(conn != NULL);
    ids_new(&x);
    arr = cJSON_CreateArray();
    add_serving(arr, &x, "s0", x.worker, 2000, DAY "21:00:00Z", DAY "21:00:02Z");
    expect_batch(arr, "pending");
    expect_scalar("SELECT count(*)::text FROM billing.usage_pending WHERE job_id = $1"
                  " AND attempt IS NULL",
                  x.job, NULL, "1");
    lease(&x, x.worker);
    nf_test_pg_exec(conn, bill_sweep_sql, 2, p);
    expect_scalar(JOBS, x.job, "gpu_ms", "2000");
    /* the deploy attempt ends (its own 1 usage event) and closes */
    arr = cJSON_CreateArray();
    add_event(arr, &x, "a1", x.worker, "gpu_ms", 500, DAY "20:59:59Z", DAY "21:00:00Z");
    expect_batch(arr, "recorded");
    end_attempt(&x, "1", "1");
    expect_close(&x, "600", "closed:1:complete");
    /* serving windows after the close: recorded, redelivery a duplicate, another worker
     * refused */
    arr = cJSON_CreateArray();
    add_serving(arr, &x, "s1", x.worker, 2000, DAY "21:00:02Z", DAY "21:00:04Z");
    add_serving(arr, &x, "s1", x.worker, 2000, DAY "21:00:02Z", DAY "21:00:04Z");
    add_serving(arr, &x, "s2", x.other, 2000, DAY "21:00:02Z", DAY "21:00:04Z");
    expect_batch(arr, "recorded,pending");
    arr = cJSON_CreateArray();
    add_serving(arr, &x, "s1", x.worker, 2000, DAY "21:00:02Z", DAY "21:00:04Z");
    expect_batch(arr, "duplicate");
    expect_scalar(JOBS, x.job, "gpu_ms", "4500");
    p[0] = "0";
    nf_test_pg_exec(conn, bill_sweep_sql, 2, p);
    expect_scalar("SELECT reason FROM billing.usage_refused WHERE job_id = $1", x.job, NULL,
                  "lease_timeout");
    expect_scalar("SELECT count(*)::text FROM billing.usage_events WHERE job_id = $1"
                  " AND attempt = 1",
                  x.job, NULL, "1");
}

static void test_cell_cost_is_bill_cost_micros(void **state)
{
    static const struct {
        unsigned long long q;
        struct bill_rate rate;
    } cases[] = {
        {1, BILL_GPU_RATE},
        {2, BILL_GPU_RATE},
        {3, BILL_GPU_RATE},
        {7, {1, 2}}, /* 3.5 -> 4 */
        {5, {1, 2}},
        {1, {1, 3}},
        {2, {1, 3}},
        {1234, BILL_OUTPUT_RATE},
        {999999, BILL_INPUT_RATE},
        {1000000000, BILL_STORAGE_RATE},
        {18250000, BILL_STORAGE_RATE}, /* exactly 0.5 micro-USD: up */
        {18249999, BILL_STORAGE_RATE},
        {10000000000ULL, BILL_GPU_RATE},
        {100000000000ULL, BILL_OUTPUT_RATE},
        {9000000000000000ULL, BILL_STORAGE_RATE},
        {0, BILL_GPU_RATE},
    };
    char q[32], price[32], per[32];
    const char *p[3] = {q, price, per};
    long long want;
    size_t i;

    nf_test_skip_unless(conn != NULL);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got, w[32];

        assert_int_equal(bill_cost_micros(cases[i].q, &cases[i].rate, &want), 0);
        snprintf(q, sizeof(q), "%llu", cases[i].q);
        snprintf(price, sizeof(price), "%lld", cases[i].rate.price_micros);
        snprintf(per, sizeof(per), "%lld", cases[i].rate.per_units);
        snprintf(w, sizeof(w), "%lld", want);
        got = nf_test_pg_one(conn, "SELECT billing.cell_cost_micros($1::numeric, $2, $3)::text", 3,
                             p);
        assert_non_null(got);
        if (strcmp(got, w) != 0)
            fail_msg("%s x %s / %s: SQL %s, C %s", q, price, per, got, w);
        free(got);
    }
}

/* Three jobs of 1 GPU-ms each (0.69 micro-USD, 1 each) and one of 2 ms spread over two
 * hours: the jobs cost 1 + 1 + 1 + 2 = 5; the line of 5 ms priced once would be 3. */
static void test_job_costs_add_up_to_the_summary(void **state)
{
    struct ids x[4];
    char jobs[512] = "[", user[NF_ID_MAX];
    const char *sp[3] = {user, "2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z"};
    const char *ep[4] = {jobs, "[]", "2026-11-01T00:00:00Z", "2026-11-01"};
    long long sum_jobs = 0, cost, line_total = 0;
    PGresult *res;
    cJSON *arr;
    int i, row, first;

    nf_test_skip_unless(conn != NULL);
    ids_new(&x[0]);
    snprintf(user, sizeof(user), "%s", x[0].user);
    for (i = 0; i < 4; i++) {
        if (i)
            ids_new(&x[i]);
        snprintf(x[i].user, sizeof(x[i].user), "%s", user);
        lease(&x[i], x[i].worker);
        arr = cJSON_CreateArray();
        add_event(arr, &x[i], "a", x[i].worker, "gpu_ms", 1, "2026-11-28T21:10:00Z",
                  "2026-11-28T21:11:00Z");
        if (i == 3)
            add_event(arr, &x[i], "b", x[i].worker, "gpu_ms", 1, "2026-11-28T22:10:00Z",
                      "2026-11-28T22:11:00Z");
        expect_batch(arr, i == 3 ? "recorded,recorded" : "recorded");
        strcat(jobs, i ? ",\"" : "\"");
        strcat(jobs, x[i].job);
        strcat(jobs, "\"");
    }
    strcat(jobs, "]");
    res = nf_test_pg_run(conn, bill_effects_sql, 4, ep);
    for (first = 0; first < PQntuples(res); first = row) {
        for (row = first + 1; row < PQntuples(res); row++)
            if (strcmp(PQgetvalue(res, row, 1), PQgetvalue(res, first, 1)) != 0)
                break;
        assert_int_equal(bill_rows_cost(res, first, row, &cost), 0);
        assert_int_equal(cost, strcmp(PQgetvalue(res, first, 1), x[3].job) == 0 ? 2 : 1);
        sum_jobs += cost;
    }
    PQclear(res);
    assert_int_equal(sum_jobs, 5);
    res = nf_test_pg_run(conn, bill_summary_sql, 3, sp);
    assert_int_equal(PQntuples(res), 1); /* one job type, one meter, one price */
    assert_string_equal(PQgetvalue(res, 0, PQfnumber(res, "quantity")), "5");
    assert_int_equal(bill_rows_cost(res, 0, 1, &line_total), 0);
    PQclear(res);
    assert_int_equal(line_total, sum_jobs);
    assert_int_equal(bill_cost_micros(5, &(struct bill_rate)BILL_GPU_RATE, &cost), 0);
    assert_int_equal(cost, 3); /* what pricing the line once would have said */
}

/* The ingest's shared locks and the close's exclusive ones are plain statements. */
static void test_lock_statements(void **state)
{
    const char *p[1] = {"[{\"job_id\":\"job_a\"},{\"job_id\":\"job_b\"},{\"job_id\":\"job_a\"}]"};
    const char *q[1] = {"[\"job_a\",\"job_b\"]"};
    PGresult *res;

    nf_test_skip_unless(conn != NULL);
    nf_test_pg_exec(conn, "BEGIN", 0, NULL);
    res = nf_test_pg_run(conn, bill_ingest_lock_sql, 1, p);
    assert_int_equal(PQntuples(res), 2);
    PQclear(res);
    nf_test_pg_exec(conn, "COMMIT", 0, NULL);
    nf_test_pg_exec(conn, "BEGIN", 0, NULL);
    res = nf_test_pg_run(conn, bill_close_lock_sql, 1, q);
    assert_int_equal(PQntuples(res), 2);
    PQclear(res);
    nf_test_pg_exec(conn, "COMMIT", 0, NULL);
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

    nf_test_skip_unless(conn != NULL);
    for (i = 0; i < 4; i++) {
        snprintf(price, sizeof(price), "%lld", want[i].rate.price_micros);
        snprintf(per, sizeof(per), "%lld", want[i].rate.per_units);
        p[0] = want[i].meter;
        p[1] = price;
        p[2] = per;
        res = nf_test_pg_run(conn,
                             "SELECT count(*) FROM billing.price_book WHERE meter = $1 AND"
                             " price_micros = $2::bigint AND per_units = $3::bigint AND"
                             " effective_from = '1970-01-01T00:00:00Z'",
                             3, p);
        if (strcmp(PQgetvalue(res, 0, 0), "1") != 0)
            fail_msg("price_book has no seeded row %s %s/%s", want[i].meter, price, per);
        PQclear(res);
    }
}

int main(void)
{
    return NF_TEST_RUN_GROUP(setup, teardown, test_duplicates_change_nothing, test_lease_rule,
                             test_sweep, test_effects_query, test_attempt_close,
                             test_lock_statements, test_cell_cost_is_bill_cost_micros,
                             test_job_costs_add_up_to_the_summary, test_price_book_matches_header,
                             test_serving_gpu_time);
}
