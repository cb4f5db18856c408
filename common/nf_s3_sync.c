/*
 * nf_s3_sync: the blocking helpers of the worker agent — download an object to a file,
 * upload a file to an object — each on its own curl easy handle, so several may run in
 * threads at once. Every request is retried on its own (transport errors, 5xx, SlowDown),
 * with the backoff of the async client.
 *
 *   upload: size <= part -> PutObject (body read from the file)
 *           else CreateMultipartUpload -> UploadPart 1..n (each read from its range of the
 *           file) -> CompleteMultipartUpload; AbortMultipartUpload when anything fails
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nf_mem.h"
#include "nf_s3.h"
#include "nf_s3_internal.h"

/* One blocking request and what it carries both ways. */
struct sreq {
    const struct s3_cfg *c;
    CURL *easy;
    /* request body: from fd's range [off, off + len), or from memory */
    int in_fd;
    long long in_off, in_len, in_pos;
    const char *body;
    size_t body_len;
    /* answer body: 2xx to out_fd when >= 0 (bounded by max), else kept in resp */
    int out_fd;
    long long max, got;
    bool too_big, io_failed;
    struct s3_head head;
    struct s3_buf resp;
    char curl_err[CURL_ERROR_SIZE];
    int status;
    char code[S3_CODE_MAX];
    char msg[S3_TEXT_MAX];
};

static void sreq_init(struct sreq *q, const struct s3_cfg *c)
{
    memset(q, 0, sizeof(*q));
    q->c = c;
    q->in_fd = q->out_fd = -1;
    q->resp.max = S3_ERRBODY_MAX;
}

static size_t s_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct sreq *q = arg;
    size_t n = size * nmemb;
    s3_head_line(&q->head, p, n);
    if (q->head.complete && q->out_fd >= 0 && q->head.status >= 200 && q->head.status < 300 &&
        q->max > 0 && q->head.length > q->max) {
        q->too_big = true;
        return 0;
    }
    return n;
}

static size_t s_write(char *p, size_t size, size_t nmemb, void *arg)
{
    struct sreq *q = arg;
    size_t n = size * nmemb;
    if (q->out_fd < 0 || q->head.status < 200 || q->head.status >= 300) {
        s3_buf_add(&q->resp, p, n);
        return n;
    }
    if (q->max > 0 && q->got + (long long)n > q->max) {
        q->too_big = true;
        return 0;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(q->out_fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            q->io_failed = true;
            snprintf(q->msg, sizeof(q->msg), "write: %s", strerror(errno));
            return 0;
        }
        off += (size_t)w;
    }
    q->got += (long long)n;
    return n;
}

static size_t s_read(char *buf, size_t size, size_t nmemb, void *arg)
{
    struct sreq *q = arg;
    size_t n = size * nmemb;
    if (q->in_fd < 0) {
        size_t left = q->body_len - (size_t)q->in_pos;
        if (n > left)
            n = left;
        memcpy(buf, q->body + q->in_pos, n);
        q->in_pos += (long long)n;
        return n;
    }
    long long left = q->in_len - q->in_pos;
    if ((long long)n > left)
        n = (size_t)left;
    if (n == 0)
        return 0;
    ssize_t r;
    do
        r = pread(q->in_fd, buf, n, (off_t)(q->in_off + q->in_pos));
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        q->io_failed = true;
        snprintf(q->msg, sizeof(q->msg), "read: %s", r < 0 ? strerror(errno) : "file shrank");
        return CURL_READFUNC_ABORT;
    }
    q->in_pos += r;
    return (size_t)r;
}

static int s_seek(void *arg, curl_off_t off, int origin)
{
    struct sreq *q = arg;
    long long len = q->in_fd >= 0 ? q->in_len : (long long)q->body_len;
    if (origin != SEEK_SET || off < 0 || off > len)
        return CURL_SEEKFUNC_FAIL;
    q->in_pos = off;
    return CURL_SEEKFUNC_OK;
}

