/*
 * nf_event: building and checking CloudEvents 1.0 envelopes, and the wall-clock helpers
 * every event (and every job timestamp) uses.
 */
#include "nf_event.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nf_id.h"
#include "nf_json.h"

uint64_t nf_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void nf_event_time(uint64_t ms, char out[32])
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    size_t n;

    gmtime_r(&sec, &tm);
    n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
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
