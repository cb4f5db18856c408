/*
 * /api/artifacts: the artifact registry belongs to nf-scheduler (sched.artifacts); the
 * bytes live in the artifact store, a local directory by default.
 *
 *   GET /api/artifacts?job_id=&limit=&cursor=  -> nf-scheduler /internal/artifacts
 *   GET /api/artifacts/{artifact_id}            -> nf-scheduler /internal/artifacts/{id}
 *        (forwarded with the caller in X-Nf-User-Id: another user's artifact is a 404)
 *   GET /api/artifacts/{artifact_id}/content
 *        -> the record from nf-scheduler (same tenancy check)
 *        -> uri file:///<path> under NF_GATEWAY_ARTIFACT_ROOT, a regular file
 *           (else 404 artifact content not found / 409 not in the local store)
 *        -> 200 with Content-Length = the file's size, Content-Type by extension,
 *           Content-Disposition attachment; the body read and sent 64 KiB per loop turn
 *           (other requests are served in between), ended early if the client leaves
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "routes.h"

#define CHUNK (64 * 1024)
#define TARGET_MAX 4096

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

char *gw_artifact_path(const char *uri, const char *root)
{
    const char *path;
    size_t rl;

    if (!uri || strncmp(uri, "file://", 7) != 0)
        return NULL;
    path = uri + 7;
    if (path[0] != '/' || path[1] == '\0' || strstr(path, "/../") || strstr(path, "//") ||
        strstr(path, "/./") || strchr(path, '%') || strchr(path, '?') || strchr(path, '#'))
        return NULL;
    rl = strlen(path);
    if ((rl >= 3 && strcmp(path + rl - 3, "/..") == 0) ||
        (rl >= 2 && strcmp(path + rl - 2, "/.") == 0))
        return NULL;
    if (root && *root) {
        rl = strlen(root);
        while (rl > 1 && root[rl - 1] == '/')
            rl--;
        if (strncmp(path, root, rl) != 0 || path[rl] != '/' || path[rl + 1] == '\0')
            return NULL;
    }
    return nf_xstrdup(path);
}

/* X-Nf-User-Id and X-Request-Id for nf-scheduler, NULL-terminated in out. */
static void caller_headers(const struct gw_principal *who, struct nf_http_req *req,
                           const char *out[5])
{
    out[0] = "X-Nf-User-Id";
    out[1] = who->user_id;
    out[2] = "X-Request-Id";
    out[3] = nf_http_req_id(req);
    out[4] = NULL;
}

/* ---- list and record: forwarded -------------------------------------------------------- */

static void list_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *headers[5], *query = nf_http_req_query_string(req);
    char target[TARGET_MAX];
    int n;

    caller_headers(who, req, headers);
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
    caller_headers(who, req, headers);
    snprintf(target, sizeof(target), "/internal/artifacts/%s", id);
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, "GET", target, headers, NULL, 0, 0, NULL,
               NULL);
}

/* ---- content: streamed from the local store -------------------------------------------- */

struct download {
    struct gw_stream link; /* first: ctx->streams */
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    struct event *timer;
    int fd;
    off_t left;
    bool gone;
    char buf[CHUNK];
};

static void download_end(struct download *d)
{
    gw_stream_unlink(d->ctx, &d->link);
    if (d->timer)
        event_free(d->timer);
    if (d->fd >= 0)
        close(d->fd);
    nf_http_stream_end(d->req);
    free(d);
}

static void on_link_close(struct gw_stream *st)
{
    download_end((struct download *)st);
}

static void on_download_close(struct nf_http_req *req, void *arg)
{
    struct download *d = arg;

    d->gone = true; /* the next turn ends it (the timer is always armed while streaming) */
}

static void on_chunk(evutil_socket_t fd, short what, void *arg)
{
    static const struct timeval now = {0, 0};
    struct download *d = arg;
    ssize_t n;
    size_t want;

    if (d->gone || d->ctx->svc->closing || d->left <= 0) {
        download_end(d);
        return;
    }
    want = d->left < (off_t)sizeof(d->buf) ? (size_t)d->left : sizeof(d->buf);
    do
        n = read(d->fd, d->buf, want);
    while (n < 0 && errno == EINTR);
    if (n <= 0) { /* shrank or failed under us: the client sees a short body */
        nf_log_kv(NF_LOG_WARN, "artifact_read_failed", "artifact file ended early", NULL);
        download_end(d);
        return;
    }
    d->left -= n;
    if (nf_http_stream_send(d->req, d->buf, (size_t)n) < 0) {
        download_end(d);
        return;
    }
    evtimer_add(d->timer, &now);
}

