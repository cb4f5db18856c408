/*
 * Unit tests for streamed answers with backpressure (nf_http_stream_start_len,
 * nf_http_stream_pending, nf_http_stream_on_drain) and for the connection's writer: a
 * Content-Length answer (not chunked) to a slow reader keeps at most ~256 KiB queued, a
 * client that leaves mid-answer is told through on_close, a large "Connection: close"
 * answer reaches the client whole before the close, and an aborted answer closes the
 * connection (a short body, not a hang).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nf_http.h"
#include "nf_test.h"
#include "nf_test_http.h"

#define PIECE (64 * 1024)
#define HIGH (256 * 1024) /* the sender stops queueing above this */
#define TOTAL (8u * 1024 * 1024)

struct fx {
    struct nf_test_http h;
    struct nf_http_req *dl; /* the download in progress */
    size_t sent;
    size_t max_pending;
    int drains, closed, ended;
    char piece[PIECE];
};

static unsigned char pattern(size_t i)
{
    return (unsigned char)((i * 13) ^ (i >> 9));
}

/* ---- a download: queue while under HIGH, else wait for the drain ---------------------- */

static void pump(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->drains++;
    while (fx->sent < TOTAL && nf_http_stream_pending(req) <= HIGH) {
        for (size_t i = 0; i < PIECE; i++)
            fx->piece[i] = (char)pattern(fx->sent + i);
        assert_int_equal(nf_http_stream_send(req, fx->piece, PIECE), 0);
        fx->sent += PIECE;
        if (nf_http_stream_pending(req) > fx->max_pending)
            fx->max_pending = nf_http_stream_pending(req);
    }
    if (fx->sent < TOTAL) {
        nf_http_stream_on_drain(req, PIECE, pump, fx);
        return;
    }
    nf_http_stream_end(req);
    fx->dl = NULL;
    fx->ended++;
}

static void on_dl_close(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->closed++;
    nf_http_stream_end(req);
    fx->dl = NULL;
}

static void h_download(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->dl = req;
    fx->sent = 0;
    nf_http_stream_on_close(req, on_dl_close, fx);
    nf_http_stream_start_len(req, 200, "application/octet-stream", TOTAL);
    nf_http_stream_on_drain(req, PIECE, pump, fx); /* starts from the loop */
}

/* Promises 1 MiB, sends 128 KiB, then its source "breaks": the stream is aborted. */
static void on_abort_later(evutil_socket_t fd, short what, void *arg)
{
    struct fx *fx = arg;

    nf_http_stream_abort(fx->dl);
    fx->dl = NULL;
    fx->ended++;
}

static void h_abort(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    static const struct timeval later = {0, 20000};

    fx->dl = req;
    nf_http_stream_on_close(req, on_dl_close, fx); /* must not fire */
    nf_http_stream_start_len(req, 200, "application/octet-stream", 1024 * 1024);
    for (size_t off = 0; off < 128 * 1024; off += PIECE / 2) {
        char buf[PIECE / 2];
        for (size_t i = 0; i < sizeof(buf); i++)
            buf[i] = (char)pattern(off + i);
        nf_http_stream_send(req, buf, sizeof(buf));
    }
    event_base_once(fx->h.base, -1, EV_TIMEOUT, on_abort_later, fx, &later);
}

