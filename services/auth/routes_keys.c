/*
 * The caller's API keys: /api/auth/api-keys (forwarded by the gateway with the caller in
 * trusted headers; a session or an API key may call). Another user's key is 404.
 *
 *   POST   {name, expires_in_days?, rate_limit_per_minute?, burst?}
 *     shape (422) -> nexa_ key (random), SHA-256, prefix
 *     -> tx: lock the user row; INSERT only while the user has < max live keys (409)
 *     -> forge.auth.key_created -> 201 with api_key (the only time it is shown)
 *   GET    -> the caller's keys, live first then newest first, no secret (hash never read)
 *   DELETE /{key_id}
 *     -> UPDATE revoked_at (404 unknown or another user's; already revoked: 204 again)
 *     -> forge.auth.key_revoked (first time only)
 *     -> SET auth:key:<hash> "revoked" EX 300: every gateway refuses the key from its next
 *        request on (the tombstone also beats a verify that raced the revocation)
 *     -> 204 once the tombstone is written (Redis down: 503, retrying writes it again)
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

#define DAYS_MAX 3650
#define RATE_MAX 1000000

static const char lock_sql[] = "SELECT user_id FROM auth.users WHERE user_id = $1 FOR UPDATE";

/* $1 key_id $2 user_id $3 name $4 hash $5 prefix $6 days $7 rate $8 burst $9 max */
static const char create_sql[] =
    "INSERT INTO auth.api_keys"
    " (key_id, user_id, name, key_hash, prefix, expires_at, rate_limit_per_minute, burst)"
    " SELECT $1, u.user_id, $3, $4, $5,"
    "  CASE WHEN $6::int IS NULL THEN NULL ELSE now() + make_interval(days => $6::int) END,"
    "  $7::int, $8::int"
    " FROM auth.users u WHERE u.user_id = $2"
    "  AND (SELECT count(*) FROM auth.api_keys k WHERE k.user_id = $2 AND k.revoked_at IS NULL"
    "       AND (k.expires_at IS NULL OR k.expires_at > now())) < $9::int"
    " RETURNING auth.rfc3339(created_at) AS created_at, auth.rfc3339(expires_at) AS expires_at";

static const char list_sql[] =
    "SELECT key_id, prefix, name, auth.rfc3339(created_at) AS created_at,"
    " auth.rfc3339(expires_at) AS expires_at, auth.rfc3339(last_used_at) AS last_used_at,"
    " auth.rfc3339(revoked_at) AS revoked_at, rate_limit_per_minute, burst,"
    " CASE WHEN revoked_at IS NOT NULL THEN 'revoked'"
    "  WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired'"
    "  ELSE 'active' END AS status"
    " FROM auth.api_keys WHERE user_id = $1" /* at most 200: live first, then newest */
    " ORDER BY (revoked_at IS NULL) DESC, created_at DESC, key_id DESC LIMIT 200";

static const char revoke_sql[] =
    "WITH old AS (SELECT key_id, key_hash, revoked_at FROM auth.api_keys"
    "             WHERE key_id = $1 AND user_id = $2 FOR UPDATE),"
    " upd AS (UPDATE auth.api_keys k SET revoked_at = now() FROM old"
    "         WHERE k.key_id = old.key_id AND old.revoked_at IS NULL RETURNING k.revoked_at)"
    " SELECT old.key_hash, (SELECT auth.rfc3339(revoked_at) FROM upd) AS revoked_now FROM old";

/* ---- create ------------------------------------------------------------------------- */

struct create_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
    struct auth_caller who;
    char key_id[NF_ID_MAX];
    char name[AUTH_KEY_NAME_MAX + 1];
    char prefix[NF_APIKEY_DISPLAY_LEN + 1];
    char api_key[NF_APIKEY_LEN + 1]; /* the secret: answered once, then wiped */
    long long rate, burst;           /* 0: the gateway's default */
};

static void create_free(struct create_op *op)
{
    explicit_bzero(op->api_key, sizeof(op->api_key));
    free(op);
}

