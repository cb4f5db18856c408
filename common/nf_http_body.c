/*
 * nf_http_body: a request body handed to its handler piece by piece (nf_http.h, "Streamed
 * request bodies"). The bytes stay in the connection's socket buffer (nf_http_conn.c)
 * until the handler takes them, so a paused handler stops the socket being read.
 *
 *   filter: streamed head --> evhttp --> nf_http_on_request --> nf_http_body_claim (req
 *     takes the connection's body; the connection is watched for a close)
 *   handler --> nf_http_req_body_stream --> ["100 Continue"] --> deliver (from the loop):
 *     nf_http_frame_next on the socket buffer --> on_data --> consumed --> ... GO: on,
 *     at most DELIVER_MAX per loop turn; PAUSE: stop until nf_http_req_body_resume;
 *     no bytes: wait (the filter wakes us; the idle timer ends it with TIMEOUT)
 *     --> DONE: the connection reads the next head --> on_end(COMPLETE)
 *   client gone (evhttp's close callback) --> on_end(GONE), even while paused
 *   the handler answers first --> nf_http_body_answering: "Connection: close", the rest
 *     is dropped; nf_http_req_done --> nf_http_body_release: no callback any more
 *
 * A body evhttp buffered (an ordinary route, a connection in pass-through) is delivered
 * the same way from memory.
 *
 * Lifetime: the body belongs to its request (req->stream) and goes with it; if that happens
 * inside one of the handler's callbacks it is marked dead and freed when the callback
 * returns. b->conn and conn->stream are set and cleared together.
 */
#include "nf_http_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "nf_log.h"
#include "nf_mem.h"

#define DELIVER_MAX ((size_t)256 * 1024) /* body bytes handed over per loop turn */

struct nf_http_body {
    struct nf_http_req *req;   /* NULL once the request is answered */
    struct nf_http_conn *conn; /* while its bytes come from the connection */
    nf_http_body_data_fn on_data;
    nf_http_body_end_fn on_end;
    void *arg;
    uint64_t max; /* 0: no bound */
    uint64_t got; /* bytes delivered */
    long long declared;
    struct event *ev;   /* delivery, activated */
    struct event *idle; /* no byte from the client for timeout_s */
    struct timeval idle_tv;
    int end;                 /* the end waiting to be delivered, -1 while none */
    const char *buf;         /* a buffered body (owned by req) */
    size_t buf_len, buf_off; /* its length and what was delivered */
    bool started;            /* nf_http_req_body_stream was called */
    bool paused;             /* on_data answered PAUSE, no resume yet */
    bool unpause;            /* resume came inside on_data: its PAUSE does not count */
    bool wire_done;          /* nothing more of the body on the connection */
    bool ended;              /* on_end delivered, or the request answered */
    bool in_cb;              /* one of the handler's callbacks runs */
    bool dead;               /* released during a callback: free after it */
    bool continue_wanted;    /* send "100 Continue" when the handler starts */
};

static void deliver(evutil_socket_t fd, short what, void *arg);
static void on_idle(evutil_socket_t fd, short what, void *arg);

static struct nf_http_body *body_new(struct nf_http_req *req, struct event_base *base)
{
    struct nf_http_body *b = nf_xcalloc(1, sizeof(*b));

    b->req = req;
    b->end = -1;
    b->declared = -1;
    b->ev = event_new(base, -1, 0, deliver, b);
    b->idle = evtimer_new(base, on_idle, b);
    if (b->ev == NULL || b->idle == NULL)
        abort();
    if (req->srv != NULL)
        b->idle_tv.tv_sec = req->srv->limits.timeout_s;
    return b;
}

static void body_free(struct nf_http_body *b)
{
    event_free(b->ev);
    event_free(b->idle);
    free(b);
}

/* b no longer reads from its connection (which stays as it is). */
static void detach(struct nf_http_body *b)
{
    if (b->conn != NULL) {
        b->conn->stream = NULL;
        b->conn = NULL;
    }
}

static void wake(struct nf_http_body *b)
{
    if (b->started && !b->ended)
        event_active(b->ev, EV_TIMEOUT, 1);
}

/* An end other than COMPLETE: no more reading; the connection keeps the unread bytes
 * (the client waits) until the answer drops them. */
