/*
 * Internal HTTP read routes (internals.md). Tenancy is enforced here, by the owner of
 * the data: another user's job or artifact does not exist (404 or absent from a list).
 *
 *   GET /internal/jobs/{job_id}?user_id=     -> 200 job object | 404 | 400 no user_id
 *   GET /internal/jobs?<filters>              -> 200 {data, has_more, next_cursor}
 *   GET /internal/jobs/{job_id}/events?...    -> 200 {data, has_more, next_cursor,
 *                                                job_status} | 404
 *   (the artifact and file routes are in routes_artifacts.c, POST
 *   /internal/jobs/{job_id}/cancel in cancel.c; the route table in service.c)
 *
 * The routes after the first name their caller in X-Nf-User-Id (set by the gateway from
 * the authenticated principal) and take the client's query string as it came; a bad
 * filter, limit or cursor is a 400 naming the parameter (list.c). Postgres down: 503.
 *
 * Lists are keyset-paginated (job ids and artifact ids are ULIDs: newest first; events
 * by job_events.seq: oldest first), so a page never repeats or skips a row that existed
 * when the first page was read. A GET of one job also repairs its snapshot (versioned
 * write, so it can never regress it).
 */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_http.h"
#include "nf_id.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_pg.h"
#include "routes.h"

#define USER_MAX 128

/* clang-format off */
static const char job_sql[] =
    "SELECT " SCHED_JOB_COLS("j.") ", " SCHED_ARTIFACTS_OF("$1")
    " FROM sched.jobs j WHERE j.job_id = $1 AND j.user_id = $2";

static const char list_sql[] =
    "SELECT " SCHED_JOB_COLS("j.") ", " SCHED_ARTIFACTS_OF("j.job_id")
    " FROM sched.jobs j"
    " WHERE j.user_id = $1"
    "  AND ($2::text[] IS NULL OR j.status = ANY($2::text[]))"
    "  AND ($3::text[] IS NULL OR j.job_type = ANY($3::text[]))"
    "  AND ($4::jsonb IS NULL OR j.metadata @> $4::jsonb)"
    "  AND ($5::text IS NULL OR j.job_id < $5::text)"
    " ORDER BY j.job_id DESC LIMIT $6::int";

/* One row per event (or one row with a NULL event_id: the job exists, no events). */
static const char events_sql[] =
    "SELECT j.status AS job_status, e.event_id, e.type, e.attempt, e.data::text AS data,"
    " " SCHED_TS("e.at") " AS at, e.seq"
    " FROM sched.jobs j"
    " LEFT JOIN LATERAL (SELECT * FROM sched.job_events v"
    "   WHERE v.job_id = j.job_id AND v.seq > $3::bigint ORDER BY v.seq LIMIT $4::int) e"
    "  ON true"
    " WHERE j.job_id = $1 AND j.user_id = $2"
    " ORDER BY e.seq";

/* clang-format on */

void sched_http_unavailable(struct nf_http_req *req, const char *err)
{
    nf_log_kv(NF_LOG_WARN, "read_failed", "read from postgres failed", "route",
              nf_http_req_route(req), "error", err, NULL);
    nf_http_set_header(req, "Retry-After", "1");
    nf_http_reply_error(req, 503, "unavailable", NULL, "job store unavailable, retry");
}

const char *sched_http_caller(struct nf_http_req *req)
{
    const char *user = nf_http_req_header(req, "X-Nf-User-Id");

    if (!user || !*user || strlen(user) > USER_MAX) {
        nf_http_reply_error(req, 400, "invalid_request", "X-Nf-User-Id",
                            "X-Nf-User-Id is required");
        return NULL;
    }
    return user;
}

int sched_http_list_query(struct nf_http_req *req, enum sched_list_kind kind,
                          struct sched_list_query *q)
{
    struct nf_json_err err = {{0}, {0}};

    if (sched_list_parse(kind, nf_http_req_query_string(req), q, &err) < 0) {
        nf_http_reply_error(req, 400, "invalid_query", err.param, "%s", err.msg);
        return -1;
    }
    return 0;
}

