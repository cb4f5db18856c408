/*
 * Unit tests for streamed request bodies (nf_http_route_stream, nf_http_req_body_stream):
 * Content-Length and chunked bodies, pipelined requests in order, a client's marker
 * header, the pass-through fallback, pause and resume, too large, idle timeout, malformed
 * chunks, Expect: 100-continue, an early answer with a lingering close, a client that
 * leaves, and a 100 MiB body through a pausing consumer (the RSS growth is printed). A
 * real server on loopback; raw sockets where the client must do something particular.
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
#include "nf_json.h"
#include "nf_test.h"
#include "nf_test_http.h"

#define SMALL_MAX 1000 /* /upload-small's limit */

enum mode {
    READ,   /* read the body, answer at its end */
    PAUSE,  /* pause after every piece, resume from a timer at once */
    SLOW,   /* pause after every MiB, resume 5 ms later (the socket fills meanwhile) */
    REFUSE, /* answer 403 at once, never read */
};

struct fx;

/* One request body as its handler saw it. */
struct up {
    struct fx *fx;
    struct nf_http_req *req;
    struct event *resume;
    uint64_t bytes;
    uint64_t since;     /* SLOW: bytes since the last pause */
    uint64_t bad;       /* bytes that differ from pattern() (pattern bodies) */
    bool pattern;       /* check the bytes against pattern() */
    long long declared; /* nf_http_req_body_length before reading */
    char head[33];      /* the first bytes */
    int calls;
};

struct fx {
    struct nf_test_http h;
    enum mode mode;
    bool pattern;
    int ends[NF_HTTP_BODY_MALFORMED + 1];
    int data_calls;
    uint64_t last_bytes, last_bad;
};

static unsigned char pattern(uint64_t i)
{
    return (unsigned char)((i * 7) ^ (i >> 11));
}

/* ---- the handler -------------------------------------------------------------------- */

static void up_free(struct up *u)
{
    if (u->resume != NULL)
        event_free(u->resume);
    free(u);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct up *u = arg;
    nf_http_req_body_resume(u->req);
}

static int on_data(const char *buf, size_t len, void *arg)
{
    struct up *u = arg;
    static const struct timeval soon = {0, 0};

    assert_true(len > 0);
    if (u->bytes < sizeof(u->head) - 1) {
        size_t n = sizeof(u->head) - 1 - u->bytes;
        memcpy(u->head + u->bytes, buf, n < len ? n : len);
    }
    if (u->pattern)
        for (size_t i = 0; i < len; i++)
            u->bad += (unsigned char)buf[i] != pattern(u->bytes + i);
    u->bytes += len;
    u->calls++;
    u->fx->data_calls++;
    if (u->fx->mode == PAUSE) {
        evtimer_add(u->resume, &soon);
        return NF_HTTP_BODY_PAUSE;
    }
    if (u->fx->mode == SLOW && (u->since += len) >= 1024 * 1024) {
        static const struct timeval later = {0, 5000};
        u->since = 0;
        evtimer_add(u->resume, &later);
        return NF_HTTP_BODY_PAUSE;
    }
    return NF_HTTP_BODY_GO;
}

static void on_end(enum nf_http_body_end how, void *arg)
{
    static const int status[] = {200, 499, 413, 408, 400};
    struct up *u = arg;
    cJSON *body = cJSON_CreateObject();

    u->fx->ends[how]++;
    u->fx->last_bytes = u->bytes;
    u->fx->last_bad = u->bad;
    cJSON_AddNumberToObject(body, "bytes", (double)u->bytes);
    cJSON_AddNumberToObject(body, "declared", (double)u->declared);
    cJSON_AddNumberToObject(body, "how", how);
    cJSON_AddStringToObject(body, "head", u->head);
    nf_http_reply_json(u->req, status[how], body);
    up_free(u);
}

