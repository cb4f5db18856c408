/*
 * nf_http: the HTTP server every service runs, on libevent 2.1's evhttp.
 *
 *   accept (our own socket, SO_REUSEPORT when asked) --> evhttp reads the request
 *     (body <= max_body, headers <= 2 x max_headers, idle timeout)
 *     --> on_request: request id, X-Request-Id, header size (431), path split and
 *         percent-decoded, query decoded, route match (404 / 405 + Allow)
 *     --> handler(req, arg) ... now or later ... nf_http_reply_*(req) --> req_done:
 *         metrics, access log, free
 *
 * Lifetime of the evhttp request under our struct nf_http_req (libevent 2.1.12):
 * - While a request waits for its answer evhttp stops reading the connection, so a
 *   client that leaves is only noticed when the answer is written; evhttp then frees the
 *   request itself once the reply call handed it over. A handler that wants to know
 *   earlier (a long poll) sets nf_http_stream_on_close: we then read the connection
 *   (watch_close) and a close detaches the request as below.
 * - While streaming, evhttp reads again and detaches the request when the client
 *   closes (the request then has no connection); the connection close callback marks
 *   req gone and the final reply call frees the detached request.
 * - When the connection is freed with the request still attached (only evhttp_free, from
 *   nf_http_server_free) the close callback copies what the accessors hand out and drops
 *   the pointer, because evhttp frees the request with the connection.
 * So `req` itself always lives until the handler's one reply call, which frees it.
 *
 * evhttp answers some errors itself (413 body too large, 400 malformed request, 501)
 * with an HTML page. A callback on each connection's output buffer recognises such an
 * answer once evhttp has queued it completely and swaps it for our JSON error shape.
 */
#include "nf_http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "nf_id.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"

#define DEFAULT_MAX_BODY ((size_t)1024 * 1024)
#define DEFAULT_MAX_HEADERS ((size_t)16 * 1024)
#define DEFAULT_TIMEOUT_S 30
#define LISTEN_BACKLOG 1024
#define REQ_ID_MAX 64
/* evhttp's own error pages are a few hundred bytes; anything larger is not one. */
#define OWN_ERROR_MAX 4096
/* Bytes a client may send (a pipelined request) while we watch for its close. */
#define WATCH_READ_MAX ((size_t)64 * 1024)

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
    struct nf_http_req *first; /* requests not answered yet */
    size_t inflight;
    bool stopped;
    bool replying; /* one of our answers is being queued: on_output leaves it alone */
};

struct nf_http_req {
    struct nf_http_server *srv;      /* NULL once orphaned by nf_http_server_free */
    struct nf_http_req *prev, *next; /* in srv->first */
    struct evhttp_request *ev;       /* NULL once evhttp freed it (or will) */
    const char *method;              /* static string */
    char *path;                      /* as received, without the query */
    char *route;                     /* matched pattern (copy); NULL when unmatched */
    struct nf_histogram *duration;   /* the route's histogram */
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
    char id[REQ_ID_MAX + 1];
    char peer[64];
};

/* ---- small helpers ------------------------------------------------------------------ */

static cJSON *jcheck(cJSON *item)
{
    if (item == NULL)
        abort();
    return item;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return NULL; /* evhttp picks one */
    }
}

static const struct {
    enum evhttp_cmd_type type;
    const char *name;
} methods[] = {
    {EVHTTP_REQ_GET, "GET"},         {EVHTTP_REQ_POST, "POST"},   {EVHTTP_REQ_PUT, "PUT"},
    {EVHTTP_REQ_DELETE, "DELETE"},   {EVHTTP_REQ_PATCH, "PATCH"}, {EVHTTP_REQ_HEAD, "HEAD"},
    {EVHTTP_REQ_OPTIONS, "OPTIONS"}, {EVHTTP_REQ_TRACE, "TRACE"}, {EVHTTP_REQ_CONNECT, "CONNECT"},
};

static const char *method_name(enum evhttp_cmd_type type)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (methods[i].type == type)
            return methods[i].name;
    return "OTHER";
}

