/*
 * The artifact registry's internal routes (DESIGN §12). Files are artifacts: an upload is a
 * row with source 'upload', no job, its purpose, file name and the user's s3:// name.
 * Tenancy is enforced here: another user's artifact does not exist (404, absent from lists).
 *
 *   GET    /internal/artifacts?job_id=&limit=&cursor=  -> 200 {data, has_more, next_cursor}
 *   GET    /internal/artifacts/{artifact_id}           -> 200 artifact | 404
 *   DELETE /internal/artifacts/{artifact_id}           -> 200 the deleted artifact | 404
 *   POST   /internal/files {artifact_id, name, purpose, object_key, s3_uri, bytes, sha256}
 *          -> 201 the file's artifact (200 when that id is recorded already: a retry), with
 *             replaced_object_keys: the objects of the older file of that s3_uri, for the
 *             gateway to delete
 *          -> 409 when another upload to the same s3_uri was recorded at the same moment
 *   GET    /internal/files?purpose=&s3_uri=&limit=&cursor=
 *          -> 200 {data, has_more, next_cursor} (s3_uri: the live file of that name, if any)
 *   GET    /internal/jobs/{job_id}/checkpoints
 *          -> 200 {object: "list", data: [{artifact_id, uri, name, bytes, sha256, epoch,
 *             step, attempt, created_at}]} oldest first | 404 (not the caller's job)
 *
 * A delete only marks the row (deleted_at): storage is metered up to that moment, and the
 * gateway removes the object. A new upload to an s3:// name marks the older file of that
 * name deleted in the same statement that records the new one.
 */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

#include "nf_http.h"
#include "nf_id.h"
#include "nf_json.h"
#include "nf_mem.h"
#include "nf_pg.h"
#include "routes.h"

/* clang-format off */
#define ARTIFACT_COLS(p)                                                                   \
    p "artifact_id, " p "job_id, " p "name, " p "kind, " p "uri, " p "bytes, " p "sha256, "   \
    p "object_key, " p "source, " p "purpose, " p "filename, " p "s3_uri, "                  \
    SCHED_TS(p "created_at") " AS created_at"

static const char artifacts_sql[] =
    "SELECT " ARTIFACT_COLS("a.") " FROM sched.artifacts a"
    " WHERE a.user_id = $1 AND a.deleted_at IS NULL"
    "  AND ($2::text IS NULL OR a.job_id = $2::text)"
    "  AND ($3::text IS NULL OR a.artifact_id < $3::text)"
    " ORDER BY a.artifact_id DESC LIMIT $4::int";

static const char files_sql[] =
    "SELECT " ARTIFACT_COLS("a.") " FROM sched.artifacts a"
    " WHERE a.user_id = $1 AND a.source = 'upload' AND a.deleted_at IS NULL"
    "  AND ($2::text IS NULL OR a.purpose = $2::text)"
    "  AND ($3::text IS NULL OR a.artifact_id < $3::text)"
    "  AND ($5::text IS NULL OR a.s3_uri = $5::text)"
    " ORDER BY a.artifact_id DESC LIMIT $4::int";

static const char artifact_sql[] =
    "SELECT " ARTIFACT_COLS("a.") " FROM sched.artifacts a"
    " WHERE a.artifact_id = $1 AND a.user_id = $2 AND a.deleted_at IS NULL";

static const char delete_sql[] =
    "UPDATE sched.artifacts a SET deleted_at = now()"
    " WHERE a.artifact_id = $1 AND a.user_id = $2 AND a.deleted_at IS NULL"
    " RETURNING " ARTIFACT_COLS("a.");

/* The older file of the same s3:// name goes first: the insert reads `old`, so it runs
 * after it and the unique (user_id, s3_uri) index of live files sees it gone. */
