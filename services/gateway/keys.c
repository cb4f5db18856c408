/*
 * Authentication of the public routes (DESIGN §5): an API key (X-Nexa-Api-Key or
 * Authorization: Bearer) or, failing that, the dashboard's nf_session cookie.
 *
 *   headers --extract--> no credential / bad format or checksum    -> 403 (offline)
 *           --sha256---> EVALSHA auth_rl (ratelimit.c): ONE round trip reads the cached
 *                        record auth:key|session:<hex> and applies GCRA on gw:rl:<id>
 *                          found, not expired, allowed            -> RateLimit-*, next()
 *                          found, not expired, over the limit     -> 429 Retry-After
 *                          found, expired / tombstone "revoked"   -> 403
 *                          miss / unreadable record               -> nf-auth verify
 *                             200 -> EVALSHA again with that record (rate limit) -> next
 *                             404 -> 403        down -> 503 Retry-After 1
 *                          Redis down                             -> nf-auth verify
 *                             200 -> next without a rate limit (counted; fail open)
 *
 * nf-auth fills the cache on a successful verify and writes the tombstone on revocation
 * and logout, so a revoked credential is refused by every gateway from the next request.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw.h"
#include "nf_event.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_redis.h"
#include "nf_time.h"

/* ---- pure helpers ----------------------------------------------------------------- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* The key inside s without surrounding blanks: *start, and the length (0 when blank). */
static size_t trim(const char *s, const char **start)
{
    size_t n;

    while (is_blank(*s))
        s++;
    n = strlen(s);
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    *start = s;
    return n;
}

int gw_keys_extract(const char *x_api_key, const char *authorization, char out[NF_APIKEY_LEN + 1])
{
    char key[NF_APIKEY_LEN + 1];
    const char *s = NULL;
    size_t n = 0;

    if (x_api_key)
        n = trim(x_api_key, &s);
    if (n == 0 && authorization) {
        const char *a;
        size_t an = trim(authorization, &a);

        /* "Bearer <key>"; the scheme is case-insensitive (RFC 7235). a[0..an) has no
         * trailing blanks, so only the blanks after the scheme remain to skip. */
        if (an > 7 && strncasecmp(a, "Bearer", 6) == 0 && is_blank(a[6])) {
            s = a + 6;
            n = an - 6;
            while (n > 0 && is_blank(*s)) {
                s++;
                n--;
            }
        }
    }
    if (n == 0)
        return GW_KEY_MISSING;
    if (n != NF_APIKEY_LEN)
        return GW_KEY_MALFORMED;
    memcpy(key, s, n);
    key[n] = '\0';
    if (!nf_crypto_apikey_valid(key))
        return GW_KEY_MALFORMED;
    memcpy(out, key, n + 1);
    return GW_KEY_OK;
}

static bool session_token_valid(const char *s, size_t n)
{
    size_t plen = strlen(GW_SESSION_PREFIX), i;

    if (n != GW_SESSION_TOKEN_LEN || strncmp(s, GW_SESSION_PREFIX, plen) != 0)
        return false;
    for (i = plen; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_'))
            return false;
    return true;
}

int gw_keys_bearer_session(const char *authorization, char out[GW_SESSION_TOKEN_LEN + 1])
{
    const char *a;
    size_t n = authorization ? trim(authorization, &a) : 0;

    if (n <= 7 || strncasecmp(a, "Bearer", 6) != 0 || !is_blank(a[6]))
        return GW_KEY_MISSING;
    a += 6;
    n -= 6;
    while (n > 0 && is_blank(*a)) {
        a++;
        n--;
    }
    if (!session_token_valid(a, n))
        return GW_KEY_MALFORMED;
    memcpy(out, a, n);
    out[n] = '\0';
    return GW_KEY_OK;
}

int gw_keys_session_cookie(const char *cookie, char out[GW_SESSION_TOKEN_LEN + 1])
{
    size_t name_len = strlen(GW_SESSION_COOKIE), n;
    const char *p = cookie, *end, *v;
    bool seen = false;

    if (!cookie)
        return GW_KEY_MISSING;
    while (*p) {
        /* one "name=value" pair up to the next ';' */
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        if ((size_t)(end - p) > name_len && strncmp(p, GW_SESSION_COOKIE, name_len) == 0 &&
            p[name_len] == '=') {
            v = p + name_len + 1;
            n = (size_t)(end - v);
            while (n > 0 && is_blank(v[n - 1]))
                n--;
            if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
                v++;
                n -= 2;
            }
            if (n > 0) {
                if (session_token_valid(v, n)) {
                    memcpy(out, v, n);
                    out[n] = '\0';
                    return GW_KEY_OK;
                }
                seen = true; /* keep looking: another one may be valid */
            }
        }
        p = end;
    }
    return seen ? GW_KEY_MALFORMED : GW_KEY_MISSING;
}

