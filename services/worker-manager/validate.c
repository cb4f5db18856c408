/*
 * Pure parsing and matching for the worker-manager: registration bodies, dispatch
 * envelopes, job requirements. No I/O here, so all of it is unit tested.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nf_event.h"
#include "nf_str.h"
#include "wm.h"

#define HOSTNAME_MAX 255
#define GPU_TYPE_MAX 64
#define VERSION_MAX 64
#define LABEL_KEY_MAX 63
#define LABEL_VAL_MAX 255
#define GPU_COUNT_MAX 16

void wm_worker_clear(struct wm_worker *w)
{
    if (w == NULL)
        return;
    free(w->hostname);
    free(w->gpu_type);
    free(w->version);
    cJSON_Delete(w->labels);
    memset(w, 0, sizeof(*w));
}

/* Printable ASCII without control characters: what we accept in names we log. */
static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return false;
    return true;
}

static int get_short_str(const cJSON *body, const char *key, bool required, size_t maxlen,
                         const char **out, struct nf_json_err *err)
{
    int rc = nf_json_get_str(body, key, required, out, err);
    if (rc != 0)
        return rc;
    if (strlen(*out) > maxlen)
        return nf_json_fail(err, key, "%s must be at most %zu characters", key, maxlen);
    if (!printable(*out))
        return nf_json_fail(err, key, "%s must not contain control characters", key);
    return 0;
}

static int parse_labels(const cJSON *body, cJSON **out, struct nf_json_err *err)
{
    const cJSON *labels = NULL;
    int rc = nf_json_get_obj(body, "labels", false, &labels, err);
    if (rc < 0)
        return -1;
    cJSON *copy = nf_json_obj();
    if (rc == NF_JSON_ABSENT) {
        *out = copy;
        return 0;
    }
    int n = 0;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, labels)
    {
        char param[128];
        snprintf(param, sizeof(param), "labels.%.100s", it->string);
        if (++n > WM_MAX_LABELS) {
            cJSON_Delete(copy);
            return nf_json_fail(err, "labels", "labels must have at most %d entries",
                                WM_MAX_LABELS);
        }
        size_t klen = strlen(it->string);
        if (klen == 0 || klen > LABEL_KEY_MAX || !printable(it->string)) {
            cJSON_Delete(copy);
            return nf_json_fail(err, param, "label names must be 1 to %d printable characters",
                                LABEL_KEY_MAX);
        }
        if (!cJSON_IsString(it) || strlen(it->valuestring) > LABEL_VAL_MAX ||
            !printable(it->valuestring)) {
            cJSON_Delete(copy);
            return nf_json_fail(err, param, "%s must be a string of at most %d characters", param,
                                LABEL_VAL_MAX);
        }
        if (cJSON_GetObjectItemCaseSensitive(copy, it->string) != NULL) {
            cJSON_Delete(copy);
            return nf_json_fail(err, param, "%s is given twice", param);
        }
        nf_json_add_str(copy, it->string, it->valuestring);
    }
    *out = copy;
    return 0;
}

int wm_register_parse(const cJSON *body, struct wm_worker *w, struct nf_json_err *err)
{
    const char *s = NULL;
    long long n = 0;
    int rc;

    if (!cJSON_IsObject(body))
        return nf_json_fail(err, "", "body must be a JSON object");

    if (get_short_str(body, "hostname", true, HOSTNAME_MAX, &s, err) != 0)
        return -1;
    if (*s == '\0')
        return nf_json_fail(err, "hostname", "hostname must not be empty");
    w->hostname = nf_xstrdup(s);

    s = "";
    if (get_short_str(body, "gpu_type", false, GPU_TYPE_MAX, &s, err) < 0)
        return -1;
    w->gpu_type = nf_xstrdup(s);

    n = 0;
    if (nf_json_get_int(body, "gpu_count", false, 0, GPU_COUNT_MAX, &n, err) < 0)
        return -1;
    w->gpu_count = (int)n;

    const cJSON *types = NULL;
    if (nf_json_get_arr(body, "job_types", true, &types, err) != 0)
        return -1;
    w->types = 0;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, types)
    {
        int idx = cJSON_IsString(it) ? nf_job_type_index(it->valuestring) : -1;
        if (idx < 0)
            return nf_json_fail(err, "job_types",
                                "job_types must list only generate, audit, distill, train, "
                                "evaluate, deploy");
        w->types |= 1u << idx;
    }
    if (w->types == 0)
        return nf_json_fail(err, "job_types", "job_types must not be empty");

    if (parse_labels(body, &w->labels, err) < 0)
        return -1;

    s = "";
    rc = get_short_str(body, "version", false, VERSION_MAX, &s, err);
    if (rc < 0)
        return -1;
    w->version = nf_xstrdup(s);
    return 0;
}

