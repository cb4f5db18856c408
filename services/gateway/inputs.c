/*
 * A job's stored inputs, resolved before the 202 (DESIGN §4, §12): every param that names
 * stored data must exist and belong to the caller now, not fail minutes later on a worker.
 *
 *   valid request --plan (pure)--> [dataset_uri: s3://b/k, model_id: artifact://art_x, ...]
 *     --> nf-scheduler, as the caller (the registry owns every name):
 *         s3://<bucket>/<key>  GET /internal/files?limit=1&s3_uri=<uri> -> the live file of
 *                              that name | none: 422 "no such object s3://b/k"
 *         artifact://<id>      GET /internal/artifacts/<id> -> 200 with an object key
 *                              | 404 / no content: 422 (from_checkpoint: 422 unless its
 *                              kind is checkpoint)
 *         <model name>         (model_id, teacher_model, student_model, compare_to)
 *                              GET /internal/models/<name> (the caller's models first,
 *                              then the base catalogue) -> 200 own model: models[param] =
 *                              it, then its artifact as artifact:// | 200 base model:
 *                              models[param] = it (no input: the worker finds it by its
 *                              source) | 404: 422 "unknown model"
 *         output_model <name>  GET /internal/models/<name> -> 404: free | 200: 409
 *         dep-<id>             (generator, teacher_model, judge; evaluate's model_id and
 *                              compare_to) GET /internal/deployments/<id>
 *                              -> 200 ready: models[param] = {id, kind: "deployment",
 *                              source: "deployment:<id>", base_url, model} | not ready:
 *                              422 | 404: 422 "no such deployment"
 *         registry down or an unexpected answer: 503
 *   --> valid.inputs = [{param, uri, object_key, name, bytes}],
 *       valid.models = {param: model object} --> done(valid)
 *
 * Inputs are resolved one after the other (a job has at most a few). The worker fetches
 * each object by its key; it never sees a user's URI as a path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_s3.h"

/* The params that may name stored data or models, in the order they are checked. */
static const struct {
    const char *name;
    bool model;
} input_params[] = {
    {"dataset_uri", false},     {"validation_uri", false}, {"model_id", true},
    {"teacher_model", true},    {"student_model", true},   {"output_model", true},
    {"from_checkpoint", false}, /* train: artifact:// of a checkpoint (kind checked) */
    {"compare_to", true},       {"tokenizer_model", true}, /* audit: whose tokenizer counts */
    {"generator", true},        {"judge", true},           /* audit: the model that scores rows */
};
#define NPARAMS (sizeof(input_params) / sizeof(input_params[0]))

const char *gw_input_basename(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

/* The params whose model may be one of the caller's deployments (a provider, DESIGN §15;
 * evaluate scores a running deployment through its OpenAI API: handlers/_apilm.py). */
static bool deployment_param(const char *job_type, const char *param)
{
    if (strcmp(param, "generator") == 0 || strcmp(param, "teacher_model") == 0 ||
        strcmp(param, "judge") == 0)
        return true;
    return job_type && strcmp(job_type, "evaluate") == 0 &&
           (strcmp(param, "model_id") == 0 || strcmp(param, "compare_to") == 0);
}

size_t gw_inputs_plan(const cJSON *params, struct gw_input *out, size_t max)
{
    return gw_inputs_plan_job(NULL, params, out, max);
}

size_t gw_inputs_plan_job(const char *job_type, const cJSON *params, struct gw_input *out,
                          size_t max)
{
    size_t i, n = 0;
    const char *v;

    for (i = 0; i < NPARAMS && n < max; i++) {
        v = nf_json_str(params, input_params[i].name);
        if (!v)
            continue;
        /* generate's templates are no model */
        if (strcmp(input_params[i].name, "generator") == 0 && strcmp(v, "template") == 0)
            continue;
        memset(&out[n], 0, sizeof(out[n]));
        out[n].param = input_params[i].name;
        out[n].uri = v;
        if (deployment_param(job_type, input_params[i].name) && strncmp(v, "dep-", 4) == 0) {
            out[n++].kind = GW_INPUT_DEPLOYMENT;
        } else if (strcmp(input_params[i].name, "output_model") == 0) {
            out[n++].kind = GW_INPUT_NEW_MODEL;
        } else if (strncmp(v, "artifact://", 11) == 0) {
            out[n].kind = GW_INPUT_ARTIFACT;
            out[n++].artifact_id = v + 11;
        } else if (input_params[i].model) {
            out[n++].kind = GW_INPUT_MODEL;
        } else if (gw_s3_uri_valid(v)) {
            out[n++].kind = GW_INPUT_OBJECT;
        }
    }
    return n;
}

struct resolve_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    char user_id[NF_ID_MAX];
    cJSON *valid;
    cJSON *inputs; /* the resolved entries so far */
    cJSON *models; /* the models named so far, {param: model object} */
    struct gw_input plan[NPARAMS];
    size_t n, next;
    gw_inputs_cb done;
    void *arg;
};

