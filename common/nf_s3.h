#pragma once
/*
 * nf_s3: the S3 client of the gateway (async, on the service's libevent loop) and of the
 * worker agent (blocking helpers). libcurl does the HTTP and the AWS SigV4 signing
 * (CURLOPT_AWS_SIGV4); bodies are sent as UNSIGNED-PAYLOAD. Path-style URLs only:
 * <endpoint>/<bucket>/<key>, the key percent-encoded except '/'. One bucket per client.
 *
 *   caller --nf_s3_get/put/head..--> request --> curl multi (sockets and timer on the
 *   event_base) --> answer: headers, body (streamed to the caller or, for small XML
 *   answers, kept up to a bound) --> retry with backoff? --> callback --> request freed
 *
 * - Retries: a request that is safe to repeat (HEAD, DELETE, copy, list, GET before any
 *   data reached the caller, every request of an upload: the bytes are still in memory)
 *   is retried up to NF_S3_RETRIES times after a transport error, a 5xx or 503 SlowDown,
 *   waiting 200 ms, 800 ms, 3.2 s. Other answers (4xx) are final.
 * - Timeouts: conf.timeout_ms bounds connecting and each request of HEAD, DELETE and list;
 *   copy and CompleteMultipartUpload get 10 x timeout_ms (the server copies or assembles
 *   the object before it answers). Streamed requests (GET, PutObject, UploadPart) have no
 *   total limit; they fail when no byte moves for timeout_ms while not paused by the caller.
 * - Callbacks never run inside the call that started an operation, nor inside
 *   nf_s3_put_write/finish or nf_s3_get_resume: always later, from the loop.
 * - Error answers: code and text from the store's XML body (<Code>, <Message>; at most
 *   64 KiB of it is kept). A 2xx answer whose XML does not parse fails with status 0 and
 *   code "BadResponse"; a 200 carrying an <Error> (copy, complete) counts as a 500 with
 *   that code (and is retried like one). The store is trusted less than our own code:
 *   every XML answer is size-bounded and parsed without a library, field by field.
 *
 * Not thread-safe: one struct nf_s3 belongs to one event loop. The blocking helpers at the
 * end are independent of it and may run in several threads at once.
 */
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

struct nf_s3;
struct nf_s3_get;
struct nf_s3_put;

#define NF_S3_RETRIES 3                              /* retries after the first try */
#define NF_S3_PART_DEFAULT ((size_t)8 * 1024 * 1024) /* part size when conf.part_size is 0 */
#define NF_S3_PART_MIN ((size_t)5 * 1024 * 1024)     /* S3's smallest part but the last */
#define NF_S3_PART_MAX ((size_t)512 * 1024 * 1024)   /* our bound (memory: ~2 parts per put) */
#define NF_S3_MAX_PARTS 10000                        /* S3's limit per multipart upload */
#define NF_S3_KEY_MAX 1024                           /* bytes */

/* What on_data answers: go on, or pause (nothing more arrives until nf_s3_get_resume). */
enum { NF_S3_GO = 0, NF_S3_PAUSE = 1 };

/*
 * The store. nf_s3_new and the blocking helpers copy every string; the caller's struct
 * may go right after the call.
 */
struct nf_s3_conf {
    const char *endpoint;   /* "http://host:port" or "https://host[:port]", no path */
    const char *region;     /* NULL or "" -> "us-east-1" */
    const char *access_key; /* required */
    const char *secret_key; /* required; never logged */
    const char *bucket;     /* required: 3..63 chars [a-z0-9.-] */
    int timeout_ms;         /* see "Timeouts" above; 0 -> 30000 */
    size_t part_size;       /* multipart part size; 0 -> NF_S3_PART_DEFAULT, else
                               NF_S3_PART_MIN..NF_S3_PART_MAX */
};

/*
 * What a callback gets; it and every string in it live only during the callback (copy
 * what you keep). Strings are NULL when the answer had no such field.
 */
struct nf_s3_result {
    int status;               /* HTTP status of the final answer; 0 = transport error, or
                                 a failure after a 2xx head (stream broken, bad XML) */
    const char *error;        /* text when the operation failed, else NULL */
    long long bytes;          /* HEAD: Content-Length; GET on_head: Content-Length of this
                                 answer; GET done: bytes handed to on_data; put done: bytes
                                 written; -1 when unknown */
    long long total;          /* object size: from Content-Range for a 206, else = bytes */
    const char *etag;         /* ETag as sent, quotes included */
    const char *content_type; /* Content-Type (HEAD and GET) */
    const char *code;         /* S3 error code ("NoSuchKey", "SlowDown"...); a HEAD (no
                                 body) gets "NotFound" for 404; "BadResponse" when the
                                 store's answer did not parse; "ShuttingDown" from
                                 nf_s3_free */
};

