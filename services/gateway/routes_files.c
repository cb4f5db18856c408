/*
 * /api/files (DESIGN §12): files are uploaded artifacts; the registry is nf-scheduler's,
 * the bytes are in the object store. Uploads: files_upload.c.
 *
 *   GET    /api/files?purpose=&limit=&cursor=  -> nf-scheduler GET /internal/files
 *          -> {"object": "list", "data": [file objects], "has_more", "next_cursor"}
 *   GET    /api/files/{file_id}                -> GET /internal/artifacts/{id}
 *          -> the file object (a job's output is not a file: 404)
 *   DELETE /api/files/{file_id}                -> GET /internal/artifacts/{id} (owner
 *          check: another user's file is a 404) -> DELETE of its object in the store (a
 *          missing object is fine) -> DELETE /internal/artifacts/{id}
 *          -> {"id", "object": "file", "deleted": true}
 *
 * Every call carries the caller in X-Nf-User-Id. The registry or the store unreachable:
 * 503 Retry-After 1. The object goes before the record, so a failed delete can be retried
 * and never leaves an object nobody can name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_s3.h"
#include "routes.h"

#define TARGET_MAX 4096

/* One call in progress; freed by op_done. */
struct files_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    char user_id[NF_ID_MAX];
    char id[NF_ID_MAX];
    const char *headers[5]; /* X-Nf-User-Id, X-Request-Id */
};

static struct files_op *op_new(struct gw_ctx *ctx, struct nf_http_req *req,
                               const struct gw_principal *who, const char *id)
{
    struct files_op *op = nf_xcalloc(1, sizeof(*op));

    op->ctx = ctx;
    op->req = req;
    snprintf(op->user_id, sizeof(op->user_id), "%s", who->user_id);
    snprintf(op->id, sizeof(op->id), "%s", id != NULL ? id : "");
    gw_caller_headers(op->user_id, req, op->headers);
    return op;
}

static void op_done(struct files_op *op)
{
    free(op);
}

/* A scheduler answer that is not the expected one: its 4xx relayed, else 503. */
static void relay_failure(struct files_op *op, const struct nf_http_resp *resp, const char *what)
{
    const char *ct;

    if (op->ctx->svc->closing) {
        gw_reply_unavailable(op->req, 1, "the gateway is shutting down, try again");
    } else if (resp->status == 404) {
        nf_http_reply_error(op->req, 404, "not_found", NULL, "file not found");
    } else if (resp->status >= 400 && resp->status < 500) {
        ct = nf_http_resp_header(resp, "Content-Type");
        nf_http_reply_raw(op->req, resp->status, ct != NULL ? ct : "application/json", resp->body,
                          resp->len);
    } else {
        nf_log_kv(NF_LOG_WARN, "scheduler_unavailable", what, "error",
                  resp->error != NULL ? resp->error : "unexpected status", NULL);
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the artifact registry is unavailable, try again");
    }
    op_done(op);
}

/* Sends a scheduler call for op; answers 503 itself when it cannot. */
static void sched_call(struct files_op *op, const char *method, const char *target,
                       nf_http_client_cb cb)
{
    if (op->ctx->sched == NULL || nf_http_client_request(op->ctx->sched, method, target,
                                                         op->headers, NULL, 0, 0, cb, op) != 0) {
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the artifact registry is unavailable, try again");
        op_done(op);
    }
}

/* The record of an upload (a file); NULL for a job's output or a body that is not one. */
static cJSON *file_record(const struct nf_http_resp *resp)
{
    cJSON *rec = nf_json_parse(resp->body, resp->len);
    const char *source;

    if (!cJSON_IsObject(rec)) {
        cJSON_Delete(rec);
        return NULL;
    }
    source = nf_json_str(rec, "source");
    if (source != NULL && strcmp(source, "upload") != 0) {
        cJSON_Delete(rec);
        return NULL;
    }
    return rec;
}

/* ---- list --------------------------------------------------------------------------- */

static void listed(const struct nf_http_resp *resp, void *arg)
{
    struct files_op *op = arg;
    cJSON *page, *out, *data;
    const cJSON *item, *items;

    if (resp->status != 200 || op->ctx->svc->closing ||
        !cJSON_IsObject(page = nf_json_parse(resp->body, resp->len))) {
        relay_failure(op, resp, "file list failed");
        return;
    }
    out = nf_json_obj();
    nf_json_add_str(out, "object", "list");
    data = cJSON_AddArrayToObject(out, "data");
    items = cJSON_GetObjectItemCaseSensitive(page, "data");
    cJSON_ArrayForEach(item, items)
    {
        cJSON *f = gw_file_object(item);
        if (f != NULL)
            cJSON_AddItemToArray(data, f);
    }
    cJSON_AddBoolToObject(out, "has_more", cJSON_IsTrue(cJSON_GetObjectItem(page, "has_more")));
    if (nf_json_str(page, "next_cursor") != NULL)
        nf_json_add_str(out, "next_cursor", nf_json_str(page, "next_cursor"));
    else
        cJSON_AddNullToObject(out, "next_cursor");
    cJSON_Delete(page);
    nf_http_reply_json(op->req, 200, out);
    op_done(op);
}

