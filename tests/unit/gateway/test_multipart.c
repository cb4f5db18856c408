/*
 * multipart.c: multipart/form-data read incrementally - the boundary of a Content-Type,
 * fields and a file part fed whole and split at every byte (a boundary across two pieces),
 * bytes that only look like a boundary, preamble and epilogue, and hostile bodies: no
 * closing boundary, huge or folded part headers, CR or NUL injected into a header, parts
 * without a name, garbage after a boundary; a callback that stops the parse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_test.h"

/* What the callbacks saw, as text: "[name|filename|type]data<end>" per part. */
struct seen {
    char log[16384];
    size_t n;
    int stop_at_part; /* part callback number that returns 7; 0: never */
    int parts;
};

static void add(struct seen *s, const char *buf, size_t len)
{
    assert_true(s->n + len < sizeof(s->log));
    memcpy(s->log + s->n, buf, len);
    s->n += len;
    s->log[s->n] = '\0';
}

static int on_part(const struct gw_mp_part *p, void *arg)
{
    struct seen *s = arg;
    char head[2048];

    snprintf(head, sizeof(head), "[%s|%s%s|%s]", p->name, p->has_filename ? "f:" : "", p->filename,
             p->content_type);
    add(s, head, strlen(head));
    return ++s->parts == s->stop_at_part ? 7 : 0;
}

static int on_data(const char *buf, size_t len, void *arg)
{
    assert_true(len > 0);
    add(arg, buf, len);
    return 0;
}

static int on_end(void *arg)
{
    add(arg, "<end>", 5);
    return 0;
}

static const struct gw_mp_cbs cbs = {on_part, on_data, on_end};

/* Feeds body in pieces of `step` bytes (0: whole); the last feed's result. */
static int feed(const char *boundary, const char *body, size_t len, size_t step, struct seen *s,
                struct gw_mp *mp)
{
    int rc = 0;

    gw_mp_init(mp, boundary);
    for (size_t i = 0; i < len && rc == 0; i += step ? step : len) {
        size_t n = step && len - i > step ? step : len - i;
        rc = gw_mp_feed(mp, body + i, n, &cbs, s);
    }
    return rc;
}

static void test_boundary(void **state)
{
    char b[GW_MP_BOUNDARY_MAX + 1], long_b[200];

    assert_int_equal(gw_mp_boundary("multipart/form-data; boundary=abc123", b), 0);
    assert_string_equal(b, "abc123");
    assert_int_equal(gw_mp_boundary("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b:c\"", b), 0);
    assert_string_equal(b, "a b:c");
    assert_int_equal(
        gw_mp_boundary("multipart/form-data; boundary=----WebKitFormBoundaryX; x=1", b), 0);
    assert_string_equal(b, "----WebKitFormBoundaryX");
    assert_int_equal(gw_mp_boundary("application/json", b), -1);
    assert_int_equal(gw_mp_boundary(NULL, b), -1);
    assert_int_equal(gw_mp_boundary("multipart/form-data", b), -2);
    assert_int_equal(gw_mp_boundary("multipart/form-data; boundary=", b), -2);
    assert_int_equal(gw_mp_boundary("multipart/form-data; boundary=\"unterminated", b), -2);
    assert_int_equal(gw_mp_boundary("multipart/form-data; boundary=\"a\r\nb\"", b), -2);
    assert_int_equal(gw_mp_boundary("multipart/form-data; boundary=\"ends \"", b), -2);
    assert_int_equal(gw_mp_boundary("multipart/form-data; boundary=a<b", b), -2);
    memset(long_b, 'x', sizeof(long_b));
    memcpy(long_b, "multipart/form-data; boundary=", 30);
    long_b[30 + 71] = '\0';
    assert_int_equal(gw_mp_boundary(long_b, b), -2);
    long_b[30 + 70] = '\0';
    assert_int_equal(gw_mp_boundary(long_b, b), 0);
}

/* A body with look-alike boundaries in the file, then every split of it. */
static void test_parts_whole_and_split(void **state)
{
    const char body[] = "--XyZ\r\n"
                        "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n"
                        "dataset\r\n"
                        "--XyZ\r\n"
                        "content-disposition: form-data; name=uri\r\n\r\n"
                        "s3://b/k.parquet\r\n"
                        "--XyZ  \r\n" /* blanks after a boundary are allowed */
                        "Content-Disposition: form-data; name=\"file\"; filename=\"d.bin\"\r\n"
                        "Content-Type: application/octet-stream\r\n\r\n"
                        "a\r\n--XyY b\r\n-- \r\n--Xy\rZ \r--XyZz\r\n"
                        "\r\n--XyZ--\r\nepilogue, ignored";
    const char *want = "[purpose||]dataset<end>[uri||]s3://b/k.parquet<end>"
                       "[file|f:d.bin|application/octet-stream]a\r\n--XyY b\r\n-- \r\n--Xy\rZ "
                       "\r--XyZz\r\n<end>";
    size_t len = sizeof(body) - 1;

    for (size_t step = 0; step <= len; step++) {
        struct seen s = {0};
        struct gw_mp mp;

        if (feed("XyZ", body, len, step, &s, &mp) != 0)
            fail_msg("step %zu: %s", step, mp.error ? mp.error : "stopped");
        if (strcmp(s.log, want) != 0)
            fail_msg("step %zu: saw %s", step, s.log);
        assert_true(gw_mp_done(&mp));
    }
}

