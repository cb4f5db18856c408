/*
 * Accounts and dashboard sessions: /api/auth/register, login, logout, me (forwarded by the
 * gateway; DESIGN §5).
 *
 *   register {email, password}
 *     shape (422) -> INCR auth:reg:addr:<addr> (429 over the hourly limit)
 *     -> Argon2id on a hasher thread -> INSERT user unless the e-mail is taken
 *     -> 201 either way, the same body (a taken e-mail is not revealed)
 *
 *   login {email, password}
 *     shape (422) -> lf_check: failures of this e-mail / address >= limit? 429 Retry-After
 *     -> SELECT user by e-mail -> Argon2id verify against its hash, or against a dummy hash
 *        when there is no such user (same work, same answer: the e-mail stays secret)
 *     -> match: INSERT session (token stored as SHA-256) -> DEL e-mail failures -> audit
 *        -> 200 {session_token, ...} + Set-Cookie nf_session (HttpOnly, SameSite=Lax)
 *     -> no match: lf_fail (count both) -> audit if the user exists
 *        -> hold the answer delay_ms x failures (timer, not the loop) -> 401
 *
 *   logout (X-Nf-Session-Hash from the gateway, optional)
 *     -> DELETE session -> SET auth:session:<hash> "revoked" -> 204 + clearing cookie
 *
 *   me (caller from the gateway) -> SELECT user -> 200
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "auth.h"
#include "nf_http.h"
#include "nf_json.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "nf_redis.h"
#include "routes.h"

#define LF_KEY_MAX 96

/* Failures per e-mail and per address: how many, and how long until the window ends when
 * one of them is at its limit. */
static const char lf_check_lua[] =
    "local e = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local a = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "local wait = 0\n"
    "if e >= tonumber(ARGV[1]) then wait = math.max(wait, redis.call('TTL', KEYS[1])) end\n"
    "if a >= tonumber(ARGV[2]) then wait = math.max(wait, redis.call('TTL', KEYS[2])) end\n"
    "if (e >= tonumber(ARGV[1]) or a >= tonumber(ARGV[2])) and wait < 1 then wait = 1 end\n"
    "return {e, a, wait}\n";

/* One more failure for both; a counter's window starts at its first failure. */
static const char lf_fail_lua[] =
    "local e = redis.call('INCR', KEYS[1])\n"
    "if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end\n"
    "local a = redis.call('INCR', KEYS[2])\n"
    "if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end\n"
    "return {e, a}\n";

/* Registrations per address per hour: {allowed, seconds to wait}. */
static const char reg_count_lua[] =
    "local n = redis.call('INCR', KEYS[1])\n"
    "if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], 3600) end\n"
    "if n > tonumber(ARGV[1]) then return {0, math.max(redis.call('TTL', KEYS[1]), 1)} end\n"
    "return {1, 0}\n";

static const char user_by_email_sql[] =
    "SELECT user_id, password_hash FROM auth.users WHERE email = $1";

/* One row whether or not the e-mail was free, so a taken e-mail is answered exactly like a
 * new one (no enumeration): the fresh user_id and now() either way; existing_user_id (the
 * owner of a taken e-mail, for our log only) is NULL when the row went in, as the statement
 * does not see its own insert. */
static const char register_sql[] =
    "WITH ins AS (INSERT INTO auth.users (user_id, email, password_hash) VALUES ($1, $2, $3)"
    " ON CONFLICT (email) DO NOTHING RETURNING created_at)"
    " SELECT auth.rfc3339(COALESCE((SELECT created_at FROM ins), now())) AS created_at,"
    " (SELECT user_id FROM auth.users WHERE email = $2) AS existing_user_id";

static const char session_sql[] =
    "INSERT INTO auth.sessions (token_hash, user_id, expires_at, client_addr)"
    " VALUES ($1, $2, now() + make_interval(secs => $3::int), $4)"
    " RETURNING auth.rfc3339(expires_at) AS expires_at";

static const char logout_sql[] = "DELETE FROM auth.sessions WHERE token_hash = $1";

