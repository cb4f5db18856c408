/*
 * Integration (needs NF_TEST_PG_DSN): the one-statement state machine of
 * consume_events.c against the reference sched_state_decide(), for every status, event
 * type, attempt relation, failure class and attempts-left case; plus redelivery,
 * artifacts, unknown jobs and the requested insert. Skips cleanly without a database.
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
#include "nf_pg.h"
#include "nf_test.h"
#include "sched.h"

#define CUR 2
#define ART_ID_LEN 64

static PGconn *conn;

static int setup(void **state)
{
    if (nf_test_pg_open(&conn, "sched", NF_SOURCE_DIR "/services/scheduler/migrations") < 0)
        return -1;
    /* a thousand small commits: no need to wait for each flush */
    if (conn)
        nf_test_pg_exec(conn, "SET synchronous_commit = off", 0, NULL);
    return 0;
}

/*
 * The rows of this test go when it ends: the database is the test stack's, and a
 * scheduler started later would otherwise treat them as real jobs (its reconciler
 * dispatches queued jobs the worker-manager does not hold).
 */
static void drop_rows(void)
{
    nf_test_pg_exec(conn, "DELETE FROM sched.models WHERE user_id = 'usr_it'", 0, NULL);
    nf_test_pg_exec(conn, "DELETE FROM sched.artifacts WHERE user_id = 'usr_it'", 0, NULL);
    nf_test_pg_exec(conn,
                    "DELETE FROM sched.job_events WHERE job_id IN"
                    " (SELECT job_id FROM sched.jobs WHERE user_id = 'usr_it')",
                    0, NULL);
    nf_test_pg_exec(conn, "DELETE FROM sched.jobs WHERE user_id = 'usr_it'", 0, NULL);
}

static int teardown(void **state)
{
    if (conn)
        drop_rows();
    PQfinish(conn);
    conn = NULL;
    return 0;
}

static void new_job(const char *status, int attempt, int max_attempts, char *id, size_t len)
{
    char a[16], m[16];
    const char *p[5];

    nf_id_new("job", id, len);
    snprintf(a, sizeof(a), "%d", attempt);
    snprintf(m, sizeof(m), "%d", max_attempts);
    p[0] = id;
    p[1] = "usr_it";
    p[2] = status;
    p[3] = a;
    p[4] = m;
    nf_test_pg_exec(conn,
                    "INSERT INTO sched.jobs (job_id, user_id, job_type, status, attempt,"
                    " max_attempts) VALUES ($1, $2, 'generate', $3, $4::int, $5::int)",
                    5, p);
}

static cJSON *envelope(const char *ev_id, const char *type, const char *job, int attempt,
                       const char *extra)
{
    char buf[4096];

    snprintf(buf, sizeof(buf),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"test\",\"type\":\"forge.job.%s\","
             "\"time\":\"2026-11-28T21:00:00.000Z\",\"subject\":\"%s\",\"data\":{\"job_id\":\"%s\","
             "\"attempt\":%d%s}}",
             ev_id, type, job, job, attempt, extra ? extra : "");
    return cJSON_Parse(buf);
}

/* Runs the events statement; returns the result (caller clears). */
static PGresult *apply(const cJSON *ev)
{
    const char *params[SCHED_EVENTS_NPARAMS];
    struct sched_events_bufs bufs;
    struct sched_event e;
    const char *why = NULL;
    PGresult *res;

    if (sched_event_parse(ev, &e, &why) < 0)
        fail_msg("event does not parse: %s", why);
    assert_int_equal(sched_events_params(&e, 60, params, &bufs), 0);
    res = nf_test_pg_run(conn, sched_events_sql, SCHED_EVENTS_NPARAMS, params);
    sched_events_params_free(&bufs);
    return res;
}

static const char *val(const PGresult *res, const char *col)
{
    return nf_pg_val(res, 0, col);
}

