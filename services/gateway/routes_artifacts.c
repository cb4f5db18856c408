/*
 * /api/artifacts: the artifact registry belongs to nf-scheduler (sched.artifacts); the
 * bytes live in the object store (DESIGN §12).
 *
 *   GET /api/artifacts?job_id=&limit=&cursor=  -> nf-scheduler /internal/artifacts
 *   GET /api/artifacts/{artifact_id}            -> nf-scheduler /internal/artifacts/{id}
 *        (forwarded with the caller in X-Nf-User-Id: another user's artifact is a 404)
 *   GET /api/artifacts/{artifact_id}/content
 *        -> more than NF_GATEWAY_DOWNLOADS_PER_ACCOUNT of the caller's in flight: 429
 *        -> the record from nf-scheduler (same tenancy check); no object_key: 404
 *        -> Range (one range: 206 + Content-Range; unsatisfiable: 416; several: 200)
 *        -> GET of the object from the store, streamed: Content-Length, Content-Type by
 *           name, Content-Disposition attachment, Accept-Ranges: bytes
 *
 *   store --on_data--> nf_http_stream_send --> more than DL_HIGH queued for the client?
 *     pause the store's GET --nf_http_stream_on_drain(DL_LOW)--> resume
 *   client gone --> cancel the GET; the store's stream broke midway --> the connection
 *   is closed (the client sees a short body, not a hang)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_s3.h"
#include "routes.h"

#define TARGET_MAX 4096
#define DL_HIGH (256 * 1024) /* bytes queued for a client above which the store read pauses */
#define DL_LOW (64 * 1024)   /* ... and below which it goes on */

static const char *const type_map[][2] = {
    {".jsonl", "application/x-ndjson"},      {".ndjson", "application/x-ndjson"},
    {".json", "application/json"},           {".txt", "text/plain; charset=utf-8"},
    {".log", "text/plain; charset=utf-8"},   {".csv", "text/csv; charset=utf-8"},
    {".md", "text/markdown; charset=utf-8"},
};

const char *gw_artifact_content_type(const char *name)
{
    size_t n = name ? strlen(name) : 0, m, i;

    for (i = 0; i < sizeof(type_map) / sizeof(type_map[0]); i++) {
        m = strlen(type_map[i][0]);
        if (n > m && strcasecmp(name + n - m, type_map[i][0]) == 0)
            return type_map[i][1];
    }
    return "application/octet-stream";
}

/* Digits only, into *out; false when empty, not digits or past 2^62. */
static bool parse_pos(const char *s, size_t n, long long *out)
{
    long long v = 0;

    if (n == 0 || n > 18)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

enum gw_range gw_range_parse(const char *header, long long size, long long *first, long long *last)
{
    const char *spec, *dash;
    long long a = 0, b = 0;
    size_t len;

    if (header == NULL || size < 0 || strncasecmp(header, "bytes=", 6) != 0)
        return GW_RANGE_NONE;
    spec = header + 6;
    while (*spec == ' ')
        spec++;
    len = strlen(spec);
    while (len > 0 && spec[len - 1] == ' ')
        len--;
    dash = memchr(spec, '-', len);
    if (dash == NULL || memchr(spec, ',', len) != NULL)
        return GW_RANGE_NONE; /* malformed, or several ranges: the whole object */
    if (dash == spec) {       /* "-n": the last n bytes */
        if (!parse_pos(dash + 1, len - 1, &b))
            return GW_RANGE_NONE;
        if (b == 0 || size == 0)
            return GW_RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return GW_RANGE_PART;
    }
    if (!parse_pos(spec, (size_t)(dash - spec), &a))
        return GW_RANGE_NONE;
    if (dash + 1 == spec + len) { /* "a-" */
        b = size - 1;
    } else if (!parse_pos(dash + 1, len - (size_t)(dash + 1 - spec), &b) || b < a) {
        return GW_RANGE_NONE;
    }
    if (a >= size)
        return GW_RANGE_UNSATISFIABLE;
    *first = a;
    *last = b < size ? b : size - 1;
    return GW_RANGE_PART;
}

/* ---- list and record: forwarded -------------------------------------------------------- */

static void list_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *headers[5], *query = nf_http_req_query_string(req);
    char target[TARGET_MAX];
    int n;

    gw_caller_headers(who->user_id, req, headers);
    n = snprintf(target, sizeof(target), "/internal/artifacts%s%s", query ? "?" : "",
                 query ? query : "");
    if (n < 0 || (size_t)n >= sizeof(target)) {
        nf_http_reply_error(req, 414, "uri_too_long", NULL, "the request URI is too long");
        return;
    }
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, "GET", target, headers, NULL, 0, 0, NULL,
               NULL);
}