static void h_upload(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    struct up *u;

    if (fx->mode == REFUSE) {
        nf_http_reply_error(req, 403, "forbidden", NULL, "no");
        return;
    }
    u = calloc(1, sizeof(*u));
    assert_non_null(u);
    u->fx = fx;
    u->req = req;
    u->pattern = fx->pattern;
    u->declared = nf_http_req_body_length(req);
    u->resume = evtimer_new(fx->h.base, on_resume, u);
    nf_http_req_body_stream(req, on_data, on_end, u);
}

/* GET /echo: whether a marker header reached the handler. */
static void h_echo(struct nf_http_req *req, void *arg)
{
    cJSON *body = cJSON_CreateObject();
    const char *m = nf_http_req_header(req, "X-Nf-Body-Stream");

    cJSON_AddStringToObject(body, "echo", m != NULL ? m : "none");
    nf_http_reply_json(req, 200, body);
}

/* POST /plain: an ordinary route; its body buffered by evhttp. */
static void h_plain(struct nf_http_req *req, void *arg)
{
    size_t len = 0;
    char text[64];

    nf_http_req_body(req, &len);
    snprintf(text, sizeof(text), "{\"plain\":%zu}", len);
    nf_http_reply_raw(req, 200, "application/json", text, strlen(text));
}

static int setup_with(void **state, int timeout_s)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    struct nf_http_limits limits = {.max_body = 64 * 1024, .timeout_s = timeout_s};

    nf_test_http_open(&fx->h, &limits, false, 4);
    assert_int_equal(nf_http_route_stream(fx->h.srv, "POST", "/upload", h_upload, fx, 0), 0);
    assert_int_equal(
        nf_http_route_stream(fx->h.srv, "POST", "/upload-small", h_upload, fx, SMALL_MAX), 0);
    assert_int_equal(nf_http_route(fx->h.srv, "GET", "/echo", h_echo, fx), 0);
    assert_int_equal(nf_http_route(fx->h.srv, "POST", "/plain", h_plain, fx), 0);
    *state = fx;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, 5);
}

