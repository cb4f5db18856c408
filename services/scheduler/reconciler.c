/*
 * The reconciler: periodic passes that repair what a lost message, a crash or a Redis
 * that lost its data left behind. Postgres is the truth; every pass reads it, compares
 * and acts idempotently (deterministic event ids, versioned snapshot writes), so several
 * scheduler copies may run the passes at once.
 *
 *   every retry_poll_ms  retry_due: queued jobs whose next_attempt_at has come
 *                          -> forge.job.dispatch (id "dispatch:<job>:<attempt>")
 *                          -> delivered: next_attempt_at = NULL, dispatched_at = now()
 *
 *   every reconcile_s    stuck: queued jobs not waiting for a retry whose last dispatch is
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
 *
 * Each pass is a work item (work.c) without a Kafka message: backend failures retry with
 * backoff, shutdown waits for the busy ones, and at most one pass of each kind is alive.
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"

#define BATCH 100
#define SNAP_BATCH 200
#define ARRAY_MAX (BATCH * (NF_ID_MAX + 1) + 8)

enum pass { P_RETRY, P_STUCK, P_TIMEOUT, P_CANCEL, P_SNAP, P_SNAP_RECENT, NPASSES };

static const char *const pass_names[NPASSES] = {
    "retry_due", "stuck_queued", "timeouts", "stuck_cancels", "snapshots", "recent_snapshots"};

struct sched_reconciler {
    struct event *retry_tick, *sweep_tick;
    bool busy[NPASSES];                 /* a pass of this kind is alive */
    char stuck_after[NF_ID_MAX];        /* the stuck pass walks queued jobs by id */
    long long snap_after_us;            /* the snapshot pass's position: updated_at ... */
    char snap_after_id[NF_ID_MAX];      /* ... and job id */
    struct nf_counter *redispatched;    /* lost dispatches produced again */
    struct nf_counter *requeued;        /* stuck attempts requeued as attempt + 1 */
    struct nf_counter *retry_dispatch;  /* due retries dispatched */
    struct nf_counter *timeouts;        /* jobs failed for running past their timeout */
    struct nf_counter *cancel_checks;   /* stuck cancels asked again */
    struct nf_counter *repaired;        /* snapshots rewritten */
    struct nf_redis_script *wm_check;   /* sched_wm_check_lua, owned by ctx->redis */
    struct nf_redis_script *snap_check; /* sched_snap_check_lua, owned by ctx->redis */
};

/* clang-format off */
#define ARTIFACTS_OF_J                                                                     \
    "(SELECT coalesce(json_agg(x.a ORDER BY x.a->>'artifact_id'), '[]'::json)::text"       \
    "  FROM (SELECT " SCHED_ARTIFACT_JSON("s.") " AS a FROM sched.artifacts s"             \
    "        WHERE s.job_id = j.job_id) x) AS artifacts"

const char sched_retry_due_sql[] =
    "SELECT " SCHED_JOB_COLS("j.")
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
    "SELECT " SCHED_JOB_COLS("j.") ","
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
    " SELECT " SCHED_JOB_COLS("j.") ", " ARTIFACTS_OF_J " FROM upd j";

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
    "SELECT " SCHED_JOB_COLS("j.") ", " ARTIFACTS_OF_J ","
    " (extract(epoch FROM j.updated_at) * 1000000)::bigint AS pos_us"
    " FROM sched.jobs j"
    " WHERE j.updated_at > now() - interval '7 days'"
    "  AND (j.updated_at, j.job_id) >"
    "      (timestamptz 'epoch' + $1::bigint * interval '1 microsecond', $2::text)"
    " ORDER BY j.updated_at, j.job_id LIMIT $3::int";

/* $1 seconds back, $2 limit: the jobs changed lately, newest first */
static const char snap_recent_sql[] =
    "SELECT " SCHED_JOB_COLS("j.") ", " ARTIFACTS_OF_J
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

/* One pass: the work item plus what the kind needs. Rows are copied out of results. */
struct pass_work {
    struct sched_work w;
    enum pass kind;
    struct sched_snap *snaps; /* rows as snapshots (job_id, user_id, status, doc, version) */
    cJSON **dispatch;         /* per row: dispatch data (retry, stuck) */
    int *attempt;             /* per row */
    int *action;              /* stuck: per row, what to do (enum below) */
    long long *age_s;         /* stuck: per row */
    int n;                    /* rows */
    int next;                 /* snapshot writes: the next row to write */
    struct nf_redis_script *script;
};

