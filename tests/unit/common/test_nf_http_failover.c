/*
 * Unit tests for the nf_http client over several endpoints (a service's replicas):
 * round-robin, failover past a refused endpoint, no retry of a POST that may have been
 * done, a GET retried after a broken connection, the health probe bringing a replica
 * back, every endpoint down, and the address list parsing of nf_cfg. Against real nf_http
 * servers on loopback ports, and a raw socket that accepts and drops connections.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "nf_cfg.h"
#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_test.h"
#include "nf_test_http.h"

struct replica {
    struct nf_http_server *srv;
    int port;
    int hits;
    char name[8];
};

static void h_who(struct nf_http_req *req, void *arg)
{
    struct replica *r = arg;
    cJSON *body = cJSON_CreateObject();

    r->hits++;
    cJSON_AddStringToObject(body, "replica", r->name);
    nf_http_reply_json(req, 200, body);
}

static void replica_start(struct nf_test_http *h, struct replica *r, const char *name, int port)
{
    snprintf(r->name, sizeof(r->name), "%s", name);
    assert_int_equal(nf_http_server_new(&r->srv, h->base, "127.0.0.1", port, NULL, false, NULL), 0);
    r->port = nf_http_server_port(r->srv);
    assert_int_equal(nf_http_route(r->srv, "GET", "/who", h_who, r), 0);
    assert_int_equal(nf_http_route(r->srv, "POST", "/who", h_who, r), 0);
}

static void replica_kill(struct nf_test_http *h, struct replica *r)
{
    nf_http_server_free(r->srv);
    r->srv = NULL;
    nf_test_run_for(h->base, 20); /* the closes reach the client's idle connections */
}

static void client(struct nf_test_http *h, const int *ports, size_t n)
{
    const char *hosts[4] = {"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1"};

    assert_int_equal(nf_http_client_new_multi(&h->cli, h->base, hosts, ports, n, 2000, 2), 0);
}

static const char *who(struct nf_test_http *h, const char *method, struct nf_test_http_result *r)
{
    nf_test_http_call(h, method, "/who", NULL, method[0] == 'P' ? "{}" : NULL, r);
    return r->status == 200 ? nf_test_jstr(r->json, "replica") : NULL;
}

static void test_round_robin_over_replicas(void **state)
{
    struct nf_test_http h;
    struct replica a = {0}, b = {0};
    struct nf_test_http_result r = {0};

    nf_test_http_loop(&h);
    replica_start(&h, &a, "a", 0);
    replica_start(&h, &b, "b", 0);
    client(&h, (int[]){a.port, b.port}, 2);
    for (int i = 0; i < 6; i++)
        assert_non_null(who(&h, "GET", &r));
    assert_int_equal(a.hits, 3);
    assert_int_equal(b.hits, 3);
    nf_test_http_result_clear(&r);
    nf_http_client_free(h.cli);
    h.cli = NULL;
    nf_http_server_free(a.srv);
    nf_http_server_free(b.srv);
    nf_test_http_close(&h);
}

/* A replica that refuses connections: every request (a POST too: nothing was sent) is
 * answered by the live one, and the dead one is not tried again while it is down. */
static void test_refused_replica_is_skipped(void **state)
{
    struct nf_test_http h;
    struct replica a = {0};
    struct nf_test_http_result r = {0};

    nf_test_http_loop(&h);
    replica_start(&h, &a, "a", 0);
    client(&h, (int[]){nf_test_closed_port(), a.port}, 2);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(who(&h, i % 2 ? "GET" : "POST", &r), "a");
        assert_int_equal(r.calls, 1);
    }
    assert_int_equal(a.hits, 4);
    nf_test_http_result_clear(&r);
    nf_http_client_free(h.cli);
    h.cli = NULL;
    nf_http_server_free(a.srv);
    nf_test_http_close(&h);
}

/* A replica dies: later requests all go to the survivor, none fails; when it is back on
 * its port, the probe (GET /healthz after the 0.5 s backoff) brings it back. */
static void test_dead_replica_fails_over_and_comes_back(void **state)
{
    struct nf_test_http h;
    struct replica a = {0}, b = {0};
    struct nf_test_http_result r = {0};
    int port_b;

    nf_test_http_loop(&h);
    replica_start(&h, &a, "a", 0);
    replica_start(&h, &b, "b", 0);
    port_b = b.port;
    client(&h, (int[]){a.port, b.port}, 2);
    assert_non_null(who(&h, "GET", &r));
    assert_non_null(who(&h, "GET", &r));
    replica_kill(&h, &b);
    a.hits = 0;
    for (int i = 0; i < 6; i++)
        assert_string_equal(who(&h, i % 2 ? "GET" : "POST", &r), "a");
    assert_int_equal(a.hits, 6);

    replica_start(&h, &b, "b", port_b);
    nf_test_run_for(h.base, 1500); /* a probe or two */
    b.hits = 0;
    for (int i = 0; i < 4; i++)
        assert_non_null(who(&h, "GET", &r));
    assert_int_equal(b.hits, 2);
    nf_test_http_result_clear(&r);
    nf_http_client_free(h.cli);
    h.cli = NULL;
    nf_http_server_free(a.srv);
    nf_http_server_free(b.srv);
    nf_test_http_close(&h);
}

/* A listening socket that reads what comes and then closes: the connection breaks after
 * the request was sent. */
