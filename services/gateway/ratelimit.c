/*
 * Per-key rate limits: GCRA (the generic cell rate algorithm) in one Redis Lua call that
 * also reads the credential's cached record, so authentication plus rate limiting cost the
 * gateway one round trip per request.
 *
 *   EVALSHA auth_rl  KEYS[1] = auth:key:<sha256> | auth:session:<sha256>
 *                    ARGV = default rate/min, default burst, record from nf-auth or ''
 *     record: ARGV[3], else GET KEYS[1] -> none: {0} (miss) | "revoked": {-1} | bad: {-2}
 *     id = record.key_id (API key) or record.user_id (session): gw:rl:<id>
 *     rate, burst = min(default, the record's own lower limits)
 *     now = Redis TIME (one clock for every gateway) ; tat = GET gw:rl:<id>
 *     allowed -> SET gw:rl:<id> new tat (PX until the burst is full again)
 *               + HSET auth:used <key_id> <ms> (nf-auth batches it into last_used_at)
 *     -> {1, record, allowed, now_us, old_tat_us, rate, burst}
 *
 * GCRA with emission interval T = 60 s / rate and capacity burst x T: a request at `now`
 * moves the theoretical arrival time tat to max(tat, now) + T and is allowed when that is
 * at most burst x T ahead of now. So `burst` requests may come at once, then one per T.
 * The gateway recomputes the decision and the header values from the script's inputs
 * with gw_rl_gcra, the pure function the unit tests pin down (integration tests check
 * that the Lua agrees with it).
 *
 * The script touches keys it was not given in KEYS (gw:rl:<id>, auth:used): fine on a
 * single Redis (our deployment); a Redis Cluster would need hash tags.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_log.h"
#include "nf_redis.h"

#define WINDOW_US 60000000LL /* rates are per minute */

const char gw_rl_lua[] =
    "local rec = ARGV[3]\n"
    "if rec == '' then\n"
    "  rec = redis.call('GET', KEYS[1])\n"
    "  if not rec then return {0} end\n"
    "end\n"
    "if rec == 'revoked' then return {-1} end\n"
    "local ok, d = pcall(cjson.decode, rec)\n"
    "if not ok or type(d) ~= 'table' then return {-2} end\n"
    "local id = d.key_id\n"
    "if type(id) ~= 'string' then id = d.user_id end\n"
    "if type(id) ~= 'string' then return {-2} end\n"
    "local rate = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local r = tonumber(d.rate_limit_per_minute)\n"
    "if r and r >= 1 and r < rate then rate = math.floor(r) end\n"
    "local b = tonumber(d.burst)\n"
    "if b and b >= 1 and b < burst then burst = math.floor(b) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local rl = 'gw:rl:' .. id\n"
    "local tat = tonumber(redis.call('GET', rl) or '0') or 0\n"
    "local T = math.ceil(60000000 / rate)\n"
    "local new = math.max(tat, now) + T\n"
    "local allowed = 0\n"
    "if new - now <= burst * T then\n"
    "  allowed = 1\n"
    "  redis.call('SET', rl, string.format('%.0f', new), 'PX',\n"
    "             math.ceil((new - now) / 1000) + 1000)\n"
    "  if type(d.key_id) == 'string' then\n"
    "    redis.call('HSET', 'auth:used', d.key_id, string.format('%.0f', math.floor(now / 1000)))\n"
    "  end\n"
    "end\n"
    "return {1, rec, allowed, string.format('%.0f', now), string.format('%.0f', tat), rate,\n"
    "        burst}\n";

/* ceil(a / b) for a >= 0, b > 0 */
static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