enum { A_NONE, A_REDISPATCH, A_REQUEUE };

/* An integer column of our own rows; def when NULL or not a number. */
static long long num(const char *text, long long def)
{
    char *end;
    long long v;

    if (!text || !*text)
        return def;
    v = strtoll(text, &end, 10);
    return *end ? def : v;
}

static void pass_dtor(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    int i;

    if (w->ctx->rec)
        w->ctx->rec->busy[pw->kind] = false;
    for (i = 0; i < pw->n; i++) {
        sched_snap_clear(&pw->snaps[i]);
        if (pw->dispatch)
            cJSON_Delete(pw->dispatch[i]);
    }
    free(pw->snaps);
    free(pw->dispatch);
    free(pw->attempt);
    free(pw->action);
    free(pw->age_s);
}

/* Copies the rows of res into pw (snapshots, dispatch data, attempts). */
static void take_rows(struct pass_work *pw, const PGresult *res)
{
    struct sched_job job;
    int i, n = PQntuples(res);

    for (i = 0; i < pw->n; i++) { /* a retried stage read the rows again */
        sched_snap_clear(&pw->snaps[i]);
        cJSON_Delete(pw->dispatch[i]);
    }
    free(pw->snaps);
    free(pw->dispatch);
    free(pw->attempt);
    free(pw->action);
    free(pw->age_s);
    pw->n = 0;
    pw->snaps = nf_xcalloc((size_t)n + 1, sizeof(*pw->snaps));
    pw->dispatch = nf_xcalloc((size_t)n + 1, sizeof(cJSON *));
    pw->attempt = nf_xcalloc((size_t)n + 1, sizeof(*pw->attempt));
    pw->action = nf_xcalloc((size_t)n + 1, sizeof(*pw->action));
    pw->age_s = nf_xcalloc((size_t)n + 1, sizeof(*pw->age_s));
    for (i = 0; i < n; i++) {
        sched_job_from_row(res, i, &job);
        if (!job.attempt || sched_snap_from_job(&job, &pw->snaps[pw->n]) < 0)
            continue;
        pw->dispatch[pw->n] = sched_dispatch_data(&job);
        pw->attempt[pw->n] = (int)num(job.attempt, 0);
        pw->age_s[pw->n] = num(nf_pg_val(res, i, "age_s"), 0);
        pw->n++;
    }
}

/* "{a,b}" of the job ids and "{1,2}" of the attempts of the rows with action `act`
 * (-1: every row). Returns how many rows matched. */
static int arrays_of(const struct pass_work *pw, int act, char *ids, char *atts, size_t len)
{
    size_t a = 0, b = 0;
    int i, n = 0;

    ids[a++] = '{';
    atts[b++] = '{';
    for (i = 0; i < pw->n; i++) {
        if (act >= 0 && pw->action[i] != act)
            continue;
        a += (size_t)snprintf(ids + a, len - a, "%s%s", n ? "," : "", pw->snaps[i].job_id);
        b += (size_t)snprintf(atts + b, len - b, "%s%d", n ? "," : "", pw->attempt[i]);
        n++;
    }
    snprintf(ids + a, len - a, "}");
    snprintf(atts + b, len - b, "}");
    return n;
}

static void produce_dispatch(struct pass_work *pw, int i)
{
    const char *job_id = pw->snaps[i].job_id;
    char topic[64], id[NF_ID_MAX];

    snprintf(topic, sizeof(topic), "forge.jobs.%s", nf_json_str(pw->dispatch[i], "job_type"));
    sched_event_id("dispatch", job_id, pw->attempt[i], id, sizeof(id));
    sched_work_produce(&pw->w, topic, job_id,
                       nf_event_new("forge.job.dispatch", SCHED_SOURCE, job_id, id,
                                    cJSON_Duplicate(pw->dispatch[i], true)));
}

static bool pg_failed(struct pass_work *pw, const PGresult *res, const char *err)
{
    if (pw->w.ctx->closing) {
        pw->w.busy = false;
        return true;
    }
    if (!res) {
        sched_work_retry(&pw->w, err);
        return true;
    }
    return false;
}

