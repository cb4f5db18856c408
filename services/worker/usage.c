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
    char buf[256], hex[NF_SHA256_HEX_LEN + 1];
    int n = snprintf(buf, sizeof(buf), "%s:%lld:%s:%lld", job_id, attempt, meter, window);
    if (n < 0 || (size_t)n >= sizeof(buf))
        n = (int)sizeof(buf) - 1; /* ids are short; a cut key is still deterministic */
    nf_crypto_sha256_hex(buf, (size_t)n, hex);
    memcpy(out, "use_", 4);
    memcpy(out + 4, hex, 32);
    out[WK_USAGE_ID_LEN] = '\0';
}

uint64_t wk_gpu_ms(uint64_t wall_ms, int gpu_count)
{
    return gpu_count > 0 ? wall_ms * (uint64_t)gpu_count : 0;
}

char *wk_usage_event(const struct wk_usage *u, const char *source)
{
    char id[WK_USAGE_ID_LEN + 1], start[32], end[32];
    wk_usage_id(u->job_id, u->attempt, u->meter, u->window, id);
    nf_event_time(u->start_ms, start);
    nf_event_time(u->end_ms, end);

    cJSON *data = nf_json_obj();
    nf_json_add_str(data, "user_id", u->user_id);
    nf_json_add_str(data, "job_id", u->job_id);
    nf_json_add_str(data, "job_type", u->job_type);
    nf_json_add_int(data, "attempt", u->attempt);
    nf_json_add_str(data, "worker_id", u->worker_id);
    nf_json_add_str(data, "meter", u->meter);
    nf_json_add_int(data, "quantity", u->quantity);
    nf_json_add_str(data, "window_start", start);
    nf_json_add_str(data, "window_end", end);
    cJSON *ev =
        nf_event_new("forge.usage.recorded", source, u->user_id ? u->user_id : "", id, data);
    char *text = nf_json_print(ev);
    cJSON_Delete(ev);
    return text;
}
