/*
 * Unit tests for the nf_http client: timeouts, refused connections, the keep-alive pool
 * (reuse, its limit, parallel requests), freeing with requests pending or from a
 * callback, refused arguments and the headers it sends. Against a real nf_http server on
 * an ephemeral loopback port whose "hold" route keeps requests unanswered until the test
 * answers them.
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

#include <event2/event.h>

#include "nf_crypto.h"
#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_test.h"
#include "nf_test_http.h"

#define WAIT_MS NF_TEST_HTTP_WAIT_MS

struct fx {
    struct nf_test_http h; /* its "hold" route keeps requests in h.held */
    int calls;             /* of the callback that frees the client */
};

/* The number of connections the server accepted, from its metrics. */
static bool connections_were(struct fx *fx, int n)
{
    char want[64];

    snprintf(want, sizeof(want), "\nnf_http_connections_total %d\n", n);
    return nf_test_http_metrics_have(&fx->h, want);
}

/* ---- handlers and fixture ----------------------------------------------------------- */

/* Echoes what the client sent: request id, X-Test, body, Content-Type, Host. */
static void h_echo(struct nf_http_req *req, void *arg)
{
    struct fx *fx = arg;
    cJSON *body = cJSON_CreateObject();
    const char *xt = nf_http_req_header(req, "X-Test");
    char host[64];

    snprintf(host, sizeof(host), "127.0.0.1:%d", fx->h.port);
    cJSON_AddStringToObject(body, "id", nf_http_req_id(req));
    if (xt != NULL)
        cJSON_AddStringToObject(body, "x_test", xt);
    cJSON_AddStringToObject(body, "body", nf_http_req_body(req, NULL));
    cJSON_AddStringToObject(body, "ctype", nf_http_req_header(req, "Content-Type"));
    cJSON_AddBoolToObject(body, "host_ok", strcmp(nf_http_req_header(req, "Host"), host) == 0);
    nf_http_reply_json(req, 200, body);
}

static int setup_with(void **state, int max_conns)
{
    struct fx *fx = calloc(1, sizeof(*fx));

    nf_test_http_open(&fx->h, NULL, true, max_conns);
    assert_int_equal(nf_http_route(fx->h.srv, "GET", "/api/hold", nf_test_http_hold, &fx->h), 0);
    assert_int_equal(nf_http_route(fx->h.srv, "POST", "/api/echo", h_echo, fx), 0);
    *state = fx;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, 4);
}

static int setup_one_conn(void **state)
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

/* ---- tests: failures ---------------------------------------------------------------- */

static void test_client_timeout(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    long long t0 = nf_test_now_ms();

    assert_int_equal(nf_http_client_request(fx->h.cli, "GET", "/api/hold", NULL, NULL, 0, 150,
                                            nf_test_http_on_result, &r),
                     0);
    assert_true(nf_test_http_wait(&fx->h, &r));
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.error, "timeout"));
    assert_false(r.had_headers);
    assert_true(nf_test_now_ms() - t0 >= 140);
    assert_true(nf_test_now_ms() - t0 < 1500);
    nf_test_run_for(fx->h.base, 100);
    assert_int_equal(r.calls, 1); /* exactly once */
    assert_int_equal(fx->h.nheld, 1);
    nf_test_http_reply_held(&fx->h, 200); /* nobody listens any more */
    nf_test_run_for(fx->h.base, 20);

    /* the pool recovers: the next request gets a fresh connection */
    nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    nf_test_http_result_clear(&r);
}