/* ---- retry_due ------------------------------------------------------------------------ */

static void retry_produce(struct sched_work *w);
static void retry_clear(struct sched_work *w);

static void on_retry_rows(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;

    if (pg_failed(pw, res, err))
        return;
    take_rows(pw, res);
    if (pw->n == 0) {
        sched_work_finish(&pw->w);
        return;
    }
    sched_work_goto(&pw->w, retry_produce);
}

static void retry_rows(struct sched_work *w)
{
    char limit[16];
    const char *params[1] = {limit};

    w->what = "retry_due";
    snprintf(limit, sizeof(limit), "%d", BATCH);
    if (nf_pg_query(w->ctx->pg, sched_retry_due_sql, 1, params, on_retry_rows, w) < 0)
        sched_work_retry(w, "could not queue the query");
}

static void retry_produce(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    int i;

    w->what = "retry_dispatch";
    sched_work_produce_begin(w);
    for (i = 0; i < pw->n; i++)
        produce_dispatch(pw, i);
    sched_work_produce_end(w, retry_clear);
}

static void on_retry_cleared(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;
    struct sched_ctx *ctx = pw->w.ctx;
    char att[16];
    int i;

    if (pg_failed(pw, res, err))
        return;
    for (i = 0; i < pw->n; i++) {
        snprintf(att, sizeof(att), "%d", pw->attempt[i]);
        nf_log_kv(NF_LOG_INFO, "job_redispatched", "retry dispatched", "job_id",
                  pw->snaps[i].job_id, "attempt", att, NULL);
    }
    nf_metrics_counter_add(ctx->rec->retry_dispatch, (uint64_t)pw->n);
    nf_metrics_counter_add(ctx->m.dispatched, (uint64_t)pw->n);
    sched_work_finish(&pw->w);
}

static void retry_clear(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    char *ids = nf_xmalloc(ARRAY_MAX), *atts = nf_xmalloc(ARRAY_MAX);
    const char *params[2] = {ids, atts};

    w->what = "retry_clear";
    arrays_of(pw, -1, ids, atts, ARRAY_MAX);
    if (nf_pg_query(w->ctx->pg, sched_retry_clear_sql, 2, params, on_retry_cleared, pw) < 0)
        sched_work_retry(w, "could not queue the update");
    free(ids);
    free(atts);
}

/* ---- stuck queued ---------------------------------------------------------------------- */

static void stuck_check(struct sched_work *w);
static void stuck_requeue(struct sched_work *w);
static void stuck_produce(struct sched_work *w);
static void stuck_mark(struct sched_work *w);

static void on_stuck_rows(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;
    struct sched_reconciler *rec = pw->w.ctx->rec;

    if (pg_failed(pw, res, err))
        return;
    take_rows(pw, res);
    /* walk on next time; a short page means the end: start over */
    if (PQntuples(res) < BATCH || pw->n == 0)
        rec->stuck_after[0] = '\0';
    else
        snprintf(rec->stuck_after, sizeof(rec->stuck_after), "%s", pw->snaps[pw->n - 1].job_id);
    if (pw->n == 0) {
        sched_work_finish(&pw->w);
        return;
    }
    sched_work_goto(&pw->w, stuck_check);
}

static void stuck_rows(struct sched_work *w)
{
    struct sched_reconciler *rec = w->ctx->rec;
    char stuck[16], limit[16];
    const char *params[3] = {stuck, rec->stuck_after, limit};

    w->what = "stuck_queued";
    snprintf(stuck, sizeof(stuck), "%d", w->ctx->cfg.stuck_s);
    snprintf(limit, sizeof(limit), "%d", BATCH);
    if (nf_pg_query(w->ctx->pg, sched_stuck_sql, 3, params, on_stuck_rows, w) < 0)
        sched_work_retry(w, "could not queue the query");
}

static long long reply_int(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    return -1;
}