static void get_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *headers[5], *id = nf_http_req_param(req, "artifact_id");
    char target[64 + NF_ID_MAX];

    if (!nf_id_valid("art", id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "artifact not found");
        return;
    }
    gw_caller_headers(who->user_id, req, headers);
    snprintf(target, sizeof(target), "/internal/artifacts/%s", id);
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, "GET", target, headers, NULL, 0, 0, NULL,
               NULL);
}

/* ---- content: streamed from the object store ------------------------------------------ */

/* One download; freed by dl_end on every path. */
struct download {
    struct gw_stream link; /* first: ctx->streams */
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    struct nf_s3_get *get; /* NULL until started and once done or cancelled */
    char user_id[NF_ID_MAX];
    char name[256];  /* the artifact's name (Content-Type, Content-Disposition) */
    long long size;  /* the registry's size, -1 when unknown */
    long long first; /* the range's first byte, -1 for the whole object */
    bool started;    /* the answer's head went out */
};

static void dl_end(struct download *d)
{
    gw_stream_unlink(d->ctx, &d->link);
    gw_slots_give(&d->ctx->downloads, d->user_id);
    free(d);
}

/* The answer of a download whose head has not gone out. */
static void dl_fail(struct download *d, int status, const char *msg)
{
    if (status == 503)
        gw_reply_unavailable(d->req, 1, msg);
    else
        nf_http_reply_error(d->req, status, status == 404 ? "not_found" : "http_error", NULL, "%s",
                            msg);
    dl_end(d);
}

/* The gateway is closing: stop the store, end the answer. */
static void on_link_close(struct gw_stream *st)
{
    struct download *d = (struct download *)st;

    if (d->get != NULL)
        nf_s3_get_cancel(d->get);
    d->get = NULL;
    if (d->started) {
        nf_http_stream_abort(d->req);
        dl_end(d);
    } else {
        dl_fail(d, 503, "the gateway is shutting down, try again");
    }
}

/* The client left: the store's GET goes too. */
static void on_client_gone(struct nf_http_req *req, void *arg)
{
    struct download *d = arg;

    if (d->get != NULL)
        nf_s3_get_cancel(d->get);
    d->get = NULL;
    if (d->started) {
        nf_http_stream_end(req);
        dl_end(d);
    } else {
        dl_fail(d, 503, "client gone"); /* dropped */
    }
}

void gw_artifact_disposition(const char *name, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char safe[GW_FILENAME_MAX + 1], ext[3 * GW_FILENAME_MAX + 1];
    size_t j = 0, k = 0;
    bool ascii = true;

    for (size_t i = 0; name[i] != '\0' && j < GW_FILENAME_MAX; i++) {
        unsigned char c = (unsigned char)name[i];

        ascii &= c < 0x80;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            safe[j++] = (char)c;
        else if (c >= 0x80)
            safe[j++] = '_';
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            (c != '\0' && strchr("!#$&+-.^_`|~", c) != NULL)) {
            ext[k++] = (char)c;
        } else {
            ext[k++] = '%';
            ext[k++] = hex[c >> 4];
            ext[k++] = hex[c & 15];
        }
    }
    safe[j] = '\0';
    ext[k] = '\0';
    if (ascii || k == 0)
        snprintf(out, len, "attachment; filename=\"%s\"", j > 0 ? safe : "artifact");
    else
        snprintf(out, len, "attachment; filename=\"%s\"; filename*=UTF-8''%s", safe, ext);
}