static double elapsed_s(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Prometheus label value escaping (backslash, quote, newline) into out. */
static void label_escape(char *out, size_t outlen, const char *s)
{
    size_t o = 0;
    for (; *s != '\0' && o + 3 < outlen; s++) {
        if (*s == '\\' || *s == '"') {
            out[o++] = '\\';
            out[o++] = *s;
        } else if (*s == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

static void count_request(struct nf_http_server *srv, const char *route, const char *method,
                          int status)
{
    char esc[512], labels[640];
    struct nf_counter *c;

    if (srv == NULL || srv->metrics == NULL)
        return;
    label_escape(esc, sizeof(esc), route);
    snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",status=\"%d\"", esc, method,
             status);
    c = nf_metrics_counter(srv->metrics, "nf_http_requests_total", "HTTP requests answered",
                           labels);
    if (c != NULL)
        nf_metrics_counter_add(c, 1);
}

static struct nf_histogram *route_histogram(struct nf_http_server *srv, const char *route)
{
    char esc[512], labels[640];

    if (srv->metrics == NULL)
        return NULL;
    label_escape(esc, sizeof(esc), route);
    snprintf(labels, sizeof(labels), "route=\"%s\"", esc);
    return nf_metrics_histogram(srv->metrics, "nf_http_request_duration_seconds",
                                "Time from request read to answer queued", labels,
                                nf_metrics_latency_bounds, nf_metrics_latency_nbounds);
}

static bool request_id_sane(const char *s)
{
    size_t n = 0;
    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || n >= REQ_ID_MAX)
            return false;
    }
    return n > 0;
}

static void new_request_id(char *out, size_t outlen)
{
    if (nf_id_new("req", out, outlen) != 0)
        snprintf(out, outlen, "req_unknown");
}

/* Percent-decodes s[0..n) ('+' as space when plus); NULL when it decodes to a NUL byte. */
static char *decode(const char *s, size_t n, bool plus)
{
    char *tmp = nf_xstrndup(s, n);
    size_t len = 0;
    char *out = evhttp_uridecode(tmp, plus ? 1 : 0, &len);
    free(tmp);
    if (out == NULL)
        abort();
    if (strlen(out) != len) {
        free(out);
        return NULL;
    }
    return out;
}

static cJSON *error_body(const char *code, const char *param, const char *msg, const char *id)
{
    cJSON *root = jcheck(cJSON_CreateObject());
    cJSON *err = jcheck(cJSON_CreateObject());
    cJSON_AddItemToObject(root, "error", err);
    jcheck(cJSON_AddStringToObject(err, "code", code));
    jcheck(cJSON_AddStringToObject(err, "message", msg));
    if (param != NULL)
        jcheck(cJSON_AddStringToObject(err, "param", param));
    jcheck(cJSON_AddStringToObject(err, "request_id", id));
    return root;
}

static void ignore_sigpipe(void)
{
    struct sigaction sa;

    /* Writing to a socket the peer closed must fail with EPIPE, not kill the process. */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

/* ---- request state ------------------------------------------------------------------ */

static void headers_init(struct evkeyvalq *q)
{
    q->tqh_first = NULL;
    q->tqh_last = &q->tqh_first;
}

/* Copies the request headers out of the evhttp request (once). */
static void keep_headers(struct nf_http_req *req)
{
    if (req->ev == NULL || req->headers_copied)
        return;
    const struct evkeyvalq *in = evhttp_request_get_input_headers(req->ev);
    for (const struct evkeyval *h = in->tqh_first; h != NULL; h = h->next.tqe_next)
        evhttp_add_header(&req->headers, h->key, h->value);
    req->headers_copied = true;
}

/* Copies the body out of the evhttp request (once), NUL-terminated. */
static void keep_body(struct nf_http_req *req)
{
    struct evbuffer *buf;
    size_t len;

    if (req->body != NULL)
        return;
    buf = req->ev != NULL ? evhttp_request_get_input_buffer(req->ev) : NULL;
    len = buf != NULL ? evbuffer_get_length(buf) : 0;
    req->body = nf_xmalloc(len + 1);
    if (len > 0)
        evbuffer_copyout(buf, req->body, len);
    req->body[len] = '\0';
    req->body_len = len;
}

/* Before the evhttp request goes away: keep what the accessors hand out. */
static void keep_copies(struct nf_http_req *req)
{
    keep_headers(req);
    keep_body(req);
}

static void req_unlink(struct nf_http_req *req)
{
    struct nf_http_server *srv = req->srv;
    if (srv == NULL)
        return;
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        srv->first = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    srv->inflight--;
}

static void kv_free(struct kv *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
}

/* The answer is queued (or dropped): metrics, access log, free. */
static void req_done(struct nf_http_req *req)
{
    struct nf_http_server *srv = req->srv;
    const char *route = req->route != NULL ? req->route : "unmatched";
    double secs = elapsed_s(&req->start);

    if (srv != NULL) {
        count_request(srv, route, req->method, req->status);
        if (req->duration != NULL)
            nf_metrics_histogram_observe(req->duration, secs);
        req_unlink(req);
    }
    {
        char status[16], ms[32];
        snprintf(status, sizeof(status), "%d", req->status);
        snprintf(ms, sizeof(ms), "%.3f", secs * 1000.0);
        nf_log_kv(req->status >= 500 ? NF_LOG_INFO : NF_LOG_DEBUG, "http_request",
                  "request answered", "method", req->method, "path", req->path, "route", route,
                  "status", status, "ms", ms, "request_id", req->id, "client_gone",
                  req->gone ? "true" : "false", NULL);
    }

    free(req->path);
    free(req->route);
    kv_free(req->params, req->nparams);
    kv_free(req->query, req->nquery);
    free(req->query_raw);
    evhttp_clear_headers(&req->headers);
    free(req->body);
    cJSON_Delete(req->json);
    free(req);
}

/*
 * Connection close callback, set while a request is waiting for (or streaming) its answer.
 * Marks req gone; if evhttp is about to free the request with the connection, keeps
 * copies and drops the pointer; tells a streaming or long-polling handler once.
 */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct nf_http_req *req = arg;

    evhttp_connection_set_closecb(evcon, NULL, NULL);
    req->gone = true;
    if (req->ev != NULL && evhttp_request_get_connection(req->ev) != NULL) {
        keep_copies(req);
        req->ev = NULL; /* freed by evhttp with the connection */
    }
    /* else: evhttp detached the request; our reply call frees it */
    if ((req->streaming || req->watching) && req->on_close != NULL && !req->close_notified) {
        req->close_notified = true;
        req->on_close(req, req->on_close_arg); /* may free req */
    }
}

/*
 * While a request waits for its answer evhttp does not read its connection. To learn
 * that a long-polling client left, read it the way evhttp itself does while it writes:
 * no read callback (a pipelined request just waits in the input buffer, bounded by a
 * watermark), evhttp's event callback (EOF -> request detached -> on_conn_close), and no
 * read timeout, since a long poll is silent by design.
 */
static void watch_close(struct nf_http_req *req, struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    bufferevent_data_cb writecb = NULL;
    bufferevent_event_cb eventcb = NULL;
    void *cbarg = NULL;

    bufferevent_getcb(bev, NULL, &writecb, &eventcb, &cbarg);
    bufferevent_setcb(bev, NULL, writecb, eventcb, cbarg);
    bufferevent_set_timeouts(bev, NULL, NULL);
    bufferevent_setwatermark(bev, EV_READ, 0, WATCH_READ_MAX);
    bufferevent_enable(bev, EV_READ);
    req->watching = true;
}

/* Undoes watch_close before evhttp takes the connection back for the answer. */
static void unwatch_close(struct nf_http_req *req, struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    struct timeval tv = {req->srv->limits.timeout_s, 0};

    if (!req->watching)
        return;
    req->watching = false;
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_set_timeouts(bev, &tv, &tv);
}

/* Connection of a request still able to take an answer, or NULL. */
static struct evhttp_connection *live_conn(const struct nf_http_req *req)
{
    if (req->ev == NULL)
        return NULL;
    return evhttp_request_get_connection(req->ev);
}

/*
 * Queues the complete answer and frees req. content_type NULL: none added; with
 * keep_ctype a Content-Type the handler set wins.
 */
static void req_answer(struct nf_http_req *req, int status, const char *content_type,
                       bool keep_ctype, const void *body, size_t len)
{
    struct evhttp_connection *evcon = live_conn(req);

    req->status = status;
    if (evcon != NULL) {
        struct nf_http_server *srv = req->srv; /* a live connection means not orphaned */
        struct evkeyvalq *out = evhttp_request_get_output_headers(req->ev);
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        unwatch_close(req, evcon);
        if (content_type != NULL &&
            !(keep_ctype && evhttp_find_header(out, "Content-Type") != NULL)) {
            evhttp_remove_header(out, "Content-Type");
            evhttp_add_header(out, "Content-Type", content_type);
        }
        if (srv->stopped)
            evhttp_add_header(out, "Connection", "close");
        /* evhttp would send a body even where HTTP forbids one */
        if (len > 0 && status != 204 && status != 304 && strcmp(req->method, "HEAD") != 0)
            evbuffer_add(evhttp_request_get_output_buffer(req->ev), body, len);
        srv->replying = true;
        evhttp_send_reply(req->ev, status, reason_phrase(status), NULL);
        srv->replying = false;
    } else if (req->ev != NULL) {
        evhttp_request_free(req->ev); /* detached: the client left */
    }
    req->ev = NULL;
    req_done(req);
}

/* ---- routes ------------------------------------------------------------------------- */

static void route_free(struct route *rt)
{
    if (rt == NULL)
        return;
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
    free(rt->is_param);
    free(rt->pattern);
    free(rt);
}

/* Splits a pattern into segments; -1 when malformed. A trailing '/' is ignored. */
static int route_parse(struct route *rt, const char *pattern)
{
    const char *p;
    size_t len;

    if (pattern == NULL || pattern[0] != '/')
        return -1;
    p = pattern + 1;
    len = strlen(p);
    if (len > 0 && p[len - 1] == '/')
        len--;
    if (len == 0) {
        if (strlen(pattern) > 1 && pattern[1] == '/')
            return -1; /* "//" */
        return 0;
    }
    for (size_t start = 0; start <= len;) {
        const char *seg = p + start;
        const char *slash = memchr(seg, '/', len - start);
        size_t n = slash != NULL ? (size_t)(slash - seg) : len - start;
        bool param = n >= 2 && seg[0] == '{' && seg[n - 1] == '}';

        if (n == 0 || (param && n == 2))
            return -1;
        if (!param && (memchr(seg, '{', n) != NULL || memchr(seg, '}', n) != NULL))
            return -1;
        rt->segs = nf_xrealloc(rt->segs, (rt->nsegs + 1) * sizeof(*rt->segs));
        rt->is_param = nf_xrealloc(rt->is_param, (rt->nsegs + 1) * sizeof(*rt->is_param));
        rt->segs[rt->nsegs] = param ? nf_xstrndup(seg + 1, n - 2) : nf_xstrndup(seg, n);
        rt->is_param[rt->nsegs] = param;
        rt->nsegs++;
        start += n + 1;
    }
    return 0;
}

static bool route_same_shape(const struct route *a, const struct route *b)
{
    if (a->method != b->method || a->nsegs != b->nsegs)
        return false;
    for (size_t i = 0; i < a->nsegs; i++) {
        if (a->is_param[i] != b->is_param[i])
            return false;
        if (!a->is_param[i] && strcmp(a->segs[i], b->segs[i]) != 0)
            return false;
    }
    return true;
}

static bool route_matches(const struct route *rt, char **segs, size_t nsegs)
{
    if (rt->nsegs != nsegs)
        return false;
    for (size_t i = 0; i < nsegs; i++) {
        if (rt->is_param[i] ? segs[i][0] == '\0' : strcmp(rt->segs[i], segs[i]) != 0)
            return false;
    }
    return true;
}

/* true when a is more specific than b: a literal where b has a parameter, leftmost first. */
static bool route_more_specific(const struct route *a, const struct route *b)
{
    for (size_t i = 0; i < a->nsegs; i++)
        if (a->is_param[i] != b->is_param[i])
            return !a->is_param[i];
    return false;
}

int nf_http_route(struct nf_http_server *srv, const char *method, const char *pattern,
                  nf_http_handler fn, void *arg)
{
    struct route *rt;
    size_t i;

    if (srv == NULL || method == NULL || fn == NULL)
        return -1;
    rt = nf_xcalloc(1, sizeof(*rt));
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcmp(methods[i].name, method) == 0) {
            rt->method = methods[i].type;
            rt->method_name = methods[i].name;
        }
    }
    if (rt->method_name == NULL || route_parse(rt, pattern) != 0) {
        nf_log_kv(NF_LOG_ERROR, "http_route_invalid", "invalid route", "method", method, "pattern",
                  pattern, NULL);
        goto err;
    }
    for (i = 0; i < srv->nroutes; i++) {
        if (route_same_shape(srv->routes[i], rt)) {
            nf_log_kv(NF_LOG_ERROR, "http_route_duplicate", "route already registered", "method",
                      method, "pattern", pattern, "existing", srv->routes[i]->pattern, NULL);
            goto err;
        }
    }
    rt->pattern = nf_xstrdup(pattern);
    rt->fn = fn;
    rt->arg = arg;
    rt->duration = route_histogram(srv, pattern);
    srv->routes = nf_xrealloc(srv->routes, (srv->nroutes + 1) * sizeof(struct route *));
    srv->routes[srv->nroutes++] = rt;
    return 0;

