/*
 * nf_http_conn: each accepted connection's bufferevent. evhttp (libevent 2.1.12) reads a
 * whole request body into memory before it calls us, and has no hook before that; so
 * evhttp does not get the socket's bufferevent but a filter over it (evhttp_set_bevcb),
 * whose input side reads the request framing itself:
 *
 *   socket --> under (socket bufferevent; reading stops at NF_HTTP_CONN_READ_MAX unread)
 *     --> conn_in, per request head:
 *         ordinary request: head and body passed on to evhttp as they are (a client's
 *           X-Nf-Body-Stream header removed)
 *         streaming route:  head passed on with "Content-Length: 0" and the marker
 *           X-Nf-Body-Stream: <token>, so evhttp dispatches it at once; the body stays in
 *           under's input, where nf_http_body.c reads it for the handler (BODY) and then
 *           the next head is read
 *         anything unusual (a chunked body of an ordinary route, a head we cannot follow):
 *           every byte passed on as it is, for good (TRANSPARENT); streaming routes then
 *           get evhttp's buffered body
 *     --> bev (the filter evhttp reads)
 *
 * The output side is ours too: evhttp writes its answers into bev's output and we write
 * that buffer to the socket (the writer, an EV_WRITE event), telling evhttp "written"
 * (its write callback) only once every byte is in the kernel. A filter's own output path
 * would tell it as soon as the bytes moved to the socket's bufferevent, and evhttp then
 * shuts the socket down under the bytes of a "Connection: close" answer. The queue in
 * bev's output is what nf_http_stream_pending measures.
 *
 * Early answers: a request answered before its streamed body was read is answered with
 * "Connection: close" and the rest of the body is dropped (DISCARD). When evhttp frees the
 * connection we keep the socket (our reference on under) and read and drop what the client
 * still sends until it closes or LINGER_S pass (a lingering close): a client still sending
 * its body then reads the answer instead of a reset.
 *
 * Lifetime: conn is the filter's context and goes with it (conn_free, from the filter's
 * finalizer), or after its lingering close. The server finds a connection from its
 * bufferevent through srv->by_fd.
 */
#include "nf_http_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/util.h>

#include "nf_crypto.h"
#include "nf_mem.h"
#include "nf_metrics.h"

#define LINGER_S 5 /* the longest a lingering close reads after an early answer */

/* Whether evhttp still has the filter: freeing it clears its callbacks. */
static bool alive(const struct nf_http_conn *conn)
{
    return conn->bev != NULL && conn->bev->errorcb != NULL;
}

/* The largest head we follow: evhttp's own cap (nf_http.c sets it so). */
static size_t head_max(const struct nf_http_server *srv)
{
    return srv->limits.max_headers * 2 + 1024;
}

/* ---- the writer --------------------------------------------------------------------- */

/* Sets bev's timeouts again: the write timeout restarts (progress) or, with nothing
 * queued, stops, as a socket bufferevent's does. */
static void timeouts_again(struct bufferevent *bev)
{
    struct timeval r = bev->timeout_read, w = bev->timeout_write;

    bufferevent_set_timeouts(bev, evutil_timerisset(&r) ? &r : NULL,
                             evutil_timerisset(&w) ? &w : NULL);
}

/* The writer: bev's output to the socket; then evhttp's write callback once all of it is
 * in the kernel, and a streaming request's drain callback when the queue is low. */
static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct nf_http_conn *conn = arg;
    struct bufferevent *bev = conn->bev;
    struct evbuffer *out;
    struct nf_http_req *req;

    if (!alive(conn))
        return;
    out = bufferevent_get_output(bev);
    if (conn->write_failed) { /* told evhttp already; what comes after goes nowhere */
        evbuffer_drain(out, evbuffer_get_length(out));
        return;
    }
    if (evbuffer_get_length(out) > 0) {
        if (evbuffer_write(out, conn->fd) < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
            errno != EINTR) {
            conn->write_failed = true;
            evbuffer_drain(out, evbuffer_get_length(out));
            /* evhttp's event callback: the client is gone (may free the connection) */
            bufferevent_trigger_event(bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, 0);
            return;
        }
        timeouts_again(bev);
    }
    if (evbuffer_get_length(out) > 0)
        event_add(conn->wev, NULL);
    else if (bev->enabled & EV_WRITE)
        bufferevent_trigger(bev, EV_WRITE, 0); /* "written": may free the connection */
    req = conn->req;
    if (alive(conn) && req != NULL && req->on_drain != NULL &&
        evbuffer_get_length(out) <= req->drain_low) {
        void (*fn)(struct nf_http_req *, void *) = req->on_drain;

        req->on_drain = NULL;
        fn(req, req->on_drain_arg); /* last: it may end the answer */
    }
}

