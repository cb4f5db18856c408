/*
 * Unit tests for nf_http_frame (nf_http_internal.h): request heads as the connection
 * filter reads them (Content-Length, chunked, pipelined heads, what makes it give up),
 * their rewriting for a streamed body (framing headers replaced, a client's marker
 * stripped, CRLF injection kept out) and de-chunking, also fed one byte at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "nf_http_internal.h"
#include "nf_test.h"

#define MAX 4096

static int parse(const char *s, struct nf_http_head *h)
{
    return nf_http_head_parse(s, strlen(s), MAX, h);
}

/* The rewritten head as a string (token NULL: only the marker goes). */
static char *rewrite(const char *s, const char *token)
{
    struct nf_http_head h;
    size_t len = 0;
    char *out, *str;

    assert_int_equal(parse(s, &h), 1);
    out = nf_http_head_rewrite(s, &h, token, &len);
    str = malloc(len + 1);
    assert_non_null(str);
    memcpy(str, out, len);
    str[len] = '\0';
    free(out);
    return str;
}

static void test_content_length_and_pipelining(void **state)
{
    const char *two = "POST /api/files?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                      "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct nf_http_head h;
    size_t first;

    assert_int_equal(parse(two, &h), 1);
    assert_string_equal(h.method, "POST");
    assert_int_equal(h.target_len, strlen("/api/files?x=1"));
    assert_memory_equal(h.target, "/api/files?x=1", h.target_len);
    assert_int_equal(h.framing, NF_HTTP_FRAME_LENGTH);
    assert_int_equal(h.length, 5);
    assert_false(h.expect_continue);
    first = h.len;
    assert_memory_equal(two + first, "hello", 5);
    /* the next head starts after the body */
    assert_int_equal(parse(two + first + 5, &h), 1);
    assert_string_equal(h.method, "GET");
    assert_int_equal(h.framing, NF_HTTP_FRAME_NONE);
    assert_int_equal(h.len, strlen(two + first + 5));
}

static void test_framing_kinds(void **state)
{
    struct nf_http_head h;

    assert_int_equal(parse("POST /a HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n", &h), 1);
    assert_int_equal(h.framing, NF_HTTP_FRAME_CHUNKED);
    /* no Content-Length, no Transfer-Encoding: no body (as evhttp) */
    assert_int_equal(parse("POST /a HTTP/1.1\r\n\r\n", &h), 1);
    assert_int_equal(h.framing, NF_HTTP_FRAME_NONE);
    assert_int_equal(parse("POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &h), 1);
    assert_int_equal(h.framing, NF_HTTP_FRAME_NONE);
    /* HEAD and TRACE have no body whatever they say */
    assert_int_equal(parse("HEAD /a HTTP/1.1\r\nContent-Length: 9\r\n\r\n", &h), 1);
    assert_int_equal(h.framing, NF_HTTP_FRAME_NONE);
    /* bare LF line ends, as evhttp reads them */
    assert_int_equal(parse("PUT /a HTTP/1.0\nContent-Length:  12 \n\n", &h), 1);
    assert_int_equal(h.framing, NF_HTTP_FRAME_LENGTH);
    assert_int_equal(h.length, 12);
    assert_int_equal(
        parse("POST /a HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", &h), 1);
    assert_true(h.expect_continue);
    assert_int_equal(parse("GET /a HTTP/1.1\r\nx-nf-body-stream: forged\r\n\r\n", &h), 1);
    assert_true(h.has_marker);
}

static void test_incomplete_and_oversized(void **state)
{
    struct nf_http_head h;
    char *big = malloc(MAX + 100);

    assert_int_equal(parse("", &h), 0);
    assert_int_equal(parse("POST /a HT", &h), 0);
    assert_int_equal(parse("POST /a HTTP/1.1\r\nHost: a\r\n", &h), 0);
    assert_int_equal(parse("POST /a HTTP/1.1\r\nHost: a\r\n\r", &h), 0);
    /* no end within max bytes: given up */
    assert_non_null(big);
    memcpy(big, "GET /a HTTP/1.1\r\nX-Big: ", 24);
    memset(big + 24, 'a', MAX + 50);
    big[MAX + 74] = '\0';
    assert_int_equal(nf_http_head_parse(big, strlen(big), MAX, &h), -1);
    memcpy(big + MAX + 60, "\r\n\r\n", 5);
    assert_int_equal(nf_http_head_parse(big, strlen(big), MAX, &h), -1);
    free(big);
}

/* Heads evhttp might read differently from us: the filter gives up on them. */
static void test_unusual_heads_refused(void **state)
{
    static const char *const bad[] = {
        "POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /a HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        "POST /a HTTP/1.1\r\nContent-Length: 5x\r\n\r\n",
        "POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST /a HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
        "POST /a HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
        "POST /a HTTP/1.1\r\nExpect: something\r\n\r\n",
        "POST /a HTTP/1.1\r\nX-A: a\rContent-Length: 5\r\n\r\n", /* bare CR: injection */
        "POST /a HTTP/1.1\r\nno colon here\r\n\r\n",
        "BREW /a HTTP/1.1\r\n\r\n",
        "POST /a HTTP/2.0\r\n\r\n",
        "POST  /a HTTP/1.1\r\n\r\n",
        "POST /a\tb HTTP/1.1\r\n\r\n",
        "\r\nPOST /a HTTP/1.1\r\n\r\n",
    };
    struct nf_http_head h;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], &h) != -1)
            fail_msg("accepted: %s", bad[i]);
    }
}