err:
    route_free(rt);
    return -1;
}

/* ---- dispatch ----------------------------------------------------------------------- */

static void segs_free(char **segs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(segs[i]);
    free(segs);
}

/*
 * Splits the raw path ("/a/b%2Fc/") into decoded segments ("a", "b/c"); a trailing '/'
 * is ignored, "/" has none. -1 when a segment decodes to a NUL byte.
 */
static int split_path(const char *path, char ***out, size_t *nout)
{
    const char *p = path + 1;
    size_t len = strlen(p);
    char **segs = NULL;
    size_t n = 0;

    if (len > 0 && p[len - 1] == '/')
        len--;
    if (len == 0 && strlen(path) <= 1) {
        *out = NULL;
        *nout = 0;
        return 0;
    }
    for (size_t start = 0; start <= len;) {
        const char *seg = p + start;
        const char *slash = len > start ? memchr(seg, '/', len - start) : NULL;
        size_t sn = slash != NULL ? (size_t)(slash - seg) : len - start;
        char *dec = decode(seg, sn, false);

        if (dec == NULL) {
            segs_free(segs, n);
            return -1;
        }
        segs = nf_xrealloc(segs, (n + 1) * sizeof(*segs));
        segs[n++] = dec;
        start += sn + 1;
    }
    *out = segs;
    *nout = n;
    return 0;
}

