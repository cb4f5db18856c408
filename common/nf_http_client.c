/*
 * nf_http_client: internal HTTP calls to a service, over a small pool of keep-alive evhttp
 * connections per endpoint (one host:port, or the replicas of a service), each request
 * with its own deadline.
 *
 *   nf_http_client_request --> creq queued (FIFO) + deadline timer armed
 *     --> kick (same loop turn) --> an idle pooled connection takes it
 *         (evhttp_make_request; one request per connection at a time)
 *     --> response / transport error / deadline / nf_http_client_free
 *     --> complete(): exactly once: timer freed, connection released, queue kicked,
 *         user callback, creq freed
 *
 * Exactly once: complete() runs once per creq, and every path that ends a request
 * first detaches it. A deadline on a request in flight cancels the evhttp request
 * (evhttp then reports REQUEST_CANCEL through the error callback, which is ignored for a
 * creq being cancelled, and never calls the done callback).
 *
 * User callbacks may call nf_http_client_request or nf_http_client_free. A free from
 * within our own dispatch loop is finished when that loop unwinds (depth counter).
 *
 * Several endpoints (replicas; DESIGN §12, docs/internals.md "Replicas"): requests go
 * round-robin to the endpoints that are up. A transport failure marks its endpoint down
 * and the request moves on to an endpoint it has not tried yet, while its deadline lasts,
 * when that is safe: always after a failed connect (nothing was sent), and for idempotent
 * methods (GET, HEAD, PUT, DELETE, OPTIONS) after any transport error but a deadline. A
 * POST whose connection broke after sending is reported (it may have been done). A down
 * endpoint is probed with GET /healthz after a backoff (0.5 s doubling to 10 s) and is up
 * again on a 2xx. When every endpoint is down, requests still try them (the oldest down
 * first). With one endpoint nothing is marked: it behaves as a single-address client.
 */
#include "nf_http_client.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "nf_log.h"
#include "nf_mem.h"
#include "nf_time.h"

#define DEFAULT_TIMEOUT_MS 5000
#define PROBE_TIMEOUT_MS 1000
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 10000

struct endpoint;

struct conn {
    struct endpoint *ep;
    struct evhttp_connection *evcon; /* created on first use */
    struct creq *cur;                /* request in flight, NULL when idle */
};

struct endpoint {
    struct nf_http_client *cli;
    char *host;
    int port;
    char hosthdr[300];
    struct conn *conns; /* max_conns of them */
    bool down;
    uint64_t down_since_ms;
    int backoff_ms;
    struct event *probe_timer;
    struct evhttp_connection *probe_evcon;
    struct evhttp_request *probe; /* in flight */
};

struct creq {
    struct nf_http_client *cli;
    TAILQ_ENTRY(creq) link;    /* in cli->queue: every request not completed, FIFO */
    struct conn *conn;         /* NULL while waiting for a connection */
    struct endpoint *last;     /* the endpoint it was last sent to */
    struct evhttp_request *ev; /* while in flight; owned by evhttp */
    struct event *timer;       /* the deadline */
    enum evhttp_cmd_type type;
    char *path;
    char **headers;  /* name, value, ... (copies) */
    size_t nheaders; /* number of pairs */
    char *body;
    size_t len;
    bool has_body;
    int timeout_ms;
    uint32_t tried;  /* bit i: endpoint i had this request and failed it */
    bool cancelling; /* we cancel the evhttp request: ignore its error */
    char error[96];  /* transport error seen by the error callback */
    nf_http_client_cb cb;
    void *arg;
};

struct nf_http_client {
    struct event_base *base;
    struct endpoint *eps;
    size_t neps;
    size_t rr; /* round-robin position */
    int timeout_ms;
    int max_conns;
    TAILQ_HEAD(, creq) queue;
    struct event *kick; /* dispatches waiting requests */
    int depth;          /* > 0 inside our own dispatch loop */
    bool closing;
    bool free_pending; /* nf_http_client_free called at depth > 0 */
};

