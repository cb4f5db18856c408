/*
 * forge.jobs.requested: a submitted job becomes a row, a dispatch and a queued event.
 *
 *   msg --parse--> malformed? log + count + done (never stall the partition)
 *       --insert--> INSERT ... ON CONFLICT (job_id) DO NOTHING, returns the row either way
 *       --budget--> nf-billing GET /internal/budget?user_id=
 *                   over budget: --refuse--> ONE statement: the job fails with error
 *                   {budget_exceeded, user_error} and its failed event is recorded
 *                   --> forge.job.failed produced (same id) --> snapshot --> done
 *                   billing unreachable: retried with backoff; after
 *                   NF_SCHEDULER_BUDGET_WAIT_MS the job is dispatched unchecked (counted):
 *                   an outage of billing does not stop the platform. The outage is then
 *                   remembered (a circuit breaker, open for another BUDGET_WAIT_MS after
 *                   each unchecked dispatch): while open, a job whose check fails is
 *                   dispatched unchecked at once instead of waiting again; the first
 *                   answer from billing closes it
 *       --produce-> forge.jobs.<type> (forge.job.dispatch) + forge.jobs.events (queued),
 *                   both delivery reports ok
 *       --snapshot> job:<id>
 *       --done----> nf_kafka_msg_done
 *
 * A failed stage is retried with backoff; the message is done only after the commit and
 * both delivery reports. Redelivery is harmless: the insert does nothing, the dispatch and
 * the queued event carry deterministic ids (the worker-manager dedupes by job id, the
 * events consumer by event id), and a job that has moved past queued/attempt 1 is not
 * dispatched again. Nor is one the worker-manager already holds (wm:job:<id> exists: the
 * first dispatch arrived), so a replica taking over a dead one's partitions, which reads
 * again what was not committed, makes no duplicate dispatches:
 *       --known---> redelivered, still queued: EXISTS wm:job:<id> -> 1: snapshot only
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "nf_event.h"
#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_id.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "routes.h"

/* clang-format off */
const char sched_requested_sql[] =
    "WITH ins AS ("
    " INSERT INTO sched.jobs (job_id, user_id, job_type, status, params, metadata, labels,"
    "  priority, attempt, max_attempts, timeout_seconds, gpu_type, gpu_count, created_at,"
    "  updated_at, inputs, models)"
    " VALUES ($1, $2, $3, 'queued', $4::jsonb, coalesce($5::jsonb, '{}'::jsonb),"
    "  coalesce($6::jsonb, '{}'::jsonb), $7::int, 1, $8::int, $9::int, $10, $11::int,"
    "  coalesce($12::timestamptz, now()), now(), coalesce($13::jsonb, '[]'::jsonb),"
    "  coalesce($14::jsonb, '{}'::jsonb))"
    " ON CONFLICT (job_id) DO NOTHING"
    " RETURNING *"
    "), qev AS ("
    /* the queued event is recorded with the row, so the job's history starts with it
     * even when the worker's events overtake ours on forge.jobs.events (its id is the
     * one st_produce publishes: reading it back is a duplicate) */
    " INSERT INTO sched.job_events (event_id, job_id, type, attempt, data)"
    " SELECT 'evt_' || left(encode(sha256(convert_to('queued:' || i.job_id || ':1', 'UTF8')),"
    "  'hex'), 32), i.job_id, 'queued', 1, jsonb_build_object('job_id', i.job_id, 'user_id',"
    "  i.user_id, 'attempt', 1, 'status', 'queued')"
    " FROM ins i ON CONFLICT (event_id) DO NOTHING RETURNING 1"
    "), r AS ("
    " SELECT * FROM ins"
    " UNION ALL"
    " SELECT * FROM sched.jobs WHERE job_id = $1 AND NOT EXISTS (SELECT 1 FROM ins)"
    ")"
    " SELECT " SCHED_JOB_COLS("r.") ","
    "  (SELECT count(*) FROM ins) AS inserted,"
    "  " SCHED_ARTIFACTS_OF("$1")
    " FROM r";

/* Over budget: the job fails before it is dispatched, and its failed event is recorded
 * (so the scheduler reading the event back finds a duplicate). */
static const char refuse_sql[] =
    "WITH upd AS ("
    " UPDATE sched.jobs SET status = 'failed', error = $2::jsonb, finished_at = now(),"
    "  updated_at = now(), version = version + 1"
    " WHERE job_id = $1 AND status = 'queued' AND attempt = 1"
    " RETURNING *"
    "), ev AS ("
    " INSERT INTO sched.job_events (event_id, job_id, type, attempt, data)"
    " SELECT $3, job_id, 'failed', 1, $4::jsonb FROM upd"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING 1"
    "), r AS ("
    " SELECT * FROM upd"
    " UNION ALL"
    " SELECT * FROM sched.jobs WHERE job_id = $1 AND NOT EXISTS (SELECT 1 FROM upd)"
    ")"
    " SELECT " SCHED_JOB_COLS("r.") ","
    "  " SCHED_ARTIFACTS_OF("$1")
    " FROM r";
