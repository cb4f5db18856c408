/*
 * nf_http_req: the state of one request, from evhttp's read to the handler's one reply
 * call: request id, copies of what the accessors hand out, the connection close callback,
 * and the accessors themselves.
 *
 * Lifetime of the evhttp request under our struct nf_http_req (libevent 2.1.12):
 * - While a request waits for its answer evhttp stops reading the connection, so a
 *   client that leaves is only noticed when the answer is written; evhttp then frees the
 *   request itself once the reply call handed it over. A handler that wants to know
 *   earlier (a long poll) sets nf_http_stream_on_close: we then read the connection
 *   (watch_close in nf_http_reply.c) and a close detaches the request as below.
 * - While streaming, evhttp reads again and detaches the request when the client
 *   closes (the request then has no connection); the connection close callback marks
 *   req gone and the final reply call frees the detached request.
 * - When the connection is freed with the request still attached (only evhttp_free, from
 *   nf_http_server_free) the close callback copies what the accessors hand out and drops
 *   the pointer, because evhttp frees the request with the connection.
 * So `req` itself always lives until the handler's one reply call, which frees it.
 */
#include "nf_http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "nf_id.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"

/* ---- request ids -------------------------------------------------------------------- */

/* A client's X-Request-Id is kept when it is 1..64 chars of [A-Za-z0-9._-]. */
static bool request_id_sane(const char *s)
{
    size_t n = 0;
    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || n >= NF_HTTP_REQ_ID_MAX)
            return false;
    }
    return n > 0;
}

void nf_http_new_request_id(char *out, size_t outlen)
{
    if (nf_id_new("req", out, outlen) != 0)
        snprintf(out, outlen, "req_unknown");
}

/* ---- request state ------------------------------------------------------------------ */

static double elapsed_s(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

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
void nf_http_req_keep_copies(struct nf_http_req *req)
{
    keep_headers(req);
    keep_body(req);
}

/* Off the server's list of unanswered requests (an orphaned req is on none). */
void nf_http_req_unlink(struct nf_http_req *req)
{
    struct nf_http_server *srv = req->srv;
    if (srv == NULL)
        return;
    LIST_REMOVE(req, link);
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
void nf_http_req_done(struct nf_http_req *req)
{
    struct nf_http_server *srv = req->srv;
    const char *route = req->route != NULL ? req->route : "unmatched";
    double secs = elapsed_s(&req->start);

    nf_http_body_release(req);
    if (req->conn != NULL) {
        if (req->conn->req == req)
            req->conn->req = NULL;
        req->conn = NULL;
    }
    if (srv != NULL) {
        nf_http_count_request(srv, route, req->method, req->status);
        if (req->duration != NULL)
            nf_metrics_histogram_observe(req->duration, secs);
        nf_http_req_unlink(req);
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
    if (req->stream != NULL)
        nf_http_body_gone(req->stream); /* its on_end comes from the loop */
    if (req->conn != NULL) {
        if (req->conn->req == req)
            req->conn->req = NULL;
        req->conn = NULL;
    }
    if (req->ev != NULL && evhttp_request_get_connection(req->ev) != NULL) {
        nf_http_req_keep_copies(req);
        req->ev = NULL; /* freed by evhttp with the connection */
    }
    /* else: evhttp detached the request; our reply call frees it */
    if ((req->streaming || req->watching) && req->on_close != NULL && !req->close_notified) {
        req->close_notified = true;
        req->on_close(req, req->on_close_arg); /* may free req */
    }
}

/* Connection of a request still able to take an answer, or NULL. */
struct evhttp_connection *nf_http_req_conn(const struct nf_http_req *req)
{
    if (req->ev == NULL)
        return NULL;
    return evhttp_request_get_connection(req->ev);
}

/* Request id, peer, close callback, and a place in srv's list of unanswered requests. */
struct nf_http_req *nf_http_req_new(struct nf_http_server *srv, struct evhttp_request *ev)
{
    struct nf_http_req *req = nf_xcalloc(1, sizeof(*req));
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    const char *rid = evhttp_find_header(evhttp_request_get_input_headers(ev), "X-Request-Id");

    clock_gettime(CLOCK_MONOTONIC, &req->start);
    req->srv = srv;
    req->ev = ev;
    req->duration = srv->m_unmatched; /* until a route matches */
    req->method = nf_http_method_name(evhttp_request_get_command(ev));
    headers_init(&req->headers);
    if (request_id_sane(rid))
        snprintf(req->id, sizeof(req->id), "%s", rid);
    else
        nf_http_new_request_id(req->id, sizeof(req->id));
    if (evcon != NULL) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evcon, &addr, &port);
        snprintf(req->peer, sizeof(req->peer), "%s", addr != NULL ? addr : "");
        evhttp_connection_set_closecb(evcon, on_conn_close, req);
        req->conn = nf_http_conn_find(srv, evhttp_connection_get_bufferevent(evcon));
        if (req->conn != NULL)
            req->conn->req = req;
    }
    evhttp_add_header(evhttp_request_get_output_headers(ev), "X-Request-Id", req->id);

    LIST_INSERT_HEAD(&srv->reqs, req, link);
    srv->inflight++;
    return req;
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
