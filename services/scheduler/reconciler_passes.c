/*
 * The reconciler's passes: their statements, their Lua checks and the table the runner
 * (reconciler.c) drives, with the per-row actions.
 *
 *   every retry_poll_ms  retry_due: queued jobs whose next_attempt_at has come
 *                          -> forge.job.dispatch (id "dispatch:<job>:<attempt>")
 *                          -> delivered: next_attempt_at = NULL, dispatched_at = now()
 *
 *   every reconcile_s    stuck (only while the worker-manager's /readyz says 200: one that
 *                          is not consuming has dispatches on their way to it): queued
 *                          jobs not waiting for a retry whose last dispatch is
 *                          older than stuck_s -> Redis: in wm:queue:<type>? leased? which
 *                          attempt does wm:job:<id> know?
 *                            held by the worker-manager        -> nothing
 *                            unknown to it (or an older attempt) -> dispatch the same
 *                                                                  attempt again
 *                            known but neither queued nor leased, for 2 x stuck_s
 *                                                   -> requeue as attempt + 1 (+ queued)
 *                        timeouts: assigned / running / cancel_requested jobs past
 *                          timeout_seconds + timeout_grace_s -> forge.job.failed
 *                          {class timeout} through forge.jobs.events (the state machine
 *                          retries or dead-letters it) + the worker-manager told to stop it
 *                        cancels: jobs in cancel_requested for stuck_s -> cancel.c asks
 *                          the worker-manager again and finishes the cancel when nobody
 *                          holds the job
 *                        snapshots: the jobs changed since the last sweeps, and a page of
 *                          those changed in the last 7 days (the snapshot TTL), walked in
 *                          (updated_at, job_id) order and wrapped around -> job:<id>
 *                          missing, older than the row, or of its version with another
 *                          doc -> rewritten
 */
#include "reconciler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_pg.h"

/* clang-format off */
const char sched_retry_due_sql[] =
    "SELECT " SCHED_JOB_COLS("j.") ", " SCHED_RESUME_OF("j.job_id")
    " FROM sched.jobs j"
    " WHERE j.status = 'queued' AND j.next_attempt_at <= now()"
    " ORDER BY j.next_attempt_at LIMIT $1::int";

/* $1 job ids, $2 their attempts: the dispatch of exactly those attempts is done. */
const char sched_retry_clear_sql[] =
    "UPDATE sched.jobs j SET next_attempt_at = NULL, dispatched_at = now()"
    " FROM unnest($1::text[], $2::int[]) AS d(job_id, attempt)"
    " WHERE j.job_id = d.job_id AND j.attempt = d.attempt AND j.status = 'queued'"
    "  AND j.next_attempt_at IS NOT NULL";

/* $1 stuck_s, $2 the last job id of the previous page ("" from the start), $3 limit */
const char sched_stuck_sql[] =
    "SELECT " SCHED_JOB_COLS("j.") ", " SCHED_RESUME_OF("j.job_id") ","
    " extract(epoch FROM now() - greatest(j.updated_at, coalesce(j.dispatched_at,"
    "  j.updated_at)))::bigint AS age_s"
    " FROM sched.jobs j"
    " WHERE j.status = 'queued' AND j.next_attempt_at IS NULL"
    "  AND greatest(j.updated_at, coalesce(j.dispatched_at, j.updated_at))"
    "      < now() - $1::int * interval '1 second'"
    "  AND j.job_id > $2::text"
    " ORDER BY j.job_id LIMIT $3::int";

static const char dispatched_sql[] =
    "UPDATE sched.jobs j SET dispatched_at = now()"
    " FROM unnest($1::text[], $2::int[]) AS d(job_id, attempt)"
    " WHERE j.job_id = d.job_id AND j.attempt = d.attempt AND j.status = 'queued'";