/* clang-format on */

struct req_work {
    struct nf_work w;
    cJSON *ev; /* the parsed envelope; rq points into it */
    struct sched_request rq;
    cJSON *dispatch;        /* dispatch data built from the row */
    struct sched_snap snap; /* the row's snapshot */
    bool do_dispatch;
    uint64_t budget_since_ms; /* first failed budget check, 0 if none */
    cJSON *refusal;           /* data of the budget_exceeded failed event */
};

static void st_insert(struct nf_work *w);
static void st_known(struct nf_work *w);
static void st_budget(struct nf_work *w);
static void st_refuse(struct nf_work *w);
static void st_refuse_produce(struct nf_work *w);
static void st_produce(struct nf_work *w);
static void st_snapshot(struct nf_work *w);

static void req_dtor(struct nf_work *w)
{
    struct req_work *rw = (struct req_work *)w;

    cJSON_Delete(rw->ev);
    cJSON_Delete(rw->dispatch);
    cJSON_Delete(rw->refusal);
    sched_snap_clear(&rw->snap);
}

/* data of the failed event of a job refused for its budget; error is copied. */
static cJSON *refusal_data(const char *job_id, const char *user_id, const cJSON *error)
{
    cJSON *data = nf_json_obj();

    nf_json_add_str(data, "job_id", job_id);
    nf_json_add_str(data, "user_id", user_id);
    nf_json_add_int(data, "attempt", 1);
    nf_json_add_str(data, "status", "failed");
    if (!cJSON_AddItemToObject(data, "error", cJSON_Duplicate(error, true)))
        abort();
    return data;
}

/* The row failed for its budget (this message's earlier delivery refused it). */
static bool budget_failed(const struct sched_job *job, cJSON **error)
{
    cJSON *e;

    if (!job->status || strcmp(job->status, "failed") != 0 || !job->error)
        return false;
    e = nf_json_parse(job->error, strlen(job->error));
    if (e && nf_json_str(e, "code") && strcmp(nf_json_str(e, "code"), "budget_exceeded") == 0) {
        *error = e;
        return true;
    }
    cJSON_Delete(e);
    return false;
}

static void malformed(struct sched_ctx *ctx, struct nf_kafka_msg *msg, const char *why)
{
    char part[16], off[24];

    snprintf(part, sizeof(part), "%d", (int)msg->partition);
    snprintf(off, sizeof(off), "%lld", (long long)msg->offset);
    nf_log_kv(NF_LOG_WARN, "requested_malformed", "malformed job request skipped", "reason", why,
              "topic", msg->topic, "partition", part, "offset", off, "key", msg->key, NULL);
    nf_metrics_counter_add(ctx->m.malformed_req, 1);
    nf_kafka_msg_done(msg);
}

void sched_requested_handle(struct sched_ctx *ctx, struct nf_kafka_msg *msg)
{
    struct req_work *rw;
    struct nf_json_err err;
    struct sched_request rq;
    const char *type = NULL, *subject = NULL, *why = NULL;
    const cJSON *data;
    cJSON *ev;
    char reason[400];

    ev = nf_json_parse(msg->payload, msg->len);
    if (!ev || !cJSON_IsObject(ev)) {
        cJSON_Delete(ev);
        malformed(ctx, msg, "payload is not a JSON object");
        return;
    }
    data = nf_event_data(ev, &type, &subject, &why);
    if (!data) {
        malformed(ctx, msg, why);
        cJSON_Delete(ev);
        return;
    }
    if (strcmp(type, "forge.job.requested") != 0) {
        malformed(ctx, msg, "type is not forge.job.requested");
        cJSON_Delete(ev);
        return;
    }
    if (sched_request_parse(data, subject, &rq, &err) < 0) {
        snprintf(reason, sizeof(reason), "%s: %s", err.param, err.msg);
        malformed(ctx, msg, reason);
        cJSON_Delete(ev);
        return;
    }
    rw = (struct req_work *)nf_work_new(&ctx->work, msg, sizeof(*rw));
    rw->w.dtor = req_dtor;
    rw->ev = ev; /* owned by rw */
    rw->rq = rq;
    nf_work_start(&rw->w, NULL, st_insert);
}

