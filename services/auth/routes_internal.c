/*
 * nf-auth's internal routes (docs/internals.md "Internal HTTP"), called by the gateway on a
 * cache miss and by `./forge up`.
 *
 *   POST /internal/keys/verify {"key_hash"}
 *     body (400) -> 64 lowercase hex (422) -> SELECT the live key (read only: usage is
 *       batched through auth:used, see usage.c)
 *       -> row: SET NX auth:key:<hash> (EX <= 300; NX so a revocation's tombstone is never
 *          overwritten by a lookup that raced it) -> 200 record
 *       -> no row: 404          Postgres down: 503 Retry-After 1
 *
 *   POST /internal/sessions/verify {"token_hash"}    the same for auth:session:<hash>
 *
 *   POST /internal/bootstrap {"email", "name"?}
 *     body (400) -> e-mail shape (422) -> new key (nf_crypto_apikey_new), its SHA-256
 *       -> tx: INSERT user ON CONFLICT DO NOTHING; INSERT key for that e-mail's user
 *       -> 201 {"user_id","key_id","api_key","prefix"}       (the key is shown only here)
 *       -> forge.auth.key_created
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_http.h"
#include "nf_json.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "nf_redis.h"
#include "routes.h"

static const char verify_sql[] =
    "SELECT key_id, user_id, auth.rfc3339(expires_at) AS expires_at,"
    " rate_limit_per_minute, burst,"
    " CASE WHEN expires_at IS NULL THEN -1"
    " ELSE floor(extract(epoch FROM expires_at - now()))::bigint END AS secs_left"
    " FROM auth.api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
    " AND (expires_at IS NULL OR expires_at > now())";

static const char session_sql[] =
    "SELECT user_id, auth.rfc3339(expires_at) AS expires_at,"
    " floor(extract(epoch FROM expires_at - now()))::bigint AS secs_left"
    " FROM auth.sessions WHERE token_hash = $1 AND expires_at > now()";

static const char user_sql[] =
    "INSERT INTO auth.users (user_id, email) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING";

static const char key_sql[] = "INSERT INTO auth.api_keys (key_id, user_id, name, key_hash, prefix)"
                              " SELECT $1, user_id, $2, $3, $4 FROM auth.users WHERE email = $5"
                              " RETURNING user_id, key_id, auth.rfc3339(created_at) AS created_at";

/* ---- verify (keys and sessions) ------------------------------------------------------ */

struct verify_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
    bool session;
    char hash[NF_SHA256_HEX_LEN + 1];
};

static int int_val(const PGresult *res, const char *col)
{
    const char *v = nf_pg_val(res, 0, col);

    long n = v ? strtol(v, NULL, 10) : 0;

    return n > 0 && n <= INT32_MAX ? (int)n : 0;
}

static void verified(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct verify_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    const char *left;
    char *rec;
    int ttl;

    if (!res) {
        nf_log_kv(NF_LOG_ERROR, "verify_failed", "credential lookup failed", "error", err, "pgcode",
                  pgcode, NULL);
        auth_unavailable(ctx, op->req, AUTH_BACKEND_PG, "the key store is unavailable, try again");
        goto done;
    }
    if (PQntuples(res) != 1) {
        nf_metrics_counter_add(ctx->m_verify_miss, 1);
        nf_http_reply_error(op->req, 404, "not_found", NULL, "%s",
                            op->session ? "no live session has this hash"
                                        : "no live API key has this hash (unknown, revoked or "
                                          "expired)");
        goto done;
    }
    if (op->session)
        rec = auth_session_record(nf_pg_val(res, 0, "user_id"), nf_pg_val(res, 0, "expires_at"));
    else
        rec = auth_keys_record(nf_pg_val(res, 0, "key_id"), nf_pg_val(res, 0, "user_id"),
                               nf_pg_val(res, 0, "expires_at"),
                               int_val(res, "rate_limit_per_minute"), int_val(res, "burst"));
    left = nf_pg_val(res, 0, "secs_left");
    ttl = auth_keys_cache_ttl(left ? strtoll(left, NULL, 10) : 0);
    if (ttl > 0 && !ctx->closing)
        nf_redis_cmd(ctx->redis, NULL, NULL, "SET auth:%s:%s %s EX %d NX",
                     op->session ? "session" : "key", op->hash, rec, ttl);
    nf_metrics_counter_add(ctx->m_verify_ok, 1);
    nf_http_reply_raw(op->req, 200, "application/json", rec, strlen(rec));
    free(rec);
done:
    free(op);
}

