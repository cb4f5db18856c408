/*
 * Job documents built by the gateway (docs/internals.md "Job events in detail"): the job
 * object answered by the API and stored as the snapshot's doc, and the data of the
 * forge.job.requested event. Pure functions.
 */
#include <stdlib.h>

#include "gw.h"
#include "nf_event.h"
#include "nf_json.h"

static void add_copy(cJSON *dst, const cJSON *req, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(req, key);
    cJSON *c = it ? cJSON_Duplicate(it, true) : cJSON_CreateNull();

    if (!c || !cJSON_AddItemToObject(dst, key, c)) /* c is now owned by dst */
        abort();
}

static void add_null(cJSON *dst, const char *key)
{
    if (!cJSON_AddNullToObject(dst, key))
        abort();
}

cJSON *gw_job_new(const char *job_id, const char *job_type, const cJSON *req, uint64_t now_ms)
{
    char now[32];
    cJSON *job = nf_json_obj();

    nf_event_time(now_ms, now);
    nf_json_add_str(job, "job_id", job_id);
    nf_json_add_str(job, "job_type", job_type);
    nf_json_add_str(job, "status", "queued");
    add_copy(job, req, "params");
    add_copy(job, req, "metadata");
    add_copy(job, req, "priority");
    nf_json_add_int(job, "attempt", 1);
    add_copy(job, req, "max_attempts");
    add_copy(job, req, "timeout_seconds");
    add_copy(job, req, "gpu_type");
    add_copy(job, req, "gpu_count");
    add_copy(job, req, "labels");
    add_null(job, "worker_id");
    nf_json_add_int(job, "progress", 0);
    add_null(job, "result");
    add_null(job, "error");
    if (!cJSON_AddArrayToObject(job, "artifacts"))
        abort();
    nf_json_add_str(job, "cost_usd", "0.000000");
    if (!cJSON_AddFalseToObject(job, "cost_final"))
        abort();
    nf_json_add_str(job, "created_at", now);
    nf_json_add_str(job, "updated_at", now);
    add_null(job, "started_at");
    add_null(job, "finished_at");
    return job;
}

cJSON *gw_job_requested(const char *job_id, const char *user_id, const char *job_type,
                        const cJSON *req, uint64_t now_ms)
{
    char now[32];
    cJSON *data = nf_json_obj();

    nf_event_time(now_ms, now);
    nf_json_add_str(data, "job_id", job_id);
    nf_json_add_str(data, "user_id", user_id);
    nf_json_add_str(data, "job_type", job_type);
    add_copy(data, req, "params");
    add_copy(data, req, "metadata");
    add_copy(data, req, "priority");
    add_copy(data, req, "max_attempts");
    add_copy(data, req, "timeout_seconds");
    add_copy(data, req, "gpu_type");
    add_copy(data, req, "gpu_count");
    add_copy(data, req, "labels");
    nf_json_add_str(data, "created_at", now);
    if (cJSON_GetObjectItemCaseSensitive(req, "inputs"))
        add_copy(data, req, "inputs"); /* resolved by inputs.c */
    if (cJSON_GetObjectItemCaseSensitive(req, "models"))
        add_copy(data, req, "models"); /* the models named, resolved by inputs.c */
    return data;
}
