/*
 * /api/workers/...: the worker agent protocol and the worker list belong to the
 * worker-manager, which authenticates the agents itself (registration token, worker
 * tokens). The gateway forwards method, path and query (as received), body, the
 * credentials (Authorization, X-Nexa-Api-Key) and X-Request-Id, and relays status, body,
 * Content-Type and Retry-After.
 *
 *   client --> gateway --(keep-alive pool, 40 s for next_job, 10 s otherwise)--> wm
 *   wm unreachable or timed out --> 503 Retry-After 1
 *
 * The fleet list (GET /api/workers/) is for users: the gateway authenticates the API key
 * or session (and rate-limits) first, and forwards it without the user's credentials but
 * with X-Nf-User-Id, so the worker-manager answers the user's view: current_jobs only the
 * caller's, hostname null.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_log.h"
#include "routes.h"

#define WM_TIMEOUT_MS 10000
#define WM_LONG_POLL_TIMEOUT_MS 40000 /* next_job waits up to 30 s on the worker-manager */
#define TARGET_MAX 4096

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A forwarded long poll completed (answered, failed or ended by the drain). */
static void long_poll_done(struct gw_ctx *ctx, void *arg)
{
    ctx->long_polls--;
}

/* user_id: the authenticated user a list is for (X-Nf-User-Id), NULL for the agents */
static void forward(struct gw_ctx *ctx, struct nf_http_req *req, bool credentials,
                    const char *user_id)
{
    const char *headers[9], *v, *body, *path = nf_http_req_path(req);
    const char *query = nf_http_req_query_string(req);
    char target[TARGET_MAX];
    size_t nh = 0, len = 0;
    bool long_poll;
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
    if (credentials && (v = nf_http_req_header(req, "Authorization"))) {
        headers[nh++] = "Authorization";
        headers[nh++] = v;
    }
    if (credentials && (v = nf_http_req_header(req, "X-Nexa-Api-Key"))) {
        headers[nh++] = "X-Nexa-Api-Key";
        headers[nh++] = v;
    }
    if (user_id != NULL) {
        headers[nh++] = "X-Nf-User-Id";
        headers[nh++] = user_id;
    }
    headers[nh++] = "X-Request-Id";
    headers[nh++] = nf_http_req_id(req);
    headers[nh] = NULL;
    body = nf_http_req_body(req, &len);
    long_poll = ends_with(path, "/next_job") || ends_with(path, "/next_job/");
    if (long_poll)
        ctx->long_polls++;
    if (gw_forward(ctx, req, ctx->wm, GW_BACKEND_WM, nf_http_req_method(req), target, headers, body,
                   len, long_poll ? WM_LONG_POLL_TIMEOUT_MS : WM_TIMEOUT_MS,
                   long_poll ? long_poll_done : NULL, NULL) != 0 &&
        long_poll)
        ctx->long_polls--;
}

void gw_workers_forward(struct nf_http_req *req, void *arg)
{
    forward(arg, req, true, NULL);
}

static void list_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    /* the fleet is shared: any authenticated user may look, at their own jobs only and
     * without host names (the worker-manager's user view) */
    forward(ctx, req, false, who->user_id);
}

GW_ROUTE_AUTHED(gw_workers_list, list_authed)