const char sched_requeue_sql[] =
    "WITH upd AS ("
    " UPDATE sched.jobs j SET attempt = j.attempt + 1, worker_id = NULL, progress = 0,"
    "  started_at = NULL, updated_at = now(), dispatched_at = now(),"
    "  version = j.version + 1"
    " FROM unnest($1::text[], $2::int[]) AS d(job_id, attempt)"
    " WHERE j.job_id = d.job_id AND j.attempt = d.attempt AND j.status = 'queued'"
    "  AND j.next_attempt_at IS NULL"
    " RETURNING j.*"
    "), qev AS ("
    /* recorded now, so the history reads queued before the new attempt's events */
    " INSERT INTO sched.job_events (event_id, job_id, type, attempt, data)"
    " SELECT 'evt_' || left(encode(sha256(convert_to('queued:' || u.job_id || ':' ||"
    "  u.attempt, 'UTF8')), 'hex'), 32), u.job_id, 'queued', u.attempt,"
    "  jsonb_build_object('job_id', u.job_id, 'user_id', u.user_id, 'attempt', u.attempt,"
    "  'status', 'queued')"
    " FROM upd u ON CONFLICT (event_id) DO NOTHING RETURNING 1"
    ")"
    " SELECT " SCHED_JOB_COLS("j.") ", " SCHED_ARTIFACTS_OF("j.job_id") ","
    "  " SCHED_RESUME_OF("j.job_id") " FROM upd j";

/* $1 grace seconds, $2 limit */
const char sched_timeout_sql[] =
    "SELECT " SCHED_JOB_COLS("j.")
    " FROM sched.jobs j"
    " WHERE j.status IN ('assigned', 'running', 'cancel_requested')"
    "  AND j.timeout_seconds IS NOT NULL"
    "  AND coalesce(j.started_at, j.updated_at)"
    "      + (j.timeout_seconds + $1::int) * interval '1 second' < now()"
    " ORDER BY j.updated_at LIMIT $2::int";

static const char cancel_sql[] =
    "SELECT job_id FROM sched.jobs"
    " WHERE status = 'cancel_requested' AND updated_at < now() - $1::int * interval '1 second'"
    " ORDER BY updated_at LIMIT $2::int";

/* $1 position (microseconds since the epoch), $2 position job id, $3 limit */
static const char snap_sql[] =
    "SELECT " SCHED_JOB_COLS("j.") ", " SCHED_ARTIFACTS_OF("j.job_id") ","
    " (extract(epoch FROM j.updated_at) * 1000000)::bigint AS pos_us"
    " FROM sched.jobs j"
    " WHERE j.updated_at > now() - interval '7 days'"
    "  AND (j.updated_at, j.job_id) >"
    "      (timestamptz 'epoch' + $1::bigint * interval '1 microsecond', $2::text)"
    " ORDER BY j.updated_at, j.job_id LIMIT $3::int";

/* $1 seconds back, $2 limit: the jobs changed lately, newest first */
static const char snap_recent_sql[] =
    "SELECT " SCHED_JOB_COLS("j.") ", " SCHED_ARTIFACTS_OF("j.job_id")
    " FROM sched.jobs j"
    " WHERE j.updated_at > now() - $1::int * interval '1 second'"
    " ORDER BY j.updated_at DESC LIMIT $2::int";
/* clang-format on */

const char sched_wm_check_lua[] =
    "local out = {}\n"
    "for i = 1, #KEYS, 3 do\n"
    "  local jid = ARGV[(i + 2) / 3]\n"
    "  local q = redis.call('ZSCORE', KEYS[i], jid)\n"
    "  local leased = redis.call('EXISTS', KEYS[i + 1])\n"
    "  local known = -1\n"
    "  local raw = redis.call('GET', KEYS[i + 2])\n"
    "  if raw then\n"
    "    local ok, v = pcall(cjson.decode, raw)\n"
    "    if ok and type(v) == 'table' and type(v['attempt']) == 'number' then\n"
    "      known = v['attempt']\n"
    "    end\n"
    "  end\n"
    "  table.insert(out, q and 1 or 0)\n"
    "  table.insert(out, leased)\n"
    "  table.insert(out, known)\n"
    "end\n"
    "return out\n";

const char sched_snap_check_lua[] =
    "local out = {}\n"
    "for i = 1, #KEYS do\n"
    "  local v = redis.call('HMGET', KEYS[i], 'ver', 'h')\n"
    "  local ver, want = tonumber(v[1] or ''), tonumber(ARGV[i])\n"
    "  if not ver or ver < want or (ver == want and v[2] ~= ARGV[#KEYS + i]) then\n"
    "    table.insert(out, i)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* One step of each kind, as the step lists below read (see struct rec_step). */