static void add_opt_int(cJSON *obj, const char *key, long long v)
{
    if (v > 0)
        nf_json_add_int(obj, key, v);
    else
        nf_json_add_str(obj, key, NULL);
}

static void created(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct create_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    const char *created_at, *expires_at;
    cJSON *out, *ev;

    if (!res) {
        nf_log_kv(NF_LOG_ERROR, "key_create_failed", "cannot create the key", "error", err,
                  "pgcode", pgcode, NULL);
        auth_unavailable(ctx, op->req, AUTH_BACKEND_PG, "the key store is unavailable, try again");
        create_free(op);
        return;
    }
    if (PQntuples(res) != 1) {
        nf_http_reply_error(op->req, 409, "too_many_keys", NULL,
                            "at most %d active API keys per user: revoke one first",
                            ctx->cfg->max_keys);
        create_free(op);
        return;
    }
    created_at = nf_pg_val(res, 0, "created_at");
    expires_at = nf_pg_val(res, 0, "expires_at");
    nf_metrics_counter_add(ctx->m_keys_created, 1);
    nf_log_kv(NF_LOG_INFO, "key_created", "api key created", "user_id", op->who.user_id, "key_id",
              op->key_id, "prefix", op->prefix, NULL);

    ev = nf_json_obj();
    nf_json_add_str(ev, "user_id", op->who.user_id);
    nf_json_add_str(ev, "key_id", op->key_id);
    nf_json_add_str(ev, "name", op->name);
    nf_json_add_str(ev, "prefix", op->prefix);
    nf_json_add_str(ev, "created_at", created_at);
    nf_json_add_str(ev, "expires_at", expires_at);
    nf_json_add_str(ev, "via", op->who.session ? "session" : "api_key");
    auth_audit(ctx, "key_created", op->who.user_id, ev); /* ev consumed */

    out = nf_json_obj();
    nf_json_add_str(out, "key_id", op->key_id);
    nf_json_add_str(out, "api_key", op->api_key);
    nf_json_add_str(out, "prefix", op->prefix);
    nf_json_add_str(out, "name", op->name);
    nf_json_add_str(out, "created_at", created_at);
    nf_json_add_str(out, "expires_at", expires_at);
    add_opt_int(out, "rate_limit_per_minute", op->rate);
    add_opt_int(out, "burst", op->burst);
    nf_http_set_header(op->req, "Cache-Control", "no-store");
    nf_http_reply_json(op->req, 201, out); /* out consumed */
    create_free(op);
}

