/*
 * nf_s3_util: the parts of the S3 client that do no I/O — configuration, key encoding,
 * URLs and the options every curl handle gets, answer header and XML parsing — shared by
 * the async client (nf_s3.c, nf_s3_put.c) and the blocking helpers (nf_s3_sync.c).
 */
#define _GNU_SOURCE /* memmem */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nf_mem.h"
#include "nf_s3.h"
#include "nf_s3_internal.h"

/* ---- configuration ---- */

static bool fail(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
    return false;
}

static bool bucket_valid(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || !isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)b[i]) || isdigit((unsigned char)b[i]) || b[i] == '.' ||
              b[i] == '-'))
            return false;
    return true;
}

bool nf_s3_conf_check(const struct nf_s3_conf *conf, char *err, size_t errlen)
{
    if (conf == NULL)
        return fail(err, errlen, "no s3 configuration");
    const char *ep = conf->endpoint;
    if (ep == NULL || (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0))
        return fail(err, errlen, "endpoint: must start with http:// or https://");
    const char *host = ep + (ep[4] == 's' ? 8 : 7);
    if (*host == '\0' || *host == '/' || strpbrk(host, "?#@ ") != NULL)
        return fail(err, errlen, "endpoint: want http(s)://host[:port]");
    const char *slash = strchr(host, '/');
    if (slash != NULL && slash[1] != '\0')
        return fail(err, errlen, "endpoint: no path allowed (path-style bucket URLs)");
    if (conf->region != NULL && strpbrk(conf->region, ":/ ") != NULL)
        return fail(err, errlen, "region: bad characters");
    if (conf->access_key == NULL || conf->access_key[0] == '\0')
        return fail(err, errlen, "access_key: required");
    if (conf->secret_key == NULL || conf->secret_key[0] == '\0')
        return fail(err, errlen, "secret_key: required");
    if (conf->bucket == NULL || !bucket_valid(conf->bucket))
        return fail(err, errlen, "bucket: want 3..63 chars of [a-z0-9.-]");
    if (conf->timeout_ms < 0)
        return fail(err, errlen, "timeout_ms: must be >= 0");
    if (conf->part_size != 0 &&
        (conf->part_size < NF_S3_PART_MIN || conf->part_size > NF_S3_PART_MAX))
        return fail(err, errlen, "part_size: want 5 MiB..512 MiB");
    return true;
}

bool s3_cfg_init(struct s3_cfg *c, const struct nf_s3_conf *conf, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    if (!nf_s3_conf_check(conf, err, errlen))
        return false;
    c->endpoint = nf_xstrdup(conf->endpoint);
    size_t n = strlen(c->endpoint);
    if (c->endpoint[n - 1] == '/')
        c->endpoint[n - 1] = '\0';
    c->region = nf_xstrdup(conf->region != NULL && conf->region[0] ? conf->region : "us-east-1");
    c->access_key = nf_xstrdup(conf->access_key);
    c->secret_key = nf_xstrdup(conf->secret_key);
    c->bucket = nf_xstrdup(conf->bucket);
    size_t len = strlen(c->region) + 16;
    c->sigv4 = nf_xmalloc(len);
    snprintf(c->sigv4, len, "aws:amz:%s:s3", c->region);
    c->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : 30000;
    c->part_size = conf->part_size ? conf->part_size : NF_S3_PART_DEFAULT;
    return true;
}

void s3_cfg_clear(struct s3_cfg *c)
{
    free(c->endpoint);
    free(c->region);
    free(c->access_key);
    if (c->secret_key != NULL)
        memset(c->secret_key, 0, strlen(c->secret_key));
    free(c->secret_key);
    free(c->bucket);
    free(c->sigv4);
    memset(c, 0, sizeof(*c));
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        abort(); /* nothing works without it; as out of memory */
}

void s3_curl_init(void)
{
    pthread_once(&curl_once, curl_init_once);
}

/* ---- keys and URLs ---- */

