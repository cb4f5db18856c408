/*
 * /api/models: the model catalogue belongs to nf-scheduler (the operator's base models and
 * the accounts' own, DESIGN §15); the gateway forwards with the caller in X-Nf-User-Id, so
 * another account's model is a 404 and absent from the list.
 *
 *   GET    /api/models            -> nf-scheduler GET /internal/models
 *   GET    /api/models/{model}    -> GET /internal/models/{model}     (name or mdl_ id)
 *   DELETE /api/models/{model}    -> DELETE /internal/models/{model}  (a base model: 403)
 *   POST   /api/models {name, uri} -> the upload checked (below: it must be a loadable
 *                                     Hugging Face model directory, else 422 naming uri)
 *                                  -> POST /internal/models {name, uri, architecture,
 *                                     parameters}                      (201 the model)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "model_check.h"
#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_mem.h"
#include "nf_s3.h"
#include "routes.h"

static void list_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *headers[5];

    gw_caller_headers(who->user_id, req, headers);
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, "GET", "/internal/models", headers, NULL,
               0, 0, NULL, NULL);
}

static void one(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who,
                const char *method)
{
    const char *headers[5], *name = nf_http_req_param(req, "model");
    char target[64 + GW_MODEL_NAME_MAX];

    if (!gw_model_name_valid(name, true)) {
        nf_http_reply_error(req, 404, "not_found", NULL,
                            "no such model; GET /api/models lists the models you can use");
        return;
    }
    gw_caller_headers(who->user_id, req, headers);
    snprintf(target, sizeof(target), "/internal/models/%s", name);
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, method, target, headers, NULL, 0, 0,
               NULL, NULL);
}

static void get_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    one(ctx, req, who, "GET");
}

static void delete_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    one(ctx, req, who, "DELETE");
}

/* ---- POST /api/models: the upload is checked before it is registered -------------- */

/*
 *   {name, uri: artifact://art_x} --> nf-scheduler GET /internal/artifacts/art_x (as the
 *   caller) --> an upload with purpose=model? no: forwarded as is (the registry answers its
 *   422) --> yes: its object read with ranged GETs (model_check.h): tar headers one block
 *   at a time, config.json, each safetensors header, the index --> bad: 422 naming uri and
 *   what is wrong --> good: POST /internal/models {name, uri, architecture, parameters}
 *   (the model_type and the parameters summed from the headers) --> 201 relayed.
 *
 * op lives until the one answer; each ranged GET is the only thing pending on it.
 */
enum phase { PH_HEADER, PH_PAX, PH_LONGNAME, PH_CONFIG, PH_ST_LEN, PH_ST_HDR, PH_INDEX };

struct reg_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    char user_id[NF_ID_MAX];
    char *name, *uri;
    char key[1100];
    uint64_t total; /* the object's bytes */
    uint64_t off;   /* the tar header being read */
    size_t members;
    enum phase phase;
    size_t file;      /* PH_ST_*: the index of the safetensors file in mc.files */
    uint64_t st_hlen; /* its header length */
    char pending[GW_MC_NAME_MAX * 2 + 2]; /* a pax or GNU long name for the next member */
    unsigned char *buf;
    size_t len, want;
    struct gw_mc mc;
};

static void reg_free(struct reg_op *op)
{
    free(op->name);
    free(op->uri);
    free(op->buf);
    free(op);
}

static void reg_forward(struct reg_op *op, const char *body)
{
    const char *headers[5];

    gw_caller_headers(op->user_id, op->req, headers);
    gw_forward(op->ctx, op->req, op->ctx->sched, GW_BACKEND_SCHEDULER, "POST", "/internal/models",
               headers, body, strlen(body), 0, NULL, NULL);
}

static void reg_bad(struct reg_op *op, const char *why)
{
    nf_http_reply_error(op->req, 422, "invalid_params", "uri",
                        "%.100s is not a loadable Hugging Face model directory: %s", op->uri, why);
    reg_free(op);
}

static void reg_step(struct reg_op *op);
static void reg_walk(struct reg_op *op);

static int on_bytes(const char *buf, size_t len, void *arg)
{
    struct reg_op *op = arg;

    if (len > op->want - op->len) /* more than asked: the store ignored the range */
        len = op->want - op->len;
    memcpy(op->buf + op->len, buf, len);
    op->len += len;
    return NF_S3_GO;
}

static void on_read(const struct nf_s3_result *res, void *arg)
{
    struct reg_op *op = arg;

    if ((res->status == 200 || res->status == 206) && op->len == op->want) {
        op->buf[op->len] = '\0';
        reg_step(op);
    } else if (res->status == 404 || res->status == 416 ||
               (res->status == 200 || res->status == 206)) {
        reg_bad(op, "its bytes end before the tar says they do");
    } else {
        gw_reply_unavailable(op->req, 1, "the object store is unavailable, try again");
        reg_free(op);
    }
}

