/*
 * Integration (needs NF_TEST_PG_DSN): attempts that fail through the platform's fault
 * (worker_lost, infra, preempted) are not charged, on a real Postgres with the billing
 * migrations (0007_waived_attempts.sql) and the statements of consume_events.c,
 * consume_usage.c, sweep.c and effects.c:
 *   - usage recorded before the end is priced until the attempt closes; the close moves it
 *     out of the job's cells (usage_jobs) into usage_waived, once;
 *   - usage arriving after a waived close is recorded as waived (not refused), a
 *     redelivery is a duplicate; pending usage of a waived attempt is not refused by the
 *     close, the sweep records it as waived once its lease shows;
 *   - the end may come before the usage (a count still missing): the usage is recorded,
 *     then moved when the count completes;
 *   - user_error and timeout attempts stay charged;
 *   - the job's cost (effects query), the summary and the usage series hold only the
 *     charged attempts, and metered = charged + waived per user, meter and hour.
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

struct ids {
    char user[NF_ID_MAX], job[NF_ID_MAX], worker[NF_ID_MAX], rescuer[NF_ID_MAX];
};

static void ids_new(struct ids *x)
{
    nf_id_new("usr", x->user, sizeof(x->user));
    nf_id_new("job", x->job, sizeof(x->job));
    nf_id_new("wrk", x->worker, sizeof(x->worker));
    nf_id_new("wrk", x->rescuer, sizeof(x->rescuer));
}

/* One usage event of x's job for attempt `attempt` in DAY's 21:00 hour, validated by the
 * real parser, appended to arr. */
static void add_event(cJSON *arr, const struct ids *x, const char *tag, const char *worker,
                      int attempt, const char *meter, long long q)
{
    char buf[1024], id[96];
    const char *why = NULL;
    struct bill_usage u;
    cJSON *ev;

    snprintf(id, sizeof(id), "use_%s_%s", tag, x->job);
    snprintf(buf, sizeof(buf),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"t\","
             "\"type\":\"forge.usage.recorded\",\"subject\":\"%s\",\"data\":{\"user_id\":\"%s\","
             "\"job_id\":\"%s\",\"job_type\":\"train\",\"attempt\":%d,\"worker_id\":\"%s\","
             "\"meter\":\"%s\",\"quantity\":%lld,\"window_start\":\"" DAY "21:00:00Z\","
             "\"window_end\":\"" DAY "21:59:00Z\"}}",
             id, x->user, x->user, x->job, attempt, worker, meter, q);
    ev = cJSON_Parse(buf);
    if (bill_usage_parse(ev, &u, &why) < 0)
        fail_msg("usage does not parse: %s", why);
    cJSON_AddItemToArray(arr, bill_usage_json(&u));
    cJSON_Delete(ev);
}

/* Runs the batch statement on arr (consumed); asserts "verdict,verdict,..." in id order. */
static void expect_batch(cJSON *arr, const char *want)
{
    char *text = nf_json_print(arr), out[1024] = "";
    const char *p[1] = {text};
    PGresult *res = nf_test_pg_run(conn, bill_batch_sql, 1, p);
    int i;

    for (i = 0; i < PQntuples(res); i++) {
        strcat(out, i ? "," : "");
        strcat(out, PQgetvalue(res, i, 1));
    }
    PQclear(res);
    free(text);
    cJSON_Delete(arr);
    assert_string_equal(out, want);
}

static void batch1(const struct ids *x, const char *tag, const char *worker, int attempt,
                   const char *meter, long long q, const char *want)
{
    cJSON *arr = cJSON_CreateArray();

    add_event(arr, x, tag, worker, attempt, meter, q);
    expect_batch(arr, want);
}

static void expect_scalar(const char *sql, const char *a, const char *b, const char *want)
{
    const char *p[2] = {a, b};
    char *got = nf_test_pg_one(conn, sql, b ? 2 : 1, p);

    assert_string_equal(got ? got : "none", want);
    free(got);
}

#define JOBS "SELECT sum(quantity)::text FROM billing.usage_jobs WHERE job_id = $1 AND meter = $2"
#define WAIVED                                                                                     \
    "SELECT sum(quantity)::text FROM billing.usage_waived WHERE job_id = $1 AND meter = $2"
#define HOURLY                                                                                     \
    "SELECT sum(quantity)::text FROM billing.usage_hourly WHERE user_id = $1 AND meter = $2"

static void lease(const struct ids *x, const char *attempt, const char *worker)
{
    const char *p[4] = {x->job, attempt, worker, x->user};

    nf_test_pg_exec(conn, bill_lease_sql, 4, p);
}

/* An attempt's end as consume_events.c records it (its class decides the charge). */
static void end_attempt(const struct ids *x, const char *attempt, const char *count,
                        const char *cls)
{
    const char *p[BILL_ATTEMPT_NPARAMS] = {
        x->job, attempt, x->user, count, cls, bill_class_waived(cls) ? "true" : "false"};

    nf_test_pg_exec(conn, bill_attempt_sql, BILL_ATTEMPT_NPARAMS, p);
}