static void stop_reading(struct nf_http_body *b, enum nf_http_body_end how)
{
    detach(b);
    if (b->end < 0 || b->end == NF_HTTP_BODY_COMPLETE)
        b->end = (int)how;
}

/* ---- from the connection ------------------------------------------------------------- */

bool nf_http_body_claim(struct nf_http_req *req, struct nf_http_conn *conn, const char *marker)
{
    struct evhttp_connection *evcon = nf_http_req_conn(req);
    struct nf_http_body *b;

    if (conn->state != NF_HTTP_CONN_BODY || conn->stream != NULL || req->stream != NULL ||
        evcon == NULL || req->srv == NULL || strcmp(marker, conn->token) != 0)
        return false;
    b = body_new(req, req->srv->base);
    b->conn = conn;
    conn->stream = b;
    b->max = conn->max_body;
    b->declared = conn->body.framing == NF_HTTP_FRAME_LENGTH ? (long long)conn->declared : -1;
    b->continue_wanted = conn->expect_continue;
    if (b->max > 0 && conn->declared > b->max)
        stop_reading(b, NF_HTTP_BODY_TOO_LARGE); /* said upfront: not a byte is read */
    req->stream = b;
    /* read on while the handler works, to hear of a close (and to feed the body) */
    nf_http_watch_close(req, evcon);
    return true;
}

void nf_http_body_wake(struct nf_http_body *b)
{
    if (!b->paused)
        wake(b);
}

void nf_http_body_gone(struct nf_http_body *b)
{
    detach(b);
    if (!b->ended && (b->end < 0 || b->end == NF_HTTP_BODY_COMPLETE))
        b->end = NF_HTTP_BODY_GONE; /* even after the last byte: nobody hears the answer */
    wake(b);
}

void nf_http_body_answering(struct nf_http_req *req)
{
    struct nf_http_body *b = req->stream;
    struct evkeyvalq *out;
    const char *conn_hdr;

    if (b == NULL || b->wire_done || req->ev == NULL)
        return;
    out = evhttp_request_get_output_headers(req->ev);
    conn_hdr = evhttp_find_header(out, "Connection");
    if (conn_hdr == NULL || strcasecmp(conn_hdr, "close") != 0) {
        evhttp_remove_header(out, "Connection");
        evhttp_add_header(out, "Connection", "close");
    }
    detach(b);
    b->wire_done = true;
    if (req->conn != NULL)
        nf_http_conn_discard(req->conn);
}

void nf_http_body_release(struct nf_http_req *req)
{
    struct nf_http_body *b = req->stream;

    if (b == NULL)
        return;
    req->stream = NULL;
    detach(b);
    b->req = NULL;
    b->ended = true;
    if (b->in_cb)
        b->dead = true;
    else
        body_free(b);
}

/* ---- delivery ----------------------------------------------------------------------- */

/* The next data span (or NEED / DONE / BAD), from the connection or the buffer. */
static int next_span(struct nf_http_body *b, const char **p, size_t *n)
{
    if (b->conn != NULL)
        return nf_http_frame_next(&b->conn->body, bufferevent_get_input(b->conn->under), p, n);
    if (b->buf_off >= b->buf_len)
        return NF_HTTP_FRAME_DONE;
    *p = b->buf + b->buf_off;
    *n = b->buf_len - b->buf_off;
    return NF_HTTP_FRAME_DATA;
}

static void consume(struct nf_http_body *b, size_t n)
{
    if (b->conn != NULL)
        nf_http_frame_consume(&b->conn->body, bufferevent_get_input(b->conn->under), n);
    else
        b->buf_off += n;
    b->got += n;
}

/* The last byte was read: the connection goes on with the next request. */
static void wire_done(struct nf_http_body *b)
{
    struct nf_http_conn *conn = b->conn;

    b->wire_done = true;
    detach(b);
    if (conn != NULL)
        nf_http_conn_body_done(conn);
    if (b->end < 0)
        b->end = NF_HTTP_BODY_COMPLETE;
}

/* Delivers the end (on_end once); the body may be freed on return. */
static void finish(struct nf_http_body *b)
{
    enum nf_http_body_end how = (enum nf_http_body_end)b->end;

    b->ended = true;
    evtimer_del(b->idle);
    detach(b);
    b->in_cb = true;
    b->on_end(how, b->arg);
    b->in_cb = false;
    if (b->dead)
        body_free(b);
}