static void on_stuck_check(redisReply *reply, void *arg)
{
    struct pass_work *pw = arg;
    struct sched_ctx *ctx = pw->w.ctx;
    long long in_queue, leased, known;
    int i, lost = 0;

    if (ctx->closing) {
        pw->w.busy = false;
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != (size_t)pw->n * 3) {
        sched_work_retry(&pw->w, reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                           : "redis unavailable");
        return;
    }
    for (i = 0; i < pw->n; i++) {
        in_queue = reply_int(reply->element[(size_t)3 * i]);
        leased = reply_int(reply->element[(size_t)3 * i + 1]);
        known = reply_int(reply->element[(size_t)3 * i + 2]);
        pw->action[i] = A_NONE;
        if (in_queue == 1 || leased == 1)
            continue; /* the worker-manager holds it: waiting for a matching worker */
        if (known < pw->attempt[i])
            pw->action[i] = A_REDISPATCH;
        else if (pw->age_s[i] >= 2LL * ctx->cfg.stuck_s)
            pw->action[i] = A_REQUEUE; /* it saw this attempt, then lost it */
        if (pw->action[i] != A_NONE) {
            lost++;
            nf_log_kv(NF_LOG_WARN, "dispatch_lost", "queued job not held by the worker-manager",
                      "job_id", pw->snaps[i].job_id, "action",
                      pw->action[i] == A_REQUEUE ? "requeue" : "redispatch", NULL);
        }
    }
    if (lost == 0) {
        sched_work_finish(&pw->w);
        return;
    }
    sched_work_goto(&pw->w, stuck_requeue);
}

static void stuck_check(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    const char **argv = nf_xcalloc((size_t)pw->n * 4, sizeof(*argv));
    char(*keys)[3][NF_ID_MAX + 32] = nf_xcalloc((size_t)pw->n, sizeof(*keys));
    int i;

    w->what = "stuck_check";
    for (i = 0; i < pw->n; i++) {
        snprintf(keys[i][0], sizeof(keys[i][0]), "wm:queue:%s",
                 nf_json_str(pw->dispatch[i], "job_type"));
        snprintf(keys[i][1], sizeof(keys[i][1]), "wm:lease:%s", pw->snaps[i].job_id);
        snprintf(keys[i][2], sizeof(keys[i][2]), "wm:job:%s", pw->snaps[i].job_id);
        argv[(size_t)3 * i] = keys[i][0];
        argv[(size_t)3 * i + 1] = keys[i][1];
        argv[(size_t)3 * i + 2] = keys[i][2];
        argv[(size_t)3 * pw->n + i] = pw->snaps[i].job_id;
    }
    (void)nf_redis_eval(w->ctx->redis, pw->script, on_stuck_check, pw, 3 * pw->n, 4 * pw->n, argv,
                        NULL);
    free(argv);
    free(keys);
}

static void on_requeued(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;
    struct sched_job job;
    int i, r, n;

    if (pg_failed(pw, res, err))
        return;
    n = PQntuples(res);
    /* the requeued rows replace theirs (new attempt, version); the others were requeued
     * or moved on by someone else meanwhile: left alone */
    for (i = 0; i < pw->n; i++) {
        if (pw->action[i] != A_REQUEUE)
            continue;
        pw->action[i] = A_NONE;
        for (r = 0; r < n; r++) {
            sched_job_from_row(res, r, &job);
            if (!job.job_id || strcmp(job.job_id, pw->snaps[i].job_id) != 0 || !job.attempt)
                continue;
            sched_snap_clear(&pw->snaps[i]);
            if (sched_snap_from_job(&job, &pw->snaps[i]) < 0)
                break;
            cJSON_Delete(pw->dispatch[i]);
            pw->dispatch[i] = sched_dispatch_data(&job);
            pw->attempt[i] = (int)num(job.attempt, 0);
            pw->action[i] = A_REQUEUE;
            nf_metrics_counter_add(pw->w.ctx->rec->requeued, 1);
            break;
        }
    }
    sched_work_goto(&pw->w, stuck_produce);
}

static void stuck_requeue(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    char *ids = nf_xmalloc(ARRAY_MAX), *atts = nf_xmalloc(ARRAY_MAX);
    const char *params[2] = {ids, atts};

    w->what = "stuck_requeue";
    if (arrays_of(pw, A_REQUEUE, ids, atts, ARRAY_MAX) == 0) {
        free(ids);
        free(atts);
        sched_work_goto(w, stuck_produce);
        return;
    }
    if (nf_pg_query(w->ctx->pg, sched_requeue_sql, 2, params, on_requeued, pw) < 0)
        sched_work_retry(w, "could not queue the requeue");
    free(ids);
    free(atts);
}

