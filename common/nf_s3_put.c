/*
 * nf_s3_put: the streaming upload. Two buffers: `fill` gathers the caller's bytes,
 * `sending` is the body of the one request in flight; they swap when a part is full and
 * nothing is in flight, so an upload holds about two parts.
 *
 *   write --> fill --full?--> [nothing in flight] swap --> no upload id yet:
 *        CreateMultipartUpload --> UploadPart 1 --> ... UploadPart n (one at a time)
 *   finish --> no upload id and fill <= one part: PutObject(fill)
 *          --> else the rest as the last part --> CompleteMultipartUpload --> done
 *   failure / cancel --> AbortMultipartUpload in the background (no owner) --> done / none
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_mem.h"
#include "nf_s3.h"
#include "nf_s3_internal.h"

enum put_step { STEP_NONE, STEP_CREATE, STEP_PART, STEP_PUT, STEP_COMPLETE };

struct nf_s3_put {
    struct s3_op op;
    struct nf_s3 *s3;
    char *key;
    char *ctype_hdr; /* "Content-Type: ..." */
    nf_s3_writable_cb on_writable;
    nf_s3_cb done;
    void *arg;
    struct s3_buf fill;    /* the caller's bytes not yet sent */
    struct s3_buf sending; /* the body of r (a part or the whole object) */
    struct s3_req *r;      /* the request in flight, or NULL */
    enum put_step step;    /* what r is */
    char *upload_id;       /* once CreateMultipartUpload answered */
    char **etags;          /* of parts 1..nparts */
    int nparts, cap_parts;
    char *complete_body;
    long long written;
    bool finished;      /* nf_s3_put_finish was called */
    bool want_writable; /* a write answered 1 */
    bool failed;        /* done is due from `later` with fail_res */
    bool in_done;       /* inside done (or on_writable): cancel only marks */
    bool cancelled;
    bool ended;          /* put_end runs: writes fail, finish does nothing */
    struct event *later; /* fires done for a failure found inside a call */
    char fail_code[S3_CODE_MAX];
    char fail_msg[S3_TEXT_MAX];
};

static void pump(struct nf_s3_put *p);

static void put_free(struct nf_s3_put *p)
{
    s3_op_unlink(p->s3, &p->op);
    s3_req_free(p->r);
    event_free(p->later);
    s3_buf_free(&p->fill);
    s3_buf_free(&p->sending);
    for (int i = 0; i < p->nparts; i++)
        free(p->etags[i]);
    free(p->etags);
    free(p->upload_id);
    free(p->complete_body);
    free(p->key);
    free(p->ctype_hdr);
    free(p);
}

/* The query naming the upload, with an optional part number first (sorted). */
static char *upload_query(const struct nf_s3_put *p, int part)
{
    char *eid = nf_s3_encode(p->upload_id, false);
    size_t len = strlen(eid) + 48;
    char *q = nf_xmalloc(len);
    if (part > 0)
        snprintf(q, len, "partNumber=%d&uploadId=%s", part, eid);
    else
        snprintf(q, len, "uploadId=%s", eid);
    free(eid);
    return q;
}

/* AbortMultipartUpload, owned by nobody: freed by the engine when it ends. */
static void abort_upload(struct nf_s3_put *p)
{
    if (p->upload_id == NULL || p->s3->closing)
        return;
    char *q = upload_query(p, 0);
    struct s3_req *r = s3_req_new(p->s3, "DELETE", p->key, q, NULL, NULL, 0, p->s3->cfg.timeout_ms);
    free(q);
    s3_req_start(r);
}

/* Ends the upload with res (a failure aborts the multipart upload): done, then free. */
static void put_end(struct nf_s3_put *p, const struct nf_s3_result *res)
{
    if (res->status < 200 || res->status >= 300)
        abort_upload(p);
    p->ended = true;
    p->in_done = true; /* a cancel in there changes nothing: p goes next */
    p->done(res, p->arg);
    put_free(p);
}

/* A failure found inside a caller's call: done fires from the loop. */
static void fail_later(struct nf_s3_put *p, const char *code, const char *msg)
{
    p->failed = true;
    snprintf(p->fail_code, sizeof(p->fail_code), "%s", code);
    snprintf(p->fail_msg, sizeof(p->fail_msg), "%s", msg);
    event_active(p->later, EV_TIMEOUT, 0);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
    struct nf_s3_put *p = arg;
    struct nf_s3_result res = {.status = 0, .bytes = p->written, .total = p->written};
    res.code = p->fail_code;
    res.error = p->fail_msg;
    put_end(p, &res);
}