/* The close transaction of effects.c; asserts "attempt:why:waived,..." of what closed. */
static void expect_close(const struct ids *x, const char *want)
{
    char jobs[128], out[1024] = "";
    const char *p[2] = {jobs, "3600"};
    PGresult *res;
    int i;

    snprintf(jobs, sizeof(jobs), "[\"%s\"]", x->job);
    nf_test_pg_exec(conn, "BEGIN", 0, NULL);
    nf_test_pg_exec(conn, bill_close_lock_sql, 1, p);
    res = nf_test_pg_run(conn, bill_close_sql, 2, p);
    nf_test_pg_exec(conn, "COMMIT", 0, NULL);
    for (i = 0; i < PQntuples(res); i++) {
        char item[160];

        snprintf(item, sizeof(item), "%s%s:%s:%s:%s", i ? "," : "", PQgetvalue(res, i, 0),
                 PQgetvalue(res, i, 2),
                 PQgetisnull(res, i, 3) ? PQgetvalue(res, i, 4) : PQgetvalue(res, i, 3),
                 PQgetvalue(res, i, PQfnumber(res, "waived")));
        strcat(out, item);
    }
    PQclear(res);
    assert_string_equal(out, want);
}

/* The effects query's job row for x: "cost attempts_closed". */
static void expect_effect(const struct ids *x, const char *want)
{
    char jobs[128], out[256];
    const char *p[4] = {jobs, "[]", "2026-11-01T00:00:00Z", "2026-11-01"};
    PGresult *res;
    long long total;

    snprintf(jobs, sizeof(jobs), "[\"%s\"]", x->job);
    res = nf_test_pg_run(conn, bill_effects_sql, 4, p);
    assert_true(PQntuples(res) >= 1);
    assert_int_equal(bill_rows_cost(res, 0, PQntuples(res), &total), 0);
    snprintf(out, sizeof(out), "%lld %s", total,
             PQgetvalue(res, 0, PQfnumber(res, "attempts_closed")));
    PQclear(res);
    assert_string_equal(out, want);
}

/* The summary of x's user for DAY: "meter:quantity:cost,..." over its meter lines. */
static void expect_summary(const struct ids *x, const char *want)
{
    const char *p[3] = {x->user, DAY "00:00:00Z", "2026-11-29T00:00:00Z"};
    PGresult *res = nf_test_pg_run(conn, bill_summary_sql, 3, p);
    char out[512] = "";
    int i;

    for (i = 0; i < PQntuples(res); i++) {
        char item[128];

        snprintf(item, sizeof(item), "%s%s:%s:%s", i ? "," : "",
                 PQgetvalue(res, i, PQfnumber(res, "meter")),
                 PQgetvalue(res, i, PQfnumber(res, "quantity")),
                 PQgetvalue(res, i, PQfnumber(res, "cost_micros")));
        strcat(out, item);
    }
    PQclear(res);
    assert_string_equal(out, want);
}

/* metered (usage_hourly) = charged (usage_jobs) + waived (usage_waived) for x's user. */
static void expect_balanced(const struct ids *x)
{
    expect_scalar("SELECT (SELECT coalesce(sum(quantity), 0) FROM billing.usage_hourly"
                  "  WHERE user_id = $1 AND meter <> 'storage_byte_hours')"
                  " - (SELECT coalesce(sum(quantity), 0) FROM billing.usage_jobs"
                  "  WHERE user_id = $1)"
                  " - (SELECT coalesce(sum(quantity), 0) FROM billing.usage_waived"
                  "  WHERE user_id = $1)",
                  x->user, NULL, "0");
}

/* Attempt 1 lost with its worker after 2 windows; a late window of it arrives after the
 * close; attempt 2 on another worker succeeds. Only attempt 2 is charged. */