static void stuck_produce(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    char id[NF_ID_MAX];
    cJSON *data;
    int i;

    w->what = "stuck_dispatch";
    sched_work_produce_begin(w);
    for (i = 0; i < pw->n; i++) {
        if (pw->action[i] == A_NONE)
            continue;
        produce_dispatch(pw, i);
        if (pw->action[i] != A_REQUEUE)
            continue;
        data = nf_json_obj();
        nf_json_add_str(data, "job_id", pw->snaps[i].job_id);
        nf_json_add_str(data, "user_id", pw->snaps[i].user_id);
        nf_json_add_int(data, "attempt", pw->attempt[i]);
        nf_json_add_str(data, "status", "queued");
        sched_event_id("queued", pw->snaps[i].job_id, pw->attempt[i], id, sizeof(id));
        sched_work_produce(
            w, SCHED_TOPIC_EVENTS, pw->snaps[i].job_id,
            nf_event_new("forge.job.queued", SCHED_SOURCE, pw->snaps[i].job_id, id, data));
    }
    sched_work_produce_end(w, stuck_mark);
}

static void stuck_snapshots(struct sched_work *w);

static void on_marked(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;
    int i, n = 0;

    if (pg_failed(pw, res, err))
        return;
    for (i = 0; i < pw->n; i++)
        if (pw->action[i] == A_REDISPATCH)
            n++;
    nf_metrics_counter_add(pw->w.ctx->rec->redispatched, (uint64_t)n);
    nf_metrics_counter_add(pw->w.ctx->m.dispatched, (uint64_t)n);
    pw->next = 0;
    sched_work_goto(&pw->w, stuck_snapshots);
}

static void stuck_mark(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    char *ids = nf_xmalloc(ARRAY_MAX), *atts = nf_xmalloc(ARRAY_MAX);
    const char *params[2] = {ids, atts};

    w->what = "stuck_mark";
    if (arrays_of(pw, A_REDISPATCH, ids, atts, ARRAY_MAX) == 0) {
        free(ids);
        free(atts);
        pw->next = 0;
        sched_work_goto(w, stuck_snapshots);
        return;
    }
    if (nf_pg_query(w->ctx->pg, dispatched_sql, 2, params, on_marked, pw) < 0)
        sched_work_retry(w, "could not queue the update");
    free(ids);
    free(atts);
}

/* Writes the snapshots of the requeued rows one after the other. */
static void on_stuck_snapshot(redisReply *reply, void *arg)
{
    struct pass_work *pw = arg;

    if (pw->w.ctx->closing) {
        pw->w.busy = false;
        return;
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        sched_work_retry(&pw->w, reply ? reply->str : "redis unavailable");
        return;
    }
    pw->next++;
    sched_work_goto(&pw->w, stuck_snapshots);
}

static void stuck_snapshots(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;

    w->what = "stuck_snapshot";
    while (pw->next < pw->n && pw->action[pw->next] != A_REQUEUE)
        pw->next++;
    if (pw->next >= pw->n) {
        sched_work_finish(w);
        return;
    }
    (void)sched_snapshot_write(w->ctx, &pw->snaps[pw->next], on_stuck_snapshot, pw);
}

/* ---- timeouts ------------------------------------------------------------------------- */

static void timeout_produce(struct sched_work *w);
static void timeout_done(struct sched_work *w);

static void on_timeout_rows(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;

    if (pg_failed(pw, res, err))
        return;
    take_rows(pw, res);
    if (pw->n == 0) {
        sched_work_finish(&pw->w);
        return;
    }
    sched_work_goto(&pw->w, timeout_produce);
}

static void timeout_rows(struct sched_work *w)
{
    char grace[16], limit[16];
    const char *params[2] = {grace, limit};

    w->what = "timeouts";
    snprintf(grace, sizeof(grace), "%d", w->ctx->cfg.timeout_grace_s);
    snprintf(limit, sizeof(limit), "%d", BATCH);
    if (nf_pg_query(w->ctx->pg, sched_timeout_sql, 2, params, on_timeout_rows, w) < 0)
        sched_work_retry(w, "could not queue the query");
}

