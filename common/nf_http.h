#pragma once
/*
 * nf_http: the HTTP server every service runs, on libevent's evhttp.
 *
 *   client --> evhttp --> [size limits, timeouts] --> route match (method + pattern with
 *   {params}) --> handler(req, arg) ... later ... nf_http_reply_*(req) --> request freed
 *
 * - Routes: patterns such as "/api/jobs/{job_id}/events"; a {name} segment matches one
 *   non-empty path segment; a trailing "/" in the request is ignored except for "/" itself.
 *   No route for the path -> 404 JSON; path known but method not -> 405 JSON.
 * - Every request gets a request id: the client's X-Request-Id when it is sane
 *   (<= 64 chars of [A-Za-z0-9._-]), else "req_<ULID>". It is echoed in the X-Request-Id
 *   answer header and in every JSON error body.
 * - Body larger than limits.max_body -> 413 JSON; headers larger than max_headers -> 431
 *   (evhttp's own answer); idle connections close after timeout_s.
 * - Streaming routes (nf_http_route_stream) get their request body piece by piece, with
 *   backpressure, instead of whole in memory: see "Streamed request bodies" below.
 * - Streamed answers can have a length and wait for the client: nf_http_stream_start_len,
 *   nf_http_stream_pending, nf_http_stream_on_drain.
 * - Built-in routes: GET /healthz (always 200 {"status":"ok"}), GET /readyz (200 or 503
 *   with {"status", "checks": {...}} from the ready callback), GET /metrics (Prometheus
 *   text from the registry). Each request is counted in nf_http_requests_total{route,
 *   method,status} and timed in nf_http_request_duration_seconds{route}.
 *
 * Ownership and lifetime: the handler owns `req` until it calls exactly one nf_http_reply_*
 * function, synchronously or later from another callback. If the client goes away first,
 * `req` stays valid and the reply is silently dropped; the reply call always frees req.
 * Request accessors return pointers owned by req, valid until the reply.
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nf_http_server;
struct nf_http_req;
struct nf_metrics;

typedef void (*nf_http_handler)(struct nf_http_req *req, void *arg);
/* Fills `checks` with {"kafka": "ok", "redis": "down", ...}; returns true when ready. */
typedef bool (*nf_http_ready_fn)(cJSON *checks, void *arg);

struct nf_http_limits {
    size_t max_body;    /* bytes; default 1 MiB when 0 */
    size_t max_headers; /* bytes; default 16 KiB when 0 */
    int timeout_s;      /* idle/read timeout; default 30 when 0 */
    bool json_only;     /* a whole body declared as another media type than JSON: 415 (every
                           service's API; a test server of XML or text leaves it false) */
};

/*
 * Binds host:port (SO_REUSEPORT when reuseport, so N processes can share the port); port 0
 * picks a free port (nf_http_server_port tells which). host NULL or "" binds all
 * addresses. metrics may be NULL (then /metrics answers an empty body); it is not owned and
 * must outlive the server. -1 if binding fails (logged), *out untouched. Also sets SIGPIPE
 * to ignored if it was at its default.
 */
int nf_http_server_new(struct nf_http_server **out, struct event_base *base, const char *host,
                       int port, const struct nf_http_limits *limits, bool reuseport,
                       struct nf_metrics *metrics);
/*
 * Stops accepting and frees the server; in-flight requests are answered 503 first. A
 * handler still holding such a req still owns it: its reply call is then a no-op that
 * frees req (accessors keep working until then).
 */
void nf_http_server_free(struct nf_http_server *srv);
/* The bound port (useful with port 0, which picks a free one); -1 for NULL. */
int nf_http_server_port(const struct nf_http_server *srv);
/*
 * Graceful stop: closes the listening socket (with SO_REUSEPORT the kernel sends new
 * connections to the other processes), answers on open connections carry
 * "Connection: close", and /readyz answers 503. Requests in flight are unaffected.
 */
void nf_http_server_stop(struct nf_http_server *srv);
/* method: "GET", "POST", "PUT", "DELETE", "PATCH". pattern and method are copied. */
int nf_http_route(struct nf_http_server *srv, const char *method, const char *pattern,
                  nf_http_handler fn, void *arg);
