/*
 * forge.jobs.events: the state machine of DESIGN §4 applied to sched.jobs.
 *
 *   msg --metric?--> forge.job.metric: metrics.c keeps the point (no state change)
 *       --parse----> malformed? log + count + done
 *       --lane-----> one job's events are applied one at a time, in delivery order
 *       --apply----> ONE statement: lock the row, decide (duplicate / echo / apply /
 *                    record / ignore) from the rule of state.c, UPDATE, INSERT the event
 *                    into job_events and, on success, the artifacts (a checkpoint
 *                    event: its checkpoint artifact, whatever the state); returns the row
 *       --snapshot-> job:<id> (when the row changed)
 *       --follow---> retrying event | dead_lettered event + forge.jobs.dlq
 *       --done-----> nf_kafka_msg_done
 *
 * Retries are durable: the statement that sends a failed attempt back to `queued` also
 * sets next_attempt_at = now() + 2^attempt s (capped), and the retry poller of
 * reconciler.c dispatches the new attempt when it is due - a restart in between loses
 * nothing. A redelivered event is a `duplicate` (its id is in job_events): nothing
 * changes, but the follow-ups are repeated when the row still shows this event's outcome
 * (same ids, so consumers dedupe).
 *
 * An assigned / running / progress event for a job that was cancelled meanwhile (the
 * cancel raced the dispatch) is ignored, and the worker-manager is told once more to stop
 * the job (cancel.c), so a cancelled job does not keep a worker busy.
 */
#include "sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_id.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "routes.h"

