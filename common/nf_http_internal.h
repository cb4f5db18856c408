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
 *
 *   nf_http_on_request (route) --> nf_http_req_new (req) --> match --> handler(req, arg)
 *     ... now or later ... nf_http_reply_* (reply) --> nf_http_req_done (req): metrics,
 *     access log, free
 */
#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "nf_http.h"

#define NF_HTTP_REQ_ID_MAX 64

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

/* ---- nf_http_reply.c ---------------------------------------------------------------- */

/* The reason phrase of a status we use; NULL lets evhttp pick one. */
const char *nf_http_reason_phrase(int status);
/* {"error": {"code", "message", "param"?, "request_id"}}; param may be NULL. Caller owns. */
cJSON *nf_http_error_body(const char *code, const char *param, const char *msg, const char *id);
/* Output buffer callback of every server connection (arg: the server): swaps evhttp's
 * own HTML error answers for our JSON error shape. */
void nf_http_on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
