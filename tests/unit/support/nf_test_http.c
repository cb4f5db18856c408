/* The HTTP fixture of the nf_http tests; see nf_test_http.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nf_test.h"
#include "nf_test_http.h"

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

void nf_test_http_loop(struct nf_test_http *h)
{
    struct timeval tv = {0, 5000};

    memset(h, 0, sizeof(*h));
    h->base = event_base_new();
    assert_non_null(h->base);
    h->tick = event_new(h->base, -1, EV_PERSIST, on_tick, NULL);
    assert_non_null(h->tick);
    event_add(h->tick, &tv);
}

void nf_test_http_open(struct nf_test_http *h, const struct nf_http_limits *limits,
                       bool with_metrics, int max_conns)
{
    nf_test_http_loop(h);
    if (with_metrics)
        assert_int_equal(nf_metrics_new(&h->m), 0);
    assert_int_equal(nf_http_server_new(&h->srv, h->base, "127.0.0.1", 0, limits, false, h->m), 0);
    h->port = nf_http_server_port(h->srv);
    assert_true(h->port > 0);
    assert_int_equal(nf_http_client_new(&h->cli, h->base, "127.0.0.1", h->port, 2000, max_conns),
                     0);
}

void nf_test_http_close(struct nf_test_http *h)
{
    while (h->nheld > 0)
        nf_test_http_reply_held(h, 200);
    nf_http_client_free(h->cli);
    if (h->srv != NULL)
        assert_int_equal(nf_http_inflight(h->srv), 0);
    nf_http_server_free(h->srv);
    /* Let libevent finish closing what the frees left behind. */
    event_base_loop(h->base, EVLOOP_NONBLOCK);
    nf_metrics_free(h->m);
    event_free(h->tick);
    event_base_free(h->base);
    memset(h, 0, sizeof(*h));
}

void nf_test_http_routes(struct nf_test_http *h, const struct nf_test_http_route *routes, size_t n,
                         void *arg)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(
            nf_http_route(h->srv, routes[i].method, routes[i].pattern, routes[i].fn, arg), 0);
}

/* ---- answers through the client ---- */

void nf_test_http_result_clear(struct nf_test_http_result *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

static void copy_header(const struct nf_http_resp *resp, const char *name, char *out, size_t n)
{
    const char *v = nf_http_resp_header(resp, name);

    snprintf(out, n, "%s", v != NULL ? v : "");
}

void nf_test_http_on_result(const struct nf_http_resp *resp, void *arg)
{
    struct nf_test_http_result *r = arg;

    r->calls++;
    r->done = true;
    r->status = resp->status;
    free(r->body);
    cJSON_Delete(r->json);
    r->body = malloc(resp->len + 1);
    assert_non_null(r->body);
    memcpy(r->body, resp->body, resp->len + 1);
    r->len = resp->len;
    r->json = cJSON_Parse(r->body);
    snprintf(r->error, sizeof(r->error), "%s", resp->error != NULL ? resp->error : "");
    copy_header(resp, "X-Request-Id", r->rid, sizeof(r->rid));
    copy_header(resp, "Content-Type", r->ctype, sizeof(r->ctype));
    copy_header(resp, "Allow", r->allow, sizeof(r->allow));
    copy_header(resp, "Connection", r->conn, sizeof(r->conn));
    r->had_headers = resp->headers != NULL;
}

void nf_test_http_send(struct nf_test_http *h, const char *method, const char *path,
                       const char *const *hdrs, const char *body, struct nf_test_http_result *r)
{
    assert_int_equal(nf_http_client_request(h->cli, method, path, hdrs, body,
                                            body != NULL ? strlen(body) : 0, 0,
                                            nf_test_http_on_result, r),
                     0);
}

void nf_test_http_call(struct nf_test_http *h, const char *method, const char *path,
                       const char *const *hdrs, const char *body, struct nf_test_http_result *r)
{
    nf_test_http_result_clear(r);
    nf_test_http_send(h, method, path, hdrs, body, r);
    assert_true(nf_test_http_wait(h, r));
    assert_int_equal(r->calls, 1);
}

bool nf_test_http_wait(struct nf_test_http *h, const struct nf_test_http_result *r)
{
    return nf_test_wait_flag(h->base, &r->done, NF_TEST_HTTP_WAIT_MS);
}

const char *nf_test_jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const cJSON *nf_test_http_error(const struct nf_test_http_result *r, const char *code)
{
    const cJSON *err;

    assert_non_null(r->json);
    err = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    assert_true(cJSON_IsObject(err));
    assert_string_equal(nf_test_jstr(err, "code"), code);
    assert_non_null(nf_test_jstr(err, "message"));
    assert_non_null(nf_test_jstr(err, "request_id"));
    assert_string_equal(r->ctype, "application/json");
    assert_string_equal(nf_test_jstr(err, "request_id"), r->rid);
    return err;
}

bool nf_test_http_metrics_have(struct nf_test_http *h, const char *s)
{
    size_t len = 0;
    char *txt = nf_metrics_render(h->m, &len);
    bool found;

    assert_non_null(txt);
    found = strstr(txt, s) != NULL;
    free(txt);
    return found;
}

/* ---- held requests ---- */

void nf_test_http_hold(struct nf_http_req *req, void *arg)
{
    struct nf_test_http *h = arg;

    assert_true(h->nheld < NF_TEST_HTTP_MAX_HELD);
    h->held[h->nheld++] = req;
}

void nf_test_http_reply_held(struct nf_test_http *h, int status)
{
    struct nf_http_req *req;
    cJSON *body = cJSON_CreateObject();

    assert_true(h->nheld > 0);
    req = h->held[0];
    memmove(h->held, h->held + 1, (size_t)(h->nheld - 1) * sizeof(struct nf_http_req *));
    h->nheld--;
    cJSON_AddBoolToObject(body, "late", 1);
    nf_http_reply_json(req, status, body);
}

/* ---- raw sockets ---- */

int nf_test_http_raw_request(struct nf_test_http *h, const char *req)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_port = htons((uint16_t)h->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    nf_test_http_raw_send(h, fd, req, strlen(req));
    return fd;
}

void nf_test_http_raw_send(struct nf_test_http *h, int fd, const char *s, size_t n)
{
    long long end = nf_test_now_ms() + NF_TEST_HTTP_WAIT_MS;

    while (n > 0 && nf_test_now_ms() < end) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);

        if (w > 0) {
            s += w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            break; /* the server may close early */
        } else {
            event_base_loop(h->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        }
    }
}

char *nf_test_http_raw_read(struct nf_test_http *h, int fd, const char *until)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    long long end = nf_test_now_ms() + NF_TEST_HTTP_WAIT_MS;

    assert_non_null(buf);
    buf[0] = '\0';
    while (nf_test_now_ms() < end && strstr(buf, until) == NULL) {
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);

        if (n > 0) {
            len += (size_t)n;
            buf[len] = '\0';
            if (len + 1 >= cap) {
                cap *= 2;
                buf = realloc(buf, cap);
                assert_non_null(buf);
            }
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            break;
        } else {
            event_base_loop(h->base, EVLOOP_ONCE);
        }
    }
    return buf;
}