/* One try of q; sets status, code, msg. */
static void sreq_try(struct sreq *q, const char *method, const char *url, struct curl_slist *hdrs,
                     long total_ms)
{
    s3_head_reset(&q->head);
    s3_buf_reset(&q->resp);
    q->in_pos = 0;
    q->got = 0;
    q->curl_err[0] = '\0';
    if (q->out_fd >= 0 && (ftruncate(q->out_fd, 0) != 0 || lseek(q->out_fd, 0, SEEK_SET) != 0)) {
        q->io_failed = true;
        snprintf(q->msg, sizeof(q->msg), "truncate: %s", strerror(errno));
        return;
    }
    curl_easy_reset(q->easy);
    s3_easy_setup(q->easy, q->c, method, url, hdrs, total_ms);
    curl_easy_setopt(q->easy, CURLOPT_ERRORBUFFER, q->curl_err);
    curl_easy_setopt(q->easy, CURLOPT_HEADERFUNCTION, s_header);
    curl_easy_setopt(q->easy, CURLOPT_HEADERDATA, q);
    curl_easy_setopt(q->easy, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt(q->easy, CURLOPT_WRITEDATA, q);
    if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0) {
        curl_easy_setopt(q->easy, CURLOPT_READFUNCTION, s_read);
        curl_easy_setopt(q->easy, CURLOPT_READDATA, q);
        curl_easy_setopt(q->easy, CURLOPT_SEEKFUNCTION, s_seek);
        curl_easy_setopt(q->easy, CURLOPT_SEEKDATA, q);
        curl_easy_setopt(q->easy, CURLOPT_INFILESIZE_LARGE,
                         (curl_off_t)(q->in_fd >= 0 ? q->in_len : (long long)q->body_len));
    }
    CURLcode rc = curl_easy_perform(q->easy);
    q->status = s3_outcome(rc, q->curl_err, &q->head, &q->resp, q->code, sizeof(q->code), q->msg,
                           sizeof(q->msg));
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * Runs q (key NULL: the bucket; query as for s3_url; extra headers) with retries. 0 on a
 * 2xx; -1 with q's status, code and msg otherwise. A 2xx XML answer carrying <Error>
 * (CompleteMultipartUpload) counts as a 500 with that code.
 */
static int sreq_run(struct sreq *q, const char *method, const char *key, const char *query,
                    const char *const *extra, long total_ms)
{
    char *url = s3_url(q->c, key, query);
    struct curl_slist *hdrs = s3_headers(extra);
    int rc = -1;
    for (int attempt = 0;; attempt++) {
        q->io_failed = q->too_big = false;
        sreq_try(q, method, url, hdrs, total_ms);
        if (q->status >= 200 && q->status < 300 && q->out_fd < 0 &&
            s3_xml_error(q->resp.data ? q->resp.data : "", q->resp.len, q->code, sizeof(q->code),
                         q->msg, sizeof(q->msg)))
            q->status = 500;
        if (q->io_failed || q->too_big)
            break;
        if (q->status >= 200 && q->status < 300) {
            rc = 0;
            break;
        }
        if (attempt >= NF_S3_RETRIES || !s3_retryable(q->status, q->code))
            break;
        sleep_ms(s3_backoff_ms(attempt + 1));
    }
    curl_slist_free_all(hdrs);
    free(url);
    return rc;
}

__attribute__((format(printf, 3, 4))) static void errf(char *err, size_t errlen, const char *fmt,
                                                       ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void set_err(char *err, size_t errlen, const char *what, const struct sreq *q)
{
    if (q->status > 0)
        errf(err, errlen, "%s: %d %s: %s", what, q->status, q->code, q->msg);
    else
        errf(err, errlen, "%s: %s", what, q->msg[0] ? q->msg : "failed");
}

int nf_s3_download_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                        long long max_bytes, char *err, size_t errlen)
{
    struct s3_cfg c;
    struct sreq q;
    int rc = -EIO;
    if (!s3_cfg_init(&c, conf, err, errlen))
        return -EIO;
    if (!nf_s3_key_valid(key)) {
        errf(err, errlen, "bad key");
        goto out_cfg;
    }
    s3_curl_init();
    sreq_init(&q, &c);
    size_t plen = strlen(path) + 5;
    char *tmp = nf_xmalloc(plen);
    snprintf(tmp, plen, "%s.tmp", path);
    q.out_fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (q.out_fd < 0 || fchmod(q.out_fd, 0600) != 0) {
        errf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out_tmp;
    }
    q.max = max_bytes;
    q.easy = curl_easy_init();
    if (q.easy == NULL)
        abort();
    if (sreq_run(&q, "GET", key, NULL, NULL, 0) != 0) {
        if (q.too_big) {
            errf(err, errlen, "download %s: object larger than %lld bytes", key, max_bytes);
            rc = -EFBIG;
        } else {
            set_err(err, errlen, "download", &q);
            rc = q.status == 404 ? -ENOENT : -EIO;
        }
    } else if (q.head.length >= 0 && q.got != q.head.length) {
        errf(err, errlen, "download %s: %lld of %lld bytes", key, q.got, q.head.length);
    } else if (fsync(q.out_fd) != 0) {
        errf(err, errlen, "fsync %s: %s", tmp, strerror(errno));
    } else if (rename(tmp, path) != 0) {
        errf(err, errlen, "rename %s: %s", path, strerror(errno));
    } else {
        rc = 0;
    }
    curl_easy_cleanup(q.easy);
out_tmp:
    if (q.out_fd >= 0)
        close(q.out_fd);
    if (rc != 0)
        unlink(tmp);
    free(tmp);
    s3_buf_free(&q.resp);
out_cfg:
    s3_cfg_clear(&c);
    return rc;
}

/* Sends parts 1..n of the file (q->in_fd) and completes upload `eid` (encoded). */
static int send_parts(struct sreq *q, const char *key, const char *eid, long long size, char *err,
                      size_t errlen)
{
    const struct s3_cfg *c = q->c;
    long long part = (long long)c->part_size;
    long long nparts = (size + part - 1) / part;
    if (nparts > NF_S3_MAX_PARTS) {
        errf(err, errlen, "upload: the file needs more than %d parts", NF_S3_MAX_PARTS);
        return -EIO;
    }
    size_t qlen = strlen(eid) + 48;
    char *query = nf_xmalloc(qlen);
    char **etags = nf_xcalloc((size_t)nparts, sizeof(char *));
    int rc = 0;
    for (long long i = 0; i < nparts && rc == 0; i++) {
        q->in_off = i * part;
        q->in_len = size - q->in_off < part ? size - q->in_off : part;
        snprintf(query, qlen, "partNumber=%lld&uploadId=%s", i + 1, eid);
        if (sreq_run(q, "PUT", key, query, NULL, 0) != 0 || q->head.etag[0] == '\0') {
            set_err(err, errlen, "upload part", q);
            rc = -EIO;
        } else {
            etags[i] = nf_xstrdup(q->head.etag);
        }
    }
    if (rc == 0) {
        char *body = s3_complete_body(etags, (int)nparts);
        const char *xml_hdr[] = {"Content-Type: application/xml", NULL};
        int fd = q->in_fd;
        q->in_fd = -1;
        q->body = body;
        q->body_len = strlen(body);
        snprintf(query, qlen, "uploadId=%s", eid);
        if (sreq_run(q, "POST", key, query, xml_hdr, 10L * c->timeout_ms) != 0) {
            set_err(err, errlen, "complete multipart upload", q);
            rc = -EIO;
        }
        q->in_fd = fd;
        q->body = NULL;
        q->body_len = 0;
        free(body);
    }
    for (long long i = 0; i < nparts; i++)
        free(etags[i]);
    free(etags);
    free(query);
    return rc;
}

/* Uploads the file in parts: create, parts, complete; abort on failure. */
static int upload_multipart(struct sreq *q, const char *key, const char *ctype_hdr, long long size,
                            char *err, size_t errlen)
{
    const char *extra[] = {ctype_hdr, NULL};
    char id[S3_TOKEN_MAX];
    int fd = q->in_fd;
    q->in_fd = -1; /* the create has no body */
    int rc = sreq_run(q, "POST", key, "uploads=", extra, q->c->timeout_ms);
    q->in_fd = fd;
    if (rc != 0) {
        set_err(err, errlen, "create multipart upload", q);
        return -EIO;
    }
    if (!s3_xml_get(q->resp.data ? q->resp.data : "", q->resp.len, "UploadId", id, sizeof(id)) ||
        id[0] == '\0') {
        errf(err, errlen, "create multipart upload: no UploadId in the answer");
        return -EIO;
    }
    char *eid = nf_s3_encode(id, false);
    rc = send_parts(q, key, eid, size, err, errlen);
    if (rc != 0) {
        struct sreq a;
        size_t qlen = strlen(eid) + 16;
        char *query = nf_xmalloc(qlen);
        snprintf(query, qlen, "uploadId=%s", eid);
        sreq_init(&a, q->c);
        a.easy = q->easy;
        sreq_run(&a, "DELETE", key, query, NULL, q->c->timeout_ms); /* best effort */
        s3_buf_free(&a.resp);
        free(query);
    }
    free(eid);
    return rc;
}

int nf_s3_upload_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                      const char *content_type, char *err, size_t errlen)
{
    struct s3_cfg c;
    struct sreq q;
    struct stat st;
    int rc = -EIO;
    if (!s3_cfg_init(&c, conf, err, errlen))
        return -EIO;
    if (!nf_s3_key_valid(key)) {
        errf(err, errlen, "bad key");
        goto out_cfg;
    }
    const char *ct = content_type && content_type[0] ? content_type : "application/octet-stream";
    if (strlen(ct) > 255 || strpbrk(ct, "\r\n") != NULL) {
        errf(err, errlen, "bad content type");
        goto out_cfg;
    }
    s3_curl_init();
    sreq_init(&q, &c);
    q.in_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (q.in_fd < 0 || fstat(q.in_fd, &st) != 0) {
        rc = errno == ENOENT ? -ENOENT : -EIO;
        errf(err, errlen, "%s: %s", path, strerror(errno));
        goto out_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        errf(err, errlen, "%s: not a regular file", path);
        goto out_fd;
    }
    char ctype_hdr[300];
    snprintf(ctype_hdr, sizeof(ctype_hdr), "Content-Type: %s", ct);
    q.easy = curl_easy_init();
    if (q.easy == NULL)
        abort();
    if ((unsigned long long)st.st_size <= c.part_size) {
        const char *extra[] = {ctype_hdr, NULL};
        q.in_off = 0;
        q.in_len = st.st_size;
        rc = sreq_run(&q, "PUT", key, NULL, extra, 0) == 0 ? 0 : -EIO;
        if (rc != 0)
            set_err(err, errlen, "upload", &q);
    } else {
        rc = upload_multipart(&q, key, ctype_hdr, st.st_size, err, errlen);
    }
    curl_easy_cleanup(q.easy);
out_fd:
    if (q.in_fd >= 0)
        close(q.in_fd);
    s3_buf_free(&q.resp);
out_cfg:
    s3_cfg_clear(&c);
    return rc;
}