static void timeout_produce(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    char id[NF_ID_MAX], msg[160];
    cJSON *data, *error;
    int i;

    w->what = "timeout_fail";
    sched_work_produce_begin(w);
    for (i = 0; i < pw->n; i++) {
        data = nf_json_obj();
        nf_json_add_str(data, "job_id", pw->snaps[i].job_id);
        nf_json_add_str(data, "user_id", pw->snaps[i].user_id);
        nf_json_add_int(data, "attempt", pw->attempt[i]);
        nf_json_add_str(data, "status", "failed");
        error = cJSON_AddObjectToObject(data, "error");
        if (!error)
            abort();
        snprintf(msg, sizeof(msg),
                 "the job ran past timeout_seconds=%lld (plus %d s grace) without finishing",
                 nf_json_int(pw->dispatch[i], "timeout_seconds", 0), w->ctx->cfg.timeout_grace_s);
        nf_json_add_str(error, "code", "timeout");
        nf_json_add_str(error, "message", msg);
        nf_json_add_str(error, "class", "timeout");
        sched_event_id("timeout", pw->snaps[i].job_id, pw->attempt[i], id, sizeof(id));
        sched_work_produce(
            w, SCHED_TOPIC_EVENTS, pw->snaps[i].job_id,
            nf_event_new("forge.job.failed", SCHED_SOURCE, pw->snaps[i].job_id, id, data));
    }
    sched_work_produce_end(w, timeout_done);
}

static void timeout_done(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    int i;

    for (i = 0; i < pw->n; i++) {
        nf_log_kv(NF_LOG_WARN, "job_timed_out", "job ran past its timeout, failed", "job_id",
                  pw->snaps[i].job_id, "status", pw->snaps[i].status, NULL);
        sched_cancel_notify_wm(w->ctx, pw->snaps[i].job_id); /* stop the handler */
    }
    nf_metrics_counter_add(w->ctx->rec->timeouts, (uint64_t)pw->n);
    sched_work_finish(w);
}

/* ---- stuck cancels --------------------------------------------------------------------- */

static void on_cancel_rows(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;
    struct sched_ctx *ctx = pw->w.ctx;
    const char *job_id;
    int i, n;

    if (pg_failed(pw, res, err))
        return;
    n = PQntuples(res);
    for (i = 0; i < n; i++) {
        job_id = nf_pg_val(res, i, "job_id");
        if (job_id)
            sched_cancel_recheck(ctx, job_id);
    }
    nf_metrics_counter_add(ctx->rec->cancel_checks, (uint64_t)n);
    sched_work_finish(&pw->w);
}

static void cancel_rows(struct sched_work *w)
{
    char stuck[16], limit[16];
    const char *params[2] = {stuck, limit};

    w->what = "stuck_cancels";
    snprintf(stuck, sizeof(stuck), "%d", w->ctx->cfg.stuck_s);
    snprintf(limit, sizeof(limit), "%d", BATCH);
    if (nf_pg_query(w->ctx->pg, cancel_sql, 2, params, on_cancel_rows, w) < 0)
        sched_work_retry(w, "could not queue the query");
}

/* ---- snapshots ------------------------------------------------------------------------- */

static void snap_check(struct sched_work *w);
static void snap_write(struct sched_work *w);

static void on_snap_rows(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;
    struct sched_reconciler *rec = pw->w.ctx->rec;
    int n;

    if (pg_failed(pw, res, err))
        return;
    take_rows(pw, res);
    n = PQntuples(res);
    if (n < SNAP_BATCH) {
        rec->snap_after_us = 0;
        rec->snap_after_id[0] = '\0';
    } else {
        rec->snap_after_us = num(nf_pg_val(res, n - 1, "pos_us"), 0);
        snprintf(rec->snap_after_id, sizeof(rec->snap_after_id), "%s",
                 nf_pg_val(res, n - 1, "job_id"));
    }
    if (pw->n == 0) {
        sched_work_finish(&pw->w);
        return;
    }
    sched_work_goto(&pw->w, snap_check);
}