/* Stops what is in flight, aborts a multipart upload, frees p: no callback after. */
static void cancel_now(struct nf_s3_put *p)
{
    s3_req_free(p->r);
    p->r = NULL;
    abort_upload(p);
    put_free(p);
}

static void req_done(struct s3_req *r);

/* Starts r for step with the body in p->sending (or body). */
static void start(struct nf_s3_put *p, enum put_step step, const char *method, const char *query,
                  const char *const *extra, const char *body, size_t len)
{
    /* the server assembles the object before it answers a complete: no byte moves then */
    long total_ms = step == STEP_COMPLETE ? 10L * p->s3->cfg.timeout_ms : 0;
    p->step = step;
    p->r = s3_req_new(p->s3, method, p->key, query, extra, body, len, total_ms);
    p->r->owner = p;
    p->r->done = req_done;
    s3_req_start(p->r);
}

static void swap_fill(struct nf_s3_put *p)
{
    struct s3_buf t = p->sending;
    p->sending = p->fill;
    p->fill = t;
    s3_buf_reset(&p->fill);
}

static void start_part(struct nf_s3_put *p)
{
    if (p->nparts >= NF_S3_MAX_PARTS) {
        fail_later(p, "TooManyParts", "upload exceeds 10000 parts");
        return;
    }
    char *q = upload_query(p, p->nparts + 1);
    start(p, STEP_PART, "PUT", q, NULL, p->sending.data, p->sending.len);
    free(q);
}

/* Starts the next request when none is in flight and there is something to send. */
static void pump(struct nf_s3_put *p)
{
    size_t part = p->s3->cfg.part_size;
    if (p->failed || p->r != NULL)
        return;
    if (p->sending.len > 0) { /* the first part, held while the upload was created */
        start_part(p);
        return;
    }
    if (p->upload_id == NULL) {
        if (p->finished && p->fill.len <= part) {
            swap_fill(p);
            const char *extra[] = {p->ctype_hdr, NULL};
            start(p, STEP_PUT, "PUT", NULL, extra, p->sending.data, p->sending.len);
        } else if (p->fill.len >= part) {
            swap_fill(p);
            const char *extra[] = {p->ctype_hdr, NULL};
            start(p, STEP_CREATE, "POST", "uploads=", extra, NULL, 0);
        }
        return;
    }
    if (p->fill.len >= part || (p->finished && p->fill.len > 0)) {
        swap_fill(p);
        start_part(p);
    } else if (p->finished) {
        free(p->complete_body);
        p->complete_body = s3_complete_body(p->etags, p->nparts);
        char *q = upload_query(p, 0);
        const char *extra[] = {"Content-Type: application/xml", NULL};
        start(p, STEP_COMPLETE, "POST", q, extra, p->complete_body, strlen(p->complete_body));
        free(q);
    }
}

/* The outcome of a 2xx answer, by step; false with res set when it is a failure. */
static bool step_ok(struct nf_s3_put *p, struct s3_req *r, struct nf_s3_result *res, char *etag,
                    size_t elen)
{
    const char *xml = r->resp.data ? r->resp.data : "";
    char id[S3_TOKEN_MAX];
    switch (p->step) {
    case STEP_CREATE:
        if (r->resp.dropped > 0 || !s3_xml_get(xml, r->resp.len, "UploadId", id, sizeof(id)) ||
            id[0] == '\0')
            break;
        p->upload_id = nf_xstrdup(id);
        return true;
    case STEP_PART:
        if (r->head.etag[0] == '\0')
            break;
        if (p->nparts == p->cap_parts) {
            p->cap_parts = p->cap_parts ? p->cap_parts * 2 : 16;
            p->etags = nf_xrealloc(p->etags, (size_t)p->cap_parts * sizeof(char *));
        }
        p->etags[p->nparts++] = nf_xstrdup(r->head.etag);
        return true;
    case STEP_PUT:
        snprintf(etag, elen, "%s", r->head.etag);
        return true;
    case STEP_COMPLETE:
        if (r->resp.dropped == 0 && s3_xml_get(xml, r->resp.len, "ETag", etag, elen))
            return true;
        break;
    case STEP_NONE:
        break;
    }
    res->status = 0;
    res->code = "BadResponse";
    res->error = "s3 answer without the expected field";
    return false;
}

