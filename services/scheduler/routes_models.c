/*
 * The model catalogue's internal routes (DESIGN §15). Base models are the operator's
 * (ctx->catalogue, from NF_SCHEDULER_MODELS_FILE); an account's models are rows of
 * sched.models: every succeeded train's model (consume_events.c) and the uploads
 * registered here. A name resolves to the caller's model first, then to a base model;
 * another account's model does not exist (404, absent from the list).
 *
 *   GET    /internal/models               -> 200 {object: list, data: [base..., own...]}
 *   GET    /internal/models/{model}       -> 200 model | 404   (name or mdl_ id)
 *   DELETE /internal/models/{model}       -> 200 the deleted model | 403 a base model | 404
 *   POST   /internal/models {name, uri, architecture?, parameters?} -> 201 model
 *          (the gateway sends architecture and parameters once it has checked that the
 *          upload is a loadable Hugging Face model directory: gateway/model_check.h)
 *          -> 422 name (not 1..64 of [a-z0-9._-]) or uri (not artifact:// of a live
 *             purpose=model file of the caller) | 409 the name is taken (own or base)
 *
 * Deleting a model only marks its row: the artifact (and its bytes) stay, as its job's
 * output or as the uploaded file, deleted through their own routes.
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
#define MODEL_COLS(p)                                                                      \
    p "model_id, " p "user_id, " p "name, " p "kind, " p "base_model, " p "architecture, "     \
    p "parameters, " p "stand_in, " p "artifact_id, " p "job_id, "                           \
    "extract(epoch FROM " p "created_at)::bigint AS created"

static const char list_sql[] =
    "SELECT " MODEL_COLS("m.") " FROM sched.models m"
    " WHERE m.user_id = $1 AND m.deleted_at IS NULL ORDER BY m.name LIMIT 1000";

static const char one_sql[] =
    "SELECT " MODEL_COLS("m.") " FROM sched.models m"
    " WHERE m.user_id = $1 AND m.deleted_at IS NULL AND (m.name = $2 OR m.model_id = $2)";

static const char delete_sql[] =
    "UPDATE sched.models m SET deleted_at = now()"
    " WHERE m.user_id = $1 AND m.deleted_at IS NULL AND (m.name = $2 OR m.model_id = $2)"
    " RETURNING " MODEL_COLS("m.");

/* One row always: files = 1 when the uri names a live model file of the caller, and the
 * model's columns when it was recorded (NULL when the name is taken). */
static const char create_sql[] =
    "WITH f AS ("
    " SELECT artifact_id FROM sched.artifacts"
    " WHERE artifact_id = $3 AND user_id = $2 AND deleted_at IS NULL"
    "  AND source = 'upload' AND purpose = 'model'"
    "), ins AS ("
    " INSERT INTO sched.models (model_id, user_id, name, kind, artifact_id, architecture,"
    "  parameters)"
    " SELECT $1, $2, $4, 'uploaded', f.artifact_id, $5, $6::bigint FROM f"
    " ON CONFLICT (user_id, name) WHERE deleted_at IS NULL DO NOTHING"
    " RETURNING *"
    ")"
    " SELECT c.n AS files, " MODEL_COLS("m.")
    " FROM (SELECT count(*) AS n FROM f) c LEFT JOIN ins m ON true";
/* clang-format on */