static void on_insert(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct req_work *rw = arg;
    struct sched_ctx *ctx = sched_of(&rw->w);
    struct sched_job job;
    const char *inserted;
    cJSON *error = NULL;

    if (nf_work_failed(&rw->w, res, err))
        return;
    if (PQntuples(res) < 1) {
        /* a concurrent insert of the same id by another copy, not yet visible to us */
        nf_work_retry(&rw->w, "job row not visible yet");
        return;
    }
    sched_job_from_row(res, 0, &job);
    if (!job.user_id || strcmp(job.user_id, rw->rq.user_id) != 0) {
        nf_log_kv(NF_LOG_ERROR, "job_id_conflict", "job id already used by another user", "job_id",
                  rw->rq.job_id, NULL);
        nf_metrics_counter_add(ctx->m.malformed_req, 1);
        nf_work_finish(&rw->w);
        return;
    }
    inserted = nf_pg_val(res, 0, "inserted");
    if (inserted && strcmp(inserted, "1") == 0) {
        nf_metrics_counter_add(ctx->m.requested, 1);
        nf_log_kv(NF_LOG_INFO, "job_inserted", "job recorded", "job_id", job.job_id, "user_id",
                  job.user_id, "job_type", job.job_type, NULL);
    } else {
        nf_metrics_counter_add(ctx->m.requested_dup, 1);
        nf_log_kv(NF_LOG_INFO, "job_redelivered", "job already recorded", "job_id", job.job_id,
                  "status", job.status, "attempt", job.attempt, NULL);
    }
    sched_snap_clear(&rw->snap);
    if (sched_snap_from_job(&job, &rw->snap) < 0) {
        nf_work_retry(&rw->w, "incomplete job row");
        return;
    }
    cJSON_Delete(rw->dispatch);
    rw->dispatch = sched_dispatch_data(&job);
    /* Only a job still waiting for its first attempt is (re-)dispatched from here; any
     * later attempt is dispatched by the retry path of consume_events.c. */
    rw->do_dispatch = job.status && strcmp(job.status, "queued") == 0 && job.attempt &&
                      strcmp(job.attempt, "1") == 0;
    if (!rw->do_dispatch && budget_failed(&job, &error)) {
        /* refused before a crash: its failed event may not have been produced yet */
        cJSON_Delete(rw->refusal);
        rw->refusal = refusal_data(job.job_id, job.user_id, error);
        cJSON_Delete(error);
        nf_work_goto(&rw->w, st_refuse_produce);
        return;
    }
    if (rw->do_dispatch && !(inserted && strcmp(inserted, "1") == 0)) {
        nf_work_goto(&rw->w, st_known);
        return;
    }
    nf_work_goto(&rw->w, rw->do_dispatch ? st_budget : st_snapshot);
}

static void on_known(redisReply *reply, void *arg)
{
    struct req_work *rw = arg;
    struct sched_ctx *ctx = sched_of(&rw->w);

    if (sched_redis_failed(&rw->w, reply, REDIS_REPLY_INTEGER))
        return;
    if (reply->integer == 0) {
        nf_work_goto(&rw->w, st_budget);
        return;
    }
    rw->do_dispatch = false;
    nf_metrics_counter_add(ctx->m.dispatch_known, 1);
    nf_log_kv(NF_LOG_INFO, "dispatch_known", "redelivered job already held by the worker-manager",
              "job_id", rw->snap.job_id, NULL);
    nf_work_goto(&rw->w, st_snapshot);
}

/* A redelivered request of a job still queued: was its dispatch already taken? */
static void st_known(struct nf_work *w)
{
    struct req_work *rw = (struct req_work *)w;

    w->what = "known";
    /* on failure the callback has already fired with NULL and retried */
    (void)nf_redis_cmd(sched_of(w)->redis, on_known, rw, "EXISTS wm:job:%s", rw->snap.job_id);
}