static void req_done(struct s3_req *r)
{
    struct nf_s3_put *p = r->owner;
    struct nf_s3_result res;
    char etag[S3_TEXT_MAX] = "";
    s3_req_result(r, &res);
    res.bytes = res.total = p->written;
    if (r->status >= 200 && r->status < 300 && p->step == STEP_COMPLETE) {
        /* CompleteMultipartUpload may answer 200 and fail in the body */
        const char *xml = r->resp.data ? r->resp.data : "";
        if (s3_xml_error(xml, r->resp.len, r->code, sizeof(r->code), r->msg, sizeof(r->msg))) {
            if (s3_retryable(500, r->code) && s3_req_retry(r))
                return;
            r->status = 500;
            s3_req_result(r, &res);
            res.bytes = res.total = p->written;
        }
    }
    if (res.status < 200 || res.status >= 300 || !step_ok(p, r, &res, etag, sizeof(etag))) {
        put_end(p, &res);
        return;
    }
    enum put_step step = p->step;
    s3_req_free(p->r);
    p->r = NULL;
    if (step == STEP_PART)
        s3_buf_reset(&p->sending);
    if (step == STEP_PUT || step == STEP_COMPLETE) {
        res.etag = etag[0] ? etag : NULL;
        put_end(p, &res);
        return;
    }
    pump(p);
    if (p->want_writable && p->fill.len < p->s3->cfg.part_size && !p->failed) {
        p->want_writable = false;
        if (p->on_writable != NULL) {
            p->in_done = true; /* a cancel in there only marks */
            p->on_writable(p->arg);
            p->in_done = false;
            if (p->cancelled)
                cancel_now(p);
        }
    }
}

static void put_shutdown(struct s3_op *op)
{
    struct nf_s3_put *p = (struct nf_s3_put *)op;
    struct nf_s3_result res;
    s3_result_shutdown(&res);
    s3_req_free(p->r);
    p->r = NULL;
    put_end(p, &res); /* closing: no abort is sent */
}

struct nf_s3_put *nf_s3_put(struct nf_s3 *s3, const char *key, const char *content_type,
                            nf_s3_writable_cb on_writable, nf_s3_cb done, void *arg)
{
    if (s3->closing || !nf_s3_key_valid(key) || done == NULL)
        return NULL;
    const char *ct = content_type && content_type[0] ? content_type : "application/octet-stream";
    if (strlen(ct) > 255 || strpbrk(ct, "\r\n") != NULL)
        return NULL;
    struct nf_s3_put *p = nf_xcalloc(1, sizeof(*p));
    p->s3 = s3;
    p->key = nf_xstrdup(key);
    size_t len = strlen(ct) + 16;
    p->ctype_hdr = nf_xmalloc(len);
    snprintf(p->ctype_hdr, len, "Content-Type: %s", ct);
    p->on_writable = on_writable;
    p->done = done;
    p->arg = arg;
    p->fill.max = p->sending.max = (size_t)-1;
    p->later = event_new(s3->base, -1, 0, on_later, p);
    if (p->later == NULL)
        abort();
    s3_op_link(s3, &p->op, put_shutdown);
    return p;
}

int nf_s3_put_write(struct nf_s3_put *p, const void *buf, size_t len)
{
    if (p->failed || p->cancelled || p->ended || p->finished)
        return -1; /* finished: misuse */
    s3_buf_add(&p->fill, buf, len);
    p->written += (long long)len;
    pump(p);
    if (p->failed)
        return -1;
    if (p->fill.len >= p->s3->cfg.part_size) {
        p->want_writable = true;
        return 1;
    }
    return 0;
}

void nf_s3_put_finish(struct nf_s3_put *p)
{
    if (p->finished || p->cancelled || p->ended)
        return;
    p->finished = true;
    pump(p);
}

void nf_s3_put_cancel(struct nf_s3_put *p)
{
    if (p->cancelled)
        return;
    p->cancelled = true;
    if (!p->in_done)
        cancel_now(p); /* else the code around that callback finishes the job */
}
