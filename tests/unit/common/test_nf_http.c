/*
 * Unit tests for nf_http (server and client) against each other, in one process on
 * loopback: a real evhttp server on an ephemeral port, the pooled client, and raw sockets
 * where a client must misbehave (leave early, send oversize headers).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "nf_crypto.h"
#include "nf_http.h"
#include "nf_id.h"
#include "nf_log.h"
#include "nf_metrics.h"

#define MAX_HELD 8
#define WAIT_MS 5000

struct fx {
    struct event_base *base;
    struct event *tick; /* wakes the loop so run_until can check its flag */
    struct nf_metrics *m;
    struct nf_http_server *srv;
    struct nf_http_client *cli;
    int port;
    bool ready;                         /* what the readyz callback says */
    struct nf_http_req *held[MAX_HELD]; /* requests the "hold" handler keeps unanswered */
    int nheld;
    int handler_calls;
    /* streaming */
    struct nf_http_req *stream;
    int stream_sent;
    int stream_closed; /* on_close calls */
    int stream_send_rc;
};

/* One client answer, copied out of the callback. */
struct result {
    bool done;
    int calls;
    int status;
    char *body;
    size_t len;
    char error[128];
    char rid[128];
    char ctype[128];
    char allow[128];
    char conn[64];
    bool had_headers;
};

static void result_clear(struct result *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* ---- loop and client helpers -------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the loop until *flag (if given) or max_ms passed; returns *flag. */
static bool run_until(struct fx *fx, const bool *flag, int max_ms)
{
    long long end = now_ms() + max_ms;

    while ((flag == NULL || !*flag) && now_ms() < end)
        event_base_loop(fx->base, EVLOOP_ONCE);
    return flag != NULL && *flag;
}

static void run_for(struct fx *fx, int ms)
{
    run_until(fx, NULL, ms);
}

static void copy_header(const struct nf_http_resp *resp, const char *name, char *out, size_t n)
{
    const char *v = nf_http_resp_header(resp, name);
    snprintf(out, n, "%s", v != NULL ? v : "");
}

static void on_result(const struct nf_http_resp *resp, void *arg)
{
    struct result *r = arg;

    r->calls++;
    r->done = true;
    r->status = resp->status;
    free(r->body);
    r->body = malloc(resp->len + 1);
    memcpy(r->body, resp->body, resp->len + 1);
    r->len = resp->len;
    snprintf(r->error, sizeof(r->error), "%s", resp->error != NULL ? resp->error : "");
    r->had_headers = resp->headers != NULL;
    copy_header(resp, "X-Request-Id", r->rid, sizeof(r->rid));
    copy_header(resp, "Content-Type", r->ctype, sizeof(r->ctype));
    copy_header(resp, "Allow", r->allow, sizeof(r->allow));
    copy_header(resp, "Connection", r->conn, sizeof(r->conn));
}

/* One request through fx->cli, waited for; the answer is in r. */
static void call(struct fx *fx, const char *method, const char *path, const char *const *hdrs,
                 const char *body, struct result *r)
{
    result_clear(r);
    assert_int_equal(nf_http_client_request(fx->cli, method, path, hdrs, body,
                                            body != NULL ? strlen(body) : 0, 0, on_result, r),
                     0);
    assert_true(run_until(fx, &r->done, WAIT_MS));
    assert_int_equal(r->calls, 1);
}

/* The error object of an error answer, checked for the agreed shape. */
static cJSON *parse_error(const struct result *r, const char *code)
{
    cJSON *root = cJSON_Parse(r->body);
    cJSON *err;

    assert_non_null(root);
    err = cJSON_GetObjectItemCaseSensitive(root, "error");
    assert_true(cJSON_IsObject(err));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(err, "code")->valuestring, code);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(err, "message")));
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(err, "request_id")));
    assert_string_equal(r->ctype, "application/json");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(err, "request_id")->valuestring, r->rid);
    return root;
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- raw socket helpers ------------------------------------------------------------- */

static int raw_connect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    return fd;
}

/* Sends all of s while the loop keeps the server reading. */
static void raw_send(struct fx *fx, int fd, const char *s, size_t n)
{
    long long end = now_ms() + WAIT_MS;

    while (n > 0 && now_ms() < end) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            break; /* the server may close early */
        } else {
            event_base_loop(fx->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        }
    }
}

/* Reads until the peer closes, contains `until` (if given), or max_ms. Heap string. */
static char *raw_read(struct fx *fx, int fd, const char *until, int max_ms)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    long long end = now_ms() + max_ms;

    buf[0] = '\0';
    while (now_ms() < end) {
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n > 0) {
            len += (size_t)n;
            buf[len] = '\0';
            if (until != NULL && strstr(buf, until) != NULL)
                break;
            if (len + 1 >= cap) {
                cap *= 2;
                buf = realloc(buf, cap);
            }
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            break;
        event_base_loop(fx->base, EVLOOP_ONCE);
    }
    return buf;
}

/* ---- handlers ----------------------------------------------------------------------- */

/* Echoes what the request looked like. */
static void h_echo(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    cJSON *body = cJSON_CreateObject();
    const char *names[] = {"job_id", "id", "status", "name", "flag", "empty", "x", "missing"};
    cJSON *params = cJSON_AddObjectToObject(body, "params");
    cJSON *query = cJSON_AddObjectToObject(body, "query");
    size_t blen = 0;

    fx->handler_calls++;
    cJSON_AddStringToObject(body, "route", nf_http_req_route(req));
    cJSON_AddStringToObject(body, "path", nf_http_req_path(req));
    cJSON_AddStringToObject(body, "method", nf_http_req_method(req));
    cJSON_AddStringToObject(body, "peer", nf_http_req_peer(req));
    cJSON_AddStringToObject(body, "id", nf_http_req_id(req));
    if (nf_http_req_query_string(req) != NULL)
        cJSON_AddStringToObject(body, "qs", nf_http_req_query_string(req));
    if (nf_http_req_header(req, "x-test") != NULL)
        cJSON_AddStringToObject(body, "x_test", nf_http_req_header(req, "X-TEST"));
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (nf_http_req_param(req, names[i]) != NULL)
            cJSON_AddStringToObject(params, names[i], nf_http_req_param(req, names[i]));
        if (nf_http_req_query(req, names[i]) != NULL)
            cJSON_AddStringToObject(query, names[i], nf_http_req_query(req, names[i]));
    }
    cJSON_AddStringToObject(body, "body", nf_http_req_body(req, &blen));
    cJSON_AddNumberToObject(body, "body_len", (double)blen);
    nf_http_set_header(req, "X-Handler", "echo");
    nf_http_reply_json(req, 200, body);
}

