#pragma once
/*
 * nf_http internals: the state the server's files share. Not for services, which use
 * nf_http.h only.
 *
 *   nf_http.c        the server: listening socket, new / stop / free, built-in /healthz
 *                    /readyz /metrics, request metrics
 *   nf_http_route.c  the route table, request target parsing, dispatch (404, 405 + Allow)
 *   nf_http_req.c    request state and lifetime, request ids, accessors, body and JSON
 *   nf_http_reply.c  answers: JSON, raw, errors, streaming; evhttp's own errors as JSON
 *   nf_http_conn.c   each connection's bufferevent: a filter in front of evhttp that
 *                    streams request bodies of streaming routes past it, and the writer
 *                    of its answers (backpressure, lingering close)
 *   nf_http_frame.c  request framing, pure: heads, their rewriting, de-chunking
 *   nf_http_body.c   streamed request bodies handed to the handler (pause, resume, ends)
 *
 *   socket --> conn filter (nf_http_conn.c: heads passed on, streamed bodies held back)
 *     --> evhttp --> nf_http_on_request (route) --> nf_http_req_new (req) --> match
 *     --> handler(req, arg) [--> nf_http_req_body_stream: body bytes from the connection]
 *     ... now or later ... nf_http_reply_* (reply) --> nf_http_req_done (req): metrics,
 *     access log, free
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "nf_http.h"

#define NF_HTTP_REQ_ID_MAX 64
/* The header the connection filter adds to a request whose body it streams (and strips
 * from every request that brings its own). */
#define NF_HTTP_BODY_MARKER "X-Nf-Body-Stream"
/* Bytes read from a socket and not yet taken (by evhttp or a body's handler): reading
 * stops there until they are. */
#define NF_HTTP_CONN_READ_MAX ((size_t)256 * 1024)

struct nf_http_conn;
struct nf_http_body;

struct nf_counter;
struct nf_histogram;

struct route {
    enum evhttp_cmd_type method;
    const char *method_name; /* static string */
    char *pattern;           /* as registered; also the metrics label */
    size_t nsegs;
    char **segs; /* literal segment, or the parameter name */
    bool *is_param;
    nf_http_handler fn;
    void *arg;
    struct nf_histogram *duration; /* owned by the metrics registry; NULL without one */
    bool stream;                   /* nf_http_route_stream: the body is streamed */
    uint64_t max_body;             /* stream: the body limit (0: none) */
};

struct kv {
    char *name;
    char *value;
};

struct nf_http_server {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound; /* NULL once stopped */
    int port;
    struct nf_http_limits limits;
    struct nf_metrics *metrics; /* not owned; may be NULL */
    struct nf_counter *m_conns;
    struct nf_histogram *m_unmatched;
    struct route **routes;
    size_t nroutes;
    nf_http_ready_fn ready_fn;
    void *ready_arg;
    LIST_HEAD(, nf_http_req) reqs; /* requests not answered yet */
    size_t inflight;
    bool stopped;
    bool replying; /* one of our answers is being queued: on_output leaves it alone */
    LIST_HEAD(, nf_http_conn) conns; /* every connection (lingering ones too) */
    struct nf_http_conn **by_fd;     /* connections by socket, for lookups */
    size_t nby_fd;
    bool has_stream_routes;
};

struct nf_http_req {
    struct nf_http_server *srv;    /* NULL once orphaned by nf_http_server_free */
    LIST_ENTRY(nf_http_req) link;  /* in srv->reqs while srv is set */
    struct evhttp_request *ev;     /* NULL once evhttp freed it (or will) */
    const char *method;            /* static string */
    char *path;                    /* as received, without the query */
    char *route;                   /* matched pattern (copy); NULL when unmatched */
    struct nf_histogram *duration; /* the route's histogram */
    struct kv *params;
    size_t nparams;
    struct kv *query;
    size_t nquery;
    char *query_raw;
    struct evkeyvalq headers; /* copy of the request headers, made on first use */
    bool headers_copied;
    char *body; /* NUL-terminated copy, made on first use */
    size_t body_len;
    cJSON *json;
    void *data;
    bool gone;     /* the client closed the connection */
    bool watching; /* reading the waiting connection to notice a close */
    bool streaming;
    bool close_notified;
    void (*on_close)(struct nf_http_req *, void *);
    void *on_close_arg;
    struct nf_http_conn *conn;                      /* its connection while both live, else NULL */
    struct nf_http_body *stream;                    /* a streamed body (nf_http_body.c), or NULL */
    void (*on_drain)(struct nf_http_req *, void *); /* nf_http_stream_on_drain */
    void *on_drain_arg;
    size_t drain_low;
    int status;
    struct timespec start;
    char id[NF_HTTP_REQ_ID_MAX + 1];
    char peer[64];
};

/* ---- nf_http.c ---------------------------------------------------------------------- */