static const char me_sql[] =
    "SELECT user_id, email, auth.rfc3339(created_at) AS created_at FROM auth.users"
    " WHERE user_id = $1";

int auth_account_start(struct auth_ctx *ctx)
{
    ctx->lf_check = nf_redis_script_new(ctx->redis, lf_check_lua);
    ctx->lf_fail = nf_redis_script_new(ctx->redis, lf_fail_lua);
    ctx->reg_count = nf_redis_script_new(ctx->redis, reg_count_lua);
    return ctx->lf_check && ctx->lf_fail && ctx->reg_count ? 0 : -1;
}

/* Reads an integer element of a script's array answer; def when absent or not a number. */
static long long reply_int(const redisReply *reply, size_t i, long long def)
{
    if (!reply || reply->type != REDIS_REPLY_ARRAY || i >= reply->elements)
        return def;
    if (reply->element[i]->type == REDIS_REPLY_INTEGER)
        return reply->element[i]->integer;
    return def;
}

static void too_many(struct nf_http_req *req, long long wait_s, const char *what)
{
    char v[24];

    snprintf(v, sizeof(v), "%lld", wait_s < 1 ? 1 : wait_s);
    nf_http_set_header(req, "Retry-After", v);
    nf_http_reply_error(req, 429, "rate_limited", NULL, "too many %s, retry after %s s", what, v);
}

/* Reads the body {email, password}: the e-mail normalised into email, the password pointer
 * into req's body. Answers 400 or 422 itself and returns -1 on a bad body. */
static int read_credentials(struct nf_http_req *req, char *email, size_t len, const char **password)
{
    struct nf_json_err err = {{0}, {0}};
    const char *email_in;
    const cJSON *item, *body;

    body = nf_http_req_json(req); /* owned by req; on NULL it answered 400 */
    if (!body)
        return -1;
    cJSON_ArrayForEach(item, body)
    {
        if (strcmp(item->string, "email") != 0 && strcmp(item->string, "password") != 0) {
            nf_http_reply_error(req, 422, "invalid_params", item->string,
                                "unknown field %.64s (expected email and password)", item->string);
            return -1;
        }
    }
    if (nf_json_get_str(body, "email", true, &email_in, &err) != 0 ||
        nf_json_get_str(body, "password", true, password, &err) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return -1;
    }
    if (auth_keys_email_normalize(email_in, email, len) != 0) {
        nf_http_reply_error(req, 422, "invalid_params", "email",
                            "email must be an e-mail address such as dev@example.com");
        return -1;
    }
    return 0;
}

static char *dup_secret(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = nf_xmalloc(n);

    memcpy(p, s, n);
    return p;
}

static void free_secret(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

/* ---- register ------------------------------------------------------------------------- */

struct register_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
    char email[AUTH_EMAIL_MAX + 1];
    char user_id[NF_ID_MAX];
    char *password; /* private copy, wiped once hashed */
};

static void register_free(struct register_op *op)
{
    free_secret(op->password);
    free(op);
}

static void registered(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct register_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    cJSON *out;

    if (!res || PQntuples(res) != 1) {
        nf_log_kv(NF_LOG_ERROR, "register_failed", "cannot create the user", "error",
                  res ? "no row" : err, "pgcode", pgcode, NULL);
        auth_unavailable(ctx, op->req, AUTH_BACKEND_PG,
                         "the account store is unavailable, try again");
    } else {
        const char *owner = nf_pg_val(res, 0, "existing_user_id");

        /* A taken e-mail gets the same 201 as a new one, naming an id that was never stored:
         * no session, no key, nothing of the owner's account; only our log knows. */
        out = nf_json_obj();
        nf_json_add_str(out, "user_id", op->user_id);
        nf_json_add_str(out, "email", op->email);
        nf_json_add_str(out, "created_at", nf_pg_val(res, 0, "created_at"));
        if (owner != NULL) {
            nf_log_kv(NF_LOG_INFO, "register_email_taken",
                      "sign-up for an existing account answered as new", "user_id", owner,
                      "client_addr", auth_req_client_addr(op->req), NULL);
        } else {
            nf_metrics_counter_add(ctx->m_registered, 1);
            nf_log_kv(NF_LOG_INFO, "user_registered", "user registered", "user_id", op->user_id,
                      "client_addr", auth_req_client_addr(op->req), NULL);
        }
        nf_http_reply_json(op->req, 201, out); /* out consumed */
    }
    register_free(op);
}

