/*
 * The deployment proxy (DESIGN §15): a deploy job's OpenAI-compatible endpoint, reached
 * by its owner with the API key, metered per request.
 *
 *   GET  /api/deployments/{id}/v1/models
 *   POST /api/deployments/{id}/v1/completions, .../v1/chat/completions
 *     --> gw_keys_auth (X-Nexa-Api-Key or Authorization: Bearer, as every /api route;
 *         the body is bounded by NF_GATEWAY_MAX_BODY: 413)
 *     --> the record from nf-scheduler as the caller (another account's: 404); not ready:
 *         409 (stopped or failed, with why); a ready one is kept GW_DEP_CACHE_TTL_MS
 *         (ctx->dep_cache, per deployment and owner), so a burst of requests asks once
 *     --> the same method, path (/v1/...) and body to the endpoint, over a keep-alive
 *         connection of the pool (POOL_N idle ones, by endpoint) or a new one; a kept one
 *         that fails before any answer is tried once more on a new one
 *   <-- head: text/event-stream --> the client's answer starts (chunked) and every piece
 *         goes on as it comes: endpoint --on_chunk--> nf_http_stream_send --> more than
 *         UP_HIGH queued for the client? stop reading the endpoint's socket (TCP pushes
 *         back on the endpoint) --nf_http_stream_on_drain(UP_LOW)--> read again
 *       head: anything else --> held (at most BODY_MAX) and relayed whole at the end
 *   <-- end --> usage: the stream's `: usage {...}` comment or the JSON answer's usage
 *         --> forge.usage.recorded (input_tokens, output_tokens) on the deploy job, ids
 *         from a per-request ULID (a redelivered message is billed once)
 *
 *   endpoint refuses / breaks before answering --> 503 and the deployment marked failed
 *   (its worker or process is gone; the endpoint exits with its worker agent)
 *   no answer within PROXY_TIMEOUT_S --> 504, nothing marked
 *   client gone --> the endpoint's request is cancelled (its connection closes: the
 *   endpoint stops generating); gateway closing --> 503 or the stream cut
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "deploy.h"
#include "nf_id.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_time.h"
#include "routes.h"

#define PROXY_TIMEOUT_S 300        /* a generation on a CPU worker may take minutes */
#define UP_HIGH (256 * 1024)       /* queued for the client: stop reading the endpoint */
#define UP_LOW (64 * 1024)         /* ... and read again */
#define BODY_MAX (8 * 1024 * 1024) /* a non-streamed answer, held whole */

/* One proxied request; freed by finish on every path. */
struct proxy {
    struct gw_stream link; /* first: ctx->streams */
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    struct evhttp_connection *evcon; /* ours until given back to the pool or freed */
    struct evhttp_request *ev;       /* the endpoint's request, NULL once over */
    struct evbuffer *body;           /* a non-streamed answer */
    struct gw_sse_usage usage;
    char user_id[NF_ID_MAX];
    char job_id[NF_ID_MAX];
    char dep_id[GW_DEP_ID_LEN + 1];
    char uid[NF_ID_MAX]; /* this request's own id (the usage events') */
    char path[48];       /* /v1/... on the endpoint */
    char ctype[128];
    char host[GW_DEP_HOST_MAX + 1]; /* the endpoint */
    int port;
    int status;
    int64_t start_ms;
    bool sse;       /* the answer is a stream, started */
    bool paused;    /* the endpoint's socket is not read */
    bool timed_out; /* evhttp's timeout */
    bool too_large; /* a held answer passed BODY_MAX */
    bool reused;    /* evcon came from the pool */
    bool retried;   /* ... and failed: this is the second try, on a new connection */
};

/* ---- keep-alive connections to the endpoints ------------------------------------------- */

#define POOL_N 32 /* idle connections kept, all endpoints together */

/* Idle connections, by endpoint (host:port identifies one deployment's endpoint; which
 * caller may use it was decided before a connection is taken). */
struct gw_dep_pool {
    struct evhttp_connection *evcon[POOL_N]; /* NULL: a free slot */
    char host[POOL_N][GW_DEP_HOST_MAX + 1];
    int port[POOL_N];
};

static void free_evcon(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evhttp_connection_free(arg);
}