/* clang-format off */
const char sched_events_sql[] =
    "WITH cur AS ("
    " SELECT * FROM sched.jobs WHERE job_id = $1 FOR UPDATE"
    "), dup AS ("
    " SELECT count(*) AS n FROM sched.job_events WHERE event_id = $2"
    "), dec AS ("
    " SELECT c.job_id, c.status AS old_status, c.attempt AS old_attempt, c.max_attempts,"
    "  CASE"
    "   WHEN d.n > 0 THEN 'duplicate'"
    "   WHEN c.attempt = $4::int AND c.status = ANY($8::text[]) THEN 'echo'"
    "   WHEN (c.attempt = $4::int AND c.status = ANY($5::text[]))"
    "     OR (c.attempt = $4::int - 1 AND c.status = ANY($6::text[]))"
    "     OR (c.attempt >= $4::int AND c.status = ANY($7::text[])) THEN 'apply'"
    "   WHEN $11::bool THEN 'record'"
    "   ELSE 'ignore'"
    "  END AS outcome"
    " FROM cur c CROSS JOIN dup d"
    "), nxt AS ("
    " SELECT job_id,"
    "  CASE"
    "   WHEN $10::text IS NULL THEN coalesce($9::text, old_status)"
    "   WHEN $10::text = 'retryable' AND old_status = 'cancel_requested' THEN 'cancelled'"
    "   WHEN $10::text = 'final' THEN 'failed'"
    "   WHEN old_attempt < max_attempts THEN 'queued'"
    "   ELSE 'dead_lettered'"
    "  END AS status,"
    "  CASE"
    "   WHEN $10::text = 'retryable' AND old_status <> 'cancel_requested'"
    "    AND old_attempt < max_attempts THEN old_attempt + 1"
    "   ELSE greatest(old_attempt, $4::int)"
    "  END AS attempt"
    " FROM dec WHERE outcome = 'apply'"
    "), upd AS ("
    " UPDATE sched.jobs j SET"
    "  status = n.status,"
    "  attempt = n.attempt,"
    "  worker_id = CASE WHEN n.status = 'queued' THEN NULL"
    "   ELSE coalesce($12::text, j.worker_id) END,"
    "  progress = CASE WHEN n.status = 'queued' THEN 0 WHEN n.status = 'succeeded' THEN 1"
    "   ELSE coalesce($13::float8, j.progress) END,"
    /* result.internal is the platform's (a deploy's worker-local endpoint): kept out of
     * the job's public result and its event, read below */
    "  result = CASE WHEN n.status <> 'succeeded' THEN j.result"
    "   WHEN jsonb_typeof($14::jsonb) = 'object' THEN $14::jsonb - 'internal'"
    "   ELSE $14::jsonb END,"
    "  error = CASE WHEN n.status = 'succeeded' THEN NULL"
    "   ELSE coalesce($15::jsonb, j.error) END,"
    "  started_at = CASE WHEN n.status = 'queued' THEN NULL"
    "   WHEN n.status = 'running' AND j.status <> 'running' THEN now()"
    "   ELSE j.started_at END,"
    "  finished_at = CASE WHEN n.status IN ('succeeded', 'failed', 'cancelled',"
    "   'dead_lettered') THEN now() ELSE NULL END,"
    "  next_attempt_at = CASE WHEN n.status = 'queued' AND $10::text IS NOT NULL"
    "   THEN now() + $19::int * interval '1 millisecond'"
    "   WHEN n.status = 'queued' THEN j.next_attempt_at ELSE NULL END,"
    "  updated_at = now(),"
    "  version = j.version + 1"
    " FROM nxt n WHERE j.job_id = n.job_id"
    " RETURNING j.*"
    "), ev AS ("
    " INSERT INTO sched.job_events (event_id, job_id, type, attempt, data, at)"
    " SELECT $2, job_id, $3, $4::int, CASE WHEN jsonb_typeof($16::jsonb) = 'object'"
    "  THEN $16::jsonb #- '{result,internal}' ELSE $16::jsonb END,"
    "  coalesce($17::timestamptz, now())"
    " FROM dec WHERE outcome IN ('apply', 'echo', 'record')"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING event_id"
    "), art AS ("
    /* an object key counts only under the job's own output prefix: a worker cannot
     * register another tenant's object as this job's output */
    " INSERT INTO sched.artifacts (artifact_id, job_id, user_id, name, kind, uri, bytes,"
    "  sha256, object_key)"
    " SELECT a->>'artifact_id', u.job_id, u.user_id, a->>'name', a->>'kind', a->>'uri',"
    "  (a->>'bytes')::bigint, a->>'sha256',"
    "  CASE WHEN starts_with(a->>'object_key', 'tenants/' || u.user_id || '/jobs/' ||"
    "   u.job_id || '/') AND position('/../' IN a->>'object_key') = 0"
    "   THEN a->>'object_key' END"
    " FROM upd u CROSS JOIN jsonb_array_elements(coalesce($18::jsonb, '[]'::jsonb)) a"
    " WHERE u.status = 'succeeded'"
    " ON CONFLICT (artifact_id) DO NOTHING"
    " RETURNING artifact_id, name, kind, uri, bytes, sha256, object_key"
    "), ckp AS ("
    /* forge.job.checkpoint: its checkpoint artifacts are registered at once, whatever
     * the job's state, so a retry resumes from them even after this attempt died; only
     * under the job's own output prefix, as above */
    " INSERT INTO sched.artifacts (artifact_id, job_id, user_id, name, kind, uri, bytes,"
    "  sha256, object_key)"
    " SELECT a->>'artifact_id', c.job_id, c.user_id, a->>'name', 'checkpoint', a->>'uri',"
    "  (a->>'bytes')::bigint, a->>'sha256', a->>'object_key'"
    " FROM cur c CROSS JOIN dec d"
    " CROSS JOIN jsonb_array_elements(coalesce($18::jsonb, '[]'::jsonb)) a"
    " WHERE $3 = 'checkpoint' AND d.outcome = 'record' AND a->>'kind' = 'checkpoint'"
    "  AND starts_with(a->>'object_key', 'tenants/' || c.user_id || '/jobs/' ||"
    "   c.job_id || '/') AND position('/../' IN a->>'object_key') = 0"
    " ON CONFLICT (artifact_id) DO NOTHING"
    " RETURNING artifact_id"
    "), mdl AS ("
    /* a succeeded train (or distill: its student) registers its model artifact in the
     * caller's catalogue under params.output_model, by default <base>-ft-<job id's last 6>;
     * a name taken meanwhile (another train, an upload) keeps its model: this one stays an
     * artifact only. b.p: the param naming the base (model_id, distill's student_model) */
    " INSERT INTO sched.models (model_id, user_id, name, kind, base_model, architecture,"
    "  parameters, stand_in, artifact_id, job_id)"
    " SELECT $20, u.user_id, n.name, 'fine_tuned', u.params->>b.p,"
    "  u.models->b.p->>'architecture',"
    "  CASE WHEN jsonb_typeof(u.models->b.p->'parameters') = 'number'"
    "   THEN (u.models->b.p->>'parameters')::numeric::bigint END,"
    "  coalesce(u.models->b.p->'stand_in' = 'true'::jsonb, false), a.artifact_id, u.job_id"
    " FROM upd u"
    " CROSS JOIN LATERAL (SELECT CASE u.job_type WHEN 'distill' THEN 'student_model'"
    "  ELSE 'model_id' END AS p) b"
    " CROSS JOIN LATERAL (SELECT coalesce(u.params->>'output_model',"
    "  " SCHED_MODEL_DEFAULT_NAME("u.params->>b.p", "u.job_id") ") AS name) n"
    " CROSS JOIN LATERAL (SELECT artifact_id FROM art"
    "  WHERE kind = 'model' AND object_key IS NOT NULL ORDER BY artifact_id LIMIT 1) a"
    " WHERE u.status = 'succeeded' AND u.job_type IN ('train', 'distill')"
    "  AND n.name ~ '^[a-z0-9._-]{1,64}$'"
    " ON CONFLICT (user_id, name) WHERE deleted_at IS NULL DO NOTHING"
    " RETURNING model_id"
    "), dep AS ("
    /* a succeeded deploy records its deployment (migrations/0007): the endpoint's base URL
     * (result.internal.endpoint_url, an http://host:port, its /v1 dropped) is the
     * worker's, never shown to users */
    " INSERT INTO sched.deployments (deployment_id, user_id, job_id, model, endpoint_url,"
    "  region, replicas, worker_id)"
    " SELECT u.result->>'deployment_id', u.user_id, u.job_id,"
    "  coalesce(u.params->>'model_id', ''),"
    "  regexp_replace($14::jsonb #>> '{internal,endpoint_url}', '(/v1)?/?$', ''),"
    "  u.result->>'region',"
    "  CASE WHEN jsonb_typeof(u.result->'replicas') = 'number'"
    "   THEN (u.result->>'replicas')::numeric::int END, u.worker_id"
    " FROM upd u"
    " WHERE u.status = 'succeeded' AND u.job_type = 'deploy'"
    "  AND u.result->>'deployment_id' ~ '^dep-[0-9a-f]{12}$'"
    "  AND $14::jsonb #>> '{internal,endpoint_url}'"
    "   ~ '^http://[A-Za-z0-9.-]+:[0-9]{1,5}(/v1)?/?$'"
    " ON CONFLICT DO NOTHING"
    " RETURNING deployment_id"
    "), r AS ("
    " SELECT * FROM upd"
    " UNION ALL"
    " SELECT * FROM cur WHERE NOT EXISTS (SELECT 1 FROM upd)"
    ")"
    " SELECT " SCHED_JOB_COLS("r.") ","
    "  (SELECT outcome FROM dec) AS outcome,"
    "  (SELECT old_status FROM dec) AS old_status,"
    "  (SELECT old_attempt FROM dec) AS old_attempt,"
    "  (SELECT coalesce(json_agg(x.a ORDER BY x.a->>'artifact_id'), '[]'::json)::text"
    "   FROM (SELECT " SCHED_ARTIFACT_JSON("s.") " AS a FROM sched.artifacts s"
    "         WHERE s.job_id = $1"
    "         UNION ALL"
    "         SELECT " SCHED_ARTIFACT_JSON("n.") " FROM art n) x) AS artifacts"
    " FROM r";

