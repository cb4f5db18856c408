/*
 * nf_s3_ops: the async operations but the upload — HEAD, DELETE, copy (one request each),
 * the paged listing of sum_prefix, and the streaming GET with backpressure — on the
 * engine of nf_s3.c.
 *
 *   GET: headers complete --2xx--> on_head --> body --> on_data (GO | PAUSE)
 *          PAUSE: the next write callback answers CURL_WRITEFUNC_PAUSE (curl keeps that
 *          buffer and stops reading the socket) ... nf_s3_get_resume --> event -->
 *          curl_easy_pause(CONT) redelivers it --> ... --> done
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_mem.h"
#include "nf_s3.h"
#include "nf_s3_internal.h"

/* ---- HEAD, DELETE, copy ---- */

enum simple_kind { SIMPLE_HEAD, SIMPLE_DELETE, SIMPLE_COPY };

struct s3_simple {
    struct s3_op op; /* first: the op is the struct */
    struct nf_s3 *s3;
    struct s3_req *r;
    enum simple_kind kind;
    nf_s3_cb done;
    void *arg;
};

static void simple_end(struct s3_simple *o, const struct nf_s3_result *res)
{
    s3_op_unlink(o->s3, &o->op);
    o->done(res, o->arg);
    s3_req_free(o->r);
    free(o);
}

static void simple_done(struct s3_req *r)
{
    struct s3_simple *o = r->owner;
    struct nf_s3_result res;
    char etag[S3_TEXT_MAX];
    s3_req_result(r, &res);
    if (o->kind == SIMPLE_HEAD && r->status == 200) {
        res.bytes = res.total = r->head.length;
        res.etag = r->head.etag[0] ? r->head.etag : NULL;
        res.content_type = r->head.content_type[0] ? r->head.content_type : NULL;
    } else if (o->kind == SIMPLE_COPY && r->status == 200) {
        const char *xml = r->resp.data ? r->resp.data : "";
        if (s3_xml_error(xml, r->resp.len, r->code, sizeof(r->code), r->msg, sizeof(r->msg))) {
            /* a 200 that failed while copying: as a 500 */
            if (s3_retryable(500, r->code) && s3_req_retry(r))
                return;
            r->status = 500;
            s3_req_result(r, &res);
        } else if (r->resp.dropped == 0 &&
                   s3_xml_get(xml, r->resp.len, "ETag", etag, sizeof(etag))) {
            res.etag = etag;
        } else {
            res.status = 0;
            res.code = "BadResponse";
            res.error = "copy answer without an ETag";
        }
    }
    simple_end(o, &res);
}

static void simple_shutdown(struct s3_op *op)
{
    struct s3_simple *o = (struct s3_simple *)op;
    struct nf_s3_result res;
    s3_result_shutdown(&res);
    s3_req_free(o->r);
    o->r = NULL;
    simple_end(o, &res);
}

static int simple_start(struct nf_s3 *s3, enum simple_kind kind, const char *method,
                        const char *key, const char *const *extra, long total_ms, nf_s3_cb done,
                        void *arg)
{
    struct s3_simple *o = nf_xcalloc(1, sizeof(*o));
    o->s3 = s3;
    o->kind = kind;
    o->done = done;
    o->arg = arg;
    o->r = s3_req_new(s3, method, key, NULL, extra, NULL, 0, total_ms);
    o->r->owner = o;
    o->r->done = simple_done;
    s3_op_link(s3, &o->op, simple_shutdown);
    s3_req_start(o->r);
    return 0;
}

int nf_s3_head(struct nf_s3 *s3, const char *key, nf_s3_cb done, void *arg)
{
    if (s3->closing || !nf_s3_key_valid(key) || done == NULL)
        return -1;
    return simple_start(s3, SIMPLE_HEAD, "HEAD", key, NULL, s3->cfg.timeout_ms, done, arg);
}

int nf_s3_delete(struct nf_s3 *s3, const char *key, nf_s3_cb done, void *arg)
{
    if (s3->closing || !nf_s3_key_valid(key) || done == NULL)
        return -1;
    return simple_start(s3, SIMPLE_DELETE, "DELETE", key, NULL, s3->cfg.timeout_ms, done, arg);
}

int nf_s3_copy(struct nf_s3 *s3, const char *src_key, const char *dst_key, nf_s3_cb done, void *arg)
{
    if (s3->closing || !nf_s3_key_valid(src_key) || !nf_s3_key_valid(dst_key) || done == NULL)
        return -1;
    char *esrc = nf_s3_encode(src_key, true);
    size_t len = strlen(esrc) + strlen(s3->cfg.bucket) + 32;
    char *hdr = nf_xmalloc(len);
    snprintf(hdr, len, "x-amz-copy-source: /%s/%s", s3->cfg.bucket, esrc);
    const char *extra[] = {hdr, NULL};
    int rc =
        simple_start(s3, SIMPLE_COPY, "PUT", dst_key, extra, 10L * s3->cfg.timeout_ms, done, arg);
    free(hdr);
    free(esrc);
    return rc;
}