static void list_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *query = nf_http_req_query_string(req), *purpose = nf_http_req_query(req, "purpose");
    char target[TARGET_MAX];
    int n;

    if (purpose != NULL && !gw_files_purpose_valid(purpose)) {
        nf_http_reply_error(req, 422, "invalid_parameter", "purpose",
                            "purpose must be dataset, model or other");
        return;
    }
    n = snprintf(target, sizeof(target), "/internal/files%s%s", query ? "?" : "",
                 query ? query : "");
    if (n < 0 || (size_t)n >= sizeof(target)) {
        nf_http_reply_error(req, 414, "uri_too_long", NULL, "the request URI is too long");
        return;
    }
    sched_call(op_new(ctx, req, who, NULL), "GET", target, listed);
}

/* ---- get ---------------------------------------------------------------------------- */

static void got(const struct nf_http_resp *resp, void *arg)
{
    struct files_op *op = arg;
    cJSON *rec, *obj;

    if (resp->status != 200 || op->ctx->svc->closing) {
        relay_failure(op, resp, "file read failed");
        return;
    }
    rec = file_record(resp);
    obj = rec != NULL ? gw_file_object(rec) : NULL;
    cJSON_Delete(rec);
    if (obj == NULL)
        nf_http_reply_error(op->req, 404, "not_found", NULL, "file not found");
    else
        nf_http_reply_json(op->req, 200, obj);
    op_done(op);
}

/* The registry's record of the file named by the path, then cb; a malformed id is a 404. */
static void look_up(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who,
                    nf_http_client_cb cb)
{
    const char *id = nf_http_req_param(req, "file_id");
    char target[64 + NF_ID_MAX];

    if (!nf_id_valid("art", id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "file not found");
        return;
    }
    snprintf(target, sizeof(target), "/internal/artifacts/%s", id);
    sched_call(op_new(ctx, req, who, id), "GET", target, cb);
}

static void get_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    look_up(ctx, req, who, got);
}

/* ---- delete ------------------------------------------------------------------------- */

static void record_deleted(const struct nf_http_resp *resp, void *arg)
{
    struct files_op *op = arg;
    cJSON *out;

    if (resp->status != 200 && resp->status != 204) {
        relay_failure(op, resp, "file delete failed");
        return;
    }
    out = nf_json_obj();
    nf_json_add_str(out, "id", op->id);
    nf_json_add_str(out, "object", "file");
    cJSON_AddBoolToObject(out, "deleted", 1);
    nf_http_reply_json(op->req, 200, out);
    op_done(op);
}

static void delete_record(struct files_op *op)
{
    char target[64 + NF_ID_MAX];

    snprintf(target, sizeof(target), "/internal/artifacts/%s", op->id);
    sched_call(op, "DELETE", target, record_deleted);
}

static void object_deleted(const struct nf_s3_result *res, void *arg)
{
    struct files_op *op = arg;

    if (op->ctx->svc->closing) {
        gw_reply_unavailable(op->req, 1, "the gateway is shutting down, try again");
        op_done(op);
    } else if (res->status == 204 || res->status == 200 || res->status == 404) {
        delete_record(op);
    } else {
        nf_log_kv(NF_LOG_WARN, "s3_unavailable", "file object delete failed", "code", res->code,
                  "error", res->error, NULL);
        gw_backend_error(op->ctx, GW_BACKEND_S3);
        gw_reply_unavailable(op->req, 1, "the object store is unavailable, try again");
        op_done(op);
    }
}

static void looked_up(const struct nf_http_resp *resp, void *arg)
{
    struct files_op *op = arg;
    cJSON *rec;
    const char *key;

    if (resp->status != 200 || op->ctx->svc->closing) {
        relay_failure(op, resp, "file read failed");
        return;
    }
    rec = file_record(resp);
    if (rec == NULL) {
        nf_http_reply_error(op->req, 404, "not_found", NULL, "file not found");
        op_done(op);
        return;
    }
    key = nf_json_str(rec, "object_key");
    if (key == NULL || key[0] == '\0') {
        cJSON_Delete(rec);
        delete_record(op);
        return;
    }
    if (op->ctx->s3 == NULL || nf_s3_delete(op->ctx->s3, key, object_deleted, op) != 0) {
        gw_backend_error(op->ctx, GW_BACKEND_S3);
        gw_reply_unavailable(op->req, 1, "the object store is unavailable, try again");
        op_done(op);
    }
    cJSON_Delete(rec);
}

static void delete_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    look_up(ctx, req, who, looked_up);
}

GW_ROUTE_AUTHED(gw_files_list, list_authed)
GW_ROUTE_AUTHED(gw_files_get, get_authed)
GW_ROUTE_AUTHED(gw_files_delete, delete_authed)