static const char file_create_sql[] =
    "WITH old AS ("
    " UPDATE sched.artifacts SET deleted_at = now()"
    " WHERE user_id = $2 AND s3_uri = $7 AND deleted_at IS NULL AND artifact_id <> $1"
    " RETURNING object_key"
    "), ins AS ("
    " INSERT INTO sched.artifacts (artifact_id, job_id, user_id, name, kind, uri, bytes, sha256,"
    "  object_key, source, purpose, filename, s3_uri)"
    " SELECT $1, NULL, $2, $3, $4, 'artifact://' || $1, $5::bigint, $6, $8, 'upload', $4, $3, $7"
    " FROM (SELECT count(*) FROM old) o"
    " ON CONFLICT (artifact_id) DO NOTHING"
    " RETURNING *"
    "), r AS ("
    " SELECT *, true AS created FROM ins"
    " UNION ALL"
    " SELECT *, false FROM sched.artifacts"
    " WHERE artifact_id = $1 AND user_id = $2 AND NOT EXISTS (SELECT 1 FROM ins)"
    ")"
    " SELECT " ARTIFACT_COLS("r.") ", r.created,"
    "  (SELECT coalesce(json_agg(object_key), '[]'::json)::text FROM old) AS replaced"
    " FROM r";
/* clang-format on */

#define S3_URI_MAX 1100
#define OBJECT_KEY_MAX 1300

struct list_op {
    struct nf_http_req *req;
    int limit;
};

static void add_opt_str(cJSON *o, const PGresult *res, int row, const char *col)
{
    nf_json_add_str(o, col, nf_pg_val(res, row, col)); /* NULL -> null */
}

static cJSON *artifact_json(const PGresult *res, int row)
{
    cJSON *o = nf_json_obj();

    add_opt_str(o, res, row, "artifact_id");
    add_opt_str(o, res, row, "job_id");
    add_opt_str(o, res, row, "name");
    add_opt_str(o, res, row, "kind");
    add_opt_str(o, res, row, "uri");
    nf_json_add_int(o, "bytes", strtoll(nf_pg_val(res, row, "bytes"), NULL, 10));
    add_opt_str(o, res, row, "sha256");
    add_opt_str(o, res, row, "object_key");
    add_opt_str(o, res, row, "source");
    add_opt_str(o, res, row, "purpose");
    add_opt_str(o, res, row, "filename");
    add_opt_str(o, res, row, "s3_uri");
    add_opt_str(o, res, row, "created_at");
    return o;
}

/* ---- lists ----------------------------------------------------------------------------- */

static void on_list(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct list_op *op = arg;
    const char *last = NULL;
    cJSON *data;
    int i, n;

    (void)pgcode;
    if (!res) {
        sched_http_unavailable(op->req, err);
        free(op);
        return;
    }
    n = PQntuples(res);
    data = cJSON_CreateArray();
    if (!data)
        abort();
    for (i = 0; i < n && i < op->limit; i++) {
        if (!cJSON_AddItemToArray(data, artifact_json(res, i)))
            abort();
        last = nf_pg_val(res, i, "artifact_id");
    }
    nf_http_reply_json(op->req, 200,
                       sched_http_page(data, n > op->limit, SCHED_CURSOR_ARTIFACTS, last));
    free(op);
}

/* One page of artifacts (kind ARTIFACTS: filter = job id) or files (filter = purpose). */
static void list(struct sched_ctx *ctx, struct nf_http_req *req, enum sched_list_kind kind)
{
    struct sched_list_query q;
    struct list_op *op;
    const char *params[5], *user = sched_http_caller(req);
    const char *filter;
    char limit[16];

    if (!user || sched_http_list_query(req, kind, &q) < 0)
        return;
    filter = kind == SCHED_LIST_FILES ? q.purpose : q.job_id;
    snprintf(limit, sizeof(limit), "%d", q.limit + 1); /* one more: is there a next page? */
    params[0] = user;
    params[1] = filter[0] ? filter : NULL;
    params[2] = q.after[0] ? q.after : NULL;
    params[3] = limit;
    params[4] = q.s3_uri[0] ? q.s3_uri : NULL;
    op = nf_xcalloc(1, sizeof(*op));
    op->req = req;
    op->limit = q.limit;
    if (nf_pg_query(ctx->pg, kind == SCHED_LIST_FILES ? files_sql : artifacts_sql,
                    kind == SCHED_LIST_FILES ? 5 : 4, params, on_list, op) < 0) {
        sched_http_unavailable(req, "could not queue the query");
        free(op);
    }
    sched_list_query_clear(&q);
}