static void test_rewrite_for_stream(void **state)
{
    char *out = rewrite("POST /api/files HTTP/1.1\nHost: a\r\nContent-Length: 10\r\n"
                        "Expect: 100-continue\r\nX-Nf-Body-Stream: forged\r\nX-Keep: yes\r\n\r\n",
                        "tok123");

    assert_string_equal(out, "POST /api/files HTTP/1.1\r\nHost: a\r\nX-Keep: yes\r\n"
                             "Content-Length: 0\r\nX-Nf-Body-Stream: tok123\r\n\r\n");
    free(out);
    out = rewrite("POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "t");
    assert_string_equal(out,
                        "POST /u HTTP/1.1\r\nContent-Length: 0\r\nX-Nf-Body-Stream: t\r\n\r\n");
    free(out);
}

static void test_rewrite_strips_marker_only(void **state)
{
    char *out = rewrite("POST /x HTTP/1.1\r\nX-NF-BODY-STREAM: forged\r\nContent-Length: 3\r\n"
                        "Expect: 100-continue\r\n\r\n",
                        NULL);

    assert_string_equal(out,
                        "POST /x HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    free(out);
}

/* Reads every data span of in, appending to got; returns the last status. */
static int drain_body(struct nf_http_frame *f, struct evbuffer *in, char *got, size_t *glen)
{
    const char *p;
    size_t n;
    int rc;

    while ((rc = nf_http_frame_next(f, in, &p, &n)) == NF_HTTP_FRAME_DATA) {
        memcpy(got + *glen, p, n);
        *glen += n;
        nf_http_frame_consume(f, in, n);
    }
    return rc;
}

static void test_dechunk_whole_and_bytewise(void **state)
{
    const char *wire = "5\r\nhello\r\n6;ext=1\r\n world\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                       "0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1";
    const char *want = "hello worldabcdefghijklmnopqrstuvwxyz";
    struct nf_http_frame f;
    struct evbuffer *in = evbuffer_new();
    char got[128];
    size_t glen = 0;

    /* all at once */
    nf_http_frame_init(&f, NF_HTTP_FRAME_CHUNKED, 0, 1024);
    evbuffer_add(in, wire, strlen(wire));
    assert_int_equal(drain_body(&f, in, got, &glen), NF_HTTP_FRAME_DONE);
    assert_int_equal(glen, strlen(want));
    assert_memory_equal(got, want, glen);
    assert_int_equal(evbuffer_get_length(in), strlen("GET / HTTP/1.1")); /* the next head */
    evbuffer_drain(in, evbuffer_get_length(in));

    /* one byte at a time: every split point of every line */
    nf_http_frame_init(&f, NF_HTTP_FRAME_CHUNKED, 0, 1024);
    glen = 0;
    for (size_t i = 0; wire[i] != '\0'; i++) {
        int rc;

        evbuffer_add(in, wire + i, 1);
        rc = drain_body(&f, in, got, &glen);
        if (rc == NF_HTTP_FRAME_DONE) {
            assert_int_equal(i + 1, strlen(wire) - strlen("GET / HTTP/1.1"));
            break;
        }
        assert_int_equal(rc, NF_HTTP_FRAME_NEED);
    }
    assert_int_equal(glen, strlen(want));
    assert_memory_equal(got, want, glen);
    evbuffer_free(in);
}

static void test_dechunk_malformed(void **state)
{
    static const char *const bad[] = {
        "zz\r\n",                   /* not hex */
        "5\r\nhelloXX",             /* no CRLF after the data */
        "fffffffffffffffff\r\n",    /* absurd size */
        "5 garbage\r\nhello\r\n",   /* OK: blanks after the size allow extensions... */
        "-5\r\n",                   /* negative */
        "0\r\nTrailer-without-end", /* trailer longer than its bound (below) */
    };
    struct nf_http_frame f;
    struct evbuffer *in = evbuffer_new();
    char got[64], long_line[1500];
    size_t glen;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc;

        nf_http_frame_init(&f, NF_HTTP_FRAME_CHUNKED, 0, 8);
        evbuffer_drain(in, evbuffer_get_length(in));
        evbuffer_add(in, bad[i], strlen(bad[i]));
        glen = 0;
        rc = drain_body(&f, in, got, &glen);
        if (i == 3)
            assert_int_equal(rc, NF_HTTP_FRAME_NEED); /* "5 garbage" is a size with an ext */
        else if (rc != NF_HTTP_FRAME_BAD)
            fail_msg("not refused: %s (rc %d)", bad[i], rc);
    }
    /* a size line that never ends */
    nf_http_frame_init(&f, NF_HTTP_FRAME_CHUNKED, 0, 8);
    evbuffer_drain(in, evbuffer_get_length(in));
    memset(long_line, '0', sizeof(long_line));
    evbuffer_add(in, long_line, sizeof(long_line));
    glen = 0;
    assert_int_equal(drain_body(&f, in, got, &glen), NF_HTTP_FRAME_BAD);
    evbuffer_free(in);
}

static void test_length_framing(void **state)
{
    struct nf_http_frame f;
    struct evbuffer *in = evbuffer_new();
    char got[64];
    size_t glen = 0;

    nf_http_frame_init(&f, NF_HTTP_FRAME_LENGTH, 7, 0);
    evbuffer_add(in, "abc", 3);
    assert_int_equal(drain_body(&f, in, got, &glen), NF_HTTP_FRAME_NEED);
    evbuffer_add(in, "defgNEXT", 8);
    assert_int_equal(drain_body(&f, in, got, &glen), NF_HTTP_FRAME_DONE);
    assert_int_equal(glen, 7);
    assert_memory_equal(got, "abcdefg", 7);
    assert_int_equal(evbuffer_get_length(in), 4);
    evbuffer_free(in);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_content_length_and_pipelining, test_framing_kinds,
                       test_incomplete_and_oversized, test_unusual_heads_refused,
                       test_rewrite_for_stream, test_rewrite_strips_marker_only,
                       test_dechunk_whole_and_bytewise, test_dechunk_malformed,
                       test_length_framing);
}