static int method_type(const char *method, enum evhttp_cmd_type *out)
{
    static const struct {
        const char *name;
        enum evhttp_cmd_type type;
    } tab[] = {
        {"GET", EVHTTP_REQ_GET},         {"POST", EVHTTP_REQ_POST},   {"PUT", EVHTTP_REQ_PUT},
        {"DELETE", EVHTTP_REQ_DELETE},   {"PATCH", EVHTTP_REQ_PATCH}, {"HEAD", EVHTTP_REQ_HEAD},
        {"OPTIONS", EVHTTP_REQ_OPTIONS},
    };
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (strcmp(tab[i].name, method) == 0) {
            *out = tab[i].type;
            return 0;
        }
    }
    return -1;
}

/* Header names and values, and the path, must not break the request framing. */
static bool text_ok(const char *s, bool allow_space)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\r' || c == '\n' || c == 0x7f || (c < 0x20 && c != '\t') ||
            (!allow_space && (c == ' ' || c == '\t')))
            return false;
    }
    return true;
}

static void ms_to_tv(int ms, struct timeval *tv)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

static void creq_free(struct creq *creq)
{
    for (size_t i = 0; i < creq->nheaders * 2; i++)
        free(creq->headers[i]);
    free(creq->headers);
    free(creq->path);
    free(creq->body);
    free(creq);
}

/*
 * Ends creq: detaches it from everything, then calls the user (last use of cli), then
 * frees it. status 0 means a transport error described by error.
 */
static void complete(struct creq *creq, int status, const char *body, size_t len, const char *error,
                     const struct evkeyvalq *headers)
{
    struct nf_http_client *cli = creq->cli;
    struct nf_http_resp resp;

    if (creq->timer != NULL) {
        event_free(creq->timer);
        creq->timer = NULL;
    }
    if (creq->conn != NULL) {
        creq->conn->cur = NULL;
        creq->conn = NULL;
    }
    TAILQ_REMOVE(&cli->queue, creq, link);
    if (!cli->closing && !TAILQ_EMPTY(&cli->queue))
        event_active(cli->kick, EV_TIMEOUT, 0);

    if (status == 0)
        nf_log_kv(NF_LOG_DEBUG, "http_client_error", "request failed", "host",
                  creq->last != NULL ? creq->last->hosthdr : cli->eps[0].hosthdr, "path",
                  creq->path, "error", error != NULL ? error : "request failed", NULL);
    resp.status = status;
    resp.body = body != NULL ? body : "";
    resp.len = body != NULL ? len : 0;
    resp.error = status == 0 ? (error != NULL ? error : "request failed") : NULL;
    resp.headers = status == 0 ? NULL : headers;
    creq->cb(&resp, creq->arg); /* may free cli */
    creq_free(creq);
}

/* Takes a request off its connection (if any) without evhttp calling us back. */
static void cancel_inflight(struct creq *creq)
{
    struct evhttp_request *ev = creq->ev;

    if (ev == NULL)
        return;
    creq->ev = NULL;
    creq->cancelling = true;
    evhttp_cancel_request(ev); /* resets the connection; error cb sees REQUEST_CANCEL */
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct creq *creq = arg;
    char msg[64];

    cancel_inflight(creq);
    if (creq->error[0] != '\0') /* a failure found while sending, reported from here */
        complete(creq, 0, NULL, 0, creq->error, NULL);
    else {
        snprintf(msg, sizeof(msg), "timeout after %d ms", creq->timeout_ms);
        complete(creq, 0, NULL, 0, msg, NULL);
    }
}

static void on_error(enum evhttp_request_error err, void *arg)
{
    struct creq *creq = arg;
    const char *msg;

    if (creq->cancelling)
        return;
    switch (err) {
    case EVREQ_HTTP_TIMEOUT:
        msg = "timeout";
        break;
    case EVREQ_HTTP_EOF:
        msg = "connection closed";
        break;
    case EVREQ_HTTP_INVALID_HEADER:
        msg = "invalid response";
        break;
    case EVREQ_HTTP_BUFFER_ERROR:
        msg = "connection error";
        break;
    case EVREQ_HTTP_DATA_TOO_LONG:
        msg = "response too large";
        break;
    case EVREQ_HTTP_REQUEST_CANCEL:
    default:
        msg = "request cancelled";
        break;
    }
    snprintf(creq->error, sizeof(creq->error), "%s", msg);
}