/* Reads want bytes at off into op->buf, then reg_step (from the loop). */
static void reg_read(struct reg_op *op, uint64_t off, size_t want)
{
    char range[64];

    free(op->buf);
    op->buf = nf_xmalloc(want + 1);
    op->len = 0;
    op->want = want;
    snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + want - 1));
    if (!op->ctx->s3 || !nf_s3_get(op->ctx->s3, op->key, range, NULL, on_bytes, on_read, op)) {
        gw_reply_unavailable(op->req, 1, "the object store is unavailable, try again");
        reg_free(op);
    }
}

/* The next safetensors file from index i on, or the index file, or the end. */
static void reg_next_file(struct reg_op *op, size_t i)
{
    const struct gw_mc_file *f;
    char err[512];
    cJSON *o;
    char *text;

    for (; i < op->mc.nfiles; i++) {
        if (gw_mc_is_safetensors(op->mc.files[i].name)) {
            op->file = i;
            op->phase = PH_ST_LEN;
            if (op->mc.files[i].size < 10) {
                snprintf(err, sizeof(err), "%s is too short to be a safetensors file",
                         op->mc.files[i].name);
                reg_bad(op, err);
                return;
            }
            reg_read(op, op->mc.files[i].offset, 8);
            return;
        }
    }
    if (op->phase != PH_INDEX && (f = gw_mc_find(&op->mc, "model.safetensors.index.json"))) {
        if (f->size == 0 || f->size > GW_MC_INDEX_MAX) {
            reg_bad(op, "model.safetensors.index.json is empty or over 16 MiB");
            return;
        }
        op->phase = PH_INDEX;
        reg_read(op, f->offset, (size_t)f->size);
        return;
    }
    if (gw_mc_finish(&op->mc, err, sizeof(err)) < 0) {
        reg_bad(op, err);
        return;
    }
    o = nf_json_obj();
    nf_json_add_str(o, "name", op->name);
    nf_json_add_str(o, "uri", op->uri);
    nf_json_add_str(o, "architecture", op->mc.model_type);
    nf_json_add_int(o, "parameters", (long long)op->mc.params);
    text = nf_json_print(o);
    cJSON_Delete(o);
    reg_forward(op, text);
    free(text);
    reg_free(op);
}

/* After the walk: config.json, then the weights. */
static void reg_config(struct reg_op *op)
{
    const struct gw_mc_file *f = gw_mc_find(&op->mc, "config.json");

    if (!f) {
        reg_next_file(op, op->mc.nfiles); /* gw_mc_finish names what is missing */
        return;
    }
    if (f->size == 0 || f->size > GW_MC_CONFIG_MAX) {
        reg_bad(op, "config.json is empty or over 1 MiB");
        return;
    }
    op->phase = PH_CONFIG;
    reg_read(op, f->offset, (size_t)f->size);
}

/* One tar header at op->off (in op->buf). */
static void reg_header(struct reg_op *op)
{
    struct gw_mc_tar_hdr h;
    char err[512], name[GW_MC_NAME_MAX + 1];
    uint64_t data, next;
    int rc = gw_mc_tar_header(op->buf, &h, err, sizeof(err));

    if (rc < 0) {
        reg_bad(op, err);
        return;
    }
    if (rc == 0) {
        reg_config(op);
        return;
    }
    data = op->off + 512;
    if (h.size > op->total - data) {
        snprintf(err, sizeof(err), "tar member %.200s runs past the end of the upload", h.name);
        reg_bad(op, err);
        return;
    }
    next = data + ((h.size + 511) / 512) * 512;
    if (h.type == 'x' || h.type == 'L') {
        if (h.size == 0 || h.size > (h.type == 'x' ? GW_MC_PAX_MAX : sizeof(op->pending) - 1)) {
            reg_bad(op, "a tar extended header is empty or too long");
            return;
        }
        op->phase = h.type == 'x' ? PH_PAX : PH_LONGNAME;
        op->off = next;
        reg_read(op, data, (size_t)h.size);
        return;
    }
    rc = gw_mc_member(op->pending[0] ? op->pending : h.name, h.type, name, sizeof(name), err,
                      sizeof(err));
    if (h.type != 'g' && h.type != 'K')
        op->pending[0] = '\0';
    if (rc < 0 || (rc == 1 && gw_mc_add(&op->mc, name, data, h.size, err, sizeof(err)) < 0)) {
        reg_bad(op, err);
        return;
    }
    op->off = next;
    reg_walk(op);
}