void gw_rl_gcra(int64_t now_us, int64_t tat_us, int rate_per_min, int burst, struct gw_rl *out)
{
    int64_t t, cap, base, next, ahead;

    if (rate_per_min < 1)
        rate_per_min = 1;
    if (burst < 1)
        burst = 1;
    t = ceil_div(WINDOW_US, rate_per_min);
    cap = (int64_t)burst * t;
    base = tat_us > now_us ? tat_us : now_us;
    next = base + t;
    out->limit = burst;
    out->rate_per_min = rate_per_min;
    if (next - now_us <= cap) {
        ahead = next - now_us;
        out->allowed = true;
        out->tat_us = next;
        out->remaining = (int)((cap - ahead) / t);
        out->reset_s = (int)ceil_div(ahead, 1000000);
        out->retry_after_s = 0;
    } else {
        ahead = base - now_us;
        out->allowed = false;
        out->tat_us = tat_us;
        out->remaining = 0;
        out->reset_s = (int)ceil_div(ahead, 1000000);
        out->retry_after_s = (int)ceil_div(next - now_us - cap, 1000000);
        if (out->retry_after_s < 1)
            out->retry_after_s = 1;
    }
}

void gw_rl_set_headers(struct nf_http_req *req, const struct gw_rl *rl)
{
    char v[64];

    snprintf(v, sizeof(v), "%d", rl->limit);
    nf_http_set_header(req, "RateLimit-Limit", v);
    snprintf(v, sizeof(v), "%d", rl->remaining);
    nf_http_set_header(req, "RateLimit-Remaining", v);
    snprintf(v, sizeof(v), "%d", rl->reset_s);
    nf_http_set_header(req, "RateLimit-Reset", v);
    snprintf(v, sizeof(v), "%d;w=60;burst=%d", rl->rate_per_min, rl->limit);
    nf_http_set_header(req, "RateLimit-Policy", v);
}

void gw_rl_reply_limited(struct nf_http_req *req, const struct gw_rl *rl)
{
    char v[16];

    snprintf(v, sizeof(v), "%d", rl->retry_after_s);
    nf_http_set_header(req, "Retry-After", v);
    nf_http_reply_error(req, 429, "rate_limited", NULL,
                        "rate limit exceeded (%d requests per minute, bursts of %d): retry "
                        "after %d s",
                        rl->rate_per_min, rl->limit, rl->retry_after_s);
}

/* Reads an integer (or a decimal string) element of the script's answer. */
static bool elem_int(const redisReply *reply, size_t i, int64_t *v)
{
    const redisReply *e;
    char buf[32], *end;

    if (i >= reply->elements)
        return false;
    e = reply->element[i];
    if (e->type == REDIS_REPLY_INTEGER) {
        *v = e->integer;
        return true;
    }
    if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len >= sizeof(buf))
        return false;
    memcpy(buf, e->str, e->len);
    buf[e->len] = '\0';
    *v = strtoll(buf, &end, 10);
    return *end == '\0';
}

int gw_rl_parse_reply(const redisReply *reply, struct gw_rl_reply *out)
{
    int64_t status, allowed, rate, burst;

    if (!reply || reply->type != REDIS_REPLY_ARRAY || !elem_int(reply, 0, &status))
        return -1;
    out->status = (int)status;
    if (status != 1)
        return status >= -2 && status <= 0 ? 0 : -1;
    if (reply->elements != 7 || reply->element[1]->type != REDIS_REPLY_STRING ||
        !elem_int(reply, 2, &allowed) || !elem_int(reply, 3, &out->now_us) ||
        !elem_int(reply, 4, &out->tat_us) || !elem_int(reply, 5, &rate) ||
        !elem_int(reply, 6, &burst) || rate < 1 || burst < 1 || rate > INT32_MAX ||
        burst > INT32_MAX)
        return -1;
    out->record = reply->element[1]->str;
    out->record_len = reply->element[1]->len;
    out->allowed = allowed == 1;
    out->rate_per_min = (int)rate;
    out->burst = (int)burst;
    return 0;
}

int gw_rl_init(struct gw_ctx *ctx)
{
    ctx->auth_rl = nf_redis_script_new(ctx->svc->redis, gw_rl_lua);
    return ctx->auth_rl ? 0 : -1;
}