int gw_keys_parse_record(const char *json, size_t len, uint64_t now_ms, bool session,
                         struct gw_principal *out)
{
    cJSON *rec = nf_json_parse(json, len);
    const cJSON *exp;
    const char *user_id, *key_id;
    int64_t exp_ms;
    int rc = -1;

    if (!cJSON_IsObject(rec))
        goto done;
    user_id = nf_json_str(rec, "user_id");
    key_id = nf_json_str(rec, "key_id");
    if (!nf_id_valid("usr", user_id) || (session ? key_id != NULL : !nf_id_valid("key", key_id)))
        goto done;
    exp = cJSON_GetObjectItemCaseSensitive(rec, "expires_at");
    if (exp && !cJSON_IsNull(exp)) {
        if (!cJSON_IsString(exp) ||
            nf_time_parse_rfc3339(exp->valuestring, NF_TIME_LAX, &exp_ms) != 0)
            goto done;
        if ((uint64_t)exp_ms <= now_ms) {
            rc = -2;
            goto done;
        }
    }
    snprintf(out->user_id, sizeof(out->user_id), "%s", user_id);
    snprintf(out->key_id, sizeof(out->key_id), "%s", session ? "" : key_id);
    out->session = session;
    rc = 0;
done:
    cJSON_Delete(rec);
    return rc;
}

/* ---- the asynchronous check ------------------------------------------------------- */

/* One authentication in progress; freed by op_done() on every path. */
struct auth_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    gw_authed_fn next;
    bool session;
    char hash[NF_SHA256_HEX_LEN + 1];
    char cache_key[32 + NF_SHA256_HEX_LEN]; /* auth:key:<hash> or auth:session:<hash> */
    char *record;                           /* nf-auth's answer, for the second script run */
    size_t record_len;
};

static void op_done(struct auth_op *op)
{
    free(op->record);
    free(op);
}

static void deny(struct gw_ctx *ctx, struct nf_http_req *req, enum gw_auth_fail why, bool session)
{
    static const char *const msgs[GW_NAUTH_FAILS] = {
        "an API key is required (X-Nexa-Api-Key or Authorization: Bearer)",
        "the API key is malformed",
        "the API key is unknown, expired or revoked",
    };

    nf_metrics_counter_add(ctx->m_auth_fail[why], 1);
    if (session && why == GW_AUTH_UNKNOWN)
        nf_http_reply_error(req, 403, "forbidden", NULL,
                            "the session has ended or is unknown: sign in again");
    else if (session && why == GW_AUTH_MALFORMED)
        nf_http_reply_error(req, 403, "forbidden", NULL, "the session cookie is malformed");
    else
        nf_http_reply_error(req, 403, "forbidden", NULL, "%s", msgs[why]);
}

static void op_fail(struct auth_op *op, enum gw_auth_fail why)
{
    deny(op->ctx, op->req, why, op->session);
    op_done(op);
}

static void op_unavailable(struct auth_op *op)
{
    gw_reply_unavailable(op->req, 1, "authentication is temporarily unavailable");
    op_done(op);
}

static void run_script(struct auth_op *op);

/* Redis could not rate-limit: serve the request (fail open) rather than refuse everyone
 * while Redis is away; the snapshot and job routes report Redis trouble themselves. */