static void verify(struct auth_ctx *ctx, struct nf_http_req *req, bool session)
{
    const char *field = session ? "token_hash" : "key_hash";
    struct nf_json_err err = {{0}, {0}};
    struct verify_op *op;
    const char *hash, *params[1];
    cJSON *body;

    body = nf_http_req_json(req); /* owned by req; on NULL it answered 400 */
    if (!body)
        return;
    if (nf_json_get_str(body, field, true, &hash, &err) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    if (!auth_keys_hash_valid(hash)) {
        nf_http_reply_error(req, 422, "invalid_params", field,
                            "%s must be 64 lowercase hex digits (a SHA-256)", field);
        return;
    }
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    op->session = session;
    memcpy(op->hash, hash, NF_SHA256_HEX_LEN + 1);
    params[0] = op->hash;
    nf_pg_query(ctx->pg, session ? session_sql : verify_sql, 1, params, verified, op);
}

void auth_internal_verify_key(struct nf_http_req *req, void *arg)
{
    verify(arg, req, false);
}

void auth_internal_verify_session(struct nf_http_req *req, void *arg)
{
    verify(arg, req, true);
}

/* ---- bootstrap --------------------------------------------------------------------- */

struct boot_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
    char key_id[NF_ID_MAX];
    char name[AUTH_KEY_NAME_MAX + 1];
    char api_key[NF_APIKEY_LEN + 1]; /* the secret: answered once, then wiped */
};

static void boot_done(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct boot_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    char prefix[NF_APIKEY_DISPLAY_LEN + 1];
    const char *user_id;
    cJSON *out, *ev;

    if (!res || PQntuples(res) != 1) {
        nf_log_kv(NF_LOG_ERROR, "bootstrap_failed", "cannot create the user key", "error",
                  err ? err : "no user row", "pgcode", pgcode, NULL);
        auth_unavailable(ctx, op->req, AUTH_BACKEND_PG, "the key store is unavailable, try again");
        goto done;
    }
    user_id = nf_pg_val(res, 0, "user_id");
    memcpy(prefix, op->api_key, NF_APIKEY_DISPLAY_LEN);
    prefix[NF_APIKEY_DISPLAY_LEN] = '\0';
    out = nf_json_obj();
    nf_json_add_str(out, "user_id", user_id);
    nf_json_add_str(out, "key_id", op->key_id);
    nf_json_add_str(out, "api_key", op->api_key);
    nf_json_add_str(out, "prefix", prefix);
    nf_metrics_counter_add(ctx->m_bootstrap, 1);
    nf_log_kv(NF_LOG_INFO, "bootstrap_key", "api key created", "user_id", user_id, "key_id",
              op->key_id, "prefix", prefix, NULL);

    ev = nf_json_obj();
    nf_json_add_str(ev, "user_id", user_id);
    nf_json_add_str(ev, "key_id", op->key_id);
    nf_json_add_str(ev, "name", op->name);
    nf_json_add_str(ev, "prefix", prefix);
    nf_json_add_str(ev, "created_at", nf_pg_val(res, 0, "created_at"));
    nf_json_add_str(ev, "expires_at", NULL);
    nf_json_add_str(ev, "via", "bootstrap");
    auth_audit(ctx, "key_created", user_id, ev); /* ev consumed */

    nf_http_set_header(op->req, "Cache-Control", "no-store");
    nf_http_reply_json(op->req, 201, out); /* out consumed */
done:
    explicit_bzero(op->api_key, sizeof(op->api_key));
    free(op);
}

void auth_internal_bootstrap(struct nf_http_req *req, void *arg)
{
    struct auth_ctx *ctx = arg;
    struct nf_json_err err = {{0}, {0}};
    struct boot_op *op;
    const char *email_in, *name = "bootstrap";
    char email[AUTH_EMAIL_MAX + 1], user_id[NF_ID_MAX], hash[NF_SHA256_HEX_LEN + 1];
    char prefix[NF_APIKEY_DISPLAY_LEN + 1];
    const char *user_params[2], *key_params[5];
    struct nf_pg_stmt stmts[2];
    cJSON *body;

    body = nf_http_req_json(req); /* owned by req; on NULL it answered 400 */
    if (!body)
        return;
    if (nf_json_get_str(body, "email", true, &email_in, &err) != 0 ||
        nf_json_get_str(body, "name", false, &name, &err) < 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    if (auth_keys_email_normalize(email_in, email, sizeof(email)) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", "email",
                            "email must be an e-mail address such as dev@example.com");
        return;
    }
    if (!auth_keys_name_valid(name)) {
        nf_http_reply_error(req, 422, "invalid_params", "name",
                            "name must be 1 to %d characters of text", AUTH_KEY_NAME_MAX);
        return;
    }
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    snprintf(op->name, sizeof(op->name), "%s", name);
    nf_id_new("usr", user_id, sizeof(user_id)); /* used only if the e-mail is new */
    nf_id_new("key", op->key_id, sizeof(op->key_id));
    nf_crypto_apikey_new(op->api_key);
    nf_crypto_sha256_hex(op->api_key, NF_APIKEY_LEN, hash);
    memcpy(prefix, op->api_key, NF_APIKEY_DISPLAY_LEN);
    prefix[NF_APIKEY_DISPLAY_LEN] = '\0';

    user_params[0] = user_id;
    user_params[1] = email;
    key_params[0] = op->key_id;
    key_params[1] = op->name;
    key_params[2] = hash;
    key_params[3] = prefix;
    key_params[4] = email;
    stmts[0] = (struct nf_pg_stmt){user_sql, 2, user_params};
    stmts[1] = (struct nf_pg_stmt){key_sql, 5, key_params};
    nf_pg_tx(ctx->pg, stmts, 2, boot_done, op); /* copied */
}