static void st_insert(struct nf_work *w)
{
    struct req_work *rw = (struct req_work *)w;
    const struct sched_request *rq = &rw->rq;
    const char *params[SCHED_REQUESTED_NPARAMS];
    char prio[16], maxa[16], tmo[24], gpus[16];
    char *p_params, *p_meta = NULL, *p_labels = NULL, *p_inputs = NULL;
    char *p_models = NULL;

    w->what = "insert";
    p_params = nf_json_print(rq->params);
    if (rq->metadata)
        p_meta = nf_json_print(rq->metadata);
    if (rq->labels)
        p_labels = nf_json_print(rq->labels);
    if (rq->inputs)
        p_inputs = nf_json_print(rq->inputs);
    if (rq->models)
        p_models = nf_json_print(rq->models);
    snprintf(prio, sizeof(prio), "%lld", rq->priority);
    snprintf(maxa, sizeof(maxa), "%lld", rq->max_attempts);
    snprintf(tmo, sizeof(tmo), "%lld", rq->timeout_seconds);
    snprintf(gpus, sizeof(gpus), "%lld", rq->gpu_count);
    params[0] = rq->job_id;
    params[1] = rq->user_id;
    params[2] = rq->job_type;
    params[3] = p_params;
    params[4] = p_meta;
    params[5] = p_labels;
    params[6] = prio;
    params[7] = maxa;
    params[8] = rq->timeout_seconds > 0 ? tmo : NULL;
    params[9] = rq->gpu_type;
    params[10] = rq->gpu_count >= 0 ? gpus : NULL;
    params[11] = rq->created_at;
    params[12] = p_inputs;
    params[13] = p_models;
    if (nf_pg_query(sched_of(w)->pg, sched_requested_sql, SCHED_REQUESTED_NPARAMS, params,
                    on_insert, rw) < 0)
        nf_work_retry(w, "could not queue the insert");
    free(p_params);
    free(p_meta);
    free(p_labels);
    free(p_inputs);
    free(p_models);
}

/* Billing did not give a usable answer: retry, or after budget_wait_ms (at once while
 * an outage is remembered) dispatch unchecked. */
static void budget_unknown(struct req_work *rw, const char *why)
{
    struct sched_ctx *ctx = sched_of(&rw->w);
    uint64_t now = nf_now_ms();

    if (!rw->budget_since_ms)
        rw->budget_since_ms = now;
    if (now < ctx->billing_down_until_ms ||
        now - rw->budget_since_ms >= (uint64_t)ctx->cfg->budget_wait_ms) {
        if (now >= ctx->billing_down_until_ms)
            nf_log_kv(NF_LOG_WARN, "billing_outage", "billing unreachable, jobs dispatch unchecked",
                      "reason", why, NULL);
        ctx->billing_down_until_ms = now + (uint64_t)ctx->cfg->budget_wait_ms;
        nf_log_kv(NF_LOG_DEBUG, "budget_unchecked", "billing unreachable, job dispatched unchecked",
                  "job_id", rw->snap.job_id, "user_id", rw->snap.user_id, "reason", why, NULL);
        nf_metrics_counter_add(ctx->m.budget_unchecked, 1);
        nf_work_goto(&rw->w, st_produce);
        return;
    }
    nf_work_retry(&rw->w, why);
}

static void on_budget(const struct nf_http_resp *resp, void *arg)
{
    struct req_work *rw = arg;
    char why[64];
    int over;

    if (nf_work_closing(&rw->w))
        return;
    over = resp->status == 200 ? sched_budget_over(resp->body, resp->len) : -1;
    if (over >= 0 && sched_of(&rw->w)->billing_down_until_ms) {
        sched_of(&rw->w)->billing_down_until_ms = 0; /* billing answers again */
        nf_log_info("billing_back", "billing answers again, budgets checked before dispatch");
    }
    if (over == 0) {
        nf_work_goto(&rw->w, st_produce);
        return;
    }
    if (over == 1) {
        cJSON *error = sched_budget_error(resp->body, resp->len);

        cJSON_Delete(rw->refusal);
        rw->refusal = refusal_data(rw->snap.job_id, rw->snap.user_id, error);
        cJSON_Delete(error);
        nf_work_goto(&rw->w, st_refuse);
        return;
    }
    snprintf(why, sizeof(why), "billing answered %d", resp->status);
    budget_unknown(rw, resp->status == 0 && resp->error ? resp->error : why);
}

/* Asks billing whether the user may start new work (DESIGN §3, §8). */
static void st_budget(struct nf_work *w)
{
    struct req_work *rw = (struct req_work *)w;
    char path[256], *user;

    w->what = "budget";
    user = evhttp_uriencode(rw->snap.user_id, -1, 0);
    if (!user)
        abort();
    snprintf(path, sizeof(path), "/internal/budget?user_id=%s", user);
    free(user);
    if (!sched_of(w)->billing || nf_http_client_request(sched_of(w)->billing, "GET", path, NULL,
                                                        NULL, 0, 0, on_budget, rw) != 0)
        budget_unknown(rw, "could not queue the budget check");
}

