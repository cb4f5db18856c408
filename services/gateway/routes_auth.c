/*
 * /api/auth/...: accounts, sessions and API keys belong to nf-auth. The gateway forwards
 * them; for the routes that need a caller it authenticates first (API key or session,
 * rate limited like every other route) and passes the principal in headers nf-auth trusts
 * (it listens on an internal address only). Client-sent X-Nf-* headers are never
 * forwarded: each forward builds its headers from scratch.
 *
 *   POST /api/auth/register, /login      -> nf-auth (X-Nf-Client-Addr for its limits)
 *   POST /api/auth/logout                -> nf-auth with X-Nf-Session-Hash of the cookie
 *   GET  /api/auth/me, /api-keys         \
 *   POST /api/auth/api-keys               > gw_keys_auth -> nf-auth with X-Nf-User-Id,
 *   DELETE /api/auth/api-keys/{key_id}   /                  X-Nf-Key-Id, X-Nf-Auth
 *   (POST /api-keys asking for limits above this gateway's -> 422 here, never forwarded)
 *
 *   answer: status, body, Content-Type, Set-Cookie, Retry-After, Cache-Control relayed;
 *   nf-auth unreachable or timed out -> 503 Retry-After 1
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "routes.h"

#define AUTH_FWD_TIMEOUT_MS 15000 /* a failed login is answered after a delay of up to 2.5 s */
#define NHEADERS 16

struct fwd_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
};

static void relay_header(struct nf_http_req *req, const struct nf_http_resp *resp, const char *name)
{
    const char *v = nf_http_resp_header(resp, name);

    if (v)
        nf_http_set_header(req, name, v);
}

static void forwarded(const struct nf_http_resp *resp, void *arg)
{
    struct fwd_op *op = arg;
    const char *ct;

    if (resp->status == 0) {
        nf_log_kv(NF_LOG_WARN, "auth_unavailable", "nf-auth call failed", "path",
                  nf_http_req_path(op->req), "error", resp->error, NULL);
        if (!op->ctx->svc->closing)
            gw_backend_error(op->ctx, GW_BACKEND_AUTH);
        gw_reply_unavailable(op->req, 1, "the account service is unavailable, try again");
        free(op);
        return;
    }
    relay_header(op->req, resp, "Set-Cookie");
    relay_header(op->req, resp, "Retry-After");
    relay_header(op->req, resp, "Cache-Control");
    ct = nf_http_resp_header(resp, "Content-Type");
    if (!ct && resp->len > 0)
        ct = "application/json";
    nf_http_reply_raw(op->req, resp->status, ct, resp->body, resp->len); /* ct NULL: none */
    free(op);
}

/* Sends req to nf-auth at path with the given extra headers (name, value, ..., NULL). */
static void forward(struct gw_ctx *ctx, struct nf_http_req *req, const char *path,
                    const char *const *extra)
{
    const char *headers[NHEADERS + 1], *body;
    struct fwd_op *op;
    size_t nh = 0, len = 0;

    if (ctx->svc->closing) {
        gw_reply_unavailable(req, 1, "the gateway is shutting down, try again");
        return;
    }
    headers[nh++] = "X-Request-Id";
    headers[nh++] = nf_http_req_id(req);
    headers[nh++] = "X-Nf-Client-Addr";
    headers[nh++] = nf_http_req_peer(req);
    while (extra && *extra && nh + 2 <= NHEADERS) {
        headers[nh++] = extra[0];
        headers[nh++] = extra[1];
        extra += 2;
    }
    headers[nh] = NULL;
    body = nf_http_req_body(req, &len);
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    if (nf_http_client_request(ctx->auth, nf_http_req_method(req), path, headers, len ? body : NULL,
                               len, AUTH_FWD_TIMEOUT_MS, forwarded, op) != 0) {
        gw_backend_error(ctx, GW_BACKEND_AUTH);
        gw_reply_unavailable(req, 1, "the account service is unavailable, try again");
        free(op);
    }
}

/* ---- without a caller -------------------------------------------------------------- */

