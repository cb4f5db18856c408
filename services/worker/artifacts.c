/*
 * Artifacts announced by handlers: {"artifact": {"path", "kind"}}. The file must lie
 * inside the job's artifact directory once every symlink is resolved, so a handler cannot
 * publish (and have billed and served) a file from elsewhere on the host.
 *
 *   announced paths --> wk_artifact_plan (on the loop: resolve, relative path, object key
 *   tenants/<user>/jobs/<job>/<attempt>/<rel>, artifact id) --> the uploader child:
 *   wk_artifact_open (no symlink followed) + digest + upload (stage.c) --> per file
 *   bytes and sha256 --> wk_artifact_record: the succeeded event's record
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_s3.h"
#include "wk.h"

#define READ_CHUNK ((size_t)64 * 1024)

int wk_artifact_resolve(const char *dir, const char *path, char *out, size_t outlen,
                        const char **why)
{
    char joined[PATH_MAX], real_dir[PATH_MAX], real[PATH_MAX];
    struct stat st;

    if (path == NULL || path[0] == '\0') {
        *why = "empty path";
        return -1;
    }
    if (realpath(dir, real_dir) == NULL) {
        *why = "artifact directory missing";
        return -1;
    }
    int n = path[0] == '/' ? snprintf(joined, sizeof(joined), "%s", path)
                           : snprintf(joined, sizeof(joined), "%s/%s", dir, path);
    if (n < 0 || (size_t)n >= sizeof(joined)) {
        *why = "path too long";
        return -1;
    }
    if (realpath(joined, real) == NULL) {
        *why = errno == ENOENT ? "file does not exist" : "path cannot be resolved";
        return -1;
    }
    size_t dlen = strlen(real_dir);
    if (strncmp(real, real_dir, dlen) != 0 || real[dlen] != '/' || real[dlen + 1] == '\0') {
        *why = "path escapes the artifact directory";
        return -1;
    }
    if (stat(real, &st) < 0 || !S_ISREG(st.st_mode)) {
        *why = "not a regular file";
        return -1;
    }
    if (strlen(real) >= outlen) {
        *why = "path too long";
        return -1;
    }
    memcpy(out, real, strlen(real) + 1);
    return 0;
}

int wk_artifact_digest(const char *path, uint64_t *bytes, char sha_hex[NF_SHA256_HEX_LEN + 1])
{
    crypto_hash_sha256_state st;
    unsigned char digest[crypto_hash_sha256_BYTES];
    uint64_t total = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    unsigned char *buf = nf_xcalloc(1, READ_CHUNK);
    crypto_hash_sha256_init(&st);
    for (;;) {
        ssize_t n = read(fd, buf, READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            free(buf);
            close(fd);
            errno = saved;
            return -1;
        }
        if (n == 0)
            break;
        crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
        total += (uint64_t)n;
    }
    free(buf);
    close(fd);
    crypto_hash_sha256_final(&st, digest);
    sodium_bin2hex(sha_hex, NF_SHA256_HEX_LEN + 1, digest, sizeof(digest));
    *bytes = total;
    return 0;
}

int wk_artifact_rel(const char *dir, const char *path, char *rel, size_t len, const char **why)
{
    char real[PATH_MAX], real_dir[PATH_MAX];

    if (wk_artifact_resolve(dir, path, real, sizeof(real), why) < 0)
        return -1;
    if (realpath(dir, real_dir) == NULL) {
        *why = "artifact directory missing";
        return -1;
    }
    const char *r = real + strlen(real_dir) + 1; /* resolve: strictly inside real_dir */
    if (strlen(r) >= len) {
        *why = "path too long";
        return -1;
    }
    for (const char *seg = r;;) {
        const char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        if (!wk_segment_valid(seg, n)) {
            *why = "path must be printable ASCII without spaces or backslashes";
            return -1;
        }
        if (slash == NULL)
            break;
        seg = slash + 1;
    }
    memcpy(rel, r, strlen(r) + 1);
    return 0;
}

int wk_artifact_open(const char *dir, const char *rel, const char **why)
{
    char seg[WK_NAME_MAX + 1];
    struct stat st;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0) {
        *why = "artifact directory missing";
        return -1;
    }
    for (const char *p = rel;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (!wk_segment_valid(p, n)) {
            *why = "bad path";
            close(fd);
            return -1;
        }
        memcpy(seg, p, n);
        seg[n] = '\0';
        /* O_NOFOLLOW on every component: a symlink anywhere fails with ELOOP (or ENOTDIR);
         * O_NONBLOCK so that a FIFO planted here cannot block the open */
        int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (slash ? O_DIRECTORY : O_NONBLOCK);
        int next = openat(fd, seg, flags);
        close(fd);
        if (next < 0) {
            *why = errno == ENOENT ? "file does not exist" : "path is not a plain file path";
            return -1;
        }
        fd = next;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *why = "not a regular file";
        return -1;
    }
    return fd;
}

cJSON *wk_artifact_plan(const char *dir, const cJSON *announced, const char *key_prefix,
                        const char **why, const char **bad_path)
{
    char rel[PATH_MAX], id[NF_ID_MAX];
    cJSON *plan = cJSON_CreateArray();
    const cJSON *a = NULL;

    cJSON_ArrayForEach(a, announced)
    {
        const char *path = nf_json_str(a, "path");
        const char *kind = nf_json_str(a, "kind");
        if (wk_artifact_rel(dir, path, rel, sizeof(rel), why) < 0) {
            *bad_path = path;
            cJSON_Delete(plan);
            return NULL;
        }
        if (strlen(key_prefix) + strlen(rel) > NF_S3_KEY_MAX) {
            *why = "path too long for an object key";
            *bad_path = path;
            cJSON_Delete(plan);
            return NULL;
        }
        bool dup = false; /* the same file announced twice is one artifact */
        const cJSON *p = NULL;
        cJSON_ArrayForEach(p, plan) dup = dup || strcmp(nf_json_str(p, "path"), rel) == 0;
        if (dup)
            continue;
        size_t klen = strlen(key_prefix) + strlen(rel) + 1;
        char *key = nf_xcalloc(1, klen);
        snprintf(key, klen, "%s%s", key_prefix, rel);
        const char *name = strrchr(rel, '/');
        nf_id_new("art", id, sizeof(id));
        cJSON *item = nf_json_obj();
        nf_json_add_str(item, "artifact_id", id);
        nf_json_add_str(item, "name", name ? name + 1 : rel);
        nf_json_add_str(item, "kind", kind ? kind : "file");
        nf_json_add_str(item, "path", rel);
        nf_json_add_str(item, "object_key", key);
        cJSON_AddItemToArray(plan, item);
        free(key);
    }
    return plan;
}

cJSON *wk_artifact_record(const cJSON *item, uint64_t bytes, const char *sha_hex)
{
    const char *id = nf_json_str(item, "artifact_id");
    char uri[NF_ID_MAX + 16];
    cJSON *rec = nf_json_obj();

    snprintf(uri, sizeof(uri), "artifact://%s", id);
    nf_json_add_str(rec, "artifact_id", id);
    nf_json_add_str(rec, "name", nf_json_str(item, "name"));
    nf_json_add_str(rec, "kind", nf_json_str(item, "kind"));
    nf_json_add_int(rec, "bytes", (long long)bytes);
    nf_json_add_str(rec, "sha256", sha_hex);
    nf_json_add_str(rec, "object_key", nf_json_str(item, "object_key"));
    nf_json_add_str(rec, "uri", uri);
    return rec;
}