/* ---- endpoint health ---------------------------------------------------------------- */

static bool idempotent(enum evhttp_cmd_type type)
{
    return type == EVHTTP_REQ_GET || type == EVHTTP_REQ_HEAD || type == EVHTTP_REQ_PUT ||
           type == EVHTTP_REQ_DELETE || type == EVHTTP_REQ_OPTIONS;
}

static void probe_later(struct endpoint *ep)
{
    struct timeval tv;

    ms_to_tv(ep->backoff_ms, &tv);
    evtimer_add(ep->probe_timer, &tv);
}

static void ep_up(struct endpoint *ep)
{
    if (!ep->down)
        return;
    ep->down = false;
    ep->backoff_ms = 0;
    evtimer_del(ep->probe_timer);
    nf_log_kv(NF_LOG_INFO, "backend_up", "endpoint answers again", "host", ep->hosthdr, NULL);
    if (!TAILQ_EMPTY(&ep->cli->queue))
        event_active(ep->cli->kick, EV_TIMEOUT, 0);
}

/* A transport failure on ep. With one endpoint there is nowhere else to go: not marked. */
static void ep_down(struct endpoint *ep, const char *why)
{
    if (ep->cli->neps < 2 || ep->down)
        return;
    ep->down = true;
    ep->down_since_ms = nf_now_ms();
    ep->backoff_ms = BACKOFF_MIN_MS;
    nf_log_kv(NF_LOG_WARN, "backend_down", "endpoint failed, requests go to the others", "host",
              ep->hosthdr, "error", why, NULL);
    probe_later(ep);
}

static void on_probe(struct evhttp_request *ev, void *arg)
{
    struct endpoint *ep = arg;
    int status = ev != NULL ? evhttp_request_get_response_code(ev) : 0;

    ep->probe = NULL;
    if (status >= 200 && status < 300) {
        ep_up(ep);
        return;
    }
    ep->backoff_ms = ep->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ep->backoff_ms * 2;
    probe_later(ep);
}

/* The backoff is over: GET /healthz on a connection of its own. */
static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    struct endpoint *ep = arg;
    struct evhttp_request *ev;

    if (!ep->down || ep->probe != NULL || ep->cli->closing)
        return;
    if (ep->probe_evcon == NULL) {
        ep->probe_evcon =
            evhttp_connection_base_new(ep->cli->base, NULL, ep->host, (ev_uint16_t)ep->port);
        if (ep->probe_evcon == NULL) {
            probe_later(ep);
            return;
        }
        evhttp_connection_set_retries(ep->probe_evcon, 0);
        evhttp_connection_set_timeout(ep->probe_evcon, PROBE_TIMEOUT_MS / 1000);
    }
    ev = evhttp_request_new(on_probe, ep);
    if (ev == NULL) {
        probe_later(ep);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(ev), "Host", ep->hosthdr);
    ep->probe = ev;
    if (evhttp_make_request(ep->probe_evcon, ev, EVHTTP_REQ_GET, "/healthz") != 0) {
        ep->probe = NULL;
        evhttp_request_free(ev);
        probe_later(ep);
    }
}

static size_t ep_index(const struct endpoint *ep)
{
    return (size_t)(ep - ep->cli->eps);
}

/*
 * A transport failure of creq on its endpoint: marks the endpoint down and, where it is
 * safe and an endpoint it has not tried is left, puts creq back in the queue for another
 * endpoint (true). Nothing was sent when the connect failed (no error text from evhttp).
 */
static bool failover(struct creq *creq)
{
    struct nf_http_client *cli = creq->cli;
    struct endpoint *ep = creq->conn != NULL ? creq->conn->ep : creq->last;
    bool unsent = creq->error[0] == '\0';

    if (ep == NULL)
        return false;
    ep_down(ep, unsent ? "connection refused or failed" : creq->error);
    creq->tried |= 1u << ep_index(ep);
    if (cli->neps < 2 || cli->closing || (!unsent && !idempotent(creq->type)) ||
        creq->tried == (1u << cli->neps) - 1)
        return false;
    if (creq->conn != NULL) {
        creq->conn->cur = NULL;
        creq->conn = NULL;
    }
    creq->error[0] = '\0';
    event_active(cli->kick, EV_TIMEOUT, 0);
    return true;
}