static void register_hashed(int rc, const char *hash, void *arg)
{
    struct register_op *op = arg;
    const char *params[3];

    free_secret(op->password);
    op->password = NULL;
    if (rc != AUTH_HASH_OK || op->ctx->closing) {
        if (rc == AUTH_HASH_FAILED)
            nf_log_error("hash_failed", "cannot hash a password (out of memory?)");
        auth_reply_unavailable(op->req, "cannot register now, try again");
        register_free(op);
        return;
    }
    nf_id_new("usr", op->user_id, sizeof(op->user_id));
    params[0] = op->user_id;
    params[1] = op->email;
    params[2] = hash;
    nf_pg_query(op->ctx->pg, register_sql, 3, params, registered, op); /* copied */
}

static void register_counted(redisReply *reply, void *arg)
{
    struct register_op *op = arg;

    if (op->ctx->closing || !reply || reply->type != REDIS_REPLY_ARRAY) {
        auth_unavailable(op->ctx, op->req, AUTH_BACKEND_REDIS, "cannot register now, try again");
        register_free(op);
        return;
    }
    if (reply_int(reply, 0, 0) != 1) {
        too_many(op->req, reply_int(reply, 1, 60), "registrations from this address");
        register_free(op);
        return;
    }
    if (auth_hasher_hash(op->ctx->hasher, op->password, register_hashed, op) != 0) {
        auth_reply_unavailable(op->req, "too many sign-ups in progress, try again");
        register_free(op);
    }
}

void auth_account_register(struct nf_http_req *req, void *arg)
{
    struct auth_ctx *ctx = arg;
    struct register_op *op;
    const char *password, *problem, *argv[2];
    char key[LF_KEY_MAX], limit[16];

    op = nf_xcalloc(1, sizeof(*op));
    if (read_credentials(req, op->email, sizeof(op->email), &password) != 0) {
        free(op);
        return;
    }
    problem = auth_password_problem(password, op->email);
    if (problem) {
        nf_http_reply_error(req, 422, "invalid_params", "password", "%s", problem);
        free(op);
        return;
    }
    op->ctx = ctx;
    op->req = req;
    op->password = dup_secret(password);
    snprintf(key, sizeof(key), "auth:reg:addr:%s", auth_req_client_addr(req));
    snprintf(limit, sizeof(limit), "%d", ctx->cfg->register_per_hour);
    argv[0] = key;
    argv[1] = limit;
    nf_redis_eval(ctx->redis, ctx->reg_count, register_counted, op, 1, 2, argv, NULL);
}

/* ---- login ----------------------------------------------------------------------------- */

struct auth_login_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
    LIST_ENTRY(auth_login_op) link; /* in ctx->delayed while the answer is held back */
    struct event *delay;
    char email[AUTH_EMAIL_MAX + 1];
    char email_key[LF_KEY_MAX]; /* auth:lf:email:<sha256 of the e-mail> */
    char addr_key[LF_KEY_MAX];  /* auth:lf:addr:<address> */
    char addr[AUTH_ADDR_MAX];
    char user_id[NF_ID_MAX];                /* "" when no such user */
    bool dummy;                             /* verified against the dummy hash: never a success */
    char *password;                         /* private copy, wiped once verified */
    char token[AUTH_SESSION_TOKEN_LEN + 1]; /* the new session's secret, wiped after use */
};

static void login_free(struct auth_login_op *op)
{
    free_secret(op->password);
    sodium_memzero(op->token, sizeof(op->token));
    if (op->delay)
        event_free(op->delay);
    free(op);
}

static void login_unavailable(struct auth_login_op *op, const char *msg)
{
    auth_reply_unavailable(op->req, msg);
    login_free(op);
}