/* Only these fields may be sent; anything else (user_id, key_id, ...) is refused. */
static int check_fields(const cJSON *body, struct nf_json_err *err)
{
    static const char *const allowed[] = {"name", "expires_in_days", "rate_limit_per_minute",
                                          "burst"};
    const cJSON *item;
    size_t i;

    cJSON_ArrayForEach(item, body)
    {
        for (i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
            if (strcmp(item->string, allowed[i]) == 0)
                break;
        if (i == sizeof(allowed) / sizeof(allowed[0]))
            return nf_json_fail(err, item->string,
                                "unknown field %.64s (allowed: name, expires_in_days, "
                                "rate_limit_per_minute, burst)",
                                item->string);
    }
    return 0;
}

void auth_apikeys_create(struct nf_http_req *req, void *arg)
{
    struct auth_ctx *ctx = arg;
    struct nf_json_err err = {{0}, {0}};
    struct create_op *op;
    const char *name = NULL, *params[9];
    char hash[NF_SHA256_HEX_LEN + 1], days_s[16], rate_s[16], burst_s[16], max_s[16];
    long long days = 0;
    struct nf_pg_stmt stmts[2];
    cJSON *body;

    op = nf_xcalloc(1, sizeof(*op));
    if (!auth_req_caller(req, &op->who)) {
        free(op);
        return;
    }
    body = nf_http_req_json(req); /* owned by req; on NULL it answered 400 */
    if (!body) {
        free(op);
        return;
    }
    if (check_fields(body, &err) != 0 || nf_json_get_str(body, "name", true, &name, &err) != 0 ||
        nf_json_get_int(body, "expires_in_days", false, 1, DAYS_MAX, &days, &err) < 0 ||
        nf_json_get_int(body, "rate_limit_per_minute", false, 1, RATE_MAX, &op->rate, &err) < 0 ||
        nf_json_get_int(body, "burst", false, 1, RATE_MAX, &op->burst, &err) < 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        free(op);
        return;
    }
    if (!auth_keys_name_valid(name)) {
        nf_http_reply_error(req, 422, "invalid_params", "name",
                            "name must be 1 to %d bytes of text without control characters",
                            AUTH_KEY_NAME_MAX);
        free(op);
        return;
    }
    op->ctx = ctx;
    op->req = req;
    snprintf(op->name, sizeof(op->name), "%s", name);
    nf_id_new("key", op->key_id, sizeof(op->key_id));
    nf_crypto_apikey_new(op->api_key);
    nf_crypto_sha256_hex(op->api_key, NF_APIKEY_LEN, hash);
    memcpy(op->prefix, op->api_key, NF_APIKEY_DISPLAY_LEN);
    op->prefix[NF_APIKEY_DISPLAY_LEN] = '\0';
    snprintf(days_s, sizeof(days_s), "%lld", days);
    snprintf(rate_s, sizeof(rate_s), "%lld", op->rate);
    snprintf(burst_s, sizeof(burst_s), "%lld", op->burst);
    snprintf(max_s, sizeof(max_s), "%d", ctx->cfg->max_keys);

    params[0] = op->key_id;
    params[1] = op->who.user_id;
    params[2] = op->name;
    params[3] = hash;
    params[4] = op->prefix;
    params[5] = days > 0 ? days_s : NULL;
    params[6] = op->rate > 0 ? rate_s : NULL;
    params[7] = op->burst > 0 ? burst_s : NULL;
    params[8] = max_s;
    /* the row lock serialises concurrent creations of one user, so the count holds */
    stmts[0] = (struct nf_pg_stmt){lock_sql, 1, params + 1};
    stmts[1] = (struct nf_pg_stmt){create_sql, 9, params};
    nf_pg_tx(ctx->pg, stmts, 2, created, op); /* copied */
}

/* ---- list --------------------------------------------------------------------------- */

struct list_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
};

static void add_pg_int(cJSON *obj, const PGresult *res, int row, const char *col)
{
    const char *v = nf_pg_val(res, row, col);

    if (v)
        nf_json_add_int(obj, col, strtoll(v, NULL, 10));
    else
        nf_json_add_str(obj, col, NULL);
}

static void listed(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    static const char *const cols[] = {"key_id",     "prefix",       "name",       "created_at",
                                       "expires_at", "last_used_at", "revoked_at", "status"};
    struct list_op *op = arg;
    cJSON *out, *data, *item;
    size_t c;
    int i;

    if (!res) {
        nf_log_kv(NF_LOG_ERROR, "key_list_failed", "cannot list keys", "error", err, "pgcode",
                  pgcode, NULL);
        auth_unavailable(op->ctx, op->req, AUTH_BACKEND_PG,
                         "the key store is unavailable, try again");
        free(op);
        return;
    }
    out = nf_json_obj();
    data = cJSON_AddArrayToObject(out, "data");
    if (!data)
        abort();
    for (i = 0; i < PQntuples(res); i++) {
        item = nf_json_obj();
        for (c = 0; c < sizeof(cols) / sizeof(cols[0]); c++)
            nf_json_add_str(item, cols[c], nf_pg_val(res, i, cols[c]));
        add_pg_int(item, res, i, "rate_limit_per_minute");
        add_pg_int(item, res, i, "burst");
        cJSON_AddItemToArray(data, item);
    }
    nf_http_reply_json(op->req, 200, out); /* out consumed */
    free(op);
}

