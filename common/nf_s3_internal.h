#pragma once
/*
 * nf_s3_internal: what nf_s3.c (async requests, GET, small calls), nf_s3_put.c (streaming
 * upload), nf_s3_sync.c (blocking helpers) and the unit tests share; not for services.
 * The parsers here take the store's answers as untrusted input: every length is bounded,
 * every number checked.
 */
#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "nf_s3.h"

#define S3_ERRBODY_MAX ((size_t)64 * 1024) /* error / small XML answers kept */
#define S3_LISTBODY_MAX                                                                            \
    ((size_t)8 * 1024 * 1024) /* one ListObjectsV2 page (1000 keys <= 1 KiB)                       \
                               */
#define S3_CODE_MAX 64        /* an S3 error code */
#define S3_TEXT_MAX 512       /* an error message, an ETag, a Content-Type */
#define S3_TOKEN_MAX 2048     /* an upload id or continuation token */

/* The client's own copy of a conf, normalised: strings owned, defaults applied. */
struct s3_cfg {
    char *endpoint; /* no trailing '/' */
    char *region;
    char *access_key;
    char *secret_key;
    char *bucket;
    char *sigv4; /* CURLOPT_AWS_SIGV4's "aws:amz:<region>:s3" */
    int timeout_ms;
    size_t part_size;
};

/* Checks conf and fills c; false with err (and c left empty) when conf is bad. */
bool s3_cfg_init(struct s3_cfg *c, const struct nf_s3_conf *conf, char *err, size_t errlen);
void s3_cfg_clear(struct s3_cfg *c);

/* curl_global_init once per process (thread-safe through pthread_once). */
void s3_curl_init(void);

/* A byte buffer that keeps at most max bytes (the rest is counted in dropped). */
struct s3_buf {
    char *data; /* NUL-terminated when len > 0 */
    size_t len, cap, max;
    size_t dropped;
};
void s3_buf_add(struct s3_buf *b, const char *p, size_t n);
void s3_buf_reset(struct s3_buf *b);
void s3_buf_free(struct s3_buf *b);

/*
 * The URL of key (NULL: the bucket itself) with an optional query (already encoded, its
 * parameters sorted and each written as name=value, as curl 7.88 signs the query as is).
 * New string.
 */
char *s3_url(const struct s3_cfg *c, const char *key, const char *query);
/* The headers every request carries (UNSIGNED-PAYLOAD, no Expect), plus extra (NULL or
 * NULL-terminated "Name: value" strings). Caller frees with curl_slist_free_all. */
struct curl_slist *s3_headers(const char *const *extra);
/*
 * The options every easy handle gets: url, method ("GET", "HEAD", "PUT", "POST",
 * "DELETE"), signing, headers (not owned, must outlive the transfer), timeouts
 * (total_ms > 0: the whole request's limit; 0: no total limit but a stall limit, timeout_ms
 * without a byte moving, curl's low-speed check, which skips paused transfers).
 */
void s3_easy_setup(CURL *easy, const struct s3_cfg *c, const char *method, const char *url,
                   struct curl_slist *hdrs, long total_ms);

/* What the answer headers say; reset at each status line (1xx, retries). */
struct s3_head {
    int status;       /* 0 until a status line was seen */
    bool complete;    /* the blank line after a final (>= 200) status was seen */
    long long length; /* Content-Length, -1 when absent */
    long long total;  /* from Content-Range "bytes a-b/total", -1 when absent */
    char etag[S3_TEXT_MAX];
    char content_type[S3_TEXT_MAX];
};
void s3_head_reset(struct s3_head *h);
/* Feeds one header line as curl's header callback gets it (CRLF included or not). */
void s3_head_line(struct s3_head *h, const char *line, size_t len);

/*
 * Finds the next <tag>value</tag> in xml[0..len) at or after *pos; *val and *vlen span the raw
 * value, *pos moves past the closing tag. false when there is none (or it is not closed).
 * Tags with attributes are not matched; the fields read here have none.
 */
bool s3_xml_find(const char *xml, size_t len, const char *tag, size_t *pos, const char **val,
                 size_t *vlen);
/* Copies a raw XML value into out (cap > 0), decoding the five entities and &#N; / &#xN;
 * (ASCII only; other characters pass as '?'). false when it did not fit or is malformed. */
bool s3_xml_text(const char *val, size_t vlen, char *out, size_t cap);
/* The text of the first <tag> of xml into out; false when absent or bad. */
bool s3_xml_get(const char *xml, size_t len, const char *tag, char *out, size_t cap);
/* <Error><Code>, <Message> of an error body; false when xml holds no <Error>. */
bool s3_xml_error(const char *xml, size_t len, char *code, size_t ccap, char *msg, size_t mcap);
/*
 * One ListObjectsV2 page: adds its objects and their <Size>s to *objects and *bytes;
 * *truncated and token (the NextContinuationToken, "" when none) say whether another page
 * follows. -1 when the page does not parse (a size that is not a number, a truncated page
 * without a token).
 */