/* clang-format on */

struct ev_work {
    struct nf_work w;
    cJSON *ev; /* the parsed envelope; e points into it */
    struct sched_event e;
    struct sched_snap snap; /* the row after the event */
    cJSON *dispatch;        /* dispatch data of the row (retry, dlq) */
    bool retry, emit_dead_letter, dlq;
    int new_attempt;       /* attempt after a retry */
    int dropped_artifacts; /* malformed artifacts of a succeeded event */
    int backoff_ms;
};

static void st_apply(struct nf_work *w);
static void st_snapshot(struct nf_work *w);
static void st_followups(struct nf_work *w);
static void st_after_followups(struct nf_work *w);

static void ev_dtor(struct nf_work *w)
{
    struct ev_work *ew = (struct ev_work *)w;

    cJSON_Delete(ew->ev);
    cJSON_Delete(ew->dispatch);
    sched_snap_clear(&ew->snap);
}

int sched_events_params(const struct sched_event *ev, int retry_cap_s,
                        const char *params[SCHED_EVENTS_NPARAMS], struct sched_events_bufs *b)
{
    struct sched_rule r;
    cJSON *arts;

    memset(b, 0, sizeof(*b));
    if (sched_state_rule(ev->type, &r) < 0)
        return -1;
    snprintf(b->attempt, sizeof(b->attempt), "%d", ev->attempt);
    snprintf(b->backoff, sizeof(b->backoff), "%d",
             sched_retry_backoff_ms(ev->attempt, retry_cap_s));
    sched_status_array(r.from_same, b->same, sizeof(b->same));
    sched_status_array(r.from_next, b->next, sizeof(b->next));
    sched_status_array(r.from_any, b->any, sizeof(b->any));
    sched_status_array(r.echo, b->echo, sizeof(b->echo));
    if (ev->has_progress)
        snprintf(b->progress, sizeof(b->progress), "%.6f", ev->progress);
    if (r.failure)
        snprintf(b->failure, sizeof(b->failure), "%s",
                 sched_fail_class_retryable(ev->cls) ? "retryable" : "final");
    b->data = nf_json_print(ev->data);
    if (ev->type == SCHED_EV_SUCCEEDED || ev->type == SCHED_EV_CHECKPOINT) {
        if (nf_id_new("mdl", b->model_id, sizeof(b->model_id)) < 0)
            return -1;
        if (ev->result)
            b->result = nf_json_print(ev->result);
        arts = sched_artifacts_clean(ev->artifacts, &b->dropped_artifacts);
        b->artifacts = nf_json_print(arts);
        cJSON_Delete(arts);
    }
    if (ev->error)
        b->error = nf_json_print(ev->error);

    params[0] = ev->job_id;
    params[1] = ev->id;
    params[2] = sched_evtype_name(ev->type);
    params[3] = b->attempt;
    params[4] = b->same;
    params[5] = b->next;
    params[6] = b->any;
    params[7] = b->echo;
    params[8] = r.has_to ? sched_status_name(r.to) : NULL;
    params[9] = r.failure ? b->failure : NULL;
    params[10] = r.record_any ? "true" : "false";
    params[11] = ev->worker_id;
    params[12] = ev->has_progress ? b->progress : NULL;
    params[13] = b->result;
    params[14] = b->error;
    params[15] = b->data;
    params[16] = ev->time;
    params[17] = b->artifacts;
    params[18] = b->backoff;
    params[19] = b->model_id;
    return 0;
}

