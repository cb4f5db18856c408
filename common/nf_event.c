/*
 * nf_event: building and checking CloudEvents 1.0 envelopes; their times come from
 * nf_time.
 */
#include "nf_event.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_crypto.h"
#include "nf_id.h"
#include "nf_json.h"
#include "nf_time.h"

void nf_event_time(uint64_t ms, char out[32])
{
    nf_time_format_rfc3339(ms > INT64_MAX ? INT64_MAX : (int64_t)ms, out);
}

/*
 * Fields in the order of the CloudEvents spec. A NULL subject is left out (the spec makes
 * it optional) although every topic of ours sets it; NULL data becomes {}.
 */
cJSON *nf_event_new(const char *type, const char *source, const char *subject, const char *id,
                    cJSON *data)
{
    char idbuf[NF_ID_MAX], ts[32];
    cJSON *ev = nf_json_obj();

    if (!id) {
        nf_id_new("evt", idbuf, sizeof(idbuf));
        id = idbuf;
    }
    nf_event_time(nf_now_ms(), ts);
    nf_json_add_str(ev, "specversion", "1.0");
    nf_json_add_str(ev, "id", id);
    nf_json_add_str(ev, "source", source);
    nf_json_add_str(ev, "type", type);
    nf_json_add_str(ev, "time", ts);
    if (subject)
        nf_json_add_str(ev, "subject", subject);
    nf_json_add_str(ev, "datacontenttype", "application/json");
    if (!data)
        data = nf_json_obj();
    if (!cJSON_AddItemToObject(ev, "data", data)) /* data is now owned by ev */
        abort();                                  /* only out of memory gets here */
    return ev;
}

void nf_event_id(char *out, size_t outlen, const char *prefix, const char *fmt, ...)
{
    char key[256], hex[NF_SHA256_HEX_LEN + 1];
    va_list ap;
    int n;

    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    n = vsnprintf(key, sizeof(key), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(key))
        n = (int)sizeof(key) - 1;
    nf_crypto_sha256_hex(key, (size_t)n, hex);
    snprintf(out, outlen, "%s_%.32s", prefix, hex);
}

cJSON *nf_event_usage(const struct nf_usage *u, const char *source)
{
    char id[NF_EVENT_ID_MAX], start[32], end[32];
    cJSON *data = nf_json_obj();

    nf_event_id(id, sizeof(id), "use", "%s:%lld:%s:%lld", u->job_id, u->attempt, u->meter,
                u->window);
    nf_event_time(u->start_ms, start);
    nf_event_time(u->end_ms, end);
    nf_json_add_str(data, "user_id", u->user_id);
    nf_json_add_str(data, "job_id", u->job_id);
    nf_json_add_str(data, "job_type", u->job_type);
    nf_json_add_int(data, "attempt", u->attempt);
    if (u->worker_id)
        nf_json_add_str(data, "worker_id", u->worker_id);
    nf_json_add_str(data, "meter", u->meter);
    nf_json_add_int(data, "quantity", u->quantity);
    nf_json_add_str(data, "window_start", start);
    nf_json_add_str(data, "window_end", end);
    return nf_event_new("forge.usage.recorded", source, u->user_id ? u->user_id : "", id, data);
}

/* true when key holds a non-empty string. */
static bool has_str(const cJSON *ev, const char *key)
{
    const char *s = nf_json_str(ev, key);

    return s && s[0] != '\0';
}

/*
 * Required: specversion "1.0", non-empty id, source, type and subject, and an object in
 * data. time and datacontenttype, when present, must be strings. The out-parameters
 * (each may be NULL) are set only on success; *msg only on failure.
 */
const cJSON *nf_event_data(const cJSON *ev, const char **type, const char **subject,
                           const char **msg)
{
    const cJSON *data = NULL, *it;
    const char *why = NULL;

    if (!cJSON_IsObject(ev))
        why = "event is not a JSON object";
    else if (!nf_json_str(ev, "specversion") || strcmp(nf_json_str(ev, "specversion"), "1.0") != 0)
        why = "specversion must be \"1.0\"";
    else if (!has_str(ev, "id"))
        why = "id must be a non-empty string";
    else if (!has_str(ev, "source"))
        why = "source must be a non-empty string";
    else if (!has_str(ev, "type"))
        why = "type must be a non-empty string";
    else if (!has_str(ev, "subject"))
        why = "subject must be a non-empty string";
    if (!why) {
        it = cJSON_GetObjectItemCaseSensitive(ev, "time");
        if (it && !cJSON_IsString(it))
            why = "time must be a string";
        it = cJSON_GetObjectItemCaseSensitive(ev, "datacontenttype");
        if (it && !cJSON_IsString(it))
            why = "datacontenttype must be a string";
    }
    if (!why) {
        data = cJSON_GetObjectItemCaseSensitive(ev, "data");
        if (!cJSON_IsObject(data))
            why = "data must be an object";
    }
    if (why) {
        if (msg)
            *msg = why;
        return NULL;
    }
    if (type)
        *type = nf_json_str(ev, "type");
    if (subject)
        *subject = nf_json_str(ev, "subject");
    return data;
}