int s3_list_page(const char *xml, size_t len, long long *objects, long long *bytes, bool *truncated,
                 char *token, size_t tcap);
/* Parses a non-negative decimal of at most 18 digits; false otherwise. */
bool s3_parse_size(const char *s, size_t n, long long *out);

/*
 * The outcome of a transfer: its status (0 when curl failed: msg gets curl's text), and
 * for an error answer code and msg from the XML body, or a code named after the status
 * when there is none (a HEAD's 404 -> "NotFound"). code and msg are "" on success.
 */
int s3_outcome(CURLcode rc, const char *curl_err, const struct s3_head *h,
               const struct s3_buf *resp, char *code, size_t ccap, char *msg, size_t mcap);
/* Whether an answer is worth retrying: transport errors (status 0), 500, 502, 503, 504,
 * and the codes SlowDown, InternalError, RequestTimeout whatever their status. */
bool s3_retryable(int status, const char *code);
/* Wait before retry number attempt (1..NF_S3_RETRIES): 200 ms x 4^(attempt-1). */
int s3_backoff_ms(int attempt);
/* Whether a Range value is "bytes=" followed by digits, '-' and ',' only. */
bool s3_range_valid(const char *range);
/* The XML body of CompleteMultipartUpload for parts 1..n with their ETags; new string. */
char *s3_complete_body(char *const *etags, int n);

/* ---- the async engine (nf_s3.c), used by the operations (nf_s3_ops.c, nf_s3_put.c) ---- */

#include <event2/event.h>

/*
 * An operation the caller started (a GET, a put, a HEAD...): listed on its client so that
 * nf_s3_free can end it. shutdown unlinks it, frees its requests, fires its done
 * callback with ShuttingDown and frees it.
 */
struct s3_op {
    struct s3_op *prev, *next;
    void (*shutdown)(struct s3_op *op);
};

struct nf_s3 {
    struct event_base *base;
    struct s3_cfg cfg;
    CURLM *multi;
    struct event *timer; /* curl's timeout */
    struct s3_sock *socks;
    struct s3_op *ops;   /* operations in progress */
    struct s3_req *reqs; /* every request, also those no operation owns (aborts) */
    bool closing;
};

struct s3_req;
/* The final outcome of a request (after the engine's retries); the owner frees r. */
typedef void (*s3_req_done_fn)(struct s3_req *r);

struct s3_req {
    struct nf_s3 *s3;
    struct s3_req *prev, *next; /* in s3->reqs */
    CURL *easy;
    struct curl_slist *hdrs;
    char *url;
    const char *body; /* request body (not owned; must live as long as r), or NULL */
    size_t body_len, body_off;
    struct s3_head head;
    struct s3_buf resp; /* the answer body, up to resp.max (2xx bodies when sink is NULL) */
    char curl_err[CURL_ERROR_SIZE];
    CURLcode rc;
    int tries; /* retries done */
    bool in_multi;
    bool refused;       /* curl_multi_add_handle failed: finish from the loop */
    bool no_retry;      /* the owner forbids retries from now on */
    struct event *wait; /* backoff before the next try */
    /* owner's hooks, called inside curl's callbacks: return false to abort the transfer */
    bool (*on_head)(struct s3_req *r);                         /* NULL: nothing */
    size_t (*sink)(struct s3_req *r, const char *p, size_t n); /* 2xx body; NULL: keep */
    s3_req_done_fn done;                                       /* NULL: free r silently */
    void *owner;
    /* the outcome, set before done */
    int status;
    char code[S3_CODE_MAX];
    char msg[S3_TEXT_MAX];
};

/*
 * A request on s3: method and URL (key NULL: the bucket; query encoded and sorted, or NULL),
 * extra headers (NULL-terminated, copied), body (not copied). total_ms: as for
 * s3_easy_setup. Not started yet: the caller sets hooks and calls s3_req_start.
 */
struct s3_req *s3_req_new(struct nf_s3 *s3, const char *method, const char *key, const char *query,
                          const char *const *extra, const char *body, size_t body_len,
                          long total_ms);
/* Starts r from the loop (the next turn), never inside this call. */
void s3_req_start(struct s3_req *r);
/* Tries r again after a backoff when retries are left (the owner saw a 200 that is an
 * error); false when none are. */
bool s3_req_retry(struct s3_req *r);
/* Stops and frees r (NULL is fine); never from inside r's own curl callbacks. */
void s3_req_free(struct s3_req *r);
/* The outcome of r as a result (status, error, code); other fields zero / -1. The strings
 * point into r. */
void s3_req_result(const struct s3_req *r, struct nf_s3_result *res);
/* A result for an operation ended by nf_s3_free. */
void s3_result_shutdown(struct nf_s3_result *res);
/* Lists and unlists an operation on its client. */
void s3_op_link(struct nf_s3 *s3, struct s3_op *op, void (*shutdown)(struct s3_op *op));
void s3_op_unlink(struct nf_s3 *s3, struct s3_op *op);