/* Decodes "a=1&b=x%20y" (q may be NULL) into req->query; -1 when something decodes to a
 * NUL byte. */
static int parse_query(struct nf_http_req *req, const char *q)
{
    char *copy, *rest, *piece;
    int rc = 0;

    if (q == NULL)
        return 0;
    copy = rest = nf_xstrdup(q);
    while ((piece = strsep(&rest, "&")) != NULL) {
        char *eq = strchr(piece, '=');
        const char *val = "";
        char *name, *value;

        if (piece[0] == '\0')
            continue;
        if (eq != NULL) {
            *eq = '\0';
            val = eq + 1;
        }
        name = decode(piece, strlen(piece), true);
        value = decode(val, strlen(val), true);
        if (name == NULL || value == NULL) {
            free(name);
            free(value);
            rc = -1;
            break;
        }
        if (name[0] == '\0') {
            free(name);
            free(value);
            continue;
        }
        req->query = nf_xrealloc(req->query, (req->nquery + 1) * sizeof(*req->query));
        req->query[req->nquery].name = name;
        req->query[req->nquery].value = value;
        req->nquery++;
    }
    free(copy);
    return rc;
}

/*
 * Sets req->path and req->query_raw from the request target. Origin form ("/a/b?q") is
 * split by hand: evhttp's URI parser would read "//x" as an authority. -1 when the
 * target has no usable path.
 */
static int target_split(struct nf_http_req *req, struct evhttp_request *ev)
{
    const char *raw = evhttp_request_get_uri(ev);
    const struct evhttp_uri *uri;
    const char *path, *query;

    if (raw != NULL && raw[0] == '/') {
        size_t plen = strcspn(raw, "?#");
        req->path = nf_xstrndup(raw, plen);
        if (raw[plen] == '?')
            req->query_raw = nf_xstrndup(raw + plen + 1, strcspn(raw + plen + 1, "#"));
        return 0;
    }
    /* absolute form, "http://host/path?q" */
    uri = evhttp_request_get_evhttp_uri(ev);
    path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    if (uri == NULL || evhttp_uri_get_host(uri) == NULL) {
        req->path = nf_xstrdup(raw != NULL ? raw : "");
        return -1;
    }
    req->path = nf_xstrdup(path != NULL && path[0] == '/' ? path : "/");
    if (query != NULL)
        req->query_raw = nf_xstrdup(query);
    return 0;
}

static size_t header_bytes(struct evhttp_request *ev)
{
    const struct evkeyvalq *in = evhttp_request_get_input_headers(ev);
    const char *uri = evhttp_request_get_uri(ev);
    size_t n = uri != NULL ? strlen(uri) : 0;

    for (const struct evkeyval *h = in->tqh_first; h != NULL; h = h->next.tqe_next)
        n += strlen(h->key) + 2 + strlen(h->value) + 2;
    return n;
}

static struct nf_http_req *req_new(struct nf_http_server *srv, struct evhttp_request *ev)
{
    struct nf_http_req *req = nf_xcalloc(1, sizeof(*req));
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    const char *rid = evhttp_find_header(evhttp_request_get_input_headers(ev), "X-Request-Id");

    clock_gettime(CLOCK_MONOTONIC, &req->start);
    req->srv = srv;
    req->ev = ev;
    req->duration = srv->m_unmatched; /* until a route matches */
    req->method = method_name(evhttp_request_get_command(ev));
    headers_init(&req->headers);
    if (request_id_sane(rid))
        snprintf(req->id, sizeof(req->id), "%s", rid);
    else
        new_request_id(req->id, sizeof(req->id));
    if (evcon != NULL) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evcon, &addr, &port);
        snprintf(req->peer, sizeof(req->peer), "%s", addr != NULL ? addr : "");
        evhttp_connection_set_closecb(evcon, on_conn_close, req);
    }
    evhttp_add_header(evhttp_request_get_output_headers(ev), "X-Request-Id", req->id);

    req->next = srv->first;
    if (srv->first != NULL)
        srv->first->prev = req;
    srv->first = req;
    srv->inflight++;
    return req;
}