static void h_json(struct nf_http_req *req, void *arg)
{
    cJSON *in = nf_http_req_json(req);
    cJSON *body;

    if (in == NULL)
        return;                                  /* answered 400 already */
    assert_ptr_equal(nf_http_req_json(req), in); /* parsed once, owned by req */
    body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "got", cJSON_Duplicate(in, 1));
    nf_http_reply_json(req, 201, body);
}

static void h_hold(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;

    fx->handler_calls++;
    assert_true(fx->nheld < MAX_HELD);
    fx->held[fx->nheld++] = req;
}

static void h_raw(struct nf_http_req *req, void *arg)
{
    nf_http_reply_raw(req, 200, "text/plain", "hello", 5);
}

static void h_error_param(struct nf_http_req *req, void *arg)
{
    nf_http_reply_error(req, 422, "invalid_params", "num_samples", "num_samples must be %d..%d", 1,
                        1000000);
}

/* Answers the oldest held request 200 {"late": true}. */
static void reply_held(struct fx *fx, int status)
{
    struct nf_http_req *req;
    cJSON *body = cJSON_CreateObject();

    assert_true(fx->nheld > 0);
    req = fx->held[0];
    memmove(fx->held, fx->held + 1, (size_t)(fx->nheld - 1) * sizeof(struct nf_http_req *));
    fx->nheld--;
    cJSON_AddBoolToObject(body, "late", 1);
    nf_http_reply_json(req, status, body);
}

static void on_delayed_reply(evutil_socket_t fd, short what, void *arg)
{
    reply_held(arg, 200);
}