void sched_events_params_free(struct sched_events_bufs *b)
{
    free(b->data);
    free(b->result);
    free(b->error);
    free(b->artifacts);
    b->data = b->result = b->error = b->artifacts = NULL;
}

void sched_events_handle(struct sched_ctx *ctx, struct nf_kafka_msg *msg)
{
    struct ev_work *ew;
    struct sched_event e;
    const char *why = "payload is not a JSON object";
    cJSON *ev;
    char part[16], off[24];

    ev = nf_json_parse(msg->payload, msg->len);
    if (ev && sched_metric_event(ev)) {
        sched_metrics_handle(ctx, msg, ev); /* a point, not a transition (metrics.c) */
        return;
    }
    if (!ev || sched_event_parse(ev, &e, &why) < 0) {
        snprintf(part, sizeof(part), "%d", (int)msg->partition);
        snprintf(off, sizeof(off), "%lld", (long long)msg->offset);
        nf_log_kv(NF_LOG_WARN, "event_malformed", "malformed job event skipped", "reason", why,
                  "topic", msg->topic, "partition", part, "offset", off, "key", msg->key, NULL);
        nf_metrics_counter_add(ctx->m.malformed_ev, 1);
        cJSON_Delete(ev);
        nf_kafka_msg_done(msg);
        return;
    }
    ew = (struct ev_work *)nf_work_new(&ctx->work, msg, sizeof(*ew));
    ew->w.dtor = ev_dtor;
    ew->ev = ev; /* owned by ew */
    ew->e = e;
    nf_work_start(&ew->w, e.job_id, st_apply);
}

