/*
 * The inputs of a job, as the dispatch names them, and the job JSON a handler reads.
 *
 *   dispatch "inputs": [{param, uri, object_key, name, bytes}]   (hostile until checked)
 *       --> wk_inputs_parse: every field checked, the key inside tenants/<user_id>/
 *       --> downloaded to <job dir>/inputs/<param>/<name> (stage.c, in the job's child)
 *   handler stdin: the dispatch with "inputs": {"<param>": "<absolute local path>"}
 *
 * The dispatch comes over the network from the API: a key outside the job owner's prefix
 * or a name that is a path would let one tenant's job read another's data or write
 * outside its directory, so nothing here trusts it. Pure: unit-tested.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_s3.h"
#include "wk.h"

#define URI_MAX 2048

/* Printable ASCII without space or backslash: the bytes of our keys and names. */
static bool key_byte(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '\\';
}

bool wk_segment_valid(const char *s, size_t len)
{
    if (len == 0 || len > WK_NAME_MAX)
        return false;
    if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!key_byte((unsigned char)s[i]) || s[i] == '/')
            return false;
    return true;
}

bool wk_file_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > WK_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    /* an uploaded file's name may hold spaces ("my data.csv"): harmless in a path we
     * never hand to a shell; '/', backslash and control bytes are not */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] >= 0x7f || name[i] == '/' ||
            name[i] == '\\')
            return false;
    return true;
}