/* An idle connection of ep, or NULL. */
static struct conn *idle_conn(struct endpoint *ep)
{
    for (int i = 0; i < ep->cli->max_conns; i++)
        if (ep->conns[i].cur == NULL)
            return &ep->conns[i];
    return NULL;
}

/*
 * The connection creq goes out on: the next endpoint (round-robin) that is up, not yet
 * tried by creq, with an idle connection. NULL while every such endpoint is busy. When no
 * untried endpoint is up, the one down the longest (it may be back before its probe says so).
 */
static struct conn *pick(struct nf_http_client *cli, const struct creq *creq)
{
    struct conn *fallback = NULL, *c;
    uint64_t oldest = UINT64_MAX;
    bool busy_up = false;

    for (size_t k = 0; k < cli->neps; k++) {
        size_t i = (cli->rr + k) % cli->neps;
        struct endpoint *ep = &cli->eps[i];

        if (creq->tried & (1u << i))
            continue;
        c = idle_conn(ep);
        if (!ep->down) {
            if (c != NULL) {
                cli->rr = (i + 1) % cli->neps;
                return c;
            }
            busy_up = true;
        } else if (c != NULL && ep->down_since_ms < oldest) {
            oldest = ep->down_since_ms;
            fallback = c;
        }
    }
    return busy_up ? NULL : fallback;
}

/* evhttp's done callback: ev NULL (after on_error) or without a status on failure. */
static void on_done(struct evhttp_request *ev, void *arg)
{
    struct creq *creq = arg;
    struct evbuffer *in;
    char *body;
    size_t len;
    int status;

    if (creq->cancelling)
        return;
    creq->ev = NULL;
    status = ev != NULL ? evhttp_request_get_response_code(ev) : 0;
    if (status == 0) {
        if (failover(creq))
            return;
        complete(creq, 0, NULL, 0,
                 creq->error[0] != '\0' ? creq->error : "connection refused or failed", NULL);
        return;
    }
    in = evhttp_request_get_input_buffer(ev);
    len = evbuffer_get_length(in);
    body = nf_xmalloc(len + 1);
    if (len > 0)
        evbuffer_copyout(in, body, len);
    body[len] = '\0';
    complete(creq, status, body, len, NULL, evhttp_request_get_input_headers(ev));
    free(body);
}

/* Sends creq on conn. On a failure found here the deadline timer reports it. */
static void start(struct nf_http_client *cli, struct conn *conn, struct creq *creq)
{
    struct evhttp_request *ev;
    struct evkeyvalq *out;
    struct timeval tv;
    bool has_ctype = false;

    if (conn->evcon == NULL) {
        conn->evcon = evhttp_connection_base_new(cli->base, NULL, conn->ep->host,
                                                 (ev_uint16_t)conn->ep->port);
        if (conn->evcon == NULL)
            goto fail;
        evhttp_connection_set_flags(conn->evcon, EVHTTP_CON_REUSE_CONNECTED_ADDR |
                                                     EVHTTP_CON_READ_ON_WRITE_ERROR);
        evhttp_connection_set_retries(conn->evcon, 0);
    }
    /* evhttp's own inactivity timeout only as a backstop behind our deadline. */
    ms_to_tv(creq->timeout_ms + 1000, &tv);
    evhttp_connection_set_timeout_tv(conn->evcon, &tv);

    ev = evhttp_request_new(on_done, creq);
    if (ev == NULL)
        goto fail;
    evhttp_request_set_error_cb(ev, on_error);
    out = evhttp_request_get_output_headers(ev);
    evhttp_add_header(out, "Host", conn->ep->hosthdr);
    for (size_t i = 0; i < creq->nheaders; i++) {
        if (strcasecmp(creq->headers[2 * i], "Content-Type") == 0)
            has_ctype = true;
        evhttp_add_header(out, creq->headers[2 * i], creq->headers[2 * i + 1]);
    }
    if (creq->has_body) {
        char cl[32];
        if (!has_ctype)
            evhttp_add_header(out, "Content-Type", "application/json");
        evhttp_remove_header(out, "Content-Length");
        snprintf(cl, sizeof(cl), "%zu", creq->len);
        evhttp_add_header(out, "Content-Length", cl);
        evbuffer_add(evhttp_request_get_output_buffer(ev), creq->body, creq->len);
    } else if (creq->type == EVHTTP_REQ_POST || creq->type == EVHTTP_REQ_PUT ||
               creq->type == EVHTTP_REQ_PATCH) {
        evhttp_remove_header(out, "Content-Length");
        evhttp_add_header(out, "Content-Length", "0");
    }

    creq->conn = conn;
    creq->last = conn->ep;
    conn->cur = creq;
    creq->ev = ev;
    if (evhttp_make_request(conn->evcon, ev, creq->type, creq->path) != 0) {
        /* Not queued (and evhttp did not call us): the request is still ours. */
        creq->ev = NULL;
        creq->conn = NULL;
        conn->cur = NULL;
        evhttp_request_free(ev);
        goto fail;
    }
    return;

fail:
    snprintf(creq->error, sizeof(creq->error), "cannot send request");
    /* Reported through the deadline so the callback never runs inside the caller. */
    if (creq->timer != NULL)
        event_active(creq->timer, EV_TIMEOUT, 0);
}