void sched_route_artifacts(struct nf_http_req *req, void *arg)
{
    list(arg, req, SCHED_LIST_ARTIFACTS);
}

void sched_route_files(struct nf_http_req *req, void *arg)
{
    list(arg, req, SCHED_LIST_FILES);
}

/* ---- one artifact: get, delete ----------------------------------------------------------- */

static void on_one(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;

    (void)pgcode;
    if (!res) {
        sched_http_unavailable(req, err);
        return;
    }
    if (PQntuples(res) < 1) {
        nf_http_reply_error(req, 404, "not_found", NULL, "artifact not found");
        return;
    }
    nf_http_reply_json(req, 200, artifact_json(res, 0));
}

static void one(struct sched_ctx *ctx, struct nf_http_req *req, const char *sql)
{
    const char *params[2], *user = sched_http_caller(req);
    const char *id = nf_http_req_param(req, "artifact_id");

    if (!user)
        return;
    if (!id || !nf_id_valid("art", id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "artifact not found");
        return;
    }
    params[0] = id;
    params[1] = user;
    if (nf_pg_query(ctx->pg, sql, 2, params, on_one, req) < 0)
        sched_http_unavailable(req, "could not queue the query");
}

void sched_route_artifact(struct nf_http_req *req, void *arg)
{
    one(arg, req, artifact_sql);
}

void sched_route_artifact_delete(struct nf_http_req *req, void *arg)
{
    one(arg, req, delete_sql);
}

/* ---- POST /internal/files ---------------------------------------------------------------- */

/* The body's fields into params[0..7] (pointers into body, bytes into buf); NULL when
 * fine, else the name of the bad field. */
static const char *file_fields(const cJSON *body, const char *user, const char *params[8],
                               char bytes_buf[32])
{
    static const char *const purposes[] = {"dataset", "model", "other", NULL};
    const char *id = nf_json_str(body, "artifact_id"), *name = nf_json_str(body, "name");
    const char *purpose = nf_json_str(body, "purpose"), *sha = nf_json_str(body, "sha256");
    const char *key = nf_json_str(body, "object_key"), *uri = nf_json_str(body, "s3_uri");
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(body, "bytes");
    char prefix[200];
    int i, n;

    if (!id || !nf_id_valid("art", id))
        return "artifact_id";
    if (!sched_file_name_ok(name))
        return "name";
    for (i = 0; purposes[i] && (!purpose || strcmp(purpose, purposes[i]) != 0); i++)
        ;
    if (!purposes[i])
        return "purpose";
    if (!cJSON_IsNumber(bytes) || bytes->valuedouble < 0 || bytes->valuedouble > 9.0e15 ||
        bytes->valuedouble != (double)(long long)bytes->valuedouble)
        return "bytes";
    if (!sha || !sched_sha256_hex(sha))
        return "sha256";
    if (!uri || strncmp(uri, "s3://", 5) != 0 || strlen(uri) > S3_URI_MAX)
        return "s3_uri";
    n = snprintf(prefix, sizeof(prefix), "tenants/%s/files/", user);
    if (!key || n <= 0 || (size_t)n >= sizeof(prefix) || strncmp(key, prefix, (size_t)n) != 0 ||
        key[n] == '\0' || strlen(key) > OBJECT_KEY_MAX || strstr(key, "/../") || strstr(key, "//"))
        return "object_key"; /* under the user's own files prefix */
    snprintf(bytes_buf, 32, "%lld", (long long)bytes->valuedouble);
    params[0] = id;
    params[1] = user;
    params[2] = name;
    params[3] = purpose;
    params[4] = bytes_buf;
    params[5] = sha;
    params[6] = uri;
    params[7] = key;
    return NULL;
}

static void on_file_create(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    const char *created;
    cJSON *body, *replaced;

    if (!res && pgcode && strcmp(pgcode, "23505") == 0) {
        nf_http_reply_error(req, 409, "conflict", "uri",
                            "another upload to this uri was recorded at the same moment; retry");
        return;
    }
    if (!res) {
        sched_http_unavailable(req, err);
        return;
    }
    if (PQntuples(res) < 1) {
        nf_http_reply_error(req, 409, "conflict", "artifact_id",
                            "artifact_id is taken by another account");
        return;
    }
    created = nf_pg_val(res, 0, "created");
    body = artifact_json(res, 0);
    replaced = cJSON_Parse(nf_pg_val(res, 0, "replaced") ? nf_pg_val(res, 0, "replaced") : "[]");
    if (!cJSON_AddItemToObject(body, "replaced_object_keys",
                               replaced ? replaced : cJSON_CreateArray()))
        abort();
    nf_http_reply_json(req, created && strcmp(created, "t") == 0 ? 201 : 200, body);
}