static void idle_arm(struct nf_http_body *b)
{
    if (b->conn != NULL && b->idle_tv.tv_sec > 0)
        evtimer_add(b->idle, &b->idle_tv);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct nf_http_body *b = arg;

    if (b->ended || b->paused || b->conn == NULL)
        return;
    stop_reading(b, NF_HTTP_BODY_TIMEOUT);
    deliver(-1, 0, b);
}

/* The delivery event: hands over what is there, as described at the top. */
static void deliver(evutil_socket_t fd, short what, void *arg)
{
    struct nf_http_body *b = arg;
    size_t budget = DELIVER_MAX, n = 0;
    const char *p = NULL;
    int rc, go;

    if (b->ended || !b->started)
        return;
    for (;;) {
        /* an error end is told at once; COMPLETE waits for a resume */
        if (b->end >= 0 && (b->end != NF_HTTP_BODY_COMPLETE || !b->paused)) {
            finish(b);
            return;
        }
        if (b->paused) {
            evtimer_del(b->idle);
            return;
        }
        rc = next_span(b, &p, &n);
        if (rc == NF_HTTP_FRAME_NEED) {
            idle_arm(b);
            return;
        }
        if (rc == NF_HTTP_FRAME_BAD) {
            stop_reading(b, NF_HTTP_BODY_MALFORMED);
            continue;
        }
        if (rc == NF_HTTP_FRAME_DONE) {
            wire_done(b);
            continue;
        }
        if (b->max > 0 && b->got + n > b->max) {
            stop_reading(b, NF_HTTP_BODY_TOO_LARGE);
            continue;
        }
        if (budget == 0) {
            event_active(b->ev, EV_TIMEOUT, 1); /* the rest next turn */
            return;
        }
        if (n > budget)
            n = budget;
        b->in_cb = true;
        go = b->on_data(p, n, b->arg);
        b->in_cb = false;
        if (b->dead) {
            body_free(b); /* answered inside on_data */
            return;
        }
        consume(b, n);
        budget -= n;
        idle_arm(b);
        if (go == NF_HTTP_BODY_PAUSE && !b->unpause)
            b->paused = true;
        b->unpause = false;
    }
}

/* ---- the handler's calls ------------------------------------------------------------ */

void nf_http_req_body_stream(struct nf_http_req *req, nf_http_body_data_fn on_data,
                             nf_http_body_end_fn on_end, void *arg)
{
    struct nf_http_body *b = req->stream;

    if (b == NULL) { /* evhttp buffered it */
        struct event_base *base = req->srv != NULL ? req->srv->base : NULL;
        size_t len = 0;

        if (base == NULL) { /* orphaned by nf_http_server_free: nothing can run */
            nf_log_kv(NF_LOG_WARN, "http_body_orphaned", "body stream after server free",
                      "request_id", req->id, NULL);
            return;
        }
        b = body_new(req, base);
        b->buf = nf_http_req_body(req, &len);
        b->buf_len = len;
        b->declared = (long long)len;
        b->wire_done = true;
        req->stream = b;
    }
    if (b->started) {
        nf_log_kv(NF_LOG_ERROR, "http_body_misuse", "body stream started twice", "request_id",
                  req->id, NULL);
        return;
    }
    b->started = true;
    b->on_data = on_data;
    b->on_end = on_end;
    b->arg = arg;
    if (b->continue_wanted && b->conn != NULL && b->end < 0 && b->conn->bev != NULL &&
        req->srv != NULL) {
        req->srv->replying = true;
        evbuffer_add(bufferevent_get_output(b->conn->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        req->srv->replying = false;
    }
    b->continue_wanted = false;
    wake(b);
}

void nf_http_req_body_resume(struct nf_http_req *req)
{
    struct nf_http_body *b = req->stream;

    if (b == NULL || b->ended)
        return;
    if (b->in_cb) {
        b->unpause = true;
        return;
    }
    if (!b->paused)
        return;
    b->paused = false;
    wake(b);
}

long long nf_http_req_body_length(const struct nf_http_req *req)
{
    return req->stream != NULL ? req->stream->declared : -1;
}