static long count_events(const char *event_id)
{
    const char *p[1] = {event_id};
    char *v =
        nf_test_pg_one(conn, "SELECT count(*) FROM sched.job_events WHERE event_id = $1", 1, p);
    long n = atol(v);

    free(v);
    return n;
}

static const char *outcome_name(enum sched_outcome o)
{
    switch (o) {
    case SCHED_OUT_APPLY:
        return "apply";
    case SCHED_OUT_ECHO:
        return "echo";
    case SCHED_OUT_RECORD:
        return "record";
    default:
        return "ignore";
    }
}

static void check_one(enum sched_status s, enum sched_evtype t, int ev_attempt, const char *cls,
                      int max_attempts)
{
    static unsigned seq;
    struct sched_job_state cur = {s, CUR, max_attempts};
    struct sched_decision d;
    char job[NF_ID_MAX], ev_id[64], extra[160];
    const char *o, *st, *att;
    PGresult *res;
    cJSON *ev;

    new_job(sched_status_name(s), CUR, max_attempts, job, sizeof(job));
    snprintf(ev_id, sizeof(ev_id), "evt_it_%u_%s", ++seq, job + 4);
    extra[0] = '\0';
    if (t == SCHED_EV_PROGRESS)
        snprintf(extra, sizeof(extra), ",\"progress\":0.5");
    else if (cls)
        snprintf(extra, sizeof(extra),
                 ",\"error\":{\"code\":\"x\",\"message\":\"m\",\"class\":\"%s\"}", cls);
    ev = envelope(ev_id, sched_evtype_name(t), job, ev_attempt, extra);
    assert_int_equal(sched_state_decide(&cur, t, ev_attempt, sched_fail_class_parse(cls), &d), 0);

    res = apply(ev);
    assert_int_equal(PQntuples(res), 1);
    o = val(res, "outcome");
    st = val(res, "status");
    att = val(res, "attempt");
    if (strcmp(o, outcome_name(d.outcome)) != 0 || strcmp(st, sched_status_name(d.status)) != 0 ||
        atoi(att) != d.attempt)
        fail_msg("%s + %s(attempt %d, class %s, max %d): sql %s -> %s/%s, reference %s -> %s/%d",
                 sched_status_name(s), sched_evtype_name(t), ev_attempt, cls ? cls : "-",
                 max_attempts, o, st, att, outcome_name(d.outcome), sched_status_name(d.status),
                 d.attempt);
    /* stored exactly when not ignored */
    assert_int_equal(count_events(ev_id), d.outcome == SCHED_OUT_IGNORE ? 0 : 1);
    /* the version moves only when the row changes */
    assert_int_equal(atoi(val(res, "version")), d.outcome == SCHED_OUT_APPLY ? 2 : 1);
    if (d.outcome == SCHED_OUT_APPLY && sched_status_terminal(d.status))
        assert_non_null(val(res, "finished_at"));
    if (d.outcome == SCHED_OUT_APPLY && d.status == SCHED_QUEUED) {
        assert_null(val(res, "worker_id"));
        assert_null(val(res, "started_at"));
    }
    if (d.outcome == SCHED_OUT_APPLY && t == SCHED_EV_RUNNING)
        assert_non_null(val(res, "started_at"));
    PQclear(res);

    /* redelivery: a recorded event is a duplicate and changes nothing */
    res = apply(ev);
    if (d.outcome != SCHED_OUT_IGNORE)
        assert_string_equal(val(res, "outcome"), "duplicate");
    else
        assert_string_equal(val(res, "outcome"), "ignore");
    assert_string_equal(val(res, "status"), sched_status_name(d.status));
    assert_int_equal(atoi(val(res, "version")), d.outcome == SCHED_OUT_APPLY ? 2 : 1);
    PQclear(res);
    cJSON_Delete(ev);
}

