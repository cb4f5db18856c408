/*
 * Artifacts announced by handlers: {"artifact": {"path", "kind"}}. The file must lie
 * inside the job's artifact directory once every symlink is resolved, so a handler cannot
 * publish (and have billed and served) a file from elsewhere on the host.
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

cJSON *wk_artifact_record(const char *dir, const char *path, const char *kind, const char **why)
{
    char real[PATH_MAX], sha[NF_SHA256_HEX_LEN + 1], id[NF_ID_MAX];
    uint64_t bytes = 0;

    if (wk_artifact_resolve(dir, path, real, sizeof(real), why) < 0)
        return NULL;
    if (wk_artifact_digest(real, &bytes, sha) < 0) {
        *why = "file cannot be read";
        return NULL;
    }
    nf_id_new("art", id, sizeof(id));
    const char *name = strrchr(real, '/');
    name = name ? name + 1 : real;
    size_t ulen = strlen(real) + 8;
    char *uri = nf_xcalloc(1, ulen);
    snprintf(uri, ulen, "file://%s", real);

    cJSON *rec = nf_json_obj();
    nf_json_add_str(rec, "artifact_id", id);
    nf_json_add_str(rec, "name", name);
    nf_json_add_str(rec, "kind", kind ? kind : "file");
    nf_json_add_str(rec, "uri", uri);
    nf_json_add_int(rec, "bytes", (long long)bytes);
    nf_json_add_str(rec, "sha256", sha);
    free(uri);
    return rec;
}