static void h_delayed(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    struct timeval tv = {0, 50000};

    h_hold(req, arg);
    assert_int_equal(event_base_once(fx->base, -1, EV_TIMEOUT, on_delayed_reply, fx, &tv), 0);
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
    {
        struct timeval tv = {0, 20000};
        event_base_once(fx->base, -1, EV_TIMEOUT, on_stream_tick, fx, &tv);
    }
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

static bool ready_cb(cJSON *checks, void *arg)
{
    struct fx *fx = arg;
    cJSON_AddStringToObject(checks, "redis", fx->ready ? "ok" : "down");
    return fx->ready;
}

/* ---- fixture ------------------------------------------------------------------------ */

static void add_routes(struct fx *fx, struct nf_http_server *srv)
{
    assert_int_equal(nf_http_route(srv, "GET", "/api/jobs/{job_id}/events", h_echo, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/things/{id}", h_echo, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/things/special", h_raw, fx), 0);
    assert_int_equal(nf_http_route(srv, "DELETE", "/api/things/{id}", h_echo, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/list/", h_echo, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/", h_echo, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/q", h_echo, fx), 0);
    assert_int_equal(nf_http_route(srv, "POST", "/api/echo", h_echo, fx), 0);
    assert_int_equal(nf_http_route(srv, "PATCH", "/api/echo", h_echo, fx), 0);
    assert_int_equal(nf_http_route(srv, "POST", "/api/json", h_json, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/hold", h_hold, fx), 0);
    assert_int_equal(nf_http_route(srv, "POST", "/api/hold", h_hold, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/delayed", h_delayed, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/stream", h_stream, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/stream-hold", h_stream_hold, fx), 0);
    assert_int_equal(nf_http_route(srv, "GET", "/api/err", h_error_param, fx), 0);
}

static int setup_with(void **state, const struct nf_http_limits *limits, int max_conns)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    struct timeval tv = {0, 5000};

    fx->base = event_base_new();
    assert_non_null(fx->base);
    fx->tick = event_new(fx->base, -1, EV_PERSIST, on_tick, NULL);
    event_add(fx->tick, &tv);
    assert_int_equal(nf_metrics_new(&fx->m), 0);
    assert_int_equal(nf_http_server_new(&fx->srv, fx->base, "127.0.0.1", 0, limits, false, fx->m),
                     0);
    fx->port = nf_http_server_port(fx->srv);
    assert_true(fx->port > 0);
    fx->ready = true;
    nf_http_set_ready(fx->srv, ready_cb, fx);
    add_routes(fx, fx->srv);
    assert_int_equal(nf_http_client_new(&fx->cli, fx->base, "127.0.0.1", fx->port, 2000, max_conns),
                     0);
    *state = fx;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL, 4);
}

static int setup_small(void **state)
{
    struct nf_http_limits limits = {.max_body = 1024, .max_headers = 4096, .timeout_s = 5};
    return setup_with(state, &limits, 4);
}

static int setup_one_conn(void **state)
{
    return setup_with(state, NULL, 1);
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    while (fx->nheld > 0)
        reply_held(fx, 200);
    if (fx->stream != NULL) {
        nf_http_stream_end(fx->stream);
        fx->stream = NULL;
    }
    nf_http_client_free(fx->cli);
    if (fx->srv != NULL)
        assert_int_equal(nf_http_inflight(fx->srv), 0);
    nf_http_server_free(fx->srv);
    /* Let libevent finish closing what the frees left behind. */
    event_base_loop(fx->base, EVLOOP_NONBLOCK);
    nf_metrics_free(fx->m);
    event_free(fx->tick);
    event_base_free(fx->base);
    free(fx);
    return 0;
}

/* Renders the registry; heap string. */
static char *render(struct fx *fx)
{
    size_t len = 0;
    char *txt = nf_metrics_render(fx->m, &len);
    assert_non_null(txt);
    return txt;
}

/* ---- tests: routing ----------------------------------------------------------------- */

static void test_route_params_decoded(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    const char *hdrs[] = {"X-Test", "yes", NULL};
    cJSON *body;

    call(fx, "GET", "/api/jobs/job%2F1%20x/events", hdrs, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "application/json");
    body = cJSON_Parse(r.body);
    assert_non_null(body);
    assert_string_equal(jstr(body, "route"), "/api/jobs/{job_id}/events");
    assert_string_equal(jstr(body, "path"), "/api/jobs/job%2F1%20x/events");
    assert_string_equal(jstr(body, "method"), "GET");
    assert_string_equal(jstr(body, "peer"), "127.0.0.1");
    assert_string_equal(jstr(body, "x_test"), "yes");
    assert_string_equal(jstr(cJSON_GetObjectItem(body, "params"), "job_id"), "job/1 x");
    assert_null(cJSON_GetObjectItem(body, "qs"));
    cJSON_Delete(body);
    result_clear(&r);
}

static void test_route_literal_beats_param(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    cJSON *body;

    call(fx, "GET", "/api/things/special", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_string_equal(r.ctype, "text/plain");

    call(fx, "GET", "/api/things/other", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "route"), "/api/things/{id}");
    assert_string_equal(jstr(cJSON_GetObjectItem(body, "params"), "id"), "other");
    cJSON_Delete(body);

    call(fx, "DELETE", "/api/things/x1", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    result_clear(&r);
}

static void test_not_found_vs_method_not_allowed(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    cJSON *err;

    call(fx, "GET", "/nope", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    err = parse_error(&r, "not_found");
    cJSON_Delete(err);

    /* a {param} never matches an empty segment */
    call(fx, "GET", "/api/jobs//events", NULL, NULL, &r);
    assert_int_equal(r.status, 404);

    call(fx, "POST", "/api/things/x", NULL, "{}", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, DELETE");
    err = parse_error(&r, "method_not_allowed");
    cJSON_Delete(err);

    call(fx, "PUT", "/healthz", NULL, "{}", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET");

    /* HEAD is not GET here, and its answer carries no body */
    call(fx, "HEAD", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_int_equal(r.len, 0);
    assert_int_equal(fx->handler_calls, 0);
    result_clear(&r);
}

static void test_trailing_slash(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    cJSON *body;

    call(fx, "GET", "/api/jobs/j1/events/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(cJSON_GetObjectItem(body, "params"), "job_id"), "j1");
    cJSON_Delete(body);

    /* registered with a trailing slash: both forms match, the label is the pattern */
    call(fx, "GET", "/api/list", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    call(fx, "GET", "/api/list/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "route"), "/api/list/");
    cJSON_Delete(body);

    /* "/" is itself; "//" is not "/" */
    call(fx, "GET", "/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    call(fx, "GET", "//", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    call(fx, "GET", "/api/list//", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    result_clear(&r);
}

static void test_query_decoding(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    cJSON *body, *q;

    call(fx, "GET", "/api/q?status=queued&name=a%20b+c&flag&empty=&x=1&x=2&=skip", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    body = cJSON_Parse(r.body);
    q = cJSON_GetObjectItem(body, "query");
    assert_string_equal(jstr(q, "status"), "queued");
    assert_string_equal(jstr(q, "name"), "a b c");
    assert_string_equal(jstr(q, "flag"), "");
    assert_string_equal(jstr(q, "empty"), "");
    assert_string_equal(jstr(q, "x"), "1");
    assert_null(jstr(q, "missing"));
    assert_string_equal(jstr(body, "qs"), "status=queued&name=a%20b+c&flag&empty=&x=1&x=2&=skip");
    assert_string_equal(jstr(body, "path"), "/api/q");
    cJSON_Delete(body);

    /* a NUL byte smuggled through percent-encoding is refused */
    call(fx, "GET", "/api/q?status=a%00b", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    cJSON_Delete(parse_error(&r, "bad_request"));
    call(fx, "GET", "/api/things/a%00b", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    result_clear(&r);
}

static void test_route_registration_errors(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(nf_http_route(fx->srv, "GET", "no-slash", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->srv, "GET", "/a/{}", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->srv, "GET", "/a/b{c}", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->srv, "GET", "/a//b", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->srv, "FETCH", "/a", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->srv, "GET", "/a", NULL, fx), -1);
    /* same shape, other parameter name: a conflict */
    assert_int_equal(nf_http_route(fx->srv, "GET", "/api/things/{other}", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->srv, "GET", "/healthz", h_echo, fx), -1);
    /* same path, another method: fine */
    assert_int_equal(nf_http_route(fx->srv, "PUT", "/api/things/{id}", h_echo, fx), 0);
}

/* ---- tests: bodies and limits ------------------------------------------------------- */

static void test_json_body(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    const char *bad[] = {"{bad", "[1,2]", "", "\"str\"", "{\"a\":1} trailing"};
    cJSON *body;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        call(fx, "POST", "/api/json", NULL, bad[i], &r);
        assert_int_equal(r.status, 400);
        cJSON_Delete(parse_error(&r, "invalid_json"));
    }
    /* no body at all */
    call(fx, "POST", "/api/json", NULL, NULL, &r);
    assert_int_equal(r.status, 400);

    call(fx, "POST", "/api/json", NULL, "{\"a\": [1, {\"b\": null}]}", &r);
    assert_int_equal(r.status, 201);
    body = cJSON_Parse(r.body);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(body, "got"), "a")),
                     2);
    cJSON_Delete(body);
    assert_int_equal(nf_http_inflight(fx->srv), 0);
    result_clear(&r);
}

static void test_body_and_patch(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    const char *hdrs[] = {"Content-Type", "text/plain", NULL};
    cJSON *body;

    call(fx, "PATCH", "/api/echo", hdrs, "patched", &r);
    assert_int_equal(r.status, 200);
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "body"), "patched");
    assert_int_equal(cJSON_GetObjectItem(body, "body_len")->valueint, 7);
    cJSON_Delete(body);

    call(fx, "POST", "/api/echo", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "body"), "");
    cJSON_Delete(body);
    result_clear(&r);
}

static void test_body_too_large(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    char *big = malloc(4001);
    cJSON *body;

    memset(big, 'a', 4000);
    big[4000] = '\0';
    call(fx, "POST", "/api/echo", NULL, big, &r);
    assert_int_equal(r.status, 413);
    cJSON_Delete(parse_error(&r, "request_too_large"));
    assert_int_equal(fx->handler_calls, 0);

    /* exactly max_body is fine, on a new connection */
    big[1024] = '\0';
    call(fx, "POST", "/api/echo", NULL, big, &r);
    assert_int_equal(r.status, 200);
    body = cJSON_Parse(r.body);
    assert_int_equal(cJSON_GetObjectItem(body, "body_len")->valueint, 1024);
    cJSON_Delete(body);
    free(big);
    result_clear(&r);
}

static void test_headers_too_large(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    char *big = malloc(20001);
    const char *hdrs[] = {"X-Big", big, NULL};

    /* over max_headers (4 KiB here): our 431 */
    memset(big, 'h', 6000);
    big[6000] = '\0';
    call(fx, "GET", "/api/things/x", hdrs, NULL, &r);
    assert_int_equal(r.status, 431);
    cJSON_Delete(parse_error(&r, "headers_too_large"));

    /* far over it: evhttp refuses while parsing; still our JSON shape */
    memset(big, 'h', 20000);
    big[20000] = '\0';
    call(fx, "GET", "/api/things/x", hdrs, NULL, &r);
    assert_int_equal(r.status, 400);
    cJSON_Delete(parse_error(&r, "bad_request"));
    assert_int_equal(fx->handler_calls, 0);
    free(big);
    result_clear(&r);
}

static void test_malformed_request_raw(void **state)
{
    struct fx *fx = *state;
    int fd = raw_connect(fx->port);
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n";
    char *resp;

    raw_send(fx, fd, req, strlen(req));
    resp = raw_read(fx, fd, "}}", WAIT_MS);
    assert_non_null(strstr(resp, "HTTP/1.1 400 "));
    assert_non_null(strstr(resp, "Content-Type: application/json"));
    assert_non_null(strstr(resp, "\"code\":\"bad_request\""));
    assert_null(strstr(resp, "<HTML>"));
    free(resp);
    close(fd);
}

static void test_body_too_large_raw_chunked(void **state)
{
    struct fx *fx = *state;
    int fd = raw_connect(fx->port);
    const char *head = "POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    char chunk[700];
    char *resp;

    raw_send(fx, fd, head, strlen(head));
    memset(chunk, 'z', sizeof(chunk));
    memcpy(chunk, "200\r\n", 5);
    for (int i = 0; i < 4; i++) /* 4 x 512 bytes > max_body 1024 */
        raw_send(fx, fd, chunk, 5 + 512);
    resp = raw_read(fx, fd, "}}", WAIT_MS);
    assert_non_null(strstr(resp, " 413 "));
    assert_non_null(strstr(resp, "\"code\":\"request_too_large\""));
    free(resp);
    close(fd);
}

/* ---- tests: request ids ------------------------------------------------------------- */

static void test_request_id(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    const char *good[] = {"X-Request-Id", "abc-123_x.Y", NULL};
    const char *bad[] = {"X-Request-Id", "has space", NULL};
    char long_id[80];
    const char *too_long[] = {"X-Request-Id", long_id, NULL};
    cJSON *err;

    call(fx, "GET", "/nope", good, NULL, &r);
    assert_string_equal(r.rid, "abc-123_x.Y");
    err = parse_error(&r, "not_found"); /* checks the body carries the same id */
    cJSON_Delete(err);

    call(fx, "GET", "/healthz", bad, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(nf_id_valid("req", r.rid));

    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    call(fx, "GET", "/healthz", too_long, NULL, &r);
    assert_true(nf_id_valid("req", r.rid));
    long_id[64] = '\0'; /* 64 is still fine */
    call(fx, "GET", "/healthz", too_long, NULL, &r);
    assert_string_equal(r.rid, long_id);

    call(fx, "GET", "/healthz", NULL, NULL, &r);
    assert_true(nf_id_valid("req", r.rid));
    result_clear(&r);
}

static void test_error_param(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    cJSON *root, *err;

    call(fx, "GET", "/api/err", NULL, NULL, &r);
    assert_int_equal(r.status, 422);
    root = parse_error(&r, "invalid_params");
    err = cJSON_GetObjectItem(root, "error");
    assert_string_equal(jstr(err, "param"), "num_samples");
    assert_string_equal(jstr(err, "message"), "num_samples must be 1..1000000");
    cJSON_Delete(root);

    /* param is omitted when NULL */
    call(fx, "GET", "/nope", NULL, NULL, &r);
    root = parse_error(&r, "not_found");
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "error"), "param"));
    cJSON_Delete(root);
    result_clear(&r);
}

/* ---- tests: async, client gone, shutdown -------------------------------------------- */

static void test_async_reply(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    long long t0 = now_ms();

    assert_int_equal(
        nf_http_client_request(fx->cli, "GET", "/api/delayed", NULL, NULL, 0, 0, on_result, &r), 0);
    run_for(fx, 20);
    assert_int_equal(fx->nheld, 1);
    assert_int_equal(nf_http_inflight(fx->srv), 1);
    assert_false(r.done);
    assert_true(run_until(fx, &r.done, WAIT_MS));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"late\":true}");
    assert_true(now_ms() - t0 >= 45);
    assert_int_equal(nf_http_inflight(fx->srv), 0);
    result_clear(&r);
}

static void test_client_gone_before_reply(void **state)
{
    struct fx *fx = *state;
    const char *req = "GET /api/hold?x=1 HTTP/1.1\r\nHost: x\r\nX-Test: kept\r\n\r\n";
    int fd = raw_connect(fx->port);
    bool held = false;

    raw_send(fx, fd, req, strlen(req));
    for (long long end = now_ms() + WAIT_MS; fx->nheld == 0 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    held = fx->nheld == 1;
    assert_true(held);
    close(fd);
    run_for(fx, 50);
    /* the request stays usable until the reply, which is dropped */
    assert_string_equal(nf_http_req_query(fx->held[0], "x"), "1");
    assert_string_equal(nf_http_req_header(fx->held[0], "X-Test"), "kept");
    assert_int_equal(nf_http_inflight(fx->srv), 1);
    reply_held(fx, 200);
    run_for(fx, 50);
    assert_int_equal(nf_http_inflight(fx->srv), 0);

    /* the server still works afterwards */
    {
        struct result r = {0};
        call(fx, "GET", "/healthz", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        result_clear(&r);
    }
}

static void test_server_free_answers_503(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    struct nf_http_req *req;
    const char *hdrs[] = {"X-Test", "still-here", NULL};

    assert_int_equal(nf_http_client_request(fx->cli, "POST", "/api/hold", hdrs, "{\"k\":1}", 7, 0,
                                            on_result, &r),
                     0);
    for (long long end = now_ms() + WAIT_MS; fx->nheld == 0 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_int_equal(fx->nheld, 1);
    req = fx->held[0];

    nf_http_server_free(fx->srv);
    fx->srv = NULL;
    assert_true(run_until(fx, &r.done, WAIT_MS));
    assert_int_equal(r.status, 503);
    cJSON_Delete(parse_error(&r, "unavailable"));

    /* the handler still owns req: accessors work, the reply is a no-op that frees it */
    assert_string_equal(nf_http_req_header(req, "X-Test"), "still-here");
    assert_string_equal(nf_http_req_body(req, NULL), "{\"k\":1}");
    assert_string_equal(nf_http_req_route(req), "/api/hold");
    reply_held(fx, 200);
    result_clear(&r);
}

static void test_stop_closes_listener(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    cJSON *body;

    call(fx, "GET", "/healthz", NULL, NULL, &r); /* opens a keep-alive connection */
    assert_int_equal(r.status, 200);
    nf_http_server_stop(fx->srv);
    call(fx, "GET", "/readyz", NULL, NULL, &r); /* same connection, now closed after */
    assert_int_equal(r.status, 503);
    assert_string_equal(r.conn, "close");
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "status"), "unready");
    cJSON_Delete(body);
    call(fx, "GET", "/healthz", NULL, NULL, &r); /* nobody listens any more */
    assert_int_equal(r.status, 0);
    result_clear(&r);
}

/* ---- tests: built-in routes --------------------------------------------------------- */

static void test_health_ready_metrics(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    cJSON *body;
    char *txt;

    call(fx, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");

    fx->ready = false;
    call(fx, "GET", "/readyz", NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "status"), "unready");
    assert_string_equal(jstr(cJSON_GetObjectItem(body, "checks"), "redis"), "down");
    cJSON_Delete(body);

    fx->ready = true;
    call(fx, "GET", "/readyz/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "status"), "ready");
    assert_string_equal(jstr(cJSON_GetObjectItem(body, "checks"), "redis"), "ok");
    cJSON_Delete(body);

    call(fx, "GET", "/nope", NULL, NULL, &r);
    call(fx, "GET", "/api/things/a", NULL, NULL, &r);
    call(fx, "GET", "/api/things/b", NULL, NULL, &r);

    call(fx, "GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.ctype, "text/plain"));
    assert_non_null(strstr(r.body, "nf_http_requests_total{route=\"/healthz\",method=\"GET\","
                                   "status=\"200\"} 1\n"));
    assert_non_null(strstr(r.body, "nf_http_requests_total{route=\"/readyz\",method=\"GET\","
                                   "status=\"503\"} 1\n"));
    assert_non_null(strstr(r.body, "nf_http_requests_total{route=\"unmatched\",method=\"GET\","
                                   "status=\"404\"} 1\n"));
    assert_non_null(strstr(r.body, "nf_http_requests_total{route=\"/api/things/{id}\","
                                   "method=\"GET\",status=\"200\"} 2\n"));
    assert_non_null(
        strstr(r.body, "nf_http_request_duration_seconds_count{route=\"/api/things/{id}\"} 2\n"));
    assert_non_null(
        strstr(r.body, "nf_http_request_duration_seconds_count{route=\"unmatched\"} 1\n"));
    /* the raw path never becomes a label */
    assert_null(strstr(r.body, "/api/things/a"));

    /* and the /metrics request itself is counted once answered */
    txt = render(fx);
    assert_non_null(strstr(txt, "route=\"/metrics\",method=\"GET\",status=\"200\"} 1\n"));
    free(txt);
    result_clear(&r);
}

static void test_metrics_absent(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_http_server *srv = NULL;
    struct fx fx = {.base = base};
    struct timeval tv = {0, 5000};
    struct result r = {0};

    fx.tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    event_add(fx.tick, &tv);
    assert_int_equal(nf_http_server_new(&srv, base, "127.0.0.1", 0, NULL, false, NULL), 0);
    assert_int_equal(
        nf_http_client_new(&fx.cli, base, "127.0.0.1", nf_http_server_port(srv), 1000, 1), 0);
    call(&fx, "GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    call(&fx, "GET", "/readyz", NULL, NULL, &r); /* no ready callback: ready */
    assert_int_equal(r.status, 200);
    nf_http_client_free(fx.cli);
    nf_http_server_free(srv);
    event_free(fx.tick);
    event_base_free(base);
    result_clear(&r);
}

static void test_bind_errors_and_reuseport(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_http_server *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    int port;

    assert_int_equal(nf_http_server_new(&a, base, "127.0.0.1", 0, NULL, true, NULL), 0);
    port = nf_http_server_port(a);
    /* a second process-like server on the same port with SO_REUSEPORT */
    assert_int_equal(nf_http_server_new(&b, base, "127.0.0.1", port, NULL, true, NULL), 0);
    /* without it the port is taken; *out untouched */
    assert_int_equal(nf_http_server_new(&c, base, "127.0.0.1", port, NULL, false, NULL), -1);
    assert_null(c);
    assert_int_equal(nf_http_server_new(&d, base, "256.1.1.1", 0, NULL, false, NULL), -1);
    assert_int_equal(nf_http_server_new(&d, base, "127.0.0.1", 70000, NULL, false, NULL), -1);
    assert_null(d);
    assert_int_equal(nf_http_server_port(NULL), -1);
    nf_http_server_free(a);
    nf_http_server_free(b);
    nf_http_server_free(NULL);
    event_base_free(base);
}

/* ---- tests: streaming --------------------------------------------------------------- */

static void test_streaming(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};

    call(fx, "GET", "/api/stream", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/event-stream");
    assert_string_equal(r.body, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
    assert_int_equal(fx->stream_send_rc, 0);
    assert_int_equal(fx->stream_closed, 0);
    assert_null(fx->stream);
    assert_int_equal(nf_http_inflight(fx->srv), 0);

    /* the connection is reusable after a chunked answer */
    call(fx, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    result_clear(&r);
}

static void test_stream_client_gone(void **state)
{
    struct fx *fx = *state;
    const char *req = "GET /api/stream-hold HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = raw_connect(fx->port);
    char *resp;

    raw_send(fx, fd, req, strlen(req));
    resp = raw_read(fx, fd, "data: first", WAIT_MS);
    assert_non_null(strstr(resp, "HTTP/1.1 200 "));
    assert_non_null(strstr(resp, "Transfer-Encoding: chunked"));
    assert_non_null(strstr(resp, "Content-Type: text/event-stream"));
    free(resp);
    assert_non_null(fx->stream);
    assert_int_equal(fx->stream_send_rc, 0);

    close(fd);
    for (long long end = now_ms() + WAIT_MS; fx->stream_closed == 0 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_int_equal(fx->stream_closed, 1);
    assert_int_equal(nf_http_stream_send(fx->stream, "data: x\n\n", 9), -1);
    assert_int_equal(nf_http_inflight(fx->srv), 1);
    nf_http_stream_end(fx->stream);
    fx->stream = NULL;
    assert_int_equal(nf_http_inflight(fx->srv), 0);
    assert_int_equal(fx->stream_closed, 1);
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

static void test_stream_end_inside_on_close(void **state)
{
    struct fx *fx = *state;
    const char *req = "GET /api/stream-eoc HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd;
    char *resp;

    assert_int_equal(nf_http_route(fx->srv, "GET", "/api/stream-eoc", h_stream_end_on_close, fx),
                     0);
    fd = raw_connect(fx->port);
    raw_send(fx, fd, req, strlen(req));
    resp = raw_read(fx, fd, "data: first", WAIT_MS);
    assert_non_null(strstr(resp, "data: first"));
    free(resp);
    close(fd);
    for (long long end = now_ms() + WAIT_MS; fx->stream_closed == 0 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_int_equal(fx->stream_closed, 1);
    assert_null(fx->stream);
    assert_int_equal(nf_http_inflight(fx->srv), 0);
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

static void test_long_poll_client_gone(void **state)
{
    struct fx *fx = *state;
    const char *req = "POST /api/poll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    int fd;

    assert_int_equal(nf_http_route(fx->srv, "POST", "/api/poll", h_poll, fx), 0);
    fd = raw_connect(fx->port);
    raw_send(fx, fd, req, strlen(req));
    for (long long end = now_ms() + WAIT_MS; fx->nheld == 0 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_int_equal(fx->nheld, 1);
    run_for(fx, 30);
    assert_int_equal(fx->stream_closed, 0); /* a silent client is not a gone client */
    close(fd);
    for (long long end = now_ms() + WAIT_MS; fx->stream_closed == 0 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_int_equal(fx->stream_closed, 1);
    /* the reply is still owed; it is dropped and frees req */
    assert_string_equal(nf_http_req_body(fx->held[0], NULL), "{}");
    reply_held(fx, 200);
    assert_int_equal(nf_http_inflight(fx->srv), 0);
    run_for(fx, 20);
    assert_int_equal(fx->stream_closed, 1);
}

static int setup_short_timeout(void **state)
{
    struct nf_http_limits limits = {.timeout_s = 1};
    return setup_with(state, &limits, 1);
}

static void test_long_poll_outlives_idle_timeout(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    char *txt;

    assert_int_equal(nf_http_route(fx->srv, "POST", "/api/poll", h_poll, fx), 0);
    assert_int_equal(
        nf_http_client_request(fx->cli, "POST", "/api/poll", NULL, "{}", 2, 3000, on_result, &r),
        0);
    run_for(fx, 1600); /* longer than timeout_s */
    assert_int_equal(fx->nheld, 1);
    assert_false(r.done);
    assert_int_equal(fx->stream_closed, 0);
    reply_held(fx, 200);
    assert_true(run_until(fx, &r.done, WAIT_MS));
    assert_int_equal(r.status, 200);
    /* the same connection serves the next requests normally, large bodies too */
    call(fx, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    {
        char *big = malloc(200001);
        memset(big, 'b', 200000);
        big[200000] = '\0';
        call(fx, "POST", "/api/echo", NULL, big, &r);
        assert_int_equal(r.status, 200);
        free(big);
    }
    txt = render(fx);
    assert_non_null(strstr(txt, "\nnf_http_connections_total 1\n"));
    free(txt);
    /* while an idle keep-alive connection is still closed after timeout_s */
    run_for(fx, 1600);
    call(fx, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    txt = render(fx);
    assert_non_null(strstr(txt, "\nnf_http_connections_total 2\n"));
    free(txt);
    result_clear(&r);
}

static void test_long_poll_pipelined(void **state)
{
    struct fx *fx = *state;
    const char *reqs = "POST /api/poll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                       "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
    char *big = malloc(100000);
    char *resp;
    int fd;

    /* a second request, larger than what is read while watching, queued behind the poll */
    memset(big, 'q', 100000);
    assert_int_equal(nf_http_route(fx->srv, "POST", "/api/poll", h_poll, fx), 0);
    fd = raw_connect(fx->port);
    raw_send(fx, fd, reqs, strlen(reqs));
    for (long long end = now_ms() + WAIT_MS; fx->nheld == 0 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_int_equal(fx->nheld, 1);
    raw_send(fx, fd, big, 100000);
    run_for(fx, 50);
    assert_int_equal(fx->stream_closed, 0);
    assert_int_equal(fx->handler_calls, 1);
    reply_held(fx, 200);
    resp = raw_read(fx, fd, "\"body_len\":100000}", WAIT_MS);
    assert_non_null(strstr(resp, "{\"late\":true}"));
    assert_non_null(strstr(resp, "\"body_len\":100000}")); /* the second, answered after */
    free(resp);
    free(big);
    close(fd);
}

/* ---- tests: client ------------------------------------------------------------------ */

static void test_client_timeout(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    long long t0 = now_ms();

    assert_int_equal(
        nf_http_client_request(fx->cli, "GET", "/api/hold", NULL, NULL, 0, 150, on_result, &r), 0);
    assert_true(run_until(fx, &r.done, WAIT_MS));
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.error, "timeout"));
    assert_false(r.had_headers);
    assert_true(now_ms() - t0 >= 140);
    assert_true(now_ms() - t0 < 1500);
    run_for(fx, 100);
    assert_int_equal(r.calls, 1); /* exactly once */
    assert_int_equal(fx->nheld, 1);
    reply_held(fx, 200); /* nobody listens any more */
    run_for(fx, 20);

    /* the pool recovers: the next request gets a fresh connection */
    {
        struct result r2 = {0};
        call(fx, "GET", "/healthz", NULL, NULL, &r2);
        assert_int_equal(r2.status, 200);
        result_clear(&r2);
    }
    result_clear(&r);
}

static void test_client_connection_refused(void **state)
{
    struct event_base *base = event_base_new();
    struct fx fx = {.base = base};
    struct timeval tv = {0, 5000};
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    struct result r = {0};
    int fd, port;

    /* a port nobody listens on: bind one, note it, close it */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    port = ntohs(sa.sin_port);
    close(fd);

    fx.tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    event_add(fx.tick, &tv);
    assert_int_equal(nf_http_client_new(&fx.cli, base, "127.0.0.1", port, 2000, 2), 0);
    call(&fx, "POST", "/x", NULL, "{}", &r);
    assert_int_equal(r.status, 0);
    assert_true(r.error[0] != '\0');
    assert_false(r.had_headers);
    run_for(&fx, 50);
    assert_int_equal(r.calls, 1);
    /* again, on the same pooled connection object */
    call(&fx, "GET", "/x", NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    nf_http_client_free(fx.cli);
    event_free(fx.tick);
    event_base_free(base);
    result_clear(&r);
}

static void test_client_keepalive_reuse(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    char *txt;

    for (int i = 0; i < 5; i++) {
        call(fx, "GET", "/healthz", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
    }
    txt = render(fx);
    assert_non_null(strstr(txt, "\nnf_http_connections_total 1\n"));
    free(txt);
    result_clear(&r);
}

static void test_client_pool_limit(void **state)
{
    struct fx *fx = *state;
    struct result r[4];
    char *txt;

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 4; i++)
        assert_int_equal(
            nf_http_client_request(fx->cli, "GET", "/api/hold", NULL, NULL, 0, 0, on_result, &r[i]),
            0);
    run_for(fx, 100);
    assert_int_equal(fx->nheld, 1); /* one connection: the others wait */
    reply_held(fx, 200);
    assert_true(run_until(fx, &r[0].done, WAIT_MS));
    run_for(fx, 50);
    assert_int_equal(fx->nheld, 1);
    assert_false(r[1].done);
    for (long long end = now_ms() + WAIT_MS; (fx->nheld > 0 || !r[3].done) && now_ms() < end;) {
        if (fx->nheld > 0)
            reply_held(fx, 200);
        event_base_loop(fx->base, EVLOOP_ONCE);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 200);
        result_clear(&r[i]);
    }
    txt = render(fx);
    assert_non_null(strstr(txt, "\nnf_http_connections_total 1\n"));
    free(txt);
}

static void test_client_parallel(void **state)
{
    struct fx *fx = *state;
    struct result r[4];

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 4; i++)
        assert_int_equal(
            nf_http_client_request(fx->cli, "GET", "/api/hold", NULL, NULL, 0, 0, on_result, &r[i]),
            0);
    for (long long end = now_ms() + WAIT_MS; fx->nheld < 4 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_int_equal(fx->nheld, 4); /* four pooled connections, all busy at once */
    while (fx->nheld > 0)
        reply_held(fx, 200);
    for (int i = 0; i < 4; i++) {
        assert_true(run_until(fx, &r[i].done, WAIT_MS));
        assert_int_equal(r[i].status, 200);
        result_clear(&r[i]);
    }
}

static void test_client_free_with_pending(void **state)
{
    struct fx *fx = *state;
    struct result r[3];

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            nf_http_client_request(fx->cli, "GET", "/api/hold", NULL, NULL, 0, 0, on_result, &r[i]),
            0);
    for (long long end = now_ms() + WAIT_MS; fx->nheld < 1 && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_int_equal(fx->nheld, 1); /* one in flight, two queued */
    nf_http_client_free(fx->cli);
    fx->cli = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_string_equal(r[i].error, "client closed");
        result_clear(&r[i]);
    }
    run_for(fx, 50);
}

/* Frees the client from inside its own callback. */
static void on_result_free_client(const struct nf_http_resp *resp, void *arg)
{
    struct fx *fx = arg;
    struct result dummy = {0};

    fx->handler_calls += 100;
    /* a new request from the callback is fine, and the free answers it */
    assert_int_equal(
        nf_http_client_request(fx->cli, "GET", "/healthz", NULL, NULL, 0, 0, on_result, &dummy), 0);
    nf_http_client_free(fx->cli);
    fx->cli = NULL;
    assert_int_equal(dummy.calls, 1); /* the queued one got its "client closed" */
    assert_int_equal(dummy.status, 0);
    result_clear(&dummy);
}

static void test_client_free_from_callback(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(nf_http_client_request(fx->cli, "GET", "/healthz", NULL, NULL, 0, 0,
                                            on_result_free_client, fx),
                     0);
    for (long long end = now_ms() + WAIT_MS; fx->cli != NULL && now_ms() < end;)
        event_base_loop(fx->base, EVLOOP_ONCE);
    assert_null(fx->cli);
    assert_int_equal(fx->handler_calls, 100);
    run_for(fx, 50);
}

static void test_client_rejects_bad_requests(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    const char *crlf[] = {"X-A", "v\r\nInjected: 1", NULL};
    const char *odd[] = {"X-A", NULL};
    const char *space[] = {"Bad Name", "v", NULL};

    assert_int_equal(nf_http_client_request(fx->cli, "FETCH", "/", NULL, NULL, 0, 0, on_result, &r),
                     -1);
    assert_int_equal(nf_http_client_request(fx->cli, "GET", "x", NULL, NULL, 0, 0, on_result, &r),
                     -1);
    assert_int_equal(
        nf_http_client_request(fx->cli, "GET", "/a b", NULL, NULL, 0, 0, on_result, &r), -1);
    assert_int_equal(nf_http_client_request(fx->cli, "GET", "/", crlf, NULL, 0, 0, on_result, &r),
                     -1);
    assert_int_equal(nf_http_client_request(fx->cli, "GET", "/", odd, NULL, 0, 0, on_result, &r),
                     -1);
    assert_int_equal(nf_http_client_request(fx->cli, "GET", "/", space, NULL, 0, 0, on_result, &r),
                     -1);
    assert_int_equal(nf_http_client_request(fx->cli, "GET", "/", NULL, NULL, 0, 0, NULL, &r), -1);
    assert_int_equal(nf_http_client_request(NULL, "GET", "/", NULL, NULL, 0, 0, on_result, &r), -1);
    run_for(fx, 20);
    assert_int_equal(r.calls, 0);
    assert_int_equal(nf_http_client_new(&fx->cli, fx->base, "", 1, 0, 1), -1);
    assert_int_equal(nf_http_client_new(&fx->cli, fx->base, "127.0.0.1", 0, 0, 1), -1);
    assert_null(nf_http_resp_header(NULL, "X"));
}

static void test_client_headers_and_host(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    const char *hdrs[] = {"X-Test", "v1", "X-Request-Id", "trace.42", NULL};
    cJSON *body;

    call(fx, "POST", "/api/echo", hdrs, "{\"a\":1}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.rid, "trace.42");
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "x_test"), "v1");
    assert_string_equal(jstr(body, "body"), "{\"a\":1}");
    assert_string_equal(jstr(body, "id"), "trace.42");
    cJSON_Delete(body);
    result_clear(&r);
}

/* Checks the Host and default Content-Type the client sends, from the server side. */
static void h_headers(struct nf_http_req *req, void *arg)
{
    char want[64];
    int *port = arg;
    cJSON *body = cJSON_CreateObject();

    snprintf(want, sizeof(want), "127.0.0.1:%d", *port);
    cJSON_AddBoolToObject(body, "host_ok", strcmp(nf_http_req_header(req, "Host"), want) == 0);
    cJSON_AddStringToObject(body, "ctype", nf_http_req_header(req, "Content-Type"));
    nf_http_reply_json(req, 200, body);
}

static void test_client_default_headers(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    const char *plain[] = {"content-type", "text/plain", NULL};
    cJSON *body;

    assert_int_equal(nf_http_route(fx->srv, "POST", "/api/headers", h_headers, &fx->port), 0);
    call(fx, "POST", "/api/headers", NULL, "{}", &r);
    body = cJSON_Parse(r.body);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(body, "host_ok")));
    assert_string_equal(jstr(body, "ctype"), "application/json");
    cJSON_Delete(body);
    call(fx, "POST", "/api/headers", plain, "x", &r);
    body = cJSON_Parse(r.body);
    assert_string_equal(jstr(body, "ctype"), "text/plain");
    cJSON_Delete(body);
    result_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_route_params_decoded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_literal_beats_param, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_vs_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailing_slash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_decoding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_registration_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_and_patch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_large, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_headers_too_large, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_request_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_large_raw_chunked, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_request_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_param, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_gone_before_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_free_answers_503, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_closes_listener, setup_one_conn, teardown),
        cmocka_unit_test_setup_teardown(test_health_ready_metrics, setup, teardown),
        cmocka_unit_test(test_metrics_absent),
        cmocka_unit_test(test_bind_errors_and_reuseport),
        cmocka_unit_test_setup_teardown(test_streaming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_client_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_end_inside_on_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_poll_client_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_poll_outlives_idle_timeout, setup_short_timeout,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_long_poll_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_timeout, setup, teardown),
        cmocka_unit_test(test_client_connection_refused),
        cmocka_unit_test_setup_teardown(test_client_keepalive_reuse, setup_one_conn, teardown),
        cmocka_unit_test_setup_teardown(test_client_pool_limit, setup_one_conn, teardown),
        cmocka_unit_test_setup_teardown(test_client_parallel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_free_with_pending, setup_one_conn, teardown),
        cmocka_unit_test_setup_teardown(test_client_free_from_callback, setup_one_conn, teardown),
        cmocka_unit_test_setup_teardown(test_client_rejects_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_headers_and_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_default_headers, setup, teardown),
    };

    FILE *devnull = fopen("/dev/null", "w");
    int rc;

    /* The failure paths log errors on purpose; keep the test output readable. */
    nf_log_init("test", NF_LOG_ERROR);
    nf_log_set_output(devnull);
    if (nf_crypto_init() != 0)
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    nf_log_set_output(NULL);
    if (devnull != NULL)
        fclose(devnull);
    return rc;
}
