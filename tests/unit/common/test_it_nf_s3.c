/*
 * nf_s3's async client against a real S3 server (NF_TEST_S3_ENDPOINT, NF_TEST_S3_ACCESS_KEY,
 * NF_TEST_S3_SECRET_KEY, NF_TEST_S3_BUCKET; skipped when unset): streaming puts (one
 * PutObject, multipart with backpressure), HEAD, whole and ranged GETs with pauses, copy,
 * delete, the 404s, cancels, a pause longer than the stall timeout, nf_s3_free with
 * operations pending. Every key is under a per-run prefix and deleted at the end.
 * NF_TEST_S3_MEM=1 adds a 100 MiB put and get that print the process's RSS growth.
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

#include "nf_s3.h"
#include "nf_test.h"

#define MIB (1024 * 1024)

struct env {
    struct event_base *base;
    struct nf_s3_conf conf;
    struct nf_s3 *s3;
    char tag[96]; /* key prefix of this run, ends with '/' */
};

/* The byte at offset i of the test object made with seed. */
static unsigned char pattern(long long i, int seed)
{
    unsigned long long x = (unsigned long long)i * 0x9E3779B97F4A7C15ull + (unsigned)seed;
    return (unsigned char)(x >> 29);
}

static void key(struct env *e, char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s%s", e->tag, name);
}

/* ---- recording a result ---- */

struct rec {
    int calls;
    int status;
    long long bytes, total;
    char etag[128], content_type[128], code[64], error[256];
};

static void on_result(const struct nf_s3_result *res, void *arg)
{
    struct rec *r = arg;
    r->calls++;
    r->status = res->status;
    r->bytes = res->bytes;
    r->total = res->total;
    snprintf(r->etag, sizeof(r->etag), "%s", res->etag ? res->etag : "");
    snprintf(r->content_type, sizeof(r->content_type), "%s",
             res->content_type ? res->content_type : "");
    snprintf(r->code, sizeof(r->code), "%s", res->code ? res->code : "");
    snprintf(r->error, sizeof(r->error), "%s", res->error ? res->error : "");
}

static bool rec_called(void *arg)
{
    return ((struct rec *)arg)->calls > 0;
}

static void wait_rec(struct env *e, struct rec *r, int ms)
{
    assert_true(nf_test_run_until(e->base, rec_called, r, ms));
    nf_test_run_for(e->base, 20); /* a second call would show here */
    assert_int_equal(r->calls, 1);
}

static void head(struct env *e, const char *k, struct rec *r)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(nf_s3_head(e->s3, k, on_result, r), 0);
    wait_rec(e, r, 10000);
}

static void del(struct env *e, const char *k)
{
    struct rec r = {0};
    assert_int_equal(nf_s3_delete(e->s3, k, on_result, &r), 0);
    wait_rec(e, &r, 10000);
    assert_int_equal(r.status, 204);
}

/* ---- a streaming put fed from the loop ---- */

struct feeder {
    struct env *e;
    struct nf_s3_put *put;
    struct event *ev;
    long long size, sent;
    size_t chunk;
    int seed;
    int fulls;           /* writes that answered 1 */
    bool waiting;        /* for on_writable */
    long long cancel_at; /* > 0: cancel once this much is sent */
    bool cancelled;
    struct rec done;
};

static void feed(evutil_socket_t fd, short what, void *arg)
{
    struct feeder *f = arg;
    unsigned char buf[256 * 1024];
    for (int n = 0; n < 8 && f->sent < f->size; n++) {
        size_t len =
            f->size - f->sent < (long long)f->chunk ? (size_t)(f->size - f->sent) : f->chunk;
        for (size_t i = 0; i < len; i++)
            buf[i] = pattern(f->sent + (long long)i, f->seed);
        int rc = nf_s3_put_write(f->put, buf, len);
        assert_int_not_equal(rc, -1);
        f->sent += (long long)len;
        if (f->cancel_at > 0 && f->sent >= f->cancel_at) {
            nf_s3_put_cancel(f->put);
            f->cancelled = true;
            return;
        }
        if (rc == 1) {
            f->fulls++;
            f->waiting = true;
            return; /* on_writable re-arms */
        }
    }
    if (f->sent < f->size)
        event_active(f->ev, EV_TIMEOUT, 0);
    else
        nf_s3_put_finish(f->put);
}

static void on_writable(void *arg)
{
    struct feeder *f = arg;
    assert_true(f->waiting);
    f->waiting = false;
    event_active(f->ev, EV_TIMEOUT, 0);
}