bool wk_param_valid(const char *param)
{
    size_t n = param ? strlen(param) : 0;
    if (n == 0 || n > WK_PARAM_MAX || param[0] < 'a' || param[0] > 'z')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = param[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

bool wk_user_id_valid(const char *user_id)
{
    size_t n = user_id ? strlen(user_id) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = user_id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool wk_tenant_key_valid(const char *key, const char *user_id)
{
    char prefix[96];

    if (key == NULL || !wk_user_id_valid(user_id) || strlen(key) > NF_S3_KEY_MAX)
        return false;
    snprintf(prefix, sizeof(prefix), "tenants/%s/", user_id);
    size_t plen = strlen(prefix);
    if (strncmp(key, prefix, plen) != 0 || key[plen] == '\0')
        return false;
    /* every segment after the prefix: non-empty, not "." or "..", key bytes only */
    const char *seg = key + plen;
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
        if (!wk_segment_valid(seg, len))
            return false;
        if (slash == NULL)
            return true;
        seg = slash + 1;
    }
}

void wk_inputs_free(struct wk_inputs *in)
{
    for (int i = 0; i < in->n; i++) {
        free(in->v[i].object_key);
        free(in->v[i].uri);
    }
    free(in->v);
    memset(in, 0, sizeof(*in));
}

/* One entry of the dispatch's array into `in`; -1 with err naming what is wrong. */
static int parse_entry(const cJSON *e, int i, const char *user_id, struct wk_input *in, char *err,
                       size_t errlen)
{
    const cJSON *param = cJSON_GetObjectItemCaseSensitive(e, "param");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(e, "object_key");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
    const cJSON *uri = cJSON_GetObjectItemCaseSensitive(e, "uri");
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(e, "bytes");

    if (!cJSON_IsObject(e)) {
        snprintf(err, errlen, "inputs[%d]: not an object", i);
        return -1;
    }
    if (!cJSON_IsString(param) || !wk_param_valid(param->valuestring)) {
        snprintf(err, errlen, "inputs[%d].param: must be a parameter name ([a-z][a-z0-9_]*)", i);
        return -1;
    }
    if (!cJSON_IsString(key) || !wk_tenant_key_valid(key->valuestring, user_id)) {
        snprintf(err, errlen, "input %s: object_key must be a key under tenants/%s/",
                 param->valuestring, user_id);
        return -1;
    }
    if (!cJSON_IsString(name) || !wk_file_name_valid(name->valuestring)) {
        snprintf(err, errlen, "input %s: name must be a plain file name", param->valuestring);
        return -1;
    }
    if (uri != NULL && !cJSON_IsNull(uri)) {
        bool ok = cJSON_IsString(uri) && strlen(uri->valuestring) <= URI_MAX;
        for (const char *c = ok ? uri->valuestring : ""; ok && *c; c++)
            ok = (unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f;
        if (!ok) {
            snprintf(err, errlen, "input %s: uri must be printable text", param->valuestring);
            return -1;
        }
    }
    if (bytes != NULL && !cJSON_IsNull(bytes) &&
        (!cJSON_IsNumber(bytes) || bytes->valuedouble < 0 || bytes->valuedouble > 9e15)) {
        snprintf(err, errlen, "input %s: bytes must be a size", param->valuestring);
        return -1;
    }
    snprintf(in->param, sizeof(in->param), "%s", param->valuestring);
    snprintf(in->name, sizeof(in->name), "%s", name->valuestring);
    in->object_key = nf_xstrdup(key->valuestring);
    in->uri = nf_xstrdup(uri != NULL && cJSON_IsString(uri) ? uri->valuestring : "");
    in->bytes = bytes != NULL && cJSON_IsNumber(bytes) ? (long long)bytes->valuedouble : -1;
    return 0;
}

int wk_inputs_parse(const cJSON *doc, struct wk_inputs *out, char *err, size_t errlen)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, "inputs");
    const char *user_id = nf_json_str(doc, "user_id");
    struct wk_inputs in = {0};

    if (arr == NULL || cJSON_IsNull(arr)) {
        *out = in;
        return 0;
    }
    if (!cJSON_IsArray(arr)) {
        snprintf(err, errlen, "inputs: must be an array");
        return -1;
    }
    int n = cJSON_GetArraySize(arr);
    if (n > WK_MAX_INPUTS) {
        snprintf(err, errlen, "inputs: at most %d", WK_MAX_INPUTS);
        return -1;
    }
    if (n > 0 && !wk_user_id_valid(user_id)) {
        snprintf(err, errlen, "user_id: not a valid user id");
        return -1;
    }
    in.v = nf_xcalloc((size_t)(n > 0 ? n : 1), sizeof(*in.v));
    const cJSON *e = NULL;
    cJSON_ArrayForEach(e, arr)
    {
        if (parse_entry(e, in.n, user_id, &in.v[in.n], err, errlen) < 0)
            goto fail;
        for (int j = 0; j < in.n; j++)
            if (strcmp(in.v[j].param, in.v[in.n].param) == 0) {
                snprintf(err, errlen, "input %s: given twice", in.v[j].param);
                in.n++; /* freed below */
                goto fail;
            }
        in.n++;
    }
    *out = in;
    return 0;
fail:
    wk_inputs_free(&in);
    return -1;
}

int wk_input_path(const char *inputs_dir, const struct wk_input *in, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s/%s", inputs_dir, in->param, in->name);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

cJSON *wk_inputs_job_json(const cJSON *doc, const struct wk_inputs *in, const char *inputs_dir)
{
    cJSON *copy = cJSON_Duplicate(doc, true);
    cJSON *map = nf_json_obj();
    char path[4096];

    if (copy == NULL)
        abort(); /* out of memory */
    cJSON_DeleteItemFromObjectCaseSensitive(copy, "inputs");
    for (int i = 0; i < in->n; i++) {
        if (wk_input_path(inputs_dir, &in->v[i], path, sizeof(path)) < 0) {
            cJSON_Delete(map);
            cJSON_Delete(copy);
            return NULL;
        }
        nf_json_add_str(map, in->v[i].param, path);
    }
    cJSON_AddItemToObject(copy, "inputs", map);
    return copy;
}

int wk_resume_parse(const cJSON *doc, struct wk_inputs *out, char *err, size_t errlen)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(doc, "resume");
    const char *user_id = nf_json_str(doc, "user_id");
    struct wk_inputs in = {0};

    if (r == NULL || cJSON_IsNull(r)) {
        *out = in;
        return 0;
    }
    if (!cJSON_IsObject(r) || !wk_user_id_valid(user_id)) {
        snprintf(err, errlen, "resume: must be an object");
        return -1;
    }
    /* checked as an input named "checkpoint": its key under the job's tenant, a plain name */
    cJSON *e = cJSON_Duplicate(r, true);
    if (e == NULL)
        abort(); /* out of memory */
    cJSON_DeleteItemFromObjectCaseSensitive(e, "param");
    nf_json_add_str(e, "param", "checkpoint");
    in.v = nf_xcalloc(1, sizeof(*in.v));
    int rc = parse_entry(e, 0, user_id, &in.v[0], err, errlen);
    cJSON_Delete(e);
    if (rc < 0) {
        free(in.v);
        return -1;
    }
    in.n = 1;
    *out = in;
    return 0;
}