static int dropper_listen(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

struct dropper {
    struct event_base *base;
    int dropped;
};

/* The request arrived: dropped unanswered. */
static void on_drop_read(evutil_socket_t fd, short what, void *arg)
{
    struct dropper *d = arg;
    char buf[4096];

    (void)!read(fd, buf, sizeof(buf));
    close(fd);
    d->dropped++;
}

static void on_drop_accept(evutil_socket_t fd, short what, void *arg)
{
    struct dropper *d = arg;
    int c = accept(fd, NULL, NULL);

    if (c >= 0)
        assert_int_equal(event_base_once(d->base, c, EV_READ, on_drop_read, d, NULL), 0);
}

/* The connection breaks after sending: a POST is reported (it may have been done), a GET
 * is retried on the other replica. */
static void test_broken_connection_retries_only_idempotent(void **state)
{
    struct nf_test_http h;
    struct replica a = {0};
    struct nf_test_http_result r = {0};
    struct dropper d = {0};
    int dport, lfd;
    struct event *ev;

    nf_test_http_loop(&h);
    d.base = h.base;
    lfd = dropper_listen(&dport);
    ev = event_new(h.base, lfd, EV_READ | EV_PERSIST, on_drop_accept, &d);
    event_add(ev, NULL);
    replica_start(&h, &a, "a", 0);
    client(&h, (int[]){dport, a.port}, 2); /* the first request goes to the dropper */
    assert_null(who(&h, "POST", &r));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(d.dropped, 1);
    assert_int_equal(a.hits, 0);
    nf_http_client_free(h.cli);

    client(&h, (int[]){dport, a.port}, 2);
    assert_string_equal(who(&h, "GET", &r), "a");
    assert_int_equal(d.dropped, 2);
    assert_int_equal(a.hits, 1);
    nf_test_http_result_clear(&r);
    nf_http_client_free(h.cli);
    h.cli = NULL;
    event_free(ev);
    close(lfd);
    nf_http_server_free(a.srv);
    nf_test_http_close(&h);
}

static void test_all_replicas_down(void **state)
{
    struct nf_test_http h;
    struct nf_test_http_result r = {0};

    nf_test_http_loop(&h);
    client(&h, (int[]){nf_test_closed_port(), nf_test_closed_port()}, 2);
    for (int i = 0; i < 3; i++) {
        assert_null(who(&h, "GET", &r));
        assert_int_equal(r.status, 0);
        assert_true(r.error[0] != '\0');
    }
    nf_test_run_for(h.base, 50);
    assert_int_equal(r.calls, 1);
    nf_test_http_result_clear(&r);
    nf_test_http_close(&h);
}

static void test_multi_refuses_bad_arguments(void **state)
{
    struct nf_test_http h;
    const char *hosts[2] = {"127.0.0.1", ""};
    int ports[2] = {80, 80};

    nf_test_http_loop(&h);
    assert_int_equal(nf_http_client_new_multi(&h.cli, h.base, hosts, ports, 0, 0, 1), -1);
    assert_int_equal(nf_http_client_new_multi(&h.cli, h.base, hosts, ports, 2, 0, 1), -1);
    assert_int_equal(nf_http_client_new_multi(&h.cli, h.base, hosts, ports,
                                              NF_HTTP_CLIENT_MAX_ENDPOINTS + 1, 0, 1),
                     -1);
    assert_null(h.cli);
    nf_test_http_close(&h);
}

static void test_cfg_split_addrs(void **state)
{
    char *a[NF_CFG_MAX_ADDRS];
    char many[512] = "";

    assert_int_equal(nf_cfg_split_addrs("10.0.0.1:8102", a, NF_CFG_MAX_ADDRS), 1);
    assert_string_equal(a[0], "10.0.0.1:8102");
    free(a[0]);
    assert_int_equal(nf_cfg_split_addrs("s1:8102, s2:8112 ,[::1]:8122", a, NF_CFG_MAX_ADDRS), 3);
    assert_string_equal(a[0], "s1:8102");
    assert_string_equal(a[1], "s2:8112");
    assert_string_equal(a[2], "[::1]:8122");
    for (int i = 0; i < 3; i++)
        free(a[i]);
    assert_int_equal(nf_cfg_split_addrs("", a, NF_CFG_MAX_ADDRS), -1);
    assert_int_equal(nf_cfg_split_addrs("s1:8102,", a, NF_CFG_MAX_ADDRS), -1);
    assert_int_equal(nf_cfg_split_addrs("s1:8102,,s2:1", a, NF_CFG_MAX_ADDRS), -1);
    assert_int_equal(nf_cfg_split_addrs("s1:8102,s2", a, NF_CFG_MAX_ADDRS), -1);
    assert_int_equal(nf_cfg_split_addrs("s1:99999", a, NF_CFG_MAX_ADDRS), -1);
    for (int i = 0; i <= NF_CFG_MAX_ADDRS; i++)
        strcat(many, i ? ",h:1" : "h:1");
    assert_int_equal(nf_cfg_split_addrs(many, a, NF_CFG_MAX_ADDRS), -1);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_round_robin_over_replicas, test_refused_replica_is_skipped,
                       test_dead_replica_fails_over_and_comes_back,
                       test_broken_connection_retries_only_idempotent, test_all_replicas_down,
                       test_multi_refuses_bad_arguments, test_cfg_split_addrs);
}