static void put_done(const struct nf_s3_result *res, void *arg)
{
    on_result(res, &((struct feeder *)arg)->done);
}

/* Streams size bytes of pattern(seed) to k in chunk-sized writes; waits for done. */
static void put_stream(struct env *e, struct feeder *f, const char *k, long long size, size_t chunk,
                       int seed, const char *ctype)
{
    memset(f, 0, sizeof(*f));
    f->e = e;
    f->size = size;
    f->chunk = chunk;
    f->seed = seed;
    f->put = nf_s3_put(e->s3, k, ctype, on_writable, put_done, f);
    assert_non_null(f->put);
    f->ev = event_new(e->base, -1, 0, feed, f);
    event_active(f->ev, EV_TIMEOUT, 0);
    assert_true(nf_test_run_until(e->base, rec_called, &f->done, 120000));
    nf_test_run_for(e->base, 20);
    assert_int_equal(f->done.calls, 1);
    event_free(f->ev);
}

/* ---- a streaming get that checks every byte ---- */

struct reader {
    struct env *e;
    struct nf_s3_get *get;
    long long offset; /* of the first byte expected */
    int seed;
    long long got;
    bool bad;        /* a byte differed */
    int pause_every; /* 0: never pause */
    int pause_ms;
    int max_pauses; /* 0: no limit */
    int pauses, datas;
    long long cancel_at; /* > 0: cancel inside on_data after this much */
    bool paused;
    struct event *resume;
    struct rec head, done;
    int late_calls;    /* callbacks after cancel */
    struct rec *inner; /* non-NULL: a HEAD of inner_key started from inside on_data */
    const char *inner_key;
    bool cancelled;
};

static void on_head(const struct nf_s3_result *res, void *arg)
{
    struct reader *r = arg;
    assert_int_equal(r->got, 0);
    if (r->cancelled)
        r->late_calls++;
    on_result(res, &r->head);
}

static void do_resume(evutil_socket_t fd, short what, void *arg)
{
    struct reader *r = arg;
    r->paused = false;
    nf_s3_get_resume(r->get);
}

static int on_data(const char *buf, size_t len, void *arg)
{
    struct reader *r = arg;
    if (r->cancelled)
        r->late_calls++;
    assert_false(r->paused);
    for (size_t i = 0; i < len && !r->bad; i++)
        if ((unsigned char)buf[i] != pattern(r->offset + r->got + (long long)i, r->seed))
            r->bad = true;
    r->got += (long long)len;
    r->datas++;
    if (r->inner != NULL && r->inner->calls == 0 && r->datas == 1) /* inside libcurl */
        assert_int_equal(nf_s3_head(r->e->s3, r->inner_key, on_result, r->inner), 0);
    if (r->cancel_at > 0 && r->got >= r->cancel_at) {
        nf_s3_get_cancel(r->get);
        r->cancelled = true;
        return NF_S3_GO;
    }
    if (r->pause_every > 0 && r->datas % r->pause_every == 0 &&
        (r->max_pauses == 0 || r->pauses < r->max_pauses)) {
        r->pauses++;
        r->paused = true;
        struct timeval tv = {r->pause_ms / 1000, (r->pause_ms % 1000) * 1000};
        evtimer_add(r->resume, &tv);
        return NF_S3_PAUSE;
    }
    return NF_S3_GO;
}

static void get_done(const struct nf_s3_result *res, void *arg)
{
    struct reader *r = arg;
    if (r->cancelled)
        r->late_calls++;
    evtimer_del(r->resume); /* the handle is gone after done: no resume */
    on_result(res, &r->done);
}

static void get_start(struct env *e, struct reader *r, const char *k, const char *range,
                      long long offset, int seed)
{
    r->e = e;
    r->offset = offset;
    r->seed = seed;
    r->resume = evtimer_new(e->base, do_resume, r);
    r->get = nf_s3_get(e->s3, k, range, on_head, on_data, get_done, r);
    assert_non_null(r->get);
}

static void get_wait(struct env *e, struct reader *r)
{
    assert_true(nf_test_run_until(e->base, rec_called, &r->done, 120000));
    nf_test_run_for(e->base, 20);
    assert_int_equal(r->done.calls, 1);
    assert_false(r->bad);
    event_free(r->resume);
}

/* ---- fixtures ---- */

