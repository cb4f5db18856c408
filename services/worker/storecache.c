/*
 * Platform objects a job needs from the store, kept in the worker's store cache: the
 * base model of a model param whose catalogue source is s3:// (a Hugging Face model
 * directory under a prefix of the platform bucket, e.g. the stand-ins `./forge up`
 * uploads to models/base/<name>/), and an evaluate job's benchmark data
 * (benchmarks/<name>/, seeded by `./forge up`, loaded by `./forge benchmarks import`).
 *
 *   dispatch "models": {"<param>": {"kind": "base", "source": "s3://<bucket>/<prefix>/"}}
 *   dispatch job_type evaluate, params.benchmark "<name>" (not custom)
 *       --> wk_store_parse (pure: bucket = ours, prefix outside tenants/, segments checked)
 *       --> handler JSON: models.<param>.local_dir, benchmark_data {name, uri, dir}
 *       --> wk_store_fetch (the job's child, before exec): ListObjectsV2 of the prefix -->
 *           manifest "rel\tsize\tetag" lines --> equal to <dir>/.nexa-store? cached :
 *           download into <parent>/.fetch-XXXXXX, then rename onto <dir>
 *
 * The cache is <cache root>/<bucket>/<prefix>: one directory per prefix, so the handler's
 * path is known before the child runs. A model prefix with nothing under it fails the
 * attempt (infra: the operator's catalogue names an empty prefix); a benchmark prefix
 * with nothing under it removes the cached copy, and the handler falls back to its
 * bundled samples (and says so). Concurrent jobs may fetch the same prefix: each builds
 * its own temporary directory and only a copy that differs from what is in place
 * replaces it.
 */
#define _GNU_SOURCE /* mkdtemp */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_json.h"
#include "nf_mem.h"
#include "nf_s3.h"
#include "wk.h"

#define MANIFEST ".nexa-store"
#define STORE_MAX_FILES 10000
#define STORE_MAX_DEPTH 8

void wk_store_items_free(struct wk_store_items *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->v[i].uri);
        free(s->v[i].prefix);
        free(s->v[i].dir);
    }
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* Each '/'-separated segment of s[0..len) a valid segment; at most max_depth of them. */
static bool segments_valid(const char *s, size_t len, int max_depth)
{
    int depth = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '/')
            continue;
        if (!wk_segment_valid(s + start, i - start) || ++depth > max_depth)
            return false;
        start = i + 1;
    }
    return true;
}

int wk_store_prefix(const char *source, const char *bucket, char *prefix, size_t cap)
{
    size_t blen = bucket ? strlen(bucket) : 0;
    if (source == NULL || blen == 0 || strncmp(source, "s3://", 5) != 0 ||
        strncmp(source + 5, bucket, blen) != 0 || source[5 + blen] != '/')
        return -1;
    const char *p = source + 5 + blen + 1;
    size_t n = strlen(p);
    while (n > 0 && p[n - 1] == '/')
        n--;
    /* tenants/ holds the accounts' data: reached only as owner-checked inputs */
    if (n == 0 || n + 2 > cap || n + 1 > NF_S3_KEY_MAX || strncmp(p, "tenants/", 8) == 0 ||
        (n == 7 && strncmp(p, "tenants", 7) == 0) || !segments_valid(p, n, 32))
        return -1;
    memcpy(prefix, p, n);
    prefix[n] = '/';
    prefix[n + 1] = '\0';
    return 0;
}

static void add_item(struct wk_store_items *s, enum wk_store_kind kind, const char *param,
                     const char *uri, const char *prefix, const char *cache_root,
                     const char *bucket)
{
    struct wk_store_item *it;
    size_t n = strlen(cache_root) + strlen(bucket) + strlen(prefix) + 3;

    s->v = nf_xrealloc(s->v, (size_t)(s->n + 1) * sizeof(*s->v));
    it = &s->v[s->n++];
    memset(it, 0, sizeof(*it));
    it->kind = kind;
    snprintf(it->param, sizeof(it->param), "%s", param);
    it->uri = nf_xstrdup(uri);
    it->prefix = nf_xstrdup(prefix);
    it->dir = nf_xmalloc(n);
    snprintf(it->dir, n, "%s/%s/%.*s", cache_root, bucket, (int)(strlen(prefix) - 1), prefix);
}