static void finish_unlimited(struct auth_op *op, const struct gw_principal *who)
{
    nf_metrics_counter_add(op->ctx->m_rl_skipped, 1);
    op->next(op->ctx, op->req, who);
    op_done(op);
}

static void verified(const struct nf_http_resp *resp, void *arg)
{
    struct auth_op *op = arg;
    struct gw_principal who;
    int rc;

    if (op->ctx->svc->closing) {
        op_unavailable(op);
        return;
    }
    if (resp->status == 200) {
        rc = gw_keys_parse_record(resp->body, resp->len, nf_now_ms(), op->session, &who);
        if (rc == 0) {
            nf_metrics_counter_add(op->ctx->m_auth_source[GW_AUTH_FETCHED], 1);
            op->record = nf_xmalloc(resp->len + 1);
            memcpy(op->record, resp->body, resp->len);
            op->record[resp->len] = '\0';
            op->record_len = resp->len;
            run_script(op); /* the rate limit, with this record */
            return;
        }
        if (rc == -2) {
            op_fail(op, GW_AUTH_UNKNOWN);
            return;
        }
        nf_log_error("auth_bad_answer", "nf-auth answered an unreadable credential record");
    } else if (resp->status == 404) {
        op_fail(op, GW_AUTH_UNKNOWN);
        return;
    } else {
        nf_log_kv(NF_LOG_WARN, "auth_unavailable", "credential verification failed", "error",
                  resp->error ? resp->error : "unexpected status", NULL);
    }
    gw_backend_error(op->ctx, GW_BACKEND_AUTH);
    op_unavailable(op);
}

static void verify(struct auth_op *op)
{
    char body[32 + NF_SHA256_HEX_LEN];
    int n = snprintf(body, sizeof(body), "{\"%s\":\"%s\"}", op->session ? "token_hash" : "key_hash",
                     op->hash);

    if (op->ctx->svc->closing) {
        op_unavailable(op);
        return;
    }
    if (nf_http_client_request(op->ctx->auth, "POST",
                               op->session ? "/internal/sessions/verify" : "/internal/keys/verify",
                               NULL, body, (size_t)n, 0, verified, op) != 0) {
        gw_backend_error(op->ctx, GW_BACKEND_AUTH);
        op_unavailable(op);
    }
}

/* A record came back with the rate-limit decision: check it, then let the request in or
 * answer 429. */
static void decide(struct auth_op *op, const struct gw_rl_reply *r)
{
    struct gw_principal who;
    struct gw_rl rl;
    int rc;

    rc = gw_keys_parse_record(r->record, r->record_len, nf_now_ms(), op->session, &who);
    if (rc == -2) {
        op_fail(op, GW_AUTH_UNKNOWN);
        return;
    }
    if (rc != 0) {
        if (op->record) { /* nf-auth's own record, refused by the script's reader */
            op_unavailable(op);
            return;
        }
        nf_log_warn("auth_cache_bad", "unreadable cached credential record, asking nf-auth");
        verify(op);
        return;
    }
    if (!op->record)
        nf_metrics_counter_add(op->ctx->m_auth_source[GW_AUTH_CACHED], 1);
    gw_rl_gcra(r->now_us, r->tat_us, r->rate_per_min, r->burst, &rl);
    if (rl.allowed != r->allowed) {
        /* Redis decided and stored; the headers follow its decision */
        nf_log_warn("ratelimit_disagree", "lua and c gcra disagree");
        rl.allowed = r->allowed;
        if (!rl.allowed) {
            rl.remaining = 0;
            if (rl.retry_after_s < 1)
                rl.retry_after_s = 1;
        }
    }
    gw_rl_set_headers(op->req, &rl);
    if (!rl.allowed) {
        nf_metrics_counter_add(op->ctx->m_rate_limited, 1);
        gw_rl_reply_limited(op->req, &rl);
        op_done(op);
        return;
    }
    op->next(op->ctx, op->req, &who);
    op_done(op);
}

