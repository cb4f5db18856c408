/*
 * Pure helpers of nf-auth: key hash and e-mail checks, the cache lifetime of a key record
 * and its JSON. No I/O, so every rule is unit-tested.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_json.h"

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

char *auth_keys_record(const char *key_id, const char *user_id, const char *expires_at)
{
    cJSON *rec = nf_json_obj();
    char *s;

    nf_json_add_str(rec, "key_id", key_id);
    nf_json_add_str(rec, "user_id", user_id);
    nf_json_add_str(rec, "expires_at", expires_at);
    s = nf_json_print(rec);
    cJSON_Delete(rec);
    return s;
}
