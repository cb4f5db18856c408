/*
 * The Files API's pure parts: an uploaded file's name (as shown, and as it may appear in
 * an object key), its purpose, and the public file object made from a registry record.
 *
 *   filename="C:\Users\me\data.parquet"  --gw_files_filename-->  "data.parquet"
 *   "données v2.csv"                     --gw_files_key_name-->  "donn__es_v2.csv"
 *   registry record {artifact_id, filename, s3_uri, ...}  --gw_file_object-->
 *     {"id", "object": "file", "uri": "artifact://<id>", "s3_uri", "filename", "purpose",
 *      "bytes", "sha256", "created_at"}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_str.h"

static const char *const purposes[] = {"dataset", "model", "other"};

bool gw_files_purpose_valid(const char *purpose)
{
    return nf_str_index(purposes, sizeof(purposes) / sizeof(purposes[0]), purpose) >= 0;
}

int gw_files_filename(const char *raw, char out[GW_FILENAME_MAX + 1])
{
    const char *base = raw;
    size_t n = 0, len;

    if (raw == NULL)
        return -1;
    for (const char *p = raw; *p != '\0'; p++) /* the last segment of a path, / or \ */
        if (*p == '/' || *p == '\\')
            base = p + 1;
    while (*base == ' ')
        base++;
    len = strlen(base);
    while (len > 0 && base[len - 1] == ' ')
        len--;
    for (size_t i = 0; i < len;) {
        const unsigned char *s = (const unsigned char *)base + i;
        size_t k = nf_utf8_seq(s, len - i, NULL);

        if (k == 0)
            return -1; /* not UTF-8 */
        if (k == 1 && (s[0] < 0x20 || s[0] == 0x7f)) {
            i++; /* control bytes (CR, LF, tabs) go */
            continue;
        }
        if (n + k > GW_FILENAME_MAX)
            return -1;
        memcpy(out + n, s, k);
        n += k;
        i += k;
    }
    out[n] = '\0';
    if (n == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        return -1;
    return 0;
}

void gw_files_key_name(const char *name, char out[GW_FILENAME_MAX + 1])
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)name; *p != '\0' && n < GW_FILENAME_MAX;
         p++) {
        unsigned char c = *p;
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_';
        out[n++] = keep ? (char)c : '_';
    }
    out[n] = '\0';
    if (n == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        snprintf(out, GW_FILENAME_MAX + 1, "file");
}

/* Copies a member of rec (any type) into obj under name; null when rec lacks it. */
static void copy_member(cJSON *obj, const char *name, const cJSON *rec, const char *from)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, from);
    cJSON *dup = v != NULL ? cJSON_Duplicate(v, 1) : cJSON_CreateNull();

    if (dup == NULL || !cJSON_AddItemToObject(obj, name, dup))
        abort();
}

cJSON *gw_file_object(const cJSON *rec)
{
    const char *id = nf_json_str(rec, "artifact_id");
    char uri[16 + NF_ID_MAX];
    cJSON *obj;

    if (id == NULL)
        id = nf_json_str(rec, "id");
    if (id == NULL || !nf_id_valid("art", id))
        return NULL;
    obj = nf_json_obj();
    snprintf(uri, sizeof(uri), "artifact://%s", id);
    nf_json_add_str(obj, "id", id);
    nf_json_add_str(obj, "object", "file");
    nf_json_add_str(obj, "uri", uri);
    copy_member(obj, "s3_uri", rec, "s3_uri");
    copy_member(obj, "filename", rec, nf_json_str(rec, "filename") != NULL ? "filename" : "name");
    copy_member(obj, "purpose", rec, "purpose");
    copy_member(obj, "bytes", rec, "bytes");
    copy_member(obj, "sha256", rec, "sha256");
    copy_member(obj, "created_at", rec, "created_at");
    return obj;
}