/* Output buffer callback: something was queued, write it from the loop. */
static void on_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);

/* Learns the socket (evhttp sets it after nf_http_conn_new) and makes the writer. */
static void bind_fd(struct nf_http_conn *conn)
{
    struct nf_http_server *srv = conn->srv;
    evutil_socket_t fd;

    if (conn->fd >= 0 || srv == NULL)
        return;
    fd = bufferevent_getfd(conn->under);
    if (fd < 0)
        return;
    conn->fd = fd;
    if ((size_t)fd >= srv->nby_fd) {
        size_t n = (size_t)fd + 64;
        srv->by_fd = nf_xrealloc(srv->by_fd, n * sizeof(struct nf_http_conn *));
        memset(srv->by_fd + srv->nby_fd, 0, (n - srv->nby_fd) * sizeof(struct nf_http_conn *));
        srv->nby_fd = n;
    }
    srv->by_fd[fd] = conn;
    conn->wev = event_new(srv->base, fd, EV_WRITE, on_writable, conn);
    if (conn->wev == NULL)
        abort();
}

static void on_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct nf_http_conn *conn = arg;

    if (info->n_added == 0)
        return;
    bind_fd(conn);
    if (conn->wev != NULL && !event_pending(conn->wev, EV_WRITE, NULL))
        event_add(conn->wev, NULL);
}

void nf_http_conn_flush(struct nf_http_conn *conn)
{
    if (alive(conn) && conn->fd >= 0 && !conn->write_failed)
        (void)evbuffer_write(bufferevent_get_output(conn->bev), conn->fd);
}

size_t nf_http_conn_pending(const struct nf_http_conn *conn)
{
    return alive(conn) ? evbuffer_get_length(bufferevent_get_output(conn->bev)) : 0;
}

void nf_http_conn_wake_writer(struct nf_http_conn *conn)
{
    if (conn->wev != NULL)
        event_active(conn->wev, EV_WRITE, 1);
}

/* Never moves bytes: the writer above owns the output side. */
static enum bufferevent_filter_result conn_out(struct evbuffer *src, struct evbuffer *dst,
                                               ev_ssize_t lim, enum bufferevent_flush_mode mode,
                                               void *ctx)
{
    return BEV_NEED_MORE;
}

/* ---- the reader --------------------------------------------------------------------- */

/*
 * A complete head at the front of src goes to dst (rewritten where needed) and sets what
 * follows it. 0: more bytes needed; 1: not a head we follow (the connection went
 * TRANSPARENT, nothing moved); 2: the head went to dst.
 */
static int take_head(struct nf_http_conn *conn, struct evbuffer *src, struct evbuffer *dst)
{
    struct nf_http_server *srv = conn->srv;
    size_t avail = evbuffer_get_length(src), max = head_max(srv);
    size_t n = avail < max + 1 ? avail : max + 1, olen;
    const char *p = (const char *)evbuffer_pullup(src, (ev_ssize_t)n);
    const struct route *rt;
    struct nf_http_head h;
    char *out;
    int rc = p != NULL ? nf_http_head_parse(p, n, max, &h) : -1;

    if (rc == 0)
        return 0;
    if (rc < 0) {
        conn->state = NF_HTTP_CONN_TRANSPARENT;
        return 1;
    }
    rt = h.framing != NF_HTTP_FRAME_NONE
             ? nf_http_route_stream_of(srv, h.method, h.target, h.target_len)
             : NULL; /* no body: nothing to stream, evhttp's empty one will do */
    if (rt != NULL) {
        nf_crypto_token(16, conn->token, sizeof(conn->token));
        out = nf_http_head_rewrite(p, &h, conn->token, &olen);
        evbuffer_add(dst, out, olen);
        free(out);
        evbuffer_drain(src, h.len);
        conn->state = NF_HTTP_CONN_BODY;
        nf_http_frame_init(&conn->body, h.framing, h.length, srv->limits.max_headers);
        conn->declared = h.framing == NF_HTTP_FRAME_LENGTH ? h.length : 0;
        conn->expect_continue = h.expect_continue;
        conn->max_body = rt->max_body;
        conn->stream = NULL; /* the request claims it when evhttp dispatches it */
        return 2;
    }
    if (h.has_marker) {
        out = nf_http_head_rewrite(p, &h, NULL, &olen);
        evbuffer_add(dst, out, olen);
        free(out);
        evbuffer_drain(src, h.len);
    } else {
        evbuffer_remove_buffer(src, dst, h.len);
    }
    switch (h.framing) {
    case NF_HTTP_FRAME_LENGTH:
        conn->state = NF_HTTP_CONN_PASS;
        conn->left = h.length;
        break;
    case NF_HTTP_FRAME_CHUNKED:
        conn->state = NF_HTTP_CONN_TRANSPARENT; /* evhttp reads it; we stop following */
        break;
    default:
        conn->state = NF_HTTP_CONN_HEAD;
        break;
    }
    return 2;
}