static void test_sql_matches_reference(void **state)
{
    static const int rels[] = {CUR, CUR + 1, CUR - 1, CUR + 2};
    static const char *const classes[] = {NULL, "user_error", "infra", "worker_lost", "bogus"};
    int s, t, r, m;
    size_t c;

    nf_test_skip_unless(conn != NULL);
    for (s = 0; s < SCHED_NSTATUS; s++)
        for (t = 0; t < SCHED_NEVTYPE; t++)
            for (r = 0; r < 4; r++)
                for (m = CUR; m <= CUR + 1; m++) {
                    if (t != SCHED_EV_FAILED) {
                        /* only a failure depends on the attempts left */
                        if (m == CUR + 1)
                            check_one((enum sched_status)s, (enum sched_evtype)t, rels[r], NULL, m);
                        continue;
                    }
                    for (c = 0; c < sizeof(classes) / sizeof(classes[0]); c++)
                        check_one((enum sched_status)s, (enum sched_evtype)t, rels[r], classes[c],
                                  m);
                }
}

static void test_unknown_job(void **state)
{
    char job[NF_ID_MAX];
    PGresult *res;
    cJSON *ev;

    nf_test_skip_unless(conn != NULL);
    nf_id_new("job", job, sizeof(job));
    ev = envelope("evt_it_unknown", "running", job, 1, NULL);
    res = apply(ev);
    assert_int_equal(PQntuples(res), 0);
    assert_int_equal(count_events("evt_it_unknown"), 0);
    PQclear(res);
    cJSON_Delete(ev);
}

static void test_succeeded_artifacts(void **state)
{
    char job[NF_ID_MAX], art1[NF_ID_MAX], art2[NF_ID_MAX], extra[1024], ev_id[80];
    PGresult *res;
    cJSON *ev, *arts;

    nf_test_skip_unless(conn != NULL);
    new_job("running", 1, 3, job, sizeof(job));
    nf_id_new("art", art1, sizeof(art1));
    nf_id_new("art", art2, sizeof(art2));
    snprintf(extra, sizeof(extra),
             ",\"result\":{\"n\":1},\"artifacts\":["
             "{\"artifact_id\":\"%s\",\"name\":\"a\",\"kind\":\"dataset\",\"uri\":\"file:///a\","
             "\"bytes\":10},"
             "{\"artifact_id\":\"%s\",\"name\":\"b\",\"kind\":\"model\",\"uri\":\"file:///b\","
             "\"bytes\":20,\"sha256\":"
             "\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"},"
             "{\"artifact_id\":\"nope\",\"name\":\"c\",\"kind\":\"k\",\"uri\":\"u\",\"bytes\":1}]",
             art1, art2);
    snprintf(ev_id, sizeof(ev_id), "evt_it_succ_%s", job + 4);
    ev = envelope(ev_id, "succeeded", job, 1, extra);
    res = apply(ev);
    assert_string_equal(val(res, "outcome"), "apply");
    assert_string_equal(val(res, "status"), "succeeded");
    assert_string_equal(val(res, "result"), "{\"n\": 1}");
    assert_string_equal(val(res, "progress"), "1");
    arts = cJSON_Parse(val(res, "artifacts"));
    assert_int_equal(cJSON_GetArraySize(arts), 2); /* the bad one dropped */
    cJSON_Delete(arts);
    PQclear(res);
    /* redelivery lists the same two (from the table now), inserts nothing */
    res = apply(ev);
    assert_string_equal(val(res, "outcome"), "duplicate");
    arts = cJSON_Parse(val(res, "artifacts"));
    assert_int_equal(cJSON_GetArraySize(arts), 2);
    assert_string_equal(nf_json_str(cJSON_GetArrayItem(arts, 0), "artifact_id"),
                        strcmp(art1, art2) < 0 ? art1 : art2);
    cJSON_Delete(arts);
    PQclear(res);
    {
        const char *p[1] = {job};

        char *n = nf_test_pg_one(conn,
                                 "SELECT count(*) FROM sched.artifacts WHERE job_id = $1 AND "
                                 "user_id = 'usr_it'",
                                 1, p);

        assert_string_equal(n, "2");
        free(n);
    }
    cJSON_Delete(ev);
}

