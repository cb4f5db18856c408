/*
 * nf_http: the HTTP server every service runs, on libevent 2.1's evhttp. This file is the
 * server itself: the listening socket, new / stop / free, the built-in routes and the
 * request metrics. Routes live in nf_http_route.c, request state in nf_http_req.c and
 * answers in nf_http_reply.c (the map is in nf_http_internal.h).
 *
 *   accept (our own socket, SO_REUSEPORT when asked) --> connection filter (nf_http_conn.c:
 *     streamed bodies held back for their handler) --> evhttp reads the request
 *     (body <= max_body, headers <= 2 x max_headers, idle timeout)
 *     --> nf_http_on_request: request id, X-Request-Id, header size (431), path split and
 *         percent-decoded, query decoded, route match (404 / 405 + Allow)
 *     --> handler(req, arg) ... now or later ... nf_http_reply_*(req) --> nf_http_req_done:
 *         metrics, access log, free
 */
#include "nf_http_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/util.h>

#include "nf_json.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"

#define DEFAULT_MAX_BODY ((size_t)1024 * 1024)
#define DEFAULT_MAX_HEADERS ((size_t)16 * 1024)
#define DEFAULT_TIMEOUT_S 30
#define LISTEN_BACKLOG 1024

/* ---- request metrics ---------------------------------------------------------------- */

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

void nf_http_count_request(struct nf_http_server *srv, const char *route, const char *method,
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

struct nf_histogram *nf_http_route_histogram(struct nf_http_server *srv, const char *route)
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

/* ---- connections -------------------------------------------------------------------- */

static void ignore_sigpipe(void)
{
    struct sigaction sa;

    /* Writing to a socket the peer closed must fail with EPIPE, not kill the process. */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

/* ---- built-in routes ---------------------------------------------------------------- */

static void on_healthz(struct nf_http_req *req, void *arg)
{
    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "status", "ok");
    nf_http_reply_json(req, 200, body);
}

static void on_readyz(struct nf_http_req *req, void *arg)
{
    struct nf_http_server *srv = arg;
    cJSON *body = nf_json_obj();
    cJSON *checks = nf_json_obj();
    bool ready = true;

    if (srv->ready_fn != NULL)
        ready = srv->ready_fn(checks, srv->ready_arg);
    if (srv->stopped) {
        ready = false;
        nf_json_add_str(checks, "http", "stopping");
    }
    nf_json_add_str(body, "status", ready ? "ready" : "unready");
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
    LIST_INIT(&srv->reqs);
    LIST_INIT(&srv->conns);
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
    evhttp_set_gencb(srv->http, nf_http_on_request, srv);
    evhttp_set_bevcb(srv->http, nf_http_conn_new, srv); /* the connection filter */
    /* Every method evhttp knows reaches the router, so one a path does not take is a 405
     * with Allow there (TRACE, CONNECT included); evhttp itself answers 501 only for a method
     * HTTP does not define. */
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
                                              EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->limits.max_body);
    /* evhttp's own cap is a backstop against memory abuse; nf_http_on_request answers 431 from
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
        srv->m_unmatched = nf_http_route_histogram(srv, "unmatched");
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
        nf_http_route_free(srv->routes[i]);
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
    struct evhttp_connection *evcon = nf_http_req_conn(req);

    nf_http_req_keep_copies(req);
    if (evcon != NULL && !req->streaming) {
        struct evhttp_request *ev = req->ev;
        struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
        cJSON *body = nf_http_error_body("unavailable", NULL, "server is shutting down", req->id);
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
        evhttp_send_reply(ev, 503, nf_http_reason_phrase(503), NULL);
        srv->replying = false;
        if (req->conn != NULL)
            nf_http_conn_flush(req->conn);
        nf_http_count_request(srv, req->route != NULL ? req->route : "unmatched", req->method, 503);
        req->ev = NULL; /* freed by evhttp_free with its connection */
    } else if (evcon != NULL) {
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        req->ev = NULL; /* a started stream just ends when the connection closes */
    } else if (req->ev != NULL) {
        evhttp_request_free(req->ev); /* detached: the client left */
        req->ev = NULL;
    }
    req->gone = true;
    nf_http_req_unlink(req);
    req->srv = NULL;
    req->duration = NULL;
}

void nf_http_server_free(struct nf_http_server *srv)
{
    struct nf_http_conn *conn;

    if (srv == NULL)
        return;
    nf_http_server_stop(srv);
    while (!LIST_EMPTY(&srv->reqs))
        orphan(srv, LIST_FIRST(&srv->reqs));
    /* answers queued during the teardown (the loop no longer runs): what the sockets take */
    LIST_FOREACH(conn, &srv->conns, link)
    nf_http_conn_flush(conn);
    if (srv->http != NULL)
        evhttp_free(srv->http);
    nf_http_conns_release(srv);
    for (size_t i = 0; i < srv->nroutes; i++)
        nf_http_route_free(srv->routes[i]);
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