static void scripted(redisReply *reply, void *arg)
{
    struct auth_op *op = arg;
    struct gw_rl_reply r;
    struct gw_principal who;

    if (op->ctx->svc->closing) {
        op_unavailable(op);
        return;
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR || gw_rl_parse_reply(reply, &r) != 0) {
        if (reply && reply->type == REDIS_REPLY_ERROR)
            nf_log_kv(NF_LOG_ERROR, "auth_script_failed", "the auth script failed", "error",
                      reply->str, NULL);
        gw_backend_error(op->ctx, GW_BACKEND_REDIS);
        /* the cache is only a shortcut: nf-auth still knows the credential */
        if (!op->record) {
            verify(op);
            return;
        }
        if (gw_keys_parse_record(op->record, op->record_len, nf_now_ms(), op->session, &who) == 0) {
            finish_unlimited(op, &who);
            return;
        }
        op_fail(op, GW_AUTH_UNKNOWN);
        return;
    }
    switch (r.status) {
    case 1:
        decide(op, &r);
        return;
    case -1:
        nf_metrics_counter_add(op->ctx->m_auth_source[GW_AUTH_REVOKED], 1);
        op_fail(op, GW_AUTH_UNKNOWN);
        return;
    default:              /* 0 not cached, -2 unreadable */
        if (op->record) { /* we gave it nf-auth's record: that cannot be "not cached" */
            op_unavailable(op);
            return;
        }
        verify(op);
        return;
    }
}

static void run_script(struct auth_op *op)
{
    const struct gw_config *cfg = op->ctx->cfg;
    char rate[16], burst[16];
    const char *argv[4];
    size_t lens[4];

    snprintf(rate, sizeof(rate), "%d", cfg->rate_per_min);
    snprintf(burst, sizeof(burst), "%d", cfg->rate_burst);
    argv[0] = op->cache_key;
    argv[1] = rate;
    argv[2] = burst;
    argv[3] = op->record ? op->record : "";
    lens[0] = strlen(op->cache_key);
    lens[1] = strlen(rate);
    lens[2] = strlen(burst);
    lens[3] = op->record ? op->record_len : 0;
    /* cb fires exactly once, possibly right away when Redis is disconnected */
    nf_redis_eval(op->ctx->svc->redis, op->ctx->auth_rl, scripted, op, 1, 4, argv, lens);
}

void gw_keys_auth(struct gw_ctx *ctx, struct nf_http_req *req, gw_authed_fn next)
{
    char key[NF_APIKEY_LEN + 1], token[GW_SESSION_TOKEN_LEN + 1];
    struct auth_op *op;
    bool session = false;
    int rc;

    rc = gw_keys_extract(nf_http_req_header(req, "X-Nexa-Api-Key"),
                         nf_http_req_header(req, "Authorization"), key);
    if (rc == GW_KEY_MALFORMED && !nf_http_req_header(req, "X-Nexa-Api-Key") &&
        gw_keys_bearer_session(nf_http_req_header(req, "Authorization"), token) == GW_KEY_OK) {
        rc = GW_KEY_OK; /* a dashboard session token sent as a bearer token */
        session = true;
    } else if (rc == GW_KEY_MISSING) {
        rc = gw_keys_session_cookie(nf_http_req_header(req, "Cookie"), token);
        session = rc != GW_KEY_MISSING;
    }
    if (rc != GW_KEY_OK) {
        deny(ctx, req, rc == GW_KEY_MISSING ? GW_AUTH_MISSING : GW_AUTH_MALFORMED, session);
        return;
    }
    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    op->req = req;
    op->next = next;
    op->session = session;
    if (session) {
        nf_crypto_sha256_hex(token, GW_SESSION_TOKEN_LEN, op->hash);
        explicit_bzero(token, sizeof(token));
    } else {
        nf_crypto_sha256_hex(key, NF_APIKEY_LEN, op->hash);
        explicit_bzero(key, sizeof(key));
    }
    snprintf(op->cache_key, sizeof(op->cache_key), "auth:%s:%s", session ? "session" : "key",
             op->hash);
    run_script(op);
}
