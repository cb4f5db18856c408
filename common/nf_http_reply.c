/*
 * nf_http_reply: every way a request is answered. Each reply call queues the answer (or
 * drops it when the client left) and ends in nf_http_req_done, which frees req:
 *
 *   nf_http_reply_json / _raw / _error --> req_answer --> evhttp_send_reply
 *   nf_http_stream_start --> nf_http_stream_send ... --> nf_http_stream_end
 *
 * evhttp answers some errors itself (413 body too large, 400 malformed request, 501)
 * with an HTML page. A callback on each connection's output buffer (nf_http_on_output)
 * recognises such an answer once evhttp has queued it completely and swaps it for our
 * JSON error shape.
 */
#define _GNU_SOURCE /* memmem */
#include "nf_http_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "nf_id.h"
#include "nf_log.h"
#include "nf_mem.h"

/* evhttp's own error pages are a few hundred bytes; anything larger is not one. */
#define OWN_ERROR_MAX 4096
/* Bytes a client may send (a pipelined request) while we watch for its close. */
#define WATCH_READ_MAX ((size_t)64 * 1024)

/* ---- answer shapes ------------------------------------------------------------------ */

static cJSON *jcheck(cJSON *item)
{
    if (item == NULL)
        abort();
    return item;
}

const char *nf_http_reason_phrase(int status)
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
    case 206:
        return "Partial Content";
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
    case 408:
        return "Request Timeout";
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
    case 416:
        return "Range Not Satisfiable";
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

cJSON *nf_http_error_body(const char *code, const char *param, const char *msg, const char *id)
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

/* ---- queueing an answer ------------------------------------------------------------- */

/*
 * While a request waits for its answer evhttp does not read its connection. To learn
 * that a long-polling client left, read it the way evhttp itself does while it writes:
 * no read callback (a pipelined request just waits in the input buffer, bounded by a
 * watermark), evhttp's event callback (EOF -> request detached -> on_conn_close), and no
 * read timeout, since a long poll is silent by design.
 */
void nf_http_watch_close(struct nf_http_req *req, struct evhttp_connection *evcon)
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

/*
 * Queues the complete answer and frees req. content_type NULL: none added; with
 * keep_ctype a Content-Type the handler set wins.
 */
static void req_answer(struct nf_http_req *req, int status, const char *content_type,
                       bool keep_ctype, const void *body, size_t len)
{
    struct evhttp_connection *evcon = nf_http_req_conn(req);

    req->status = status;
    if (evcon != NULL) {
        struct nf_http_server *srv = req->srv; /* a live connection means not orphaned */
        struct evkeyvalq *out = evhttp_request_get_output_headers(req->ev);
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        unwatch_close(req, evcon);
        nf_http_body_answering(req);
        if (content_type != NULL &&
            !(keep_ctype && evhttp_find_header(out, "Content-Type") != NULL)) {
            evhttp_remove_header(out, "Content-Type");
            evhttp_add_header(out, "Content-Type", content_type);
        }
        if (srv->stopped)
            evhttp_add_header(out, "Connection", "close");
        /* evhttp frames no answer to CONNECT (a tunnel would follow a 2xx); ours is always
         * an error: give it its length, and close, as no request follows a refused tunnel */
        if (strcmp(req->method, "CONNECT") == 0) {
            char cl[24];
            snprintf(cl, sizeof(cl), "%zu", len);
            evhttp_remove_header(out, "Content-Length");
            evhttp_add_header(out, "Content-Length", cl);
            if (!srv->stopped)
                evhttp_add_header(out, "Connection", "close");
        }
        /* evhttp would send a body even where HTTP forbids one */
        if (len > 0 && status != 204 && status != 304 && strcmp(req->method, "HEAD") != 0)
            evbuffer_add(evhttp_request_get_output_buffer(req->ev), body, len);
        srv->replying = true;
        evhttp_send_reply(req->ev, status, nf_http_reason_phrase(status), NULL);
        srv->replying = false;
    } else if (req->ev != NULL) {
        evhttp_request_free(req->ev); /* detached: the client left */
    }
    req->ev = NULL;
    nf_http_req_done(req);
}

/* ---- replies ------------------------------------------------------------------------ */

void nf_http_set_header(struct nf_http_req *req, const char *name, const char *value)
{
    if (req->ev == NULL || name == NULL || value == NULL)
        return;
    if (evhttp_add_header(evhttp_request_get_output_headers(req->ev), name, value) != 0)
        nf_log_kv(NF_LOG_WARN, "http_bad_header", "answer header refused", "name", name,
                  "request_id", req->id, NULL);
}

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
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    nf_http_reply_json(req, status, nf_http_error_body(code, param, msg, req->id));
}

/* ---- streaming ---------------------------------------------------------------------- */

void nf_http_stream_start(struct nf_http_req *req, int status, const char *content_type)
{
    nf_http_stream_start_len(req, status, content_type, -1);
}

