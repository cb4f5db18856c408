/*
 * Unit tests for the nf_http server: routing, request targets, bodies and size limits,
 * request ids, the built-in routes and binding. A real evhttp server on an ephemeral
 * loopback port, called through the nf_http client, and raw sockets where a client must
 * misbehave. Replies, streaming and shutdown: test_nf_http_reply.c; the client:
 * test_nf_http_client.c.
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

#include "nf_crypto.h"
#include "nf_http.h"
#include "nf_id.h"
#include "nf_metrics.h"
#include "nf_test.h"
#include "nf_test_http.h"

struct fx {
    struct nf_test_http h;
    bool ready;        /* what the readyz callback says */
    int handler_calls; /* of the echo handler */
};

/*
 * Sends the n bytes of req on a fresh connection, as a misbehaving client would, and
 * reads the answer until it contains `until`, the server closes, or the wait ends. Heap
 * string.
 */
static char *raw_exchange(struct fx *fx, const char *req, size_t n, const char *until)
{
    int fd = nf_test_http_raw_request(&fx->h, "");
    char *resp;

    nf_test_http_raw_send(&fx->h, fd, req, n);
    resp = nf_test_http_raw_read(&fx->h, fd, until);
    close(fd);
    return resp;
}

/* ---- handlers and fixture ----------------------------------------------------------- */

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

static void h_raw(struct nf_http_req *req, void *arg)
{
    nf_http_reply_raw(req, 200, "text/plain", "hello", 5);
}

static bool ready_cb(cJSON *checks, void *arg)
{
    struct fx *fx = arg;
    cJSON_AddStringToObject(checks, "redis", fx->ready ? "ok" : "down");
    return fx->ready;
}

/* A loop, a server on a free port (metrics when with_metrics) and a client of it. */
static struct fx *fx_new(const struct nf_http_limits *limits, bool with_metrics)
{
    struct fx *fx = calloc(1, sizeof(*fx));

    nf_test_http_open(&fx->h, limits, with_metrics, 4);
    return fx;
}

static void fx_free(struct fx *fx)
{
    nf_test_http_close(&fx->h);
    free(fx);
}

static int setup_with(void **state, const struct nf_http_limits *limits)
{
    struct fx *fx = fx_new(limits, true);
    const struct nf_test_http_route routes[] = {
        {"GET", "/api/jobs/{job_id}/events", h_echo},
        {"GET", "/api/things/{id}", h_echo},
        {"GET", "/api/things/special", h_raw},
        {"DELETE", "/api/things/{id}", h_echo},
        {"GET", "/api/list/", h_echo},
        {"GET", "/", h_echo},
        {"GET", "/api/q", h_echo},
        {"POST", "/api/echo", h_echo},
        {"PATCH", "/api/echo", h_echo},
        {"POST", "/api/json", h_json},
    };

    fx->ready = true;
    nf_http_set_ready(fx->h.srv, ready_cb, fx);
    nf_test_http_routes(&fx->h, routes, sizeof(routes) / sizeof(routes[0]), fx);
    *state = fx;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL);
}