/* clang-format off */
#define CHECK(what_, script_, ask_, answer_) \
    {.kind = REC_CHECK, .what = (what_), .script = (script_), .ask = (ask_), \
     .answer = (answer_)}
#define UPDATE(what_, rows_, sql_, result_) \
    {.kind = REC_UPDATE, .what = (what_), .rows = (rows_), .sql = (sql_), .result = (result_)}
#define PRODUCE(what_, rows_, row_) \
    {.kind = REC_PRODUCE, .what = (what_), .rows = (rows_), .row = (row_)}
#define EACH(rows_, row_, counter_, dispatched_) \
    {.kind = REC_EACH, .rows = (rows_), .row = (row_), .counter = (counter_), \
     .dispatched = (dispatched_)}
#define WRITE(what_, rows_, row_, counter_) \
    {.kind = REC_WRITE, .what = (what_), .rows = (rows_), .row = (row_), .counter = (counter_)}
/* clang-format on */

/* Shared with the runner (reconciler.c), which sits above this file. */
long long rec_num(const char *text, long long def)
{
    char *end;
    long long v;

    if (!text || !*text)
        return def;
    v = strtoll(text, &end, 10);
    return *end ? def : v;
}

static long long reply_int(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    return -1;
}

/* ---- events ---------------------------------------------------------------------------- */

/* forge.job.dispatch of row i's attempt to forge.jobs.<type>. */
static void produce_dispatch(struct rec_work *rw, int i)
{
    const char *job_id = rw->snaps[i].job_id;
    char topic[64], id[NF_ID_MAX];

    snprintf(topic, sizeof(topic), NF_TOPIC_JOBS_PREFIX "%s",
             nf_json_str(rw->dispatch[i], "job_type"));
    sched_event_id("dispatch", job_id, rw->attempt[i], id, sizeof(id));
    nf_work_produce(&rw->w, topic, job_id,
                    nf_event_new("forge.job.dispatch", SCHED_SOURCE, job_id, id,
                                 cJSON_Duplicate(rw->dispatch[i], true)));
}

/* The data of a job event of row i: job_id, user_id, attempt and status. Caller owns. */
static cJSON *event_data(const struct rec_work *rw, int i, const char *status)
{
    cJSON *data = nf_json_obj();

    nf_json_add_str(data, "job_id", rw->snaps[i].job_id);
    nf_json_add_str(data, "user_id", rw->snaps[i].user_id);
    nf_json_add_int(data, "attempt", rw->attempt[i]);
    nf_json_add_str(data, "status", status);
    return data;
}

/* An event of row i to forge.jobs.events, its id from "<kind>:<job>:<attempt>"; data is
 * consumed. */
static void produce_event(struct rec_work *rw, int i, const char *type, const char *kind,
                          cJSON *data)
{
    const char *job_id = rw->snaps[i].job_id;
    char id[NF_ID_MAX];

    sched_event_id(kind, job_id, rw->attempt[i], id, sizeof(id));
    nf_work_produce(&rw->w, NF_TOPIC_JOBS_EVENTS, job_id,
                    nf_event_new(type, SCHED_SOURCE, job_id, id, data));
}

/* ---- retry_due ------------------------------------------------------------------------- */

static void retry_logged(struct rec_work *rw, int i)
{
    char att[16];

    snprintf(att, sizeof(att), "%d", rw->attempt[i]);
    nf_log_kv(NF_LOG_INFO, "job_redispatched", "retry dispatched", "job_id", rw->snaps[i].job_id,
              "attempt", att, NULL);
}

static const struct rec_step retry_steps[] = {
    PRODUCE("retry_dispatch", REC_ROWS_ALL, produce_dispatch),
    UPDATE("retry_clear", REC_ROWS_ALL, sched_retry_clear_sql, NULL),
    EACH(REC_ROWS_ALL, retry_logged, REC_C_RETRY_DISPATCH, true),
};

/* ---- stuck queued ---------------------------------------------------------------------- */