typedef void (*nf_s3_cb)(const struct nf_s3_result *res, void *arg);
/* GET body bytes; buf lives during the call. Return NF_S3_GO or NF_S3_PAUSE. */
typedef int (*nf_s3_data_cb)(const char *buf, size_t len, void *arg);
/* A streaming put can take bytes again. */
typedef void (*nf_s3_writable_cb)(void *arg);
/* sum_prefix's answer: status 200 with the counts, or the failing status (0 transport). */
typedef void (*nf_s3_sum_cb)(int status, long long objects, long long bytes, void *arg);

/* ---- the async client ---- */

/*
 * A client on base (not owned; must outlive the client). conf is checked
 * (nf_s3_conf_check) and copied. -1 on a bad conf (logged, secret never) or when curl
 * cannot start; *out untouched then.
 */
int nf_s3_new(struct nf_s3 **out, struct event_base *base, const struct nf_s3_conf *conf);
/*
 * Frees the client (NULL is fine). Every pending operation ends first: its done callback
 * fires with status 0, code "ShuttingDown" (a GET's on_data and a put's on_writable do not
 * fire), then its handle is gone. No AbortMultipartUpload is sent for an unfinished upload
 * while closing (its parts stay until the store's lifecycle removes them). Must not be
 * called from inside one of the client's own callbacks. Starting operations from those
 * final callbacks fails (-1/NULL).
 */
void nf_s3_free(struct nf_s3 *s3);

/*
 * HEAD, DELETE, server-side copy (PUT with x-amz-copy-source; src and dst in the client's
 * bucket). key: 1..NF_S3_KEY_MAX bytes (nf_s3_key_valid), copied. done fires exactly once
 * (later, from the loop) with the final answer: HEAD 200 fills bytes, total, etag,
 * content_type; DELETE answers 204 also for a missing key (S3 semantics); copy 200 fills
 * etag.
 * Returns 0 when started, -1 on a bad key or a closing client (done never fires then).
 */
int nf_s3_head(struct nf_s3 *s3, const char *key, nf_s3_cb done, void *arg);
int nf_s3_delete(struct nf_s3 *s3, const char *key, nf_s3_cb done, void *arg);
int nf_s3_copy(struct nf_s3 *s3, const char *src_key, const char *dst_key, nf_s3_cb done,
               void *arg);

/*
 * Streaming GET with backpressure. range: NULL or an HTTP Range value such as "bytes=0-99"
 * or "bytes=100-" (copied; checked to be "bytes=" followed by [0-9-,] only).
 *
 *   on_head (once, only for a 200/206 answer, before any data: bytes = this answer's
 *     length, total = object size, etag, content_type)
 *   on_data (0..n times; NF_S3_PAUSE stops the flow after this buffer, which counts as
 *     taken, until nf_s3_get_resume; done may still come while paused when that buffer
 *     was the last one)
 *   done (exactly once, last: status 200/206 and bytes = bytes delivered on success; the
 *     answer's status and code for an error answer such as 404 NoSuchKey or 416, in which
 *     case on_head and on_data never fired; status 0 and error text when the stream broke
 *     after on_head: the caller has seen part of the object only)
 *
 * Any callback may call nf_s3_get_resume or nf_s3_get_cancel on its own handle. on_head
 * and on_data run inside libcurl: they may start new operations, but must not cancel or
 * free other ones (curl_multi_remove_handle is refused there; defer that to an event).
 * on_head may be NULL. The handle is valid from the return until done returns or cancel is called.
 * NULL on a bad key or range or a closing client (no callback then).
 */
struct nf_s3_get *nf_s3_get(struct nf_s3 *s3, const char *key, const char *range, nf_s3_cb on_head,
                            nf_s3_data_cb on_data, nf_s3_cb done, void *arg);
/* Lets a paused GET go on (data flows again from the loop, never inside this call). A
 * no-op when not paused. */
void nf_s3_get_resume(struct nf_s3_get *get);
/* Stops the GET and frees the handle: no callback fires after this call (also when called
 * from inside one of its callbacks; then the handle goes once that callback returns). */
void nf_s3_get_cancel(struct nf_s3_get *get);

/*
 * Streaming upload of key (content_type NULL -> "application/octet-stream"; both copied).
 * The caller feeds bytes with nf_s3_put_write as they arrive and ends with
 * nf_s3_put_finish or nf_s3_put_cancel. Up to one part (conf.part_size) is buffered while
 * the previous one uploads; so memory is about 2 x part_size (+ one write) per upload,
 * never the whole object. An object smaller than one part is one PutObject at finish;
 * else a multipart upload (CreateMultipartUpload when the first part is full, UploadPart
 * one at a time, CompleteMultipartUpload at finish; AbortMultipartUpload on cancel or
 * failure, best effort).
 *
 * on_writable (may be NULL if the caller never stops on 1) fires, from the loop, after a
 * write answered 1, once the client can take bytes again. done fires exactly once unless
 * cancelled: after finish with status 200, bytes = total written and etag; or as soon as
 * the upload fails (status and code of the failing request, or 0), even before finish:
 * the handle is gone after done returns, so stop writing then.
 * NULL on a bad key or a closing client (no callback then).
 */
