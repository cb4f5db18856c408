/*
 * nf_s3's blocking helpers (nf_s3_upload_file, nf_s3_download_file) and the paged listing
 * of nf_s3_sum_prefix against a real S3 server (the NF_TEST_S3_* variables of
 * test_it_nf_s3.c; skipped when unset). NF_TEST_S3_MEM=1 adds a 100 MiB streamed put and
 * get through the async client that print how much the process's RSS grew (a measurement
 * for the record, not an assertion: build without sanitizers for meaningful numbers).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_s3.h"
#include "nf_test.h"

#define MIB (1024 * 1024)

struct env {
    struct event_base *base;
    struct nf_s3_conf conf;
    struct nf_s3 *s3;
    char tag[96];
    char dir[128];
};

static unsigned char pattern(long long i, int seed)
{
    unsigned long long x = (unsigned long long)i * 0x9E3779B97F4A7C15ull + (unsigned)seed;
    return (unsigned char)(x >> 29);
}

/* Writes size bytes of pattern(seed) to path. */
static void make_file(const char *path, long long size, int seed)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (long long i = 0; i < size; i++)
        fputc(pattern(i, seed), f);
    assert_int_equal(fclose(f), 0);
}

/* Whether path holds exactly size bytes of pattern(seed). */
static bool same_file(const char *path, long long size, int seed)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    long long i = 0;
    int ch;
    bool ok = true;
    while (ok && (ch = fgetc(f)) != EOF)
        ok = (unsigned char)ch == pattern(i++, seed);
    fclose(f);
    return ok && i == size;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- async helpers: delete, sum ---- */

struct count {
    int calls, failures;
};

static void on_deleted(const struct nf_s3_result *res, void *arg)
{
    struct count *c = arg;
    c->calls++;
    if (res->status != 204)
        c->failures++;
}

/* Deletes keys prefix0..prefix(n-1) (names from fmt) 50 at a time. */
static void delete_many(struct env *e, const char *fmt, int n)
{
    for (int from = 0; from < n; from += 50) {
        struct count c = {0};
        int batch = n - from < 50 ? n - from : 50;
        for (int i = 0; i < batch; i++) {
            char k[200];
            snprintf(k, sizeof(k), fmt, e->tag, from + i);
            assert_int_equal(nf_s3_delete(e->s3, k, on_deleted, &c), 0);
        }
        assert_true(nf_test_wait_count(e->base, &c.calls, batch, 30000));
        assert_int_equal(c.failures, 0);
    }
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
    nf_test_unique_name(e->tag, sizeof(e->tag), "nf-test-s3sync/");
    strcat(e->tag, "/");
    nf_test_tmpdir(e->dir, sizeof(e->dir), "nf-s3-");
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
    nf_test_rmtree(e->dir);
    free(e);
    return 0;
}

/* ---- tests ---- */

static void round_trip(struct env *e, const char *name, long long size, int seed)
{
    char src[200], dst[200], tmp[210], k[200];
    snprintf(src, sizeof(src), "%s/%s.src", e->dir, name);
    snprintf(dst, sizeof(dst), "%s/%s.dst", e->dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
    snprintf(k, sizeof(k), "%s%s", e->tag, name);
    make_file(src, size, seed);
    char err[256] = "";
    assert_int_equal(nf_s3_upload_file(&e->conf, k, src, "text/plain", err, sizeof(err)), 0);
    assert_int_equal(nf_s3_download_file(&e->conf, k, dst, 0, err, sizeof(err)), 0);
    assert_true(same_file(dst, size, seed));
    assert_false(exists(tmp));
    struct stat st;
    assert_int_equal(stat(dst, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* again over the existing file, bounded exactly at its size */
    assert_int_equal(nf_s3_download_file(&e->conf, k, dst, size > 0 ? size : 1, err, sizeof(err)),
                     0);
    assert_true(same_file(dst, size, seed));
}

static void test_round_trips(void **state)
{
    struct env *e = nf_test_need(state);
    round_trip(e, "empty", 0, 1);
    round_trip(e, "small", 1000, 2);
    round_trip(e, "one part exactly", NF_S3_PART_MIN, 3);
    round_trip(e, "multi", 12LL * MIB + 7, 4); /* 3 parts */
    struct sum s = {0};
    assert_int_equal(nf_s3_sum_prefix(e->s3, e->tag, on_sum, &s), 0);
    assert_true(nf_test_wait_count(e->base, &s.calls, 1, 10000));
    assert_int_equal(s.status, 200);
    assert_int_equal(s.objects, 4);
    assert_int_equal(s.bytes, 1000 + NF_S3_PART_MIN + 12LL * MIB + 7);
    static const char *const names[] = {"empty", "small", "one part exactly", "multi"};
    for (int i = 0; i < 4; i++) {
        char fmt[64];
        snprintf(fmt, sizeof(fmt), "%%s%s%%.0d", names[i]);
        delete_many(e, fmt, 1);
    }
}

static void test_failures(void **state)
{
    struct env *e = nf_test_need(state);
    char src[200], dst[200], k[200], err[256];
    snprintf(src, sizeof(src), "%s/f.src", e->dir);
    snprintf(dst, sizeof(dst), "%s/f.dst", e->dir);
    snprintf(k, sizeof(k), "%sf", e->tag);

    /* missing key: -ENOENT, no file left */
    err[0] = '\0';
    assert_int_equal(nf_s3_download_file(&e->conf, k, dst, 0, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "404"));
    assert_false(exists(dst));

    /* over max_bytes: -EFBIG, nothing left */
    make_file(src, 5000, 9);
    assert_int_equal(nf_s3_upload_file(&e->conf, k, src, NULL, err, sizeof(err)), 0);
    assert_int_equal(nf_s3_download_file(&e->conf, k, dst, 4999, err, sizeof(err)), -EFBIG);
    assert_false(exists(dst));
    char tmp[210];
    snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
    assert_false(exists(tmp));

    /* no such local file */
    char missing[220];
    snprintf(missing, sizeof(missing), "%s/none", e->dir);
    assert_int_equal(nf_s3_upload_file(&e->conf, k, missing, NULL, err, sizeof(err)), -ENOENT);

    /* a wrong secret: the store's 403, at once */
    struct nf_s3_conf bad = e->conf;
    bad.secret_key = "wrong";
    long long t0 = nf_test_now_ms();
    assert_int_equal(nf_s3_download_file(&bad, k, dst, 0, err, sizeof(err)), -EIO);
    assert_non_null(strstr(err, "403"));
    assert_int_equal(nf_s3_upload_file(&bad, k, src, NULL, err, sizeof(err)), -EIO);
    assert_true(nf_test_now_ms() - t0 < 2000);

    /* a bad key, a bad conf */
    assert_int_equal(nf_s3_download_file(&e->conf, "../x", dst, 0, err, sizeof(err)), -EIO);
    bad = e->conf;
    bad.bucket = "A";
    assert_int_equal(nf_s3_upload_file(&bad, k, src, NULL, err, sizeof(err)), -EIO);
    assert_non_null(strstr(err, "bucket"));
    delete_many(e, "%sf%.0d", 1);
}

static void test_sum_pages(void **state)
{
    struct env *e = nf_test_need(state);
    char src[200], k[200], err[256];
    snprintf(src, sizeof(src), "%s/tiny", e->dir);
    make_file(src, 3, 1);
    int n = 1003; /* two pages of ListObjectsV2 */
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "%spage/%04d", e->tag, i);
        assert_int_equal(nf_s3_upload_file(&e->conf, k, src, NULL, err, sizeof(err)), 0);
    }
    char prefix[200];
    snprintf(prefix, sizeof(prefix), "%spage/", e->tag);
    struct sum s = {0};
    assert_int_equal(nf_s3_sum_prefix(e->s3, prefix, on_sum, &s), 0);
    assert_true(nf_test_wait_count(e->base, &s.calls, 1, 30000));
    assert_int_equal(s.status, 200);
    assert_int_equal(s.objects, n);
    assert_int_equal(s.bytes, 3LL * n);
    delete_many(e, "%spage/%04d", n);
}

/* ---- memory: 100 MiB through the async client ---- */

static long rss_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, n) == 0)
            kb = atol(line + n + 1);
    if (f != NULL)
        fclose(f);
    return kb;
}

