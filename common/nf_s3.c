/*
 * nf_s3: the async client's engine — curl multi driven by libevent (the socket and timer
 * callbacks of curl_multi_socket_action) and the request life cycle with its retries.
 * The operations a caller starts live in nf_s3_ops.c (HEAD, DELETE, copy, list, GET) and
 * nf_s3_put.c (streaming upload).
 *
 *   s3_req_new -> s3_req_start -> curl multi ... CURLMSG_DONE -> outcome (status, code)
 *     -> retryable and tries left? -> backoff timer -> curl multi again
 *     -> else r->done(r): the owner reads the outcome and frees r
 */
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_mem.h"
#include "nf_s3.h"
#include "nf_s3_internal.h"

/* One socket curl asked us to watch (curl_multi_assign keeps the pointer). */
struct s3_sock {
    struct s3_sock *prev, *next;
    struct nf_s3 *s3;
    curl_socket_t fd;
    struct event ev;
    bool added;
};

static void check_done(struct nf_s3 *s3);

/* ---- the loop side of curl multi ---- */

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
    struct nf_s3 *s3 = arg;
    int action =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running = 0;
    curl_multi_socket_action(s3->multi, fd, action, &running);
    check_done(s3);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct nf_s3 *s3 = arg;
    int running = 0;
    curl_multi_socket_action(s3->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(s3);
}

static void sock_drop(struct nf_s3 *s3, struct s3_sock *ss)
{
    if (ss->added)
        event_del(&ss->ev);
    if (ss->prev)
        ss->prev->next = ss->next;
    else
        s3->socks = ss->next;
    if (ss->next)
        ss->next->prev = ss->prev;
    free(ss);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants, or stop watching it. */
static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
    struct nf_s3 *s3 = arg;
    struct s3_sock *ss = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (ss != NULL) {
            curl_multi_assign(s3->multi, fd, NULL);
            sock_drop(s3, ss);
        }
        return 0;
    }
    if (ss == NULL) {
        ss = nf_xcalloc(1, sizeof(*ss));
        ss->s3 = s3;
        ss->fd = fd;
        ss->next = s3->socks;
        if (s3->socks)
            s3->socks->prev = ss;
        s3->socks = ss;
        curl_multi_assign(s3->multi, fd, ss);
    }
    if (ss->added) {
        event_del(&ss->ev);
        ss->added = false;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (kind == EV_PERSIST)
        return 0; /* CURL_POLL_NONE */
    event_assign(&ss->ev, s3->base, fd, kind, on_socket, s3);
    if (event_add(&ss->ev, NULL) == 0)
        ss->added = true;
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants on_timer in timeout_ms (-1: not at all). */
static int timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
    struct nf_s3 *s3 = arg;
    if (timeout_ms < 0) {
        evtimer_del(s3->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(s3->timer, &tv); /* 0 too: never call socket_action from inside curl */
    return 0;
}

/* ---- requests ---- */

static size_t write_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    struct s3_req *r = arg;
    size_t n = size * nmemb;
    if (r->sink != NULL && r->head.status >= 200 && r->head.status < 300)
        return r->sink(r, p, n);
    s3_buf_add(&r->resp, p, n);
    return n;
}

static size_t header_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    struct s3_req *r = arg;
    size_t n = size * nmemb;
    bool was = r->head.complete;
    s3_head_line(&r->head, p, n);
    if (!was && r->head.complete && r->on_head != NULL && !r->on_head(r))
        return 0; /* the owner aborts */
    return n;
}

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *arg)
{
    struct s3_req *r = arg;
    size_t n = size * nmemb;
    size_t left = r->body_len - r->body_off;
    if (n > left)
        n = left;
    if (n > 0)
        memcpy(buf, r->body + r->body_off, n);
    r->body_off += n;
    return n;
}

