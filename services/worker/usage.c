/*
 * Usage records (forge.usage.recorded). Each record's envelope id is derived from
 * (job, attempt, meter, window), so an event published twice - a retry after a lost
 * delivery report, an agent restart - is the same event to billing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "wk.h"

void wk_usage_id(const char *job_id, long long attempt, const char *meter, long long window,
                 char out[WK_USAGE_ID_LEN + 1])
{
    nf_event_id(out, WK_USAGE_ID_LEN + 1, "use", "%s:%lld:%s:%lld", job_id, attempt, meter, window);
}

uint64_t wk_gpu_ms(uint64_t wall_ms, int gpu_count)
{
    return gpu_count > 0 ? wall_ms * (uint64_t)gpu_count : 0;
}

char *wk_usage_event(const struct nf_usage *u, const char *source)
{
    cJSON *ev = nf_event_usage(u, source);
    char *text = nf_json_print(ev);
    cJSON_Delete(ev);
    return text;
}

void wk_serving_usage_id(const char *job_id, const char *meter, long long window,
                         char out[WK_USAGE_ID_LEN + 1])
{
    nf_event_id(out, WK_USAGE_ID_LEN + 1, "use", "%s:serving:%s:%lld", job_id, meter, window);
}

char *wk_serving_event(const struct nf_usage *u, const char *dep_id, const char *source)
{
    char id[WK_USAGE_ID_LEN + 1];
    cJSON *ev = nf_event_usage(u, source);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");

    wk_serving_usage_id(u->job_id, u->meter, u->window, id);
    if (!cJSON_ReplaceItemInObjectCaseSensitive(ev, "id", cJSON_CreateString(id)) ||
        !cJSON_ReplaceItemInObjectCaseSensitive(data, "attempt", cJSON_CreateNull()))
        abort();
    nf_json_add_str(data, "deployment_id", dep_id);
    char *text = nf_json_print(ev);
    cJSON_Delete(ev);
    return text;
}

bool wk_deployment_id_valid(const char *s)
{
    if (s == NULL || strncmp(s, "dep-", 4) != 0 || strlen(s) != 16)
        return false;
    for (const char *c = s + 4; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}