void wm_types_join(unsigned types, char *out, size_t outlen)
{
    size_t off = 0;
    if (outlen == 0)
        return;
    out[0] = '\0';
    for (int i = 0; i < NF_NJOB_TYPES; i++) {
        if (!(types & (1u << i)))
            continue;
        int w = snprintf(out + off, outlen - off, "%s%s", off ? "," : "", nf_job_types[i]);
        if (w < 0 || (size_t)w >= outlen - off)
            return;
        off += (size_t)w;
    }
}

int wm_types_parse(const char *s, unsigned *types)
{
    unsigned mask = 0;
    char name[32];
    while (s != NULL && *s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len == 0 || len >= sizeof(name))
            return -1;
        memcpy(name, s, len);
        name[len] = '\0';
        int idx = nf_job_type_index(name);
        if (idx < 0)
            return -1;
        mask |= 1u << idx;
        s = end ? end + 1 : NULL;
    }
    *types = mask;
    return 0;
}

bool wm_job_matches(const struct wm_worker *w, const cJSON *job)
{
    const cJSON *gt = cJSON_GetObjectItemCaseSensitive(job, "gpu_type");
    if (cJSON_IsString(gt) && gt->valuestring[0] != '\0' &&
        strcmp(gt->valuestring, w->gpu_type ? w->gpu_type : "") != 0)
        return false;
    const cJSON *gc = cJSON_GetObjectItemCaseSensitive(job, "gpu_count");
    if (cJSON_IsNumber(gc) && gc->valuedouble > (double)w->gpu_count)
        return false;
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(job, "labels");
    if (cJSON_IsObject(labels)) {
        const cJSON *it = NULL;
        cJSON_ArrayForEach(it, labels)
        {
            const cJSON *have =
                w->labels ? cJSON_GetObjectItemCaseSensitive(w->labels, it->string) : NULL;
            if (have == NULL || !cJSON_IsString(have) || !cJSON_IsString(it) ||
                strcmp(have->valuestring, it->valuestring) != 0)
                return false;
        }
    }
    return true;
}

void wm_dispatch_clear(struct wm_dispatch *d)
{
    if (d == NULL)
        return;
    cJSON_Delete(d->ev);
    memset(d, 0, sizeof(*d));
}

int wm_dispatch_parse(const char *payload, size_t len, struct wm_dispatch *d, const char **why)
{
    const char *type = NULL, *subject = NULL, *msg = NULL;
    struct wm_dispatch out = {0};

    out.ev = nf_json_parse(payload, len);
    if (out.ev == NULL || !cJSON_IsObject(out.ev)) {
        *why = "not a JSON object";
        goto fail;
    }
    out.data = nf_event_data(out.ev, &type, &subject, &msg);
    if (out.data == NULL) {
        *why = "not a CloudEvents envelope";
        goto fail;
    }
    if (type == NULL || strcmp(type, "forge.job.dispatch") != 0) {
        *why = "not a forge.job.dispatch event";
        goto fail;
    }
    out.job_id = nf_json_str(out.data, "job_id");
    if (out.job_id == NULL || !nf_id_valid("job", out.job_id)) {
        *why = "job_id missing or malformed";
        goto fail;
    }
    out.type = nf_job_type_index(nf_json_str(out.data, "job_type"));
    if (out.type < 0) {
        *why = "job_type missing or unknown";
        goto fail;
    }
    const cJSON *prio = cJSON_GetObjectItemCaseSensitive(out.data, "priority");
    if (prio != NULL && !cJSON_IsNull(prio)) {
        if (!cJSON_IsNumber(prio) || prio->valuedouble < 0 || prio->valuedouble > 9 ||
            prio->valuedouble != (double)(int)prio->valuedouble) {
            *why = "priority must be an integer 0..9";
            goto fail;
        }
        out.priority = (int)prio->valuedouble;
    }
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(out.data, "attempt");
    if (!cJSON_IsNumber(att) || att->valuedouble < 1 || att->valuedouble > 1000000 ||
        att->valuedouble != (double)(long long)att->valuedouble) {
        *why = "attempt must be an integer >= 1";
        goto fail;
    }
    out.attempt = (long long)att->valuedouble;
    const cJSON *gc = cJSON_GetObjectItemCaseSensitive(out.data, "gpu_count");
    if (gc != NULL && !cJSON_IsNull(gc) && !cJSON_IsNumber(gc)) {
        *why = "gpu_count must be a number";
        goto fail;
    }
    const cJSON *gt = cJSON_GetObjectItemCaseSensitive(out.data, "gpu_type");
    if (gt != NULL && !cJSON_IsNull(gt) && !cJSON_IsString(gt)) {
        *why = "gpu_type must be a string";
        goto fail;
    }
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(out.data, "labels");
    if (labels != NULL && !cJSON_IsNull(labels)) {
        if (!cJSON_IsObject(labels)) {
            *why = "labels must be an object";
            goto fail;
        }
        const cJSON *it = NULL;
        cJSON_ArrayForEach(it, labels)
        {
            if (!cJSON_IsString(it)) {
                *why = "label values must be strings";
                goto fail;
            }
        }
    }
    *d = out;
    return 0;
fail:
    cJSON_Delete(out.ev);
    return -1;
}