static bool bench_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 32 || strcmp(s, "custom") == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

int wk_store_parse(const cJSON *doc, const char *bucket, const char *cache_root,
                   struct wk_store_items *out, char *err, size_t errlen)
{
    struct wk_store_items s = {0};
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(doc, "models"), *m;
    char prefix[NF_S3_KEY_MAX + 2];

    if (cache_root == NULL || cache_root[0] == '\0' || bucket == NULL) {
        *out = s; /* no cache configured (a bare test context): the handlers fall back */
        return 0;
    }
    if (cJSON_IsObject(models)) {
        cJSON_ArrayForEach(m, models)
        {
            const char *kind = nf_json_str(m, "kind");
            const char *src = nf_json_str(m, "source");
            if (!cJSON_IsObject(m) || kind == NULL || strcmp(kind, "base") != 0 || src == NULL ||
                strncmp(src, "s3://", 5) != 0)
                continue; /* not a base in the store: the handler knows it by name */
            if (!wk_param_valid(m->string) || s.n >= WK_STORE_MAX ||
                wk_store_prefix(src, bucket, prefix, sizeof(prefix)) < 0) {
                snprintf(err, errlen,
                         "model %.64s: source %.200s is not a prefix of the platform bucket %s "
                         "outside tenants/",
                         m->string ? m->string : "?", src, bucket);
                wk_store_items_free(&s);
                return -1;
            }
            add_item(&s, WK_STORE_MODEL, m->string, src, prefix, cache_root, bucket);
        }
    }
    const char *type = nf_json_str(doc, "job_type");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(doc, "params");
    const char *bench = nf_json_str(params, "benchmark");
    if (type != NULL && strcmp(type, "evaluate") == 0 && bench_name_valid(bench)) {
        char uri[NF_S3_KEY_MAX + 128];
        snprintf(prefix, sizeof(prefix), "benchmarks/%s/", bench);
        snprintf(uri, sizeof(uri), "s3://%s/%s", bucket, prefix);
        add_item(&s, WK_STORE_BENCHMARK, bench, uri, prefix, cache_root, bucket);
    }
    *out = s;
    return 0;
}

void wk_store_job_json(cJSON *hdoc, const struct wk_store_items *s)
{
    cJSON *models = cJSON_GetObjectItemCaseSensitive(hdoc, "models");
    for (int i = 0; i < s->n; i++) {
        const struct wk_store_item *it = &s->v[i];
        if (it->kind == WK_STORE_MODEL) {
            cJSON *m = cJSON_GetObjectItemCaseSensitive(models, it->param);
            cJSON_DeleteItemFromObjectCaseSensitive(m, "local_dir");
            nf_json_add_str(m, "local_dir", it->dir);
        } else {
            cJSON *b = nf_json_obj();
            nf_json_add_str(b, "name", it->param);
            nf_json_add_str(b, "uri", it->uri);
            nf_json_add_str(b, "dir", it->dir);
            cJSON_DeleteItemFromObjectCaseSensitive(hdoc, "benchmark_data");
            cJSON_AddItemToObject(hdoc, "benchmark_data", b);
        }
    }
}

/* ---- the fetch (blocking, in the job's child) ---- */

static void log_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_line(int fd, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *o = nf_json_obj();
    nf_json_add_str(o, "log", msg);
    char *text = nf_json_print(o);
    wk_write_all(fd, text, strlen(text));
    wk_write_all(fd, "\n", 1);
    free(text);
    cJSON_Delete(o);
}

/* mkdir -p of path's directories (0700), path itself included when last is true. */
static int mkdirs(char *path, bool last)
{
    size_t n = strlen(path);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && (path[i] != '\0' || !last))
            continue;
        char saved = path[i];
        path[i] = '\0';
        int rc = mkdir(path, 0700);
        path[i] = saved;
        if (rc < 0 && errno != EEXIST)
            return -1;
    }
    return 0;
}