struct mem_put {
    struct nf_s3_put *put;
    struct event *ev;
    long long sent, size;
    int calls, status;
};

static void mem_feed(evutil_socket_t fd, short what, void *arg)
{
    struct mem_put *m = arg;
    static char buf[64 * 1024];
    while (m->sent < m->size) {
        int rc = nf_s3_put_write(m->put, buf, sizeof(buf));
        m->sent += (long long)sizeof(buf);
        if (rc != 0)
            return; /* on_writable re-arms */
    }
    nf_s3_put_finish(m->put);
}

static void mem_writable(void *arg)
{
    event_active(((struct mem_put *)arg)->ev, EV_TIMEOUT, 0);
}

static void mem_put_done(const struct nf_s3_result *res, void *arg)
{
    struct mem_put *m = arg;
    m->calls++;
    m->status = res->status;
}

struct mem_get {
    long long got;
    int calls;
};

static int mem_data(const char *buf, size_t len, void *arg)
{
    ((struct mem_get *)arg)->got += (long long)len;
    return NF_S3_GO;
}

static void mem_get_done(const struct nf_s3_result *res, void *arg)
{
    ((struct mem_get *)arg)->calls++;
}

static void test_rss_100mib(void **state)
{
    struct env *e = nf_test_need(state);
    nf_test_skip_unless(nf_test_env("NF_TEST_S3_MEM") != NULL);
    struct nf_s3_conf conf = e->conf;
    conf.part_size = 0; /* the default 8 MiB */
    struct nf_s3 *s3 = NULL;
    assert_int_equal(nf_s3_new(&s3, e->base, &conf), 0);
    char k[200];
    snprintf(k, sizeof(k), "%smem/100mib", e->tag);
    long before = rss_kb("VmRSS:"), hwm0 = rss_kb("VmHWM:");
    struct mem_put m = {.size = 100LL * MIB};
    m.put = nf_s3_put(s3, k, NULL, mem_writable, mem_put_done, &m);
    m.ev = event_new(e->base, -1, 0, mem_feed, &m);
    event_active(m.ev, EV_TIMEOUT, 0);
    assert_true(nf_test_wait_count(e->base, &m.calls, 1, 120000));
    assert_int_equal(m.status, 200);
    event_free(m.ev);
    long after_put = rss_kb("VmRSS:"), hwm_put = rss_kb("VmHWM:");

    struct mem_get g = {0};
    assert_non_null(nf_s3_get(s3, k, NULL, NULL, mem_data, mem_get_done, &g));
    assert_true(nf_test_wait_count(e->base, &g.calls, 1, 120000));
    assert_int_equal(g.got, 100LL * MIB);
    long after_get = rss_kb("VmRSS:"), hwm_get = rss_kb("VmHWM:");
    printf("rss_kb: before %ld, after put %ld (peak %ld, was %ld), after get %ld (peak %ld)\n",
           before, after_put, hwm_put, hwm0, after_get, hwm_get);
    delete_many(e, "%smem/100mib%.0d", 1);
    nf_s3_free(s3);
}

int main(void)
{
    return NF_TEST_RUN(setup, teardown, test_round_trips, test_failures, test_sum_pages,
                       test_rss_100mib);
}