static void resolve_next(struct resolve_op *op);

static void finish(struct resolve_op *op, bool ok)
{
    cJSON *valid = op->valid;

    if (ok && cJSON_GetArraySize(op->inputs) > 0) {
        if (!cJSON_AddItemToObject(valid, "inputs", op->inputs))
            abort();
    } else {
        cJSON_Delete(op->inputs);
    }
    if (ok && cJSON_GetArraySize(op->models) > 0) {
        if (!cJSON_AddItemToObject(valid, "models", op->models))
            abort();
    } else {
        cJSON_Delete(op->models);
    }
    if (!ok) {
        cJSON_Delete(valid);
        valid = NULL;
    }
    op->done(op->ctx, op->req, valid, op->arg);
    free(op);
}

static void add_input(struct resolve_op *op, const struct gw_input *in, const char *key,
                      const char *name, long long bytes)
{
    cJSON *o = nf_json_obj();

    nf_json_add_str(o, "param", in->param);
    nf_json_add_str(o, "uri", in->uri);
    nf_json_add_str(o, "object_key", key);
    nf_json_add_str(o, "name", name);
    nf_json_add_int(o, "bytes", bytes);
    if (!cJSON_AddItemToArray(op->inputs, o))
        abort();
}

/* The registry's record: one artifact, or the first of a list of files (NULL: none). */
static cJSON *record_of(const struct nf_http_resp *resp, bool list, cJSON **doc)
{
    *doc = nf_json_parse(resp->body, resp->len);
    if (!list)
        return *doc;
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(*doc, "data"), 0);
}

static void on_record(const struct nf_http_resp *resp, void *arg)
{
    struct resolve_op *op = arg;
    const struct gw_input *in = &op->plan[op->next];
    cJSON *doc = NULL, *rec = NULL;
    const char *key = NULL, *name = NULL;

    if (resp->status == 200) {
        rec = record_of(resp, in->kind == GW_INPUT_OBJECT, &doc);
        key = nf_json_str(rec, "object_key");
        name = nf_json_str(rec, "filename");
        if (!name)
            name = nf_json_str(rec, "name");
    }
    const char *kind = nf_json_str(rec, "kind");
    if (key && name && strcmp(in->param, "from_checkpoint") == 0 &&
        (!kind || strcmp(kind, "checkpoint") != 0)) {
        nf_http_reply_error(op->req, 422, "invalid_params", in->param,
                            "%s is not a checkpoint (its kind is %s): name a checkpoint "
                            "artifact of a train job",
                            in->uri, kind ? kind : "none");
        cJSON_Delete(doc);
        finish(op, false);
        return;
    }
    if (key && name) {
        add_input(op, in, key, gw_input_basename(name), nf_json_int(rec, "bytes", 0));
        cJSON_Delete(doc);
        op->next++;
        resolve_next(op);
        return;
    }
    if (resp->status == 404 || (resp->status == 200 && doc && !rec)) {
        if (in->artifact_id)
            nf_http_reply_error(op->req, 422, "invalid_params", in->param, "no such artifact %s",
                                in->uri);
        else
            nf_http_reply_error(op->req, 422, "invalid_params", in->param,
                                "no such object %s: upload it first (POST /api/files with "
                                "uri=%s)",
                                in->uri, in->uri);
    } else if (resp->status == 200 && rec) {
        nf_http_reply_error(op->req, 422, "invalid_params", in->param,
                            "%s has no content in the object store", in->uri);
    } else {
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the artifact registry is unavailable, try again");
    }
    cJSON_Delete(doc);
    finish(op, false);
}

