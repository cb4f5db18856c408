/*
 * /api/workers/...: the worker agent protocol and the worker list belong to the
 * worker-manager, which authenticates its callers itself (registration token, worker
 * tokens). The gateway forwards method, path, query, body and the credentials unchanged
 * and relays status, body, Content-Type and Retry-After.
 *
 *   client --> gateway --(keep-alive pool, 40 s for next_job, 10 s otherwise)--> wm
 *   wm unreachable or timed out --> 503 Retry-After 1
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_log.h"

#define WM_TIMEOUT_MS 10000
#define WM_LONG_POLL_TIMEOUT_MS 40000 /* next_job waits up to 30 s on the worker-manager */
#define TARGET_MAX 4096

/* Query parameters the worker routes take (they are re-encoded when forwarded). */
static const char *const query_names[] = {"status",   "job_type",  "gpu_type", "limit",
                                          "cursor",   "worker_id", "wait_seconds"};

struct fwd_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
};

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

/* Appends s percent-encoded to buf (of size cap, holding *len bytes); false if full. */
static bool put_encoded(char *buf, size_t cap, size_t *len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        if (*len + 4 >= cap)
            return false;
        if (unreserved((unsigned char)*s)) {
            buf[(*len)++] = *s;
        } else {
            buf[(*len)++] = '%';
            buf[(*len)++] = hex[(unsigned char)*s >> 4];
            buf[(*len)++] = hex[(unsigned char)*s & 15];
        }
    }
    buf[*len] = '\0';
    return true;
}

/* path?name=value&... into out; false when it does not fit. */
static bool build_target(const struct nf_http_req *req, char *out, size_t cap)
{
    const char *path = nf_http_req_path(req), *v;
    size_t len, i;
    int n = snprintf(out, cap, "%s", path);
    char sep = '?';

    if (n < 0 || (size_t)n >= cap)
        return false;
    len = (size_t)n;
    for (i = 0; i < sizeof(query_names) / sizeof(query_names[0]); i++) {
        v = nf_http_req_query(req, query_names[i]);
        if (!v)
            continue;
        if (len + strlen(query_names[i]) + 3 >= cap)
            return false;
        len += (size_t)snprintf(out + len, cap - len, "%c%s=", sep, query_names[i]);
        if (!put_encoded(out, cap, &len, v))
            return false;
        sep = '&';
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void forwarded(const struct nf_http_resp *resp, void *arg)
{
    struct fwd_op *op = arg;
    const char *ct, *retry;

    if (resp->status == 0) {
        nf_log_kv(NF_LOG_WARN, "wm_unavailable", "worker-manager call failed", "path",
                  nf_http_req_path(op->req), "error", resp->error, NULL);
        gw_backend_error(op->ctx, GW_BACKEND_WM);
        gw_reply_unavailable(op->req, 1, "the worker-manager is unavailable, try again");
        free(op);
        return;
    }
    ct = nf_http_resp_header(resp, "Content-Type");
    retry = nf_http_resp_header(resp, "Retry-After");
    if (retry)
        nf_http_set_header(op->req, "Retry-After", retry);
    nf_http_reply_raw(op->req, resp->status, ct ? ct : "application/json", resp->body,
                      resp->len);
    free(op);
}

static void on_forward(struct nf_http_req *req, void *arg)
{
    struct gw_ctx *ctx = arg;
    const char *headers[9], *v, *body;
    char target[TARGET_MAX];
    struct fwd_op *op;
    size_t nh = 0, len = 0;
    int timeout;

    if (gw_refuse_if_stopping(ctx, req))
        return;
    if (!build_target(req, target, sizeof(target))) {
        nf_http_reply_error(req, 414, "uri_too_long", NULL, "the request URI is too long");
        return;
    }
    if ((v = nf_http_req_header(req, "Authorization"))) {
        headers[nh++] = "Authorization";
        headers[nh++] = v;
    }
    if ((v = nf_http_req_header(req, "X-Nexa-Api-Key"))) {
        headers[nh++] = "X-Nexa-Api-Key";
        headers[nh++] = v;
    }
    headers[nh++] = "X-Request-Id";
    headers[nh++] = nf_http_req_id(req);
    headers[nh] = NULL;
    body = nf_http_req_body(req, &len);
    timeout = ends_with(nf_http_req_path(req), "/next_job") ? WM_LONG_POLL_TIMEOUT_MS
                                                            : WM_TIMEOUT_MS;
    op = malloc(sizeof(*op));
    if (!op)
        abort();
    op->ctx = ctx;
    op->req = req;
    if (nf_http_client_request(ctx->wm, nf_http_req_method(req), target, headers,
                               len ? body : NULL, len, timeout, forwarded, op) != 0) {
        gw_backend_error(ctx, GW_BACKEND_WM);
        gw_reply_unavailable(req, 1, "the worker-manager is unavailable, try again");
        free(op);
    }
}

int gw_workers_register(struct gw_ctx *ctx)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH"};
    static const char *const patterns[] = {"/api/workers", "/api/workers/{a}",
                                           "/api/workers/{a}/{b}", "/api/workers/{a}/{b}/{c}"};
    size_t m, p;

    for (p = 0; p < sizeof(patterns) / sizeof(patterns[0]); p++)
        for (m = 0; m < sizeof(methods) / sizeof(methods[0]); m++)
            if (nf_http_route(ctx->srv, methods[m], patterns[p], on_forward, ctx) != 0)
                return -1;
    return 0;
}
