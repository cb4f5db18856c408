/*
 * nf_s3's async engine against a scripted fake store (an nf_http server on a loopback port
 * that answers each request with the next scripted answer and records what it got): the
 * signing headers, retries with backoff on 5xx / SlowDown and none on 4xx, the multipart
 * upload's request sequence (upload id encoding, part ETags in the complete body, a 200
 * carrying an <Error>), the abort after a failed part, a small object as one PutObject,
 * bad arguments, and nf_s3_free during a backoff. The real server: test_it_nf_s3*.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_http.h"
#include "nf_s3.h"
#include "nf_test.h"

#define MAX_SCRIPT 16

struct answer {
    int status;
    const char *body;
    const char *etag; /* ETag header, or NULL */
};

struct seen {
    char method[8];
    char key[64];
    char query[128];
    char sha[32];   /* x-amz-content-sha256 */
    char auth[40];  /* start of Authorization */
    char ctype[64]; /* Content-Type */
    size_t len;     /* body length */
    char body[512]; /* its start */
};

struct fake {
    struct event_base *base;
    struct nf_http_server *srv;
    struct answer script[MAX_SCRIPT];
    int nscript;
    struct seen seen[MAX_SCRIPT];
    int nseen;
    long long at_ms[MAX_SCRIPT];
    struct nf_s3 *s3;
    struct nf_s3_conf conf;
    char endpoint[64];
};

static void copy(char *out, size_t cap, const char *s)
{
    snprintf(out, cap, "%s", s ? s : "");
}

static void on_request(struct nf_http_req *req, void *arg)
{
    struct fake *f = arg;
    assert_true(f->nseen < MAX_SCRIPT);
    struct seen *s = &f->seen[f->nseen];
    f->at_ms[f->nseen] = nf_test_now_ms();
    copy(s->method, sizeof(s->method), nf_http_req_method(req));
    copy(s->key, sizeof(s->key), nf_http_req_param(req, "key"));
    copy(s->query, sizeof(s->query), nf_http_req_query_string(req));
    copy(s->sha, sizeof(s->sha), nf_http_req_header(req, "x-amz-content-sha256"));
    copy(s->auth, sizeof(s->auth), nf_http_req_header(req, "Authorization"));
    copy(s->ctype, sizeof(s->ctype), nf_http_req_header(req, "Content-Type"));
    const char *body = nf_http_req_body(req, &s->len);
    copy(s->body, sizeof(s->body), body);
    const struct answer *a = &f->script[f->nseen];
    f->nseen++;
    if (f->nseen > f->nscript) {
        nf_http_reply_raw(req, 599, "text/plain", "unscripted", 10);
        return;
    }
    if (a->etag != NULL)
        nf_http_set_header(req, "ETag", a->etag);
    const char *b = a->body ? a->body : "";
    nf_http_reply_raw(req, a->status, "application/xml", b, strlen(b));
}

static void script(struct fake *f, const struct answer *answers, int n)
{
    assert_true(n <= MAX_SCRIPT);
    memcpy(f->script, answers, (size_t)n * sizeof(*answers));
    f->nscript = n;
    f->nseen = 0;
}