static void login_denied(struct auth_login_op *op)
{
    nf_metrics_counter_add(op->ctx->m_login[AUTH_LOGIN_FAILED], 1);
    nf_http_reply_error(op->req, 401, "invalid_credentials", NULL,
                        "the e-mail address or the password is wrong");
    login_free(op);
}

static void delay_over(evutil_socket_t fd, short what, void *arg)
{
    struct auth_login_op *op = arg;

    LIST_REMOVE(op, link);
    login_denied(op);
}

void auth_account_close(struct auth_ctx *ctx)
{
    struct auth_login_op *op;

    while ((op = LIST_FIRST(&ctx->delayed)) != NULL) {
        LIST_REMOVE(op, link);
        login_denied(op);
    }
}

static void audit_login(struct auth_login_op *op, const char *outcome)
{
    cJSON *data;

    if (op->user_id[0] == '\0') /* no such user: nothing to report about anyone */
        return;
    data = nf_json_obj();
    nf_json_add_str(data, "user_id", op->user_id);
    nf_json_add_str(data, "outcome", outcome);
    nf_json_add_str(data, "client_addr", op->addr);
    auth_audit(op->ctx, "login", op->user_id, data); /* data consumed */
}

static void fail_counted(redisReply *reply, void *arg)
{
    struct auth_login_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    long long failures = reply_int(reply, 0, 1);
    struct timeval tv;
    int ms;

    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        auth_backend_error(ctx, AUTH_BACKEND_REDIS);
        failures = AUTH_LOGIN_DELAY_STEPS; /* cannot count: the longest delay */
    }
    nf_log_kv(NF_LOG_INFO, "login_failed", "login failed", "client_addr", op->addr, "user_id",
              op->user_id[0] ? op->user_id : NULL, NULL);
    audit_login(op, "failed");
    ms = auth_login_delay_ms(failures, ctx->cfg->login_delay_ms);
    if (ctx->closing || ms == 0) {
        login_denied(op);
        return;
    }
    op->delay = evtimer_new(ctx->base, delay_over, op);
    if (!op->delay) {
        login_denied(op);
        return;
    }
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    evtimer_add(op->delay, &tv);
    LIST_INSERT_HEAD(&ctx->delayed, op, link);
}

static void login_fail(struct auth_login_op *op)
{
    char window[16];
    const char *argv[3] = {op->email_key, op->addr_key, window};

    snprintf(window, sizeof(window), "%d", op->ctx->cfg->login_window_s);
    nf_redis_eval(op->ctx->redis, op->ctx->lf_fail, fail_counted, op, 2, 3, argv, NULL);
}

static void session_made(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct auth_login_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    const char *expires_at;
    char cookie[256];
    cJSON *out;

    if (!res || PQntuples(res) != 1) {
        nf_log_kv(NF_LOG_ERROR, "session_failed", "cannot create the session", "error",
                  err ? err : "no row", "pgcode", pgcode, NULL);
        auth_backend_error(ctx, AUTH_BACKEND_PG);
        login_unavailable(op, "cannot sign in now, try again");
        return;
    }
    expires_at = nf_pg_val(res, 0, "expires_at");
    if (!ctx->closing) /* a successful login clears this e-mail's failures */
        nf_redis_cmd(ctx->redis, NULL, NULL, "DEL %s", op->email_key);
    nf_metrics_counter_add(ctx->m_login[AUTH_LOGIN_OK], 1);
    nf_log_kv(NF_LOG_INFO, "login", "user signed in", "user_id", op->user_id, "client_addr",
              op->addr, NULL);
    audit_login(op, "succeeded");

    out = nf_json_obj();
    nf_json_add_str(out, "user_id", op->user_id);
    nf_json_add_str(out, "email", op->email);
    nf_json_add_str(out, "session_token", op->token);
    nf_json_add_str(out, "expires_at", expires_at);
    if (auth_session_cookie(cookie, sizeof(cookie), op->token, ctx->cfg->session_ttl_s,
                            ctx->cfg->cookie_secure) == 0)
        nf_http_set_header(op->req, "Set-Cookie", cookie);
    sodium_memzero(cookie, sizeof(cookie));
    nf_http_set_header(op->req, "Cache-Control", "no-store");
    nf_http_reply_json(op->req, 200, out); /* out consumed; the token is now only there */
    login_free(op);
}