cJSON *sched_http_page(cJSON *data, bool has_more, char kind, const char *last)
{
    cJSON *o = nf_json_obj();
    char cur[SCHED_CURSOR_MAX];

    if (!cJSON_AddItemToObject(o, "data", data))
        abort();
    if (!cJSON_AddBoolToObject(o, "has_more", has_more))
        abort();
    if (has_more && last && sched_cursor_encode(kind, last, cur, sizeof(cur)) == 0)
        nf_json_add_str(o, "next_cursor", cur);
    else
        nf_json_add_str(o, "next_cursor", NULL);
    return o;
}

/* ---- GET /internal/jobs/{job_id} ---------------------------------------------------- */

static void on_job(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    struct sched_ctx *ctx = nf_http_req_data(req);
    struct sched_job job;
    struct sched_snap snap = {0};

    if (!res) {
        sched_http_unavailable(req, err);
        return;
    }
    if (PQntuples(res) < 1) {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
        return;
    }
    sched_job_from_row(res, 0, &job);
    if (!ctx->svc->closing && sched_snap_from_job(&job, &snap) == 0)
        (void)sched_snapshot_write(ctx, &snap, NULL, NULL); /* best effort */
    sched_snap_clear(&snap);
    nf_http_reply_json(req, 200, sched_job_json(&job));
}

void sched_route_job(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *job_id = nf_http_req_param(req, "job_id");
    const char *user_id = nf_http_req_query(req, "user_id");
    const char *params[2];

    if (!user_id || !*user_id)
        user_id = nf_http_req_header(req, "X-Nf-User-Id");
    if (!user_id || !*user_id) {
        nf_http_reply_error(req, 400, "invalid_request", "user_id", "user_id is required");
        return;
    }
    if (!job_id || !nf_id_valid("job", job_id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
        return;
    }
    params[0] = job_id;
    params[1] = user_id;
    nf_http_req_set_data(req, ctx);
    if (nf_pg_query(ctx->pg, job_sql, 2, params, on_job, req) < 0)
        sched_http_unavailable(req, "could not queue the query");
}

/* ---- GET /internal/jobs -------------------------------------------------------------
 *
 *   Postgres page (limit + 1 rows) --> Redis: the caller's jobs accepted by the gateway
 *   but not recorded yet (sched_recent_lua) --> merged (sched_list_merge) --> answer
 *
 * The merge gives read-your-writes: a job is listed as soon as its 202 was sent, not
 * only once this scheduler consumed its request. Redis down: the Postgres page alone.
 */

const char sched_recent_lua[] =
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'LIMIT', 0, 200)\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local v = redis.call('HMGET', 'job:' .. id, 'user_id', 'doc', 'ver')\n"
    "  if v[1] == ARGV[2] and v[2] and not v[3] then table.insert(out, v[2]) end\n"
    "end\n"
    "return out\n";

struct list_op {
    struct nf_http_req *req;
    int limit;
    struct sched_list_query q; /* jobs: kept for the merge */
    cJSON *data;               /* jobs: the Postgres rows as job objects */
};

static void list_op_free(struct list_op *op)
{
    sched_list_query_clear(&op->q);
    cJSON_Delete(op->data);
    free(op);
}

static void list_reply(struct list_op *op, const char *const *docs, size_t ndocs)
{
    const char *last;
    bool more;
    cJSON *data = op->data;

    op->data = NULL;
    sched_list_merge(data, &op->q, docs, ndocs, &more);
    last = nf_json_str(cJSON_GetArrayItem(data, cJSON_GetArraySize(data) - 1), "job_id");
    nf_http_reply_json(op->req, 200, sched_http_page(data, more, SCHED_CURSOR_JOBS, last));
    list_op_free(op);
}

static void on_recent(redisReply *reply, void *arg)
{
    struct list_op *op = arg;
    const char **docs = NULL;
    size_t i, n = 0;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        docs = nf_xcalloc(reply->elements, sizeof(*docs));
        for (i = 0; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_STRING)
                docs[n++] = reply->element[i]->str;
    }
    list_reply(op, docs, n); /* Redis down: the Postgres page alone */
    free(docs);
}