void nf_http_set_ready(struct nf_http_server *srv, nf_http_ready_fn fn, void *arg);
/* Number of requests accepted but not yet answered (for graceful shutdown). */
size_t nf_http_inflight(const struct nf_http_server *srv);

/* Request accessors. Header names are case-insensitive. NULL when absent. */
const char *nf_http_req_method(const struct nf_http_req *req);
const char *nf_http_req_path(const struct nf_http_req *req);  /* raw, without query string */
const char *nf_http_req_route(const struct nf_http_req *req); /* the matched pattern */
const char *nf_http_req_param(const struct nf_http_req *req, const char *name); /* {name} */
const char *nf_http_req_query(const struct nf_http_req *req, const char *name); /* decoded */
/* The raw query string as received (still percent-encoded, no '?'), NULL when none. */
const char *nf_http_req_query_string(const struct nf_http_req *req);
const char *nf_http_req_header(const struct nf_http_req *req, const char *name);
const char *nf_http_req_id(const struct nf_http_req *req);
const char *nf_http_req_peer(const struct nf_http_req *req); /* client IP address */
/* The body (NUL-terminated copy); *len may be NULL. Empty body -> "" and 0. */
const char *nf_http_req_body(struct nf_http_req *req, size_t *len);
/*
 * Parses the body as a JSON object. On success returns it (owned by req, freed with it).
 * On a missing or malformed body or a non-object, answers 400 invalid_json itself and
 * returns NULL: the handler must then return without replying again.
 */
cJSON *nf_http_req_json(struct nf_http_req *req);
/* Per-request slot for the handler's own state (not freed by nf_http). */
void nf_http_req_set_data(struct nf_http_req *req, void *data);
void *nf_http_req_data(const struct nf_http_req *req);

/* Adds a header to the answer (before the reply). name and value are copied. */
void nf_http_set_header(struct nf_http_req *req, const char *name, const char *value);

/* Replies. Each frees req. body is consumed (freed) by nf_http_reply_json. */
void nf_http_reply_json(struct nf_http_req *req, int status, cJSON *body);
void nf_http_reply_raw(struct nf_http_req *req, int status, const char *content_type,
                       const void *body, size_t len);
