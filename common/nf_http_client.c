/*
 * nf_http_client: internal HTTP calls to one host:port over a small pool of keep-alive
 * evhttp connections, each request with its own deadline.
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

#define DEFAULT_TIMEOUT_MS 5000

struct conn {
    struct evhttp_connection *evcon; /* created on first use */
    struct creq *cur;                /* request in flight, NULL when idle */
};

struct creq {
    struct nf_http_client *cli;
    TAILQ_ENTRY(creq) link;    /* in cli->queue: every request not completed, FIFO */
    struct conn *conn;         /* NULL while waiting for a connection */
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
    bool cancelling; /* we cancel the evhttp request: ignore its error */
    char error[96];  /* transport error seen by the error callback */
    nf_http_client_cb cb;
    void *arg;
};

struct nf_http_client {
    struct event_base *base;
    char *host;
    int port;
    char hosthdr[300];
    int timeout_ms;
    int max_conns;
    struct conn *conns;
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
        nf_log_kv(NF_LOG_DEBUG, "http_client_error", "request failed", "host", cli->hosthdr, "path",
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
        conn->evcon =
            evhttp_connection_base_new(cli->base, NULL, cli->host, (ev_uint16_t)cli->port);
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
    evhttp_add_header(out, "Host", cli->hosthdr);
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
    for (int i = 0; i < cli->max_conns; i++)
        if (cli->conns[i].evcon != NULL)
            evhttp_connection_free(cli->conns[i].evcon);
    free(cli->conns);
    if (cli->kick != NULL)
        event_free(cli->kick);
    free(cli->host);
    free(cli);
}

/* Gives waiting requests (oldest first) to idle connections. */
static void dispatch(evutil_socket_t fd, short what, void *arg)
{
    struct nf_http_client *cli = arg;
    struct creq *creq, *next;

    cli->depth++;
    for (creq = TAILQ_FIRST(&cli->queue); creq != NULL && !cli->closing; creq = next) {
        struct conn *idle = NULL;

        next = TAILQ_NEXT(creq, link);
        if (creq->conn != NULL || creq->error[0] != '\0')
            continue;
        for (int i = 0; i < cli->max_conns; i++) {
            if (cli->conns[i].cur == NULL) {
                idle = &cli->conns[i];
                break;
            }
        }
        if (idle == NULL)
            break;
        start(cli, idle, creq);
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
    struct nf_http_client *cli;

    if (out == NULL || base == NULL || host == NULL || host[0] == '\0' || port <= 0 ||
        port > 65535 || max_conns < 0 || timeout_ms < 0)
        return -1;
    cli = nf_xcalloc(1, sizeof(*cli));
    TAILQ_INIT(&cli->queue);
    cli->base = base;
    cli->host = nf_xstrdup(host);
    cli->port = port;
    cli->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    cli->max_conns = max_conns > 0 ? max_conns : 1;
    if (strchr(host, ':') != NULL)
        snprintf(cli->hosthdr, sizeof(cli->hosthdr), "[%s]:%d", host, port);
    else
        snprintf(cli->hosthdr, sizeof(cli->hosthdr), "%s:%d", host, port);
    cli->conns = nf_xcalloc((size_t)cli->max_conns, sizeof(*cli->conns));
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