/* GET target of nf-scheduler as the caller, answered to cb; 503 when it cannot be sent. */
static void sched_get(struct resolve_op *op, const char *target, nf_http_client_cb cb,
                      const char *what)
{
    const char *headers[5];

    gw_caller_headers(op->user_id, op->req, headers);
    if (!op->ctx->sched ||
        nf_http_client_request(op->ctx->sched, "GET", target, headers, NULL, 0, 0, cb, op) < 0) {
        gw_reply_unavailable(op->req, 1, what);
        finish(op, false);
    }
}

static void unknown_model(struct resolve_op *op, const struct gw_input *in)
{
    nf_http_reply_error(op->req, 422, "invalid_params", in->param,
                        "unknown model %.*s; GET /api/models lists the models you can use",
                        GW_MODEL_NAME_MAX, in->uri);
    finish(op, false);
}

/* The catalogue's answer for a model name (GW_INPUT_MODEL) or a new one (NEW_MODEL). */
static void on_model(const struct nf_http_resp *resp, void *arg)
{
    struct resolve_op *op = arg;
    struct gw_input *in = &op->plan[op->next];
    char target[64 + NF_ID_MAX];
    const char *art;
    cJSON *m;

    if (resp->status == 404 && in->kind == GW_INPUT_NEW_MODEL) {
        op->next++;
        resolve_next(op);
    } else if (resp->status == 404) {
        unknown_model(op, in);
    } else if (resp->status == 200 && in->kind == GW_INPUT_NEW_MODEL) {
        nf_http_reply_error(op->req, 409, "conflict", in->param,
                            "output_model %s names a model already (yours or a base model): "
                            "choose another name, or DELETE /api/models/%s first",
                            in->uri, in->uri);
        finish(op, false);
    } else if (resp->status == 200 && cJSON_IsObject(m = nf_json_parse(resp->body, resp->len))) {
        if (!cJSON_AddItemToObject(op->models, in->param, m))
            abort();
        art = nf_json_str(m, "artifact_id");
        if (art && nf_id_valid("art", art)) { /* the account's: its weights are an input */
            snprintf(in->model_artifact, sizeof(in->model_artifact), "%s", art);
            in->artifact_id = in->model_artifact;
            in->kind = GW_INPUT_ARTIFACT;
            snprintf(target, sizeof(target), "/internal/artifacts/%s", in->artifact_id);
            sched_get(op, target, on_record, "the artifact registry is unavailable, try again");
            return;
        }
        op->next++;
        resolve_next(op);
    } else {
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the model catalogue is unavailable, try again");
        finish(op, false);
    }
}