static void login_verified(int rc, const char *unused, void *arg)
{
    struct auth_login_op *op = arg;
    char hash[NF_SHA256_HEX_LEN + 1], ttl[16];
    const char *params[4];

    free_secret(op->password);
    op->password = NULL;
    if (rc == AUTH_HASH_CANCELLED || op->ctx->closing) {
        login_unavailable(op, "cannot sign in now, try again");
        return;
    }
    if (rc != AUTH_HASH_OK || op->dummy || op->user_id[0] == '\0') {
        login_fail(op);
        return;
    }
    auth_session_token_new(op->token);
    nf_crypto_sha256_hex(op->token, AUTH_SESSION_TOKEN_LEN, hash);
    snprintf(ttl, sizeof(ttl), "%d", op->ctx->cfg->session_ttl_s);
    params[0] = hash;
    params[1] = op->user_id;
    params[2] = ttl;
    params[3] = op->addr;
    nf_pg_query(op->ctx->pg, session_sql, 4, params, session_made, op); /* copied */
}

static void user_found(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct auth_login_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    const char *hash = ctx->dummy_hash, *stored;

    if (!res) {
        nf_log_kv(NF_LOG_ERROR, "login_lookup_failed", "user lookup failed", "error", err, "pgcode",
                  pgcode, NULL);
        auth_backend_error(ctx, AUTH_BACKEND_PG);
        login_unavailable(op, "cannot sign in now, try again");
        return;
    }
    if (PQntuples(res) == 1) {
        snprintf(op->user_id, sizeof(op->user_id), "%s", nf_pg_val(res, 0, "user_id"));
        stored = nf_pg_val(res, 0, "password_hash");
        if (stored) /* NULL: a bootstrap user without a password verifies the dummy */
            hash = stored;
    }
    op->dummy = hash == ctx->dummy_hash; /* a match against it still fails */
    if (ctx->closing ||
        auth_hasher_verify(ctx->hasher, hash, op->password, login_verified, op) != 0)
        login_unavailable(op, "too many sign-ins in progress, try again");
}

static void login_checked(redisReply *reply, void *arg)
{
    struct auth_login_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    const char *params[1];

    if (ctx->closing || !reply || reply->type != REDIS_REPLY_ARRAY) {
        auth_backend_error(ctx, AUTH_BACKEND_REDIS);
        login_unavailable(op, "cannot sign in now, try again");
        return;
    }
    if (reply_int(reply, 2, 0) > 0) {
        nf_metrics_counter_add(ctx->m_login[AUTH_LOGIN_LIMITED], 1);
        nf_log_kv(NF_LOG_WARN, "login_limited", "too many failed logins", "client_addr", op->addr,
                  NULL);
        too_many(op->req, reply_int(reply, 2, 60), "failed sign-ins");
        login_free(op);
        return;
    }
    params[0] = op->email;
    nf_pg_query(ctx->pg, user_by_email_sql, 1, params, user_found, op);
}

void auth_account_login(struct nf_http_req *req, void *arg)
{
    struct auth_ctx *ctx = arg;
    struct auth_login_op *op;
    const char *password, *argv[4];
    char email_hash[NF_SHA256_HEX_LEN + 1], max_e[16], max_a[16];

    op = nf_xcalloc(1, sizeof(*op));
    if (read_credentials(req, op->email, sizeof(op->email), &password) != 0) {
        free(op);
        return;
    }
    if (strlen(password) > AUTH_PASSWORD_MAX) {
        nf_http_reply_error(req, 422, "invalid_params", "password",
                            "password must be at most 1024 bytes long");
        free(op);
        return;
    }
    op->ctx = ctx;
    op->req = req;
    op->password = dup_secret(password);
    snprintf(op->addr, sizeof(op->addr), "%s", auth_req_client_addr(req));
    nf_crypto_sha256_hex(op->email, strlen(op->email), email_hash);
    snprintf(op->email_key, sizeof(op->email_key), "auth:lf:email:%s", email_hash);
    snprintf(op->addr_key, sizeof(op->addr_key), "auth:lf:addr:%s", op->addr);
    snprintf(max_e, sizeof(max_e), "%d", ctx->cfg->login_max_failures);
    snprintf(max_a, sizeof(max_a), "%d", ctx->cfg->login_max_failures_addr);
    argv[0] = op->email_key;
    argv[1] = op->addr_key;
    argv[2] = max_e;
    argv[3] = max_a;
    nf_redis_eval(ctx->redis, ctx->lf_check, login_checked, op, 2, 4, argv, NULL);
}

