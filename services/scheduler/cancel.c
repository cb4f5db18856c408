/*
 * Job cancel (DESIGN §4: cancel_requested between any live state and cancelled).
 *
 *   POST /internal/jobs/{job_id}/cancel (X-Nf-User-Id)
 *     --request---> ONE statement: lock the user's row; queued / assigned / running ->
 *                   cancel_requested (+ its event in job_events); 409 finished; no row:
 *                   accepted but not recorded yet (the gateway's job:<id> snapshot is
 *                   there, without `ver`)? ask again every 100 ms for up to 3 s, then
 *                   503 Retry-After; else 404
 *     --snapshot--> job:<id>
 *     --ask wm----> worker-manager POST /internal/jobs/{job_id}/cancel
 *                     dequeued                    -> finalize
 *                     unknown and it was queued   -> finalize (nobody holds it)
 *                     signalled                   -> the worker is told on its next
 *                                                    heartbeat; its agent stops the
 *                                                    handler and emits forge.job.cancelled
 *                     unknown otherwise, no answer -> left to the reconciler
 *     --finalize--> ONE statement: cancel_requested -> cancelled (+ its event) -> snapshot
 *     --reply-----> 200 the job object (cancel_requested or cancelled)
 *     --produce---> forge.job.cancel_requested / forge.job.cancelled on forge.jobs.events
 *                   with the ids already recorded, so reading them back is a duplicate
 *
 * The reconciler re-asks the worker-manager about jobs stuck in cancel_requested
 * (sched_cancel_recheck: the same stages without the request and the reply). A repeated
 * cancel of a job in cancel_requested asks the worker-manager again and answers 200.
 * Every stage is a work item stage (nf_work.h): backend failures are retried with backoff.
 * The stopping scheduler answers 503 to a request whose cancel waits in a delay or a
 * backoff (it will not go on: sched_cancel_drain), so the drain does not wait for it; a
 * stage waiting on a backend may still finish and answer.
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "routes.h"

#define USER_MAX 128
#define UNRECORDED_POLL_MS 100
#define UNRECORDED_WAIT_MS 3000

/* clang-format off */
/* The event id sched_event_id() computes, in SQL: "evt_" + 32 hex of sha256(kind:job:n). */
#define EVENT_ID_SQL(kind, u)                                                              \
    "'evt_' || left(encode(sha256(convert_to('" kind ":' || " u ".job_id || ':' || "       \
    u ".attempt, 'UTF8')), 'hex'), 32)"
#define EVENT_DATA_SQL(status, u)                                                          \
    "jsonb_build_object('job_id', " u ".job_id, 'user_id', " u ".user_id, 'attempt', "     \
    u ".attempt, 'status', '" status "')"

const char sched_cancel_request_sql[] =
    "WITH cur AS ("
    " SELECT * FROM sched.jobs WHERE job_id = $1 AND user_id = $2 FOR UPDATE"
    "), upd AS ("
    " UPDATE sched.jobs j SET status = 'cancel_requested', next_attempt_at = NULL,"
    "  updated_at = now(), version = j.version + 1"
    " FROM cur c WHERE j.job_id = c.job_id"
    "  AND c.status IN ('queued', 'assigned', 'running')"
    " RETURNING j.*"
    "), ev AS ("
    " INSERT INTO sched.job_events (event_id, job_id, type, attempt, data)"
    " SELECT " EVENT_ID_SQL("cancel_requested", "u") ", u.job_id, 'cancel_requested',"
    "  u.attempt, " EVENT_DATA_SQL("cancel_requested", "u")
    " FROM upd u ON CONFLICT (event_id) DO NOTHING RETURNING 1"
    "), r AS ("
    " SELECT * FROM upd"
    " UNION ALL"
    " SELECT * FROM cur WHERE NOT EXISTS (SELECT 1 FROM upd)"
    ")"
    " SELECT " SCHED_JOB_COLS("r.") ","
    "  (SELECT status FROM cur) AS old_status,"
    "  (SELECT count(*) FROM upd) AS changed, " SCHED_ARTIFACTS_OF("$1")
    " FROM r";