/* Walks on next time; a short page means the end: start over. */
static void stuck_paged(struct rec_work *rw, const PGresult *res)
{
    struct sched_reconciler *rec = sched_of(&rw->w)->rec;

    if (PQntuples(res) < REC_BATCH || rw->n == 0)
        rec->stuck_after[0] = '\0';
    else
        snprintf(rec->stuck_after, sizeof(rec->stuck_after), "%s", rw->snaps[rw->n - 1].job_id);
}

/* sched_wm_check_lua: per row wm:queue:<type>, wm:lease:<id>, wm:job:<id>; ARGV the ids. */
static void stuck_ask(struct rec_work *rw, struct nf_redis_script *script, nf_redis_cb cb)
{
    const char **argv = nf_xcalloc((size_t)rw->n * 4, sizeof(*argv));
    char(*keys)[3][NF_ID_MAX + 32] = nf_xcalloc((size_t)rw->n, sizeof(*keys));
    int i;

    for (i = 0; i < rw->n; i++) {
        snprintf(keys[i][0], sizeof(keys[i][0]), "wm:queue:%s",
                 nf_json_str(rw->dispatch[i], "job_type"));
        snprintf(keys[i][1], sizeof(keys[i][1]), "wm:lease:%s", rw->snaps[i].job_id);
        snprintf(keys[i][2], sizeof(keys[i][2]), "wm:job:%s", rw->snaps[i].job_id);
        argv[(size_t)3 * i] = keys[i][0];
        argv[(size_t)3 * i + 1] = keys[i][1];
        argv[(size_t)3 * i + 2] = keys[i][2];
        argv[(size_t)3 * rw->n + i] = rw->snaps[i].job_id;
    }
    (void)nf_redis_eval(sched_of(&rw->w)->redis, script, cb, rw, 3 * rw->n, 4 * rw->n, argv, NULL);
    free(argv);
    free(keys);
}

/* Per row {in_queue, leased, known attempt}: what the worker-manager does not hold is
 * dispatched again, or requeued when it saw this attempt and lost it. */
static int stuck_answer(struct rec_work *rw, const redisReply *reply)
{
    int stuck_s = sched_of(&rw->w)->cfg->stuck_s;
    long long in_queue, leased, known;
    int i, lost = 0;

    if (reply->elements != (size_t)rw->n * 3)
        return -1;
    for (i = 0; i < rw->n; i++) {
        in_queue = reply_int(reply->element[(size_t)3 * i]);
        leased = reply_int(reply->element[(size_t)3 * i + 1]);
        known = reply_int(reply->element[(size_t)3 * i + 2]);
        rw->action[i] = REC_A_NONE;
        if (in_queue == 1 || leased == 1)
            continue; /* the worker-manager holds it: waiting for a matching worker */
        if (known < rw->attempt[i])
            rw->action[i] = REC_A_REDISPATCH;
        else if (rw->age_s[i] >= 2LL * stuck_s)
            rw->action[i] = REC_A_REQUEUE; /* it saw this attempt, then lost it */
        if (rw->action[i] != REC_A_NONE) {
            lost++;
            nf_log_kv(NF_LOG_WARN, "dispatch_lost", "queued job not held by the worker-manager",
                      "job_id", rw->snaps[i].job_id, "action",
                      rw->action[i] == REC_A_REQUEUE ? "requeue" : "redispatch", NULL);
        }
    }
    return lost;
}

/* The requeued rows replace theirs (new attempt, version); the others were requeued or
 * moved on by someone else meanwhile: left alone. */
static void stuck_requeued(struct rec_work *rw, const PGresult *res)
{
    struct sched_job job;
    int i, r, n = PQntuples(res);

    for (i = 0; i < rw->n; i++) {
        if (rw->action[i] != REC_A_REQUEUE)
            continue;
        rw->action[i] = REC_A_NONE;
        for (r = 0; r < n; r++) {
            sched_job_from_row(res, r, &job);
            if (!job.job_id || strcmp(job.job_id, rw->snaps[i].job_id) != 0 || !job.attempt)
                continue;
            sched_snap_clear(&rw->snaps[i]);
            if (sched_snap_from_job(&job, &rw->snaps[i]) < 0)
                break;
            cJSON_Delete(rw->dispatch[i]);
            rw->dispatch[i] = sched_dispatch_data(&job);
            rw->attempt[i] = (int)rec_num(job.attempt, 0);
            rw->action[i] = REC_A_REQUEUE;
            break;
        }
    }
}