/* An integer column; -1 when NULL or not a number (never expected from our rows). */
static int int_col(const char *text)
{
    char *end;
    long v;

    if (!text || !*text)
        return -1;
    errno = 0;
    v = strtol(text, &end, 10);
    return errno || *end || v < 0 || v > 1000000 ? -1 : (int)v;
}

static void count_ignored(struct sched_ctx *ctx, const struct sched_event *e, const char *reason)
{
    char labels[96];

    snprintf(labels, sizeof(labels), "type=\"%s\",reason=\"%s\"", sched_evtype_name(e->type),
             reason);
    nf_metrics_counter_add(nf_metrics_counter(ctx->metrics, "nf_sched_transitions_ignored_total",
                                              "job events ignored as stale or illegal", labels),
                           1);
}

static void count_applied(struct sched_ctx *ctx, const char *status)
{
    char labels[64];

    snprintf(labels, sizeof(labels), "to=\"%s\"", status);
    nf_metrics_counter_add(nf_metrics_counter(ctx->metrics, "nf_sched_transitions_total",
                                              "job events applied, by resulting status", labels),
                           1);
}

/* Which follow-ups the row calls for, given that this event produced it. */
static void plan_followups(struct ev_work *ew, const char *status, int attempt, bool duplicate)
{
    const struct sched_event *e = &ew->e;

    ew->retry = ew->emit_dead_letter = ew->dlq = false;
    if (e->type == SCHED_EV_FAILED && strcmp(status, "queued") == 0 && attempt == e->attempt + 1) {
        ew->retry = true;
        ew->new_attempt = attempt;
        ew->backoff_ms = sched_retry_backoff_ms(e->attempt, sched_of(&ew->w)->cfg->retry_cap_s);
    } else if (e->type == SCHED_EV_FAILED && strcmp(status, "dead_lettered") == 0 &&
               attempt == e->attempt) {
        ew->emit_dead_letter = true;
        ew->dlq = true;
    } else if (e->type == SCHED_EV_DEAD_LETTERED && strcmp(status, "dead_lettered") == 0 &&
               attempt == e->attempt) {
        ew->dlq = true;
    }
    (void)duplicate;
}