/* ---- logout ---------------------------------------------------------------------------- */

struct logout_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
    char hash[NF_SHA256_HEX_LEN + 1];
};

static void logged_out_reply(struct auth_ctx *ctx, struct nf_http_req *req)
{
    char cookie[256];

    if (auth_session_cookie(cookie, sizeof(cookie), NULL, 0, ctx->cfg->cookie_secure) == 0)
        nf_http_set_header(req, "Set-Cookie", cookie);
    nf_http_reply_raw(req, 204, NULL, NULL, 0);
}

static void tombstoned(redisReply *reply, void *arg)
{
    struct logout_op *op = arg;

    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        auth_unavailable(op->ctx, op->req, AUTH_BACKEND_REDIS, "cannot sign out now, try again");
    } else {
        logged_out_reply(op->ctx, op->req);
    }
    free(op);
}

static void session_deleted(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct logout_op *op = arg;

    if (!res || op->ctx->closing) {
        auth_unavailable(op->ctx, op->req, AUTH_BACKEND_PG, "cannot sign out now, try again");
        free(op);
        return;
    }
    /* the session is gone; its cached record must go too, before we answer */
    nf_redis_cmd(op->ctx->redis, tombstoned, op, "SET auth:session:%s %s EX %d", op->hash,
                 AUTH_TOMBSTONE, AUTH_CACHE_TTL_S);
}

void auth_account_logout(struct nf_http_req *req, void *arg)
{
    struct auth_ctx *ctx = arg;
    const char *hash = nf_http_req_header(req, "X-Nf-Session-Hash"), *params[1];
    struct logout_op *op;

    if (!auth_keys_hash_valid(hash)) { /* no session cookie: nothing to end */
        logged_out_reply(ctx, req);
        return;
    }
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    memcpy(op->hash, hash, NF_SHA256_HEX_LEN + 1);
    params[0] = op->hash;
    nf_pg_query(ctx->pg, logout_sql, 1, params, session_deleted, op);
}

/* ---- me -------------------------------------------------------------------------------- */

struct me_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
    struct auth_caller who;
};

static void me_found(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct me_op *op = arg;
    cJSON *out;

    if (!res) {
        auth_unavailable(op->ctx, op->req, AUTH_BACKEND_PG,
                         "the account store is unavailable, try again");
    } else if (PQntuples(res) != 1) {
        nf_http_reply_error(op->req, 404, "not_found", NULL, "no such user");
    } else {
        out = nf_json_obj();
        nf_json_add_str(out, "user_id", nf_pg_val(res, 0, "user_id"));
        nf_json_add_str(out, "email", nf_pg_val(res, 0, "email"));
        nf_json_add_str(out, "created_at", nf_pg_val(res, 0, "created_at"));
        nf_json_add_str(out, "auth_method", op->who.session ? "session" : "api_key");
        nf_json_add_str(out, "key_id", op->who.session ? NULL : op->who.key_id);
        nf_http_reply_json(op->req, 200, out); /* out consumed */
    }
    free(op);
}

void auth_account_me(struct nf_http_req *req, void *arg)
{
    struct auth_ctx *ctx = arg;
    struct me_op *op = nf_xcalloc(1, sizeof(*op));
    const char *params[1];

    if (!auth_req_caller(req, &op->who)) {
        free(op);
        return;
    }
    op->ctx = ctx;
    op->req = req;
    params[0] = op->who.user_id;
    nf_pg_query(ctx->pg, me_sql, 1, params, me_found, op);
}