static void reg_step(struct reg_op *op)
{
    char err[512];
    const struct gw_mc_file *f;
    int rc;

    switch (op->phase) {
    case PH_PAX:
        rc = gw_mc_pax_path((const char *)op->buf, op->len, op->pending, sizeof(op->pending), err,
                            sizeof(err));
        if (rc < 0) {
            reg_bad(op, err);
            return;
        }
        break;
    case PH_LONGNAME:
        snprintf(op->pending, sizeof(op->pending), "%s", (const char *)op->buf);
        break;
    case PH_CONFIG:
        if (gw_mc_config(&op->mc, (const char *)op->buf, op->len, err, sizeof(err)) < 0)
            reg_bad(op, err);
        else
            reg_next_file(op, 0);
        return;
    case PH_ST_LEN:
        f = &op->mc.files[op->file];
        if (gw_mc_st_header_len(f->name, op->buf, f->size, &op->st_hlen, err, sizeof(err)) < 0) {
            reg_bad(op, err);
            return;
        }
        op->phase = PH_ST_HDR;
        reg_read(op, f->offset + 8, (size_t)op->st_hlen);
        return;
    case PH_ST_HDR:
        f = &op->mc.files[op->file];
        if (gw_mc_safetensors(&op->mc, f->name, (const char *)op->buf, op->len,
                              f->size - 8 - op->st_hlen, err, sizeof(err)) < 0)
            reg_bad(op, err);
        else
            reg_next_file(op, op->file + 1);
        return;
    case PH_INDEX:
        if (gw_mc_index(&op->mc, (const char *)op->buf, op->len, err, sizeof(err)) < 0)
            reg_bad(op, err);
        else
            reg_next_file(op, op->mc.nfiles);
        return;
    case PH_HEADER:
        reg_header(op);
        return;
    }
    reg_walk(op);
}

/* Reads the next tar header; the end of the object counts as the end of the archive. */
static void reg_walk(struct reg_op *op)
{
    if (op->total < 512 || op->off > op->total - 512) {
        if (op->off == 0) {
            reg_bad(op, "the upload is not a tar archive (under 512 bytes)");
            return;
        }
        reg_config(op);
        return;
    }
    if (++op->members > GW_MC_MAX_MEMBERS) {
        reg_bad(op, "the tar has too many members");
        return;
    }
    op->phase = PH_HEADER;
    reg_read(op, op->off, 512);
}
/* The registry's record of the uri's artifact. */
static void on_artifact(const struct nf_http_resp *resp, void *arg)
{
    struct reg_op *op = arg;
    cJSON *doc = resp->status == 200 ? nf_json_parse(resp->body, resp->len) : NULL, *o;
    const char *key = nf_json_str(doc, "object_key"), *src = nf_json_str(doc, "source");
    const char *purpose = nf_json_str(doc, "purpose");
    long long bytes = nf_json_int(doc, "bytes", -1);
    char *text;

    if (resp->status == 200 && key && src && purpose && strcmp(src, "upload") == 0 &&
        strcmp(purpose, "model") == 0 && bytes >= 0 && strlen(key) < sizeof(op->key)) {
        snprintf(op->key, sizeof(op->key), "%s", key);
        op->total = (uint64_t)bytes;
        cJSON_Delete(doc);
        reg_walk(op);
        return;
    }
    cJSON_Delete(doc);
    if (resp->status == 200 || resp->status == 404) {
        /* not a model upload of the caller: the registry answers (422 naming uri) */
        o = nf_json_obj();
        nf_json_add_str(o, "name", op->name);
        nf_json_add_str(o, "uri", op->uri);
        text = nf_json_print(o);
        cJSON_Delete(o);
        reg_forward(op, text);
        free(text);
    } else {
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the artifact registry is unavailable, try again");
    }
    reg_free(op);
}

static void create_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    const char *headers[5], *name, *uri;
    char target[64 + NF_ID_MAX];
    struct reg_op *op;
    cJSON *body = nf_http_req_json(req);
    size_t len = 0;

    if (!body) /* answered 400 */
        return;
    name = nf_json_str(body, "name");
    uri = nf_json_str(body, "uri");
    gw_caller_headers(who->user_id, req, headers);
    if (!name || !uri || !gw_model_name_valid(name, false) ||
        strncmp(uri, "artifact://", 11) != 0 || !nf_id_valid("art", uri + 11)) {
        /* the registry names the bad field */
        const char *raw = nf_http_req_body(req, &len);
        gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, "POST", "/internal/models", headers,
                   raw, len, 0, NULL, NULL);
        return;
    }
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    snprintf(op->user_id, sizeof(op->user_id), "%s", who->user_id);
    op->name = nf_xstrdup(name);
    op->uri = nf_xstrdup(uri);
    gw_mc_init(&op->mc);
    snprintf(target, sizeof(target), "/internal/artifacts/%s", uri + 11);
    gw_caller_headers(op->user_id, req, headers);
    if (!ctx->sched || nf_http_client_request(ctx->sched, "GET", target, headers, NULL, 0, 0,
                                              on_artifact, op) < 0) {
        gw_reply_unavailable(req, 1, "the artifact registry is unavailable, try again");
        reg_free(op);
    }
}

GW_ROUTE_AUTHED(gw_models_list, list_authed)
GW_ROUTE_AUTHED(gw_models_get, get_authed)
GW_ROUTE_AUTHED(gw_models_delete, delete_authed)
GW_ROUTE_AUTHED(gw_models_create, create_authed)