static void on_refuse(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct req_work *rw = arg;
    struct sched_ctx *ctx = sched_of(&rw->w);
    struct sched_job job;
    cJSON *error = NULL;

    if (nf_work_failed(&rw->w, res, err))
        return;
    if (PQntuples(res) < 1) {
        nf_work_retry(&rw->w, "job row not visible");
        return;
    }
    sched_job_from_row(res, 0, &job);
    sched_snap_clear(&rw->snap);
    if (sched_snap_from_job(&job, &rw->snap) < 0) {
        nf_work_retry(&rw->w, "incomplete job row");
        return;
    }
    rw->do_dispatch = false;
    if (!budget_failed(&job, &error)) {
        /* the job moved on meanwhile (e.g. cancelled): nothing to announce */
        nf_work_goto(&rw->w, st_snapshot);
        return;
    }
    cJSON_Delete(error);
    nf_metrics_counter_add(ctx->m.budget_refused, 1);
    nf_log_kv(NF_LOG_INFO, "job_over_budget", "job refused: monthly budget used up", "job_id",
              job.job_id, "user_id", job.user_id, NULL);
    nf_work_goto(&rw->w, st_refuse_produce);
}

static void st_refuse(struct nf_work *w)
{
    struct req_work *rw = (struct req_work *)w;
    char id[NF_ID_MAX], *error, *data;
    const char *params[4];

    w->what = "refuse";
    sched_event_id("budget", rw->snap.job_id, 1, id, sizeof(id));
    error = nf_json_print(cJSON_GetObjectItemCaseSensitive(rw->refusal, "error"));
    data = nf_json_print(rw->refusal);
    params[0] = rw->snap.job_id;
    params[1] = error;
    params[2] = id;
    params[3] = data;
    if (nf_pg_query(sched_of(w)->pg, refuse_sql, 4, params, on_refuse, rw) < 0)
        nf_work_retry(w, "could not queue the refusal");
    free(error);
    free(data);
}

/* forge.job.failed with the id the refusal recorded: consumers see why, once. */
static void st_refuse_produce(struct nf_work *w)
{
    struct req_work *rw = (struct req_work *)w;
    const char *job_id = nf_json_str(rw->refusal, "job_id");
    char id[NF_ID_MAX];

    w->what = "refuse_produce";
    rw->do_dispatch = false;
    sched_event_id("budget", job_id, 1, id, sizeof(id));
    nf_work_produce_begin(w);
    nf_work_produce(w, NF_TOPIC_JOBS_EVENTS, job_id,
                    nf_event_new("forge.job.failed", SCHED_SOURCE, job_id, id,
                                 cJSON_Duplicate(rw->refusal, true)));
    nf_work_produce_end(w, st_snapshot);
}

static void st_produce(struct nf_work *w)
{
    struct req_work *rw = (struct req_work *)w;
    const char *job_id = nf_json_str(rw->dispatch, "job_id");
    const char *job_type = nf_json_str(rw->dispatch, "job_type");
    char topic[64], id[NF_ID_MAX];
    cJSON *data;

    w->what = "produce";
    nf_work_produce_begin(w);
    snprintf(topic, sizeof(topic), NF_TOPIC_JOBS_PREFIX "%s", job_type);
    sched_event_id("dispatch", job_id, 1, id, sizeof(id));
    nf_work_produce(w, topic, job_id,
                    nf_event_new("forge.job.dispatch", SCHED_SOURCE, job_id, id,
                                 cJSON_Duplicate(rw->dispatch, true)));
    data = nf_json_obj();
    nf_json_add_str(data, "job_id", job_id);
    nf_json_add_str(data, "user_id", rw->snap.user_id);
    nf_json_add_int(data, "attempt", 1);
    nf_json_add_str(data, "status", "queued");
    sched_event_id("queued", job_id, 1, id, sizeof(id));
    nf_work_produce(w, NF_TOPIC_JOBS_EVENTS, job_id,
                    nf_event_new("forge.job.queued", SCHED_SOURCE, job_id, id, data));
    nf_work_produce_end(w, st_snapshot);
}

static void on_snapshot(redisReply *reply, void *arg)
{
    struct req_work *rw = arg;
    struct sched_ctx *ctx = sched_of(&rw->w);

    if (sched_redis_failed(&rw->w, reply, 0))
        return;
    if (rw->do_dispatch) {
        nf_metrics_counter_add(ctx->m.dispatched, 1);
        nf_log_kv(NF_LOG_INFO, "job_dispatched", "job dispatched", "job_id", rw->snap.job_id, NULL);
    }
    nf_work_finish(&rw->w);
}

static void st_snapshot(struct nf_work *w)
{
    struct req_work *rw = (struct req_work *)w;

    w->what = "snapshot";
    /* on failure the callback has already fired with NULL and retried */
    (void)sched_snapshot_write(sched_of(w), &rw->snap, on_snapshot, rw);
}