static int setup(void **state)
{
    const char *ep = nf_test_env("NF_TEST_S3_ENDPOINT");
    *state = NULL;
    if (ep == NULL)
        return 0;
    struct env *e = calloc(1, sizeof(*e));
    e->base = event_base_new();
    e->conf.endpoint = ep;
    e->conf.access_key = nf_test_env("NF_TEST_S3_ACCESS_KEY");
    e->conf.secret_key = nf_test_env("NF_TEST_S3_SECRET_KEY");
    e->conf.bucket = nf_test_env("NF_TEST_S3_BUCKET");
    e->conf.timeout_ms = 5000;
    e->conf.part_size = NF_S3_PART_MIN;
    nf_test_unique_name(e->tag, sizeof(e->tag), "nf-test-s3/");
    strcat(e->tag, "/");
    assert_int_equal(nf_s3_new(&e->s3, e->base, &e->conf), 0);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e == NULL)
        return 0;
    nf_s3_free(e->s3);
    event_base_free(e->base);
    free(e);
    return 0;
}

/* ---- tests ---- */

static void test_small_put_head_get(void **state)
{
    struct env *e = nf_test_need(state);
    char k[160];
    key(e, k, sizeof(k), "small file (1).txt");
    struct feeder f;
    put_stream(e, &f, k, 1000, 300, 1, "text/plain");
    assert_int_equal(f.done.status, 200);
    assert_int_equal(f.done.bytes, 1000);
    assert_true(f.done.etag[0] == '"');
    assert_int_equal(f.fulls, 0);

    struct rec h;
    head(e, k, &h);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.bytes, 1000);
    assert_int_equal(h.total, 1000);
    assert_string_equal(h.content_type, "text/plain");
    assert_string_equal(h.etag, f.done.etag);

    struct rec inner = {0};
    struct reader r = {.inner = &inner, .inner_key = k};
    get_start(e, &r, k, NULL, 0, 1);
    get_wait(e, &r);
    wait_rec(e, &inner, 10000); /* started from inside on_data */
    assert_int_equal(inner.status, 200);
    assert_int_equal(r.head.calls, 1);
    assert_int_equal(r.head.status, 200);
    assert_int_equal(r.head.bytes, 1000);
    assert_int_equal(r.done.status, 200);
    assert_int_equal(r.done.bytes, 1000);
    assert_int_equal(r.got, 1000);
    del(e, k);
}

static void test_empty_object(void **state)
{
    struct env *e = nf_test_need(state);
    char k[160];
    key(e, k, sizeof(k), "empty");
    struct feeder f;
    put_stream(e, &f, k, 0, 1, 1, NULL);
    assert_int_equal(f.done.status, 200);
    struct rec h;
    head(e, k, &h);
    assert_int_equal(h.bytes, 0);
    assert_string_equal(h.content_type, "application/octet-stream");
    struct reader r = {0};
    get_start(e, &r, k, NULL, 0, 1);
    get_wait(e, &r);
    assert_int_equal(r.done.status, 200);
    assert_int_equal(r.got, 0);
    del(e, k);
}

static void test_multipart_paused_get_ranges(void **state)
{
    struct env *e = nf_test_need(state);
    char k[160];
    key(e, k, sizeof(k), "big/multi part.bin");
    long long size = 20LL * MIB + 12345; /* 5 parts of 5 MiB: the last one short */
    struct feeder f;
    put_stream(e, &f, k, size, 64 * 1024, 7, "application/x-test");
    assert_int_equal(f.done.status, 200);
    assert_int_equal(f.done.bytes, size);
    assert_true(f.fulls > 0);                   /* backpressure happened */
    assert_non_null(strstr(f.done.etag, "-5")); /* a multipart ETag: <md5>-<parts> */

    struct rec h;
    head(e, k, &h);
    assert_int_equal(h.bytes, size);
    assert_string_equal(h.content_type, "application/x-test");

    /* whole, pausing every 3rd buffer for 2 ms: byte-exact */
    struct reader r = {.pause_every = 3, .pause_ms = 2};
    get_start(e, &r, k, NULL, 0, 7);
    get_wait(e, &r);
    assert_int_equal(r.done.status, 200);
    assert_int_equal(r.got, size);
    assert_int_equal(r.done.bytes, size);
    assert_true(r.pauses > 10);

    /* ranges: inside a part, across a part boundary, the tail */
    static const struct {
        const char *range;
        long long from, len;
    } cases[] = {{"bytes=100-199", 100, 100},
                 {"bytes=5242870-5242889", 5242870, 20},
                 {"bytes=20971520-", 20971520, 12345}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reader rr = {.pause_every = 1, .pause_ms = 1};
        get_start(e, &rr, k, cases[i].range, cases[i].from, 7);
        get_wait(e, &rr);
        assert_int_equal(rr.head.status, 206);
        assert_int_equal(rr.head.bytes, cases[i].len);
        assert_int_equal(rr.head.total, size);
        assert_int_equal(rr.done.status, 206);
        assert_int_equal(rr.got, cases[i].len);
    }

    /* a range past the end: 416, no head, no data */
    struct reader bad = {0};
    get_start(e, &bad, k, "bytes=999999999-", 0, 7);
    get_wait(e, &bad);
    assert_int_equal(bad.done.status, 416);
    assert_int_equal(bad.head.calls, 0);
    assert_int_equal(bad.got, 0);
    assert_string_equal(bad.done.code, "InvalidRange");
    del(e, k);
}

