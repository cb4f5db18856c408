#pragma once
/*
 * The HTTP fixture of the nf_http tests (part of nf_test_support): an event loop, a real
 * nf_http server on a free loopback port and an nf_http client of it; answers copied out
 * of the client callback; requests a "hold" route keeps unanswered until the test answers
 * them; raw sockets for clients that must misbehave.
 *
 * Like nf_test.h, these fail the running test through cmocka.
 */
#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "nf_http.h"
#include "nf_http_client.h"
#include "nf_metrics.h"

#define NF_TEST_HTTP_WAIT_MS 5000 /* the longest any answer is waited for */
#define NF_TEST_HTTP_MAX_HELD 8

struct nf_test_http {
    struct event_base *base;
    struct event *tick;   /* wakes the loop every 5 ms so that waits look at their condition */
    struct nf_metrics *m; /* NULL without metrics */
    struct nf_http_server *srv; /* NULL before nf_test_http_open, or once a test freed it */
    struct nf_http_client *cli; /* NULL likewise */
    int port;
    struct nf_http_req *held[NF_TEST_HTTP_MAX_HELD]; /* kept by nf_test_http_hold, oldest first */
    int nheld;
};

/* Only the loop and its tick: for tests that build their own server or client. */
void nf_test_http_loop(struct nf_test_http *h);

/*
 * The loop, a metrics registry when with_metrics, a server on a free port of 127.0.0.1
 * with limits (NULL: the defaults) and a client of it with a 2 s connect timeout and at
 * most max_conns connections.
 */
void nf_test_http_open(struct nf_test_http *h, const struct nf_http_limits *limits,
                       bool with_metrics, int max_conns);

/*
 * Answers what is still held (200), frees the client, checks that the server (when there
 * is one) has nothing in flight, frees it, lets libevent finish the closes, frees the
 * registry and the loop. Works after nf_test_http_loop alone.
 */
void nf_test_http_close(struct nf_test_http *h);

/* One route of a test server. */
struct nf_test_http_route {
    const char *method, *pattern;
    nf_http_handler fn;
};

/* Registers the n routes on h->srv, each with arg. */
void nf_test_http_routes(struct nf_test_http *h, const struct nf_test_http_route *routes, size_t n,
                         void *arg);

/* ---- answers through the client ---- */

/* One client answer, copied out of the callback. */
struct nf_test_http_result {
    bool done;
    int calls;
    int status;
    char *body; /* NUL-terminated */
    size_t len;
    cJSON *json;      /* the body parsed; NULL when it is not JSON */
    char error[128];  /* the transport error, "" when none */
    char rid[128];    /* X-Request-Id, "" when absent */
    char ctype[128];  /* Content-Type */
    char allow[128];  /* Allow */
    char conn[64];    /* Connection */
    bool had_headers; /* the answer had a header list */
};

/* Frees what r holds and zeroes it. */
void nf_test_http_result_clear(struct nf_test_http_result *r);

/* An nf_http_client_cb recording into arg, a struct nf_test_http_result. */
void nf_test_http_on_result(const struct nf_http_resp *resp, void *arg);

/* Queues a request through h->cli (no timeout of its own), answered into r. */
void nf_test_http_send(struct nf_test_http *h, const char *method, const char *path,
                       const char *const *hdrs, const char *body, struct nf_test_http_result *r);

/* One request through h->cli, waited for: r is cleared first, then holds the answer,
 * which came exactly once. */
void nf_test_http_call(struct nf_test_http *h, const char *method, const char *path,
                       const char *const *hdrs, const char *body, struct nf_test_http_result *r);

/* Runs the loop until r is answered or NF_TEST_HTTP_WAIT_MS passed; whether it was. */
bool nf_test_http_wait(struct nf_test_http *h, const struct nf_test_http_result *r);

/* obj's string member key; NULL when missing or not a string. */
const char *nf_test_jstr(const cJSON *obj, const char *key);

/* The error object of an error answer, checked for the agreed JSON shape and that its
 * request_id is the X-Request-Id; owned by r. */
const cJSON *nf_test_http_error(const struct nf_test_http_result *r, const char *code);

/* Whether the rendered metrics registry contains s. */
bool nf_test_http_metrics_have(struct nf_test_http *h, const char *s);

/* ---- held requests ---- */

/* A handler (arg: the struct nf_test_http) that keeps req unanswered in h->held. */
void nf_test_http_hold(struct nf_http_req *req, void *arg);

/* Answers the oldest held request status {"late": true}. */
void nf_test_http_reply_held(struct nf_test_http *h, int status);

/* ---- raw sockets ---- */

/* A non-blocking loopback connection to the server on which req has been sent, the loop
 * running meanwhile so that the server reads it. */
int nf_test_http_raw_request(struct nf_test_http *h, const char *req);

/* Sends the n bytes of s on fd while the loop keeps the server reading; stops early when
 * the server closes. */
void nf_test_http_raw_send(struct nf_test_http *h, int fd, const char *s, size_t n);

/* Reads fd until the peer closes, the text contains until, or NF_TEST_HTTP_WAIT_MS;
 * returns what came, a heap string. */
char *nf_test_http_raw_read(struct nf_test_http *h, int fd, const char *until);