/* ---- listing a prefix ---- */

void nf_s3_objects_free(struct nf_s3_object *v, int n)
{
    for (int i = 0; v != NULL && i < n; i++)
        free(v[i].key);
    free(v);
}

/* The <Contents> of one ListObjectsV2 page appended to *v (n entries, cap slots). -1 when
 * the page does not parse, -E2BIG past max_keys. */
static int list_entries(const char *xml, size_t len, struct nf_s3_object **v, int *n, int *cap,
                        int max_keys)
{
    size_t pos = 0;
    const char *c;
    size_t clen;
    char key[NF_S3_KEY_MAX + 1];

    while (s3_xml_find(xml, len, "Contents", &pos, &c, &clen)) {
        size_t p = 0;
        const char *sv;
        size_t slen;
        long long size;
        if (!s3_xml_get(c, clen, "Key", key, sizeof(key)) ||
            !s3_xml_find(c, clen, "Size", &p, &sv, &slen) || !s3_parse_size(sv, slen, &size))
            return -1;
        if (*n >= max_keys)
            return -E2BIG;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *v = nf_xrealloc(*v, (size_t)*cap * sizeof(**v));
        }
        struct nf_s3_object *o = &(*v)[(*n)++];
        memset(o, 0, sizeof(*o));
        o->key = nf_xstrdup(key);
        o->size = size;
        if (!s3_xml_get(c, clen, "ETag", o->etag, sizeof(o->etag)))
            o->etag[0] = '\0';
    }
    return 0;
}

