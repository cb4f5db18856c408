/*
 * The handler stdout protocol (DESIGN §7): one JSON object per line, holding exactly one
 * of progress, log, usage, artifact, result, metric. Anything else is malformed: the agent ignores
 * and counts it, so a chatty handler cannot break its own job.
 */
#include <math.h>
#include <string.h>

#include "wk.h"

#define TOKENS_MAX 1000000000000LL /* 1e12: bigger is certainly a bug */
#define KIND_MAX 32
#define PATH_MAX_LEN 4096

static const char *const keys[] = {"progress", "log", "usage", "artifact", "result", "metric"};
static const enum wk_line_kind kinds[] = {WK_LINE_PROGRESS, WK_LINE_LOG,    WK_LINE_USAGE,
                                          WK_LINE_ARTIFACT, WK_LINE_RESULT, WK_LINE_METRIC};

void wk_line_clear(struct wk_line *l)
{
    if (l == NULL)
        return;
    cJSON_Delete(l->doc);
    memset(l, 0, sizeof(*l));
}

/* A token count: absent -> 0 (ok), else a non-negative integer. -1 if malformed. */
static int token_count(const cJSON *usage, const char *key, long long *out, bool *seen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(usage, key);
    if (it == NULL)
        return 0;
    if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > (double)TOKENS_MAX ||
        it->valuedouble != floor(it->valuedouble))
        return -1;
    *out = (long long)it->valuedouble;
    *seen = true;
    return 0;
}

static bool kind_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KIND_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return false;
    return true;
}

/* A metric object (see wk_proto_parse in wk.h): every member checked, none trusted. */
static bool metric_ok(const cJSON *m)
{
    const cJSON *it;
    int values = 0;
    bool step = false;

    if (!cJSON_IsObject(m))
        return false;
    cJSON_ArrayForEach(it, m)
    {
        if (it->string == NULL || !cJSON_IsNumber(it) || !isfinite(it->valuedouble))
            return false;
        if (strcmp(it->string, "step") == 0) {
            if (step || it->valuedouble < 0 || it->valuedouble > (double)WK_METRIC_STEP_MAX ||
                it->valuedouble != floor(it->valuedouble))
                return false;
            step = true;
        } else if (strcmp(it->string, "epoch") == 0) {
            if (it->valuedouble < 0)
                return false;
        } else if (!nf_metric_name_valid(it->string) || ++values > WK_METRIC_VALUES_MAX) {
            return false;
        }
    }
    /* a name given twice would leave a reader guessing which value counts */
    cJSON_ArrayForEach(it, m)
    {
        for (const cJSON *o = it->next; o != NULL; o = o->next)
            if (strcmp(it->string, o->string) == 0)
                return false;
    }
    return step && values > 0;
}

static enum wk_line_kind parse_member(struct wk_line *out, enum wk_line_kind kind, cJSON *val)
{
    switch (kind) {
    case WK_LINE_PROGRESS:
        if (!cJSON_IsNumber(val) || !(val->valuedouble >= 0.0 && val->valuedouble <= 1.0))
            return WK_LINE_MALFORMED;
        out->progress = val->valuedouble;
        return kind;
    case WK_LINE_LOG:
        if (!cJSON_IsString(val))
            return WK_LINE_MALFORMED;
        out->message = val->valuestring;
        return kind;
    case WK_LINE_USAGE: {
        bool seen = false;
        if (!cJSON_IsObject(val) ||
            token_count(val, "input_tokens", &out->input_tokens, &seen) < 0 ||
            token_count(val, "output_tokens", &out->output_tokens, &seen) < 0 || !seen)
            return WK_LINE_MALFORMED;
        return kind;
    }
    case WK_LINE_ARTIFACT: {
        const char *path = cJSON_IsObject(val) ? nf_json_str(val, "path") : NULL;
        const cJSON *k = cJSON_IsObject(val) ? cJSON_GetObjectItemCaseSensitive(val, "kind") : NULL;
        if (path == NULL || path[0] == '\0' || strlen(path) > PATH_MAX_LEN)
            return WK_LINE_MALFORMED;
        if (k != NULL && !cJSON_IsNull(k) && (!cJSON_IsString(k) || !kind_ok(k->valuestring)))
            return WK_LINE_MALFORMED;
        out->path = path;
        out->art_kind = k != NULL && cJSON_IsString(k) ? k->valuestring : "file";
        return kind;
    }
    case WK_LINE_RESULT:
        if (!cJSON_IsObject(val))
            return WK_LINE_MALFORMED;
        out->result = val;
        return kind;
    case WK_LINE_METRIC:
        if (!metric_ok(val))
            return WK_LINE_MALFORMED;
        out->metric = val;
        return kind;
    default:
        return WK_LINE_MALFORMED;
    }
}

enum wk_line_kind wk_proto_parse(const char *line, size_t len, struct wk_line *out)
{
    memset(out, 0, sizeof(*out));
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i == len)
        return out->kind = WK_LINE_EMPTY;
    if (memchr(line, '\0', len) != NULL || line[i] != '{')
        return out->kind = WK_LINE_MALFORMED;
    out->doc = nf_json_parse(line, len);
    if (out->doc == NULL || !cJSON_IsObject(out->doc)) {
        wk_line_clear(out);
        return out->kind = WK_LINE_MALFORMED;
    }
    enum wk_line_kind kind = WK_LINE_MALFORMED;
    cJSON *val = NULL;
    int found = 0;
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        cJSON *it = cJSON_GetObjectItemCaseSensitive(out->doc, keys[k]);
        if (it != NULL) {
            found++;
            kind = kinds[k];
            val = it;
        }
    }
    if (found == 1)
        kind = parse_member(out, kind, val);
    else
        kind = WK_LINE_MALFORMED;
    if (kind == WK_LINE_MALFORMED) {
        wk_line_clear(out);
        return out->kind = WK_LINE_MALFORMED;
    }
    return out->kind = kind;
}