static void on_apply(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct ev_work *ew = arg;
    struct sched_ctx *ctx = sched_of(&ew->w);
    const struct sched_event *e = &ew->e;
    struct sched_job job;
    struct sched_job_state cur;
    struct sched_decision d;
    const char *outcome, *old_status, *old_attempt;
    char ev_attempt[16];
    int attempt;

    if (nf_work_failed(&ew->w, res, err))
        return;
    if (PQntuples(res) < 1) {
        count_ignored(ctx, e, "unknown_job");
        nf_log_kv(NF_LOG_WARN, "event_unknown_job", "event for an unknown job ignored", "job_id",
                  e->job_id, "type", sched_evtype_name(e->type), NULL);
        nf_work_finish(&ew->w);
        return;
    }
    sched_job_from_row(res, 0, &job);
    outcome = nf_pg_val(res, 0, "outcome");
    old_status = nf_pg_val(res, 0, "old_status");
    old_attempt = nf_pg_val(res, 0, "old_attempt");
    snprintf(ev_attempt, sizeof(ev_attempt), "%d", e->attempt);
    if (!outcome || !job.status || !job.attempt) {
        nf_work_retry(&ew->w, "incomplete result row");
        return;
    }
    attempt = int_col(job.attempt);

    if (strcmp(outcome, "ignore") == 0) {
        count_ignored(ctx, e, "stale");
        nf_log_kv(NF_LOG_INFO, "transition_ignored", "stale or illegal event ignored", "job_id",
                  e->job_id, "type", sched_evtype_name(e->type), "event_attempt", ev_attempt,
                  "status", job.status, "attempt", job.attempt, NULL);
        if (strcmp(job.status, "cancelled") == 0 &&
            (e->type == SCHED_EV_ASSIGNED || e->type == SCHED_EV_RUNNING ||
             e->type == SCHED_EV_PROGRESS))
            sched_cancel_notify_wm(ctx, e->job_id); /* the cancel raced the dispatch */
        nf_work_finish(&ew->w);
        return;
    }
    if (strcmp(outcome, "echo") == 0 || strcmp(outcome, "record") == 0) {
        nf_work_finish(&ew->w);
        return;
    }
    if (strcmp(outcome, "apply") == 0) {
        /* cross-check the statement against the reference semantics of state.c */
        if (old_status && old_attempt && sched_status_parse(old_status, &cur.status) == 0) {
            cur.attempt = int_col(old_attempt);
            cur.max_attempts = int_col(job.max_attempts);
            if (sched_state_decide(&cur, e->type, e->attempt, e->cls, &d) == 0 &&
                (strcmp(sched_status_name(d.status), job.status) != 0 || d.attempt != attempt))
                nf_log_kv(NF_LOG_ERROR, "state_mismatch", "sql and state machine disagree",
                          "job_id", e->job_id, "type", sched_evtype_name(e->type), "status",
                          job.status, "expected", sched_status_name(d.status), NULL);
        }
        count_applied(ctx, job.status);
        nf_log_kv(NF_LOG_INFO, "transition_applied", "job event applied", "job_id", e->job_id,
                  "type", sched_evtype_name(e->type), "from", old_status, "to", job.status,
                  "attempt", job.attempt, NULL);
        if (ew->dropped_artifacts)
            nf_log_kv(NF_LOG_WARN, "artifacts_dropped", "malformed artifacts not registered",
                      "job_id", e->job_id, NULL);
    }
    /* apply, or duplicate (a redelivery: repeat what may not have happened) */
    plan_followups(ew, job.status, attempt, strcmp(outcome, "duplicate") == 0);
    if (strcmp(outcome, "apply") == 0 && ew->retry)
        nf_metrics_counter_add(ctx->m.retries, 1);
    if (strcmp(outcome, "apply") == 0 && strcmp(job.status, "dead_lettered") == 0)
        nf_metrics_counter_add(ctx->m.dead_lettered, 1);
    sched_snap_clear(&ew->snap);
    if (sched_snap_from_job(&job, &ew->snap) < 0) {
        nf_work_retry(&ew->w, "incomplete job row");
        return;
    }
    cJSON_Delete(ew->dispatch);
    ew->dispatch = sched_dispatch_data(&job);
    nf_work_goto(&ew->w, st_snapshot);
}

static void st_apply(struct nf_work *w)
{
    struct ev_work *ew = (struct ev_work *)w;
    const char *params[SCHED_EVENTS_NPARAMS];
    struct sched_events_bufs bufs;

    w->what = "apply";
    if (sched_events_params(&ew->e, sched_of(w)->cfg->retry_cap_s, params, &bufs) < 0) {
        nf_work_finish(w); /* cannot happen: the type was parsed */
        return;
    }
    ew->dropped_artifacts = bufs.dropped_artifacts;
    if (nf_pg_query(sched_of(w)->pg, sched_events_sql, SCHED_EVENTS_NPARAMS, params, on_apply, ew) <
        0)
        nf_work_retry(w, "could not queue the update");
    sched_events_params_free(&bufs);
}

