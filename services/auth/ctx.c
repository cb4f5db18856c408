/*
 * The bottom of nf-auth: the context's metrics and the helpers every route module shares
 * (503 answers, backend error counts, the gateway's trusted headers). It calls nothing
 * above it: routes and hooks live in routes_*.c and service.c.
 */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "nf_http.h"
#include "nf_metrics.h"

void auth_metrics_register(struct auth_ctx *ctx)
{
    static const char *const logins[AUTH_NLOGIN] = {"ok", "failed", "limited"};
    char labels[64];
    int i;

    for (i = 0; i < AUTH_NLOGIN; i++) {
        snprintf(labels, sizeof(labels), "result=\"%s\"", logins[i]);
        ctx->m_login[i] =
            nf_metrics_counter(ctx->metrics, "nf_auth_logins_total", "logins by result", labels);
    }
    ctx->m_keys_created = nf_metrics_counter(ctx->metrics, "nf_auth_keys_created_total",
                                             "API keys created through the API", NULL);
    ctx->m_keys_revoked =
        nf_metrics_counter(ctx->metrics, "nf_auth_keys_revoked_total", "API keys revoked", NULL);
    ctx->m_registered = nf_metrics_counter(ctx->metrics, "nf_auth_users_registered_total",
                                           "users registered", NULL);
    ctx->m_usage_flushed =
        nf_metrics_counter(ctx->metrics, "nf_auth_key_usage_flushed_total",
                           "last_used_at updates written from auth:used batches", NULL);
    ctx->m_backend_err[AUTH_BACKEND_KAFKA] = nf_metrics_counter(
        ctx->metrics, "nf_auth_backend_errors_total", "failed backend calls", "backend=\"kafka\"");
    ctx->m_verify_ok = nf_metrics_counter(ctx->metrics, "nf_auth_key_verify_total",
                                          "key verifications by result", "result=\"ok\"");
    ctx->m_verify_miss = nf_metrics_counter(ctx->metrics, "nf_auth_key_verify_total",
                                            "key verifications by result", "result=\"not_found\"");
    ctx->m_bootstrap = nf_metrics_counter(ctx->metrics, "nf_auth_bootstrap_keys_total",
                                          "API keys created by /internal/bootstrap", NULL);
    ctx->m_backend_err[AUTH_BACKEND_PG] =
        nf_metrics_counter(ctx->metrics, "nf_auth_backend_errors_total", "failed backend calls",
                           "backend=\"postgres\"");
    ctx->m_backend_err[AUTH_BACKEND_REDIS] = nf_metrics_counter(
        ctx->metrics, "nf_auth_backend_errors_total", "failed backend calls", "backend=\"redis\"");
}

void auth_reply_unavailable(struct nf_http_req *req, const char *msg)
{
    nf_http_set_header(req, "Retry-After", "1");
    nf_http_reply_error(req, 503, "unavailable", NULL, "%s", msg);
}

void auth_backend_error(struct auth_ctx *ctx, enum auth_backend b)
{
    if (!ctx->closing)
        nf_metrics_counter_add(ctx->m_backend_err[b], 1);
}

void auth_unavailable(struct auth_ctx *ctx, struct nf_http_req *req, enum auth_backend b,
                      const char *msg)
{
    auth_backend_error(ctx, b);
    auth_reply_unavailable(req, msg);
}

/* ---- trusted headers ------------------------------------------------------------------ */

bool auth_req_caller(struct nf_http_req *req, struct auth_caller *out)
{
    const char *user_id = nf_http_req_header(req, "X-Nf-User-Id");
    const char *key_id = nf_http_req_header(req, "X-Nf-Key-Id");
    const char *how = nf_http_req_header(req, "X-Nf-Auth");
    bool session = how && strcmp(how, "session") == 0;

    if (!nf_id_valid("usr", user_id) || !how || (!session && strcmp(how, "api_key") != 0) ||
        (!session && !nf_id_valid("key", key_id))) {
        nf_http_reply_error(req, 403, "forbidden", NULL,
                            "this route needs a caller authenticated by the gateway");
        return false;
    }
    snprintf(out->user_id, sizeof(out->user_id), "%s", user_id);
    snprintf(out->key_id, sizeof(out->key_id), "%s", session ? "" : key_id);
    out->session = session;
    return true;
}

/* An address as the gateway writes it: IPv4 or IPv6 text, nothing else. */
static bool addr_sane(const char *a)
{
    size_t i, n;

    if (!a)
        return false;
    n = strlen(a);
    if (n == 0 || n >= AUTH_ADDR_MAX)
        return false;
    for (i = 0; i < n; i++)
        if (!strchr("0123456789abcdefABCDEF.:", a[i]))
            return false;
    return true;
}

const char *auth_req_client_addr(struct nf_http_req *req)
{
    const char *a = nf_http_req_header(req, "X-Nf-Client-Addr");

    if (addr_sane(a))
        return a;
    a = nf_http_req_peer(req);
    return addr_sane(a) ? a : "unknown";
}