/* The lost attempt dispatched again, or the new attempt dispatched and queued. */
static void stuck_emit(struct rec_work *rw, int i)
{
    produce_dispatch(rw, i);
    if (rw->action[i] == REC_A_REQUEUE)
        produce_event(rw, i, "forge.job.queued", "queued", event_data(rw, i, "queued"));
}

static const struct rec_step stuck_steps[] = {
    CHECK("stuck_check", REC_S_WM_CHECK, stuck_ask, stuck_answer),
    UPDATE("stuck_requeue", REC_A_REQUEUE, sched_requeue_sql, stuck_requeued),
    EACH(REC_A_REQUEUE, NULL, REC_C_REQUEUED, false),
    PRODUCE("stuck_dispatch", REC_ROWS_ACTED, stuck_emit),
    UPDATE("stuck_mark", REC_A_REDISPATCH, dispatched_sql, NULL),
    EACH(REC_A_REDISPATCH, NULL, REC_C_REDISPATCHED, true),
    WRITE("stuck_snapshot", REC_A_REQUEUE, NULL, REC_C_NONE),
};

/* ---- timeouts -------------------------------------------------------------------------- */

/* forge.job.failed {class timeout} of row i. */
static void timeout_emit(struct rec_work *rw, int i)
{
    int grace_s = sched_of(&rw->w)->cfg->timeout_grace_s;
    cJSON *data = event_data(rw, i, "failed"), *error;
    char msg[160];

    error = cJSON_AddObjectToObject(data, "error");
    if (!error)
        abort();
    snprintf(msg, sizeof(msg),
             "the job ran past timeout_seconds=%lld (plus %d s grace) without finishing",
             nf_json_int(rw->dispatch[i], "timeout_seconds", 0), grace_s);
    nf_json_add_str(error, "code", "timeout");
    nf_json_add_str(error, "message", msg);
    nf_json_add_str(error, "class", "timeout");
    produce_event(rw, i, "forge.job.failed", "timeout", data);
}

static void timed_out(struct rec_work *rw, int i)
{
    nf_log_kv(NF_LOG_WARN, "job_timed_out", "job ran past its timeout, failed", "job_id",
              rw->snaps[i].job_id, "status", rw->snaps[i].status, NULL);
    sched_cancel_notify_wm(sched_of(&rw->w), rw->snaps[i].job_id); /* stop the handler */
}

static const struct rec_step timeout_steps[] = {
    PRODUCE("timeout_fail", REC_ROWS_ALL, timeout_emit),
    EACH(REC_ROWS_ALL, timed_out, REC_C_TIMEOUT, false),
};

/* ---- stuck cancels --------------------------------------------------------------------- */

static void cancel_recheck(struct rec_work *rw, int i)
{
    sched_cancel_recheck(sched_of(&rw->w), rw->snaps[i].job_id);
}

static const struct rec_step cancel_steps[] = {
    EACH(REC_ROWS_ALL, cancel_recheck, REC_C_CANCEL_CHECK, false),
};

/* ---- snapshots ------------------------------------------------------------------------- */

/* Walks on next time from the page's last row; a short page means the end: start over. */
static void snap_paged(struct rec_work *rw, const PGresult *res)
{
    struct sched_reconciler *rec = sched_of(&rw->w)->rec;
    int n = PQntuples(res);

    if (n < REC_SNAP_BATCH) {
        rec->snap_after_us = 0;
        rec->snap_after_id[0] = '\0';
    } else {
        rec->snap_after_us = rec_num(nf_pg_val(res, n - 1, "pos_us"), 0);
        snprintf(rec->snap_after_id, sizeof(rec->snap_after_id), "%s",
                 nf_pg_val(res, n - 1, "job_id"));
    }
}