static void snap_rows(struct sched_work *w)
{
    struct sched_reconciler *rec = w->ctx->rec;
    char pos[24], limit[16];
    const char *params[3] = {pos, rec->snap_after_id, limit};

    w->what = "snapshots";
    snprintf(pos, sizeof(pos), "%lld", rec->snap_after_us);
    snprintf(limit, sizeof(limit), "%d", SNAP_BATCH);
    if (nf_pg_query(w->ctx->pg, snap_sql, 3, params, on_snap_rows, w) < 0)
        sched_work_retry(w, "could not queue the query");
}

static void on_snap_recent_rows(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct pass_work *pw = arg;

    if (pg_failed(pw, res, err))
        return;
    take_rows(pw, res);
    if (pw->n == 0) {
        sched_work_finish(&pw->w);
        return;
    }
    sched_work_goto(&pw->w, snap_check);
}

static void snap_recent_rows(struct sched_work *w)
{
    char back[16], limit[16];
    const char *params[2] = {back, limit};

    w->what = "recent_snapshots";
    /* two sweeps and a margin: every change is looked at at least once after it settled */
    snprintf(back, sizeof(back), "%d", 2 * w->ctx->cfg.reconcile_s + 10);
    snprintf(limit, sizeof(limit), "%d", SNAP_BATCH);
    if (nf_pg_query(w->ctx->pg, snap_recent_sql, 2, params, on_snap_recent_rows, w) < 0)
        sched_work_retry(w, "could not queue the query");
}

static void on_snap_check(redisReply *reply, void *arg)
{
    struct pass_work *pw = arg;
    size_t i;
    long long idx;

    if (pw->w.ctx->closing) {
        pw->w.busy = false;
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        sched_work_retry(&pw->w, reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                           : "redis unavailable");
        return;
    }
    memset(pw->action, 0, sizeof(*pw->action) * (size_t)pw->n);
    for (i = 0; i < reply->elements; i++) {
        idx = reply_int(reply->element[i]);
        if (idx >= 1 && idx <= pw->n)
            pw->action[idx - 1] = A_REQUEUE; /* here: "rewrite this snapshot" */
    }
    pw->next = 0;
    sched_work_goto(&pw->w, snap_write);
}

static void snap_check(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;
    const char **argv = nf_xcalloc((size_t)pw->n * 3, sizeof(*argv));
    char(*keys)[NF_ID_MAX + 8] = nf_xcalloc((size_t)pw->n, sizeof(*keys));
    char(*vers)[24] = nf_xcalloc((size_t)pw->n, sizeof(*vers));
    char(*hashes)[SCHED_DOC_HASH_LEN + 1] = nf_xcalloc((size_t)pw->n, sizeof(*hashes));
    int i;

    w->what = "snapshot_check";
    for (i = 0; i < pw->n; i++) {
        snprintf(keys[i], sizeof(keys[i]), "job:%s", pw->snaps[i].job_id);
        snprintf(vers[i], sizeof(vers[i]), "%lld", pw->snaps[i].version);
        sched_doc_hash(pw->snaps[i].doc, hashes[i]);
        argv[i] = keys[i];
        argv[pw->n + i] = vers[i];
        argv[(size_t)2 * pw->n + i] = hashes[i];
    }
    (void)nf_redis_eval(w->ctx->redis, pw->script, on_snap_check, pw, pw->n, 3 * pw->n, argv, NULL);
    free(argv);
    free(keys);
    free(vers);
    free(hashes);
}

static void on_snap_written(redisReply *reply, void *arg)
{
    struct pass_work *pw = arg;

    if (pw->w.ctx->closing) {
        pw->w.busy = false;
        return;
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        sched_work_retry(&pw->w, reply ? reply->str : "redis unavailable");
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        nf_metrics_counter_add(pw->w.ctx->rec->repaired, 1);
        nf_log_kv(NF_LOG_INFO, "snapshot_repaired", "job snapshot rewritten from postgres",
                  "job_id", pw->snaps[pw->next].job_id, NULL);
    }
    pw->next++;
    sched_work_goto(&pw->w, snap_write);
}

static void snap_write(struct sched_work *w)
{
    struct pass_work *pw = (struct pass_work *)w;

    w->what = "snapshot_repair";
    while (pw->next < pw->n && pw->action[pw->next] != A_REQUEUE)
        pw->next++;
    if (pw->next >= pw->n) {
        sched_work_finish(w);
        return;
    }
    (void)sched_snapshot_write(w->ctx, &pw->snaps[pw->next], on_snap_written, pw);
}

