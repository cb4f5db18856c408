/*
 * POST /api/files (DESIGN §12, OpenAI's Files conventions): a multipart/form-data body
 * streamed into the object store, never whole in memory.
 *
 *   streaming route (nf_http_route_stream) --> gw_keys_auth --> multipart boundary
 *   (not multipart/form-data: 415) --> nf_http_req_body_stream:
 *     body bytes --gw_mp_feed--> parts, in this order:
 *       purpose (dataset | model | other; required)   uri (optional, s3://<bucket>/<key>)
 *       file (one, with a filename): nf_s3_put at tenants/<user>/files/<artifact_id>/<name>
 *         (the uri, or s3://uploads/<artifact_id>/<name> without one, is the registry's
 *         name for it), SHA-256 on the way, the body
 *         paused while the store's buffers are full (on_writable resumes it)
 *       purpose or uri after the file: 422 "send purpose and uri before file"
 *     end of body --> closing boundary read? file seen? --> nf_s3_put_finish
 *   --> stored --> nf-scheduler POST /internal/files {artifact_id, name, purpose,
 *       object_key, s3_uri, bytes, sha256} --> 201 the file object; the objects of the
 *       files it replaced (the same s3_uri) are deleted from the store
 *
 * Failures: bad input answers 4xx at once (422 naming the field, 413 past
 * NF_GATEWAY_MAX_UPLOAD_BYTES, 400 for a broken body; the connection then closes, the rest
 * of the body is dropped) and cancels the store's upload; the store or the registry
 * failing answers 503 Retry-After 1; an object stored but not registered is deleted.
 *
 * Lifetime: struct upload lives until it answered and nothing of it is pending (the
 * store's upload, the registry's call, a callback on the stack); up_release frees it then.
 */
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_s3.h"
#include "routes.h"

#define FIELD_MAX 2048 /* a purpose or uri value */
#define STOP 1         /* a multipart callback answered: stop feeding */
#define WAIT 2         /* the store's upload failed: stop feeding, its done callback answers */

enum part_kind { P_NONE, P_PURPOSE, P_URI, P_FILE, P_SKIP };

struct upload {
    struct gw_stream link; /* first: ctx->streams */
    struct gw_ctx *ctx;
    struct nf_http_req *req; /* NULL once answered */
    char user_id[NF_ID_MAX];
    char artifact_id[NF_ID_MAX];
    struct gw_mp mp;
    enum part_kind part; /* the part being read */
    char field[FIELD_MAX + 1];
    size_t nfield;
    char purpose[16];
    char uri[GW_S3_KEY_MAX + 80]; /* s3://<bucket>/<key> as given, or made up */
    char filename[GW_FILENAME_MAX + 1];
    char object_key[GW_S3_KEY_MAX + 160];
    crypto_hash_sha256_state sha;
    char sha256[NF_SHA256_HEX_LEN + 1];
    long long bytes;
    struct nf_s3_put *put; /* from the file part until done fires or cancel */
    bool file_seen, put_full, registering;
    int busy; /* inside gw_mp_feed: not freed under it */
};

static void up_release(struct upload *up)
{
    if (up->req != NULL || up->put != NULL || up->registering || up->busy > 0)
        return;
    gw_stream_unlink(up->ctx, &up->link);
    gw_slots_give(&up->ctx->uploads, up->user_id);
    free(up);
}

/* The one answer; the store's upload goes if it is still under way. */
static void up_cancel_put(struct upload *up)
{
    if (up->put != NULL)
        nf_s3_put_cancel(up->put);
    up->put = NULL;
}