/* The public object of an account's model row. */
static cJSON *model_json(const PGresult *res, int row)
{
    cJSON *m = nf_json_obj();
    const char *params = nf_pg_val(res, row, "parameters");
    const char *stand_in = nf_pg_val(res, row, "stand_in");
    const char *art = nf_pg_val(res, row, "artifact_id");
    char source[64 + NF_ID_MAX];

    nf_json_add_str(m, "id", nf_pg_val(res, row, "name"));
    nf_json_add_str(m, "object", "model");
    nf_json_add_int(m, "created", strtoll(nf_pg_val(res, row, "created"), NULL, 10));
    nf_json_add_str(m, "owned_by", nf_pg_val(res, row, "user_id"));
    nf_json_add_str(m, "kind", nf_pg_val(res, row, "kind"));
    nf_json_add_str(m, "architecture", nf_pg_val(res, row, "architecture"));
    if (params)
        nf_json_add_int(m, "parameters", strtoll(params, NULL, 10));
    else
        nf_json_add_str(m, "parameters", NULL);
    nf_json_add_str(m, "base_model", nf_pg_val(res, row, "base_model"));
    snprintf(source, sizeof(source), "artifact://%s", art ? art : "");
    nf_json_add_str(m, "source", source);
    if (!cJSON_AddBoolToObject(m, "stand_in", stand_in && strcmp(stand_in, "t") == 0))
        abort();
    nf_json_add_str(m, "artifact_id", art);
    nf_json_add_str(m, "model_uid", nf_pg_val(res, row, "model_id"));
    nf_json_add_str(m, "job_id", nf_pg_val(res, row, "job_id"));
    return m;
}

static cJSON *dup(const cJSON *it)
{
    cJSON *c = cJSON_Duplicate(it, true);

    if (!c)
        abort();
    return c;
}

/* ---- list ---------------------------------------------------------------------------- */

struct models_op {
    struct sched_ctx *ctx;
    struct nf_http_req *req;
    char name[SCHED_MODEL_NAME_MAX + 1];
};

static void on_list(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct models_op *op = arg;
    cJSON *out, *data;
    const cJSON *m;
    int i;

    (void)pgcode;
    if (!res) {
        sched_http_unavailable(op->req, err);
        free(op);
        return;
    }
    out = nf_json_obj();
    nf_json_add_str(out, "object", "list");
    data = cJSON_AddArrayToObject(out, "data");
    if (!data)
        abort();
    cJSON_ArrayForEach(m, op->ctx->catalogue)
    {
        cJSON_AddItemToArray(data, dup(m));
    }
    for (i = 0; i < PQntuples(res); i++)
        cJSON_AddItemToArray(data, model_json(res, i));
    nf_http_reply_json(op->req, 200, out);
    free(op);
}

void sched_route_models(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *params[1], *user = sched_http_caller(req);
    struct models_op *op;

    if (!user)
        return;
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    params[0] = user;
    if (nf_pg_query(ctx->pg, list_sql, 1, params, on_list, op) < 0) {
        sched_http_unavailable(req, "could not queue the query");
        free(op);
    }
}

/* ---- one model: get, delete ---------------------------------------------------------- */

static void not_found(struct nf_http_req *req, const char *name)
{
    nf_http_reply_error(req, 404, "not_found", NULL,
                        "no model %s; GET /api/models lists the models you can use", name);
}

static void on_get(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct models_op *op = arg;
    const cJSON *base;

    (void)pgcode;
    if (!res)
        sched_http_unavailable(op->req, err);
    else if (PQntuples(res) > 0)
        nf_http_reply_json(op->req, 200, model_json(res, 0));
    else if ((base = sched_catalogue_find(op->ctx->catalogue, op->name)))
        nf_http_reply_json(op->req, 200, dup(base));
    else
        not_found(op->req, op->name);
    free(op);
}

static void on_delete(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct models_op *op = arg;

    (void)pgcode;
    if (!res)
        sched_http_unavailable(op->req, err);
    else if (PQntuples(res) > 0)
        nf_http_reply_json(op->req, 200, model_json(res, 0));
    else if (sched_catalogue_find(op->ctx->catalogue, op->name))
        nf_http_reply_error(op->req, 403, "forbidden", NULL,
                            "%s is a base model: the operator's catalogue defines it", op->name);
    else
        not_found(op->req, op->name);
    free(op);
}