/*
 * The filter's input side (src: the socket's bytes, dst: what evhttp reads, lim: room
 * left under dst's high watermark, -1 for none). BEV_OK when something reached dst.
 */
static enum bufferevent_filter_result conn_in(struct evbuffer *src, struct evbuffer *dst,
                                              ev_ssize_t lim, enum bufferevent_flush_mode mode,
                                              void *ctx)
{
    struct nf_http_conn *conn = ctx;
    size_t room = lim < 0 ? SIZE_MAX : (size_t)lim, len, n;
    bool moved = false;

    bind_fd(conn);
    while ((len = evbuffer_get_length(src)) > 0 && conn->srv != NULL) {
        switch (conn->state) {
        case NF_HTTP_CONN_TRANSPARENT:
        case NF_HTTP_CONN_PASS:
            n = len < room ? len : room;
            if (conn->state == NF_HTTP_CONN_PASS && n > conn->left)
                n = (size_t)conn->left;
            if (n == 0)
                goto out;
            evbuffer_remove_buffer(src, dst, n);
            room -= n;
            moved = true;
            if (conn->state == NF_HTTP_CONN_PASS && (conn->left -= n) == 0)
                conn->state = NF_HTTP_CONN_HEAD;
            break;
        case NF_HTTP_CONN_HEAD:
            if (room == 0)
                goto out;
            switch (take_head(conn, src, dst)) {
            case 0:
                goto out;
            case 2:
                moved = true;
                break;
            default:
                break;
            }
            break;
        case NF_HTTP_CONN_BODY:
            if (conn->stream != NULL)
                nf_http_body_wake(conn->stream);
            goto out;
        case NF_HTTP_CONN_DISCARD:
            evbuffer_drain(src, len);
            goto out;
        }
    }
out:
    return moved ? BEV_OK : BEV_NEED_MORE;
}

/* Re-runs the input side from the loop: the next head after a streamed body, or the
 * bytes an early answer drops. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct nf_http_conn *conn = arg;

    if (!alive(conn))
        return;
    if (conn->state == NF_HTTP_CONN_DISCARD) {
        struct evbuffer *in = bufferevent_get_input(conn->under);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    bufferevent_trigger(conn->under, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
}

void nf_http_conn_body_done(struct nf_http_conn *conn)
{
    conn->state = NF_HTTP_CONN_HEAD;
    conn->stream = NULL;
    event_active(conn->kick, EV_TIMEOUT, 1);
}

void nf_http_conn_discard(struct nf_http_conn *conn)
{
    conn->state = NF_HTTP_CONN_DISCARD;
    conn->stream = NULL;
    event_active(conn->kick, EV_TIMEOUT, 1);
}

/* ---- lifetime ----------------------------------------------------------------------- */

/* Drops our reference to the socket (closing it if it was the last) and frees conn. */
static void conn_end(struct nf_http_conn *conn)
{
    if (conn->srv != NULL) {
        LIST_REMOVE(conn, link);
        if (conn->fd >= 0 && (size_t)conn->fd < conn->srv->nby_fd &&
            conn->srv->by_fd[conn->fd] == conn)
            conn->srv->by_fd[conn->fd] = NULL;
    }
    if (conn->linger != NULL) {
        event_free(conn->linger);
        bufferevent_free(conn->under); /* our callbacks off, the last reference */
    } else {
        bufferevent_decref(conn->under); /* the filter's finalizer drops the last one */
    }
    event_free(conn->kick);
    free(conn);
}