/* The store's answer begins (200 or 206): the client's does too. Inside libcurl. */
static void on_head(const struct nf_s3_result *res, void *arg)
{
    struct download *d = arg;
    char disp[4 * GW_FILENAME_MAX + 64], range[96];

    if (res->status == 206 && d->first >= 0 && res->bytes > 0 && res->total >= 0) {
        snprintf(range, sizeof(range), "bytes %lld-%lld/%lld", d->first, d->first + res->bytes - 1,
                 res->total);
        nf_http_set_header(d->req, "Content-Range", range);
    }
    gw_artifact_disposition(d->name, disp, sizeof(disp));
    nf_http_set_header(d->req, "Content-Disposition", disp);
    nf_http_set_header(d->req, "Accept-Ranges", "bytes");
    nf_http_set_header(d->req, "X-Content-Type-Options", "nosniff");
    nf_http_set_header(d->req, "Cache-Control", "private, max-age=0");
    if (res->etag != NULL)
        nf_http_set_header(d->req, "ETag", res->etag);
    nf_http_stream_start_len(d->req, res->status == 206 ? 206 : 200,
                             gw_artifact_content_type(d->name), res->bytes);
    d->started = true;
}

static void on_drained(struct nf_http_req *req, void *arg)
{
    struct download *d = arg;

    if (d->get != NULL)
        nf_s3_get_resume(d->get);
}

/* Object bytes: to the client; a pause while it has DL_HIGH queued. Inside libcurl. */
static int on_data(const char *buf, size_t len, void *arg)
{
    struct download *d = arg;

    if (nf_http_stream_send(d->req, buf, len) < 0)
        return NF_S3_PAUSE; /* the client left: on_client_gone cancels */
    if (nf_http_stream_pending(d->req) > DL_HIGH) {
        nf_http_stream_on_drain(d->req, DL_LOW, on_drained, d);
        return NF_S3_PAUSE;
    }
    return NF_S3_GO;
}

static void on_done(const struct nf_s3_result *res, void *arg)
{
    struct download *d = arg;
    char range[64];

    d->get = NULL; /* gone once this returns */
    if (d->started) {
        if (res->status == 200 || res->status == 206) {
            nf_http_stream_end(d->req);
        } else {
            nf_log_kv(NF_LOG_WARN, "artifact_stream_broken", "object store stream broke", "error",
                      res->error, "request_id", nf_http_req_id(d->req), NULL);
            gw_backend_error(d->ctx, GW_BACKEND_S3);
            nf_http_stream_abort(d->req);
        }
        dl_end(d);
        return;
    }
    if (res->status == 404) {
        dl_fail(d, 404, "artifact content not found");
    } else if (res->status == 416) {
        snprintf(range, sizeof(range), "bytes */%lld", d->size >= 0 ? d->size : 0);
        nf_http_set_header(d->req, "Content-Range", range);
        nf_http_reply_error(d->req, 416, "range_not_satisfiable", NULL,
                            "the range is outside the artifact");
        dl_end(d);
    } else {
        nf_log_kv(NF_LOG_WARN, "s3_unavailable", "artifact read failed", "code", res->code, "error",
                  res->error, NULL);
        gw_backend_error(d->ctx, GW_BACKEND_S3);
        dl_fail(d, 503, "the object store is unavailable, try again");
    }
}