/* ---- sum_prefix: ListObjectsV2, page by page ---- */

struct s3_sum {
    struct s3_op op;
    struct nf_s3 *s3;
    struct s3_req *r;
    char *prefix;
    char token[S3_TOKEN_MAX]; /* continuation token of the next page, "" for the first */
    long long objects, bytes;
    nf_s3_sum_cb done;
    void *arg;
};

static void sum_end(struct s3_sum *s, int status)
{
    s3_op_unlink(s->s3, &s->op);
    s3_req_free(s->r);
    s->done(status, s->objects, s->bytes, s->arg);
    free(s->prefix);
    free(s);
}

static void sum_done(struct s3_req *r);

static void sum_page(struct s3_sum *s)
{
    /* the query as curl 7.88 signs it: parameters sorted, values encoded, '=' always */
    char *epre = nf_s3_encode(s->prefix, false);
    char *etok = nf_s3_encode(s->token, false);
    size_t len = strlen(epre) + strlen(etok) + 96;
    char *query = nf_xmalloc(len);
    snprintf(query, len, "%s%s%slist-type=2&max-keys=1000&prefix=%s",
             s->token[0] ? "continuation-token=" : "", etok, s->token[0] ? "&" : "", epre);
    s->r = s3_req_new(s->s3, "GET", NULL, query, NULL, NULL, 0, s->s3->cfg.timeout_ms);
    s->r->resp.max = S3_LISTBODY_MAX;
    s->r->owner = s;
    s->r->done = sum_done;
    free(query);
    free(etok);
    free(epre);
    s3_req_start(s->r);
}

static void sum_done(struct s3_req *r)
{
    struct s3_sum *s = r->owner;
    if (r->status != 200) {
        sum_end(s, r->status);
        return;
    }
    char prev[S3_TOKEN_MAX];
    bool truncated = false;
    snprintf(prev, sizeof(prev), "%s", s->token);
    if (r->resp.dropped > 0 ||
        s3_list_page(r->resp.data ? r->resp.data : "", r->resp.len, &s->objects, &s->bytes,
                     &truncated, s->token, sizeof(s->token)) < 0) {
        sum_end(s, 0); /* a page that does not parse */
        return;
    }
    if (!truncated) {
        sum_end(s, 200);
        return;
    }
    if (strcmp(prev, s->token) == 0) {
        sum_end(s, 0); /* the same page again: the store loops */
        return;
    }
    s3_req_free(s->r);
    sum_page(s);
}

static void sum_shutdown(struct s3_op *op)
{
    sum_end((struct s3_sum *)op, 0);
}

int nf_s3_sum_prefix(struct nf_s3 *s3, const char *prefix, nf_s3_sum_cb done, void *arg)
{
    if (s3->closing || prefix == NULL || strlen(prefix) > NF_S3_KEY_MAX || done == NULL)
        return -1;
    struct s3_sum *s = nf_xcalloc(1, sizeof(*s));
    s->s3 = s3;
    s->prefix = nf_xstrdup(prefix);
    s->done = done;
    s->arg = arg;
    s3_op_link(s3, &s->op, sum_shutdown);
    sum_page(s);
    return 0;
}

/* ---- streaming GET ---- */

struct nf_s3_get {
    struct s3_op op;
    struct nf_s3 *s3;
    struct s3_req *r;
    nf_s3_cb on_head, done;
    nf_s3_data_cb on_data;
    void *arg;
    long long delivered; /* bytes handed to on_data */
    bool head_sent;      /* on_head fired: no retry from here on */
    bool user_paused;    /* on_data said PAUSE, no resume yet */
    bool curl_paused;    /* the write callback answered CURL_WRITEFUNC_PAUSE */
    bool cancelled;      /* cancel from inside a callback: freed on the way out */
    bool in_cb;          /* inside on_head / on_data (inside curl) */
    bool in_done;        /* inside done */
    struct event *unpause;
};

static void get_free(struct nf_s3_get *g)
{
    s3_op_unlink(g->s3, &g->op);
    s3_req_free(g->r);
    event_free(g->unpause);
    free(g);
}