/* A checkpoint event registers its checkpoint whatever the job's state (even after the
 * attempt failed), only kind checkpoint under the job's own prefix; a retry's dispatch
 * then names the newest (SCHED_RESUME_OF). */
static void apply_checkpoint(const char *job, int attempt, const char *art, const char *name,
                             const char *kind, const char *key_job, const char *outcome)
{
    char extra[1024], ev_id[80];
    cJSON *ev;
    PGresult *res;

    snprintf(extra, sizeof(extra),
             ",\"status\":\"running\",\"epoch\":1,\"step\":5,\"artifacts\":[{\"artifact_id\":"
             "\"%s\",\"name\":\"%s\",\"kind\":\"%s\",\"uri\":\"artifact://%s\",\"bytes\":7,"
             "\"object_key\":\"tenants/usr_it/jobs/%s/%d/%s\"}]",
             art, name, kind, art, key_job, attempt, name);
    snprintf(ev_id, sizeof(ev_id), "evt_it_ck_%s", art + 4);
    ev = envelope(ev_id, "checkpoint", job, attempt, extra);
    res = apply(ev);
    assert_string_equal(val(res, "outcome"), outcome);
    PQclear(res);
    cJSON_Delete(ev);
}

static void test_checkpoints_recorded_and_resumed(void **state)
{
    char job[NF_ID_MAX], other[NF_ID_MAX], a1[NF_ID_MAX], a2[NF_ID_MAX], a3[NF_ID_MAX],
        a4[NF_ID_MAX], ev_id[80];
    const char *p[1];
    PGresult *res;
    cJSON *ev;
    char *n;

    nf_test_skip_unless(conn != NULL);
    new_job("running", 1, 3, job, sizeof(job));
    new_job("running", 1, 3, other, sizeof(other));
    nf_id_new("art", a1, sizeof(a1));
    apply_checkpoint(job, 1, a1, "checkpoint-epoch-1.tar", "checkpoint", job, "record");
    /* the attempt is lost: the job goes back to queued as attempt 2 */
    snprintf(ev_id, sizeof(ev_id), "evt_it_lost_%s", job + 4);
    ev = envelope(ev_id, "failed", job, 1,
                  ",\"error\":{\"code\":\"lost\",\"message\":\"m\",\"class\":\"worker_lost\"}");
    res = apply(ev);
    assert_string_equal(val(res, "status"), "queued");
    assert_string_equal(val(res, "attempt"), "2");
    PQclear(res);
    cJSON_Delete(ev);
    /* a late checkpoint of the lost attempt still counts; others never do */
    nf_id_new("art", a2, sizeof(a2));
    apply_checkpoint(job, 1, a2, "checkpoint-epoch-2.tar", "checkpoint", job, "record");
    nf_id_new("art", a3, sizeof(a3));
    apply_checkpoint(job, 1, a3, "model.tar", "model", job, "record");
    nf_id_new("art", a4, sizeof(a4));
    apply_checkpoint(job, 1, a4, "checkpoint-epoch-3.tar", "checkpoint", other, "record");
    p[0] = job;
    n = nf_test_pg_one(conn,
                       "SELECT string_agg(name, ',' ORDER BY name) FROM sched.artifacts"
                       " WHERE job_id = $1 AND kind = 'checkpoint'",
                       1, p);
    assert_string_equal(n, "checkpoint-epoch-1.tar,checkpoint-epoch-2.tar");
    free(n);
    res = nf_test_pg_run(conn,
                         "SELECT " SCHED_RESUME_OF("j.job_id") " FROM sched.jobs j"
                                                               " WHERE j.job_id = $1",
                         1, p);
    cJSON *resume = cJSON_Parse(val(res, "resume"));
    assert_non_null(resume);
    assert_string_equal(nf_json_str(resume, "artifact_id"), a2);
    assert_string_equal(nf_json_str(resume, "name"), "checkpoint-epoch-2.tar");
    cJSON_Delete(resume);
    /* the dispatch of a row with that column carries it */
    struct sched_job row;
    sched_job_from_row(res, 0, &row);
    row.job_id = job;
    row.user_id = "usr_it";
    cJSON *d = sched_dispatch_data(&row);
    assert_string_equal(nf_json_str(cJSON_GetObjectItem(d, "resume"), "artifact_id"), a2);
    cJSON_Delete(d);
    PQclear(res);
}

