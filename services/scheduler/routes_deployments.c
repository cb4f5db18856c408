/*
 * Deployments' internal routes (DESIGN §15): the rows of sched.deployments, recorded when
 * a deploy job succeeds (consume_events.c). The caller is in X-Nf-User-Id; another
 * account's deployment does not exist (404, absent from the list).
 *
 *   GET  /internal/deployments                 -> 200 {object: list, data: [...]}, newest
 *        first (at most 1000)
 *   GET  /internal/deployments/{id}            -> 200 deployment | 404
 *   POST /internal/deployments/{id}/status {status: stopped|failed, failure?}
 *        -> 200 the deployment after: ready becomes stopped or failed (stopped_at = now);
 *           one already stopped or failed stays as it is (idempotent) | 400 | 404
 *
 * A deployment here is the public object (id, object, model, status, region, replicas,
 * job_id, base_url, created_at, stopped_at, failure) plus what only the gateway uses:
 * endpoint_url (the worker-local base URL), worker_id and user_id.
 */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

#include "nf_http.h"
#include "nf_json.h"
#include "nf_mem.h"
#include "nf_pg.h"
#include "routes.h"

#define FAILURE_MAX 500

/* clang-format off */
#define DEP_JSON(p)                                                                        \
    "json_build_object('id', " p "deployment_id, 'object', 'deployment',"                  \
    " 'model', " p "model, 'status', " p "status, 'region', " p "region,"                   \
    " 'replicas', " p "replicas, 'job_id', " p "job_id,"                                   \
    " 'base_url', '/api/deployments/' || " p "deployment_id || '/v1',"                     \
    " 'created_at', " SCHED_TS(p "created_at") ","                                         \
    " 'stopped_at', " SCHED_TS(p "stopped_at") ", 'failure', " p "failure,"                \
    " 'endpoint_url', " p "endpoint_url, 'worker_id', " p "worker_id,"                     \
    " 'user_id', " p "user_id)::text"

static const char list_sql[] =
    "SELECT coalesce(json_agg(x.d ORDER BY x.created_at DESC, x.id DESC), '[]')::text AS data"
    " FROM (SELECT " DEP_JSON("d.") "::json AS d, d.created_at, d.deployment_id AS id"
    "       FROM sched.deployments d WHERE d.user_id = $1"
    "       ORDER BY d.created_at DESC LIMIT 1000) x";

static const char one_sql[] =
    "SELECT " DEP_JSON("d.") " AS d FROM sched.deployments d"
    " WHERE d.deployment_id = $2 AND d.user_id = $1";

static const char status_sql[] =
    "WITH upd AS ("
    " UPDATE sched.deployments d SET status = $3, stopped_at = now(),"
    "  failure = CASE WHEN $3 = 'failed' THEN $4 END"
    " WHERE d.deployment_id = $2 AND d.user_id = $1 AND d.status = 'ready'"
    " RETURNING d.*"
    ")"
    " SELECT " DEP_JSON("u.") " AS d FROM upd u"
    " UNION ALL"
    " SELECT " DEP_JSON("d.") " FROM sched.deployments d"
    " WHERE d.deployment_id = $2 AND d.user_id = $1 AND NOT EXISTS (SELECT 1 FROM upd)";
/* clang-format on */

bool sched_deployment_id_valid(const char *id)
{
    if (id == NULL || strncmp(id, "dep-", 4) != 0 || strlen(id) != 16)
        return false;
    for (const char *c = id + 4; *c != '\0'; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

/* ---- list, get, status ----------------------------------------------------------------- */

static void not_found(struct nf_http_req *req)
{
    nf_http_reply_error(req, 404, "not_found", NULL,
                        "no such deployment; GET /api/deployments lists yours");
}

/* One json text column d (or data for the list): answered as it is. */
static void on_row(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    const char *text;
    cJSON *doc, *out;

    (void)pgcode;
    if (!res) {
        sched_http_unavailable(req, err);
        return;
    }
    if (PQntuples(res) < 1) {
        not_found(req);
        return;
    }
    text = nf_pg_val(res, 0, PQfnumber(res, "data") >= 0 ? "data" : "d");
    doc = text ? nf_json_parse(text, strlen(text)) : NULL;
    if (!doc) {
        sched_http_unavailable(req, "unreadable deployment row");
        return;
    }
    if (cJSON_IsArray(doc)) {
        out = nf_json_obj();
        nf_json_add_str(out, "object", "list");
        cJSON_AddItemToObject(out, "data", doc);
        doc = out;
    }
    nf_http_reply_json(req, 200, doc);
}

void sched_route_deployments(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *params[1], *user = sched_http_caller(req);

    if (!user)
        return;
    params[0] = user;
    if (nf_pg_query(ctx->pg, list_sql, 1, params, on_row, req) < 0)
        sched_http_unavailable(req, "could not queue the query");
}

void sched_route_deployment(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *params[2], *user = sched_http_caller(req);
    const char *id = nf_http_req_param(req, "deployment_id");

    if (!user)
        return;
    if (!sched_deployment_id_valid(id)) {
        not_found(req);
        return;
    }
    params[0] = user;
    params[1] = id;
    if (nf_pg_query(ctx->pg, one_sql, 2, params, on_row, req) < 0)
        sched_http_unavailable(req, "could not queue the query");
}

void sched_route_deployment_status(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *params[4], *user = sched_http_caller(req), *status, *failure;
    const char *id = nf_http_req_param(req, "deployment_id");
    char why[FAILURE_MAX + 1];
    cJSON *body;

    if (!user)
        return;
    if (!sched_deployment_id_valid(id)) {
        not_found(req);
        return;
    }
    if (!(body = nf_http_req_json(req)))
        return;
    status = nf_json_str(body, "status");
    failure = nf_json_str(body, "failure");
    if (!status || (strcmp(status, "stopped") != 0 && strcmp(status, "failed") != 0)) {
        nf_http_reply_error(req, 400, "invalid_params", "status",
                            "status must be stopped or failed");
        return;
    }
    snprintf(why, sizeof(why), "%s", failure ? failure : "the endpoint is gone");
    params[0] = user;
    params[1] = id;
    params[2] = status;
    params[3] = why;
    if (nf_pg_query(ctx->pg, status_sql, 4, params, on_row, req) < 0)
        sched_http_unavailable(req, "could not queue the query");
}
