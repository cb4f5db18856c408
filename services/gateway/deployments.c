/*
 * Deployments' pure parts (DESIGN §15), used by routes_deployments.c and deploy_proxy.c
 * and tested alone: the deployment id, the public object of a registry record, the
 * endpoint's address, the usage comment of a streamed answer and the usage events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_crypto.h"
#include "nf_event.h"
#include "nf_json.h"
#include "nf_time.h"

/* The fields of a registry record (nf-scheduler) a user sees; the rest (endpoint_url,
 * worker_id, user_id) is the platform's. */
static const char *const public_fields[] = {
    "id",     "object",   "model",      "status",     "region",  "replicas",
    "job_id", "base_url", "created_at", "stopped_at", "failure",
};

bool gw_dep_id_valid(const char *id)
{
    if (id == NULL || strncmp(id, "dep-", 4) != 0 || strlen(id) != GW_DEP_ID_LEN)
        return false;
    for (const char *c = id + 4; *c != '\0'; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

cJSON *gw_dep_public(const cJSON *rec)
{
    cJSON *out = nf_json_obj();

    for (size_t i = 0; i < sizeof(public_fields) / sizeof(public_fields[0]); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, public_fields[i]);
        cJSON *c;

        if (v == NULL)
            continue;
        if (!(c = cJSON_Duplicate(v, true)))
            abort();
        cJSON_AddItemToObject(out, public_fields[i], c);
    }
    return out;
}

int gw_dep_endpoint(const char *url, char host[GW_DEP_HOST_MAX + 1], int *port)
{
    const char *h, *colon, *end;
    long p = 0;
    size_t n;

    if (url == NULL || strncmp(url, "http://", 7) != 0)
        return -1;
    h = url + 7;
    end = h + strcspn(h, "/");
    colon = memchr(h, ':', (size_t)(end - h));
    if (colon == NULL || colon == h || colon + 1 == end || end - colon > 6)
        return -1;
    n = (size_t)(colon - h);
    if (n > GW_DEP_HOST_MAX)
        return -1;
    for (const char *c = h; c < colon; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '-'))
            return -1;
    for (const char *c = colon + 1; c < end; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        p = p * 10 + (*c - '0');
    }
    if (p < 1 || p > 65535 || (*end != '\0' && strcmp(end, "/") != 0))
        return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    *port = (int)p;
    return 0;
}

/* ---- the usage comment of a streamed answer ---------------------------------------- */

#define USAGE_PREFIX ": usage "

void gw_sse_usage_init(struct gw_sse_usage *u)
{
    memset(u, 0, sizeof(*u));
    u->prompt = u->completion = -1;
}

/* A whole line (no newline): the usage comment sets the counts. */
static void usage_line(struct gw_sse_usage *u, const char *line, size_t n)
{
    size_t plen = sizeof(USAGE_PREFIX) - 1;
    cJSON *doc;

    if (n <= plen || memcmp(line, USAGE_PREFIX, plen) != 0)
        return;
    doc = nf_json_parse(line + plen, n - plen);
    if (doc == NULL)
        return;
    u->prompt = nf_json_int(doc, "prompt_tokens", -1);
    u->completion = nf_json_int(doc, "completion_tokens", -1);
    cJSON_Delete(doc);
}

void gw_sse_usage_feed(struct gw_sse_usage *u, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];

        if (c == '\n' || c == '\r') {
            if (!u->overflow)
                usage_line(u, u->line, u->n);
            u->n = 0;
            u->overflow = false;
        } else if (u->n < sizeof(u->line)) {
            u->line[u->n++] = c;
        } else {
            u->overflow = true; /* a data line longer than any usage comment */
        }
    }
}

bool gw_sse_usage_found(const struct gw_sse_usage *u)
{
    return u->prompt >= 0 && u->completion >= 0;
}

int gw_dep_json_usage(const char *body, size_t len, long long *prompt, long long *completion)
{
    cJSON *doc = nf_json_parse(body, len);
    const cJSON *usage;
    int rc = -1;

    if (doc == NULL)
        return -1;
    usage = cJSON_GetObjectItemCaseSensitive(doc, "usage");
    if (cJSON_IsObject(usage)) {
        *prompt = nf_json_int(usage, "prompt_tokens", -1);
        *completion = nf_json_int(usage, "completion_tokens", -1);
        rc = *prompt >= 0 && *completion >= 0 ? 0 : -1;
    }
    cJSON_Delete(doc);
    return rc;
}

/* ---- usage events ---------------------------------------------------------------------- */

void gw_dep_usage_id(const char *dep_id, const char *request_uid, const char *meter,
                     char out[GW_USAGE_ID_LEN + 1])
{
    char seed[256], hex[NF_SHA256_HEX_LEN + 1];
    int n = snprintf(seed, sizeof(seed), "%s:%s:%s", dep_id, request_uid, meter);

    nf_crypto_sha256_hex(seed, n > 0 ? (size_t)n : 0, hex);
    snprintf(out, GW_USAGE_ID_LEN + 1, "use_%.32s", hex);
}

cJSON *gw_dep_usage_event(const struct gw_dep_usage *u, const char *meter, long long quantity)
{
    char id[GW_USAGE_ID_LEN + 1], start[32], end[32];
    cJSON *data = nf_json_obj();

    gw_dep_usage_id(u->dep_id, u->request_uid, meter, id);
    nf_time_format_rfc3339(u->start_ms, start);
    nf_time_format_rfc3339(u->end_ms, end);
    nf_json_add_str(data, "user_id", u->user_id);
    nf_json_add_str(data, "job_id", u->job_id);
    nf_json_add_str(data, "job_type", "deploy");
    if (!cJSON_AddNullToObject(data, "attempt"))
        abort();
    nf_json_add_str(data, "deployment_id", u->dep_id);
    nf_json_add_str(data, "meter", meter);
    nf_json_add_int(data, "quantity", quantity);
    nf_json_add_str(data, "window_start", start);
    nf_json_add_str(data, "window_end", end);
    return nf_event_new("forge.usage.recorded", "nf-gateway", u->user_id, id, data);
}

/* ---- the proxy's cache ------------------------------------------------------------------ */

const struct gw_dep_cached *gw_dep_cache_find(const struct gw_dep_cached *cache, const char *id,
                                              const char *user_id, uint64_t now_ms)
{
    for (size_t i = 0; cache != NULL && i < GW_DEP_CACHE_N; i++)
        if (cache[i].until_ms > now_ms && strcmp(cache[i].id, id) == 0 &&
            strcmp(cache[i].user_id, user_id) == 0)
            return &cache[i];
    return NULL;
}

void gw_dep_cache_put(struct gw_dep_cached *cache, const struct gw_dep_cached *e, uint64_t now_ms)
{
    size_t pick = 0;

    for (size_t i = 0; i < GW_DEP_CACHE_N; i++) {
        if (strcmp(cache[i].id, e->id) == 0 && cache[i].until_ms > 0) {
            pick = i; /* its own slot */
            break;
        }
        if (cache[i].until_ms < cache[pick].until_ms)
            pick = i; /* empty or expired first (0 or oldest) */
    }
    cache[pick] = *e;
    cache[pick].until_ms = now_ms + GW_DEP_CACHE_TTL_MS;
}

void gw_dep_cache_drop(struct gw_dep_cached *cache, const char *id)
{
    for (size_t i = 0; cache != NULL && i < GW_DEP_CACHE_N; i++)
        if (strcmp(cache[i].id, id) == 0)
            cache[i].until_ms = 0;
}