static void test_copy_delete_missing(void **state)
{
    struct env *e = nf_test_need(state);
    char src[160], dst[160];
    key(e, src, sizeof(src), "copy/src+&=.bin");
    key(e, dst, sizeof(dst), "copy/dst ü.bin");
    struct feeder f;
    put_stream(e, &f, src, 4096, 4096, 3, "text/csv");

    struct rec c = {0};
    assert_int_equal(nf_s3_copy(e->s3, src, dst, on_result, &c), 0);
    wait_rec(e, &c, 10000);
    assert_int_equal(c.status, 200);
    assert_true(c.etag[0] != '\0');
    struct reader r = {0};
    get_start(e, &r, dst, NULL, 0, 3);
    get_wait(e, &r);
    assert_int_equal(r.got, 4096);

    del(e, dst);
    struct rec h;
    head(e, dst, &h);
    assert_int_equal(h.status, 404);
    assert_string_equal(h.code, "NotFound");
    del(e, dst); /* deleting a missing key: 204 as well */

    struct reader g = {0};
    get_start(e, &g, dst, NULL, 0, 3);
    get_wait(e, &g);
    assert_int_equal(g.done.status, 404);
    assert_string_equal(g.done.code, "NoSuchKey");
    assert_int_equal(g.head.calls, 0);
    assert_true(g.done.error[0] != '\0');

    struct rec c2 = {0}; /* copy from a missing source */
    assert_int_equal(nf_s3_copy(e->s3, dst, src, on_result, &c2), 0);
    wait_rec(e, &c2, 10000);
    assert_int_equal(c2.status, 404);
    del(e, src);
}

static void test_cancels(void **state)
{
    struct env *e = nf_test_need(state);
    char k[160], k2[160];
    key(e, k, sizeof(k), "cancel/get.bin");
    struct feeder f;
    put_stream(e, &f, k, 3LL * MIB, 64 * 1024, 5, NULL);

    /* a GET cancelled from inside on_data: no callback after */
    struct reader r = {.cancel_at = 100 * 1024};
    get_start(e, &r, k, NULL, 0, 5);
    nf_test_run_for(e->base, 1000);
    assert_true(r.cancelled);
    assert_int_equal(r.late_calls, 0);
    assert_int_equal(r.done.calls, 0);
    event_free(r.resume);

    /* a GET cancelled while paused, from outside its callbacks */
    struct reader p = {.pause_every = 1, .pause_ms = 60000};
    get_start(e, &p, k, NULL, 0, 5);
    nf_test_run_for(e->base, 300);
    assert_true(p.paused);
    nf_s3_get_cancel(p.get);
    p.cancelled = true;
    nf_test_run_for(e->base, 200);
    assert_int_equal(p.late_calls, 0);
    event_free(p.resume);

    /* a multipart put cancelled after 2 parts: no callback, no object */
    key(e, k2, sizeof(k2), "cancel/put.bin");
    struct feeder c = {0};
    c.e = e;
    c.size = 30LL * MIB;
    c.chunk = 128 * 1024;
    c.seed = 9;
    c.cancel_at = 12LL * MIB;
    c.put = nf_s3_put(e->s3, k2, NULL, on_writable, put_done, &c);
    c.ev = event_new(e->base, -1, 0, feed, &c);
    event_active(c.ev, EV_TIMEOUT, 0);
    assert_true(nf_test_wait_flag(e->base, &c.cancelled, 10000));
    nf_test_run_for(e->base, 200);
    assert_int_equal(c.done.calls, 0);
    event_free(c.ev);
    struct rec h;
    head(e, k2, &h);
    assert_int_equal(h.status, 404);
    del(e, k);
}

