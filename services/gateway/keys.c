/*
 * API key authentication of the public routes (DESIGN §5).
 *
 *   headers --extract--> no key / bad format or checksum       -> 403 (offline, no backend)
 *           --sha256---> Redis GET auth:key:<hex>
 *                          hit, not expired                    -> next(principal)
 *                          hit, expired                        -> 403
 *                          miss / Redis down / bad record      -> nf-auth keys/verify
 *                             200 -> next(principal)   404 -> 403   down -> 503 Retry-After 1
 *
 * nf-auth fills the cache on a successful verify, so the gateway only reads it.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw.h"
#include "nf_event.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_redis.h"

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

/* Reads exactly `digits` decimal digits at *p into *v and advances *p. */
static bool read_num(const char **p, int digits, int *v)
{
    int i;

    *v = 0;
    for (i = 0; i < digits; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        *v = *v * 10 + ((*p)[i] - '0');
    }
    *p += digits;
    return true;
}

static bool expect(const char **p, const char *chars)
{
    if (**p == '\0' || !strchr(chars, **p))
        return false;
    (*p)++;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static long long days_from_civil(int y, int m, int d)
{
    long long era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

int gw_time_parse(const char *s, uint64_t *ms)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0, frac = 0, scale = 1000, sign = 0;
    long long t;
    const char *p = s;

    if (!s)
        return -1;
    if (!read_num(&p, 4, &y) || !expect(&p, "-") || !read_num(&p, 2, &mo) || !expect(&p, "-") ||
        !read_num(&p, 2, &d) || !expect(&p, "Tt ") || !read_num(&p, 2, &h) || !expect(&p, ":") ||
        !read_num(&p, 2, &mi) || !expect(&p, ":") || !read_num(&p, 2, &sec))
        return -1;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        for (; isdigit((unsigned char)*p); p++) {
            if (scale > 1) {
                scale /= 10;
                frac += (*p - '0') * scale;
            }
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
        if (!read_num(&p, 2, &oh) || !expect(&p, ":") || !read_num(&p, 2, &om) || oh > 23 ||
            om > 59)
            return -1;
    } else {
        return -1;
    }
    if (*p != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
        h > 23 || mi > 59 || sec > 60)
        return -1;
    t = days_from_civil(y, mo, d) * 86400 + (long long)h * 3600 + (long long)mi * 60 + sec;
    t -= (long long)sign * ((long long)oh * 3600 + (long long)om * 60);
    if (t < 0)
        return -1;
    *ms = (uint64_t)t * 1000 + (uint64_t)frac;
    return 0;
}

int gw_keys_parse_record(const char *json, size_t len, uint64_t now_ms, struct gw_principal *out)
{
    cJSON *rec = nf_json_parse(json, len);
    const cJSON *exp;
    const char *user_id, *key_id;
    uint64_t exp_ms;
    int rc = -1;

    if (!cJSON_IsObject(rec))
        goto done;
    user_id = nf_json_str(rec, "user_id");
    key_id = nf_json_str(rec, "key_id");
    if (!nf_id_valid("usr", user_id) || !nf_id_valid("key", key_id))
        goto done;
    exp = cJSON_GetObjectItemCaseSensitive(rec, "expires_at");
    if (exp && !cJSON_IsNull(exp)) {
        if (!cJSON_IsString(exp) || gw_time_parse(exp->valuestring, &exp_ms) != 0)
            goto done;
        if (exp_ms <= now_ms) {
            rc = -2;
            goto done;
        }
    }
    snprintf(out->user_id, sizeof(out->user_id), "%s", user_id);
    snprintf(out->key_id, sizeof(out->key_id), "%s", key_id);
    rc = 0;
done:
    cJSON_Delete(rec);
    return rc;
}

/* ---- the asynchronous check ------------------------------------------------------- */

/* One authentication in progress; freed by finish() or deny()/unavailable(). */
struct auth_op {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    gw_authed_fn next;
    char hash[NF_SHA256_HEX_LEN + 1];
};

static void deny(struct gw_ctx *ctx, struct nf_http_req *req, enum gw_auth_fail why)
{
    static const char *const msgs[GW_NAUTH_FAILS] = {
        "an API key is required (X-Nexa-Api-Key or Authorization: Bearer)",
        "the API key is malformed",
        "the API key is unknown, expired or revoked",
    };

    nf_metrics_counter_add(ctx->m_auth_fail[why], 1);
    nf_http_reply_error(req, 403, "forbidden", NULL, "%s", msgs[why]);
}

static void op_fail(struct auth_op *op, enum gw_auth_fail why)
{
    deny(op->ctx, op->req, why);
    free(op);
}

static void op_unavailable(struct auth_op *op)
{
    gw_reply_unavailable(op->req, 1, "authentication is temporarily unavailable");
    free(op);
}

static void op_finish(struct auth_op *op, const struct gw_principal *who)
{
    /* Rate limiting (GCRA per who->key_id, DESIGN §5) plugs in here, before next. */
    op->next(op->ctx, op->req, who);
    free(op);
}

static void verified(const struct nf_http_resp *resp, void *arg)
{
    struct auth_op *op = arg;
    struct gw_principal who;
    int rc;

    if (resp->status == 200) {
        rc = gw_keys_parse_record(resp->body, resp->len, nf_now_ms(), &who);
        if (rc == 0) {
            op_finish(op, &who);
            return;
        }
        if (rc == -2) {
            op_fail(op, GW_AUTH_UNKNOWN);
            return;
        }
        nf_log_error("auth_bad_answer", "nf-auth answered an unreadable key record");
    } else if (resp->status == 404) {
        op_fail(op, GW_AUTH_UNKNOWN);
        return;
    } else {
        nf_log_kv(NF_LOG_WARN, "auth_unavailable", "key verification failed", "error",
                  resp->error ? resp->error : "unexpected status", NULL);
    }
    gw_backend_error(op->ctx, GW_BACKEND_AUTH);
    op_unavailable(op);
}

static void verify(struct auth_op *op)
{
    char body[32 + NF_SHA256_HEX_LEN];
    int n = snprintf(body, sizeof(body), "{\"key_hash\":\"%s\"}", op->hash);

    if (op->ctx->closing) {
        op_unavailable(op);
        return;
    }
    if (nf_http_client_request(op->ctx->auth, "POST", "/internal/keys/verify", NULL, body,
                               (size_t)n, 0, verified, op) != 0) {
        gw_backend_error(op->ctx, GW_BACKEND_AUTH);
        op_unavailable(op);
    }
}

static void cached(redisReply *reply, void *arg)
{
    struct auth_op *op = arg;
    struct gw_principal who;
    int rc;

    if (op->ctx->closing) {
        op_unavailable(op);
        return;
    }
    if (reply && reply->type == REDIS_REPLY_STRING) {
        rc = gw_keys_parse_record(reply->str, reply->len, nf_now_ms(), &who);
        if (rc == 0) {
            op_finish(op, &who);
            return;
        }
        if (rc == -2) {
            op_fail(op, GW_AUTH_UNKNOWN);
            return;
        }
        nf_log_warn("auth_cache_bad", "unreadable auth:key record, asking nf-auth");
    } else if (!reply || reply->type == REDIS_REPLY_ERROR) {
        /* The cache is only a shortcut: nf-auth still knows the key. */
        gw_backend_error(op->ctx, GW_BACKEND_REDIS);
    }
    verify(op);
}

void gw_keys_auth(struct gw_ctx *ctx, struct nf_http_req *req, gw_authed_fn next)
{
    char key[NF_APIKEY_LEN + 1];
    struct auth_op *op;
    int rc;

    rc = gw_keys_extract(nf_http_req_header(req, "X-Nexa-Api-Key"),
                         nf_http_req_header(req, "Authorization"), key);
    if (rc != GW_KEY_OK) {
        deny(ctx, req, rc == GW_KEY_MISSING ? GW_AUTH_MISSING : GW_AUTH_MALFORMED);
        return;
    }
    op = calloc(1, sizeof(*op));
    if (!op)
        abort();
    op->ctx = ctx;
    op->req = req;
    op->next = next;
    nf_crypto_sha256_hex(key, NF_APIKEY_LEN, op->hash);
    explicit_bzero(key, sizeof(key));
    /* cb fires exactly once, possibly right away when Redis is disconnected */
    nf_redis_cmd(ctx->redis, cached, op, "GET auth:key:%s", op->hash);
}