/* Frees evcon from the loop: inside one of its own callbacks it is still in use. */
static void free_later(struct gw_ctx *ctx, struct evhttp_connection *evcon)
{
    if (evcon != NULL &&
        event_base_once(ctx->svc->base, -1, EV_TIMEOUT, free_evcon, evcon, NULL) != 0)
        nf_log_kv(NF_LOG_WARN, "evcon_leak", "could not schedule a connection's free", NULL);
}

static struct evhttp_connection *pool_take(struct gw_ctx *ctx, const char *host, int port)
{
    struct gw_dep_pool *pool = ctx->dep_pool;
    struct evhttp_connection *evcon;

    for (int i = 0; pool != NULL && i < POOL_N; i++) {
        if (pool->evcon[i] != NULL && pool->port[i] == port && strcmp(pool->host[i], host) == 0) {
            evcon = pool->evcon[i];
            pool->evcon[i] = NULL;
            return evcon;
        }
    }
    return NULL;
}

/* Keeps an idle connection (evhttp reconnects it if the endpoint closed it meanwhile);
 * the pool full or the gateway closing: freed from the loop. */
static void pool_give(struct gw_ctx *ctx, struct evhttp_connection *evcon, const char *host,
                      int port)
{
    struct gw_dep_pool *pool;

    if (ctx->svc->closing) {
        free_later(ctx, evcon);
        return;
    }
    if (ctx->dep_pool == NULL)
        ctx->dep_pool = nf_xcalloc(1, sizeof(*ctx->dep_pool));
    pool = ctx->dep_pool;
    for (int i = 0; i < POOL_N; i++) {
        if (pool->evcon[i] == NULL) {
            pool->evcon[i] = evcon;
            snprintf(pool->host[i], sizeof(pool->host[i]), "%s", host);
            pool->port[i] = port;
            return;
        }
    }
    free_later(ctx, evcon);
}

void gw_dep_pool_free(struct gw_ctx *ctx)
{
    struct gw_dep_pool *pool = ctx->dep_pool;

    ctx->dep_pool = NULL;
    for (int i = 0; pool != NULL && i < POOL_N; i++)
        if (pool->evcon[i] != NULL)
            evhttp_connection_free(pool->evcon[i]);
    free(pool);
}

/* ---- metering ------------------------------------------------------------------------- */

static void on_delivered(int err, const char *errstr, void *arg)
{
    char *id = arg;

    if (err != 0)
        nf_log_kv(NF_LOG_WARN, "usage_produce_failed", "a deployment's usage was not delivered",
                  "event_id", id, "error", errstr, NULL);
    free(id);
}

static void produce(struct proxy *p, const struct gw_dep_usage *u, const char *meter,
                    long long quantity)
{
    cJSON *ev;
    char *payload, *id;

    if (quantity <= 0 || !p->ctx->svc->producer)
        return;
    ev = gw_dep_usage_event(u, meter, quantity);
    payload = nf_json_print(ev);
    id = nf_xstrdup(nf_json_str(ev, "id"));
    /* keyed by the subject, the user, as every forge.usage message */
    if (nf_kafka_produce(p->ctx->svc->producer, NF_TOPIC_USAGE, p->user_id, payload,
                         strlen(payload), on_delivered, id) != 0) {
        nf_log_kv(NF_LOG_WARN, "usage_produce_failed", "a deployment's usage was not queued",
                  "event_id", id, NULL);
        gw_backend_error(p->ctx, GW_BACKEND_KAFKA);
        free(id);
    }
    free(payload);
    cJSON_Delete(ev);
}

static void meter(struct proxy *p, long long prompt, long long completion)
{
    struct gw_dep_usage u = {
        .user_id = p->user_id,
        .job_id = p->job_id,
        .dep_id = p->dep_id,
        .request_uid = p->uid,
        .start_ms = p->start_ms,
        .end_ms = (int64_t)nf_now_ms(),
    };

    produce(p, &u, "input_tokens", prompt);
    produce(p, &u, "output_tokens", completion);
}

static void start_upstream(struct proxy *p, const char *host, int port);

/* ---- the end ---------------------------------------------------------------------------- */

static void finish(struct proxy *p)
{
    gw_stream_unlink(p->ctx, &p->link);
    if (p->body)
        evbuffer_free(p->body);
    free(p);
}

/* Takes the endpoint's request away (its connection closes: the endpoint stops
 * generating) and frees the connection, now or from the loop. */