/* ---- timers ----------------------------------------------------------------------------- */

static void start_pass(struct sched_ctx *ctx, enum pass kind)
{
    static const sched_step_fn first[NPASSES] = {retry_rows,  stuck_rows, timeout_rows,
                                                 cancel_rows, snap_rows,  snap_recent_rows};
    struct sched_reconciler *rec = ctx->rec;
    struct pass_work *pw;

    if (rec->busy[kind] || ctx->stopping)
        return;
    rec->busy[kind] = true;
    pw = (struct pass_work *)sched_work_new(ctx, NULL, sizeof(*pw));
    pw->w.dtor = pass_dtor;
    pw->w.what = pass_names[kind];
    pw->kind = kind;
    pw->script = kind == P_STUCK ? rec->wm_check : rec->snap_check;
    sched_work_start(&pw->w, NULL, first[kind]);
}

static void on_retry_tick(evutil_socket_t fd, short what, void *arg)
{
    start_pass(arg, P_RETRY);
}

static void on_sweep_tick(evutil_socket_t fd, short what, void *arg)
{
    struct sched_ctx *ctx = arg;

    start_pass(ctx, P_STUCK);
    start_pass(ctx, P_TIMEOUT);
    start_pass(ctx, P_CANCEL);
    start_pass(ctx, P_SNAP);
    start_pass(ctx, P_SNAP_RECENT);
}

int sched_reconciler_start(struct sched_ctx *ctx)
{
    struct sched_reconciler *rec = nf_xcalloc(1, sizeof(*rec));
    struct nf_metrics *m = ctx->metrics;
    struct timeval retry = {ctx->cfg.retry_poll_ms / 1000,
                            (suseconds_t)(ctx->cfg.retry_poll_ms % 1000) * 1000};
    struct timeval sweep = {ctx->cfg.reconcile_s, 0};

    ctx->rec = rec;
    rec->redispatched = nf_metrics_counter(m, "nf_sched_reconciler_total",
                                           "reconciler repairs by kind", "kind=\"redispatched\"");
    rec->requeued = nf_metrics_counter(m, "nf_sched_reconciler_total", "reconciler repairs by kind",
                                       "kind=\"requeued\"");
    rec->retry_dispatch = nf_metrics_counter(m, "nf_sched_retries_dispatched_total",
                                             "retried attempts dispatched when due", NULL);
    rec->timeouts = nf_metrics_counter(m, "nf_sched_reconciler_total", "reconciler repairs by kind",
                                       "kind=\"timeout\"");
    rec->cancel_checks = nf_metrics_counter(
        m, "nf_sched_reconciler_total", "reconciler repairs by kind", "kind=\"cancel_recheck\"");
    rec->repaired = nf_metrics_counter(m, "nf_sched_reconciler_total", "reconciler repairs by kind",
                                       "kind=\"snapshot\"");
    rec->wm_check = nf_redis_script_new(ctx->redis, sched_wm_check_lua);
    rec->snap_check = nf_redis_script_new(ctx->redis, sched_snap_check_lua);
    rec->retry_tick = event_new(ctx->base, -1, EV_PERSIST, on_retry_tick, ctx);
    rec->sweep_tick = event_new(ctx->base, -1, EV_PERSIST, on_sweep_tick, ctx);
    if (!rec->wm_check || !rec->snap_check || !rec->retry_tick || !rec->sweep_tick ||
        event_add(rec->retry_tick, &retry) < 0 || event_add(rec->sweep_tick, &sweep) < 0) {
        nf_log_error("reconciler_failed", "cannot start the reconciler");
        return -1; /* sched_free frees what was made */
    }
    return 0;
}

void sched_reconciler_free(struct sched_ctx *ctx)
{
    struct sched_reconciler *rec = ctx ? ctx->rec : NULL;

    if (!rec)
        return;
    if (rec->retry_tick)
        event_free(rec->retry_tick);
    if (rec->sweep_tick)
        event_free(rec->sweep_tick);
    free(rec);
    ctx->rec = NULL;
}