const char *wm_bearer(const char *header)
{
    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
        return NULL;
    header += 7;
    while (*header == ' ')
        header++;
    return *header ? header : NULL;
}

const char *wm_worker_status(uint64_t now_ms, uint64_t last_seen_ms, int heartbeat_s, bool draining,
                             size_t njobs)
{
    uint64_t limit = (uint64_t)(heartbeat_s > 0 ? heartbeat_s : 1) * 3000;
    if (last_seen_ms == 0 || (now_ms > last_seen_ms && now_ms - last_seen_ms > limit))
        return "lost";
    if (draining)
        return "draining";
    return njobs > 0 ? "busy" : "idle";
}

uint64_t wm_reap_hold(uint64_t now_ms, uint64_t prev_tick_ms, uint64_t hold_until_ms,
                      const struct wm_config *cfg)
{
    uint64_t stall = (uint64_t)cfg->reap_interval_ms + (uint64_t)cfg->heartbeat_s * 1000;
    uint64_t hold = now_ms + (uint64_t)cfg->lease_ttl_s * 1000;
    /* a clock stepped back (now < prev) is not a stall */
    bool silent = prev_tick_ms == 0 || (now_ms > prev_tick_ms && now_ms - prev_tick_ms > stall);
    return silent && hold > hold_until_ms ? hold : hold_until_ms;
}

/* The job event types an agent publishes itself (the others belong to the services). */
static const char *const worker_event_types[] = {
    "forge.job.running", "forge.job.progress",  "forge.job.log",    "forge.job.succeeded",
    "forge.job.failed",  "forge.job.cancelled", "forge.job.metric",
};

#define REPORT_ID_MAX 128

int wm_report_parse(const cJSON *body, enum wm_report_kind kind, const char *worker_id,
                    struct wm_report *out, struct nf_json_err *err)
{
    const char *s = NULL;
    const cJSON *ev = NULL, *data = NULL;
    long long attempt = 0;

    if (nf_json_get_str(body, "lease_id", true, &s, err) != 0)
        return -1;
    if (!nf_id_valid("lse", s))
        return nf_json_fail(err, "lease_id", "lease_id must be a lease id");
    out->lease_id = s;
    if (nf_json_get_obj(body, "event", true, &ev, err) != 0)
        return -1;
    if (nf_json_get_str(ev, "specversion", true, &s, err) != 0 || strcmp(s, "1.0") != 0)
        return nf_json_fail(err, "event.specversion", "event.specversion must be \"1.0\"");
    if (nf_json_get_str(ev, "id", true, &s, err) != 0 || *s == '\0' || strlen(s) > REPORT_ID_MAX ||
        !printable(s))
        return nf_json_fail(err, "event.id", "event.id must be 1 to %d printable characters",
                            REPORT_ID_MAX);
    const char *type = NULL, *subject = NULL;
    if (nf_json_get_str(ev, "type", true, &type, err) != 0)
        return nf_json_fail(err, "event.type", "event.type must be a string");
    if (nf_json_get_str(ev, "subject", true, &subject, err) != 0)
        return nf_json_fail(err, "event.subject", "event.subject must be a string");
    if (nf_json_get_obj(ev, "data", true, &data, err) != 0)
        return nf_json_fail(err, "event.data", "event.data must be an object");
    if (nf_json_get_str(data, "job_id", true, &s, err) != 0 || !nf_id_valid("job", s))
        return nf_json_fail(err, "event.data.job_id", "event.data.job_id must be a job id");
    out->job_id = s;
    if (nf_json_get_int(data, "attempt", true, 1, 1000000, &attempt, err) != 0)
        return nf_json_fail(err, "event.data.attempt",
                            "event.data.attempt must be an integer >= 1");
    out->attempt = attempt;

    if (kind == WM_REPORT_EVENT) {
        if (nf_str_index(worker_event_types,
                         sizeof(worker_event_types) / sizeof(worker_event_types[0]), type) < 0)
            return nf_json_fail(err, "event.type",
                                "event.type must be forge.job.running, progress, log, "
                                "succeeded, failed or cancelled");
        if (strcmp(subject, out->job_id) != 0)
            return nf_json_fail(err, "event.subject", "event.subject must equal data.job_id");
    } else {
        if (strcmp(type, "forge.usage.recorded") != 0)
            return nf_json_fail(err, "event.type", "event.type must be forge.usage.recorded");
        if (nf_json_get_str(data, "worker_id", true, &s, err) != 0 || worker_id == NULL ||
            strcmp(s, worker_id) != 0)
            return nf_json_fail(err, "event.data.worker_id",
                                "event.data.worker_id must be the reporting worker");
        if (nf_json_get_str(data, "user_id", true, &s, err) != 0 || strcmp(subject, s) != 0)
            return nf_json_fail(err, "event.subject", "event.subject must equal data.user_id");
    }
    out->event = ev;
    return 0;
}
