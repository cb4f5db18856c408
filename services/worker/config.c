/*
 * The settings derived from the agent's rows (the table is service.c's): the API URL,
 * labels, job types, the identity pair, the hostname, the work dir, the input cap and the
 * object store. Pure: unit-tested, and run twice
 * (desc->check at load, then init into the context).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wk.h"

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

/* The next item of the comma-separated list *s, trimmed (it may be empty); false once the
 * list is done. */
static bool next_item(const char **s, const char **item, size_t *len)
{
    const char *end;

    if (*s == NULL || **s == '\0')
        return false;
    end = strchr(*s, ',');
    *item = *s;
    *len = end ? (size_t)(end - *s) : strlen(*s);
    trim(item, len);
    *s = end ? end + 1 : NULL;
    return true;
}

int wk_parse_labels(const char *s, cJSON **out, char *err, size_t errlen)
{
    cJSON *labels = nf_json_obj();
    const char *item;
    size_t len;
    while (next_item(&s, &item, &len)) {
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
    const char *item;
    size_t len;
    while (next_item(&s, &item, &len)) {
        if (len == 0)
            continue;
        char name[16];
        if (len >= sizeof(name))
            return -1;
        memcpy(name, item, len);
        name[len] = '\0';
        int idx = nf_job_type_index(name);
        if (idx < 0)
            return -1;
        m |= 1u << idx;
    }
    if (m == 0)
        return -1;
    *mask = m;
    return 0;
}

int wk_settings_load(const struct wk_config *cfg, struct wk_settings *set, char *err, size_t errlen)
{
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
    set->work_dir = cfg->work_dir[0] != '\0' ? cfg->work_dir : cfg->artifact_root;
    if (set->work_dir[0] == '\0') {
        snprintf(err, errlen, "NF_WORKER_WORK_DIR: required (the jobs' private directories)");
        return -1;
    }
    char *end = NULL;
    set->max_input_bytes = strtoll(cfg->max_input, &end, 10);
    if (end == cfg->max_input || *end != '\0' || set->max_input_bytes < 1 ||
        set->max_input_bytes > (1LL << 50)) {
        snprintf(err, errlen,
                 "NF_WORKER_MAX_INPUT_BYTES: must be a byte count 1..2^50 (got \"%s\")",
                 cfg->max_input);
        return -1;
    }
    if (cfg->store_cache[0] != '\0') {
        set->store_cache = nf_xstrdup(cfg->store_cache);
    } else {
        size_t n = strlen(set->work_dir) + sizeof("/store-cache");
        set->store_cache = nf_xmalloc(n);
        snprintf(set->store_cache, n, "%s/store-cache", set->work_dir);
    }
    set->s3 = (struct nf_s3_conf){.endpoint = cfg->s3_endpoint,
                                  .region = cfg->s3_region,
                                  .access_key = cfg->s3_access_key,
                                  .secret_key = cfg->s3_secret_key,
                                  .bucket = cfg->s3_bucket};
    char why[256] = "";
    if (!nf_s3_conf_check(&set->s3, why, sizeof(why))) {
        snprintf(err, errlen, "NF_S3_*: the object store settings are not usable: %s", why);
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

void wk_settings_free(struct wk_settings *set)
{
    free(set->api_host);
    free(set->api_prefix);
    free(set->hostname);
    free(set->store_cache);
    cJSON_Delete(set->labels);
    memset(set, 0, sizeof(*set));
}