bool nf_s3_key_valid(const char *key)
{
    if (key == NULL || key[0] == '\0' || key[0] == '/')
        return false;
    size_t n = strlen(key);
    if (n > NF_S3_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
            return false;
    /* "." and ".." segments: curl and the POSIX backend would resolve them */
    for (const char *seg = key; seg != NULL;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        seg = end ? end + 1 : NULL;
    }
    return true;
}

char *nf_s3_encode(const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = nf_xmalloc(n * 3 + 1);
    char *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' ||
            (ch == '/' && keep_slash)) {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}

char *s3_url(const struct s3_cfg *c, const char *key, const char *query)
{
    char *ekey = key ? nf_s3_encode(key, true) : nf_xstrdup("");
    size_t len =
        strlen(c->endpoint) + strlen(c->bucket) + strlen(ekey) + (query ? strlen(query) : 0) + 4;
    char *url = nf_xmalloc(len);
    snprintf(url, len, "%s/%s%s%s%s%s", c->endpoint, c->bucket, key ? "/" : "", ekey,
             query ? "?" : "", query ? query : "");
    free(ekey);
    return url;
}

struct curl_slist *s3_headers(const char *const *extra)
{
    struct curl_slist *h = NULL;
    /* the body is streamed, so it is not hashed; curl 7.88 signs this header as given */
    h = curl_slist_append(h, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        h = curl_slist_append(h, extra[i]);
    if (h == NULL)
        abort(); /* curl_slist_append fails only when out of memory */
    return h;
}

void s3_easy_setup(CURL *easy, const struct s3_cfg *c, const char *method, const char *url,
                   struct curl_slist *hdrs, long total_ms)
{
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_PATH_AS_IS, 1L); /* the signed path is the sent one */
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, c->sigv4);
    curl_easy_setopt(easy, CURLOPT_USERNAME, c->access_key);
    curl_easy_setopt(easy, CURLOPT_PASSWORD, c->secret_key);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
    if (total_ms > 0) {
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, total_ms);
    } else {
        /* a stall: less than 1 byte/s for timeout_ms (not counted while paused) */
        long stall_s = (c->timeout_ms + 999) / 1000;
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, stall_s);
    }
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 64L * 1024);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L); /* body from the read callback */
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "POST");
    } else if (strcmp(method, "DELETE") == 0) {
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
}

/* ---- buffers ---- */