void gw_auth_register(struct nf_http_req *req, void *arg)
{
    forward(arg, req, "/api/auth/register", NULL);
}

void gw_auth_login(struct nf_http_req *req, void *arg)
{
    forward(arg, req, "/api/auth/login", NULL);
}

/* Logging out needs no valid session (ending an expired one is fine): the cookie's token
 * hash tells nf-auth which session to end. The token itself never leaves the gateway. */
void gw_auth_logout(struct nf_http_req *req, void *arg)
{
    char token[GW_SESSION_TOKEN_LEN + 1], hash[NF_SHA256_HEX_LEN + 1];
    const char *extra[3] = {NULL, NULL, NULL};

    if (gw_keys_session_cookie(nf_http_req_header(req, "Cookie"), token) == GW_KEY_OK) {
        nf_crypto_sha256_hex(token, GW_SESSION_TOKEN_LEN, hash);
        explicit_bzero(token, sizeof(token));
        extra[0] = "X-Nf-Session-Hash";
        extra[1] = hash;
    }
    forward(arg, req, "/api/auth/logout", extra);
}

/* ---- with a caller ------------------------------------------------------------------ */

static void forward_as(struct gw_ctx *ctx, struct nf_http_req *req, const char *path,
                       const struct gw_principal *who)
{
    const char *extra[7];
    size_t n = 0;

    extra[n++] = "X-Nf-User-Id";
    extra[n++] = who->user_id;
    extra[n++] = "X-Nf-Auth";
    extra[n++] = who->session ? "session" : "api_key";
    if (!who->session) {
        extra[n++] = "X-Nf-Key-Id";
        extra[n++] = who->key_id;
    }
    extra[n] = NULL;
    forward(ctx, req, path, extra);
}

static void me_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    forward_as(ctx, req, "/api/auth/me", who);
}

int gw_key_limits_check(const char *body, size_t len, int rate_max, int burst_max,
                        const char **param, char *msg, size_t msglen)
{
    static const char *const names[] = {"rate_limit_per_minute", "burst"};
    cJSON *doc = body != NULL && len > 0 ? cJSON_ParseWithLength(body, len) : NULL;
    int rc = 0;

    for (size_t i = 0; cJSON_IsObject(doc) && i < 2 && rc == 0; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, names[i]);
        int max = i == 0 ? rate_max : burst_max;

        if (cJSON_IsNumber(v) && v->valuedouble > max) {
            *param = names[i];
            snprintf(msg, msglen,
                     "%s must be at most %d: this deployment applies %d %s to every key, and a "
                     "key may only lower it",
                     names[i], max, max, i == 0 ? "requests a minute" : "requests at once");
            rc = -1;
        }
    }
    cJSON_Delete(doc);
    return rc;
}

/* Creating a key: refused here when it asks for more than this gateway would apply. */
static void keys_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *param = NULL;
    char msg[192];
    size_t len = 0;
    const char *body = nf_http_req_body(req, &len);

    if (strcmp(nf_http_req_method(req), "POST") == 0 &&
        gw_key_limits_check(body, len, ctx->cfg->rate_per_min, ctx->cfg->rate_burst, &param, msg,
                            sizeof(msg)) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", param, "%s", msg);
        return;
    }
    forward_as(ctx, req, "/api/auth/api-keys", who);
}

static void key_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *key_id = nf_http_req_param(req, "key_id");
    char path[32 + NF_ID_MAX];

    if (!nf_id_valid("key", key_id)) { /* not an id: no such key (and nothing to forward) */
        nf_http_reply_error(req, 404, "not_found", "key_id", "no such API key");
        return;
    }
    snprintf(path, sizeof(path), "/api/auth/api-keys/%s", key_id);
    forward_as(ctx, req, path, who);
}

GW_ROUTE_AUTHED(gw_auth_me, me_authed)
GW_ROUTE_AUTHED(gw_auth_keys, keys_authed)
GW_ROUTE_AUTHED(gw_auth_key, key_authed)
