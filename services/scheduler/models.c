/*
 * The base model catalogue (DESIGN §15): the operator's file, read once at start, kept as
 * the public model objects GET /api/models lists. Pure but for reading the file.
 *
 *   deploy/models.json {"models": {"llama-3-8b": {"architecture": "llama",
 *       "parameters": 8030261248, "source": "s3://…/" | "hf:<org>/<repo>" | "/path" | …,
 *       "stand_in": true, "owned_by": "meta-llama", "created": 1713312000}}}
 *   --> [{"id": "llama-3-8b", "object": "model", "created", "owned_by", "kind": "base",
 *         "architecture", "parameters", "base_model": null, "source", "stand_in",
 *         "artifact_id": null}]
 */
#include "sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_json.h"
#include "nf_mem.h"

#define CATALOGUE_MAX_BYTES ((size_t)1024 * 1024)
#define SOURCE_MAX 1024
#define FIELD_MAX 128

static bool name_chars(const char *s, bool capitals)
{
    size_t n = s ? strlen(s) : 0, i;

    if (n == 0 || n > SCHED_MODEL_NAME_MAX)
        return false;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || (capitals && c >= 'A' && c <= 'Z')))
            return false;
    }
    return true;
}

bool sched_model_name_valid(const char *s)
{
    return name_chars(s, false);
}

bool sched_model_lookup_valid(const char *s)
{
    return name_chars(s, true);
}

/* Where a base model's weights are: the store, the Hub, a path on the workers, the
 * reference implementation in handlers/ (builtin:) or an operator's provider (provider:). */
static bool source_valid(const char *s)
{
    static const char *const schemes[] = {"s3://", "hf:", "/", "builtin:", "provider:", NULL};
    size_t i, n = strlen(s);

    if (n == 0 || n > SOURCE_MAX)
        return false;
    for (i = 0; schemes[i]; i++)
        if (strncmp(s, schemes[i], strlen(schemes[i])) == 0 && n > strlen(schemes[i]))
            return true;
    return false;
}

static bool short_str(const cJSON *v)
{
    return cJSON_IsString(v) && v->valuestring[0] && strlen(v->valuestring) <= FIELD_MAX;
}

/* One entry into a public model object; -1 with err. */
static int entry(const cJSON *e, cJSON *out, char *err, size_t errlen)
{
    const char *name = e->string;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(e, "architecture");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(e, "parameters");
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(e, "source");
    const cJSON *stand_in = cJSON_GetObjectItemCaseSensitive(e, "stand_in");
    const cJSON *owner = cJSON_GetObjectItemCaseSensitive(e, "owned_by");
    const cJSON *created = cJSON_GetObjectItemCaseSensitive(e, "created");
    const char *bad = NULL;
    cJSON *m;

    if (!sched_model_lookup_valid(name))
        bad = "its name (1 to 64 of A-Z a-z 0-9 . _ -)";
    else if (!cJSON_IsObject(e))
        bad = "its value (an object)";
    else if (!short_str(arch))
        bad = "architecture";
    else if (params && !cJSON_IsNull(params) &&
             (!cJSON_IsNumber(params) || params->valuedouble < 0 || params->valuedouble > 1e15))
        bad = "parameters";
    else if (!cJSON_IsString(src) || !source_valid(src->valuestring))
        bad = "source (s3://, hf:<org>/<repo>, /path, builtin: or provider:)";
    else if (stand_in && !cJSON_IsBool(stand_in))
        bad = "stand_in";
    else if (!short_str(owner))
        bad = "owned_by";
    else if (created && (!cJSON_IsNumber(created) || created->valuedouble < 0))
        bad = "created";
    if (bad) {
        snprintf(err, errlen, "model %.64s: bad %s", name ? name : "?", bad);
        return -1;
    }
    m = nf_json_obj();
    nf_json_add_str(m, "id", name);
    nf_json_add_str(m, "object", "model");
    nf_json_add_int(m, "created", created ? (long long)created->valuedouble : 0);
    nf_json_add_str(m, "owned_by", owner->valuestring);
    nf_json_add_str(m, "kind", "base");
    nf_json_add_str(m, "architecture", arch->valuestring);
    if (params && cJSON_IsNumber(params))
        nf_json_add_int(m, "parameters", (long long)params->valuedouble);
    else
        nf_json_add_str(m, "parameters", NULL);
    nf_json_add_str(m, "base_model", NULL);
    nf_json_add_str(m, "source", src->valuestring);
    if (!cJSON_AddBoolToObject(m, "stand_in", cJSON_IsTrue(stand_in)))
        abort();
    nf_json_add_str(m, "artifact_id", NULL);
    if (!cJSON_AddItemToArray(out, m))
        abort();
    return 0;
}

int sched_catalogue_parse(const char *text, size_t len, cJSON **out, char *err, size_t errlen)
{
    cJSON *doc = nf_json_parse(text, len), *cat;
    const cJSON *models, *e;

    if (!cJSON_IsObject(doc)) {
        snprintf(err, errlen, "not a JSON object");
        cJSON_Delete(doc);
        return -1;
    }
    models = cJSON_GetObjectItemCaseSensitive(doc, "models");
    if (!cJSON_IsObject(models)) {
        snprintf(err, errlen, "\"models\" must be an object of name -> model");
        cJSON_Delete(doc);
        return -1;
    }
    cat = cJSON_CreateArray();
    if (!cat)
        abort();
    cJSON_ArrayForEach(e, models)
    {
        if (sched_catalogue_find(cat, e->string)) {
            snprintf(err, errlen, "model %.64s: given twice", e->string);
            goto fail;
        }
        if (entry(e, cat, err, errlen) < 0)
            goto fail;
    }
    cJSON_Delete(doc);
    *out = cat;
    return 0;
fail:
    cJSON_Delete(cat);
    cJSON_Delete(doc);
    return -1;
}

int sched_catalogue_load(const char *path, cJSON **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    int rc;

    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    buf = nf_xmalloc(CATALOGUE_MAX_BYTES + 1);
    n = fread(buf, 1, CATALOGUE_MAX_BYTES + 1, f);
    fclose(f);
    if (n > CATALOGUE_MAX_BYTES) {
        snprintf(err, errlen, "%s: larger than %zu bytes", path, CATALOGUE_MAX_BYTES);
        free(buf);
        return -1;
    }
    rc = sched_catalogue_parse(buf, n, out, err, errlen);
    free(buf);
    return rc;
}

const cJSON *sched_catalogue_find(const cJSON *cat, const char *name)
{
    const cJSON *m;

    if (!name)
        return NULL;
    cJSON_ArrayForEach(m, cat)
    {
        const char *id = nf_json_str(m, "id");
        if (id && strcmp(id, name) == 0)
            return m;
    }
    return NULL;
}
