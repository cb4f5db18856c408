/*
 * Unit tests for the answers of the nf_http server: the JSON error shape, replies given
 * later from another callback, clients that leave first, shutdown (stop, free), streaming
 * and long polls. A real evhttp server on an ephemeral loopback port, called through the
 * nf_http client, and raw sockets where a client must leave early.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "nf_crypto.h"
#include "nf_http.h"
#include "nf_test.h"
#include "nf_test_http.h"

#define WAIT_MS NF_TEST_HTTP_WAIT_MS

struct fx {
    struct nf_test_http h; /* its "hold" routes keep requests in h.held */
    int handler_calls;
    /* streaming */
    struct nf_http_req *stream;
    int stream_sent;
    int stream_closed; /* on_close calls */
    int stream_send_rc;
};

/* ---- handlers ----------------------------------------------------------------------- */

static void h_hold(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->handler_calls++;
    nf_test_http_hold(req, &fx->h);
}

static void on_delayed_reply(evutil_socket_t fd, short what, void *arg)
{
    struct fx *fx = arg;

    nf_test_http_reply_held(&fx->h, 200);
}

/* Holds the request and answers it 50 ms later. */
static void h_delayed(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    struct timeval tv = {0, 50000};

    h_hold(req, arg);
    assert_int_equal(event_base_once(fx->h.base, -1, EV_TIMEOUT, on_delayed_reply, fx, &tv), 0);
}

/* {"body_len": n}. */
static void h_body_len(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    cJSON *body = cJSON_CreateObject();
    size_t blen = 0;

    fx->handler_calls++;
    nf_http_req_body(req, &blen);
    cJSON_AddNumberToObject(body, "body_len", (double)blen);
    nf_http_reply_json(req, 200, body);
}

static void h_error_param(struct nf_http_req *req, void *arg)
{
    nf_http_reply_error(req, 422, "invalid_params", "num_samples", "num_samples must be %d..%d", 1,
                        1000000);
}

static void on_stream_close(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    assert_ptr_equal(req, fx->stream);
    fx->stream_closed++;
}

static void on_stream_tick(evutil_socket_t fd, short what, void *arg)
{
    struct fx *fx = arg;
    struct timeval tv = {0, 20000};
    char line[64];
    int n;

    if (fx->stream == NULL)
        return;
    n = snprintf(line, sizeof(line), "data: %d\n\n", ++fx->stream_sent);
    fx->stream_send_rc = nf_http_stream_send(fx->stream, line, (size_t)n);
    if (fx->stream_sent >= 3) {
        nf_http_stream_end(fx->stream);
        fx->stream = NULL;
        return;
    }
    event_base_once(fx->h.base, -1, EV_TIMEOUT, on_stream_tick, fx, &tv);
}

/* Streams three events 20 ms apart, then ends. */
static void h_stream(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->stream = req;
    fx->stream_sent = 0;
    nf_http_stream_on_close(req, on_stream_close, fx);
    nf_http_stream_start(req, 200, "text/event-stream");
    on_stream_tick(-1, 0, fx);
}

/* Streams one event and then waits (the test drives it). */
static void h_stream_hold(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->stream = req;
    nf_http_stream_on_close(req, on_stream_close, fx);
    nf_http_stream_start(req, 200, NULL);
    fx->stream_send_rc = nf_http_stream_send(req, "data: first\n\n", 13);
}

/* Ends the stream from inside the close notification. */
static void on_stream_close_end(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->stream_closed++;
    assert_int_equal(nf_http_stream_send(req, "x", 1), -1);
    nf_http_stream_end(req);
    fx->stream = NULL;
}

static void h_stream_end_on_close(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->stream = req;
    nf_http_stream_start(req, 200, NULL);
    nf_http_stream_on_close(req, on_stream_close_end, fx);
    fx->stream_send_rc = nf_http_stream_send(req, "data: first\n\n", 13);
}

/* A long poll: held without replying, watching for the client to leave. */
static void on_poll_gone(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    fx->stream_closed++;
}

static void h_poll(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    h_hold(req, arg);
    nf_http_stream_on_close(req, on_poll_gone, fx);
}