void auth_apikeys_list(struct nf_http_req *req, void *arg)
{
    struct auth_ctx *ctx = arg;
    struct auth_caller who;
    struct list_op *op;
    const char *params[1];

    if (!auth_req_caller(req, &who))
        return;
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    params[0] = who.user_id;
    nf_pg_query(ctx->pg, list_sql, 1, params, listed, op);
}

/* ---- revoke ------------------------------------------------------------------------- */

struct revoke_op {
    struct auth_ctx *ctx;
    struct nf_http_req *req;
    struct auth_caller who;
    char key_id[NF_ID_MAX];
};

static void key_not_found(struct nf_http_req *req)
{
    nf_http_reply_error(req, 404, "not_found", "key_id", "no such API key");
}

static void tombstoned(redisReply *reply, void *arg)
{
    struct revoke_op *op = arg;

    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        nf_log_kv(NF_LOG_ERROR, "key_tombstone_failed",
                  "key revoked but its cache entry not replaced", "key_id", op->key_id, NULL);
        auth_unavailable(op->ctx, op->req, AUTH_BACKEND_REDIS,
                         "the key is revoked; repeat the request to confirm");
    } else {
        nf_http_reply_raw(op->req, 204, NULL, NULL, 0);
    }
    free(op);
}

static void revoked(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct revoke_op *op = arg;
    struct auth_ctx *ctx = op->ctx;
    const char *hash, *revoked_now;
    cJSON *ev;

    if (!res) {
        nf_log_kv(NF_LOG_ERROR, "key_revoke_failed", "cannot revoke the key", "error", err,
                  "pgcode", pgcode, NULL);
        auth_unavailable(ctx, op->req, AUTH_BACKEND_PG, "the key store is unavailable, try again");
        free(op);
        return;
    }
    if (PQntuples(res) != 1) { /* unknown, or another user's: the same answer */
        key_not_found(op->req);
        free(op);
        return;
    }
    hash = nf_pg_val(res, 0, "key_hash");
    revoked_now = nf_pg_val(res, 0, "revoked_now");
    if (revoked_now) { /* the first revocation: report it once */
        nf_metrics_counter_add(ctx->m_keys_revoked, 1);
        nf_log_kv(NF_LOG_INFO, "key_revoked", "api key revoked", "user_id", op->who.user_id,
                  "key_id", op->key_id, NULL);
        ev = nf_json_obj();
        nf_json_add_str(ev, "user_id", op->who.user_id);
        nf_json_add_str(ev, "key_id", op->key_id);
        nf_json_add_str(ev, "revoked_at", revoked_now);
        nf_json_add_str(ev, "by_key_id", op->who.session ? NULL : op->who.key_id);
        auth_audit(ctx, "key_revoked", op->who.user_id, ev); /* ev consumed */
    }
    if (ctx->closing || !hash || !auth_keys_hash_valid(hash)) {
        auth_reply_unavailable(op->req, "the key is revoked; repeat the request to confirm");
        free(op);
        return;
    }
    /* overwrite (no NX): a cached live record must not survive the revocation */
    nf_redis_cmd(ctx->redis, tombstoned, op, "SET auth:key:%s %s EX %d", hash, AUTH_TOMBSTONE,
                 AUTH_CACHE_TTL_S);
}

void auth_apikeys_revoke(struct nf_http_req *req, void *arg)
{
    struct auth_ctx *ctx = arg;
    const char *key_id = nf_http_req_param(req, "key_id"), *params[2];
    struct revoke_op *op;

    op = nf_xcalloc(1, sizeof(*op));
    if (!auth_req_caller(req, &op->who)) {
        free(op);
        return;
    }
    if (!nf_id_valid("key", key_id)) {
        key_not_found(req);
        free(op);
        return;
    }
    op->ctx = ctx;
    op->req = req;
    snprintf(op->key_id, sizeof(op->key_id), "%s", key_id);
    params[0] = op->key_id;
    params[1] = op->who.user_id;
    nf_pg_query(ctx->pg, revoke_sql, 2, params, revoked, op);
}
