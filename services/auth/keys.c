/*
 * Pure helpers of nf-auth: key hash, e-mail, key name and password checks, the cache
 * records, session tokens and cookies, the login delay. No I/O, so every rule is
 * unit-tested.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "nf_json.h"
#include "nf_str.h"

bool auth_keys_hash_valid(const char *hash)
{
    size_t i;

    if (!hash)
        return false;
    for (i = 0; i < NF_SHA256_HEX_LEN; i++)
        if (!((hash[i] >= '0' && hash[i] <= '9') || (hash[i] >= 'a' && hash[i] <= 'f')))
            return false; /* also stops at a NUL of a short string */
    return hash[NF_SHA256_HEX_LEN] == '\0';
}

int auth_keys_email_normalize(const char *in, char *out, size_t outlen)
{
    const char *end, *at = NULL, *dot;
    size_t n, i;

    if (!in)
        return -1;
    while (*in == ' ' || *in == '\t' || *in == '\r' || *in == '\n')
        in++;
    end = in + strlen(in);
    while (end > in && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
        end--;
    n = (size_t)(end - in);
    if (n == 0 || n > AUTH_EMAIL_MAX || n >= outlen)
        return -1;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];

        if (c <= 0x20 || c == 0x7f)
            return -1;
        if (c == '@') {
            if (at)
                return -1; /* more than one '@' */
            at = out + i;
        }
        out[i] = (char)tolower(c);
    }
    out[n] = '\0';
    if (!at || at == out || at[1] == '\0')
        return -1;
    dot = strchr(at + 1, '.');
    /* a dot inside the domain: not first, not last */
    if (!dot || dot == at + 1 || out[n - 1] == '.')
        return -1;
    return 0;
}

int auth_keys_cache_ttl(long long secs_left)
{
    if (secs_left < 0)
        return AUTH_CACHE_TTL_S;
    if (secs_left < AUTH_CACHE_TTL_S)
        return (int)secs_left;
    return AUTH_CACHE_TTL_S;
}

char *auth_keys_record(const char *key_id, const char *user_id, const char *expires_at,
                       int rate_limit_per_minute, int burst)
{
    cJSON *rec = nf_json_obj();
    char *s;

    nf_json_add_str(rec, "key_id", key_id);
    nf_json_add_str(rec, "user_id", user_id);
    nf_json_add_str(rec, "expires_at", expires_at);
    if (rate_limit_per_minute > 0)
        nf_json_add_int(rec, "rate_limit_per_minute", rate_limit_per_minute);
    if (burst > 0)
        nf_json_add_int(rec, "burst", burst);
    s = nf_json_print(rec);
    cJSON_Delete(rec);
    return s;
}

char *auth_session_record(const char *user_id, const char *expires_at)
{
    cJSON *rec = nf_json_obj();
    char *s;

    nf_json_add_str(rec, "user_id", user_id);
    nf_json_add_str(rec, "expires_at", expires_at);
    s = nf_json_print(rec);
    cJSON_Delete(rec);
    return s;
}

long auth_utf8_len(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    long count = 0;
    size_t left, n;

    if (!s)
        return -1;
    for (left = strlen(s); left > 0; left -= n, p += n, count++) {
        n = nf_utf8_seq(p, left, NULL);
        if (n == 0)
            return -1;
    }
    return count;
}

/* true when s holds a C0 control character, DEL or a C1 control character. */
static bool has_control(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t left, n;
    uint32_t cp;

    for (left = strlen(s); left > 0; left -= n, p += n) {
        n = nf_utf8_seq(p, left, &cp);
        if (n == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return true;
    }
    return false;
}

bool auth_keys_name_valid(const char *name)
{
    size_t n;

    if (!name)
        return false;
    n = strlen(name);
    return n >= 1 && n <= AUTH_KEY_NAME_MAX && auth_utf8_len(name) > 0 && !has_control(name);
}

const char *auth_password_problem(const char *password, const char *email)
{
    long chars;

    if (!password)
        return "password is required";
    if (strlen(password) > AUTH_PASSWORD_MAX)
        return "password must be at most 1024 bytes long";
    chars = auth_utf8_len(password);
    if (chars < 0)
        return "password must be valid UTF-8";
    if (chars < AUTH_PASSWORD_MIN)
        return "password must be at least 10 characters long";
    if (has_control(password))
        return "password must not contain control characters";
    if (email && strcasecmp(password, email) == 0)
        return "password must not be the e-mail address";
    return NULL;
}

void auth_session_token_new(char out[AUTH_SESSION_TOKEN_LEN + 1])
{
    size_t plen = strlen(AUTH_SESSION_PREFIX);

    snprintf(out, AUTH_SESSION_TOKEN_LEN + 1, "%s", AUTH_SESSION_PREFIX);
    nf_crypto_token(32, out + plen, AUTH_SESSION_TOKEN_LEN + 1 - plen);
}

bool auth_session_token_valid(const char *token)
{
    size_t plen = strlen(AUTH_SESSION_PREFIX), i;

    if (!token || strncmp(token, AUTH_SESSION_PREFIX, plen) != 0)
        return false;
    for (i = plen; i < AUTH_SESSION_TOKEN_LEN; i++) {
        char c = token[i];

        if (!(isalnum((unsigned char)c) || c == '-' || c == '_'))
            return false; /* also stops at the NUL of a short token */
    }
    return token[AUTH_SESSION_TOKEN_LEN] == '\0';
}

int auth_session_cookie(char *out, size_t outlen, const char *token, int max_age_s, bool secure)
{
    int n = snprintf(out, outlen, "%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax%s",
                     AUTH_SESSION_COOKIE, token ? token : "", token ? max_age_s : 0,
                     secure ? "; Secure" : "");

    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

int auth_login_delay_ms(long long failures, int base_ms)
{
    if (failures <= 0 || base_ms <= 0)
        return 0;
    if (failures > AUTH_LOGIN_DELAY_STEPS)
        failures = AUTH_LOGIN_DELAY_STEPS;
    return (int)failures * base_ms;
}