const char sched_cancel_finalize_sql[] =
    "WITH upd AS ("
    " UPDATE sched.jobs SET status = 'cancelled', finished_at = now(), updated_at = now(),"
    "  next_attempt_at = NULL, version = version + 1"
    " WHERE job_id = $1 AND status = 'cancel_requested'"
    " RETURNING *"
    "), ev AS ("
    " INSERT INTO sched.job_events (event_id, job_id, type, attempt, data)"
    " SELECT " EVENT_ID_SQL("cancelled", "u") ", u.job_id, 'cancelled', u.attempt, "
    EVENT_DATA_SQL("cancelled", "u")
    " FROM upd u ON CONFLICT (event_id) DO NOTHING RETURNING 1"
    "), r AS ("
    " SELECT * FROM upd"
    " UNION ALL"
    " SELECT * FROM sched.jobs WHERE job_id = $1 AND NOT EXISTS (SELECT 1 FROM upd)"
    ")"
    " SELECT " SCHED_JOB_COLS("r.") ","
    "  (SELECT count(*) FROM upd) AS changed, " SCHED_ARTIFACTS_OF("$1")
    " FROM r";
/* clang-format on */

struct cancel_work {
    struct nf_work w;
    struct nf_http_req *req; /* NULL for a recheck; answered once, then NULL */
    char job_id[NF_ID_MAX];
    char user_id[USER_MAX + 1];
    char old_status[32];    /* before this cancel ("cancel_requested" when repeated) */
    struct sched_snap snap; /* the row as it is now */
    cJSON *job;             /* its job object (the answer) */
    int attempt;
    bool requested_now;     /* this call moved the job into cancel_requested */
    bool finalized_now;     /* this call moved it into cancelled */
    uint64_t wait_until_ms; /* the job is not recorded yet: waiting for it until then */
};

static void st_request(struct nf_work *w);
static void st_unrecorded(struct nf_work *w);
static void st_snapshot(struct nf_work *w);
static void st_ask_wm(struct nf_work *w);
static void st_finalize(struct nf_work *w);
static void st_reply(struct nf_work *w);
static void st_produce(struct nf_work *w);
static void st_done(struct nf_work *w);

/* The stopping scheduler's answer to a request whose cancel will not go on. */
static void answer_stopping(struct cancel_work *cw)
{
    if (cw->req) {
        nf_http_set_header(cw->req, "Retry-After", "1");
        nf_http_reply_error(cw->req, 503, "unavailable", NULL, "scheduler stopping, retry");
    }
    cw->req = NULL;
}

static void cancel_dtor(struct nf_work *w)
{
    struct cancel_work *cw = (struct cancel_work *)w;

    answer_stopping(cw); /* teardown with the request unanswered */
    sched_snap_clear(&cw->snap);
    cJSON_Delete(cw->job);
}

enum sched_wm_cancel sched_wm_cancel_parse(int status, const char *body, size_t len)
{
    enum sched_wm_cancel out = SCHED_WM_FAILED;
    const char *state;
    cJSON *o;

    if (status != 200 || !body)
        return SCHED_WM_FAILED;
    o = nf_json_parse(body, len);
    state = nf_json_str(o, "state");
    if (state && strcmp(state, "dequeued") == 0)
        out = SCHED_WM_DEQUEUED;
    else if (state && strcmp(state, "signalled") == 0)
        out = SCHED_WM_SIGNALLED;
    else if (state && strcmp(state, "unknown") == 0)
        out = SCHED_WM_UNKNOWN;
    cJSON_Delete(o);
    return out;
}

/* Takes the row of res into cw (snapshot and job object). -1 when it is incomplete. */
static int take_row(struct cancel_work *cw, const PGresult *res)
{
    struct sched_job job;

    sched_job_from_row(res, 0, &job);
    sched_snap_clear(&cw->snap);
    if (sched_snap_from_job(&job, &cw->snap) < 0 || !job.attempt)
        return -1;
    cw->attempt = (int)strtol(job.attempt, NULL, 10); /* our own column: a number */
    cJSON_Delete(cw->job);
    cw->job = sched_job_json(&job);
    return 0;
}