/* 2 MiB in one answer that closes the connection. */
static void h_big_close(struct nf_http_req *req, void *arg)
{
    size_t n = 2 * 1024 * 1024;
    char *body = malloc(n);

    for (size_t i = 0; i < n; i++)
        body[i] = (char)pattern(i);
    nf_http_set_header(req, "Connection", "close");
    nf_http_reply_raw(req, 200, "application/octet-stream", body, n);
    free(body);
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const struct nf_test_http_route routes[] = {
        {"GET", "/download", h_download},
        {"GET", "/big", h_big_close},
        {"GET", "/abort", h_abort},
    };

    nf_test_http_open(&fx->h, NULL, false, 4);
    nf_test_http_routes(&fx->h, routes, sizeof(routes) / sizeof(routes[0]), fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    if (fx->dl != NULL)
        nf_http_stream_end(fx->dl);
    nf_test_http_close(&fx->h);
    free(fx);
    return 0;
}

/* ---- a raw reader -------------------------------------------------------------------- */

/*
 * Reads a whole answer from fd: the head into head (NUL-terminated), then want body bytes
 * checked against pattern(); a pause of pause_ms after every read of at most `bite` bytes.
 * Returns the body bytes read.
 */
static size_t read_answer(struct fx *fx, int fd, char *head, size_t headcap, size_t want,
                          size_t bite, int pause_ms, size_t *bad)
{
    char *buf = malloc(bite);
    size_t hlen = 0, got = 0;
    long long end = nf_test_now_ms() + 30000;
    bool in_body = false;

    *bad = 0;
    head[0] = '\0';
    while (got < want && nf_test_now_ms() < end) {
        ssize_t n = recv(fd, buf, in_body ? bite : 1, 0);

        if (n == 0)
            break;
        if (n < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            event_base_loop(fx->h.base, EVLOOP_ONCE);
            continue;
        }
        if (!in_body) {
            assert_true(hlen + 1 < headcap);
            head[hlen++] = buf[0];
            head[hlen] = '\0';
            in_body = hlen >= 4 && strcmp(head + hlen - 4, "\r\n\r\n") == 0;
            continue;
        }
        for (ssize_t i = 0; i < n; i++)
            *bad += (unsigned char)buf[i] != pattern(got + (size_t)i);
        got += (size_t)n;
        if (pause_ms > 0)
            nf_test_run_for(fx->h.base, pause_ms);
    }
    free(buf);
    return got;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_download_slow_reader_bounded(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(&fx->h, "GET /download HTTP/1.1\r\nHost: a\r\n\r\n");
    char head[1024];
    size_t bad = 0, got;

    got = read_answer(fx, fd, head, sizeof(head), TOTAL, 32 * 1024, 1, &bad);
    assert_int_equal(got, TOTAL);
    assert_int_equal(bad, 0);
    assert_non_null(strstr(head, "HTTP/1.1 200"));
    assert_non_null(strstr(head, "Content-Length: 8388608\r\n"));
    assert_null(strstr(head, "chunked"));
    print_message("8 MiB to a slow reader: %d drains, at most %zu bytes queued\n", fx->drains,
                  fx->max_pending);
    assert_true(fx->max_pending <= HIGH + PIECE);
    assert_true(fx->drains > 2);
    assert_int_equal(fx->ended, 1);
    close(fd);
}

static void test_download_client_gone(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(&fx->h, "GET /download HTTP/1.1\r\nHost: a\r\n\r\n");
    char head[1024];
    size_t bad = 0;

    read_answer(fx, fd, head, sizeof(head), 100 * 1024, 16 * 1024, 0, &bad);
    close(fd);
    assert_true(nf_test_wait_count(fx->h.base, &fx->closed, 1, 5000));
    assert_int_equal(fx->ended, 0);
    assert_true(fx->sent < TOTAL);
}

static void test_connection_close_answer_whole(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(&fx->h, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    char head[1024];
    size_t bad = 0, got;

    /* read slowly, so the server must wait for the socket before it closes */
    got = read_answer(fx, fd, head, sizeof(head), 2 * 1024 * 1024, 64 * 1024, 2, &bad);
    assert_int_equal(got, 2 * 1024 * 1024);
    assert_int_equal(bad, 0);
    assert_non_null(strstr(head, "Connection: close"));
    close(fd);
}

static void test_abort_closes(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(&fx->h, "GET /abort HTTP/1.1\r\nHost: a\r\n\r\n");
    char head[1024];
    size_t bad = 0, got;

    got = read_answer(fx, fd, head, sizeof(head), 1024 * 1024, 64 * 1024, 0, &bad);
    assert_int_equal(got, 128 * 1024); /* then the close, not a hang */
    assert_int_equal(bad, 0);
    assert_non_null(strstr(head, "Content-Length: 1048576"));
    assert_int_equal(fx->ended, 1);
    assert_int_equal(fx->closed, 0);
    close(fd);
}

int main(void)
{
    return NF_TEST_RUN(setup, teardown, test_download_slow_reader_bounded,
                       test_download_client_gone, test_connection_close_answer_whole,
                       test_abort_closes);
}