/* The registry's deployment record for a dep-... generator or teacher_model. */
static void on_deployment(const struct nf_http_resp *resp, void *arg)
{
    struct resolve_op *op = arg;
    const struct gw_input *in = &op->plan[op->next];
    cJSON *doc = resp->status == 200 ? nf_json_parse(resp->body, resp->len) : NULL;
    const char *status = nf_json_str(doc, "status"), *url = nf_json_str(doc, "endpoint_url");

    if (resp->status == 404 || (resp->status == 200 && doc && !status)) {
        nf_http_reply_error(op->req, 422, "invalid_params", in->param,
                            "no such deployment %s; GET /api/deployments lists yours", in->uri);
    } else if (status && strcmp(status, "ready") != 0) {
        nf_http_reply_error(op->req, 422, "invalid_params", in->param,
                            "deployment %s is %s: deploy the model again, or name another", in->uri,
                            status);
    } else if (status && url && strncmp(url, "http://", 7) == 0) {
        cJSON *m = nf_json_obj();
        char source[GW_DEP_ID_LEN + 16], base[2048];
        snprintf(source, sizeof(source), "deployment:%s", in->uri);
        snprintf(base, sizeof(base), "%s/v1", url);
        nf_json_add_str(m, "id", in->uri);
        nf_json_add_str(m, "kind", "deployment");
        nf_json_add_str(m, "source", source);
        nf_json_add_str(m, "base_url", base);
        nf_json_add_str(m, "model", nf_json_str(doc, "model"));
        if (!cJSON_AddItemToObject(op->models, in->param, m))
            abort();
        cJSON_Delete(doc);
        op->next++;
        resolve_next(op);
        return;
    } else {
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the deployment registry is unavailable, try again");
    }
    cJSON_Delete(doc);
    finish(op, false);
}

static void resolve_next(struct resolve_op *op)
{
    const struct gw_input *in;
    char target[128 + 3 * 2048], *enc;

    if (op->next >= op->n) {
        finish(op, true);
        return;
    }
    if (op->ctx->svc->closing) {
        gw_reply_unavailable(op->req, 1, "the gateway is shutting down, try again");
        finish(op, false);
        return;
    }
    in = &op->plan[op->next];
    if (in->kind == GW_INPUT_DEPLOYMENT) {
        if (!gw_dep_id_valid(in->uri)) {
            nf_http_reply_error(op->req, 422, "invalid_params", in->param,
                                "no such deployment; a deployment id is dep- and 12 hex digits");
            finish(op, false);
            return;
        }
        snprintf(target, sizeof(target), "/internal/deployments/%s", in->uri);
        sched_get(op, target, on_deployment, "the deployment registry is unavailable, try again");
        return;
    }
    if (in->kind == GW_INPUT_MODEL || in->kind == GW_INPUT_NEW_MODEL) {
        if (!gw_model_name_valid(in->uri, in->kind == GW_INPUT_MODEL)) {
            unknown_model(op, in); /* NEW_MODEL names were validated already */
            return;
        }
        snprintf(target, sizeof(target), "/internal/models/%s", in->uri);
        sched_get(op, target, on_model, "the model catalogue is unavailable, try again");
        return;
    }
    if (in->kind == GW_INPUT_ARTIFACT) {
        snprintf(target, sizeof(target), "/internal/artifacts/%s", in->artifact_id);
    } else {
        enc = nf_s3_encode(in->uri, false); /* every byte but A-Z a-z 0-9 - _ . ~ escaped */
        snprintf(target, sizeof(target), "/internal/files?limit=1&s3_uri=%s", enc);
        free(enc);
    }
    sched_get(op, target, on_record, "the artifact registry is unavailable, try again");
}

void gw_inputs_resolve(struct gw_ctx *ctx, struct nf_http_req *req, const char *user_id,
                       const char *job_type, cJSON *valid, gw_inputs_cb done, void *arg)
{
    struct resolve_op *op = nf_xcalloc(1, sizeof(*op));

    op->ctx = ctx;
    op->req = req;
    snprintf(op->user_id, sizeof(op->user_id), "%s", user_id);
    op->valid = valid;
    op->inputs = cJSON_CreateArray();
    op->models = cJSON_CreateObject();
    if (!op->inputs || !op->models)
        abort();
    op->n = gw_inputs_plan_job(job_type, cJSON_GetObjectItemCaseSensitive(valid, "params"),
                               op->plan, NPARAMS);
    op->done = done;
    op->arg = arg;
    resolve_next(op);
}