static void answer_error(struct cancel_work *cw, int status, const char *code, const char *msg)
{
    if (cw->req)
        nf_http_reply_error(cw->req, status, code, NULL, "%s", msg);
    cw->req = NULL;
}

static void on_request(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct cancel_work *cw = arg;
    const char *old, *changed;
    char msg[96];
    enum sched_status st;

    if (nf_work_failed(&cw->w, res, err))
        return;
    if (PQntuples(res) < 1) {
        nf_work_goto(&cw->w, st_unrecorded);
        return;
    }
    old = nf_pg_val(res, 0, "old_status");
    changed = nf_pg_val(res, 0, "changed");
    if (!old || sched_status_parse(old, &st) < 0 || take_row(cw, res) < 0) {
        nf_work_retry(&cw->w, "incomplete job row");
        return;
    }
    snprintf(cw->old_status, sizeof(cw->old_status), "%s", old);
    if (sched_status_terminal(st)) {
        snprintf(msg, sizeof(msg), "the job already finished (%s): it cannot be cancelled", old);
        if (cw->req)
            nf_http_reply_error(cw->req, 409, "job_finished", NULL, "%s", msg);
        cw->req = NULL;
        nf_work_finish(&cw->w);
        return;
    }
    cw->requested_now = changed && strcmp(changed, "1") == 0;
    if (cw->requested_now)
        nf_log_kv(NF_LOG_INFO, "cancel_requested", "job cancel requested", "job_id", cw->job_id,
                  "from", old, NULL);
    nf_work_goto(&cw->w, st_snapshot);
}

static void st_request(struct nf_work *w)
{
    struct cancel_work *cw = (struct cancel_work *)w;
    const char *params[2] = {cw->job_id, cw->user_id};

    w->what = "cancel_request";
    if (nf_pg_query(sched_of(w)->pg, sched_cancel_request_sql, 2, params, on_request, cw) < 0)
        nf_work_retry(w, "could not queue the cancel");
}

/* No row: a job the gateway accepted a moment ago may not be recorded yet. */
static void on_unrecorded(redisReply *reply, void *arg)
{
    struct cancel_work *cw = arg;
    bool pending;

    if (nf_work_closing(&cw->w))
        return;
    /* HMGET user_id ver: this user's snapshot that the scheduler has not written yet */
    pending = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
              reply->element[0]->type == REDIS_REPLY_STRING &&
              strcmp(reply->element[0]->str, cw->user_id) == 0 &&
              reply->element[1]->type == REDIS_REPLY_NIL;
    if (!pending) {
        answer_error(cw, 404, "not_found", "job not found");
        nf_work_finish(&cw->w);
        return;
    }
    if (!cw->wait_until_ms)
        cw->wait_until_ms = nf_now_ms() + UNRECORDED_WAIT_MS;
    if (nf_now_ms() >= cw->wait_until_ms) {
        if (cw->req) {
            nf_http_set_header(cw->req, "Retry-After", "1");
            nf_http_reply_error(cw->req, 503, "unavailable", NULL,
                                "the job was accepted but is not recorded yet, retry");
        }
        cw->req = NULL;
        nf_work_finish(&cw->w);
        return;
    }
    nf_work_delay(&cw->w, UNRECORDED_POLL_MS, st_request);
}

static void st_unrecorded(struct nf_work *w)
{
    struct cancel_work *cw = (struct cancel_work *)w;

    w->what = "cancel_unrecorded";
    (void)nf_redis_cmd(sched_of(w)->redis, on_unrecorded, cw, "HMGET job:%s user_id ver",
                       cw->job_id);
}

