/*
 * Live job events as Server-Sent Events (GET /api/jobs/{job_id}/events with
 * Accept: text/event-stream), and the same for a job's metric points
 * (GET /api/jobs/{job_id}/metrics?stream=true: "what" is metrics, event: metric).
 *
 *   start --> poll: nf-scheduler GET /internal/jobs/{id}/<what>?limit=100&cursor=<last>
 *   first page: 404 / 400 / 503 -> a JSON answer, done
 *               200 -> 200 text/event-stream, then every page:
 *     each event  -> "id: <cursor>\nevent: forge.job.<t>\ndata: <event JSON>\n\n"
 *     job ended and nothing more -> "event: end\ndata: {job_id, status}\n\n", end
 *     else -> poll again: at once (has_more) or after 250 ms; 15 s without a write ->
 *             ": keepalive" comment; a failed poll waits 1 s and tries again
 *   client gone (close callback or a failed write), gateway stopping -> end
 *
 * One struct sse per stream; it is freed in exactly one place (finish), never while a
 * scheduler call is out (that call's callback finishes it instead).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_event.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"

#define POLL_MS 250
#define FAIL_MS 1000
#define KEEPALIVE_MS 15000
#define PAGE_LIMIT 100

struct sse {
    struct gw_stream link; /* first: ctx->streams */
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    struct event *timer;
    char job_id[NF_ID_MAX];
    char user_id[NF_ID_MAX];
    char cursor[256]; /* after the last event sent ("" from the start) */
    const char *what; /* "events" or "metrics": the scheduler page polled (static) */
    uint64_t last_write_ms;
    bool started;  /* 200 and the headers are out */
    bool inflight; /* a scheduler call is out: its callback owns the next step */
    bool gone;     /* the client left */
};

static void poll_now(struct sse *s);

static void finish(struct sse *s)
{
    gw_stream_unlink(s->ctx, &s->link);
    if (s->timer)
        event_free(s->timer);
    if (s->started)
        nf_http_stream_end(s->req);
    else
        gw_reply_unavailable(s->req, 1, "the gateway is shutting down, try again");
    free(s);
}

static void on_link_close(struct gw_stream *st)
{
    finish((struct sse *)st); /* close: no call is out any more */
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sse *s = arg;

    if (s->gone || s->ctx->svc->stopping) {
        finish(s);
        return;
    }
    if (s->started && nf_now_ms() - s->last_write_ms >= KEEPALIVE_MS) {
        if (nf_http_stream_send(s->req, ": keepalive\n\n", 13) < 0) {
            finish(s);
            return;
        }
        s->last_write_ms = nf_now_ms();
    }
    poll_now(s);
}

static void again(struct sse *s, int ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};

    evtimer_add(s->timer, &tv);
}

static void on_client_close(struct nf_http_req *req, void *arg)
{
    struct sse *s = arg;

    s->gone = true;
    if (!s->inflight) {
        evtimer_del(s->timer);
        finish(s);
    }
}

char *gw_sse_format(const cJSON *event)
{
    const char *type = nf_json_str(event, "type"), *cursor = nf_json_str(event, "cursor");
    char *json, *out;
    size_t n;

    if (!type || !*type || strpbrk(type, "\r\n") || (cursor && strpbrk(cursor, "\r\n")))
        return NULL;
    json = nf_json_print(event); /* compact: no newlines (they are escaped in strings) */
    n = strlen(json) + strlen(type) + (cursor ? strlen(cursor) : 0) + 32;
    out = nf_xmalloc(n);
    if (cursor)
        snprintf(out, n, "id: %s\nevent: %s\ndata: %s\n\n", cursor, type, json);
    else
        snprintf(out, n, "event: %s\ndata: %s\n\n", type, json);
    free(json);
    return out;
}

static bool terminal(const char *status)
{
    return status && (strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
                      strcmp(status, "cancelled") == 0 || strcmp(status, "dead_lettered") == 0);
}

/* Sends a page's events; false when the client is gone. */
static bool send_page(struct sse *s, const cJSON *page)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(page, "data"), *ev;
    char *frame;
    int rc;

    cJSON_ArrayForEach(ev, data)
    {
        frame = gw_sse_format(ev);
        if (!frame)
            continue;
        rc = nf_http_stream_send(s->req, frame, strlen(frame));
        free(frame);
        if (rc < 0)
            return false;
        s->last_write_ms = nf_now_ms();
    }
    return true;
}