static void on_request(struct evhttp_request *ev, void *arg)
{
    struct nf_http_server *srv = arg;
    struct nf_http_req *req = req_new(srv, ev);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(ev);
    struct route *best = NULL;
    bool path_known = false;
    char allow[128] = "";
    char **segs = NULL;
    size_t nsegs = 0;
    int target_rc = target_split(req, ev);

    if (header_bytes(ev) > srv->limits.max_headers) {
        nf_http_reply_error(req, 431, "headers_too_large", NULL, "request headers exceed %zu bytes",
                            srv->limits.max_headers);
        return;
    }
    if (target_rc != 0) {
        nf_http_reply_error(req, 400, "bad_request", NULL, "invalid request target");
        return;
    }
    if (parse_query(req, req->query_raw) != 0 || split_path(req->path, &segs, &nsegs) != 0) {
        nf_http_reply_error(req, 400, "bad_request", NULL, "request target contains a NUL byte");
        return;
    }

    for (size_t i = 0; i < srv->nroutes; i++) {
        struct route *rt = srv->routes[i];
        if (!route_matches(rt, segs, nsegs))
            continue;
        if (!path_known || strstr(allow, rt->method_name) == NULL) {
            size_t used = strlen(allow);
            snprintf(allow + used, sizeof(allow) - used, "%s%s", used > 0 ? ", " : "",
                     rt->method_name);
        }
        path_known = true;
        if (rt->method == cmd && (best == NULL || route_more_specific(rt, best)))
            best = rt;
    }

    if (best == NULL) {
        segs_free(segs, nsegs);
        if (path_known) {
            nf_http_set_header(req, "Allow", allow);
            nf_http_reply_error(req, 405, "method_not_allowed", NULL,
                                "method %s is not allowed here", req->method);
        } else {
            nf_http_reply_error(req, 404, "not_found", NULL, "no such resource");
        }
        return;
    }

    req->route = nf_xstrdup(best->pattern);
    req->duration = best->duration;
    for (size_t i = 0; i < nsegs; i++) {
        if (!best->is_param[i])
            continue;
        req->params = nf_xrealloc(req->params, (req->nparams + 1) * sizeof(*req->params));
        req->params[req->nparams].name = nf_xstrdup(best->segs[i]);
        req->params[req->nparams].value = segs[i];
        segs[i] = NULL;
        req->nparams++;
    }
    segs_free(segs, nsegs);
    best->fn(req, best->arg); /* req may be freed from here on */
}

/* ---- evhttp's own error answers, rewritten as JSON ---------------------------------- */

/* Parses the 3-digit status of "HTTP/1.x NNN ..." at p; -1 if it is not one. */
static int status_of(const char *p, size_t len)
{
    if (len < 13 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' || p[12] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    return (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
}

static void rewrite_own_error(struct nf_http_server *srv, struct evbuffer *buf, const char *p,
                              size_t off, size_t len, int status)
{
    const char *code, *msg;
    char id[NF_ID_MAX], head[512];
    char *json, *prefix = NULL;
    cJSON *body;
    int hl;

    switch (status) {
    case 413:
        code = "request_too_large";
        msg = "request body exceeds the size limit";
        break;
    case 400:
        code = "bad_request";
        msg = "malformed request";
        break;
    case 501:
        code = "not_implemented";
        msg = "method not implemented";
        break;
    case 417:
        code = "expectation_failed";
        msg = "unsupported Expect header";
        break;
    default:
        code = "http_error";
        msg = "request failed";
        break;
    }
    new_request_id(id, sizeof(id));
    body = error_body(code, NULL, msg, id);
    json = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (json == NULL)
        abort();
    hl =
        snprintf(head, sizeof(head),
                 "HTTP/1.%c %d %s\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\nX-Request-Id: %s\r\n\r\n",
                 p[off + 7], status,
                 reason_phrase(status) != NULL ? reason_phrase(status) : "Error", strlen(json), id);
    if (off > 0) {
        prefix = nf_xmalloc(off);
        memcpy(prefix, p, off);
    }

    srv->replying = true;
    /* The socket bufferevent keeps its output frozen at the front between writes. */
    evbuffer_unfreeze(buf, 1);
    evbuffer_drain(buf, len);
    evbuffer_freeze(buf, 1);
    if (prefix != NULL)
        evbuffer_add(buf, prefix, off);
    evbuffer_add(buf, head, (size_t)hl);
    evbuffer_add(buf, json, strlen(json));
    srv->replying = false;

    free(prefix);
    free(json);
    count_request(srv, "unmatched", "unknown", status);
    nf_log_kv(NF_LOG_DEBUG, "http_request", "request refused by the parser", "code", code,
              "request_id", id, NULL);
}

/*
 * Output buffer callback of every server connection. Our answers are queued with
 * srv->replying set; anything else is evhttp answering by itself. Once such an answer
 * (>= 400) sits complete in the buffer, it is replaced by the JSON error.
 */
static void on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct nf_http_server *srv = arg;
    size_t len = evbuffer_get_length(buf), off = 0;
    const char *p;

    if (srv->replying || info->n_added == 0 || len < 13 || len > OWN_ERROR_MAX)
        return;
    p = (const char *)evbuffer_pullup(buf, -1);
    if (p == NULL)
        return;
    for (;;) {
        int status = status_of(p + off, len - off);
        const char *end, *cl;
        size_t hdr_end, want;

        if (status < 0)
            return;
        end = memmem(p + off, len - off, "\r\n\r\n", 4);
        if (end == NULL)
            return; /* headers not complete yet */
        hdr_end = (size_t)(end - p) + 4;
        if (status < 200) {
            off = hdr_end; /* a queued "100 Continue": keep it, look behind it */
            continue;
        }
        if (status < 400)
            return;
        cl = memmem(p + off, hdr_end - off, "\r\nContent-Length: ", 18);
        if (cl == NULL)
            return;
        want = strtoul(cl + 18, NULL, 10);
        if (len - hdr_end != want)
            return; /* body not complete yet (or something else follows) */
        rewrite_own_error(srv, buf, p, off, len, status);
        return;
    }
}