static int seek_cb(void *arg, curl_off_t off, int origin)
{
    struct s3_req *r = arg;
    if (origin != SEEK_SET || off < 0 || (size_t)off > r->body_len)
        return CURL_SEEKFUNC_FAIL;
    r->body_off = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

struct s3_req *s3_req_new(struct nf_s3 *s3, const char *method, const char *key, const char *query,
                          const char *const *extra, const char *body, size_t body_len,
                          long total_ms)
{
    struct s3_req *r = nf_xcalloc(1, sizeof(*r));
    r->s3 = s3;
    r->easy = curl_easy_init();
    if (r->easy == NULL)
        abort(); /* fails only when out of memory */
    r->hdrs = s3_headers(extra);
    r->url = s3_url(&s3->cfg, key, query);
    r->body = body;
    r->body_len = body_len;
    r->resp.max = S3_ERRBODY_MAX;
    s3_head_reset(&r->head);
    s3_easy_setup(r->easy, &s3->cfg, method, r->url, r->hdrs, total_ms);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->curl_err);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0) {
        curl_easy_setopt(r->easy, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(r->easy, CURLOPT_READDATA, r);
        curl_easy_setopt(r->easy, CURLOPT_SEEKFUNCTION, seek_cb);
        curl_easy_setopt(r->easy, CURLOPT_SEEKDATA, r);
        curl_easy_setopt(r->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_len);
    }
    r->next = s3->reqs;
    if (s3->reqs)
        s3->reqs->prev = r;
    s3->reqs = r;
    return r;
}

/* Clears what the last try left and hands r to curl. */
static void req_launch(struct s3_req *r)
{
    s3_head_reset(&r->head);
    s3_buf_reset(&r->resp);
    r->body_off = 0;
    r->curl_err[0] = '\0';
    r->rc = CURLE_OK;
    r->status = 0;
    r->code[0] = r->msg[0] = '\0';
    if (curl_multi_add_handle(r->s3->multi, r->easy) == CURLM_OK) {
        r->in_multi = true;
        return;
    }
    /* only on misuse or out of memory: finish as a transport error, from the loop */
    r->refused = true;
    r->rc = CURLE_FAILED_INIT;
    snprintf(r->curl_err, sizeof(r->curl_err), "curl refused the request");
    r->no_retry = true;
    event_active(r->wait, EV_TIMEOUT, 0);
}

static void req_finish(struct s3_req *r);

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
    struct s3_req *r = arg;
    if (r->refused)
        req_finish(r);
    else
        req_launch(r);
}

/* Handed to curl from the loop: curl refuses handles added from inside its callbacks
 * (a caller may start an operation from on_data). */
void s3_req_start(struct s3_req *r)
{
    r->wait = evtimer_new(r->s3->base, on_wait, r);
    if (r->wait == NULL)
        abort();
    event_active(r->wait, EV_TIMEOUT, 0);
}

bool s3_req_retry(struct s3_req *r)
{
    if (r->no_retry || r->tries >= NF_S3_RETRIES || r->s3->closing)
        return false;
    r->tries++;
    int ms = s3_backoff_ms(r->tries);
    struct timeval tv = {ms / 1000, (long)(ms % 1000) * 1000};
    nf_log_kv(NF_LOG_DEBUG, "s3_retry", "s3 request retried", "url", r->url, "code",
              r->code[0] ? r->code : NULL, "error", r->msg[0] ? r->msg : NULL, NULL);
    evtimer_add(r->wait, &tv);
    return true;
}

/* Sets r's outcome from curl's result code and the answer. */
static void req_outcome(struct s3_req *r)
{
    r->status = s3_outcome(r->rc, r->curl_err, &r->head, &r->resp, r->code, sizeof(r->code), r->msg,
                           sizeof(r->msg));
}

static void req_finish(struct s3_req *r)
{
    req_outcome(r);
    /* our own abort (a write callback said stop) is never retried */
    bool ours = r->rc == CURLE_WRITE_ERROR || r->rc == CURLE_ABORTED_BY_CALLBACK;
    if (!ours && s3_retryable(r->status, r->code) && s3_req_retry(r))
        return;
    if (r->done != NULL)
        r->done(r); /* r may be gone now */
    else
        s3_req_free(r);
}