/* The file's text (NUL-terminated, caller frees) or NULL. */
static char *read_small(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = nf_xmalloc(max + 1);
    size_t n = fread(buf, 1, max, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (more) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd);
}

static void set_why(struct wk_stage_err *why, const char *klass, const char *code, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

static void set_why(struct wk_stage_err *why, const char *klass, const char *code, const char *fmt,
                    ...)
{
    va_list ap;
    snprintf(why->klass, sizeof(why->klass), "%s", klass);
    snprintf(why->code, sizeof(why->code), "%s", code);
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(why->message, sizeof(why->message), fmt, ap);
    va_end(ap);
}

/* The manifest of a listing (files only: "directory" markers ending in '/' are skipped);
 * NULL when a key is not a safe relative path below the prefix. */
static char *manifest_of(const struct nf_s3_object *v, int n, const char *prefix, int *files,
                         long long *bytes)
{
    size_t plen = strlen(prefix), cap = 256, len = 0;
    char *m = nf_xmalloc(cap);
    m[0] = '\0';
    *files = 0;
    *bytes = 0;
    for (int i = 0; i < n; i++) {
        const char *rel = v[i].key + plen;
        size_t rlen = strlen(rel);
        if (strncmp(v[i].key, prefix, plen) != 0) {
            free(m);
            return NULL;
        }
        if (rlen == 0 || rel[rlen - 1] == '/')
            continue;
        if (!segments_valid(rel, rlen, STORE_MAX_DEPTH) || strcmp(rel, MANIFEST) == 0) {
            free(m);
            return NULL;
        }
        size_t need = rlen + strlen(v[i].etag) + 48;
        while (len + need >= cap)
            cap *= 2;
        m = nf_xrealloc(m, cap);
        len += (size_t)snprintf(m + len, cap - len, "%s\t%lld\t%s\n", rel, v[i].size, v[i].etag);
        (*files)++;
        *bytes += v[i].size;
    }
    return m;
}

/* <dir>/.nexa-store into out; false when it does not fit. */
static bool manifest_path(char *out, size_t cap, const char *dir)
{
    int n = snprintf(out, cap, "%s/%s", dir, MANIFEST);
    return n > 0 && (size_t)n < cap;
}

/* Downloads the listing into a new directory next to it->dir, then puts it in place.
 * 0 or -1 with why. */
static int fetch_into(const struct nf_s3_conf *conf, const struct wk_store_item *it,
                      const struct nf_s3_object *v, int n, const char *manifest,
                      struct wk_stage_err *why)
{
    char tmp[PATH_MAX], path[PATH_MAX], old[PATH_MAX], reason[256];
    size_t plen = strlen(it->prefix);
    const char *slash = strrchr(it->dir, '/');
    int parent = slash ? (int)(slash - it->dir) : 0;
    int rc = -1;

    snprintf(tmp, sizeof(tmp), "%.*s/.fetch-XXXXXX", parent, it->dir);
    if (mkdtemp(tmp) == NULL) {
        set_why(why, "infra", "store_fetch", "%s: cannot create a directory in the cache: %s",
                it->uri, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *rel = v[i].key + plen;
        size_t rlen = strlen(rel);
        if (rlen == 0 || rel[rlen - 1] == '/')
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", tmp, rel) >= sizeof(path) ||
            mkdirs(path, false) < 0) {
            set_why(why, "infra", "store_fetch", "%s: cannot create %s in the cache", it->uri, rel);
            goto out;
        }
        reason[0] = '\0';
        if (nf_s3_download_file(conf, v[i].key, path, 0, reason, sizeof(reason)) < 0) {
            set_why(why, "infra", "store_fetch", "%s: cannot fetch %s: %s", it->uri, rel,
                    reason[0] ? reason : "object store error");
            goto out;
        }
    }
    if (!manifest_path(path, sizeof(path), tmp) || write_file(path, manifest) < 0) {
        set_why(why, "infra", "store_fetch", "%s: cannot write its manifest: %s", it->uri,
                strerror(errno));
        goto out;
    }
    /* Another job may have put the same copy in place meanwhile: keep that one (its
     * handler may be reading it). Only a different copy is replaced. */
    char *have =
        manifest_path(path, sizeof(path), it->dir) ? read_small(path, (size_t)64 << 20) : NULL;
    bool same = have != NULL && strcmp(have, manifest) == 0;
    free(have);
    if (same) {
        rc = 0;
        goto out;
    }
    if (rename(tmp, it->dir) == 0) {
        tmp[0] = '\0';
        return 0;
    }
    snprintf(old, sizeof(old), "%.*s/.old-XXXXXX", parent, it->dir);
    if (mkdtemp(old) == NULL || rename(it->dir, old) < 0 || rename(tmp, it->dir) < 0) {
        set_why(why, "infra", "store_fetch", "%s: cannot put the copy in place: %s", it->uri,
                strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
    wk_rmtree(old);
    rc = 0;
out:
    if (tmp[0] != '\0')
        wk_rmtree(tmp);
    return rc;
}

/* One item: cached, fetched, or (a benchmark) none in the store. */
static int fetch_one(const struct nf_s3_conf *conf, const struct wk_store_item *it, int log_fd,
                     struct wk_stage_err *why)
{
    struct nf_s3_object *v = NULL;
    int n = 0, files = 0;
    long long bytes = 0;
    char reason[256] = "", path[PATH_MAX];
    const char *what = it->kind == WK_STORE_MODEL ? "base model" : "benchmark";

    int rc = nf_s3_list(conf, it->prefix, STORE_MAX_FILES, &v, &n, reason, sizeof(reason));
    if (rc < 0) {
        set_why(why, "infra", "store_fetch", "%s %s: cannot list %s: %s", what, it->param, it->uri,
                reason);
        return -1;
    }
    char *manifest = manifest_of(v, n, it->prefix, &files, &bytes);
    rc = -1;
    if (manifest == NULL) {
        set_why(why, "infra", "store_fetch", "%s %s: %s holds a key that is not a plain path", what,
                it->param, it->uri);
        goto out;
    }
    snprintf(path, sizeof(path), "%s", it->dir);
    if (mkdirs(path, false) < 0) {
        set_why(why, "infra", "store_fetch", "%s %s: cannot create the cache %s: %s", what,
                it->param, it->dir, strerror(errno));
        goto out;
    }
    if (files == 0) {
        if (it->kind == WK_STORE_MODEL) {
            set_why(why, "infra", "model_missing",
                    "base model %s: nothing under %s (the catalogue's source names an empty "
                    "prefix)",
                    it->param, it->uri);
            goto out;
        }
        wk_rmtree(it->dir); /* a copy the store no longer has */
        log_line(log_fd, "benchmark %s: no data under %s", it->param, it->uri);
        rc = 0;
        goto out;
    }
    char *have =
        manifest_path(path, sizeof(path), it->dir) ? read_small(path, (size_t)64 << 20) : NULL;
    bool same = have != NULL && strcmp(have, manifest) == 0;
    free(have);
    if (same) {
        log_line(log_fd, "%s %s: %s is in the worker's cache (%d files, %lld bytes)", what,
                 it->param, it->uri, files, bytes);
        rc = 0;
        goto out;
    }
    rc = fetch_into(conf, it, v, n, manifest, why);
    if (rc == 0)
        log_line(log_fd, "%s %s: fetched %s into the worker's cache (%d files, %lld bytes)", what,
                 it->param, it->uri, files, bytes);
out:
    free(manifest);
    nf_s3_objects_free(v, n);
    return rc;
}

int wk_store_fetch(const struct nf_s3_conf *conf, const struct wk_store_items *s, int log_fd,
                   struct wk_stage_err *why)
{
    for (int i = 0; i < s->n; i++)
        if (fetch_one(conf, &s->v[i], log_fd, why) < 0)
            return -1;
    return 0;
}