/* evhttp's factory for each accepted connection's bufferevent (evhttp sets its fd). */
static struct bufferevent *new_bev(struct event_base *base, void *arg)
{
    struct nf_http_server *srv = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);

    if (bev == NULL)
        return NULL; /* evhttp then makes its own */
    evbuffer_add_cb(bufferevent_get_output(bev), on_output, srv);
    if (srv->m_conns != NULL)
        nf_metrics_counter_add(srv->m_conns, 1);
    return bev;
}

/* ---- built-in routes ---------------------------------------------------------------- */

static void on_healthz(struct nf_http_req *req, void *arg)
{
    cJSON *body = jcheck(cJSON_CreateObject());
    jcheck(cJSON_AddStringToObject(body, "status", "ok"));
    nf_http_reply_json(req, 200, body);
}

static void on_readyz(struct nf_http_req *req, void *arg)
{
    struct nf_http_server *srv = arg;
    cJSON *body = jcheck(cJSON_CreateObject());
    cJSON *checks = jcheck(cJSON_CreateObject());
    bool ready = true;

    if (srv->ready_fn != NULL)
        ready = srv->ready_fn(checks, srv->ready_arg);
    if (srv->stopped) {
        ready = false;
        jcheck(cJSON_AddStringToObject(checks, "http", "stopping"));
    }
    jcheck(cJSON_AddStringToObject(body, "status", ready ? "ready" : "unready"));
    cJSON_AddItemToObject(body, "checks", checks);
    nf_http_reply_json(req, ready ? 200 : 503, body);
}

static void on_metrics(struct nf_http_req *req, void *arg)
{
    struct nf_http_server *srv = arg;
    const char *ctype = "text/plain; version=0.0.4; charset=utf-8";
    size_t len = 0;
    char *text;

    if (srv->metrics == NULL) {
        nf_http_reply_raw(req, 200, ctype, "", 0);
        return;
    }
    text = nf_metrics_render(srv->metrics, &len);
    if (text == NULL) {
        nf_http_reply_error(req, 500, "internal", NULL, "cannot render metrics");
        return;
    }
    nf_http_reply_raw(req, 200, ctype, text, len);
    free(text);
}

/* ---- server ------------------------------------------------------------------------- */

/* Non-blocking listening socket on host:port; -1 (errno kept) on failure. */
static int listen_socket(const char *host, int port, bool reuseport, int *out_port)
{
    struct addrinfo hints, *res = NULL, *ai;
    char portstr[16];
    int fd = -1, rc, err = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(host != NULL && host[0] != '\0' ? host : NULL, portstr, &hints, &res);
    if (rc != 0) {
        nf_log_kv(NF_LOG_ERROR, "http_resolve_failed", "cannot resolve listen address", "host",
                  host, "error", gai_strerror(rc), NULL);
        errno = EINVAL;
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int one = 1;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
            (!reuseport || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0) &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        errno = err;
        return -1;
    }
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);

        memset(&ss, 0, sizeof(ss));
        *out_port = port;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
            if (ss.ss_family == AF_INET)
                *out_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
            else if (ss.ss_family == AF_INET6)
                *out_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    return fd;
}

int nf_http_server_new(struct nf_http_server **out, struct event_base *base, const char *host,
                       int port, const struct nf_http_limits *limits, bool reuseport,
                       struct nf_metrics *metrics)
{
    struct nf_http_server *srv;
    size_t evhttp_headers;
    int fd;
    char portstr[16];

    if (out == NULL || base == NULL || port < 0 || port > 65535)
        return -1;
    ignore_sigpipe();
    srv = nf_xcalloc(1, sizeof(*srv));
    srv->base = base;
    srv->metrics = metrics;
    if (limits != NULL)
        srv->limits = *limits;
    if (srv->limits.max_body == 0)
        srv->limits.max_body = DEFAULT_MAX_BODY;
    if (srv->limits.max_headers == 0)
        srv->limits.max_headers = DEFAULT_MAX_HEADERS;
    if (srv->limits.timeout_s <= 0)
        srv->limits.timeout_s = DEFAULT_TIMEOUT_S;

    srv->http = evhttp_new(base);
    if (srv->http == NULL)
        goto err_free;
    evhttp_set_gencb(srv->http, on_request, srv);
    evhttp_set_bevcb(srv->http, new_bev, srv);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->limits.max_body);
    /* evhttp's own cap is a backstop against memory abuse; on_request answers 431 from
     * max_headers with the headers it already parsed. */
    evhttp_headers = srv->limits.max_headers * 2 + 1024;
    evhttp_set_max_headers_size(srv->http, (ev_ssize_t)evhttp_headers);
    evhttp_set_timeout(srv->http, srv->limits.timeout_s);
    /* Read (and drop) an oversize body before answering 413, so the client sees it. */
    evhttp_set_flags(srv->http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_default_content_type(srv->http, NULL);

    if (metrics != NULL) {
        srv->m_conns = nf_metrics_counter(metrics, "nf_http_connections_total",
                                          "HTTP connections accepted", NULL);
        srv->m_unmatched = route_histogram(srv, "unmatched");
    }
    if (nf_http_route(srv, "GET", "/healthz", on_healthz, srv) != 0 ||
        nf_http_route(srv, "GET", "/readyz", on_readyz, srv) != 0 ||
        nf_http_route(srv, "GET", "/metrics", on_metrics, srv) != 0)
        goto err_http;

    snprintf(portstr, sizeof(portstr), "%d", port);
    fd = listen_socket(host, port, reuseport, &srv->port);
    if (fd < 0) {
        nf_log_kv(NF_LOG_ERROR, "http_listen_failed", "cannot listen", "host", host, "port",
                  portstr, "error", strerror(errno), NULL);
        goto err_http;
    }
    srv->bound = evhttp_accept_socket_with_handle(srv->http, fd);
    if (srv->bound == NULL) {
        close(fd);
        nf_log_kv(NF_LOG_ERROR, "http_listen_failed", "cannot accept", "host", host, "port",
                  portstr, NULL);
        goto err_http;
    }
    snprintf(portstr, sizeof(portstr), "%d", srv->port);
    nf_log_kv(NF_LOG_INFO, "http_listen", "listening", "host", host, "port", portstr, "reuseport",
              reuseport ? "true" : "false", NULL);
    *out = srv;
    return 0;

err_http:
    evhttp_free(srv->http);
err_free:
    for (size_t i = 0; i < srv->nroutes; i++)
        route_free(srv->routes[i]);
    free(srv->routes);
    free(srv);
    return -1;
}

