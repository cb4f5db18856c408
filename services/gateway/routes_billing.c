/*
 * /api/billing routes: the caller's own bill, forwarded to nf-billing.
 *
 *   GET /api/billing/summary  ?period_start&period_end
 *   GET /api/billing/usage    ?bucket=hour|day&meter&job_type&period_start&period_end
 *   GET /api/billing/budget
 *   PUT /api/billing/budget   {"monthly_limit_usd": "50.00" | null}
 *
 *   auth --> target = /internal/<what>?user_id=<the caller> plus only the documented
 *            query parameters, re-encoded (a user_id sent by the client is never passed
 *            on: tenancy is the gateway's word, not the client's)
 *        --> gw_forward (forward.c) --> billing validates (bad period, bucket, meter,
 *            job type or budget: 422 naming the parameter) and answers; relayed as is
 */
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_log.h"
#include "routes.h"

#define TARGET_MAX 2048

static const char *const summary_params[] = {"period_start", "period_end", NULL};
static const char *const usage_params[] = {"bucket",       "meter",      "job_type",
                                           "period_start", "period_end", NULL};

/* path?user_id=<user>&name=value...; -1 when it does not fit (then 414). */
static int build_target(char *out, size_t outlen, const char *path, const char *user_id,
                        struct nf_http_req *req, const char *const *names)
{
    char *enc = evhttp_uriencode(user_id, -1, 0);
    size_t n;
    int rc;

    if (!enc)
        abort();
    rc = snprintf(out, outlen, "%s?user_id=%s", path, enc);
    free(enc);
    if (rc < 0 || (size_t)rc >= outlen)
        return -1;
    n = (size_t)rc;
    for (; names && *names; names++) {
        const char *v = nf_http_req_query(req, *names);

        if (!v)
            continue;
        enc = evhttp_uriencode(v, -1, 0);
        if (!enc)
            abort();
        rc = snprintf(out + n, outlen - n, "&%s=%s", *names, enc);
        free(enc);
        if (rc < 0 || (size_t)rc >= outlen - n)
            return -1;
        n += (size_t)rc;
    }
    return 0;
}

static void forward(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who,
                    const char *path, const char *const *names)
{
    const char *headers[] = {"X-Request-Id", nf_http_req_id(req), NULL};
    char target[TARGET_MAX];
    const char *body = NULL;
    size_t len = 0;

    if (build_target(target, sizeof(target), path, who->user_id, req, names) < 0) {
        nf_http_reply_error(req, 414, "uri_too_long", NULL, "the request URI is too long");
        return;
    }
    if (strcmp(nf_http_req_method(req), "PUT") == 0)
        body = nf_http_req_body(req, &len);
    (void)gw_forward(ctx, req, ctx->billing, GW_BACKEND_BILLING, nf_http_req_method(req), target,
                     headers, body, len, 0, NULL, NULL);
}

static void summary_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                           const struct gw_principal *who)
{
    forward(ctx, req, who, "/internal/summary", summary_params);
}

static void usage_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                         const struct gw_principal *who)
{
    forward(ctx, req, who, "/internal/usage", usage_params);
}

static void budget_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    forward(ctx, req, who, "/internal/budget", NULL);
}

GW_ROUTE_AUTHED(gw_billing_summary, summary_authed)
GW_ROUTE_AUTHED(gw_billing_usage, usage_authed)
GW_ROUTE_AUTHED(gw_billing_budget, budget_authed)