void sched_route_file_create(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *params[8], *user = sched_http_caller(req), *bad;
    char bytes[32];
    cJSON *body;

    if (!user || !(body = nf_http_req_json(req)))
        return;
    bad = file_fields(body, user, params, bytes);
    if (bad) {
        nf_http_reply_error(req, 422, "invalid_params", bad, "%s is missing or malformed", bad);
        return;
    }
    if (nf_pg_query(ctx->pg, file_create_sql, 8, params, on_file_create, req) < 0)
        sched_http_unavailable(req, "could not queue the query");
}

/* ---- GET /internal/jobs/{job_id}/checkpoints ---------------------------------------------- */

/* clang-format off */
/* $1 job id, $2 caller. epoch and step from the forge.job.checkpoint event that recorded
 * the artifact (else epoch from checkpoint-epoch-<n>.tar), attempt from that event (else
 * from the object key tenants/<user>/jobs/<job>/<attempt>/...). */
static const char checkpoints_sql[] =
    "SELECT (SELECT coalesce(json_agg(json_build_object("
    "   'artifact_id', a.artifact_id, 'uri', a.uri, 'name', a.name, 'bytes', a.bytes,"
    "   'sha256', a.sha256,"
    "   'epoch', coalesce(CASE WHEN jsonb_typeof(e.data->'epoch') = 'number'"
    "     THEN (e.data->>'epoch')::numeric::bigint END,"
    "     substring(a.name FROM '^checkpoint-epoch-([0-9]{1,9})\\.tar$')::bigint),"
    "   'step', CASE WHEN jsonb_typeof(e.data->'step') = 'number'"
    "     THEN (e.data->>'step')::numeric::bigint END,"
    "   'attempt', coalesce(e.attempt, CASE WHEN split_part(a.object_key, '/', 5) ~ '^[0-9]{1,9}$'"
    "     THEN split_part(a.object_key, '/', 5)::int END),"
    "   'created_at', " SCHED_TS("a.created_at") ")"
    "   ORDER BY a.created_at, a.artifact_id), '[]'::json)::text"
    "  FROM sched.artifacts a"
    "  LEFT JOIN LATERAL (SELECT ev.data, ev.attempt FROM sched.job_events ev"
    "   WHERE ev.job_id = a.job_id AND ev.type = 'checkpoint'"
    "    AND ev.data->'artifacts'->0->>'artifact_id' = a.artifact_id LIMIT 1) e ON true"
    "  WHERE a.job_id = j.job_id AND a.kind = 'checkpoint' AND a.deleted_at IS NULL) AS data"
    " FROM sched.jobs j WHERE j.job_id = $1 AND j.user_id = $2";
/* clang-format on */

static void on_checkpoints(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    cJSON *body, *data;

    (void)pgcode;
    if (!res) {
        sched_http_unavailable(req, err);
        return;
    }
    if (PQntuples(res) < 1) {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
        return;
    }
    data = cJSON_Parse(nf_pg_val(res, 0, "data") ? nf_pg_val(res, 0, "data") : "[]");
    body = nf_json_obj();
    nf_json_add_str(body, "object", "list");
    cJSON_AddItemToObject(body, "data", data ? data : cJSON_CreateArray());
    nf_http_reply_json(req, 200, body);
}

void sched_route_checkpoints(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *params[2], *user = sched_http_caller(req);
    const char *job_id = nf_http_req_param(req, "job_id");

    if (!user)
        return;
    if (!job_id || !nf_id_valid("job", job_id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
        return;
    }
    params[0] = job_id;
    params[1] = user;
    if (nf_pg_query(ctx->pg, checkpoints_sql, 2, params, on_checkpoints, req) < 0)
        sched_http_unavailable(req, "could not queue the query");
}