static void test_preamble_and_empty_parts(void **state)
{
    const char *body = "preamble --XyZ not yet\r\n--XyZ\r\n"
                       "Content-Disposition: form-data; name=\"a\"\r\n\r\n"
                       "\r\n--XyZ\n" /* an empty value; LF alone after the boundary */
                       "Content-Disposition: form-data; name=\"file\"; filename=\"\"\n\n"
                       "\r\n--XyZ--";
    struct seen s = {0};
    struct gw_mp mp;

    assert_int_equal(feed("XyZ", body, strlen(body), 0, &s, &mp), 0);
    assert_string_equal(s.log, "[a||]<end>[file|f:|]<end>");
    assert_true(gw_mp_done(&mp));
}

static void test_filenames(void **state)
{
    const char *body =
        "--B\r\nContent-Disposition: form-data; name=\"f1\"; filename=\"C:\\dir\\a \\\"q\\\".txt\""
        "\r\n\r\nx\r\n--B\r\n"
        "Content-Disposition: form-data; name=\"f2\"; filename=\"plain\"; "
        "filename*=UTF-8''donn%C3%A9es%20v2.csv\r\n\r\ny\r\n--B--";
    struct seen s = {0};
    struct gw_mp mp;

    assert_int_equal(feed("B", body, strlen(body), 0, &s, &mp), 0);
    assert_string_equal(s.log, "[f1|f:C:\\dir\\a \"q\".txt|]x<end>"
                               "[f2|f:donn\xc3\xa9"
                               "es v2.csv|]y<end>");
}

/* Bodies that must fail, each with its reason. */
static void test_hostile(void **state)
{
    static const struct {
        const char *body, *why;
    } bad[] = {
        {"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n X: folded\r\n\r\nv\r\n--B--",
         "a folded part header"},
        {"--B\r\nContent-Disposition: form-data; name=\"a\"\rContent-Type: x\r\n\r\nv\r\n--B--",
         "a CR inside a part header"},
        {"--B\r\nContent-Type: text/plain\r\n\r\nv\r\n--B--", "a part without Content-Disposition"},
        {"--B\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nv\r\n--B--",
         "a part without a name"},
        {"--B\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n--B--",
         "a part's Content-Disposition is not form-data"},
        {"--B\r\nContent-Disposition: form-data; name=\"a\"; name=\"b\"\r\n\r\nv\r\n--B--",
         "a part's name is repeated or too long"},
        {"--B\r\nContent-Disposition: form-data; name=\"a\r\n\r\nv\r\n--B--",
         "malformed or too long Content-Disposition parameter"}, /* CRLF in a quoted name */
        {"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--Bx\r\n",
         "garbage after a boundary"},
        {"--B\rX", "a boundary line without LF"},
        {"--B\r\nContent-Disposition: form-data; name=\"a\"; filename*=latin1''x\r\n\r\nv",
         "a part's filename* is repeated or malformed"},
        {"--B\r\nnocolon\r\n\r\n", "a part header without a colon"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct seen s = {0};
        struct gw_mp mp;
        int rc = feed("B", bad[i].body, strlen(bad[i].body), 0, &s, &mp);

        if (rc != GW_MP_ERROR || mp.error == NULL || strcmp(mp.error, bad[i].why) != 0)
            fail_msg("body %zu: rc %d, error %s", i, rc, mp.error ? mp.error : "(none)");
        /* and it stays failed */
        assert_int_equal(gw_mp_feed(&mp, "x", 1, &cbs, &s), GW_MP_ERROR);
    }
}

static void test_huge_headers_and_nul(void **state)
{
    size_t n = GW_MP_HEAD_MAX + 100;
    char *body = malloc(n + 64);
    struct seen s = {0};
    struct gw_mp mp;
    const char nul[] = "--B\r\nContent-Disposition: form-data; name=\"a\0b\"\r\n\r\nv\r\n--B--";

    memcpy(body, "--B\r\nX-Pad: ", 12);
    memset(body + 12, 'p', n);
    assert_int_equal(feed("B", body, n + 12, 100, &s, &mp), GW_MP_ERROR);
    assert_string_equal(mp.error, "a part's headers are too long");
    free(body);
    memset(&s, 0, sizeof(s));
    assert_int_equal(feed("B", nul, sizeof(nul) - 1, 0, &s, &mp), GW_MP_ERROR);
    assert_string_equal(mp.error, "a NUL byte in a part's headers");
}

static void test_unterminated_and_stop(void **state)
{
    const char *body = "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue\r\n--B\r\n"
                       "Content-Disposition: form-data; name=\"b\"\r\n\r\nno end";
    struct seen s = {0};
    struct gw_mp mp;

    /* no closing boundary: fine so far, but not done */
    assert_int_equal(feed("B", body, strlen(body), 0, &s, &mp), 0);
    assert_false(gw_mp_done(&mp));
    assert_string_equal(s.log, "[a||]value<end>[b||]no end");
    /* a callback stops the parse: its value comes back */
    memset(&s, 0, sizeof(s));
    s.stop_at_part = 2;
    assert_int_equal(feed("B", body, strlen(body), 0, &s, &mp), 7);
    assert_string_equal(s.log, "[a||]value<end>[b||]");
    /* nothing at all */
    memset(&s, 0, sizeof(s));
    assert_int_equal(feed("B", "", 0, 0, &s, &mp), 0);
    assert_false(gw_mp_done(&mp));
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_boundary, test_parts_whole_and_split,
                       test_preamble_and_empty_parts, test_filenames, test_hostile,
                       test_huge_headers_and_nul, test_unterminated_and_stop);
}