/* After the snapshot: ask the worker-manager, unless the job is already cancelled. */
static void on_snapshot(redisReply *reply, void *arg)
{
    struct cancel_work *cw = arg;

    if (sched_redis_failed(&cw->w, reply, 0))
        return;
    if (strcmp(cw->snap.status, "cancel_requested") == 0 && !cw->finalized_now)
        nf_work_goto(&cw->w, st_ask_wm);
    else
        nf_work_goto(&cw->w, st_reply);
}

static void st_snapshot(struct nf_work *w)
{
    struct cancel_work *cw = (struct cancel_work *)w;

    w->what = "cancel_snapshot";
    (void)sched_snapshot_write(sched_of(w), &cw->snap, on_snapshot, cw);
}

static void on_wm(const struct nf_http_resp *resp, void *arg)
{
    struct cancel_work *cw = arg;
    enum sched_wm_cancel st;

    if (nf_work_closing(&cw->w))
        return;
    st = sched_wm_cancel_parse(resp->status, resp->body, resp->len);
    if (st == SCHED_WM_DEQUEUED ||
        (st == SCHED_WM_UNKNOWN && (!cw->req || strcmp(cw->old_status, "queued") == 0))) {
        nf_work_goto(&cw->w, st_finalize);
        return;
    }
    if (st == SCHED_WM_FAILED)
        nf_log_kv(NF_LOG_WARN, "cancel_wm_failed",
                  "worker-manager did not take the cancel, the reconciler asks again", "job_id",
                  cw->job_id, "error", resp->error ? resp->error : "unexpected answer", NULL);
    nf_work_goto(&cw->w, st_reply);
}

static void st_ask_wm(struct nf_work *w)
{
    struct cancel_work *cw = (struct cancel_work *)w;
    char path[64 + NF_ID_MAX];

    w->what = "cancel_wm";
    snprintf(path, sizeof(path), "/internal/jobs/%s/cancel", cw->job_id);
    if (!sched_of(w)->wm ||
        nf_http_client_request(sched_of(w)->wm, "POST", path, NULL, "{}", 2, 0, on_wm, cw) < 0)
        nf_work_goto(w, st_reply);
}

static void on_finalize(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct cancel_work *cw = arg;
    const char *changed;

    if (nf_work_failed(&cw->w, res, err))
        return;
    if (PQntuples(res) < 1 || take_row(cw, res) < 0) {
        nf_work_retry(&cw->w, "job row not found");
        return;
    }
    changed = nf_pg_val(res, 0, "changed");
    cw->finalized_now = changed && strcmp(changed, "1") == 0;
    if (cw->finalized_now)
        nf_log_kv(NF_LOG_INFO, "job_cancelled", "job cancelled", "job_id", cw->job_id, NULL);
    nf_work_goto(&cw->w, st_snapshot); /* then st_reply: the job left cancel_requested */
}

static void st_finalize(struct nf_work *w)
{
    struct cancel_work *cw = (struct cancel_work *)w;
    const char *params[1] = {cw->job_id};

    w->what = "cancel_finalize";
    if (nf_pg_query(sched_of(w)->pg, sched_cancel_finalize_sql, 1, params, on_finalize, cw) < 0)
        nf_work_retry(w, "could not queue the finalize");
}

static void st_reply(struct nf_work *w)
{
    struct cancel_work *cw = (struct cancel_work *)w;

    w->what = "cancel_reply";
    if (cw->req && cw->job) {
        nf_http_reply_json(cw->req, 200, cw->job);
        cw->job = NULL; /* consumed by the reply */
        cw->req = NULL;
    }
    nf_work_goto(w, st_produce);
}

static cJSON *event_data(const struct cancel_work *cw, const char *status)
{
    cJSON *data = nf_json_obj();

    nf_json_add_str(data, "job_id", cw->snap.job_id);
    nf_json_add_str(data, "user_id", cw->snap.user_id);
    nf_json_add_int(data, "attempt", cw->attempt);
    nf_json_add_str(data, "status", status);
    return data;
}