static void test_client_connection_refused(void **state)
{
    struct nf_test_http h;
    struct nf_test_http_result r = {0};

    nf_test_http_loop(&h); /* and no server: a port nobody listens on */
    assert_int_equal(
        nf_http_client_new(&h.cli, h.base, "127.0.0.1", nf_test_closed_port(), 2000, 2), 0);
    nf_test_http_call(&h, "POST", "/x", NULL, "{}", &r);
    assert_int_equal(r.status, 0);
    assert_true(r.error[0] != '\0');
    assert_false(r.had_headers);
    nf_test_run_for(h.base, 50);
    assert_int_equal(r.calls, 1);
    /* again, on the same pooled connection object */
    nf_test_http_call(&h, "GET", "/x", NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    nf_test_http_close(&h);
    nf_test_http_result_clear(&r);
}

/* ---- tests: the pool ---------------------------------------------------------------- */

static void test_client_keepalive_reuse(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};

    for (int i = 0; i < 5; i++) {
        nf_test_http_call(&fx->h, "GET", "/healthz", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
    }
    assert_true(connections_were(fx, 1));
    nf_test_http_result_clear(&r);
}

static void test_client_pool_limit(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r[4];

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 4; i++)
        nf_test_http_send(&fx->h, "GET", "/api/hold", NULL, NULL, &r[i]);
    nf_test_run_for(fx->h.base, 100);
    assert_int_equal(fx->h.nheld, 1); /* one connection: the others wait */
    nf_test_http_reply_held(&fx->h, 200);
    assert_true(nf_test_http_wait(&fx->h, &r[0]));
    nf_test_run_for(fx->h.base, 50);
    assert_int_equal(fx->h.nheld, 1);
    assert_false(r[1].done);
    for (long long end = nf_test_now_ms() + WAIT_MS;
         (fx->h.nheld > 0 || !r[3].done) && nf_test_now_ms() < end;) {
        if (fx->h.nheld > 0)
            nf_test_http_reply_held(&fx->h, 200);
        event_base_loop(fx->h.base, EVLOOP_ONCE);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 200);
        nf_test_http_result_clear(&r[i]);
    }
    assert_true(connections_were(fx, 1));
}

static void test_client_parallel(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r[4];

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 4; i++)
        nf_test_http_send(&fx->h, "GET", "/api/hold", NULL, NULL, &r[i]);
    nf_test_wait_count(fx->h.base, &fx->h.nheld, 4, WAIT_MS);
    assert_int_equal(fx->h.nheld, 4); /* four pooled connections, all busy at once */
    while (fx->h.nheld > 0)
        nf_test_http_reply_held(&fx->h, 200);
    for (int i = 0; i < 4; i++) {
        assert_true(nf_test_http_wait(&fx->h, &r[i]));
        assert_int_equal(r[i].status, 200);
        nf_test_http_result_clear(&r[i]);
    }
}

/* ---- tests: freeing the client ------------------------------------------------------ */

static void test_client_free_with_pending(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r[3];

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 3; i++)
        nf_test_http_send(&fx->h, "GET", "/api/hold", NULL, NULL, &r[i]);
    nf_test_wait_count(fx->h.base, &fx->h.nheld, 1, WAIT_MS);
    assert_int_equal(fx->h.nheld, 1); /* one in flight, two queued */
    nf_http_client_free(fx->h.cli);
    fx->h.cli = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_string_equal(r[i].error, "client closed");
        nf_test_http_result_clear(&r[i]);
    }
    nf_test_run_for(fx->h.base, 50);
}

/* Frees the client from inside its own callback. */
static void on_result_free_client(const struct nf_http_resp *resp, void *arg)
{
    struct fx *fx = arg;
    struct nf_test_http_result dummy = {0};

    fx->calls += 100;
    /* a new request from the callback is fine, and the free answers it */
    nf_test_http_send(&fx->h, "GET", "/healthz", NULL, NULL, &dummy);
    nf_http_client_free(fx->h.cli);
    fx->h.cli = NULL;
    assert_int_equal(dummy.calls, 1); /* the queued one got its "client closed" */
    assert_int_equal(dummy.status, 0);
    nf_test_http_result_clear(&dummy);
}

static void test_client_free_from_callback(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(nf_http_client_request(fx->h.cli, "GET", "/healthz", NULL, NULL, 0, 0,
                                            on_result_free_client, fx),
                     0);
    for (long long end = nf_test_now_ms() + WAIT_MS; fx->h.cli != NULL && nf_test_now_ms() < end;)
        event_base_loop(fx->h.base, EVLOOP_ONCE);
    assert_null(fx->h.cli);
    assert_int_equal(fx->calls, 100);
    nf_test_run_for(fx->h.base, 50);
}