static void test_pause_longer_than_stall_timeout(void **state)
{
    struct env *e = nf_test_need(state);
    char k[160];
    key(e, k, sizeof(k), "slow/reader.bin");
    struct feeder f;
    put_stream(e, &f, k, 2LL * MIB, 256 * 1024, 11, NULL);

    struct nf_s3_conf conf = e->conf;
    conf.timeout_ms = 1000;
    struct nf_s3 *slow = NULL;
    assert_int_equal(nf_s3_new(&slow, e->base, &conf), 0);
    struct nf_s3 *keep = e->s3;
    e->s3 = slow;
    struct reader r = {.pause_every = 4, .pause_ms = 2500, .max_pauses = 1}; /* a slow client */
    get_start(e, &r, k, NULL, 0, 11);
    get_wait(e, &r);
    assert_int_equal(r.done.status, 200);
    assert_int_equal(r.got, 2LL * MIB);
    assert_true(r.pauses >= 1);
    e->s3 = keep;
    nf_s3_free(slow);
    del(e, k);
}

static void test_free_with_pending(void **state)
{
    struct env *e = nf_test_need(state);
    char k[160];
    key(e, k, sizeof(k), "free/pending.bin");
    struct feeder f;
    put_stream(e, &f, k, 1LL * MIB, 256 * 1024, 2, NULL);

    struct nf_s3 *s3 = NULL;
    assert_int_equal(nf_s3_new(&s3, e->base, &e->conf), 0);
    struct nf_s3 *keep = e->s3;
    e->s3 = s3;
    struct reader r = {.pause_every = 1, .pause_ms = 60000};
    get_start(e, &r, k, NULL, 0, 2);
    struct rec hr = {0};
    assert_int_equal(nf_s3_head(s3, k, on_result, &hr), 0);
    struct rec pr = {0};
    struct nf_s3_put *put = nf_s3_put(s3, "x/never", NULL, NULL, on_result, &pr);
    assert_non_null(put);
    assert_int_equal(nf_s3_put_write(put, "abc", 3), 0);
    nf_test_run_for(e->base, 300); /* the GET paused after its first buffer */
    nf_s3_free(s3);
    assert_int_equal(r.done.calls, 1);
    assert_int_equal(r.done.status, 0);
    assert_string_equal(r.done.code, "ShuttingDown");
    assert_int_equal(pr.calls, 1);
    assert_string_equal(pr.code, "ShuttingDown");
    assert_true(hr.calls == 1); /* answered before, or shut down */
    event_free(r.resume);
    e->s3 = keep;
    del(e, k);
}

static void test_bad_secret(void **state)
{
    struct env *e = nf_test_need(state);
    struct nf_s3_conf conf = e->conf;
    conf.secret_key = "not-the-secret";
    struct nf_s3 *s3 = NULL;
    assert_int_equal(nf_s3_new(&s3, e->base, &conf), 0);
    struct rec h = {0};
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_s3_head(s3, "x/y", on_result, &h), 0);
    wait_rec(e, &h, 10000);
    assert_int_equal(h.status, 403);
    assert_true(nf_test_now_ms() - t0 < 1000); /* a 403 is final: no retry */
    nf_s3_free(s3);
}

struct sum {
    int calls, status;
    long long objects, bytes;
};

static void on_sum(int status, long long objects, long long bytes, void *arg)
{
    struct sum *s = arg;
    s->calls++;
    s->status = status;
    s->objects = objects;
    s->bytes = bytes;
}

static void test_sum_prefix(void **state)
{
    struct env *e = nf_test_need(state);
    static const long long sizes[] = {10, 2000, 30};
    char k[160];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "sum/obj-%d", i);
        key(e, k, sizeof(k), name);
        struct feeder f;
        put_stream(e, &f, k, sizes[i], 512, i, NULL);
        assert_int_equal(f.done.status, 200);
    }
    char prefix[160];
    key(e, prefix, sizeof(prefix), "sum/");
    struct sum s = {0};
    assert_int_equal(nf_s3_sum_prefix(e->s3, prefix, on_sum, &s), 0);
    assert_true(nf_test_wait_count(e->base, &s.calls, 1, 10000));
    assert_int_equal(s.status, 200);
    assert_int_equal(s.objects, 3);
    assert_int_equal(s.bytes, 2040);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "sum/obj-%d", i);
        key(e, k, sizeof(k), name);
        del(e, k);
    }
}

int main(void)
{
    return NF_TEST_RUN(setup, teardown, test_small_put_head_get, test_empty_object,
                       test_multipart_paused_get_ranges, test_copy_delete_missing, test_cancels,
                       test_pause_longer_than_stall_timeout, test_free_with_pending,
                       test_bad_secret, test_sum_prefix);
}