static void really_free(struct nf_http_client *cli)
{
    for (size_t e = 0; e < cli->neps; e++) {
        struct endpoint *ep = &cli->eps[e];

        for (int i = 0; ep->conns != NULL && i < cli->max_conns; i++)
            if (ep->conns[i].evcon != NULL)
                evhttp_connection_free(ep->conns[i].evcon);
        free(ep->conns);
        if (ep->probe_evcon != NULL)
            evhttp_connection_free(ep->probe_evcon); /* frees the probe, no callback */
        if (ep->probe_timer != NULL)
            event_free(ep->probe_timer);
        free(ep->host);
    }
    free(cli->eps);
    if (cli->kick != NULL)
        event_free(cli->kick);
    free(cli);
}

/* Gives waiting requests (oldest first) to idle connections. */
static void dispatch(evutil_socket_t fd, short what, void *arg)
{
    struct nf_http_client *cli = arg;
    struct creq *creq, *next;

    cli->depth++;
    for (creq = TAILQ_FIRST(&cli->queue); creq != NULL && !cli->closing; creq = next) {
        struct conn *conn;

        next = TAILQ_NEXT(creq, link);
        if (creq->conn != NULL || creq->error[0] != '\0')
            continue;
        conn = pick(cli, creq);
        if (conn == NULL)
            continue; /* its endpoints are busy; a later request may go elsewhere */
        start(cli, conn, creq);
        /* start may have completed creq and others through callbacks: rescan. */
        next = TAILQ_FIRST(&cli->queue);
    }
    cli->depth--;
    if (cli->depth == 0 && cli->free_pending) {
        cli->free_pending = false;
        cli->closing = false;
        nf_http_client_free(cli);
    }
}

int nf_http_client_new(struct nf_http_client **out, struct event_base *base, const char *host,
                       int port, int timeout_ms, int max_conns)
{
    return nf_http_client_new_multi(out, base, &host, &port, 1, timeout_ms, max_conns);
}