int nf_http_server_port(const struct nf_http_server *srv)
{
    return srv != NULL ? srv->port : -1;
}

void nf_http_server_stop(struct nf_http_server *srv)
{
    if (srv == NULL || srv->stopped)
        return;
    srv->stopped = true;
    if (srv->bound != NULL) {
        evhttp_del_accept_socket(srv->http, srv->bound); /* closes the socket */
        srv->bound = NULL;
    }
}

/*
 * nf_http_server_free's treatment of an unanswered request: answer 503 now (written to
 * the socket at once, since the connection is freed right after), keep what the
 * accessors hand out, and leave req to its handler, whose reply call frees it.
 */
static void orphan(struct nf_http_server *srv, struct nf_http_req *req)
{
    struct evhttp_connection *evcon = live_conn(req);

    keep_copies(req);
    if (evcon != NULL && !req->streaming) {
        struct evhttp_request *ev = req->ev;
        struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
        cJSON *body = error_body("unavailable", NULL, "server is shutting down", req->id);
        char *json = cJSON_PrintUnformatted(body);

        cJSON_Delete(body);
        if (json == NULL)
            abort();
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        evhttp_remove_header(out, "Content-Type");
        evhttp_add_header(out, "Content-Type", "application/json");
        evhttp_add_header(out, "Connection", "close");
        evbuffer_add(evhttp_request_get_output_buffer(ev), json, strlen(json));
        free(json);
        srv->replying = true;
        evhttp_send_reply(ev, 503, reason_phrase(503), NULL);
        srv->replying = false;
        if (bev != NULL && bufferevent_getfd(bev) >= 0) {
            struct evbuffer *obuf = bufferevent_get_output(bev);
            evbuffer_unfreeze(obuf, 1);
            evbuffer_write(obuf, bufferevent_getfd(bev));
            evbuffer_freeze(obuf, 1);
        }
        count_request(srv, req->route != NULL ? req->route : "unmatched", req->method, 503);
        req->ev = NULL; /* freed by evhttp_free with its connection */
    } else if (evcon != NULL) {
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        req->ev = NULL; /* a started stream just ends when the connection closes */
    } else if (req->ev != NULL) {
        evhttp_request_free(req->ev); /* detached: the client left */
        req->ev = NULL;
    }
    req->gone = true;
    req_unlink(req);
    req->srv = NULL;
    req->duration = NULL;
}

void nf_http_server_free(struct nf_http_server *srv)
{
    if (srv == NULL)
        return;
    nf_http_server_stop(srv);
    while (srv->first != NULL)
        orphan(srv, srv->first);
    if (srv->http != NULL)
        evhttp_free(srv->http);
    for (size_t i = 0; i < srv->nroutes; i++)
        route_free(srv->routes[i]);
    free(srv->routes);
    free(srv);
}

void nf_http_set_ready(struct nf_http_server *srv, nf_http_ready_fn fn, void *arg)
{
    srv->ready_fn = fn;
    srv->ready_arg = arg;
}

size_t nf_http_inflight(const struct nf_http_server *srv)
{
    return srv != NULL ? srv->inflight : 0;
}

/* ---- request accessors -------------------------------------------------------------- */

const char *nf_http_req_method(const struct nf_http_req *req)
{
    return req->method;
}

const char *nf_http_req_path(const struct nf_http_req *req)
{
    return req->path;
}

const char *nf_http_req_route(const struct nf_http_req *req)
{
    return req->route;
}

const char *nf_http_req_param(const struct nf_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0)
            return req->params[i].value;
    return NULL;
}

const char *nf_http_req_query(const struct nf_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nquery; i++)
        if (strcmp(req->query[i].name, name) == 0)
            return req->query[i].value;
    return NULL;
}

const char *nf_http_req_query_string(const struct nf_http_req *req)
{
    return req->query_raw;
}

const char *nf_http_req_header(const struct nf_http_req *req, const char *name)
{
    /* Answers come from a copy so that they outlive the evhttp request. */
    keep_headers((struct nf_http_req *)req);
    return evhttp_find_header(&req->headers, name);
}

const char *nf_http_req_id(const struct nf_http_req *req)
{
    return req->id;
}

const char *nf_http_req_peer(const struct nf_http_req *req)
{
    return req->peer;
}

const char *nf_http_req_body(struct nf_http_req *req, size_t *len)
{
    keep_body(req);
    if (len != NULL)
        *len = req->body_len;
    return req->body;
}