/* sched_snap_check_lua: KEYS job:<id>...; ARGV the rows' versions, then their doc hashes. */
static void snap_ask(struct rec_work *rw, struct nf_redis_script *script, nf_redis_cb cb)
{
    const char **argv = nf_xcalloc((size_t)rw->n * 3, sizeof(*argv));
    char(*keys)[NF_ID_MAX + 8] = nf_xcalloc((size_t)rw->n, sizeof(*keys));
    char(*vers)[24] = nf_xcalloc((size_t)rw->n, sizeof(*vers));
    char(*hashes)[SCHED_DOC_HASH_LEN + 1] = nf_xcalloc((size_t)rw->n, sizeof(*hashes));
    int i;

    for (i = 0; i < rw->n; i++) {
        snprintf(keys[i], sizeof(keys[i]), "job:%s", rw->snaps[i].job_id);
        snprintf(vers[i], sizeof(vers[i]), "%lld", rw->snaps[i].version);
        sched_doc_hash(rw->snaps[i].doc, hashes[i]);
        argv[i] = keys[i];
        argv[rw->n + i] = vers[i];
        argv[(size_t)2 * rw->n + i] = hashes[i];
    }
    (void)nf_redis_eval(sched_of(&rw->w)->redis, script, cb, rw, rw->n, 3 * rw->n, argv, NULL);
    free(argv);
    free(keys);
    free(vers);
    free(hashes);
}

/* The 1-based indexes of the snapshots to rewrite. */
static int snap_answer(struct rec_work *rw, const redisReply *reply)
{
    long long idx;
    size_t i;
    int n = 0;

    memset(rw->action, 0, sizeof(*rw->action) * (size_t)rw->n);
    for (i = 0; i < reply->elements; i++) {
        idx = reply_int(reply->element[i]);
        if (idx >= 1 && idx <= rw->n && rw->action[idx - 1] != REC_A_REWRITE) {
            rw->action[idx - 1] = REC_A_REWRITE;
            n++;
        }
    }
    return n;
}

static void snap_repaired(struct rec_work *rw, int i)
{
    nf_log_kv(NF_LOG_INFO, "snapshot_repaired", "job snapshot rewritten from postgres", "job_id",
              rw->snaps[i].job_id, NULL);
}

static const struct rec_step snap_steps[] = {
    CHECK("snapshot_check", REC_S_SNAP_CHECK, snap_ask, snap_answer),
    WRITE("snapshot_repair", REC_A_REWRITE, snap_repaired, REC_C_REPAIRED),
};

/* ---- the table ------------------------------------------------------------------------- */

#define STEPS(a) (a), (int)(sizeof(a) / sizeof((a)[0]))
#define STUCK_AFTER REC_ARG_STUCK_S, REC_ARG_STUCK_AFTER
#define SNAP_AFTER REC_ARG_SNAP_POS, REC_ARG_SNAP_AFTER

/* clang-format off */
const struct rec_pass_def rec_passes[REC_NPASSES] = {
    /*                    name                page query           paged        steps
     *                    limit           its arguments        sweep  ids only */
    [REC_RETRY]       = {"retry_due",        sched_retry_due_sql, NULL,        STEPS(retry_steps),
                         REC_BATCH,      {REC_ARG_NONE},      false, false},
    [REC_STUCK]       = {"stuck_queued",     sched_stuck_sql,     stuck_paged, STEPS(stuck_steps),
                         REC_BATCH,      {STUCK_AFTER},       true,  false},
    [REC_TIMEOUT]     = {"timeouts",         sched_timeout_sql,   NULL,        STEPS(timeout_steps),
                         REC_BATCH,      {REC_ARG_GRACE_S},   true,  false},
    [REC_CANCEL]      = {"stuck_cancels",    cancel_sql,          NULL,        STEPS(cancel_steps),
                         REC_BATCH,      {REC_ARG_STUCK_S},   true,  true},
    [REC_SNAP]        = {"snapshots",        snap_sql,            snap_paged,  STEPS(snap_steps),
                         REC_SNAP_BATCH, {SNAP_AFTER},        true,  false},
    [REC_SNAP_RECENT] = {"recent_snapshots", snap_recent_sql,     NULL,        STEPS(snap_steps),
                         REC_SNAP_BATCH, {REC_ARG_RECENT_S},  true,  false},
};
/* clang-format on */