static bool send_end(struct sse *s, const char *status)
{
    char buf[256];
    int n =
        snprintf(buf, sizeof(buf), "event: end\ndata: {\"job_id\":\"%s\",\"status\":\"%s\"}\n\n",
                 s->job_id, status);

    return n > 0 && (size_t)n < sizeof(buf) && nf_http_stream_send(s->req, buf, (size_t)n) == 0;
}

/* The first page decides the answer: anything but 200 is relayed as JSON. */
static bool first_answer(struct sse *s, const struct nf_http_resp *resp)
{
    if (resp->status == 200) {
        nf_http_set_header(s->req, "X-Accel-Buffering", "no");
        nf_http_stream_start(s->req, 200, "text/event-stream");
        s->started = true;
        s->last_write_ms = nf_now_ms();
        return true;
    }
    gw_stream_unlink(s->ctx, &s->link);
    event_free(s->timer);
    if (resp->status == 404 || resp->status == 400) {
        nf_http_reply_raw(s->req, resp->status, "application/json", resp->body, resp->len);
    } else {
        nf_log_kv(NF_LOG_WARN, "scheduler_unavailable", "job events read failed", "job_id",
                  s->job_id, "error", resp->error ? resp->error : "unexpected status", NULL);
        gw_backend_error(s->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(s->req, 1, "the job store is unavailable, try again");
    }
    free(s);
    return false;
}

static void on_page(const struct nf_http_resp *resp, void *arg)
{
    struct sse *s = arg;
    const char *next, *status;
    cJSON *page;
    bool more;

    s->inflight = false;
    if (s->gone || s->ctx->svc->stopping) {
        finish(s);
        return;
    }
    if (!s->started && !first_answer(s, resp))
        return;
    if (resp->status != 200) {
        gw_backend_error(s->ctx, GW_BACKEND_SCHEDULER);
        again(s, FAIL_MS);
        return;
    }
    page = nf_json_parse(resp->body, resp->len);
    if (!page) {
        again(s, FAIL_MS);
        return;
    }
    if (!send_page(s, page)) {
        cJSON_Delete(page);
        finish(s);
        return;
    }
    next = nf_json_str(page, "next_cursor");
    if (next && strlen(next) < sizeof(s->cursor))
        snprintf(s->cursor, sizeof(s->cursor), "%s", next);
    more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(page, "has_more"));
    status = nf_json_str(page, "job_status");
    if (!more && terminal(status)) {
        send_end(s, status);
        cJSON_Delete(page);
        finish(s);
        return;
    }
    cJSON_Delete(page);
    again(s, more ? 0 : POLL_MS);
}

static void poll_now(struct sse *s)
{
    char path[512];
    const char *headers[] = {"X-Nf-User-Id", s->user_id, "X-Request-Id", nf_http_req_id(s->req),
                             NULL};
    struct nf_http_resp fail = {0};

    snprintf(path, sizeof(path), "/internal/jobs/%s/%s?limit=%d%s%s", s->job_id, s->what,
             PAGE_LIMIT, s->cursor[0] ? "&cursor=" : "", s->cursor);
    s->inflight = true;
    if (!s->ctx->sched ||
        nf_http_client_request(s->ctx->sched, "GET", path, headers, NULL, 0, 0, on_page, s) != 0) {
        fail.error = "could not send the request";
        on_page(&fail, s);
    }
}

static bool cursor_chars_ok(const char *c)
{
    for (; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_'))
            return false;
    return true;
}

void gw_sse_start(struct gw_ctx *ctx, struct nf_http_req *req, const char *job_id,
                  const char *user_id, const char *last_event_id, const char *what)
{
    struct sse *s;

    if (last_event_id &&
        (strlen(last_event_id) >= sizeof(s->cursor) || !cursor_chars_ok(last_event_id))) {
        nf_http_reply_error(req, 400, "invalid_query", "Last-Event-ID",
                            "Last-Event-ID must be the id of an event of this stream");
        return;
    }
    s = nf_xcalloc(1, sizeof(*s));
    s->ctx = ctx;
    s->req = req;
    s->link.close = on_link_close;
    s->what = strcmp(what, "metrics") == 0 ? "metrics" : "events";
    snprintf(s->job_id, sizeof(s->job_id), "%s", job_id);
    snprintf(s->user_id, sizeof(s->user_id), "%s", user_id);
    if (last_event_id)
        snprintf(s->cursor, sizeof(s->cursor), "%s", last_event_id);
    s->timer = evtimer_new(ctx->svc->base, on_timer, s);
    if (!s->timer)
        abort();
    gw_stream_link(ctx, &s->link);
    nf_http_stream_on_close(req, on_client_close, s);
    poll_now(s);
}