cJSON *nf_http_req_json(struct nf_http_req *req)
{
    size_t len = 0;
    const char *body;
    const char *end = NULL;
    cJSON *json;

    if (req->json != NULL)
        return req->json;
    body = nf_http_req_body(req, &len);
    if (len == 0) {
        nf_http_reply_error(req, 400, "invalid_json", NULL, "a JSON object body is required");
        return NULL;
    }
    if (strlen(body) != len) {
        nf_http_reply_error(req, 400, "invalid_json", NULL, "body contains a NUL byte");
        return NULL;
    }
    json = cJSON_ParseWithOpts(body, &end, 1);
    if (json == NULL) {
        size_t at = end != NULL && end >= body ? (size_t)(end - body) : 0;
        nf_http_reply_error(req, 400, "invalid_json", NULL, "body is not valid JSON (at byte %zu)",
                            at);
        return NULL;
    }
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        nf_http_reply_error(req, 400, "invalid_json", NULL, "body must be a JSON object");
        return NULL;
    }
    req->json = json;
    return json;
}

void nf_http_req_set_data(struct nf_http_req *req, void *data)
{
    req->data = data;
}

void *nf_http_req_data(const struct nf_http_req *req)
{
    return req->data;
}

void nf_http_set_header(struct nf_http_req *req, const char *name, const char *value)
{
    if (req->ev == NULL || name == NULL || value == NULL)
        return;
    if (evhttp_add_header(evhttp_request_get_output_headers(req->ev), name, value) != 0)
        nf_log_kv(NF_LOG_WARN, "http_bad_header", "answer header refused", "name", name,
                  "request_id", req->id, NULL);
}

/* ---- replies ------------------------------------------------------------------------ */

void nf_http_reply_json(struct nf_http_req *req, int status, cJSON *body)
{
    char *text = NULL;

    if (req->streaming) {
        nf_log_kv(NF_LOG_ERROR, "http_reply_misuse", "reply on a started stream", "request_id",
                  req->id, NULL);
        cJSON_Delete(body);
        nf_http_stream_end(req);
        return;
    }
    if (body != NULL) {
        text = cJSON_PrintUnformatted(body);
        cJSON_Delete(body);
        if (text == NULL)
            abort();
    }
    req_answer(req, status, text != NULL ? "application/json" : NULL, true, text,
               text != NULL ? strlen(text) : 0);
    free(text);
}

void nf_http_reply_raw(struct nf_http_req *req, int status, const char *content_type,
                       const void *body, size_t len)
{
    if (req->streaming) {
        nf_log_kv(NF_LOG_ERROR, "http_reply_misuse", "reply on a started stream", "request_id",
                  req->id, NULL);
        nf_http_stream_end(req);
        return;
    }
    req_answer(req, status, content_type, false, body, body != NULL ? len : 0);
}

void nf_http_reply_error(struct nf_http_req *req, int status, const char *code, const char *param,
                         const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    nf_http_reply_json(req, status, error_body(code, param, msg, req->id));
}

/* ---- streaming ---------------------------------------------------------------------- */

void nf_http_stream_start(struct nf_http_req *req, int status, const char *content_type)
{
    struct evhttp_connection *evcon;

    if (req->streaming)
        return;
    req->streaming = true;
    req->status = status;
    evcon = live_conn(req);
    if (evcon != NULL) {
        struct evkeyvalq *out = evhttp_request_get_output_headers(req->ev);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
        struct timeval wtv = {req->srv->limits.timeout_s, 0};

        unwatch_close(req, evcon);
        evhttp_remove_header(out, "Content-Type");
        evhttp_add_header(out, "Content-Type",
                          content_type != NULL ? content_type : "text/event-stream");
        if (evhttp_find_header(out, "Cache-Control") == NULL)
            evhttp_add_header(out, "Cache-Control", "no-cache");
        req->srv->replying = true;
        evhttp_send_reply_start(req->ev, status, reason_phrase(status));
        req->srv->replying = false;
        /* The client says nothing while it listens: no read timeout, but a stalled
         * reader is still dropped after timeout_s. */
        bufferevent_set_timeouts(bev, NULL, &wtv);
    }
}

int nf_http_stream_send(struct nf_http_req *req, const void *buf, size_t len)
{
    struct evbuffer *chunk;

    if (!req->streaming || live_conn(req) == NULL || req->gone)
        return -1;
    if (len == 0)
        return 0; /* an empty chunk would end the chunked answer */
    chunk = evbuffer_new();
    if (chunk == NULL)
        abort();
    evbuffer_add(chunk, buf, len);
    req->srv->replying = true;
    evhttp_send_reply_chunk(req->ev, chunk);
    req->srv->replying = false;
    evbuffer_free(chunk);
    return 0;
}

void nf_http_stream_end(struct nf_http_req *req)
{
    struct evhttp_connection *evcon;

    if (!req->streaming) {
        nf_log_kv(NF_LOG_ERROR, "http_reply_misuse", "stream end without start", "request_id",
                  req->id, NULL);
        req_answer(req, 500, NULL, false, NULL, 0);
        return;
    }
    evcon = live_conn(req);
    if (evcon != NULL) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
        struct timeval tv = {req->srv->limits.timeout_s, 0};

        evhttp_connection_set_closecb(evcon, NULL, NULL);
        bufferevent_set_timeouts(bev, &tv, &tv);
        req->srv->replying = true;
        evhttp_send_reply_end(req->ev); /* may free the connection */
        req->srv->replying = false;
    } else if (req->ev != NULL) {
        evhttp_request_free(req->ev); /* detached: the client left */
    }
    req->ev = NULL;
    req_done(req);
}

void nf_http_stream_on_close(struct nf_http_req *req, void (*fn)(struct nf_http_req *, void *),
                             void *arg)
{
    struct evhttp_connection *evcon = live_conn(req);

    req->on_close = fn;
    req->on_close_arg = arg;
    if (fn != NULL && !req->streaming && !req->watching && !req->gone && evcon != NULL)
        watch_close(req, evcon);
}