struct nf_s3_put *nf_s3_put(struct nf_s3 *s3, const char *key, const char *content_type,
                            nf_s3_writable_cb on_writable, nf_s3_cb done, void *arg);
/*
 * Takes all len bytes (copied) and answers 0 = keep feeding; 1 = buffers full: stop
 * feeding until on_writable (writing on anyway works but buffers without bound); -1 = the
 * upload failed or would exceed NF_S3_MAX_PARTS: stop, done fires from the loop (or is
 * firing: called from inside done). Not after finish or cancel.
 */
int nf_s3_put_write(struct nf_s3_put *put, const void *buf, size_t len);
/* No more bytes: sends what is buffered and completes; done reports the outcome. */
void nf_s3_put_finish(struct nf_s3_put *put);
/* Stops the upload and frees the handle; aborts a multipart upload (best effort, in the
 * background); no callback fires after this call. Valid until done has returned. */
void nf_s3_put_cancel(struct nf_s3_put *put);

/*
 * Storage metering: counts the objects under prefix (may be "" for the whole bucket;
 * copied) and sums their sizes, paging ListObjectsV2 1000 keys at a time. done fires
 * exactly once from the loop. -1 on a prefix over NF_S3_KEY_MAX bytes or a closing client
 * (done never fires then).
 */
int nf_s3_sum_prefix(struct nf_s3 *s3, const char *prefix, nf_s3_sum_cb done, void *arg);

/* ---- blocking helpers (worker agent: a thread or a forked child; one easy handle each) ---- */

/*
 * Downloads key into path: written to "<path>.tmp" (mode 0600, created or truncated),
 * fsync'ed and renamed onto path on success, removed on failure. max_bytes > 0 bounds the
 * object's size (checked against Content-Length and while receiving). Retries as above
 * (from the start of the object). 0 on success; on failure err (errlen > 0) gets a
 * one-line reason and the return is -ENOENT (no such key or bucket), -EFBIG (over
 * max_bytes) or -EIO (anything else).
 */
int nf_s3_download_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                        long long max_bytes, char *err, size_t errlen);
/*
 * Uploads the file at path to key (content_type NULL -> "application/octet-stream"),
 * streamed from the file: one PutObject up to conf.part_size, else a multipart upload
 * (aborted on failure). Each request is retried as above. 0 on success; -ENOENT (no such
 * file), -EIO otherwise, with err filled.
 */
int nf_s3_upload_file(const struct nf_s3_conf *conf, const char *key, const char *path,
                      const char *content_type, char *err, size_t errlen);

/* One object of a listing. */
struct nf_s3_object {
    char *key;      /* the full key (owned) */
    long long size; /* bytes */
    char etag[72];  /* as the store sent it, quotes included; "" when absent or longer */
};

/*
 * Lists every key under prefix (ListObjectsV2, 1000 keys a page, continuation followed;
 * keys in the store's order: ascending), at most max_keys of them. On success 0 with *out
 * a new array of *n entries (NULL and 0 when none; free it with nf_s3_objects_free). On
 * failure *out and *n are untouched and err gets a reason: -E2BIG (more than max_keys),
 * -EIO (anything else). Each page is retried as above.
 */
int nf_s3_list(const struct nf_s3_conf *conf, const char *prefix, int max_keys,
               struct nf_s3_object **out, int *n, char *err, size_t errlen);
void nf_s3_objects_free(struct nf_s3_object *v, int n);

/* ---- helpers ---- */

/* Whether conf is usable; else false with a reason in err (errlen > 0) naming the field. */
bool nf_s3_conf_check(const struct nf_s3_conf *conf, char *err, size_t errlen);
/* A key the client accepts: 1..NF_S3_KEY_MAX bytes, no byte below 0x20 nor 0x7f, no leading
 * '/', no "." or ".." segment (curl and the POSIX backend would resolve them). Our layout
 * rules for user keys are stricter: that is the caller's check. */
bool nf_s3_key_valid(const char *key);
/*
 * s percent-encoded for a request path: A-Z a-z 0-9 - _ . ~ and '/' stay, every other
 * byte is %XX (upper-case hex), as SigV4 requires. Returns a new string (caller frees);
 * keep_slash false also encodes '/' (for query values).
 */
char *nf_s3_encode(const char *s, bool keep_slash);