/* Counts an answer in nf_http_requests_total{route,method,status}; no-op without metrics. */
void nf_http_count_request(struct nf_http_server *srv, const char *route, const char *method,
                           int status);
/* The duration histogram of a route label; NULL without metrics (owned by the registry). */
struct nf_histogram *nf_http_route_histogram(struct nf_http_server *srv, const char *route);

/* ---- nf_http_route.c ---------------------------------------------------------------- */

/* evhttp's callback for every request: parses the target, matches a route, calls it. */
void nf_http_on_request(struct evhttp_request *ev, void *arg);
/* Frees a route made by nf_http_route; NULL is fine. */
void nf_http_route_free(struct route *rt);
/* "GET", "POST", ... (a static string), "OTHER" for a method we do not name. */
const char *nf_http_method_name(enum evhttp_cmd_type type);

/* ---- nf_http_req.c ------------------------------------------------------------------ */

/*
 * The state of a request evhttp has just read: request id, peer, close callback, and
 * its place in srv's list of unanswered requests. Freed by nf_http_req_done.
 */
struct nf_http_req *nf_http_req_new(struct nf_http_server *srv, struct evhttp_request *ev);
/* Before the evhttp request goes away: keep what the accessors hand out. */
void nf_http_req_keep_copies(struct nf_http_req *req);
/* Takes req off its server's list of unanswered requests (none when orphaned). */
void nf_http_req_unlink(struct nf_http_req *req);
/* The answer is queued (or dropped): metrics, access log, free req. */
void nf_http_req_done(struct nf_http_req *req);
/* Connection of a request still able to take an answer, or NULL. */
struct evhttp_connection *nf_http_req_conn(const struct nf_http_req *req);
/* A fresh "req_<ULID>" into out ("req_unknown" when none can be made). */
void nf_http_new_request_id(char *out, size_t outlen);

/* Streaming route of the best match for method (a name) and target (as in the request
 * line, query and all); NULL when that route is not a streaming one. */
const struct route *nf_http_route_stream_of(const struct nf_http_server *srv, const char *method,
                                            const char *target, size_t target_len);

/* ---- nf_http_reply.c ---------------------------------------------------------------- */

/* The reason phrase of a status we use; NULL lets evhttp pick one. */
const char *nf_http_reason_phrase(int status);
/* {"error": {"code", "message", "param"?, "request_id"}}; param may be NULL. Caller owns. */
cJSON *nf_http_error_body(const char *code, const char *param, const char *msg, const char *id);
/* Output buffer callback of every server connection (arg: the server): swaps evhttp's
 * own HTML error answers for our JSON error shape. */
void nf_http_on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
/* Reads the connection of a waiting request to notice a close (see nf_http_reply.c). */
void nf_http_watch_close(struct nf_http_req *req, struct evhttp_connection *evcon);

/* ---- nf_http_frame.c ---------------------------------------------------------------- */

enum nf_http_framing {
    NF_HTTP_FRAME_NONE,    /* no body */
    NF_HTTP_FRAME_LENGTH,  /* Content-Length bytes */
    NF_HTTP_FRAME_CHUNKED, /* Transfer-Encoding: chunked */
};

/* A request head as the connection filter reads it; pointers into the parsed bytes. */
struct nf_http_head {
    size_t len; /* bytes of the head, up to and with its empty line */
    char method[16];
    const char *target; /* the request target, not NUL-terminated */
    size_t target_len;
    enum nf_http_framing framing;
    uint64_t length;      /* NF_HTTP_FRAME_LENGTH: Content-Length (> 0) */
    bool expect_continue; /* Expect: 100-continue */
    bool has_marker;      /* the client sent NF_HTTP_BODY_MARKER */
};

/*
 * Parses the request head at the start of p[0..n): 1 when complete (h filled), 0 when more
 * bytes are needed, -1 when it is not a head the filter can follow (too long: over max
 * bytes; malformed; or framed in a way evhttp might read differently, see the file).
 */
int nf_http_head_parse(const char *p, size_t n, size_t max, struct nf_http_head *h);
/*
 * The head h (parsed from p) as evhttp should see it, lines ending "\r\n": without any
 * NF_HTTP_BODY_MARKER line; with token (the body is streamed) also without
 * Content-Length, Transfer-Encoding and Expect, and with "Content-Length: 0" and
 * "NF_HTTP_BODY_MARKER: token" added. A new string (not NUL-terminated) of *out_len bytes.
 */
char *nf_http_head_rewrite(const char *p, const struct nf_http_head *h, const char *token,
                           size_t *out_len);

/* Where a body stands while it is read (de-chunked) from a buffer. */
struct nf_http_frame {
    enum nf_http_framing framing;
    uint64_t left; /* bytes of this body (LENGTH) or of this chunk (CHUNKED) to come */
    int cstate;    /* CHUNKED: what comes next (size line, data, CRLF, trailer) */
    size_t trailer, max_trailer;
};