static void cancel_upstream(struct proxy *p, bool now)
{
    struct evhttp_request *ev = p->ev;

    p->ev = NULL;
    if (ev != NULL)
        evhttp_cancel_request(ev); /* on_error sees REQUEST_CANCEL; on_done is not called */
    if (p->evcon != NULL && now)
        evhttp_connection_free(p->evcon);
    else
        free_later(p->ctx, p->evcon);
    p->evcon = NULL;
}

/* The client left: the endpoint's request goes too; what the stream metered counts. */
static void on_client_gone(struct nf_http_req *req, void *arg)
{
    struct proxy *p = arg;

    cancel_upstream(p, false);
    if (p->sse) {
        if (gw_sse_usage_found(&p->usage))
            meter(p, p->usage.prompt, p->usage.completion);
        nf_http_stream_end(req);
    } else {
        gw_reply_unavailable(req, 1, "client gone"); /* dropped */
    }
    finish(p);
}

/* The gateway is closing. */
static void on_link_close(struct gw_stream *st)
{
    struct proxy *p = (struct proxy *)st;

    cancel_upstream(p, true);
    if (p->sse)
        nf_http_stream_abort(p->req);
    else
        gw_reply_unavailable(p->req, 1, "the gateway is shutting down, try again");
    finish(p);
}

/* ---- the endpoint's answer --------------------------------------------------------------- */

static int on_head(struct evhttp_request *ev, void *arg)
{
    struct proxy *p = arg;
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(ev), "Content-Type");

    p->status = evhttp_request_get_response_code(ev);
    snprintf(p->ctype, sizeof(p->ctype), "%s", ct ? ct : "application/json");
    if (p->status == 200 && strncasecmp(p->ctype, "text/event-stream", 17) == 0) {
        nf_http_set_header(p->req, "Cache-Control", "no-cache");
        nf_http_set_header(p->req, "X-Accel-Buffering", "no");
        nf_http_stream_start(p->req, 200, p->ctype);
        p->sse = true;
    } else {
        p->body = evbuffer_new();
        if (p->body == NULL)
            abort();
    }
    return 0;
}