/* Finishes the transfers curl says are done. */
static void check_done(struct nf_s3 *s3)
{
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl_multi_info_read(s3->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct s3_req *r = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(s3->multi, easy);
        r->in_multi = false;
        r->rc = rc;
        req_finish(r);
    }
}

void s3_req_free(struct s3_req *r)
{
    if (r == NULL)
        return;
    struct nf_s3 *s3 = r->s3;
    if (r->in_multi)
        curl_multi_remove_handle(s3->multi, r->easy);
    if (r->wait)
        event_free(r->wait);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r->url);
    s3_buf_free(&r->resp);
    if (r->prev)
        r->prev->next = r->next;
    else
        s3->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    free(r);
}

void s3_req_result(const struct s3_req *r, struct nf_s3_result *res)
{
    memset(res, 0, sizeof(*res));
    res->status = r->status;
    res->bytes = -1;
    res->total = -1;
    res->error = r->msg[0] ? r->msg : NULL;
    res->code = r->code[0] ? r->code : NULL;
}

void s3_result_shutdown(struct nf_s3_result *res)
{
    memset(res, 0, sizeof(*res));
    res->bytes = res->total = -1;
    res->error = "s3 client shutting down";
    res->code = "ShuttingDown";
}

void s3_op_link(struct nf_s3 *s3, struct s3_op *op, void (*shutdown)(struct s3_op *op))
{
    op->shutdown = shutdown;
    op->prev = NULL;
    op->next = s3->ops;
    if (s3->ops)
        s3->ops->prev = op;
    s3->ops = op;
}

void s3_op_unlink(struct nf_s3 *s3, struct s3_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else if (s3->ops == op)
        s3->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

/* ---- the client ---- */

int nf_s3_new(struct nf_s3 **out, struct event_base *base, const struct nf_s3_conf *conf)
{
    char err[160];
    struct nf_s3 *s3 = nf_xcalloc(1, sizeof(*s3));
    if (!s3_cfg_init(&s3->cfg, conf, err, sizeof(err))) {
        nf_log_kv(NF_LOG_ERROR, "s3_conf", "bad s3 configuration", "error", err, NULL);
        goto fail_cfg;
    }
    s3_curl_init();
    s3->base = base;
    s3->multi = curl_multi_init();
    if (s3->multi == NULL)
        goto fail_multi;
    s3->timer = evtimer_new(base, on_timer, s3);
    if (s3->timer == NULL)
        goto fail_timer;
    curl_multi_setopt(s3->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(s3->multi, CURLMOPT_SOCKETDATA, s3);
    curl_multi_setopt(s3->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(s3->multi, CURLMOPT_TIMERDATA, s3);
    curl_multi_setopt(s3->multi, CURLMOPT_MAXCONNECTS, 32L);
    *out = s3;
    return 0;

fail_timer:
    curl_multi_cleanup(s3->multi);
fail_multi:
    nf_log_error("s3_init", "curl multi handle failed");
    s3_cfg_clear(&s3->cfg);
fail_cfg:
    free(s3);
    return -1;
}

void nf_s3_free(struct nf_s3 *s3)
{
    if (s3 == NULL)
        return;
    s3->closing = true;
    while (s3->ops != NULL)
        s3->ops->shutdown(s3->ops); /* unlinks itself */
    while (s3->reqs != NULL) {      /* requests no operation owns: background aborts */
        struct s3_req *r = s3->reqs;
        r->prev = NULL; /* the head (said for the analyzer) */
        r->s3 = s3;
        s3_req_free(r);
    }
    curl_multi_cleanup(s3->multi);
    for (struct s3_sock *ss = s3->socks, *next; ss != NULL; ss = next) {
        next = ss->next;
        if (ss->added)
            event_del(&ss->ev);
        free(ss);
    }
    event_free(s3->timer);
    s3_cfg_clear(&s3->cfg);
    free(s3);
}