void nf_http_stream_start_len(struct nf_http_req *req, int status, const char *content_type,
                              long long content_length)
{
    struct evhttp_connection *evcon;

    if (req->streaming)
        return;
    req->streaming = true;
    req->status = status;
    evcon = nf_http_req_conn(req);
    if (evcon != NULL) {
        struct evkeyvalq *out = evhttp_request_get_output_headers(req->ev);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
        struct timeval wtv = {req->srv->limits.timeout_s, 0};

        unwatch_close(req, evcon);
        nf_http_body_answering(req);
        evhttp_remove_header(out, "Content-Type");
        evhttp_add_header(out, "Content-Type",
                          content_type != NULL ? content_type : "text/event-stream");
        /* evhttp answers in chunks only when no Content-Length is set */
        evhttp_remove_header(out, "Content-Length");
        if (content_length >= 0) {
            char len[32];
            snprintf(len, sizeof(len), "%lld", content_length);
            evhttp_add_header(out, "Content-Length", len);
        }
        if (evhttp_find_header(out, "Cache-Control") == NULL)
            evhttp_add_header(out, "Cache-Control", "no-cache");
        req->srv->replying = true;
        evhttp_send_reply_start(req->ev, status, nf_http_reason_phrase(status));
        req->srv->replying = false;
        /* The client says nothing while it listens: no read timeout, but a stalled
         * reader is still dropped after timeout_s. */
        bufferevent_set_timeouts(bev, NULL, &wtv);
    }
}

int nf_http_stream_send(struct nf_http_req *req, const void *buf, size_t len)
{
    struct evbuffer *chunk;

    if (!req->streaming || nf_http_req_conn(req) == NULL || req->gone)
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
    evcon = nf_http_req_conn(req);
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
    nf_http_req_done(req);
}

void nf_http_stream_abort(struct nf_http_req *req)
{
    struct evhttp_connection *evcon = nf_http_req_conn(req);

    req->on_close = NULL; /* the caller knows */
    if (req->streaming && evcon != NULL) {
        /* as a failed write: evhttp detaches req and frees the connection */
        bufferevent_trigger_event(evhttp_connection_get_bufferevent(evcon),
                                  BEV_EVENT_WRITING | BEV_EVENT_ERROR, 0);
    }
    nf_http_stream_end(req);
}

size_t nf_http_stream_pending(const struct nf_http_req *req)
{
    if (req->conn == NULL || req->gone || nf_http_req_conn(req) == NULL)
        return 0;
    return nf_http_conn_pending(req->conn);
}

void nf_http_stream_on_drain(struct nf_http_req *req, size_t low,
                             void (*fn)(struct nf_http_req *, void *), void *arg)
{
    req->on_drain = fn;
    req->on_drain_arg = arg;
    req->drain_low = low;
    if (fn != NULL && req->conn != NULL)
        nf_http_conn_wake_writer(req->conn); /* it calls fn when the queue is low enough */
}

void nf_http_stream_on_close(struct nf_http_req *req, void (*fn)(struct nf_http_req *, void *),
                             void *arg)
{
    struct evhttp_connection *evcon = nf_http_req_conn(req);

    req->on_close = fn;
    req->on_close_arg = arg;
    if (fn != NULL && !req->streaming && !req->watching && !req->gone && evcon != NULL)
        nf_http_watch_close(req, evcon);
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
    nf_http_new_request_id(id, sizeof(id));
    body = nf_http_error_body(code, NULL, msg, id);
    json = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (json == NULL)
        abort();
    hl = snprintf(head, sizeof(head),
                  "HTTP/1.%c %d %s\r\nContent-Type: application/json\r\n"
                  "Content-Length: %zu\r\nConnection: close\r\nX-Request-Id: %s\r\n\r\n",
                  p[off + 7], status,
                  nf_http_reason_phrase(status) != NULL ? nf_http_reason_phrase(status) : "Error",
                  strlen(json), id);
    if (off > 0) {
        prefix = nf_xmalloc(off);
        memcpy(prefix, p, off);
    }

    srv->replying = true;
    evbuffer_drain(buf, len); /* the filter's output: not frozen (nf_http_conn.c writes it) */
    if (prefix != NULL)
        evbuffer_add(buf, prefix, off);
    evbuffer_add(buf, head, (size_t)hl);
    evbuffer_add(buf, json, strlen(json));
    srv->replying = false;

    free(prefix);
    free(json);
    nf_http_count_request(srv, "unmatched", "unknown", status);
    nf_log_kv(NF_LOG_DEBUG, "http_request", "request refused by the parser", "code", code,
              "request_id", id, NULL);
}

/*
 * Output buffer callback of every server connection. Our answers are queued with
 * srv->replying set; anything else is evhttp answering by itself. Once such an answer
 * (>= 400) sits complete in the buffer, it is replaced by the JSON error.
 */
void nf_http_on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
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