enum {
    NF_HTTP_FRAME_BAD = -1, /* malformed chunked framing */
    NF_HTTP_FRAME_NEED = 0, /* more bytes are needed */
    NF_HTTP_FRAME_DATA = 1, /* *p, *n: body data at the front of the buffer */
    NF_HTTP_FRAME_DONE = 2, /* the body ended (its framing bytes are consumed) */
};

void nf_http_frame_init(struct nf_http_frame *f, enum nf_http_framing framing, uint64_t length,
                        size_t max_trailer);
/* The next thing in `in`: framing bytes (chunk lines, trailers) are drained as they are
 * read; data is only shown (*p, *n point into in) until nf_http_frame_consume. */
int nf_http_frame_next(struct nf_http_frame *f, struct evbuffer *in, const char **p, size_t *n);
/* The first n bytes of the data nf_http_frame_next showed are taken. */
void nf_http_frame_consume(struct nf_http_frame *f, struct evbuffer *in, size_t n);

/* ---- nf_http_conn.c ----------------------------------------------------------------- */

enum nf_http_conn_state {
    NF_HTTP_CONN_HEAD,        /* reading a request head */
    NF_HTTP_CONN_PASS,        /* passing `left` body bytes on to evhttp */
    NF_HTTP_CONN_BODY,        /* a streamed body: its bytes wait in `under` for the handler */
    NF_HTTP_CONN_DISCARD,     /* answered before its body was read: drop every byte */
    NF_HTTP_CONN_TRANSPARENT, /* framing not followed: pass every byte on, for good */
};

/*
 * One accepted connection: evhttp's bufferevent is a filter (bev) over the socket's
 * (under). The filter is freed by evhttp; conn goes with it (its context), except while
 * it lingers after an early answer, reading and dropping what the client still sends.
 */
struct nf_http_conn {
    struct nf_http_server *srv;    /* NULL once the server is freed */
    LIST_ENTRY(nf_http_conn) link; /* in srv->conns while srv is set */
    struct bufferevent *bev;       /* the filter evhttp uses; NULL once freed */
    struct bufferevent *under;     /* the socket's bufferevent; one reference is ours */
    evutil_socket_t fd;            /* -1 until known */
    struct event *wev;             /* the writer (bev's output -> socket); NULL until fd */
    struct event *kick;            /* re-runs the input side from the loop */
    struct event *linger;          /* lingering close deadline; NULL unless lingering */
    enum nf_http_conn_state state;
    uint64_t left;               /* PASS: body bytes still to pass on */
    struct nf_http_frame body;   /* BODY: the streamed body's framing */
    uint64_t declared;           /* BODY: its Content-Length (0 when chunked) */
    uint64_t max_body;           /* BODY: its route's limit (0: none) */
    bool expect_continue;        /* BODY: the client waits for "100 Continue" */
    char token[32];              /* BODY: the marker value evhttp's request carries */
    struct nf_http_body *stream; /* BODY: the request's stream once claimed */
    struct nf_http_req *req;     /* the request in the handler's hands, or NULL */
    bool write_failed;
};

/* evhttp's bufferevent factory (evhttp_set_bevcb; arg: the server): a new connection. */
struct bufferevent *nf_http_conn_new(struct event_base *base, void *arg);
/* The connection whose filter is bev, or NULL. */
struct nf_http_conn *nf_http_conn_find(struct nf_http_server *srv, struct bufferevent *bev);
/* Writes what the kernel takes of the queued answer now (the server is going away). */
void nf_http_conn_flush(struct nf_http_conn *conn);
/* The streamed body ended on the wire: read the next request head (from the loop). */
void nf_http_conn_body_done(struct nf_http_conn *conn);
/* Answered before its body was read: drop what the client still sends (from the loop). */
void nf_http_conn_discard(struct nf_http_conn *conn);
/* Bytes queued for the client and not yet written to the socket. */
size_t nf_http_conn_pending(const struct nf_http_conn *conn);
/* Runs the writer from the loop (a drain callback waits for it). */
void nf_http_conn_wake_writer(struct nf_http_conn *conn);
/* nf_http_server_free: the connections are freed; end lingering ones, detach the rest. */
void nf_http_conns_release(struct nf_http_server *srv);

/* ---- nf_http_body.c ----------------------------------------------------------------- */

/* A streamed head's request reached the handler: if marker is conn's, req takes the body
 * (req->body). Returns whether it did. */
bool nf_http_body_claim(struct nf_http_req *req, struct nf_http_conn *conn, const char *marker);
/* New bytes for a streamed body arrived in conn->under (called by the filter). */
void nf_http_body_wake(struct nf_http_body *b);
/* The connection went away. */
void nf_http_body_gone(struct nf_http_body *b);
/* req is being answered: a body not read to its end makes the answer "Connection: close"
 * and the rest of the body is dropped. */
void nf_http_body_answering(struct nf_http_req *req);
/* req is done: the body state goes (or is marked dead while one of its callbacks runs). */
void nf_http_body_release(struct nf_http_req *req);