static int setup(void **state)
{
    struct fake *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    struct nf_http_limits limits = {.max_body = 16 * 1024 * 1024};
    assert_int_equal(nf_http_server_new(&f->srv, f->base, "127.0.0.1", 0, &limits, false, NULL), 0);
    static const char *const methods[] = {"GET", "PUT", "POST", "DELETE"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(nf_http_route(f->srv, methods[i], "/bkt/{key}", on_request, f), 0);
    snprintf(f->endpoint, sizeof(f->endpoint), "http://127.0.0.1:%d", nf_http_server_port(f->srv));
    f->conf = (struct nf_s3_conf){.endpoint = f->endpoint,
                                  .access_key = "ak",
                                  .secret_key = "sk",
                                  .bucket = "bkt",
                                  .timeout_ms = 3000,
                                  .part_size = NF_S3_PART_MIN};
    assert_int_equal(nf_s3_new(&f->s3, f->base, &f->conf), 0);
    nf_test_log_quiet();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fake *f = *state;
    nf_s3_free(f->s3);
    nf_http_server_free(f->srv);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* ---- recorders ---- */

struct rec {
    int calls, status;
    long long bytes;
    char code[64], etag[64], error[256];
    char data[64];
    size_t got;
};

static void on_result(const struct nf_s3_result *res, void *arg)
{
    struct rec *r = arg;
    r->calls++;
    r->status = res->status;
    r->bytes = res->bytes;
    copy(r->code, sizeof(r->code), res->code);
    copy(r->etag, sizeof(r->etag), res->etag);
    copy(r->error, sizeof(r->error), res->error);
}

static int on_data(const char *buf, size_t len, void *arg)
{
    struct rec *r = arg;
    if (r->got + len < sizeof(r->data))
        memcpy(r->data + r->got, buf, len);
    r->got += len;
    return NF_S3_GO;
}

static const char *err_xml(const char *code)
{
    static char buf[4][160];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, 160, "<?xml version=\"1.0\"?><Error><Code>%s</Code><Message>m %s</Message></Error>",
             code, code);
    return b;
}

/* ---- tests ---- */

static void test_get_retried_then_ok(void **state)
{
    struct fake *f = *state;
    const struct answer a[] = {{503, err_xml("SlowDown"), NULL},
                               {500, err_xml("InternalError"), NULL},
                               {200, "hello", "\"e\""}};
    script(f, a, 3);
    struct rec r = {0};
    long long t0 = nf_test_now_ms();
    assert_non_null(nf_s3_get(f->s3, "obj", NULL, NULL, on_data, on_result, &r));
    assert_true(nf_test_wait_count(f->base, &r.calls, 1, 5000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.bytes, 5);
    assert_string_equal(r.data, "hello");
    assert_int_equal(f->nseen, 3);
    /* the waits: 200 ms, then 800 ms */
    assert_true(f->at_ms[1] - f->at_ms[0] >= 190);
    assert_true(f->at_ms[2] - f->at_ms[1] >= 790);
    assert_true(nf_test_now_ms() - t0 < 3000);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(f->seen[i].sha, "UNSIGNED-PAYLOAD");
        assert_memory_equal(f->seen[i].auth, "AWS4-HMAC-SHA256 Credential=ak/", 31);
        assert_string_equal(f->seen[i].key, "obj");
    }
}

static void test_no_retry_on_4xx(void **state)
{
    struct fake *f = *state;
    const struct answer a[] = {{404, err_xml("NoSuchKey"), NULL},
                               {403, err_xml("AccessDenied"), NULL}};
    script(f, a, 2);
    struct rec r = {0};
    assert_non_null(nf_s3_get(f->s3, "obj", "bytes=0-9", NULL, on_data, on_result, &r));
    assert_true(nf_test_wait_count(f->base, &r.calls, 1, 5000));
    assert_int_equal(r.status, 404);
    assert_string_equal(r.code, "NoSuchKey");
    assert_string_equal(r.error, "m NoSuchKey");
    assert_int_equal(r.got, 0); /* the error body is not data */
    struct rec d = {0};
    assert_int_equal(nf_s3_delete(f->s3, "obj", on_result, &d), 0);
    assert_true(nf_test_wait_count(f->base, &d.calls, 1, 5000));
    nf_test_run_for(f->base, 300);
    assert_int_equal(d.status, 403);
    assert_string_equal(d.code, "AccessDenied");
    assert_int_equal(f->nseen, 2);
    assert_string_equal(f->seen[1].method, "DELETE");
}

static void test_retries_run_out(void **state)
{
    struct fake *f = *state;
    const struct answer a[] = {{503, err_xml("SlowDown"), NULL},
                               {503, err_xml("SlowDown"), NULL},
                               {502, "<html>bad gateway</html>", NULL},
                               {503, err_xml("SlowDown"), NULL}};
    script(f, a, 4);
    struct rec r = {0};
    assert_int_equal(nf_s3_delete(f->s3, "obj", on_result, &r), 0);
    assert_true(nf_test_wait_count(f->base, &r.calls, 1, 8000));
    assert_int_equal(r.status, 503);
    assert_string_equal(r.code, "SlowDown");
    assert_int_equal(f->nseen, 1 + NF_S3_RETRIES);
}

/* A put fed 64 KiB at a time whenever it is writable. */
struct feeder {
    struct nf_s3_put *put;
    struct event *ev;
    long long size, sent;
    struct rec done;
};

static void feed(evutil_socket_t fd, short what, void *arg)
{
    struct feeder *f = arg;
    static char buf[64 * 1024];
    while (f->sent < f->size) {
        size_t n =
            f->size - f->sent < (long long)sizeof(buf) ? (size_t)(f->size - f->sent) : sizeof(buf);
        memset(buf, 'a' + (int)(f->sent / (1024 * 1024)), n);
        int rc = nf_s3_put_write(f->put, buf, n);
        f->sent += (long long)n;
        if (rc != 0)
            return;
    }
    nf_s3_put_finish(f->put);
}

static void writable(void *arg)
{
    event_active(((struct feeder *)arg)->ev, EV_TIMEOUT, 0);
}

static void feeder_done(const struct nf_s3_result *res, void *arg)
{
    on_result(res, &((struct feeder *)arg)->done);
}

static void put_run(struct fake *f, struct feeder *fd, const char *key, long long size,
                    const char *ctype)
{
    memset(fd, 0, sizeof(*fd));
    fd->size = size;
    fd->put = nf_s3_put(f->s3, key, ctype, writable, feeder_done, fd);
    assert_non_null(fd->put);
    fd->ev = event_new(f->base, -1, 0, feed, fd);
    event_active(fd->ev, EV_TIMEOUT, 0);
    assert_true(nf_test_wait_count(f->base, &fd->done.calls, 1, 10000));
    nf_test_run_for(f->base, 50);
    assert_int_equal(fd->done.calls, 1);
    event_free(fd->ev);
}

static void test_multipart_sequence(void **state)
{
    struct fake *f = *state;
    const struct answer a[] = {
        {200,
         "<InitiateMultipartUploadResult><UploadId>u/1+2</UploadId>"
         "</InitiateMultipartUploadResult>",
         NULL},
        {200, "", "\"e1\""},
        {503, err_xml("SlowDown"), NULL}, /* part 2, retried */
        {200, "", "\"e2\""},
        {200, err_xml("InternalError"), NULL}, /* complete: a 200 that failed, retried */
        {200,
         "<CompleteMultipartUploadResult><ETag>&quot;x-2&quot;</ETag>"
         "</CompleteMultipartUploadResult>",
         NULL},
    };
    script(f, a, 6);
    struct feeder fd;
    long long size = 6LL * 1024 * 1024;
    put_run(f, &fd, "big", size, "text/csv");
    assert_int_equal(fd.done.status, 200);
    assert_string_equal(fd.done.etag, "\"x-2\"");
    assert_int_equal(fd.done.bytes, size);
    assert_int_equal(f->nseen, 6);
    assert_string_equal(f->seen[0].method, "POST");
    assert_string_equal(f->seen[0].query, "uploads=");
    assert_string_equal(f->seen[0].ctype, "text/csv");
    assert_string_equal(f->seen[1].method, "PUT");
    assert_string_equal(f->seen[1].query, "partNumber=1&uploadId=u%2F1%2B2");
    assert_int_equal(f->seen[1].len, NF_S3_PART_MIN);
    assert_string_equal(f->seen[3].query, "partNumber=2&uploadId=u%2F1%2B2");
    assert_int_equal(f->seen[3].len, size - NF_S3_PART_MIN);
    assert_int_equal(f->seen[2].len, f->seen[3].len); /* the retry sent the same part */
    assert_string_equal(f->seen[5].method, "POST");
    assert_string_equal(f->seen[5].query, "uploadId=u%2F1%2B2");
    assert_string_equal(f->seen[5].body,
                        "<CompleteMultipartUpload>"
                        "<Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag></Part>"
                        "<Part><PartNumber>2</PartNumber><ETag>&quot;e2&quot;</ETag></Part>"
                        "</CompleteMultipartUpload>");
}

static void test_failed_part_aborts(void **state)
{
    struct fake *f = *state;
    const struct answer a[] = {
        {200,
         "<InitiateMultipartUploadResult><UploadId>u9</UploadId>"
         "</InitiateMultipartUploadResult>",
         NULL},
        {400, err_xml("InvalidArgument"), NULL},
        {204, "", NULL}, /* the abort */
    };
    script(f, a, 3);
    struct feeder fd;
    put_run(f, &fd, "big", 7LL * 1024 * 1024, NULL);
    assert_int_equal(fd.done.status, 400);
    assert_string_equal(fd.done.code, "InvalidArgument");
    nf_test_run_for(f->base, 200);
    assert_int_equal(f->nseen, 3);
    assert_string_equal(f->seen[2].method, "DELETE");
    assert_string_equal(f->seen[2].query, "uploadId=u9");
}

static void test_small_is_one_put(void **state)
{
    struct fake *f = *state;
    const struct answer a[] = {{200, "", "\"s\""}};
    script(f, a, 1);
    struct feeder fd;
    put_run(f, &fd, "small", 10, NULL);
    assert_int_equal(fd.done.status, 200);
    assert_string_equal(fd.done.etag, "\"s\"");
    assert_int_equal(f->nseen, 1);
    assert_string_equal(f->seen[0].method, "PUT");
    assert_string_equal(f->seen[0].query, "");
    assert_string_equal(f->seen[0].ctype, "application/octet-stream");
    assert_string_equal(f->seen[0].body, "aaaaaaaaaa");
}

static void test_bad_answers(void **state)
{
    struct fake *f = *state;
    const struct answer a[] = {
        {200, "<InitiateMultipartUploadResult></InitiateMultipartUploadResult>", NULL}};
    script(f, a, 1);
    struct feeder fd;
    put_run(f, &fd, "big", 6LL * 1024 * 1024, NULL); /* no UploadId in the answer */
    assert_int_equal(fd.done.status, 0);
    assert_string_equal(fd.done.code, "BadResponse");
}

static void test_bad_arguments(void **state)
{
    struct fake *f = *state;
    struct rec r = {0};
    assert_int_equal(nf_s3_head(f->s3, "", on_result, &r), -1);
    assert_int_equal(nf_s3_delete(f->s3, "a/../b", on_result, &r), -1);
    assert_int_equal(nf_s3_copy(f->s3, "a", "/b", on_result, &r), -1);
    assert_null(nf_s3_get(f->s3, "a", "bytes=0-1\r\nX: y", NULL, on_data, on_result, &r));
    assert_null(nf_s3_get(f->s3, "a", NULL, NULL, NULL, on_result, &r));
    assert_null(nf_s3_put(f->s3, "a", "text/plain\r\nX: y", NULL, on_result, &r));
    struct nf_s3 *s3 = (struct nf_s3 *)&r; /* must stay untouched */
    struct nf_s3_conf bad = f->conf;
    bad.bucket = "BAD";
    assert_int_equal(nf_s3_new(&s3, f->base, &bad), -1);
    assert_ptr_equal(s3, (struct nf_s3 *)&r);
    nf_test_run_for(f->base, 50);
    assert_int_equal(r.calls, 0);
}

static void test_free_during_backoff(void **state)
{
    struct fake *f = *state;
    struct nf_s3_conf conf = f->conf;
    char ep[64];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", nf_test_closed_port());
    conf.endpoint = ep;
    struct nf_s3 *s3 = NULL;
    assert_int_equal(nf_s3_new(&s3, f->base, &conf), 0);
    struct rec h = {0};
    assert_int_equal(nf_s3_head(s3, "k", on_result, &h), 0);
    nf_test_run_for(f->base, 400); /* refused twice: waiting 800 ms now */
    assert_int_equal(h.calls, 0);
    nf_s3_free(s3);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.status, 0);
    assert_string_equal(h.code, "ShuttingDown");
}

int main(void)
{
    return NF_TEST_RUN(setup, teardown, test_get_retried_then_ok, test_no_retry_on_4xx,
                       test_retries_run_out, test_multipart_sequence, test_failed_part_aborts,
                       test_small_is_one_put, test_bad_answers, test_bad_arguments,
                       test_free_during_backoff);
}
