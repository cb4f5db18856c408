/*
 * The agent's configuration table and the parsing of its composite values (API URL,
 * labels, job types).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wk.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

#define OPT(env, type, def, min, max, secret, field, help)                                         \
    {                                                                                              \
        env, type, def, min, max, secret, offsetof(struct wk_config, field), help                  \
    }

const char *const wk_job_types[WK_NJOB_TYPES] = {"generate", "audit",    "distill",
                                                 "train",    "evaluate", "deploy"};

const struct nf_cfg_opt wk_cfg_opts[] = {
    OPT("NF_API_URL", NF_CFG_STR, "http://127.0.0.1:8000", 8, 0, false, api_url,
        "the API base URL the agent registers and polls at (http only)"),
    OPT("NF_WORKER_REGISTRATION_TOKEN", NF_CFG_STR, NULL, 16, 0, true, reg_token,
        "operator secret presented at registration"),
    OPT("NF_KAFKA_BROKERS", NF_CFG_STR, "127.0.0.1:9092", 0, 0, false, brokers,
        "Kafka bootstrap servers (job events and usage are published directly); empty = "
        "no Kafka: report through POST /api/workers/events and /usage"),
    OPT("NF_WORKER_HANDLERS", NF_CFG_STR, NF_SOURCE_DIR "/handlers", 1, 0, false, handlers,
        "directory holding one executable per job type"),
    OPT("NF_WORKER_ARTIFACT_ROOT", NF_CFG_STR, NULL, 1, 0, false, artifact_root,
        "directory under which each job gets <job_id>/ for its artifacts"),
    OPT("NF_WORKER_SLOTS", NF_CFG_INT, "1", 1, 64, false, slots, "jobs run at the same time"),
    OPT("NF_WORKER_GPU_TYPE", NF_CFG_STR, "", 0, 0, false, gpu_type,
        "GPU model advertised to the scheduler (empty = none)"),
    OPT("NF_WORKER_GPU_COUNT", NF_CFG_INT, "1", 0, 16, false, gpu_count,
        "GPUs advertised (jobs ask for 1 by default)"),
    OPT("NF_WORKER_JOB_TYPES", NF_CFG_STR, "generate,audit,distill,train,evaluate,deploy", 1, 0,
        false, job_types, "comma-separated job types this agent runs"),
    OPT("NF_WORKER_LABELS", NF_CFG_STR, "", 0, 0, false, labels,
        "labels jobs can require, k=v,k2=v2"),
    OPT("NF_WORKER_HOSTNAME", NF_CFG_STR, "", 0, 0, false, hostname,
        "hostname reported at registration (empty = the system's)"),
    OPT("NF_WORKER_POLL_WAIT_S", NF_CFG_INT, "20", 0, 30, false, poll_wait_s,
        "long-poll wait for next_job"),
    OPT("NF_WORKER_DRAIN_TIMEOUT_S", NF_CFG_INT, "60", 0, 86400, false, drain_timeout_s,
        "on SIGTERM, how long running jobs may finish before they are terminated"),
    OPT("NF_WORKER_KILL_GRACE_S", NF_CFG_INT, "10", 1, 300, false, kill_grace_s,
        "seconds between SIGTERM and SIGKILL for a handler"),
    OPT("NF_WORKER_USAGE_WINDOW_S", NF_CFG_INT, "60", 1, 3600, false, usage_window_s,
        "GPU time is metered in windows of this many seconds"),
    OPT("NF_WORKER_PROGRESS_INTERVAL_MS", NF_CFG_INT, "500", 0, 60000, false, progress_ms,
        "at most one progress event per job per this interval"),
    OPT("NF_WORKER_ID", NF_CFG_STR, "", 0, 64, false, worker_id,
        "a pre-registered worker id to run as (with NF_WORKER_TOKEN); empty = register"),
    OPT("NF_WORKER_TOKEN", NF_CFG_STR, "", 0, 256, true, worker_token,
        "the worker token of NF_WORKER_ID"),
};
const size_t wk_cfg_nopts = sizeof(wk_cfg_opts) / sizeof(wk_cfg_opts[0]);

int wk_job_type_index(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < WK_NJOB_TYPES; i++)
        if (strcmp(name, wk_job_types[i]) == 0)
            return i;
    return -1;
}

int wk_parse_url(const char *url, char **host, int *port, char **prefix)
{
    const char *p, *host_end, *path;
    long n = 80;

    if (url == NULL || strncmp(url, "http://", 7) != 0)
        return -1;
    p = url + 7;
    path = strchr(p, '/');
    if (path == NULL)
        path = p + strlen(p);
    host_end = memchr(p, ':', (size_t)(path - p));
    if (host_end != NULL) {
        char *end = NULL;
        if (host_end + 1 == path)
            return -1;
        n = strtol(host_end + 1, &end, 10);
        if (end != path || n < 1 || n > 65535)
            return -1;
    } else {
        host_end = path;
    }
    if (host_end == p)
        return -1;
    for (const char *c = p; c < host_end; c++)
        if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-' && *c != '_')
            return -1;
    if (strpbrk(path, "?#") != NULL)
        return -1;
    size_t plen = strlen(path);
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    *host = nf_xstrndup(p, (size_t)(host_end - p));
    *port = (int)n;
    *prefix = nf_xstrndup(path, plen);
    return 0;
}

/* Trims spaces at both ends of [s, s+len) in place by moving the bounds. */
static void trim(const char **s, size_t *len)
{
    while (*len > 0 && isspace((unsigned char)**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && isspace((unsigned char)(*s)[*len - 1]))
        (*len)--;
}

int wk_parse_labels(const char *s, cJSON **out, char *err, size_t errlen)
{
    cJSON *labels = nf_json_obj();
    while (s != NULL && *s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *item = s;
        trim(&item, &len);
        s = end ? end + 1 : NULL;
        if (len == 0)
            continue;
        const char *eq = memchr(item, '=', len);
        if (eq == NULL || eq == item) {
            snprintf(err, errlen, "NF_WORKER_LABELS: items must be key=value (got \"%.*s\")",
                     (int)len, item);
            goto fail;
        }
        const char *key = item, *val = eq + 1;
        size_t klen = (size_t)(eq - item), vlen = len - klen - 1;
        trim(&key, &klen);
        trim(&val, &vlen);
        if (klen == 0 || klen > 63 || vlen > 255) {
            snprintf(err, errlen, "NF_WORKER_LABELS: keys are 1..63 and values 0..255 chars");
            goto fail;
        }
        char *k = nf_xstrndup(key, klen), *v = nf_xstrndup(val, vlen);
        bool dup = cJSON_GetObjectItemCaseSensitive(labels, k) != NULL;
        if (!dup)
            nf_json_add_str(labels, k, v);
        if (dup)
            snprintf(err, errlen, "NF_WORKER_LABELS: key \"%s\" is given twice", k);
        free(k);
        free(v);
        if (dup)
            goto fail;
    }
    *out = labels;
    return 0;
fail:
    cJSON_Delete(labels);
    return -1;
}

int wk_parse_types(const char *s, unsigned *mask)
{
    unsigned m = 0;
    while (s != NULL && *s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *item = s;
        trim(&item, &len);
        s = end ? end + 1 : NULL;
        if (len == 0)
            continue;
        char name[16];
        if (len >= sizeof(name))
            return -1;
        memcpy(name, item, len);
        name[len] = '\0';
        int idx = wk_job_type_index(name);
        if (idx < 0)
            return -1;
        m |= 1u << idx;
    }
    if (m == 0)
        return -1;
    *mask = m;
    return 0;
}

int wk_config_load(struct wk_config *cfg, struct wk_settings *set, char *err, size_t errlen)
{
    if (nf_cfg_load(wk_cfg_opts, wk_cfg_nopts, cfg, err, errlen) < 0)
        return -1;
    if (wk_parse_url(cfg->api_url, &set->api_host, &set->api_port, &set->api_prefix) < 0) {
        snprintf(err, errlen, "NF_API_URL: must be http://host[:port][/prefix] (got \"%s\")",
                 cfg->api_url);
        return -1;
    }
    if (wk_parse_types(cfg->job_types, &set->types) < 0) {
        snprintf(err, errlen,
                 "NF_WORKER_JOB_TYPES: must list generate, audit, distill, train, evaluate or "
                 "deploy (got \"%s\")",
                 cfg->job_types);
        return -1;
    }
    if (wk_parse_labels(cfg->labels, &set->labels, err, errlen) < 0)
        return -1;
    if ((cfg->worker_id[0] != '\0') != (cfg->worker_token[0] != '\0')) {
        snprintf(err, errlen, "NF_WORKER_ID and NF_WORKER_TOKEN: set both or neither");
        return -1;
    }
    if (cfg->worker_id[0] != '\0' && !nf_id_valid("wrk", cfg->worker_id)) {
        snprintf(err, errlen, "NF_WORKER_ID: must be a worker id wrk_<ULID> (got \"%s\")",
                 cfg->worker_id);
        return -1;
    }
    if (cfg->hostname[0] != '\0') {
        set->hostname = nf_xstrdup(cfg->hostname);
    } else {
        char name[256] = "";
        if (gethostname(name, sizeof(name) - 1) < 0 || name[0] == '\0')
            snprintf(name, sizeof(name), "unknown");
        set->hostname = nf_xstrdup(name);
    }
    return 0;
}

void wk_config_free(struct wk_config *cfg, struct wk_settings *set)
{
    if (cfg != NULL)
        nf_cfg_free(wk_cfg_opts, wk_cfg_nopts, cfg);
    if (set != NULL) {
        free(set->api_host);
        free(set->api_prefix);
        free(set->hostname);
        cJSON_Delete(set->labels);
        memset(set, 0, sizeof(*set));
    }
}
