/*
 * Forwarding a public request to an internal service and relaying its answer: the one
 * mechanism behind /api/workers/... (worker-manager) and /api/billing/... (billing).
 *
 *   client --> route (builds the target path and the headers to pass on)
 *          --> gw_forward --(keep-alive pool of that backend)--> backend
 *          <-- status, body, Content-Type and Retry-After relayed as they are
 *   backend unreachable or timed out --> 503 Retry-After 1 (counted per backend)
 *   gateway stopping meanwhile       --> 503 "shutting down"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"

static const char *const backend_names[GW_NBACKENDS] = {
    [GW_BACKEND_REDIS] = "redis",       [GW_BACKEND_KAFKA] = "kafka",
    [GW_BACKEND_AUTH] = "auth",         [GW_BACKEND_SCHEDULER] = "scheduler",
    [GW_BACKEND_WM] = "worker-manager", [GW_BACKEND_BILLING] = "billing",
    [GW_BACKEND_S3] = "object store",
};

struct fwd_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    enum gw_backend backend;
    gw_forward_done_fn done; /* may be NULL */
    void *done_arg;
};

static void forwarded(const struct nf_http_resp *resp, void *arg)
{
    struct fwd_op *op = arg;
    const char *ct, *retry, *name = backend_names[op->backend];
    char msg[96];

    if (op->done)
        op->done(op->ctx, op->done_arg);
    if (resp->status == 0 && op->ctx->svc->stopping) { /* the gateway ended the call */
        gw_reply_unavailable(op->req, 1, "the gateway is shutting down, try again");
        free(op);
        return;
    }
    if (resp->status == 0) {
        nf_log_kv(NF_LOG_WARN, "backend_unavailable", "forwarded call failed", "backend", name,
                  "path", nf_http_req_path(op->req), "error", resp->error, NULL);
        gw_backend_error(op->ctx, op->backend);
        snprintf(msg, sizeof(msg), "the %s service is unavailable, try again", name);
        gw_reply_unavailable(op->req, 1, msg);
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

int gw_forward(struct gw_ctx *ctx, struct nf_http_req *req, struct nf_http_client *cli,
               enum gw_backend backend, const char *method, const char *target,
               const char *const *headers, const char *body, size_t len, int timeout_ms,
               gw_forward_done_fn done, void *done_arg)
{
    struct fwd_op *op;
    char msg[96];

    if (cli) {
        op = nf_xcalloc(1, sizeof(*op));
        op->ctx = ctx;
        op->req = req;
        op->backend = backend;
        op->done = done;
        op->done_arg = done_arg;
        if (nf_http_client_request(cli, method, target, headers, len ? body : NULL, len, timeout_ms,
                                   forwarded, op) == 0)
            return 0;
        free(op);
        gw_backend_error(ctx, backend);
    }
    snprintf(msg, sizeof(msg), "the %s service is unavailable, try again", backend_names[backend]);
    gw_reply_unavailable(req, 1, cli ? msg : "the gateway is shutting down, try again");
    return -1;
}