/* ---- fixture ------------------------------------------------------------------------ */

static int setup_with(void **state, const struct nf_http_limits *limits, int max_conns)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const struct nf_test_http_route routes[] = {
        {"GET", "/api/hold", h_hold},
        {"POST", "/api/hold", h_hold},
        {"GET", "/api/delayed", h_delayed},
        {"POST", "/api/echo", h_body_len},
        {"GET", "/api/err", h_error_param},
        {"GET", "/api/stream", h_stream},
        {"GET", "/api/stream-hold", h_stream_hold},
        {"GET", "/api/stream-eoc", h_stream_end_on_close},
        {"POST", "/api/poll", h_poll},
    };

    nf_test_http_open(&fx->h, limits, true, max_conns);
    nf_test_http_routes(&fx->h, routes, sizeof(routes) / sizeof(routes[0]), fx);
    *state = fx;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL, 4);
}

static int setup_one_conn(void **state)
{
    return setup_with(state, NULL, 1);
}

static int setup_short_timeout(void **state)
{
    struct nf_http_limits limits = {.timeout_s = 1};
    return setup_with(state, &limits, 1);
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    while (fx->h.nheld > 0)
        nf_test_http_reply_held(&fx->h, 200);
    if (fx->stream != NULL)
        nf_http_stream_end(fx->stream);
    nf_test_http_close(&fx->h);
    free(fx);
    return 0;
}

/* ---- tests: errors, async replies, client gone, shutdown ---------------------------- */

static void test_error_param(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    const cJSON *err;

    nf_test_http_call(&fx->h, "GET", "/api/err", NULL, NULL, &r);
    assert_int_equal(r.status, 422);
    err = nf_test_http_error(&r, "invalid_params");
    assert_string_equal(nf_test_jstr(err, "param"), "num_samples");
    assert_string_equal(nf_test_jstr(err, "message"), "num_samples must be 1..1000000");

    /* param is omitted when NULL */
    nf_test_http_call(&fx->h, "GET", "/nope", NULL, NULL, &r);
    err = nf_test_http_error(&r, "not_found");
    assert_null(cJSON_GetObjectItem(err, "param"));
    nf_test_http_result_clear(&r);
}

static void test_async_reply(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    long long t0 = nf_test_now_ms();

    assert_int_equal(nf_http_client_request(fx->h.cli, "GET", "/api/delayed", NULL, NULL, 0, 0,
                                            nf_test_http_on_result, &r),
                     0);
    nf_test_run_for(fx->h.base, 20);
    assert_int_equal(fx->h.nheld, 1);
    assert_int_equal(nf_http_inflight(fx->h.srv), 1);
    assert_false(r.done);
    assert_true(nf_test_http_wait(&fx->h, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"late\":true}");
    assert_true(nf_test_now_ms() - t0 >= 45);
    assert_int_equal(nf_http_inflight(fx->h.srv), 0);
    nf_test_http_result_clear(&r);
}

static void test_client_gone_before_reply(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(
        &fx->h, "GET /api/hold?x=1 HTTP/1.1\r\nHost: x\r\nX-Test: kept\r\n\r\n");
    struct nf_test_http_result r = {0};

    nf_test_wait_count(fx->h.base, &fx->h.nheld, 1, WAIT_MS);
    assert_int_equal(fx->h.nheld, 1);
    close(fd);
    nf_test_run_for(fx->h.base, 50);
    /* the request stays usable until the reply, which is dropped */
    assert_string_equal(nf_http_req_query(fx->h.held[0], "x"), "1");
    assert_string_equal(nf_http_req_header(fx->h.held[0], "X-Test"), "kept");
    assert_int_equal(nf_http_inflight(fx->h.srv), 1);
    nf_test_http_reply_held(&fx->h, 200);
    nf_test_run_for(fx->h.base, 50);
    assert_int_equal(nf_http_inflight(fx->h.srv), 0);

    /* the server still works afterwards */
    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    nf_test_http_result_clear(&r);
}

static void test_server_free_answers_503(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    struct nf_http_req *req;
    const char *hdrs[] = {"X-Test", "still-here", NULL};

    assert_int_equal(nf_http_client_request(fx->h.cli, "POST", "/api/hold", hdrs, "{\"k\":1}", 7, 0,
                                            nf_test_http_on_result, &r),
                     0);
    nf_test_wait_count(fx->h.base, &fx->h.nheld, 1, WAIT_MS);
    assert_int_equal(fx->h.nheld, 1);
    req = fx->h.held[0];

    nf_http_server_free(fx->h.srv);
    fx->h.srv = NULL;
    assert_true(nf_test_http_wait(&fx->h, &r));
    assert_int_equal(r.status, 503);
    nf_test_http_error(&r, "unavailable");

    /* the handler still owns req: accessors work, the reply is a no-op that frees it */
    assert_string_equal(nf_http_req_header(req, "X-Test"), "still-here");
    assert_string_equal(nf_http_req_body(req, NULL), "{\"k\":1}");
    assert_string_equal(nf_http_req_route(req), "/api/hold");
    nf_test_http_reply_held(&fx->h, 200);
    nf_test_http_result_clear(&r);
}

static void test_stop_closes_listener(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};

    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL,
                      &r); /* opens a keep-alive connection */
    assert_int_equal(r.status, 200);
    nf_http_server_stop(fx->h.srv);
    nf_test_http_call(&fx->h, "GET", "/readyz", NULL, NULL,
                      &r); /* same connection, now closed after */
    assert_int_equal(r.status, 503);
    assert_string_equal(r.conn, "close");
    assert_string_equal(nf_test_jstr(r.json, "status"), "unready");
    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r); /* nobody listens any more */
    assert_int_equal(r.status, 0);
    nf_test_http_result_clear(&r);
}