void s3_buf_add(struct s3_buf *b, const char *p, size_t n)
{
    size_t room = b->max > b->len ? b->max - b->len : 0;
    if (n > room) {
        b->dropped += n - room;
        n = room;
    }
    if (n == 0)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = nf_xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void s3_buf_reset(struct s3_buf *b)
{
    b->len = 0;
    b->dropped = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void s3_buf_free(struct s3_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = b->dropped = 0;
}

/* ---- answer headers ---- */

void s3_head_reset(struct s3_head *h)
{
    memset(h, 0, sizeof(*h));
    h->length = -1;
    h->total = -1;
}

bool s3_parse_size(const char *s, size_t n, long long *out)
{
    if (n == 0 || n > 18)
        return false;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static void copy_value(char *out, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

void s3_head_line(struct s3_head *h, const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        s3_head_reset(h);
        const char *sp = memchr(line, ' ', len);
        long long st = 0;
        if (sp != NULL && (size_t)(line + len - sp) >= 4 && s3_parse_size(sp + 1, 3, &st))
            h->status = (int)st;
        return;
    }
    if (len == 0) {
        if (h->status >= 200)
            h->complete = true;
        return;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL)
        return;
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    if (nlen == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
        if (!s3_parse_size(v, vlen, &h->length))
            h->length = -1;
    } else if (nlen == 13 && strncasecmp(line, "Content-Range", 13) == 0) {
        /* "bytes a-b/total", or a star in place of a-b on a 416 */
        const char *slash = memchr(v, '/', vlen);
        if (slash == NULL || !s3_parse_size(slash + 1, (size_t)(v + vlen - slash - 1), &h->total))
            h->total = -1;
    } else if (nlen == 4 && strncasecmp(line, "ETag", 4) == 0) {
        copy_value(h->etag, sizeof(h->etag), v, vlen);
    } else if (nlen == 12 && strncasecmp(line, "Content-Type", 12) == 0) {
        copy_value(h->content_type, sizeof(h->content_type), v, vlen);
    }
}

/* ---- XML ---- */

static const char *find_bytes(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    if (nlen == 0 || hlen < nlen)
        return NULL;
    return memmem(hay, hlen, needle, nlen);
}

bool s3_xml_find(const char *xml, size_t len, const char *tag, size_t *pos, const char **val,
                 size_t *vlen)
{
    char open[80], close[80];
    int on = snprintf(open, sizeof(open), "<%s>", tag);
    int cn = snprintf(close, sizeof(close), "</%s>", tag);
    if (on <= 0 || (size_t)on >= sizeof(open) || cn <= 0 || (size_t)cn >= sizeof(close) ||
        *pos > len)
        return false;
    const char *o = find_bytes(xml + *pos, len - *pos, open, (size_t)on);
    if (o == NULL)
        return false;
    const char *start = o + on;
    const char *c = find_bytes(start, (size_t)(xml + len - start), close, (size_t)cn);
    if (c == NULL)
        return false;
    *val = start;
    *vlen = (size_t)(c - start);
    *pos = (size_t)(c + cn - xml);
    return true;
}

/* Decodes one entity at s[0] == '&'; returns its length or 0 when malformed. */
static size_t entity(const char *s, size_t n, char *out)
{
    static const struct {
        const char *name;
        char ch;
    } names[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t l = strlen(names[i].name);
        if (n >= l && memcmp(s, names[i].name, l) == 0) {
            *out = names[i].ch;
            return l;
        }
    }
    if (n < 4 || s[1] != '#')
        return 0;
    bool hexa = s[2] == 'x' || s[2] == 'X';
    size_t i = hexa ? 3 : 2;
    long v = 0;
    size_t digits = 0;
    for (; i < n && s[i] != ';' && digits < 8; i++, digits++) {
        int d = hexa && isxdigit((unsigned char)s[i])
                    ? (isdigit((unsigned char)s[i]) ? s[i] - '0' : (tolower(s[i]) - 'a' + 10))
                : !hexa && isdigit((unsigned char)s[i]) ? s[i] - '0'
                                                        : -1;
        if (d < 0)
            return 0;
        v = v * (hexa ? 16 : 10) + d;
    }
    if (digits == 0 || i >= n || s[i] != ';')
        return 0;
    if (v >= 0x20 && v < 0x7f)
        *out = (char)v;
    else
        *out = (v == '\t' || v == '\n' || v == '\r') ? ' ' : '?';
    return i + 1;
}

bool s3_xml_text(const char *val, size_t vlen, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < vlen;) {
        char ch = val[i];
        size_t step = 1;
        if (ch == '&') {
            step = entity(val + i, vlen - i, &ch);
            if (step == 0)
                return false;
        } else if (ch == '<') {
            return false; /* markup inside a text field: not what we read here */
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = ch;
        i += step;
    }
    if (cap == 0)
        return false;
    out[o] = '\0';
    return true;
}

bool s3_xml_get(const char *xml, size_t len, const char *tag, char *out, size_t cap)
{
    size_t pos = 0;
    const char *v;
    size_t vlen;
    return s3_xml_find(xml, len, tag, &pos, &v, &vlen) && s3_xml_text(v, vlen, out, cap);
}

bool s3_xml_error(const char *xml, size_t len, char *code, size_t ccap, char *msg, size_t mcap)
{
    size_t pos = 0;
    const char *v;
    size_t vlen;
    if (!s3_xml_find(xml, len, "Error", &pos, &v, &vlen))
        return false;
    if (!s3_xml_get(v, vlen, "Code", code, ccap))
        snprintf(code, ccap, "%s", "");
    if (!s3_xml_get(v, vlen, "Message", msg, mcap))
        snprintf(msg, mcap, "%s", "");
    return true;
}

int s3_list_page(const char *xml, size_t len, long long *objects, long long *bytes, bool *truncated,
                 char *token, size_t tcap)
{
    char flag[16];
    if (s3_xml_error(xml, len, flag, sizeof(flag), token, tcap))
        return -1;
    if (!s3_xml_get(xml, len, "IsTruncated", flag, sizeof(flag)))
        return -1; /* not a ListBucketResult */
    *truncated = strcmp(flag, "true") == 0;
    token[0] = '\0';
    size_t pos = 0;
    const char *v;
    size_t vlen;
    while (s3_xml_find(xml, len, "Contents", &pos, &v, &vlen)) {
        size_t p = 0;
        const char *sv;
        size_t slen;
        long long size;
        if (!s3_xml_find(v, vlen, "Size", &p, &sv, &slen) || !s3_parse_size(sv, slen, &size))
            return -1;
        (*objects)++;
        *bytes += size;
    }
    if (*truncated &&
        (!s3_xml_get(xml, len, "NextContinuationToken", token, tcap) || token[0] == '\0'))
        return -1;
    return 0;
}

/* ---- outcomes, retries and small checks ---- */

int s3_outcome(CURLcode rc, const char *curl_err, const struct s3_head *h,
               const struct s3_buf *resp, char *code, size_t ccap, char *msg, size_t mcap)
{
    code[0] = msg[0] = '\0';
    if (rc != CURLE_OK) {
        snprintf(msg, mcap, "%s", curl_err && curl_err[0] ? curl_err : curl_easy_strerror(rc));
        return 0;
    }
    int status = h->status;
    if (status >= 200 && status < 300)
        return status;
    if (!s3_xml_error(resp->data ? resp->data : "", resp->len, code, ccap, msg, mcap) ||
        code[0] == '\0') {
        /* no body (HEAD) or not S3's XML: name the status */
        snprintf(code, ccap, "%s",
                 status == 404   ? "NotFound"
                 : status == 403 ? "AccessDenied"
                 : status == 503 ? "ServiceUnavailable"
                                 : "HttpError");
    }
    if (msg[0] == '\0')
        snprintf(msg, mcap, "s3 answered %d %s", status, code);
    return status;
}

bool s3_retryable(int status, const char *code)
{
    if (status == 0 || status == 500 || status == 502 || status == 503 || status == 504)
        return true;
    return code != NULL && (strcmp(code, "SlowDown") == 0 || strcmp(code, "InternalError") == 0 ||
                            strcmp(code, "RequestTimeout") == 0);
}

int s3_backoff_ms(int attempt)
{
    int ms = 200;
    for (int i = 1; i < attempt && i < 8; i++)
        ms *= 4;
    return ms;
}

bool s3_range_valid(const char *range)
{
    if (range == NULL || strncmp(range, "bytes=", 6) != 0 || range[6] == '\0' ||
        strlen(range) > 256)
        return false;
    for (const char *p = range + 6; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != '-' && *p != ',')
            return false;
    return true;
}

char *s3_complete_body(char *const *etags, int n)
{
    struct s3_buf b = {.max = (size_t)-1};
    char line[S3_TEXT_MAX + 96];
    s3_buf_add(&b, "<CompleteMultipartUpload>", 25);
    for (int i = 0; i < n; i++) {
        /* ETags are hex in quotes; anything that needs escaping is escaped */
        int len = snprintf(line, sizeof(line), "<Part><PartNumber>%d</PartNumber><ETag>", i + 1);
        s3_buf_add(&b, line, (size_t)len);
        for (const char *e = etags[i]; *e; e++) {
            const char *esc = *e == '"'   ? "&quot;"
                              : *e == '&' ? "&amp;"
                              : *e == '<' ? "&lt;"
                              : *e == '>' ? "&gt;"
                                          : NULL;
            s3_buf_add(&b, esc ? esc : e, esc ? strlen(esc) : 1);
        }
        s3_buf_add(&b, "</ETag></Part>", 14);
    }
    s3_buf_add(&b, "</CompleteMultipartUpload>", 26);
    return b.data;
}
