/*
 * /api/workers/...: the worker agent protocol and the worker list belong to the
 * worker-manager, which authenticates its callers itself (registration token, worker
 * tokens). The gateway forwards method, path and query (as received), body, the
 * credentials (Authorization, X-Nexa-Api-Key) and X-Request-Id, and relays status, body,
 * Content-Type and Retry-After.
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

struct fwd_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    bool long_poll; /* counted in ctx->long_polls */
};

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void forwarded(const struct nf_http_resp *resp, void *arg)
{
    struct fwd_op *op = arg;
    const char *ct, *retry;

    if (op->long_poll)
        op->ctx->long_polls--;
    if (resp->status == 0 && op->ctx->stopping) { /* gw_stop ended the long polls */
        gw_reply_unavailable(op->req, 1, "the gateway is shutting down, try again");
        free(op);
        return;
    }
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
    if (!ct && resp->len > 0)
        ct = "application/json";
    nf_http_reply_raw(op->req, resp->status, ct, resp->body, resp->len); /* ct NULL: none */
    free(op);
}

static void on_forward(struct nf_http_req *req, void *arg)
{
    struct gw_ctx *ctx = arg;
    const char *headers[7], *v, *body, *path = nf_http_req_path(req);
    const char *query = nf_http_req_query_string(req);
    char target[TARGET_MAX];
    struct fwd_op *op;
    size_t nh = 0, len = 0;
    int n;

    if (!ctx->wm) { /* stopping: the long polls were ended */
        gw_reply_unavailable(req, 1, "the gateway is shutting down, try again");
        return;
    }
    /* path and query as received (still percent-encoded) */
    n = snprintf(target, sizeof(target), "%s%s%s", path, query ? "?" : "", query ? query : "");
    if (n < 0 || (size_t)n >= sizeof(target)) {
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
    op = calloc(1, sizeof(*op));
    if (!op)
        abort();
    op->ctx = ctx;
    op->req = req;
    op->long_poll = ends_with(path, "/next_job") || ends_with(path, "/next_job/");
    if (op->long_poll)
        ctx->long_polls++;
    if (nf_http_client_request(ctx->wm, nf_http_req_method(req), target, headers, len ? body : NULL,
                               len, op->long_poll ? WM_LONG_POLL_TIMEOUT_MS : WM_TIMEOUT_MS,
                               forwarded, op) != 0) {
        if (op->long_poll)
            ctx->long_polls--;
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