/* The record arrived: pick the range and start the store's GET. */
static void start_download(struct download *d, const cJSON *art)
{
    const char *key = nf_json_str(art, "object_key"), *name = nf_json_str(art, "name");
    long long first = -1, last = -1;
    char range[64], crange[64];
    enum gw_range r;

    if (name == NULL)
        name = nf_json_str(art, "filename");
    snprintf(d->name, sizeof(d->name), "%s", name != NULL ? name : "artifact");
    d->size = nf_json_int(art, "bytes", -1);
    if (key == NULL || key[0] == '\0') {
        dl_fail(d, 404, "artifact content not found");
        return;
    }
    r = gw_range_parse(nf_http_req_header(d->req, "Range"), d->size, &first, &last);
    if (r == GW_RANGE_UNSATISFIABLE) {
        snprintf(crange, sizeof(crange), "bytes */%lld", d->size);
        nf_http_set_header(d->req, "Content-Range", crange);
        nf_http_reply_error(d->req, 416, "range_not_satisfiable", NULL,
                            "the range is outside the artifact (%lld bytes)", d->size);
        dl_end(d);
        return;
    }
    if (r == GW_RANGE_PART) {
        snprintf(range, sizeof(range), "bytes=%lld-%lld", first, last);
        d->first = first;
    }
    d->get =
        nf_s3_get(d->ctx->s3, key, r == GW_RANGE_PART ? range : NULL, on_head, on_data, on_done, d);
    if (d->get == NULL) {
        nf_log_kv(NF_LOG_WARN, "artifact_key_refused", "the store refused an object key", "key",
                  key, NULL);
        dl_fail(d, 503, "the object store is unavailable, try again");
        return;
    }
    nf_http_stream_on_close(d->req, on_client_gone, d);
}

static void on_record(const struct nf_http_resp *resp, void *arg)
{
    struct download *d = arg;
    cJSON *art;

    if (d->ctx->svc->closing || d->ctx->s3 == NULL) {
        dl_fail(d, 503, "the gateway is shutting down, try again");
    } else if (resp->status == 200 && (art = nf_json_parse(resp->body, resp->len))) {
        start_download(d, art);
        cJSON_Delete(art);
    } else if (resp->status == 404) {
        dl_fail(d, 404, "artifact not found");
    } else {
        nf_log_kv(NF_LOG_WARN, "scheduler_unavailable", "artifact read failed", "error",
                  resp->error ? resp->error : "unexpected status", NULL);
        gw_backend_error(d->ctx, GW_BACKEND_SCHEDULER);
        dl_fail(d, 503, "the artifact registry is unavailable, try again");
    }
}

static void content_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                           const struct gw_principal *who)
{
    const char *headers[5], *id = nf_http_req_param(req, "artifact_id");
    char target[64 + NF_ID_MAX];
    struct download *d;

    if (!nf_id_valid("art", id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "artifact not found");
        return;
    }
    if (ctx->s3 == NULL) {
        gw_reply_unavailable(req, 1, "the gateway is shutting down, try again");
        return;
    }
    if (!gw_slots_take(&ctx->downloads, who->user_id, ctx->cfg->downloads_per_account)) {
        nf_http_set_header(req, "Retry-After", "1");
        nf_http_reply_error(req, 429, "too_many_downloads", NULL,
                            "at most %d downloads at a time per account",
                            ctx->cfg->downloads_per_account);
        return;
    }
    d = nf_xcalloc(1, sizeof(*d));
    d->ctx = ctx;
    d->req = req;
    d->first = -1;
    d->size = -1;
    d->link.close = on_link_close;
    snprintf(d->user_id, sizeof(d->user_id), "%s", who->user_id);
    gw_stream_link(ctx, &d->link);
    gw_caller_headers(who->user_id, req, headers);
    snprintf(target, sizeof(target), "/internal/artifacts/%s", id);
    if (!ctx->sched ||
        nf_http_client_request(ctx->sched, "GET", target, headers, NULL, 0, 0, on_record, d) != 0) {
        gw_backend_error(ctx, GW_BACKEND_SCHEDULER);
        dl_fail(d, 503, "the artifact registry is unavailable, try again");
    }
}

GW_ROUTE_AUTHED(gw_artifacts_list, list_authed)
GW_ROUTE_AUTHED(gw_artifacts_get, get_authed)
GW_ROUTE_AUTHED(gw_artifacts_content, content_authed)