static void st_produce(struct nf_work *w)
{
    struct cancel_work *cw = (struct cancel_work *)w;
    char id[NF_ID_MAX];

    w->what = "cancel_produce";
    if (!cw->requested_now && !cw->finalized_now) {
        nf_work_finish(w);
        return;
    }
    nf_work_produce_begin(w);
    if (cw->requested_now) {
        sched_event_id("cancel_requested", cw->job_id, cw->attempt, id, sizeof(id));
        nf_work_produce(w, NF_TOPIC_JOBS_EVENTS, cw->job_id,
                        nf_event_new("forge.job.cancel_requested", SCHED_SOURCE, cw->job_id, id,
                                     event_data(cw, "cancel_requested")));
    }
    if (cw->finalized_now) {
        sched_event_id("cancelled", cw->job_id, cw->attempt, id, sizeof(id));
        nf_work_produce(w, NF_TOPIC_JOBS_EVENTS, cw->job_id,
                        nf_event_new("forge.job.cancelled", SCHED_SOURCE, cw->job_id, id,
                                     event_data(cw, "cancelled")));
    }
    nf_work_produce_end(w, st_done);
}

static void st_done(struct nf_work *w)
{
    nf_work_finish(w);
}

void sched_route_cancel(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *job_id = nf_http_req_param(req, "job_id");
    const char *user = nf_http_req_header(req, "X-Nf-User-Id");
    struct cancel_work *cw;

    if (!user || !*user || strlen(user) > USER_MAX) {
        nf_http_reply_error(req, 400, "invalid_request", "X-Nf-User-Id",
                            "X-Nf-User-Id is required");
        return;
    }
    if (!job_id || !nf_id_valid("job", job_id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
        return;
    }
    if (ctx->svc->stopping) {
        nf_http_set_header(req, "Retry-After", "1");
        nf_http_reply_error(req, 503, "unavailable", NULL, "scheduler stopping, retry");
        return;
    }
    cw = (struct cancel_work *)nf_work_new(&ctx->work, NULL, sizeof(*cw));
    cw->w.dtor = cancel_dtor;
    cw->req = req;
    snprintf(cw->job_id, sizeof(cw->job_id), "%s", job_id);
    snprintf(cw->user_id, sizeof(cw->user_id), "%s", user);
    nf_work_start(&cw->w, NULL, st_request);
}

static void on_notified(const struct nf_http_resp *resp, void *arg)
{
    (void)resp;
    (void)arg; /* best effort: the job is cancelled already, the wm only stops a worker */
}

void sched_cancel_drain(struct sched_ctx *ctx)
{
    struct nf_work *w;

    if (!ctx->svc->stopping)
        return;
    LIST_FOREACH(w, &ctx->work.works, link)
    {
        if (w->dtor == cancel_dtor && !w->busy)
            answer_stopping((struct cancel_work *)w);
    }
}

void sched_cancel_notify_wm(struct sched_ctx *ctx, const char *job_id)
{
    char path[64 + NF_ID_MAX];

    if (!ctx->wm || ctx->svc->closing)
        return;
    snprintf(path, sizeof(path), "/internal/jobs/%s/cancel", job_id);
    nf_log_kv(NF_LOG_INFO, "cancel_renotify", "cancelled job still active, stopping it again",
              "job_id", job_id, NULL);
    (void)nf_http_client_request(ctx->wm, "POST", path, NULL, "{}", 2, 0, on_notified, NULL);
}

void sched_cancel_recheck(struct sched_ctx *ctx, const char *job_id)
{
    struct cancel_work *cw;

    if (ctx->svc->stopping)
        return;
    cw = (struct cancel_work *)nf_work_new(&ctx->work, NULL, sizeof(*cw));
    cw->w.dtor = cancel_dtor;
    snprintf(cw->job_id, sizeof(cw->job_id), "%s", job_id);
    snprintf(cw->old_status, sizeof(cw->old_status), "cancel_requested");
    nf_work_start(&cw->w, NULL, st_ask_wm);
}