/* The head of a 2xx answer as a result; strings point into g->r. */
static void get_head_result(struct nf_s3_get *g, struct nf_s3_result *res)
{
    const struct s3_head *h = &g->r->head;
    memset(res, 0, sizeof(*res));
    res->status = h->status;
    res->bytes = h->length;
    res->total = h->status == 206 ? h->total : h->length;
    res->etag = h->etag[0] ? h->etag : NULL;
    res->content_type = h->content_type[0] ? h->content_type : NULL;
}

static bool get_on_head(struct s3_req *r)
{
    struct nf_s3_get *g = r->owner;
    if (r->head.status != 200 && r->head.status != 206)
        return true; /* an error answer: its body goes to r->resp */
    g->head_sent = true;
    r->no_retry = true; /* the caller sees this answer from now on */
    if (g->on_head != NULL) {
        struct nf_s3_result res;
        get_head_result(g, &res);
        g->in_cb = true;
        g->on_head(&res, g->arg);
        g->in_cb = false;
    }
    return !g->cancelled;
}

static size_t get_sink(struct s3_req *r, const char *p, size_t n)
{
    struct nf_s3_get *g = r->owner;
    if (g->cancelled)
        return 0; /* aborts the transfer */
    if (g->user_paused) {
        g->curl_paused = true;
        return CURL_WRITEFUNC_PAUSE; /* curl keeps p and hands it again after CONT */
    }
    g->in_cb = true;
    int rc = g->on_data(p, n, g->arg);
    g->in_cb = false;
    if (g->cancelled)
        return 0;
    g->delivered += (long long)n;
    if (rc == NF_S3_PAUSE)
        g->user_paused = true;
    return n;
}

static void get_done(struct s3_req *r)
{
    struct nf_s3_get *g = r->owner;
    if (g->cancelled) {
        get_free(g);
        return;
    }
    struct nf_s3_result res;
    if (r->status == 200 || r->status == 206) {
        get_head_result(g, &res);
        res.bytes = g->delivered;
    } else {
        s3_req_result(r, &res);
        if (g->head_sent) {
            res.status = 0; /* broke after the head: the caller saw part of the object */
            if (res.error == NULL)
                res.error = "stream broken";
        }
    }
    g->in_done = true;
    g->done(&res, g->arg);
    get_free(g);
}

static void on_unpause(evutil_socket_t fd, short what, void *arg)
{
    struct nf_s3_get *g = arg;
    if (!g->curl_paused || g->user_paused)
        return;
    g->curl_paused = false;
    /* redelivers the kept buffer through get_sink, which may pause or cancel again */
    curl_easy_pause(g->r->easy, CURLPAUSE_CONT);
    if (g->cancelled)
        get_free(g);
}

static void get_shutdown(struct s3_op *op)
{
    struct nf_s3_get *g = (struct nf_s3_get *)op;
    struct nf_s3_result res;
    s3_result_shutdown(&res);
    nf_s3_cb done = g->done;
    void *arg = g->arg;
    bool cancelled = g->cancelled;
    get_free(g);
    if (!cancelled)
        done(&res, arg);
}

struct nf_s3_get *nf_s3_get(struct nf_s3 *s3, const char *key, const char *range, nf_s3_cb on_head,
                            nf_s3_data_cb on_data, nf_s3_cb done, void *arg)
{
    if (s3->closing || !nf_s3_key_valid(key) || (range != NULL && !s3_range_valid(range)) ||
        on_data == NULL || done == NULL)
        return NULL;
    struct nf_s3_get *g = nf_xcalloc(1, sizeof(*g));
    g->s3 = s3;
    g->on_head = on_head;
    g->on_data = on_data;
    g->done = done;
    g->arg = arg;
    g->unpause = event_new(s3->base, -1, 0, on_unpause, g);
    if (g->unpause == NULL)
        abort();
    char hdr[300];
    const char *extra[] = {hdr, NULL};
    if (range != NULL)
        snprintf(hdr, sizeof(hdr), "Range: %s", range);
    g->r = s3_req_new(s3, "GET", key, NULL, range ? extra : NULL, NULL, 0, 0);
    g->r->owner = g;
    g->r->on_head = get_on_head;
    g->r->sink = get_sink;
    g->r->done = get_done;
    s3_op_link(s3, &g->op, get_shutdown);
    s3_req_start(g->r);
    return g;
}

void nf_s3_get_resume(struct nf_s3_get *g)
{
    if (g->cancelled || g->in_done)
        return;
    g->user_paused = false;
    if (g->curl_paused)
        event_active(g->unpause, EV_TIMEOUT, 0);
}

void nf_s3_get_cancel(struct nf_s3_get *g)
{
    if (g->cancelled)
        return;
    if (g->in_cb || g->in_done) {
        g->cancelled = true; /* freed once the callback returns */
        g->r->no_retry = true;
        return;
    }
    get_free(g);
}