static int setup_small(void **state)
{
    struct nf_http_limits limits = {.max_body = 1024, .max_headers = 4096, .timeout_s = 5};
    return setup_with(state, &limits);
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

/* ---- tests: routing ----------------------------------------------------------------- */

static void test_route_params_decoded(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    const char *hdrs[] = {"X-Test", "yes", NULL};

    nf_test_http_call(&fx->h, "GET", "/api/jobs/job%2F1%20x/events", hdrs, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "application/json");
    assert_non_null(r.json);
    assert_string_equal(nf_test_jstr(r.json, "route"), "/api/jobs/{job_id}/events");
    assert_string_equal(nf_test_jstr(r.json, "path"), "/api/jobs/job%2F1%20x/events");
    assert_string_equal(nf_test_jstr(r.json, "method"), "GET");
    assert_string_equal(nf_test_jstr(r.json, "peer"), "127.0.0.1");
    assert_string_equal(nf_test_jstr(r.json, "x_test"), "yes");
    assert_string_equal(nf_test_jstr(cJSON_GetObjectItem(r.json, "params"), "job_id"), "job/1 x");
    assert_null(cJSON_GetObjectItem(r.json, "qs"));
    nf_test_http_result_clear(&r);
}

static void test_route_literal_beats_param(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};

    nf_test_http_call(&fx->h, "GET", "/api/things/special", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_string_equal(r.ctype, "text/plain");

    nf_test_http_call(&fx->h, "GET", "/api/things/other", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(nf_test_jstr(r.json, "route"), "/api/things/{id}");
    assert_string_equal(nf_test_jstr(cJSON_GetObjectItem(r.json, "params"), "id"), "other");

    nf_test_http_call(&fx->h, "DELETE", "/api/things/x1", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    nf_test_http_result_clear(&r);
}

static void test_not_found_vs_method_not_allowed(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};

    nf_test_http_call(&fx->h, "GET", "/nope", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    nf_test_http_error(&r, "not_found");

    /* a {param} never matches an empty segment */
    nf_test_http_call(&fx->h, "GET", "/api/jobs//events", NULL, NULL, &r);
    assert_int_equal(r.status, 404);

    nf_test_http_call(&fx->h, "POST", "/api/things/x", NULL, "{}", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, DELETE");
    nf_test_http_error(&r, "method_not_allowed");

    nf_test_http_call(&fx->h, "PUT", "/healthz", NULL, "{}", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET");

    /* HEAD is not GET here, and its answer carries no body */
    nf_test_http_call(&fx->h, "HEAD", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_int_equal(r.len, 0);
    assert_int_equal(fx->handler_calls, 0);
    nf_test_http_result_clear(&r);
}

static void test_trailing_slash(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};

    nf_test_http_call(&fx->h, "GET", "/api/jobs/j1/events/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(nf_test_jstr(cJSON_GetObjectItem(r.json, "params"), "job_id"), "j1");

    /* registered with a trailing slash: both forms match, the label is the pattern */
    nf_test_http_call(&fx->h, "GET", "/api/list", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    nf_test_http_call(&fx->h, "GET", "/api/list/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(nf_test_jstr(r.json, "route"), "/api/list/");

    /* "/" is itself; "//" is not "/" */
    nf_test_http_call(&fx->h, "GET", "/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    nf_test_http_call(&fx->h, "GET", "//", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    nf_test_http_call(&fx->h, "GET", "/api/list//", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    nf_test_http_result_clear(&r);
}

static void test_query_decoding(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    cJSON *q;

    nf_test_http_call(&fx->h, "GET", "/api/q?status=queued&name=a%20b+c&flag&empty=&x=1&x=2&=skip",
                      NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    q = cJSON_GetObjectItem(r.json, "query");
    assert_string_equal(nf_test_jstr(q, "status"), "queued");
    assert_string_equal(nf_test_jstr(q, "name"), "a b c");
    assert_string_equal(nf_test_jstr(q, "flag"), "");
    assert_string_equal(nf_test_jstr(q, "empty"), "");
    assert_string_equal(nf_test_jstr(q, "x"), "1");
    assert_null(nf_test_jstr(q, "missing"));
    assert_string_equal(nf_test_jstr(r.json, "qs"),
                        "status=queued&name=a%20b+c&flag&empty=&x=1&x=2&=skip");
    assert_string_equal(nf_test_jstr(r.json, "path"), "/api/q");

    /* a NUL byte smuggled through percent-encoding is refused */
    nf_test_http_call(&fx->h, "GET", "/api/q?status=a%00b", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    nf_test_http_error(&r, "bad_request");
    nf_test_http_call(&fx->h, "GET", "/api/things/a%00b", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    nf_test_http_result_clear(&r);
}

static void test_route_registration_errors(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(nf_http_route(fx->h.srv, "GET", "no-slash", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->h.srv, "GET", "/a/{}", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->h.srv, "GET", "/a/b{c}", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->h.srv, "GET", "/a//b", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->h.srv, "FETCH", "/a", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->h.srv, "GET", "/a", NULL, fx), -1);
    /* same shape, other parameter name: a conflict */
    assert_int_equal(nf_http_route(fx->h.srv, "GET", "/api/things/{other}", h_echo, fx), -1);
    assert_int_equal(nf_http_route(fx->h.srv, "GET", "/healthz", h_echo, fx), -1);
    /* same path, another method: fine */
    assert_int_equal(nf_http_route(fx->h.srv, "PUT", "/api/things/{id}", h_echo, fx), 0);
}

/* ---- tests: bodies and limits ------------------------------------------------------- */

static void test_json_body(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    const char *bad[] = {"{bad", "[1,2]", "", "\"str\"", "{\"a\":1} trailing"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        nf_test_http_call(&fx->h, "POST", "/api/json", NULL, bad[i], &r);
        assert_int_equal(r.status, 400);
        nf_test_http_error(&r, "invalid_json");
    }
    /* no body at all */
    nf_test_http_call(&fx->h, "POST", "/api/json", NULL, NULL, &r);
    assert_int_equal(r.status, 400);

    nf_test_http_call(&fx->h, "POST", "/api/json", NULL, "{\"a\": [1, {\"b\": null}]}", &r);
    assert_int_equal(r.status, 201);
    assert_int_equal(
        cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(r.json, "got"), "a")), 2);
    assert_int_equal(nf_http_inflight(fx->h.srv), 0);
    nf_test_http_result_clear(&r);
}

static void test_body_and_patch(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    const char *hdrs[] = {"Content-Type", "text/plain", NULL};

    nf_test_http_call(&fx->h, "PATCH", "/api/echo", hdrs, "patched", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(nf_test_jstr(r.json, "body"), "patched");
    assert_int_equal(cJSON_GetObjectItem(r.json, "body_len")->valueint, 7);

    nf_test_http_call(&fx->h, "POST", "/api/echo", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(nf_test_jstr(r.json, "body"), "");
    nf_test_http_result_clear(&r);
}

static void test_body_too_large(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    char *big = malloc(4001);

    memset(big, 'a', 4000);
    big[4000] = '\0';
    nf_test_http_call(&fx->h, "POST", "/api/echo", NULL, big, &r);
    assert_int_equal(r.status, 413);
    nf_test_http_error(&r, "request_too_large");
    assert_int_equal(fx->handler_calls, 0);

    /* exactly max_body is fine, on a new connection */
    big[1024] = '\0';
    nf_test_http_call(&fx->h, "POST", "/api/echo", NULL, big, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetObjectItem(r.json, "body_len")->valueint, 1024);
    free(big);
    nf_test_http_result_clear(&r);
}

static void test_headers_too_large(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    char *big = malloc(20001);
    const char *hdrs[] = {"X-Big", big, NULL};

    /* over max_headers (4 KiB here): our 431 */
    memset(big, 'h', 6000);
    big[6000] = '\0';
    nf_test_http_call(&fx->h, "GET", "/api/things/x", hdrs, NULL, &r);
    assert_int_equal(r.status, 431);
    nf_test_http_error(&r, "headers_too_large");

    /* far over it: evhttp refuses while parsing; still our JSON shape */
    memset(big, 'h', 20000);
    big[20000] = '\0';
    nf_test_http_call(&fx->h, "GET", "/api/things/x", hdrs, NULL, &r);
    assert_int_equal(r.status, 400);
    nf_test_http_error(&r, "bad_request");
    assert_int_equal(fx->handler_calls, 0);
    free(big);
    nf_test_http_result_clear(&r);
}

static void test_malformed_request_raw(void **state)
{
    struct fx *fx = *state;
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n";
    char *resp = raw_exchange(fx, req, strlen(req), "}}");

    assert_non_null(strstr(resp, "HTTP/1.1 400 "));
    assert_non_null(strstr(resp, "Content-Type: application/json"));
    assert_non_null(strstr(resp, "\"code\":\"bad_request\""));
    assert_null(strstr(resp, "<HTML>"));
    free(resp);
}

/*
 * Every method the route table can name reaches the router: one the path does not take is
 * a JSON 405 with Allow (TRACE, CONNECT, OPTIONS, PATCH), an unknown path stays 404. Only a
 * method HTTP does not define at all is 501 (RFC 9110 §15.6.2), still as JSON.
 */
static void test_undeclared_methods_raw(void **state)
{
    struct fx *fx = *state;
    const struct {
        const char *req;
        const char *status;
        const char *allow; /* NULL: no Allow header expected */
        const char *code;
    } cases[] = {
        {"TRACE /api/things/x HTTP/1.1\r\nHost: x\r\n\r\n", "405", "Allow: GET, DELETE\r\n",
         "method_not_allowed"},
        {"TRACE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "405", "Allow: GET\r\n",
         "method_not_allowed"},
        {"TRACE /nope HTTP/1.1\r\nHost: x\r\n\r\n", "404", NULL, "not_found"},
        {"CONNECT /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "405",
         "Allow: POST, PATCH\r\n", "method_not_allowed"},
        {"PATCH /api/things/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "405",
         "Allow: GET, DELETE\r\n", "method_not_allowed"},
        {"OPTIONS /api/q HTTP/1.1\r\nHost: x\r\n\r\n", "405", "Allow: GET\r\n",
         "method_not_allowed"},
        /* no tunnels: an authority-form target is this server's "/" */
        {"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", "405", "Allow: GET\r\n",
         "method_not_allowed"},
        {"BREW /api/q HTTP/1.1\r\nHost: x\r\n\r\n", "501", NULL, "not_implemented"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *resp = raw_exchange(fx, cases[i].req, strlen(cases[i].req), "}}");
        char want[64], code[64];

        snprintf(want, sizeof(want), "HTTP/1.1 %s ", cases[i].status);
        snprintf(code, sizeof(code), "\"code\":\"%s\"", cases[i].code);
        if (strstr(resp, want) == NULL || strstr(resp, code) == NULL ||
            strstr(resp, "Content-Type: application/json") == NULL ||
            (cases[i].allow != NULL && strstr(resp, cases[i].allow) == NULL) ||
            (cases[i].allow == NULL && strstr(resp, "Allow:") != NULL))
            fail_msg("%s-> %s", cases[i].req, resp);
        /* evhttp frames no answer to CONNECT: ours has a length and closes, or a client
         * would wait for more */
        if (strncmp(cases[i].req, "CONNECT", 7) == 0 &&
            (strstr(resp, "Content-Length: ") == NULL || strstr(resp, "Connection: close") == NULL))
            fail_msg("%s-> %s", cases[i].req, resp);
        free(resp);
    }
    assert_int_equal(fx->handler_calls, 0);
}

static void test_body_too_large_raw_chunked(void **state)
{
    struct fx *fx = *state;
    const char *head = "POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t hl = strlen(head);
    char req[4096];
    char *resp;

    memcpy(req, head, hl);
    for (int i = 0; i < 4; i++) { /* 4 x 512 bytes > max_body 1024 */
        memcpy(req + hl + (size_t)i * 517, "200\r\n", 5);
        memset(req + hl + (size_t)i * 517 + 5, 'z', 512);
    }
    resp = raw_exchange(fx, req, hl + 4 * 517, "}}");
    assert_non_null(strstr(resp, " 413 "));
    assert_non_null(strstr(resp, "\"code\":\"request_too_large\""));
    free(resp);
}

/* ---- tests: request ids ------------------------------------------------------------- */

static void test_request_id(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    const char *good[] = {"X-Request-Id", "abc-123_x.Y", NULL};
    const char *bad[] = {"X-Request-Id", "has space", NULL};
    char long_id[80];
    const char *too_long[] = {"X-Request-Id", long_id, NULL};

    nf_test_http_call(&fx->h, "GET", "/nope", good, NULL, &r);
    assert_string_equal(r.rid, "abc-123_x.Y");
    nf_test_http_error(&r, "not_found"); /* checks the body carries the same id */

    nf_test_http_call(&fx->h, "GET", "/healthz", bad, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(nf_id_valid("req", r.rid));

    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    nf_test_http_call(&fx->h, "GET", "/healthz", too_long, NULL, &r);
    assert_true(nf_id_valid("req", r.rid));
    long_id[64] = '\0'; /* 64 is still fine */
    nf_test_http_call(&fx->h, "GET", "/healthz", too_long, NULL, &r);
    assert_string_equal(r.rid, long_id);

    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r);
    assert_true(nf_id_valid("req", r.rid));
    nf_test_http_result_clear(&r);
}

/* ---- tests: built-in routes and binding --------------------------------------------- */

static void test_health_ready_metrics(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    size_t len = 0;
    char *txt;

    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");

    fx->ready = false;
    nf_test_http_call(&fx->h, "GET", "/readyz", NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(nf_test_jstr(r.json, "status"), "unready");
    assert_string_equal(nf_test_jstr(cJSON_GetObjectItem(r.json, "checks"), "redis"), "down");

    fx->ready = true;
    nf_test_http_call(&fx->h, "GET", "/readyz/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(nf_test_jstr(r.json, "status"), "ready");
    assert_string_equal(nf_test_jstr(cJSON_GetObjectItem(r.json, "checks"), "redis"), "ok");

    nf_test_http_call(&fx->h, "GET", "/nope", NULL, NULL, &r);
    nf_test_http_call(&fx->h, "GET", "/api/things/a", NULL, NULL, &r);
    nf_test_http_call(&fx->h, "GET", "/api/things/b", NULL, NULL, &r);

    nf_test_http_call(&fx->h, "GET", "/metrics", NULL, NULL, &r);
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
    txt = nf_metrics_render(fx->h.m, &len);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "route=\"/metrics\",method=\"GET\",status=\"200\"} 1\n"));
    free(txt);
    nf_test_http_result_clear(&r);
}

static void test_metrics_absent(void **state)
{
    struct fx *fx = fx_new(NULL, false); /* no registry, no ready callback, no routes */
    struct nf_test_http_result r = {0};

    nf_test_http_call(&fx->h, "GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    nf_test_http_call(&fx->h, "GET", "/readyz", NULL, NULL, &r); /* no ready callback: ready */
    assert_int_equal(r.status, 200);
    nf_test_http_result_clear(&r);
    fx_free(fx);
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

int main(void)
{
    int rc;

    nf_test_log_quiet();
    if (nf_crypto_init() != 0)
        return 1;
    rc = NF_TEST_RUN(setup, teardown, test_route_params_decoded, test_route_literal_beats_param,
                     test_not_found_vs_method_not_allowed, test_trailing_slash, test_query_decoding,
                     test_route_registration_errors, test_json_body, test_body_and_patch,
                     test_malformed_request_raw, test_undeclared_methods_raw, test_request_id,
                     test_health_ready_metrics);
    rc |= NF_TEST_RUN(setup_small, teardown, test_body_too_large, test_headers_too_large,
                      test_body_too_large_raw_chunked);
    rc |= NF_TEST_RUN(NULL, NULL, test_metrics_absent, test_bind_errors_and_reuseport);
    return rc;
}