static void test_progress_and_worker(void **state)
{
    char job[NF_ID_MAX], id1[80], id2[80];
    PGresult *res;
    cJSON *ev;

    nf_test_skip_unless(conn != NULL);
    new_job("queued", 1, 3, job, sizeof(job));
    snprintf(id1, sizeof(id1), "evt_it_run_%s", job + 4);
    ev = envelope(id1, "running", job, 1, ",\"worker_id\":\"wrk_7\"");
    res = apply(ev);
    assert_string_equal(val(res, "worker_id"), "wrk_7");
    PQclear(res);
    cJSON_Delete(ev);
    snprintf(id2, sizeof(id2), "evt_it_prog_%s", job + 4);
    ev = envelope(id2, "progress", job, 1, ",\"progress\":0.75");
    res = apply(ev);
    assert_string_equal(val(res, "status"), "running");
    assert_string_equal(val(res, "progress"), "0.75");
    assert_string_equal(val(res, "worker_id"), "wrk_7"); /* kept */
    PQclear(res);
    cJSON_Delete(ev);
}

static void test_requested_insert_idempotent(void **state)
{
    const char *p[SCHED_REQUESTED_NPARAMS];
    char job[NF_ID_MAX];
    PGresult *res;
    int i;

    nf_test_skip_unless(conn != NULL);
    nf_id_new("job", job, sizeof(job));
    p[0] = job;
    p[1] = "usr_it";
    p[2] = "audit";
    p[3] = "{\"dataset_uri\":\"s3://x\"}";
    p[4] = NULL;
    p[5] = "{\"a\":\"b\"}";
    p[6] = "3";
    p[7] = "2";
    p[8] = NULL;
    p[9] = NULL;
    p[10] = NULL;
    p[11] = "2026-11-28T21:03:52.123Z";
    p[12] = "[{\"param\":\"dataset_uri\",\"uri\":\"s3://x/k\",\"object_key\":"
            "\"tenants/usr_it/files/x/k\",\"name\":\"k\",\"bytes\":3}]";
    p[13] = "{\"model_id\":{\"id\":\"llama-3-8b\",\"kind\":\"base\",\"source\":\"hf:m/l\"}}";
    for (i = 0; i < 2; i++) {
        res = nf_test_pg_run(conn, sched_requested_sql, SCHED_REQUESTED_NPARAMS, p);
        assert_int_equal(PQntuples(res), 1);
        assert_non_null(strstr(val(res, "inputs"), "tenants/usr_it/files/x/k"));
        assert_non_null(strstr(val(res, "models"), "\"llama-3-8b\""));
        assert_string_equal(val(res, "inserted"), i == 0 ? "1" : "0");
        assert_string_equal(val(res, "status"), "queued");
        assert_string_equal(val(res, "attempt"), "1");
        assert_string_equal(val(res, "metadata"), "{}");
        assert_string_equal(val(res, "created_at"), "2026-11-28T21:03:52.123Z");
        assert_string_equal(val(res, "artifacts"), "[]");
        assert_null(val(res, "timeout_seconds"));
        PQclear(res);
    }
}