static void on_snapshot(redisReply *reply, void *arg)
{
    struct ev_work *ew = arg;

    if (sched_redis_failed(&ew->w, reply, 0))
        return;
    nf_work_goto(&ew->w, st_followups);
}

static void st_snapshot(struct nf_work *w)
{
    struct ev_work *ew = (struct ev_work *)w;

    w->what = "snapshot";
    (void)sched_snapshot_write(sched_of(w), &ew->snap, on_snapshot, ew);
}

/* {job_id, user_id, attempt, status} plus error when known. Caller owns. */
static cJSON *event_data(const struct ev_work *ew, int attempt, const char *status)
{
    cJSON *data = nf_json_obj();

    nf_json_add_str(data, "job_id", ew->snap.job_id);
    nf_json_add_str(data, "user_id", ew->snap.user_id);
    nf_json_add_int(data, "attempt", attempt);
    nf_json_add_str(data, "status", status);
    if (ew->e.error && !cJSON_AddItemToObject(data, "error", cJSON_Duplicate(ew->e.error, true)))
        abort();
    return data;
}

static void st_followups(struct nf_work *w)
{
    struct ev_work *ew = (struct ev_work *)w;
    const char *job_id = ew->snap.job_id;
    char id[NF_ID_MAX];
    cJSON *data;

    w->what = "followups";
    if (!ew->retry && !ew->emit_dead_letter && !ew->dlq) {
        nf_work_finish(w);
        return;
    }
    nf_work_produce_begin(w);
    if (ew->retry) {
        data = event_data(ew, ew->new_attempt, "queued");
        nf_json_add_int(data, "previous_attempt", ew->e.attempt);
        nf_json_add_int(data, "retry_in_ms", ew->backoff_ms);
        sched_event_id("retrying", job_id, ew->new_attempt, id, sizeof(id));
        nf_work_produce(w, NF_TOPIC_JOBS_EVENTS, job_id,
                        nf_event_new("forge.job.retrying", SCHED_SOURCE, job_id, id, data));
    }
    if (ew->emit_dead_letter) {
        data = event_data(ew, ew->e.attempt, "dead_lettered");
        sched_event_id("dead_lettered", job_id, ew->e.attempt, id, sizeof(id));
        nf_work_produce(w, NF_TOPIC_JOBS_EVENTS, job_id,
                        nf_event_new("forge.job.dead_lettered", SCHED_SOURCE, job_id, id, data));
    }
    if (ew->dlq) {
        /* the request fields too, so an operator can resubmit the job */
        data = cJSON_Duplicate(ew->dispatch, true);
        if (!data)
            abort();
        nf_json_add_str(data, "status", "dead_lettered");
        if (ew->e.error &&
            !cJSON_AddItemToObject(data, "error", cJSON_Duplicate(ew->e.error, true)))
            abort();
        sched_event_id("dlq", job_id, ew->e.attempt, id, sizeof(id));
        nf_work_produce(w, NF_TOPIC_JOBS_DLQ, job_id,
                        nf_event_new("forge.job.dead_lettered", SCHED_SOURCE, job_id, id, data));
    }
    nf_work_produce_end(w, st_after_followups);
}

static void st_after_followups(struct nf_work *w)
{
    struct ev_work *ew = (struct ev_work *)w;
    char ms[16], att[16];

    if (ew->retry) {
        /* the row holds next_attempt_at: the retry poller (reconciler.c) dispatches it */
        snprintf(ms, sizeof(ms), "%d", ew->backoff_ms);
        snprintf(att, sizeof(att), "%d", ew->new_attempt);
        nf_log_kv(NF_LOG_INFO, "job_retry_scheduled", "failed attempt will be retried", "job_id",
                  ew->snap.job_id, "attempt", att, "backoff_ms", ms, NULL);
    }
    nf_work_finish(w);
}