static void test_lost_attempt_is_free(void **state)
{
    struct ids x;

    nf_test_skip_unless(conn != NULL);
    ids_new(&x);
    lease(&x, "1", x.worker);
    batch1(&x, "a1w0", x.worker, 1, "gpu_ms", 3600000, "recorded"); /* $2.50 */
    batch1(&x, "a1w1", x.worker, 1, "gpu_ms", 1800000, "recorded"); /* $1.25 */
    /* until the attempt's end is known its usage is priced */
    expect_effect(&x, "3750000 0");
    /* the worker-manager reports it lost (no count): closed at once, waived */
    end_attempt(&x, "1", NULL, "worker_lost");
    end_attempt(&x, "1", "2", NULL); /* a later end of the same attempt: first wins */
    expect_close(&x, "closed:1:ended:true");
    expect_close(&x, "");
    expect_effect(&x, "0 1");
    expect_scalar(JOBS, x.job, "gpu_ms", "0");
    expect_scalar(WAIVED, x.job, "gpu_ms", "5400000");
    expect_scalar(HOURLY, x.user, "gpu_ms", "5400000"); /* still metered */
    /* a window the dead worker had queued arrives late: waived, not refused */
    batch1(&x, "a1w2", x.worker, 1, "gpu_ms", 600000, "waived");
    batch1(&x, "a1w2", x.worker, 1, "gpu_ms", 600000, "duplicate");
    batch1(&x, "a1xx", x.rescuer, 1, "gpu_ms", 7, "refused"); /* not its lease */
    expect_scalar(WAIVED, x.job, "gpu_ms", "6000000");
    expect_scalar(JOBS, x.job, "gpu_ms", "0");
    expect_effect(&x, "0 1");
    expect_scalar("SELECT count(*)::text FROM billing.usage_refused WHERE job_id = $1"
                  " AND reason = 'attempt_closed'",
                  x.job, NULL, "0");
    /* attempt 2 on the rescuer: charged */
    lease(&x, "2", x.rescuer);
    batch1(&x, "a2w0", x.rescuer, 2, "gpu_ms", 360000, "recorded");      /* $0.25 */
    batch1(&x, "a2tk", x.rescuer, 2, "output_tokens", 1000, "recorded"); /* $0.03 */
    end_attempt(&x, "2", "2", NULL);
    expect_close(&x, "closed:2:complete:false");
    expect_effect(&x, "280000 2");
    expect_summary(&x, "gpu_ms:360000:250000,output_tokens:1000:30000");
    expect_balanced(&x);
    /* the attempt's class is kept for operators */
    expect_scalar("SELECT string_agg(attempt || ':' || coalesce(error_class, '-') || ':' ||"
                  " waived, ',' ORDER BY attempt) FROM billing.attempts WHERE job_id = $1",
                  x.job, NULL, "1:worker_lost:true,2:-:false");
}

/* The worker reports an infra failure with its count before its usage arrives: the usage
 * is recorded (priced) until the count completes, then moved by the close. */
static void test_end_before_usage(void **state)
{
    struct ids x;

    nf_test_skip_unless(conn != NULL);
    ids_new(&x);
    lease(&x, "1", x.worker);
    end_attempt(&x, "1", "2", "infra");
    expect_close(&x, ""); /* 0 of 2 events */
    batch1(&x, "w0", x.worker, 1, "gpu_ms", 1000, "recorded");
    expect_close(&x, "");
    batch1(&x, "tk", x.worker, 1, "input_tokens", 500, "recorded");
    expect_close(&x, "closed:1:complete:true");
    expect_scalar(JOBS, x.job, "gpu_ms", "0");
    expect_scalar(JOBS, x.job, "input_tokens", "0");
    expect_scalar(WAIVED, x.job, "input_tokens", "500");
    expect_effect(&x, "0 1");
    expect_summary(&x, ""); /* emptied cells are no lines */
    expect_balanced(&x);

    /* preempted: waived as well; pending usage (lease not seen) survives the close and
     * the sweep records it as waived once the lease shows */
    ids_new(&x);
    batch1(&x, "p0", x.worker, 1, "gpu_ms", 2000, "pending");
    end_attempt(&x, "1", NULL, "preempted");
    expect_close(&x, "closed:1:ended:true");
    expect_scalar("SELECT count(*)::text FROM billing.usage_pending WHERE job_id = $1", x.job, NULL,
                  "1");
    lease(&x, "1", x.worker);
    {
        const char *p[2] = {"3600", "1000"};
        PGresult *res = nf_test_pg_run(conn, bill_sweep_sql, 2, p);
        int i, waived = 0;

        for (i = 0; i < PQntuples(res); i++)
            if (strcmp(PQgetvalue(res, i, 2), x.job) == 0)
                waived += strcmp(PQgetvalue(res, i, 1), "waived") == 0;
        PQclear(res);
        assert_int_equal(waived, 1);
    }
    expect_scalar(WAIVED, x.job, "gpu_ms", "2000");
    expect_scalar(JOBS, x.job, "gpu_ms", "none");
    expect_effect(&x, "0 1");
    expect_balanced(&x);
}

/* The user's own failures are billed: user_error, timeout; so is a cancel. */
static void test_charged_classes(void **state)
{
    static const char *const classes[] = {"user_error", "timeout", NULL};
    struct ids x;
    size_t i;

    nf_test_skip_unless(conn != NULL);
    for (i = 0; i < 3; i++) {
        ids_new(&x);
        lease(&x, "1", x.worker);
        batch1(&x, "w0", x.worker, 1, "gpu_ms", 3600000, "recorded");
        end_attempt(&x, "1", NULL, classes[i]);
        expect_close(&x, "closed:1:ended:false");
        expect_effect(&x, "2500000 1");
        /* a late event of a charged closed attempt is still refused */
        batch1(&x, "w1", x.worker, 1, "gpu_ms", 5, "closed");
        expect_scalar(WAIVED, x.job, "gpu_ms", "none");
        expect_balanced(&x);
    }
}

int main(void)
{
    return NF_TEST_RUN_GROUP(setup, teardown, test_lost_attempt_is_free, test_end_before_usage,
                             test_charged_classes);
}