/* {"error": {"code", "message", "param"?, "request_id"}}; param may be NULL. */
void nf_http_reply_error(struct nf_http_req *req, int status, const char *code, const char *param,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * Streaming answers (text/event-stream): start once, send chunks, end once (end frees
 * req). nf_http_stream_send returns -1 when the client went away; the caller must still
 * call nf_http_stream_end.
 */
void nf_http_stream_start(struct nf_http_req *req, int status, const char *content_type);
int nf_http_stream_send(struct nf_http_req *req, const void *buf, size_t len);
void nf_http_stream_end(struct nf_http_req *req);
/*
 * A streamed answer of content_length bytes (>= 0: sent as Content-Length, not chunked:
 * the caller then sends exactly that many; -1: unknown, chunked). Otherwise as
 * nf_http_stream_start (which is this with -1).
 */
void nf_http_stream_start_len(struct nf_http_req *req, int status, const char *content_type,
                              long long content_length);
/* Bytes of the answer queued in the process and not yet taken by the kernel; 0 once the
 * client is gone. A sender keeps this bounded with nf_http_stream_on_drain. */
size_t nf_http_stream_pending(const struct nf_http_req *req);
/*
 * Calls fn(req, arg) once, from the loop (never inside this call), when the queued bytes
 * have dropped to low or less (soon when they already are). One at a time: a new call
 * replaces the previous; fn NULL cancels. Not called if the client goes away (on_close
 * is) or the answer ends first.
 */
void nf_http_stream_on_drain(struct nf_http_req *req, size_t low,
                             void (*fn)(struct nf_http_req *, void *), void *arg);
/*
 * Ends a streamed answer that cannot be completed (its source broke after the head went
 * out with a Content-Length): the connection is closed at once, so the client sees a short
 * answer instead of waiting for the rest. Frees req, as nf_http_stream_end; the on_close
 * callback does not fire.
 */
void nf_http_stream_abort(struct nf_http_req *req);
/*
 * Called once if the client closes a streaming answer early (then stream_send fails).
 * Also for a request still waiting for its answer (a long poll): set it there and fn is
 * called once if the client disconnects before the reply, which is still owed (and
 * dropped). fn may reply or end the stream itself.
 */
void nf_http_stream_on_close(struct nf_http_req *req, void (*fn)(struct nf_http_req *, void *),
                             void *arg);

/*
 * ---- Streamed request bodies ----
 *
 *   client --> connection filter: the head of a request for a streaming route goes on to
 *     evhttp at once (as if it had no body), its body stays in the socket buffer
 *     (<= 256 KiB; the socket is not read further) --> handler(req) --> (auth, ...)
 *     --> nf_http_req_body_stream(req, on_data, on_end) --> on_data(bytes) ... on_data
 *     answers PAUSE: nothing more is read until nf_http_req_body_resume
 *     --> on_end(COMPLETE) --> the handler answers
 *
 * - Content-Length and chunked bodies (de-chunked) alike; "Expect: 100-continue" is
 *   answered when the handler starts reading the body.
 * - The body ends once, with on_end: COMPLETE after the last byte; TOO_LARGE when it
 *   exceeds the route's max_body (answer 413); TIMEOUT when the client sent nothing for
 *   the server's timeout while the handler was reading (answer 408); MALFORMED for broken
 *   chunked framing (answer 400); GONE when the client closed the connection (answer
 *   anyway: the answer is dropped).
 * - The handler may answer at any time, also inside on_data or before reading at all (an
 *   authentication failure): an answer before the whole body was read carries
 *   "Connection: close", the rest of the body is read and dropped until the client closes
 *   (a lingering close, so that the client sees the answer), and no callback fires after
 *   the answer call.
 * - Falls back to evhttp's buffering (the server's max_body; larger: 413 before the
 *   handler runs) on a connection whose framing the filter stopped following (a chunked
 *   body of an ordinary route, say, or an unusual head): the handler's code is the same,
 *   on_data then gets the whole body at once.
 * - Pipelined requests keep their order.
 */

/* on_data's answer: keep the bytes coming, or stop until nf_http_req_body_resume. */
enum { NF_HTTP_BODY_GO = 0, NF_HTTP_BODY_PAUSE = 1 };

/* How a streamed body ended. */
enum nf_http_body_end {
    NF_HTTP_BODY_COMPLETE,  /* every byte was delivered */
    NF_HTTP_BODY_GONE,      /* the client closed the connection */
    NF_HTTP_BODY_TOO_LARGE, /* more than the route's max_body */
    NF_HTTP_BODY_TIMEOUT,   /* no byte for the server's timeout_s */
    NF_HTTP_BODY_MALFORMED, /* broken chunked framing */
};

/* Body bytes (buf lives during the call); returns NF_HTTP_BODY_GO or NF_HTTP_BODY_PAUSE. */
typedef int (*nf_http_body_data_fn)(const char *buf, size_t len, void *arg);
typedef void (*nf_http_body_end_fn)(enum nf_http_body_end how, void *arg);

/*
 * A route whose request body is streamed (as nf_http_route otherwise): max_body bounds it
 * (0: no bound; the server's limits.max_body does not apply).
 */
int nf_http_route_stream(struct nf_http_server *srv, const char *method, const char *pattern,
                         nf_http_handler fn, void *arg, uint64_t max_body);
/*
 * Starts reading the body (once per request): on_data 0..n times, then on_end once (see
 * above), each from the loop, never inside this call or nf_http_req_body_resume. Works for
 * any route (an ordinary one's body is delivered from memory). arg is not owned.
 */
void nf_http_req_body_stream(struct nf_http_req *req, nf_http_body_data_fn on_data,
                             nf_http_body_end_fn on_end, void *arg);
/* Lets a paused body go on (no-op when not paused). */
void nf_http_req_body_resume(struct nf_http_req *req);
/* The body's length when known: a streamed body's Content-Length, a buffered body's size
 * once nf_http_req_body_stream ran; -1 otherwise (chunked, or not started). */
long long nf_http_req_body_length(const struct nf_http_req *req);