/* ---- tests: streaming and long polls ------------------------------------------------ */

static void test_streaming(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};

    nf_test_http_call(&fx->h, "GET", "/api/stream", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/event-stream");
    assert_string_equal(r.body, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
    assert_int_equal(fx->stream_send_rc, 0);
    assert_int_equal(fx->stream_closed, 0);
    assert_null(fx->stream);
    assert_int_equal(nf_http_inflight(fx->h.srv), 0);

    /* the connection is reusable after a chunked answer */
    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    nf_test_http_result_clear(&r);
}

static void test_stream_client_gone(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(&fx->h, "GET /api/stream-hold HTTP/1.1\r\nHost: x\r\n\r\n");
    char *resp = nf_test_http_raw_read(&fx->h, fd, "data: first");

    assert_non_null(strstr(resp, "HTTP/1.1 200 "));
    assert_non_null(strstr(resp, "Transfer-Encoding: chunked"));
    assert_non_null(strstr(resp, "Content-Type: text/event-stream"));
    free(resp);
    assert_non_null(fx->stream);
    assert_int_equal(fx->stream_send_rc, 0);

    close(fd);
    nf_test_wait_count(fx->h.base, &fx->stream_closed, 1, WAIT_MS);
    assert_int_equal(fx->stream_closed, 1);
    assert_int_equal(nf_http_stream_send(fx->stream, "data: x\n\n", 9), -1);
    assert_int_equal(nf_http_inflight(fx->h.srv), 1);
    nf_http_stream_end(fx->stream);
    fx->stream = NULL;
    assert_int_equal(nf_http_inflight(fx->h.srv), 0);
    assert_int_equal(fx->stream_closed, 1);
}

static void test_stream_end_inside_on_close(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(&fx->h, "GET /api/stream-eoc HTTP/1.1\r\nHost: x\r\n\r\n");
    char *resp = nf_test_http_raw_read(&fx->h, fd, "data: first");

    assert_non_null(strstr(resp, "data: first"));
    free(resp);
    close(fd);
    nf_test_wait_count(fx->h.base, &fx->stream_closed, 1, WAIT_MS);
    assert_int_equal(fx->stream_closed, 1);
    assert_null(fx->stream);
    assert_int_equal(nf_http_inflight(fx->h.srv), 0);
}

static void test_long_poll_client_gone(void **state)
{
    struct fx *fx = *state;
    int fd = nf_test_http_raw_request(
        &fx->h, "POST /api/poll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");

    nf_test_wait_count(fx->h.base, &fx->h.nheld, 1, WAIT_MS);
    assert_int_equal(fx->h.nheld, 1);
    nf_test_run_for(fx->h.base, 30);
    assert_int_equal(fx->stream_closed, 0); /* a silent client is not a gone client */
    close(fd);
    nf_test_wait_count(fx->h.base, &fx->stream_closed, 1, WAIT_MS);
    assert_int_equal(fx->stream_closed, 1);
    /* the reply is still owed; it is dropped and frees req */
    assert_string_equal(nf_http_req_body(fx->h.held[0], NULL), "{}");
    nf_test_http_reply_held(&fx->h, 200);
    assert_int_equal(nf_http_inflight(fx->h.srv), 0);
    nf_test_run_for(fx->h.base, 20);
    assert_int_equal(fx->stream_closed, 1);
}

static void test_long_poll_outlives_idle_timeout(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    char *big = calloc(200001, 1);

    assert_int_equal(nf_http_client_request(fx->h.cli, "POST", "/api/poll", NULL, "{}", 2, 3000,
                                            nf_test_http_on_result, &r),
                     0);
    nf_test_run_for(fx->h.base, 1600); /* longer than timeout_s */
    assert_int_equal(fx->h.nheld, 1);
    assert_false(r.done);
    assert_int_equal(fx->stream_closed, 0);
    nf_test_http_reply_held(&fx->h, 200);
    assert_true(nf_test_http_wait(&fx->h, &r));
    assert_int_equal(r.status, 200);
    /* the same connection serves the next requests normally, large bodies too */
    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    memset(big, 'b', 200000);
    nf_test_http_call(&fx->h, "POST", "/api/echo", NULL, big, &r);
    assert_int_equal(r.status, 200);
    free(big);
    assert_true(nf_test_http_metrics_have(&fx->h, "\nnf_http_connections_total 1\n"));
    /* while an idle keep-alive connection is still closed after timeout_s */
    nf_test_run_for(fx->h.base, 1600);
    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(nf_test_http_metrics_have(&fx->h, "\nnf_http_connections_total 2\n"));
    nf_test_http_result_clear(&r);
}

static void test_long_poll_pipelined(void **state)
{
    struct fx *fx = *state;
    const char *reqs = "POST /api/poll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                       "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
    char *big = malloc(100000);
    int fd = nf_test_http_raw_request(&fx->h, reqs);
    char *resp;

    /* a second request, larger than what is read while watching, queued behind the poll */
    memset(big, 'q', 100000);
    nf_test_wait_count(fx->h.base, &fx->h.nheld, 1, WAIT_MS);
    assert_int_equal(fx->h.nheld, 1);
    nf_test_http_raw_send(&fx->h, fd, big, 100000);
    nf_test_run_for(fx->h.base, 50);
    assert_int_equal(fx->stream_closed, 0);
    assert_int_equal(fx->handler_calls, 1);
    nf_test_http_reply_held(&fx->h, 200);
    resp = nf_test_http_raw_read(&fx->h, fd, "\"body_len\":100000}");
    assert_non_null(strstr(resp, "{\"late\":true}"));
    assert_non_null(strstr(resp, "\"body_len\":100000}")); /* the second, answered after */
    free(resp);
    free(big);
    close(fd);
}

int main(void)
{
    int rc;

    nf_test_log_quiet();
    if (nf_crypto_init() != 0)
        return 1;
    rc = NF_TEST_RUN(setup, teardown, test_error_param, test_async_reply,
                     test_client_gone_before_reply, test_server_free_answers_503, test_streaming,
                     test_stream_client_gone, test_stream_end_inside_on_close,
                     test_long_poll_client_gone, test_long_poll_pipelined);
    rc |= NF_TEST_RUN(setup_one_conn, teardown, test_stop_closes_listener);
    rc |= NF_TEST_RUN(setup_short_timeout, teardown, test_long_poll_outlives_idle_timeout);
    return rc;
}