static void on_list(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct list_op *op = arg;
    struct sched_ctx *ctx = nf_http_req_data(op->req);
    struct sched_job job;
    char key[160], oldest[32];
    const char *argv[3];
    int i, n;

    if (!res) {
        sched_http_unavailable(op->req, err);
        list_op_free(op);
        return;
    }
    n = PQntuples(res);
    op->data = cJSON_CreateArray();
    if (!op->data)
        abort();
    for (i = 0; i < n; i++) {
        sched_job_from_row(res, i, &job);
        if (!cJSON_AddItemToArray(op->data, sched_job_json(&job)))
            abort();
    }
    if (ctx->svc->closing) {
        list_reply(op, NULL, 0);
        return;
    }
    snprintf(key, sizeof(key), "gw:recent:%s", nf_http_req_header(op->req, "X-Nf-User-Id"));
    snprintf(oldest, sizeof(oldest), "%llu",
             (unsigned long long)(nf_now_ms() - SCHED_RECENT_WINDOW_MS));
    argv[0] = key;
    argv[1] = oldest;
    argv[2] = nf_http_req_header(op->req, "X-Nf-User-Id");
    /* on_recent fires exactly once, at once with NULL when Redis is down */
    (void)nf_redis_eval(ctx->redis, ctx->recent_script, on_recent, op, 1, 3, argv, NULL);
}

void sched_route_jobs(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    struct sched_list_query q;
    struct list_op *op;
    const char *params[6], *user = sched_http_caller(req);
    char statuses[160], types[96], limit[16], *meta = NULL;

    if (!user || sched_http_list_query(req, SCHED_LIST_JOBS, &q) < 0)
        return;
    if (q.statuses)
        sched_status_array(q.statuses, statuses, sizeof(statuses));
    if (q.types)
        sched_types_array(q.types, types, sizeof(types));
    if (q.metadata)
        meta = nf_json_print(q.metadata);
    snprintf(limit, sizeof(limit), "%d", q.limit + 1); /* one more: is there a next page? */
    params[0] = user;
    params[1] = q.statuses ? statuses : NULL;
    params[2] = q.types ? types : NULL;
    params[3] = meta;
    params[4] = q.after[0] ? q.after : NULL;
    params[5] = limit;
    op = nf_xcalloc(1, sizeof(*op));
    op->req = req;
    op->limit = q.limit;
    op->q = q; /* owned by op from here */
    nf_http_req_set_data(req, ctx);
    if (nf_pg_query(ctx->pg, list_sql, 6, params, on_list, op) < 0) {
        sched_http_unavailable(req, "could not queue the query");
        list_op_free(op);
    }
    free(meta);
}

/* ---- GET /internal/jobs/{job_id}/events --------------------------------------------- */

static void on_unrecorded(redisReply *reply, void *arg)
{
    struct nf_http_req *req = arg;
    const char *user = nf_http_req_header(req, "X-Nf-User-Id");
    cJSON *body;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING && user &&
        strcmp(reply->element[0]->str, user) == 0 && reply->element[1]->type == REDIS_REPLY_NIL) {
        body = nf_json_obj();
        if (!cJSON_AddArrayToObject(body, "data") || !cJSON_AddFalseToObject(body, "has_more"))
            abort();
        nf_json_add_str(body, "next_cursor", NULL);
        nf_json_add_str(body, "job_status", "queued");
        nf_http_reply_json(req, 200, body);
    } else {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
    }
}

/* (routes.h) the request's data is the service context (nf_http_req_set_data). */
void sched_http_unrecorded_page(struct nf_http_req *req)
{
    struct sched_ctx *ctx = nf_http_req_data(req);

    if (ctx->svc->closing) {
        on_unrecorded(NULL, req);
        return;
    }
    /* on_unrecorded fires exactly once (at once with NULL when Redis is down) */
    (void)nf_redis_cmd(ctx->redis, on_unrecorded, req, "HMGET job:%s user_id ver",
                       nf_http_req_param(req, "job_id"));
}

/* A page of a job's log being read: the request, its limit and how to read it. */
struct log_op {
    struct nf_http_req *req;
    int limit;
    const struct sched_log *log;
};

/*
 * The page of a job's log (its events, its metric points): rows ordered by seq, a row
 * without seq (the job alone, LEFT JOIN) when it has no (more) entries, none when there is
 * no such job of the caller. Each entry carries its cursor; the log grows, so next_cursor
 * always points after the last entry given.
 */