int nf_s3_list(const struct nf_s3_conf *conf, const char *prefix, int max_keys,
               struct nf_s3_object **out, int *nout, char *err, size_t errlen)
{
    struct s3_cfg c;
    struct sreq q;
    struct nf_s3_object *v = NULL;
    int n = 0, cap = 0, rc = -EIO;
    char token[S3_TOKEN_MAX] = "", flag[16];

    if (!s3_cfg_init(&c, conf, err, errlen))
        return -EIO;
    if (strlen(prefix) > NF_S3_KEY_MAX) {
        errf(err, errlen, "prefix too long");
        goto out_cfg;
    }
    s3_curl_init();
    sreq_init(&q, &c);
    q.resp.max = S3_LISTBODY_MAX;
    q.easy = curl_easy_init();
    if (q.easy == NULL)
        abort();
    for (;;) {
        /* the query as curl 7.88 signs it: parameters sorted, values encoded */
        char *epre = nf_s3_encode(prefix, false), *etok = nf_s3_encode(token, false);
        size_t len = strlen(epre) + strlen(etok) + 96;
        char *query = nf_xmalloc(len);
        snprintf(query, len, "%s%s%slist-type=2&max-keys=1000&prefix=%s",
                 token[0] ? "continuation-token=" : "", etok, token[0] ? "&" : "", epre);
        int run = sreq_run(&q, "GET", NULL, query, NULL, (long)c.timeout_ms);
        free(query);
        free(etok);
        free(epre);
        if (run != 0) {
            set_err(err, errlen, "list", &q);
            break;
        }
        const char *xml = q.resp.data ? q.resp.data : "";
        int got = q.resp.dropped ? -1 : list_entries(xml, q.resp.len, &v, &n, &cap, max_keys);
        if (got == -E2BIG) {
            errf(err, errlen, "more than %d objects under %s", max_keys, prefix);
            rc = -E2BIG;
            break;
        }
        if (got < 0 || !s3_xml_get(xml, q.resp.len, "IsTruncated", flag, sizeof(flag))) {
            errf(err, errlen, "list: the store's answer does not parse");
            break;
        }
        if (strcmp(flag, "true") != 0) {
            rc = 0;
            break;
        }
        if (!s3_xml_get(xml, q.resp.len, "NextContinuationToken", token, sizeof(token)) ||
            token[0] == '\0') {
            errf(err, errlen, "list: truncated answer without a continuation token");
            break;
        }
    }
    curl_easy_cleanup(q.easy);
    s3_buf_free(&q.resp);
    if (rc == 0) {
        *out = v;
        *nout = n;
        v = NULL;
    }
    nf_s3_objects_free(v, n);
out_cfg:
    s3_cfg_clear(&c);
    return rc;
}