static void on_drained(struct nf_http_req *req, void *arg)
{
    struct proxy *p = arg;
    struct bufferevent *bev;

    (void)req;
    if (!p->paused || p->ev == NULL)
        return;
    p->paused = false;
    bev = evhttp_connection_get_bufferevent(p->evcon);
    bufferevent_enable(bev, EV_READ);
    /* bytes already read into the buffer would otherwise wait for the next packet */
    bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Body bytes as they arrive (evhttp drains its buffer after this). */
static void on_chunk(struct evhttp_request *ev, void *arg)
{
    struct proxy *p = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(ev);
    size_t len = evbuffer_get_length(in);
    const char *buf;

    if (!p->sse) {
        if (evbuffer_get_length(p->body) + len > BODY_MAX)
            p->too_large = true;
        else
            evbuffer_add_buffer(p->body, in);
        return;
    }
    buf = (const char *)evbuffer_pullup(in, -1);
    if (buf == NULL || len == 0)
        return;
    gw_sse_usage_feed(&p->usage, buf, len);
    if (nf_http_stream_send(p->req, buf, len) < 0)
        return; /* the client left: on_client_gone cancels */
    if (nf_http_stream_pending(p->req) > UP_HIGH && !p->paused) {
        p->paused = true;
        bufferevent_disable(evhttp_connection_get_bufferevent(p->evcon), EV_READ);
        nf_http_stream_on_drain(p->req, UP_LOW, on_drained, p);
    }
}

static void on_error(enum evhttp_request_error err, void *arg)
{
    struct proxy *p = arg;

    if (err == EVREQ_HTTP_TIMEOUT)
        p->timed_out = true;
}

/* The endpoint's answer ended: ev NULL or without a status when it failed. */
static void on_done(struct evhttp_request *ev, void *arg)
{
    struct proxy *p = arg;
    bool ok = ev != NULL && evhttp_request_get_response_code(ev) != 0;
    long long prompt, completion;
    size_t len;
    char why[160];

    p->ev = NULL; /* evhttp frees it when this returns */
    if (!ok && !p->sse && p->body == NULL && p->reused && !p->retried && !p->timed_out) {
        /* a kept connection the endpoint closed as we sent: once more, on a new one */
        free_later(p->ctx, p->evcon);
        p->evcon = NULL;
        p->retried = true;
        start_upstream(p, p->host, p->port);
        return;
    }
    if (ok)
        pool_give(p->ctx, p->evcon, p->host, p->port);
    else
        free_later(p->ctx, p->evcon);
    p->evcon = NULL;
    if (p->sse) {
        if (gw_sse_usage_found(&p->usage))
            meter(p, p->usage.prompt, p->usage.completion);
        if (ok)
            nf_http_stream_end(p->req);
        else
            nf_http_stream_abort(p->req);
    } else if (ok && p->body != NULL && !p->too_large) {
        len = evbuffer_get_length(p->body);
        const char *body = (const char *)evbuffer_pullup(p->body, -1);
        if (p->status == 200 && gw_dep_json_usage(body ? body : "", len, &prompt, &completion) == 0)
            meter(p, prompt, completion);
        nf_http_reply_raw(p->req, p->status, p->ctype, body ? body : "", len);
    } else if (p->too_large) {
        nf_http_reply_error(p->req, 502, "bad_gateway", NULL,
                            "the deployment's answer is larger than %d bytes", BODY_MAX);
    } else if (p->timed_out) {
        nf_http_reply_error(p->req, 504, "gateway_timeout", NULL,
                            "the deployment did not answer within %d s", PROXY_TIMEOUT_S);
    } else {
        snprintf(why, sizeof(why),
                 "its endpoint stopped answering (connection refused or "
                 "closed); deploy the model again");
        gw_dep_mark_failed(p->ctx, p->user_id, p->dep_id, why);
        gw_reply_unavailable(p->req, 5, "the deployment's endpoint is gone: it is marked failed");
    }
    finish(p);
}

/* ---- the request ------------------------------------------------------------------------- */

/* Sends the request to host:port over a kept connection (not on a retry) or a new one. */
static void start_upstream(struct proxy *p, const char *host, int port)
{
    struct nf_http_req *req = p->req;
    const char *method = nf_http_req_method(req), *ct = nf_http_req_header(req, "Content-Type");
    const char *accept = nf_http_req_header(req, "Accept"), *body = NULL;
    bool post = strcmp(method, "POST") == 0;
    struct evkeyvalq *out;
    char hosthdr[GW_DEP_HOST_MAX + 8], cl[32];
    size_t len = 0;

    if (host != p->host)
        snprintf(p->host, sizeof(p->host), "%s", host);
    p->port = port;
    p->evcon = p->retried ? NULL : pool_take(p->ctx, host, port);
    p->reused = p->evcon != NULL;
    if (p->evcon == NULL) {
        p->evcon = evhttp_connection_base_new(p->ctx->svc->base, NULL, host, (ev_uint16_t)port);
        if (p->evcon == NULL)
            goto fail;
        evhttp_connection_set_retries(p->evcon, 0);
        evhttp_connection_set_timeout(p->evcon, PROXY_TIMEOUT_S);
    }
    p->ev = evhttp_request_new(on_done, p);
    if (p->ev == NULL)
        goto fail_conn;
    evhttp_request_set_header_cb(p->ev, on_head);
    evhttp_request_set_chunked_cb(p->ev, on_chunk);
    evhttp_request_set_error_cb(p->ev, on_error);
    out = evhttp_request_get_output_headers(p->ev);
    snprintf(hosthdr, sizeof(hosthdr), "%s:%d", host, port);
    evhttp_add_header(out, "Host", hosthdr);
    evhttp_add_header(out, "X-Request-Id", nf_http_req_id(req));
    if (accept != NULL)
        evhttp_add_header(out, "Accept", accept);
    if (post) {
        body = nf_http_req_body(req, &len);
        evhttp_add_header(out, "Content-Type", ct ? ct : "application/json");
        snprintf(cl, sizeof(cl), "%zu", len);
        evhttp_add_header(out, "Content-Length", cl);
        evbuffer_add(evhttp_request_get_output_buffer(p->ev), body, len);
    }
    if (evhttp_make_request(p->evcon, p->ev, post ? EVHTTP_REQ_POST : EVHTTP_REQ_GET, p->path) !=
        0) {
        evhttp_request_free(p->ev); /* not queued: still ours */
        p->ev = NULL;
        goto fail_conn;
    }
    nf_http_stream_on_close(req, on_client_gone, p);
    return;

fail_conn:
    evhttp_connection_free(p->evcon);
    p->evcon = NULL;
fail:
    gw_reply_unavailable(req, 1, "cannot reach the deployment now, try again");
    finish(p);
}

static void on_record(struct gw_ctx *ctx, struct nf_http_req *req, const cJSON *rec, void *arg)
{
    struct proxy *p = arg;
    const char *status = nf_json_str(rec, "status"), *job = nf_json_str(rec, "job_id");
    const char *failure = nf_json_str(rec, "failure");
    char host[GW_DEP_HOST_MAX + 1];
    struct gw_dep_cached seen;
    int port;

    if (rec == NULL) { /* answered */
        finish(p);
        return;
    }
    if (status == NULL || strcmp(status, "ready") != 0) {
        nf_http_reply_error(req, 409, "deployment_not_ready", NULL,
                            "deployment %s is %s%s%s; deploy the model again to serve it",
                            p->dep_id, status ? status : "unknown", failure ? ": " : "",
                            failure ? failure : "");
        finish(p);
        return;
    }
    if (job == NULL || gw_dep_endpoint(nf_json_str(rec, "endpoint_url"), host, &port) != 0) {
        nf_log_kv(NF_LOG_WARN, "deployment_bad_record", "a deployment has no usable endpoint",
                  "deployment_id", p->dep_id, NULL);
        gw_reply_unavailable(req, 5, "the deployment's endpoint is unknown");
        finish(p);
        return;
    }
    snprintf(p->job_id, sizeof(p->job_id), "%s", job);
    if (ctx->dep_cache == NULL)
        ctx->dep_cache = nf_xcalloc(GW_DEP_CACHE_N, sizeof(*ctx->dep_cache));
    memset(&seen, 0, sizeof(seen));
    snprintf(seen.id, sizeof(seen.id), "%s", p->dep_id);
    snprintf(seen.user_id, sizeof(seen.user_id), "%s", p->user_id);
    snprintf(seen.job_id, sizeof(seen.job_id), "%s", job);
    snprintf(seen.host, sizeof(seen.host), "%s", host);
    seen.port = port;
    gw_dep_cache_put(ctx->dep_cache, &seen, nf_now_ms());
    start_upstream(p, host, port);
}

static void proxy_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                         const struct gw_principal *who)
{
    const char *id = nf_http_req_param(req, "deployment_id"), *path = nf_http_req_path(req);
    const char *v1 = path ? strstr(path, "/v1/") : NULL;
    const struct gw_dep_cached *hit;
    struct proxy *p;

    if (!gw_dep_id_valid(id) || v1 == NULL || strlen(v1) >= sizeof(p->path)) {
        nf_http_reply_error(req, 404, "not_found", NULL,
                            "no such deployment; GET /api/deployments lists yours");
        return;
    }
    p = nf_xcalloc(1, sizeof(*p));
    p->ctx = ctx;
    p->req = req;
    p->link.close = on_link_close;
    p->start_ms = (int64_t)nf_now_ms();
    gw_sse_usage_init(&p->usage);
    snprintf(p->user_id, sizeof(p->user_id), "%s", who->user_id);
    snprintf(p->dep_id, sizeof(p->dep_id), "%s", id);
    snprintf(p->path, sizeof(p->path), "%s", v1);
    /* trailing "/" (tolerated by the route) is not the endpoint's */
    if (strlen(p->path) > 4 && p->path[strlen(p->path) - 1] == '/')
        p->path[strlen(p->path) - 1] = '\0';
    if (nf_id_new("", p->uid, sizeof(p->uid)) != 0)
        snprintf(p->uid, sizeof(p->uid), "%s", nf_http_req_id(req));
    gw_stream_link(ctx, &p->link);
    hit = gw_dep_cache_find(ctx->dep_cache, id, who->user_id, nf_now_ms());
    if (hit != NULL) { /* seen ready within GW_DEP_CACHE_TTL_MS: no registry call */
        snprintf(p->job_id, sizeof(p->job_id), "%s", hit->job_id);
        start_upstream(p, hit->host, hit->port);
        return;
    }
    gw_dep_lookup(ctx, req, who->user_id, id, on_record, p);
}

GW_ROUTE_AUTHED(gw_deployments_proxy, proxy_authed)