/* ---- tests: what the client sends --------------------------------------------------- */

static void test_client_rejects_bad_requests(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    const char *crlf[] = {"X-A", "v\r\nInjected: 1", NULL};
    const char *odd[] = {"X-A", NULL};
    const char *space[] = {"Bad Name", "v", NULL};

    assert_int_equal(nf_http_client_request(fx->h.cli, "FETCH", "/", NULL, NULL, 0, 0,
                                            nf_test_http_on_result, &r),
                     -1);
    assert_int_equal(
        nf_http_client_request(fx->h.cli, "GET", "x", NULL, NULL, 0, 0, nf_test_http_on_result, &r),
        -1);
    assert_int_equal(nf_http_client_request(fx->h.cli, "GET", "/a b", NULL, NULL, 0, 0,
                                            nf_test_http_on_result, &r),
                     -1);
    assert_int_equal(
        nf_http_client_request(fx->h.cli, "GET", "/", crlf, NULL, 0, 0, nf_test_http_on_result, &r),
        -1);
    assert_int_equal(
        nf_http_client_request(fx->h.cli, "GET", "/", odd, NULL, 0, 0, nf_test_http_on_result, &r),
        -1);
    assert_int_equal(nf_http_client_request(fx->h.cli, "GET", "/", space, NULL, 0, 0,
                                            nf_test_http_on_result, &r),
                     -1);
    assert_int_equal(nf_http_client_request(fx->h.cli, "GET", "/", NULL, NULL, 0, 0, NULL, &r), -1);
    assert_int_equal(
        nf_http_client_request(NULL, "GET", "/", NULL, NULL, 0, 0, nf_test_http_on_result, &r), -1);
    nf_test_run_for(fx->h.base, 20);
    assert_int_equal(r.calls, 0);
    assert_int_equal(nf_http_client_new(&fx->h.cli, fx->h.base, "", 1, 0, 1), -1);
    assert_int_equal(nf_http_client_new(&fx->h.cli, fx->h.base, "127.0.0.1", 0, 0, 1), -1);
    assert_null(nf_http_resp_header(NULL, "X"));
}

static void test_client_headers_and_host(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    const char *hdrs[] = {"X-Test", "v1", "X-Request-Id", "trace.42", NULL};

    nf_test_http_call(&fx->h, "POST", "/api/echo", hdrs, "{\"a\":1}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.rid, "trace.42");
    assert_string_equal(nf_test_jstr(r.json, "x_test"), "v1");
    assert_string_equal(nf_test_jstr(r.json, "body"), "{\"a\":1}");
    assert_string_equal(nf_test_jstr(r.json, "id"), "trace.42");
    nf_test_http_result_clear(&r);
}

/* The Host and default Content-Type the client sends, as the server sees them. */
static void test_client_default_headers(void **state)
{
    struct fx *fx = *state;
    struct nf_test_http_result r = {0};
    const char *plain[] = {"content-type", "text/plain", NULL};

    nf_test_http_call(&fx->h, "POST", "/api/echo", NULL, "{}", &r);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r.json, "host_ok")));
    assert_string_equal(nf_test_jstr(r.json, "ctype"), "application/json");
    nf_test_http_call(&fx->h, "POST", "/api/echo", plain, "x", &r);
    assert_string_equal(nf_test_jstr(r.json, "ctype"), "text/plain");
    nf_test_http_result_clear(&r);
}

int main(void)
{
    int rc;

    nf_test_log_quiet();
    if (nf_crypto_init() != 0)
        return 1;
    rc = NF_TEST_RUN(setup, teardown, test_client_timeout, test_client_parallel,
                     test_client_rejects_bad_requests, test_client_headers_and_host,
                     test_client_default_headers);
    rc |= NF_TEST_RUN(NULL, NULL, test_client_connection_refused);
    rc |= NF_TEST_RUN(setup_one_conn, teardown, test_client_keepalive_reuse, test_client_pool_limit,
                      test_client_free_with_pending, test_client_free_from_callback);
    return rc;
}