static void one(struct sched_ctx *ctx, struct nf_http_req *req, const char *sql, nf_pg_cb cb)
{
    const char *params[2], *user = sched_http_caller(req);
    const char *name = nf_http_req_param(req, "model");
    struct models_op *op;

    if (!user)
        return;
    if (!name || !sched_model_lookup_valid(name)) {
        nf_http_reply_error(req, 404, "not_found", NULL,
                            "no such model; GET /api/models lists the models you can use");
        return;
    }
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    snprintf(op->name, sizeof(op->name), "%s", name);
    params[0] = user;
    params[1] = name;
    if (nf_pg_query(ctx->pg, sql, 2, params, cb, op) < 0) {
        sched_http_unavailable(req, "could not queue the query");
        free(op);
    }
}

void sched_route_model(struct nf_http_req *req, void *arg)
{
    one(arg, req, one_sql, on_get);
}

void sched_route_model_delete(struct nf_http_req *req, void *arg)
{
    one(arg, req, delete_sql, on_delete);
}

/* ---- POST /internal/models ----------------------------------------------------------- */

static void on_create(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct models_op *op = arg;
    const char *files;

    /* a unique violation: the name was taken at the same moment */
    if (!res && !(pgcode && strcmp(pgcode, "23505") == 0)) {
        sched_http_unavailable(op->req, err);
    } else if (res && (PQntuples(res) < 1 || !(files = nf_pg_val(res, 0, "files")) ||
                       strcmp(files, "0") == 0)) {
        nf_http_reply_error(op->req, 422, "invalid_params", "uri",
                            "uri must be artifact://<id> of a file of yours uploaded with "
                            "purpose=model (POST /api/files)");
    } else if (!res || !nf_pg_val(res, 0, "model_id")) {
        nf_http_reply_error(op->req, 409, "conflict", "name", "you have a model named %s already",
                            op->name);
    } else {
        nf_http_reply_json(op->req, 201, model_json(res, 0));
    }
    free(op);
}

void sched_route_model_create(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *params[6], *user = sched_http_caller(req), *name, *uri, *arch;
    char model_id[NF_ID_MAX], count[32];
    const cJSON *n;
    struct models_op *op;
    cJSON *body;

    if (!user || !(body = nf_http_req_json(req)))
        return;
    name = nf_json_str(body, "name");
    uri = nf_json_str(body, "uri");
    if (!sched_model_name_valid(name)) {
        nf_http_reply_error(req, 422, "invalid_params", "name",
                            "name must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-'");
        return;
    }
    if (!uri || strncmp(uri, "artifact://", 11) != 0 || !nf_id_valid("art", uri + 11)) {
        nf_http_reply_error(req, 422, "invalid_params", "uri",
                            "uri must be artifact://<id> of a file of yours uploaded with "
                            "purpose=model (POST /api/files)");
        return;
    }
    if (sched_catalogue_find(ctx->catalogue, name)) {
        nf_http_reply_error(req, 409, "conflict", "name",
                            "%s is a base model of the catalogue; pick another name", name);
        return;
    }
    if (nf_id_new("mdl", model_id, sizeof(model_id)) < 0) {
        sched_http_unavailable(req, "no model id");
        return;
    }
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    snprintf(op->name, sizeof(op->name), "%s", name);
    params[0] = model_id;
    params[1] = user;
    params[2] = uri + 11;
    params[3] = name;
    arch = nf_json_str(body, "architecture");
    params[4] = arch && strlen(arch) <= 48 ? arch : NULL;
    n = cJSON_GetObjectItemCaseSensitive(body, "parameters");
    params[5] = NULL;
    if (cJSON_IsNumber(n) && n->valuedouble >= 0 && n->valuedouble < 1e15) {
        snprintf(count, sizeof(count), "%lld", (long long)n->valuedouble);
        params[5] = count;
    }
    if (nf_pg_query(ctx->pg, create_sql, 6, params, on_create, op) < 0) {
        sched_http_unavailable(req, "could not queue the query");
        free(op);
    }
}