static void on_log(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct log_op *op = arg;
    const char *seq, *last = NULL;
    char cur[SCHED_CURSOR_MAX];
    cJSON *data, *item, *body;
    int i, n, rows = 0;

    (void)pgcode;
    if (!res) {
        sched_http_unavailable(op->req, err);
        free(op);
        return;
    }
    n = PQntuples(res);
    if (n < 1) {
        sched_http_unrecorded_page(op->req); /* No row: accepted a moment ago, or 404 */
        free(op);
        return;
    }
    data = cJSON_CreateArray();
    if (!data)
        abort();
    for (i = 0; i < n; i++) {
        seq = nf_pg_val(res, i, "seq");
        if (!seq)
            continue; /* the job has no (more) entries */
        if (++rows > op->limit)
            break;
        item = op->log->item(res, i);
        if (sched_cursor_encode(SCHED_CURSOR_EVENTS, seq, cur, sizeof(cur)) == 0)
            nf_json_add_str(item, "cursor", cur);
        if (!cJSON_AddItemToArray(data, item))
            abort();
        last = seq;
    }
    body = nf_json_obj();
    if (op->log->object)
        nf_json_add_str(body, "object", op->log->object);
    if (!cJSON_AddItemToObject(body, "data", data) ||
        !cJSON_AddBoolToObject(body, "has_more", rows > op->limit))
        abort();
    if (last && sched_cursor_encode(SCHED_CURSOR_EVENTS, last, cur, sizeof(cur)) == 0)
        nf_json_add_str(body, "next_cursor", cur);
    else
        nf_json_add_str(body, "next_cursor", NULL);
    nf_json_add_str(body, "job_status", nf_pg_val(res, 0, "job_status"));
    nf_http_reply_json(op->req, 200, body);
    free(op);
}

/* (routes.h) GET a page of one of the caller's jobs' logs. */
void sched_http_log_page(struct nf_http_req *req, struct sched_ctx *ctx,
                         const struct sched_log *log)
{
    struct sched_list_query q;
    struct log_op *op;
    const char *params[4], *user = sched_http_caller(req),
                           *job_id = nf_http_req_param(req, "job_id");
    char limit[16];

    if (!user)
        return;
    if (!job_id || !nf_id_valid("job", job_id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
        return;
    }
    if (sched_http_list_query(req, log->kind, &q) < 0)
        return;
    snprintf(limit, sizeof(limit), "%d", q.limit + 1);
    params[0] = job_id;
    params[1] = user;
    params[2] = q.after[0] ? q.after : "0";
    params[3] = limit;
    op = nf_xcalloc(1, sizeof(*op));
    op->req = req;
    op->limit = q.limit;
    op->log = log;
    nf_http_req_set_data(req, ctx);
    if (nf_pg_query(ctx->pg, log->sql, 4, params, on_log, op) < 0) {
        sched_http_unavailable(req, "could not queue the query");
        free(op);
    }
    sched_list_query_clear(&q);
}

/* One job event of the page: {event_id, type, attempt, time, data}. */
static cJSON *event_item(const PGresult *res, int i)
{
    const char *type = nf_pg_val(res, i, "type"), *text = nf_pg_val(res, i, "data");
    cJSON *item = nf_json_obj();
    char full[64];

    nf_json_add_str(item, "event_id", nf_pg_val(res, i, "event_id"));
    snprintf(full, sizeof(full), "forge.job.%s", type ? type : "unknown");
    nf_json_add_str(item, "type", full);
    nf_json_add_int(item, "attempt", strtoll(nf_pg_val(res, i, "attempt"), NULL, 10));
    nf_json_add_str(item, "time", nf_pg_val(res, i, "at"));
    if (!cJSON_AddItemToObject(item, "data", text ? cJSON_Parse(text) : cJSON_CreateObject()))
        abort();
    return item;
}

void sched_route_events(struct nf_http_req *req, void *arg)
{
    static const struct sched_log events = {events_sql, SCHED_LIST_EVENTS, event_item, NULL};

    sched_http_log_page(req, arg, &events);
}