static int up_fail(struct upload *up, int status, const char *code, const char *param,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int up_fail(struct upload *up, int status, const char *code, const char *param,
                   const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    up_cancel_put(up);
    if (up->req == NULL)
        return STOP;
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (status == 503)
        gw_reply_unavailable(up->req, 1, msg);
    else
        nf_http_reply_error(up->req, status, code, param, "%s", msg);
    up->req = NULL;
    return STOP;
}

/* ---- the multipart parts ------------------------------------------------------------ */

static void on_writable(void *arg);
static void on_stored(const struct nf_s3_result *res, void *arg);

/* The file part begins: name it, place it, start the store's upload. */
static int start_file(struct upload *up, const struct gw_mp_part *part)
{
    struct gw_ctx *ctx = up->ctx;
    char keyname[GW_FILENAME_MAX + 1];

    if (up->purpose[0] == '\0')
        return up_fail(up, 422, "invalid_parameter", "purpose",
                       "purpose is required (dataset, model or other), sent before file");
    if (!part->has_filename || gw_files_filename(part->filename, up->filename) != 0)
        return up_fail(up, 422, "invalid_parameter", "file",
                       "file needs a filename: a plain name of at most %d bytes of UTF-8",
                       GW_FILENAME_MAX);
    if (up->uri[0] == '\0') {
        gw_files_key_name(up->filename, keyname);
        snprintf(up->uri, sizeof(up->uri), "s3://uploads/%s/%s", up->artifact_id, keyname);
    }
    /* Each upload has a key of its own: the s3:// name is the registry's, so a new upload to
     * a name replaces the old file only once it is stored and recorded (the old object is
     * deleted then), and two uploads to one name never write the same object. */
    gw_files_key_name(up->filename, keyname);
    snprintf(up->object_key, sizeof(up->object_key), "tenants/%s/files/%s/%s", up->user_id,
             up->artifact_id, keyname);
    crypto_hash_sha256_init(&up->sha);
    up->put = ctx->s3 != NULL
                  ? nf_s3_put(ctx->s3, up->object_key, gw_artifact_content_type(up->filename),
                              on_writable, on_stored, up)
                  : NULL;
    if (up->put == NULL) {
        gw_backend_error(ctx, GW_BACKEND_S3);
        return up_fail(up, 503, NULL, NULL, "the object store is unavailable, try again");
    }
    up->file_seen = true;
    up->part = P_FILE;
    return 0;
}

static int on_part(const struct gw_mp_part *part, void *arg)
{
    struct upload *up = arg;
    bool purpose = strcmp(part->name, "purpose") == 0, uri = strcmp(part->name, "uri") == 0;

    up->nfield = 0;
    if (strcmp(part->name, "file") == 0) {
        if (up->file_seen)
            return up_fail(up, 422, "invalid_parameter", "file", "send one file per upload");
        return start_file(up, part);
    }
    if (purpose || uri) {
        if (up->file_seen)
            return up_fail(up, 422, "invalid_parameter", part->name,
                           "send purpose and uri before file");
        if ((purpose && up->purpose[0] != '\0') || (uri && up->uri[0] != '\0'))
            return up_fail(up, 422, "invalid_parameter", part->name, "%s is given twice",
                           part->name);
        up->part = purpose ? P_PURPOSE : P_URI;
        return 0;
    }
    up->part = P_SKIP; /* a field we do not know: ignored */
    return 0;
}

static int on_part_data(const char *buf, size_t len, void *arg)
{
    struct upload *up = arg;
    int rc;

    switch (up->part) {
    case P_FILE:
        up->bytes += (long long)len;
        if (up->bytes > up->ctx->cfg->max_upload)
            return up_fail(up, 413, "request_too_large", "file", "the file exceeds %lld bytes",
                           up->ctx->cfg->max_upload);
        crypto_hash_sha256_update(&up->sha, (const unsigned char *)buf, len);
        rc = nf_s3_put_write(up->put, buf, len);
        if (rc < 0)
            return WAIT; /* its done callback answers */
        up->put_full |= rc == 1;
        return 0;
    case P_PURPOSE:
    case P_URI:
        if (up->nfield + len > FIELD_MAX)
            return up_fail(up, 422, "invalid_parameter", up->part == P_URI ? "uri" : "purpose",
                           "%s is too long", up->part == P_URI ? "uri" : "purpose");
        memcpy(up->field + up->nfield, buf, len);
        up->nfield += len;
        return 0;
    default:
        return 0;
    }
}

static int on_part_end(void *arg)
{
    struct upload *up = arg;
    bool nul = memchr(up->field, '\0', up->nfield) != NULL;

    up->field[up->nfield] = '\0';
    switch (up->part) {
    case P_PURPOSE:
        if (nul || !gw_files_purpose_valid(up->field))
            return up_fail(up, 422, "invalid_parameter", "purpose",
                           "purpose must be dataset, model or other");
        memcpy(up->purpose, up->field, strlen(up->field) + 1); /* one of three words */
        break;
    case P_URI:
        if (nul || !gw_s3_uri_valid(up->field))
            return up_fail(up, 422, "invalid_parameter", "uri",
                           "uri must be s3://<bucket>/<key> (bucket: 1..63 of a-z 0-9 . -; "
                           "key: printable ASCII, no space, no empty, . or .. segment); "
                           "file:// and other schemes are refused");
        memcpy(up->uri, up->field, strlen(up->field) + 1); /* valid: it fits */
        break;
    default:
        break;
    }
    up->part = P_NONE;
    return 0;
}

static const struct gw_mp_cbs mp_cbs = {on_part, on_part_data, on_part_end};

/* ---- the body ----------------------------------------------------------------------- */

static int on_body(const char *buf, size_t len, void *arg)
{
    struct upload *up = arg;
    int rc;

    up->busy++;
    rc = gw_mp_feed(&up->mp, buf, len, &mp_cbs, up);
    up->busy--;
    if (rc == GW_MP_ERROR)
        up_fail(up, 400, "invalid_multipart", NULL, "malformed multipart body: %s", up->mp.error);
    if (up->req == NULL) {
        up_release(up); /* answered: no body callback comes any more */
        return NF_HTTP_BODY_GO;
    }
    return rc == WAIT || up->put_full ? NF_HTTP_BODY_PAUSE : NF_HTTP_BODY_GO;
}

static void on_body_end(enum nf_http_body_end how, void *arg)
{
    struct upload *up = arg;
    unsigned char digest[crypto_hash_sha256_BYTES];

    switch (how) {
    case NF_HTTP_BODY_COMPLETE:
        if (!gw_mp_done(&up->mp))
            up_fail(up, 400, "invalid_multipart", NULL,
                    "malformed multipart body: it ends before its closing boundary");
        else if (!up->file_seen)
            up_fail(up, 422, "invalid_parameter", "file", "a file part is required");
        break;
    case NF_HTTP_BODY_TOO_LARGE:
        up_fail(up, 413, "request_too_large", "file", "the file exceeds %lld bytes",
                up->ctx->cfg->max_upload);
        break;
    case NF_HTTP_BODY_TIMEOUT:
        up_fail(up, 408, "request_timeout", NULL, "the upload stalled");
        break;
    case NF_HTTP_BODY_MALFORMED:
        up_fail(up, 400, "invalid_request", NULL, "malformed chunked body");
        break;
    case NF_HTTP_BODY_GONE:
        up_fail(up, 400, "client_gone", NULL, "the client went away"); /* dropped */
        break;
    }
    if (up->req == NULL) {
        up_release(up);
        return;
    }
    crypto_hash_sha256_final(&up->sha, digest);
    sodium_bin2hex(up->sha256, sizeof(up->sha256), digest, sizeof(digest));
    nf_s3_put_finish(up->put); /* on_stored tells */
}

/* ---- stored, registered ------------------------------------------------------------- */

/* The object of a failed registration goes (best effort). */
static void orphan_deleted(const struct nf_s3_result *res, void *arg)
{
    char *key = arg;

    if (res->status != 204 && res->status != 200 && res->status != 404)
        nf_log_kv(NF_LOG_WARN, "s3_orphan_left", "an object no file needs stays in the store",
                  "key", key, "code", res->code, NULL);
    free(key);
}

/* Deletes key from the store, best effort (logged when it stays). */
static void delete_object(struct gw_ctx *ctx, const char *object_key)
{
    char *key = nf_xstrdup(object_key);

    if (ctx->s3 == NULL || nf_s3_delete(ctx->s3, key, orphan_deleted, key) != 0) {
        nf_log_kv(NF_LOG_WARN, "s3_orphan_left", "an object no file needs stays in the store",
                  "key", key, NULL);
        free(key);
    }
}

static void on_registered(const struct nf_http_resp *resp, void *arg)
{
    struct upload *up = arg;
    cJSON *rec, *obj = NULL;

    up->registering = false;
    if ((resp->status == 201 || resp->status == 200) &&
        (rec = nf_json_parse(resp->body, resp->len)) != NULL) {
        const cJSON *old, *replaced = cJSON_GetObjectItemCaseSensitive(rec, "replaced_object_keys");

        obj = gw_file_object(rec);
        cJSON_ArrayForEach(old, replaced) /* the older file of the same s3:// name */
        {
            if (cJSON_IsString(old) && strcmp(old->valuestring, up->object_key) != 0)
                delete_object(up->ctx, old->valuestring);
        }
        cJSON_Delete(rec);
    }
    if (obj != NULL && up->req != NULL) {
        nf_http_reply_json(up->req, 201, obj);
        up->req = NULL;
    } else {
        cJSON_Delete(obj);
        nf_log_kv(NF_LOG_WARN, "file_register_failed", "the registry refused an upload",
                  "artifact_id", up->artifact_id, "error",
                  resp->error != NULL ? resp->error : "unexpected answer", NULL);
        gw_backend_error(up->ctx, GW_BACKEND_SCHEDULER);
        delete_object(up->ctx, up->object_key);
        up_fail(up, 503, NULL, NULL, "the artifact registry is unavailable, try again");
    }
    up_release(up);
}

static void register_file(struct upload *up)
{
    const char *headers[5];
    cJSON *body = nf_json_obj();
    char *text;

    gw_caller_headers(up->user_id, up->req, headers);
    nf_json_add_str(body, "artifact_id", up->artifact_id);
    nf_json_add_str(body, "name", up->filename);
    nf_json_add_str(body, "purpose", up->purpose);
    nf_json_add_str(body, "object_key", up->object_key);
    nf_json_add_str(body, "s3_uri", up->uri);
    nf_json_add_int(body, "bytes", up->bytes);
    nf_json_add_str(body, "sha256", up->sha256);
    text = nf_json_print(body);
    cJSON_Delete(body);
    up->registering = up->ctx->sched != NULL &&
                      nf_http_client_request(up->ctx->sched, "POST", "/internal/files", headers,
                                             text, strlen(text), 0, on_registered, up) == 0;
    free(text);
    if (!up->registering) {
        gw_backend_error(up->ctx, GW_BACKEND_SCHEDULER);
        delete_object(up->ctx, up->object_key);
        up_fail(up, 503, NULL, NULL, "the artifact registry is unavailable, try again");
    }
}

static void on_writable(void *arg)
{
    struct upload *up = arg;

    up->put_full = false;
    if (up->req != NULL)
        nf_http_req_body_resume(up->req);
}

/* The store's upload ended: stored (after finish) or failed (at any time). */
static void on_stored(const struct nf_s3_result *res, void *arg)
{
    struct upload *up = arg;

    up->put = NULL; /* gone once this returns */
    if (up->req == NULL) {
        up_release(up);
        return;
    }
    if (res->status != 200) {
        nf_log_kv(NF_LOG_WARN, "s3_unavailable", "upload to the store failed", "code", res->code,
                  "error", res->error, "artifact_id", up->artifact_id, NULL);
        gw_backend_error(up->ctx, GW_BACKEND_S3);
        up_fail(up, 503, NULL, NULL, "the object store is unavailable, try again");
        up_release(up);
        return;
    }
    register_file(up);
    up_release(up);
}

/* ---- the route ---------------------------------------------------------------------- */

/* The gateway is closing (the registry's client went first, so no call is in flight). */
static void on_link_close(struct gw_stream *st)
{
    struct upload *up = (struct upload *)st;

    up_fail(up, 503, NULL, NULL, "the gateway is shutting down, try again");
    up->registering = false;
    up_release(up);
}

static void upload_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    char boundary[GW_MP_BOUNDARY_MAX + 1];
    struct upload *up;
    int rc = gw_mp_boundary(nf_http_req_header(req, "Content-Type"), boundary);

    if (rc == -1) {
        nf_http_reply_error(req, 415, "unsupported_media_type", NULL,
                            "send the file as multipart/form-data (fields purpose, uri, file)");
        return;
    }
    if (rc != 0) {
        nf_http_reply_error(req, 400, "invalid_multipart", NULL,
                            "the multipart/form-data boundary is missing or malformed");
        return;
    }
    if (ctx->s3 == NULL) {
        gw_reply_unavailable(req, 1, "the gateway is shutting down, try again");
        return;
    }
    /* each upload in flight holds up to two store parts of memory: bounded per account */
    if (!gw_slots_take(&ctx->uploads, who->user_id, ctx->cfg->uploads_per_account)) {
        nf_http_set_header(req, "Retry-After", "1");
        nf_http_reply_error(req, 429, "too_many_uploads", NULL,
                            "at most %d uploads at a time per account",
                            ctx->cfg->uploads_per_account);
        return;
    }
    up = nf_xcalloc(1, sizeof(*up));
    up->ctx = ctx;
    up->req = req;
    up->link.close = on_link_close;
    snprintf(up->user_id, sizeof(up->user_id), "%s", who->user_id);
    if (nf_id_new("art", up->artifact_id, sizeof(up->artifact_id)) != 0)
        abort();
    gw_mp_init(&up->mp, boundary);
    gw_stream_link(ctx, &up->link);
    nf_http_req_body_stream(req, on_body, on_body_end, up);
}

GW_ROUTE_AUTHED(gw_files_upload, upload_authed)