struct content_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
};

static void content_not_found(struct nf_http_req *req, const char *why)
{
    nf_http_reply_error(req, 404, "not_found", NULL, "%s", why);
}

/* The record arrived: open the file and start streaming it. */
static void start_download(struct gw_ctx *ctx, struct nf_http_req *req, const cJSON *art)
{
    static const struct timeval now = {0, 0};
    const char *uri = nf_json_str(art, "uri"), *name = nf_json_str(art, "name");
    char *path, disp[300], len[32], safe[200];
    struct download *d;
    struct stat st;
    size_t i, j = 0;
    int fd;

    if (!uri || strncmp(uri, "file://", 7) != 0) {
        nf_http_reply_error(req, 409, "not_local", NULL,
                            "this artifact is not in the local store (%.16s...)",
                            uri ? uri : "no uri");
        return;
    }
    path = gw_artifact_path(uri, ctx->cfg->artifact_root);
    if (!path) {
        nf_log_kv(NF_LOG_WARN, "artifact_path_refused", "artifact uri outside the store", "uri",
                  uri, NULL);
        content_not_found(req, "artifact content not found");
        return;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    free(path);
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        content_not_found(req, "artifact content not found");
        return;
    }
    for (i = 0; name && name[i] && j + 1 < sizeof(safe); i++)
        if ((unsigned char)name[i] >= 0x20 && name[i] != '"' && name[i] != '\\' &&
            (unsigned char)name[i] < 0x7f)
            safe[j++] = name[i];
    safe[j] = '\0';
    snprintf(disp, sizeof(disp), "attachment; filename=\"%s\"", j ? safe : "artifact");
    snprintf(len, sizeof(len), "%lld", (long long)st.st_size);
    nf_http_set_header(req, "Content-Length", len); /* not chunked: the exact size */
    nf_http_set_header(req, "Content-Disposition", disp);
    nf_http_set_header(req, "X-Content-Type-Options", "nosniff");
    nf_http_set_header(req, "Cache-Control", "private, max-age=0");
    nf_http_stream_start(req, 200, gw_artifact_content_type(name));

    d = nf_xcalloc(1, sizeof(*d));
    d->ctx = ctx;
    d->req = req;
    d->fd = fd;
    d->left = st.st_size;
    d->link.close = on_link_close;
    d->timer = evtimer_new(ctx->svc->base, on_chunk, d);
    if (!d->timer)
        abort();
    gw_stream_link(ctx, &d->link);
    nf_http_stream_on_close(req, on_download_close, d);
    evtimer_add(d->timer, &now);
}

static void on_record(const struct nf_http_resp *resp, void *arg)
{
    struct content_op *op = arg;
    cJSON *art;

    if (op->ctx->svc->closing) {
        gw_reply_unavailable(op->req, 1, "the gateway is shutting down, try again");
    } else if (resp->status == 200 && (art = nf_json_parse(resp->body, resp->len))) {
        start_download(op->ctx, op->req, art);
        cJSON_Delete(art);
    } else if (resp->status == 404) {
        nf_http_reply_error(op->req, 404, "not_found", NULL, "artifact not found");
    } else {
        nf_log_kv(NF_LOG_WARN, "scheduler_unavailable", "artifact read failed", "error",
                  resp->error ? resp->error : "unexpected status", NULL);
        gw_backend_error(op->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(op->req, 1, "the artifact registry is unavailable, try again");
    }
    free(op);
}

static void content_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                           const struct gw_principal *who)
{
    const char *headers[5], *id = nf_http_req_param(req, "artifact_id");
    char target[64 + NF_ID_MAX];
    struct content_op *op;

    if (!nf_id_valid("art", id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "artifact not found");
        return;
    }
    caller_headers(who, req, headers);
    snprintf(target, sizeof(target), "/internal/artifacts/%s", id);
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    if (!ctx->sched || nf_http_client_request(ctx->sched, "GET", target, headers, NULL, 0, 0,
                                              on_record, op) != 0) {
        gw_backend_error(ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(req, 1, "the artifact registry is unavailable, try again");
        free(op);
    }
}

GW_ROUTE_AUTHED(gw_artifacts_list, list_authed)
GW_ROUTE_AUTHED(gw_artifacts_get, get_authed)
GW_ROUTE_AUTHED(gw_artifacts_content, content_authed)