static void linger_read(struct bufferevent *under, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(under);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void linger_event(struct bufferevent *under, short what, void *arg)
{
    conn_end(arg); /* EOF or an error: the client is done */
}

static void linger_timeout(evutil_socket_t fd, short what, void *arg)
{
    conn_end(arg);
}

/* evhttp freed the connection after an early answer (its socket shut for writing): read
 * and drop what the client still sends until it closes or LINGER_S pass. */
static void linger_start(struct nf_http_conn *conn)
{
    struct timeval tv = {LINGER_S, 0};
    struct evbuffer *in = bufferevent_get_input(conn->under);

    conn->linger = evtimer_new(conn->srv->base, linger_timeout, conn);
    if (conn->linger == NULL)
        abort();
    evtimer_add(conn->linger, &tv);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_setcb(conn->under, linger_read, NULL, linger_event, conn);
    bufferevent_setwatermark(conn->under, EV_READ, 0, 0);
    bufferevent_enable(conn->under, EV_READ);
}

/* The filter's context destructor (its finalizer: evhttp freed the connection). */
static void conn_free(void *ctx)
{
    struct nf_http_conn *conn = ctx;
    bool linger = conn->state == NF_HTTP_CONN_DISCARD && conn->srv != NULL && conn->fd >= 0 &&
                  !conn->write_failed;

    conn->bev = NULL;
    if (conn->wev != NULL) {
        event_free(conn->wev);
        conn->wev = NULL;
    }
    event_del(conn->kick);
    if (conn->stream != NULL) {
        nf_http_body_gone(conn->stream);
        conn->stream = NULL;
    }
    if (conn->req != NULL) {
        conn->req->conn = NULL;
        conn->req = NULL;
    }
    if (linger)
        linger_start(conn);
    else
        conn_end(conn);
}

struct bufferevent *nf_http_conn_new(struct event_base *base, void *arg)
{
    struct nf_http_server *srv = arg;
    struct nf_http_conn *conn = nf_xcalloc(1, sizeof(*conn));
    struct bufferevent *under, *bev;

    under = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (under == NULL)
        abort();
    bev = bufferevent_filter_new(under, conn_in, conn_out, BEV_OPT_CLOSE_ON_FREE, conn_free, conn);
    if (bev == NULL)
        abort();
    conn->srv = srv;
    conn->bev = bev;
    conn->under = under;
    conn->fd = -1;
    conn->kick = event_new(base, -1, 0, on_kick, conn);
    if (conn->kick == NULL)
        abort();
    bufferevent_incref(under);            /* kept for a lingering close */
    bufferevent_disable(under, EV_WRITE); /* the writer writes the socket */
    bufferevent_setwatermark(under, EV_READ, 0, NF_HTTP_CONN_READ_MAX);
    evbuffer_add_cb(bufferevent_get_output(bev), nf_http_on_output, srv);
    evbuffer_add_cb(bufferevent_get_output(bev), on_output_added, conn);
    LIST_INSERT_HEAD(&srv->conns, conn, link);
    if (srv->m_conns != NULL)
        nf_metrics_counter_add(srv->m_conns, 1);
    return bev;
}

struct nf_http_conn *nf_http_conn_find(struct nf_http_server *srv, struct bufferevent *bev)
{
    struct nf_http_conn *conn;
    evutil_socket_t fd;

    if (bev == NULL)
        return NULL;
    fd = bufferevent_getfd(bev);
    if (fd >= 0 && (size_t)fd < srv->nby_fd && srv->by_fd[fd] != NULL && srv->by_fd[fd]->bev == bev)
        return srv->by_fd[fd];
    LIST_FOREACH(conn, &srv->conns, link)
    {
        if (conn->bev == bev) {
            bind_fd(conn);
            return conn;
        }
    }
    return NULL;
}

void nf_http_conns_release(struct nf_http_server *srv)
{
    struct nf_http_conn *conn;

    while ((conn = LIST_FIRST(&srv->conns)) != NULL) {
        LIST_REMOVE(conn, link);
        conn->srv = NULL;
        if (conn->linger != NULL)
            conn_end(conn);
    }
    free(srv->by_fd);
    srv->by_fd = NULL;
    srv->nby_fd = 0;
}