static int setup_short_timeout(void **state)
{
    return setup_with(state, 1);
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    nf_test_http_close(&fx->h);
    free(fx);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------ */

/* Sends head then body (n bytes) on a fresh connection and reads until `until`. */
static char *exchange(struct fx *fx, const char *wire, size_t n, const char *until)
{
    int fd = nf_test_http_raw_request(&fx->h, "");
    char *resp;

    nf_test_http_raw_send(&fx->h, fd, wire, n);
    resp = nf_test_http_raw_read(&fx->h, fd, until);
    close(fd);
    return resp;
}

static size_t count(const char *s, const char *what)
{
    size_t n = 0;
    for (const char *p = strstr(s, what); p != NULL; p = strstr(p + 1, what))
        n++;
    return n;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_content_length_through_client(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    size_t n = 300 * 1024; /* above the server's 64 KiB max_body: streamed, not buffered */
    char *body = malloc(n + 1);

    for (size_t i = 0; i < n; i++)
        body[i] = (char)('a' + i % 26);
    body[n] = '\0';
    nf_test_http_call(&fx->h, "POST", "/upload", NULL, body, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(nf_json_int(r.json, "bytes", -2), (long long)n);
    assert_int_equal(nf_json_int(r.json, "declared", -2), (long long)n);
    assert_int_equal(fx->ends[NF_HTTP_BODY_COMPLETE], 1);
    nf_test_http_result_clear(&r);
    free(body);
}

static void test_chunked_and_pipelined_in_order(void **state)
{
    struct fx *fx = *state;
    const char *wire = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                       "GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
                       "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nT: 1\r\n\r\n"
                       "POST /plain HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
                       "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxy";
    char *resp = exchange(fx, wire, strlen(wire), "\"head\":\"xy\"");
    const char *a = strstr(resp, "\"head\":\"hello\""), *b = strstr(resp, "\"echo\":\"none\"");
    const char *c = strstr(resp, "\"head\":\"abcdefg\""), *d = strstr(resp, "{\"plain\":3}");
    const char *e = strstr(resp, "\"head\":\"xy\"");

    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(d);
    assert_non_null(e);
    assert_true(a < b && b < c && c < d && d < e);
    assert_int_equal(count(resp, "HTTP/1.1 200"), 5);
    assert_non_null(strstr(resp, "\"declared\":-1,\"how\":0,\"head\":\"abcdefg\"")); /* chunked */
    assert_int_equal(fx->ends[NF_HTTP_BODY_COMPLETE], 3);
    free(resp);
}

static void test_client_marker_stripped(void **state)
{
    struct fx *fx = *state;
    const char *wire = "GET /echo HTTP/1.1\r\nHost: a\r\nX-Nf-Body-Stream: forged\r\n\r\n"
                       "POST /upload HTTP/1.1\r\nHost: a\r\nX-Nf-Body-Stream: forged\r\n"
                       "Content-Length: 5\r\n\r\nhello";
    char *resp = exchange(fx, wire, strlen(wire), "\"head\":\"hello\"");

    assert_non_null(strstr(resp, "\"echo\":\"none\""));
    assert_non_null(strstr(resp, "\"bytes\":5,\"declared\":5")); /* streamed all the same */
    free(resp);
}

/* A chunked body on an ordinary route: the connection passes bytes through from then on
 * and a streaming route on it gets evhttp's buffered body (and its 413). */
static void test_pass_through_fallback(void **state)
{
    struct fx *fx = *state;
    const char *wire = "POST /plain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\n0\r\n\r\n"
                       "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    char head[128], *resp, *big;
    size_t n = 100 * 1024;
    int fd;

    resp = exchange(fx, wire, strlen(wire), "\"head\":\"hello\"");
    assert_non_null(strstr(resp, "{\"plain\":3}"));
    assert_non_null(strstr(resp, "\"bytes\":5,\"declared\":-1")); /* buffered */
    free(resp);

    /* over the server's max_body on such a connection: evhttp's 413 */
    fd = nf_test_http_raw_request(&fx->h, "POST /plain HTTP/1.1\r\nHost: a\r\n"
                                          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    snprintf(head, sizeof(head), "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n",
             n);
    big = calloc(1, n);
    nf_test_http_raw_send(&fx->h, fd, head, strlen(head));
    nf_test_http_raw_send(&fx->h, fd, big, n);
    resp = nf_test_http_raw_read(&fx->h, fd, "request_too_large");
    assert_non_null(strstr(resp, "HTTP/1.1 413"));
    close(fd);
    free(resp);
    free(big);
}

static void test_pause_resume(void **state)
{
    struct fx *fx = *state;
    size_t n = 2 * 1024 * 1024;
    char head[128], *body = malloc(n), *resp;
    int fd;

    for (size_t i = 0; i < n; i++)
        body[i] = (char)pattern(i);
    fx->mode = PAUSE;
    fx->pattern = true;
    snprintf(head, sizeof(head), "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n",
             n);
    fd = nf_test_http_raw_request(&fx->h, head);
    nf_test_http_raw_send(&fx->h, fd, body, n);
    resp = nf_test_http_raw_read(&fx->h, fd, "\"head\"");
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    assert_int_equal(fx->last_bytes, n);
    assert_int_equal(fx->last_bad, 0);
    assert_true(fx->data_calls > 1);
    close(fd);
    free(resp);
    free(body);
}

static void test_too_large(void **state)
{
    struct fx *fx = *state;
    const char *said = "POST /upload-small HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n";
    char wire[4096], *resp;
    size_t n;

    /* said upfront: refused before a byte is read */
    resp = exchange(fx, said, strlen(said), "\"head\"");
    assert_non_null(strstr(resp, "HTTP/1.1 413"));
    assert_non_null(strstr(resp, "Connection: close"));
    assert_int_equal(fx->data_calls, 0);
    free(resp);

    /* chunked: found out on the way */
    n = (size_t)snprintf(wire, sizeof(wire),
                         "POST /upload-small HTTP/1.1\r\nHost: a\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n258\r\n");
    memset(wire + n, 'a', 600);
    n += 600;
    memcpy(wire + n, "\r\n258\r\n", 7);
    n += 7;
    memset(wire + n, 'b', 600);
    n += 600;
    resp = exchange(fx, wire, n, "\"head\"");
    assert_non_null(strstr(resp, "HTTP/1.1 413"));
    assert_non_null(strstr(resp, "\"bytes\":600"));
    assert_int_equal(fx->ends[NF_HTTP_BODY_TOO_LARGE], 2);
    free(resp);
}

static void test_malformed_chunks(void **state)
{
    struct fx *fx = *state;
    const char *wire = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\nzz\r\n";
    char *resp = exchange(fx, wire, strlen(wire), "\"head\"");

    assert_non_null(strstr(resp, "HTTP/1.1 400"));
    assert_non_null(strstr(resp, "Connection: close"));
    assert_int_equal(fx->ends[NF_HTTP_BODY_MALFORMED], 1);
    free(resp);
}

static void test_idle_timeout(void **state)
{
    struct fx *fx = *state;
    const char *wire = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789";
    long long t0 = nf_test_now_ms();
    char *resp = exchange(fx, wire, strlen(wire), "\"head\"");

    assert_non_null(strstr(resp, "HTTP/1.1 408"));
    assert_non_null(strstr(resp, "\"bytes\":10"));
    assert_true(nf_test_now_ms() - t0 >= 900);
    assert_int_equal(fx->ends[NF_HTTP_BODY_TIMEOUT], 1);
    free(resp);
}

static void test_expect_continue(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(&fx->h, "POST /upload HTTP/1.1\r\nHost: a\r\n"
                                              "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    char *resp = nf_test_http_raw_read(&fx->h, fd, "100 Continue\r\n\r\n");

    assert_non_null(strstr(resp, "HTTP/1.1 100 Continue"));
    free(resp);
    nf_test_http_raw_send(&fx->h, fd, "hello", 5);
    resp = nf_test_http_raw_read(&fx->h, fd, "\"head\"");
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    assert_non_null(strstr(resp, "\"head\":\"hello\""));
    close(fd);
    free(resp);
}

/* An ordinary route: evhttp's own "100 Continue" still goes out through the filter. */
static void test_expect_continue_ordinary_route(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(&fx->h, "POST /plain HTTP/1.1\r\nHost: a\r\n"
                                              "Expect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    char *resp = nf_test_http_raw_read(&fx->h, fd, "100 Continue\r\n\r\n");

    assert_non_null(strstr(resp, "HTTP/1.1 100 Continue"));
    free(resp);
    nf_test_http_raw_send(&fx->h, fd, "abc", 3);
    resp = nf_test_http_raw_read(&fx->h, fd, "{\"plain\":3}");
    assert_non_null(strstr(resp, "{\"plain\":3}"));
    close(fd);
    free(resp);
}

/* The handler answers before reading: the client still sends its whole body, gets the
 * answer (not a reset) and the connection closes. */
static void test_early_answer_lingering_close(void **state)
{
    struct fx *fx = *state;
    size_t n = 4 * 1024 * 1024, sent = 0;
    char head[128], *body = calloc(1, n), *resp;
    int fd;

    fx->mode = REFUSE;
    snprintf(head, sizeof(head), "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n",
             n);
    fd = nf_test_http_raw_request(&fx->h, head);
    while (sent < n) {
        ssize_t w = send(fd, body + sent, n - sent, MSG_NOSIGNAL);

        if (w > 0)
            sent += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            fail_msg("send failed after %zu bytes: %s", sent, strerror(errno));
        else
            event_base_loop(fx->h.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    }
    resp = nf_test_http_raw_read(&fx->h, fd, "\"request_id\"");
    assert_non_null(strstr(resp, "HTTP/1.1 403"));
    assert_non_null(strstr(resp, "Connection: close"));
    assert_int_equal(fx->data_calls, 0);
    close(fd);
    free(resp);
    free(body);
}

static void test_client_gone(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(
        &fx->h, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789");

    nf_test_run_for(fx->h.base, 50);
    close(fd);
    assert_true(nf_test_wait_count(fx->h.base, &fx->ends[NF_HTTP_BODY_GONE], 1, 2000));
    assert_int_equal(fx->last_bytes, 10);
}

/* ---- a big body, paused and resumed: the process stays small ------------------------ */

struct sender {
    int fd;
    uint64_t sent, total;
    struct event *ev;
    unsigned char buf[64 * 1024];
};

static void on_sendable(evutil_socket_t fd, short what, void *arg)
{
    struct sender *s = arg;

    for (int i = 0; i < 8 && s->sent < s->total; i++) {
        size_t want = sizeof(s->buf);
        ssize_t w;

        if (s->total - s->sent < want)
            want = (size_t)(s->total - s->sent);
        for (size_t k = 0; k < want; k++)
            s->buf[k] = pattern(s->sent + k);
        w = send(fd, s->buf, want, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s->sent += (uint64_t)w;
    }
    if (s->sent >= s->total)
        event_del(s->ev);
}

#if defined(__SANITIZE_ADDRESS__)
size_t __sanitizer_get_current_allocated_bytes(void); /* <sanitizer/allocator_interface.h> */
#endif

/* Memory in use, KiB: the heap under AddressSanitizer (whose quarantine of freed blocks
 * would swamp the RSS), else the RSS. */
static long mem_kib(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return (long)(__sanitizer_get_current_allocated_bytes() / 1024);
#else
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
#endif
}

static long peak_kib;

static void sample_peak(void *arg)
{
    long now = mem_kib();
    if (now > peak_kib)
        peak_kib = now;
}

static bool sent_and_ended(void *arg)
{
    struct fx *fx = arg;
    return fx->ends[NF_HTTP_BODY_COMPLETE] > 0;
}

static void test_100mib_body_rss(void **state)
{
    struct fx *fx = *state;
    struct sender *s = calloc(1, sizeof(*s));
    uint64_t n = 100ull * 1024 * 1024;
    char head[128], *resp;
    long before, after;

    fx->mode = SLOW;
    fx->pattern = true;
    snprintf(head, sizeof(head), "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %llu\r\n\r\n",
             (unsigned long long)n);
    s->fd = nf_test_http_raw_request(&fx->h, head);
    s->total = n;
    s->ev = event_new(fx->h.base, s->fd, EV_WRITE | EV_PERSIST, on_sendable, s);
    event_add(s->ev, NULL);
    before = peak_kib = mem_kib();
    assert_true(nf_test_run_ticking(fx->h.base, sent_and_ended, fx, 60000, 5, sample_peak, NULL));
    after = mem_kib();
    print_message("100 MiB body in %d pieces: %s %ld KiB before, peak %+ld KiB, after %+ld KiB\n",
                  fx->data_calls,
#if defined(__SANITIZE_ADDRESS__)
                  "heap",
#else
                  "RSS",
#endif
                  before, peak_kib - before, after - before);
    assert_int_equal(fx->last_bytes, n);
    assert_int_equal(fx->last_bad, 0);
    /* generous: the body itself would be 100 MiB */
    assert_true(peak_kib - before < 32 * 1024);
    resp = nf_test_http_raw_read(&fx->h, s->fd, "\"head\"");
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    free(resp);
    event_free(s->ev);
    close(s->fd);
    free(s);
}

int main(void)
{
    int rc = NF_TEST_RUN(
        setup, teardown, test_content_length_through_client, test_chunked_and_pipelined_in_order,
        test_client_marker_stripped, test_pass_through_fallback, test_pause_resume, test_too_large,
        test_malformed_chunks, test_expect_continue, test_expect_continue_ordinary_route,
        test_early_answer_lingering_close, test_client_gone, test_100mib_body_rss);
    rc |= NF_TEST_RUN(setup_short_timeout, teardown, test_idle_timeout);
    return rc;
}