int nf_http_client_new_multi(struct nf_http_client **out, struct event_base *base,
                             const char *const *hosts, const int *ports, size_t n, int timeout_ms,
                             int max_conns)
{
    struct nf_http_client *cli;

    if (out == NULL || base == NULL || hosts == NULL || ports == NULL || n == 0 ||
        n > NF_HTTP_CLIENT_MAX_ENDPOINTS || max_conns < 0 || timeout_ms < 0)
        return -1;
    for (size_t e = 0; e < n; e++)
        if (hosts[e] == NULL || hosts[e][0] == '\0' || ports[e] <= 0 || ports[e] > 65535)
            return -1;
    cli = nf_xcalloc(1, sizeof(*cli));
    TAILQ_INIT(&cli->queue);
    cli->base = base;
    cli->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    cli->max_conns = max_conns > 0 ? max_conns : 1;
    cli->eps = nf_xcalloc(n, sizeof(*cli->eps));
    cli->neps = n;
    for (size_t e = 0; e < n; e++) {
        struct endpoint *ep = &cli->eps[e];

        ep->cli = cli;
        ep->host = nf_xstrdup(hosts[e]);
        ep->port = ports[e];
        if (strchr(ep->host, ':') != NULL)
            snprintf(ep->hosthdr, sizeof(ep->hosthdr), "[%s]:%d", ep->host, ep->port);
        else
            snprintf(ep->hosthdr, sizeof(ep->hosthdr), "%s:%d", ep->host, ep->port);
        ep->conns = nf_xcalloc((size_t)cli->max_conns, sizeof(*ep->conns));
        for (int i = 0; i < cli->max_conns; i++)
            ep->conns[i].ep = ep;
        ep->probe_timer = evtimer_new(base, on_probe_timer, ep);
        if (ep->probe_timer == NULL) {
            really_free(cli);
            return -1;
        }
    }
    cli->kick = event_new(base, -1, 0, dispatch, cli);
    if (cli->kick == NULL) {
        really_free(cli);
        return -1;
    }
    *out = cli;
    return 0;
}

void nf_http_client_free(struct nf_http_client *cli)
{
    if (cli == NULL || cli->closing)
        return;
    cli->closing = true;
    if (cli->depth > 0) {
        cli->free_pending = true; /* finished by dispatch when it unwinds */
        return;
    }
    cli->depth++;
    while (!TAILQ_EMPTY(&cli->queue)) {
        struct creq *creq = TAILQ_FIRST(&cli->queue);
        cancel_inflight(creq);
        complete(creq, 0, NULL, 0, "client closed", NULL);
    }
    cli->depth--;
    really_free(cli);
}

int nf_http_client_request(struct nf_http_client *cli, const char *method, const char *path,
                           const char *const *headers, const char *body, size_t len, int timeout_ms,
                           nf_http_client_cb cb, void *arg)
{
    struct creq *creq;
    enum evhttp_cmd_type type;
    struct timeval tv;
    size_t nh = 0;

    if (cli == NULL || cli->closing || method == NULL || path == NULL || path[0] != '/' ||
        cb == NULL || timeout_ms < 0 || method_type(method, &type) != 0 || !text_ok(path, false))
        return -1;
    if (headers != NULL) {
        for (; headers[2 * nh] != NULL; nh++) {
            if (headers[2 * nh + 1] == NULL || headers[2 * nh][0] == '\0' ||
                !text_ok(headers[2 * nh], false) || !text_ok(headers[2 * nh + 1], true))
                return -1;
        }
    }

    creq = nf_xcalloc(1, sizeof(*creq));
    creq->cli = cli;
    creq->type = type;
    creq->path = nf_xstrdup(path);
    creq->timeout_ms = timeout_ms > 0 ? timeout_ms : cli->timeout_ms;
    creq->cb = cb;
    creq->arg = arg;
    if (nh > 0) {
        creq->headers = nf_xcalloc(nh * 2, sizeof(char *));
        for (size_t i = 0; i < nh * 2; i++)
            creq->headers[i] = nf_xstrdup(headers[i]);
        creq->nheaders = nh;
    }
    if (body != NULL) {
        creq->has_body = true;
        creq->body = nf_xmalloc(len + 1);
        memcpy(creq->body, body, len);
        creq->body[len] = '\0';
        creq->len = len;
    }
    creq->timer = evtimer_new(cli->base, on_deadline, creq);
    if (creq->timer == NULL) {
        creq_free(creq);
        return -1;
    }
    ms_to_tv(creq->timeout_ms, &tv);
    evtimer_add(creq->timer, &tv);

    TAILQ_INSERT_TAIL(&cli->queue, creq, link);
    event_active(cli->kick, EV_TIMEOUT, 0);
    return 0;
}

const char *nf_http_resp_header(const struct nf_http_resp *resp, const char *name)
{
    if (resp == NULL || resp->headers == NULL || name == NULL)
        return NULL;
    return evhttp_find_header(resp->headers, name);
}