/* A running train of usr_it with params and models; its id into id. */
static void new_train(const char *params, char *id, size_t len)
{
    const char *p[3];

    nf_id_new("job", id, len);
    p[0] = id;
    p[1] = params;
    p[2] = "{\"model_id\":{\"id\":\"llama-3-8b\",\"kind\":\"base\",\"architecture\":"
           "\"llama\",\"parameters\":8030261248,\"stand_in\":true,\"source\":\"hf:a/b\"}}";
    nf_test_pg_exec(conn,
                    "INSERT INTO sched.jobs (job_id, user_id, job_type, status, params, models)"
                    " VALUES ($1, 'usr_it', 'train', 'running', $2::jsonb, $3::jsonb)",
                    3, p);
}

/* A train's success with one model artifact under its output prefix. */
static PGresult *train_succeeds(const char *job)
{
    char art[NF_ID_MAX], extra[1024], ev_id[80];
    PGresult *res;
    cJSON *ev;

    nf_id_new("art", art, sizeof(art));
    snprintf(extra, sizeof(extra),
             ",\"result\":{},\"artifacts\":[{\"artifact_id\":\"%s\",\"name\":\"model.json\","
             "\"kind\":\"model\",\"uri\":\"artifact://%s\",\"bytes\":5,\"object_key\":"
             "\"tenants/usr_it/jobs/%s/1/model.json\"}]",
             art, art, job);
    snprintf(ev_id, sizeof(ev_id), "evt_it_train_%s", job + 4);
    ev = envelope(ev_id, "succeeded", job, 1, extra);
    res = apply(ev);
    cJSON_Delete(ev);
    return res;
}

static char *model_col(const char *name, const char *col)
{
    const char *p[1] = {name};
    char sql[256];

    snprintf(sql, sizeof(sql),
             "SELECT %s::text FROM sched.models WHERE user_id = 'usr_it' AND name = $1"
             " AND deleted_at IS NULL",
             col);
    return nf_test_pg_one(conn, sql, 1, p);
}

/* A succeeded train registers its model in the same statement: the default name, then
 * output_model; a name taken keeps its model and the success still applies. */
static void test_train_registers_its_model(void **state)
{
    char job[NF_ID_MAX], job2[NF_ID_MAX], name[64], *v;
    PGresult *res;

    nf_test_skip_unless(conn != NULL);
    new_train("{\"model_id\":\"Llama-3-8B\",\"dataset_uri\":\"s3://b/k\"}", job, sizeof(job));
    res = train_succeeds(job);
    assert_string_equal(val(res, "status"), "succeeded");
    PQclear(res);
    snprintf(name, sizeof(name), "llama-3-8b-ft-%s", job + strlen(job) - 6);
    for (char *c = name; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    v = model_col(name, "job_id");
    assert_string_equal(v, job);
    free(v);
    v = model_col(name, "architecture || ' ' || parameters || ' ' || stand_in || ' ' || kind");
    assert_string_equal(v, "llama 8030261248 true fine_tuned");
    free(v);

    new_train("{\"model_id\":\"llama-3-8b\",\"output_model\":\"it-mine\"}", job, sizeof(job));
    PQclear(train_succeeds(job));
    new_train("{\"model_id\":\"llama-3-8b\",\"output_model\":\"it-mine\"}", job2, sizeof(job2));
    res = train_succeeds(job2);
    assert_string_equal(val(res, "status"), "succeeded"); /* applied all the same */
    PQclear(res);
    v = model_col("it-mine", "job_id");
    assert_string_equal(v, job); /* the first keeps the name */
    free(v);
}

int main(void)
{
    return NF_TEST_RUN_GROUP(setup, teardown, test_sql_matches_reference, test_unknown_job,
                             test_checkpoints_recorded_and_resumed, test_succeeded_artifacts,
                             test_progress_and_worker, test_requested_insert_idempotent,
                             test_train_registers_its_model);
}
