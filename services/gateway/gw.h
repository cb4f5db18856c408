#pragma once
/*
 * nf-gateway: the only public HTTP port. It authenticates, validates and routes; it owns
 * nothing persistent (DESIGN §2).
 *
 *   client --> nf_http --> gw_keys_auth: API key (header) or nf_session cookie, format
 *                          checked offline -> ONE Redis call (ratelimit.c): cached record
 *                          auth:key|session:<sha256> + GCRA on gw:rl:<id>
 *                          -> miss: nf-auth /internal/{keys,sessions}/verify, then the
 *                             script again with the record -> principal, RateLimit-*
 *                          -> 403 / 429 / 503, or the route handler
 *
 *   POST /api/jobs/{job_type}  validate -> HSET job:<id> -> produce forge.job.requested
 *                              -> delivery report -> 202 (failure: DEL snapshot, 503)
 *   GET  /api/jobs/{job_id}    HMGET job:<id> -> hit: 200 | miss: nf-scheduler
 *   /api/workers/...           forwarded unchanged to nf-worker-manager
 *   /api/auth/...              forwarded to nf-auth (me, api-keys: after gw_keys_auth,
 *                              with the caller in X-Nf-* headers)
 *   POST /api/files            multipart body streamed into the object store (ctx->s3),
 *                              then registered with nf-scheduler -> 201 the file object
 *   /api/files, /api/artifacts records from nf-scheduler; .../content streamed from the
 *                              store with Range and backpressure
 *   GET  /openapi.json, /docs  served from memory
 *
 * Files, bottom up (a file includes gw.h and libnf, route files also routes.h; nothing
 * includes service.c):
 *   gw.h + ctx.c   the context, the configuration struct, shared helpers (503 answers,
 *                  backend error counts)
 *   modules        validate.c, job.c, multipart.c, files.c (pure); keys.c (API key and
 *                  session auth); ratelimit.c (GCRA, the auth + rate-limit script);
 *                  snapshot.c (Redis job:<id>); idempotency.c; streams.c (the open
 *                  streamed answers and uploads); forward.c (relaying to an internal
 *                  service); sse.c (job events as SSE); inputs.c (a job's stored inputs)
 *   routes.h       the route handlers, implemented by routes_jobs.c, routes_workers.c,
 *                  routes_auth.c, routes_billing.c, routes_artifacts.c, routes_files.c,
 *                  files_upload.c, routes_models.c, routes_meta.c
 *   service.c      the descriptor gw_service: NF_GATEWAY_* rows, route table, hooks
 *   main.c         nf_svc_main(&gw_service)
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>

#include "nf_crypto.h"
#include "nf_http.h"
#include "nf_id.h"
#include "nf_jobs.h"
#include "nf_json.h"
#include "nf_svc.h"

#include <hiredis/hiredis.h>

struct gw_ctx;
struct gw_stream;
struct nf_counter;
struct nf_redis_script;
struct nf_s3;

/* The descriptor (service.c); main.c runs it. */
extern const struct nf_svc_desc gw_service;

/* ---- configuration: the NF_GATEWAY_* rows of service.c ------------------------------ */

/* The service's own rows (svc->own); the shared ones (NF_GATEWAY_ADDR, Kafka, Redis,
 * NF_GATEWAY_TIMEOUT_MS for Redis and internal calls, NF_GATEWAY_DRAIN_MS)
 * are nf_svc's (svc->cfg). */
struct gw_config {
    bool reuseport;            /* SO_REUSEPORT: several gateway processes on one port */
    int max_body;              /* bytes */
    char *openapi;             /* path of the OpenAPI JSON served at /openapi.json */
    char *auth_addr;           /* nf-auth internal host:port */
    char *sched_addr;          /* nf-scheduler internal host:port */
    char *wm_addr;             /* nf-worker-manager host:port */
    char *billing_addr;        /* nf-billing internal host:port */
    int produce_timeout_ms;    /* Kafka delivery deadline (then 503) */
    int wm_conns;              /* connections to the worker-manager (long polls hold one) */
    int rate_per_min;          /* default per-key rate limit (a key may carry a lower one) */
    int rate_burst;            /* requests a key may send at once */
    long long max_upload;      /* POST /api/files: the largest file in bytes (larger: 413) */
    int downloads_per_account; /* concurrent artifact downloads of one account (more: 429) */
    int uploads_per_account;   /* concurrent file uploads of one account (more: 429) */
    /* the object store (DESIGN §12): NF_S3_* */
    char *s3_endpoint;
    char *s3_region;
    char *s3_access_key; /* secret */
    char *s3_secret_key; /* secret */
    char *s3_bucket;
};

/* ---- validate.c: job request validation (pure) ----------------------------------- */

#define GW_S3_KEY_MAX 1024
/*
 * s3://<bucket>/<key> (DESIGN §12): bucket 1..63 of [a-z0-9.-], starting and ending with a
 * letter or digit (a name inside the caller's namespace, not a bucket of the store); key 1..1024
 * printable ASCII bytes without space or backslash, no empty,
 * "." or ".." segment (so no leading '/').
 */
bool gw_s3_uri_valid(const char *uri);
/* true for a valid s3:// URI (gw_s3_uri_valid) or artifact://art_<ULID>; never file://. */
bool gw_validate_uri(const char *uri);
/*
 * Validates a submit body for a known job_type. Two shapes are accepted:
 *   nested {"params": {...}, "priority": 3, ...}  and  flat {"domain": "x", "priority": 3}
 * Unknown or duplicate keys, missing required params, wrong types and out-of-range values
 * fail with err.param set to the plain key name. On success *out is a new object the
 * caller frees, with every common field present and defaults filled in:
 *   {"params":{...}, "metadata":{}, "priority":5, "max_attempts":3, "timeout_seconds":3600,
 *    "gpu_type":null, "gpu_count":1, "labels":{}}
 * On failure returns -1 and *out is untouched.
 */
int gw_validate_job(const char *job_type, const cJSON *body, cJSON **out, struct nf_json_err *err);

/* ---- job.c: job documents (pure) ------------------------------------------------- */

/*
 * The job object of DESIGN §4 for a request just accepted (status queued, attempt 1):
 * every field present, nulls where unknown. req is gw_validate_job's output (copied).
 * Returns a new object the caller frees.
 */
cJSON *gw_job_new(const char *job_id, const char *job_type, const cJSON *req, uint64_t now_ms);
/* The data of forge.job.requested (docs/internals.md); new object, caller frees. */
cJSON *gw_job_requested(const char *job_id, const char *user_id, const char *job_type,
                        const cJSON *req, uint64_t now_ms);

/* ---- keys.c: API key and session authentication ---------------------------------- */

enum {
    GW_KEY_OK = 0,
    GW_KEY_MISSING = -1,   /* no key in either header */
    GW_KEY_MALFORMED = -2, /* a key that fails the offline format/checksum check */
};

/* Dashboard sessions: cookie nf_session = "nfs_" + 43 base64url chars (nf-auth makes them). */
#define GW_SESSION_COOKIE "nf_session"
#define GW_SESSION_PREFIX "nfs_"
#define GW_SESSION_TOKEN_LEN 47

/* Who is calling, resolved from an API key or a session. */
struct gw_principal {
    char user_id[NF_ID_MAX];
    char key_id[NF_ID_MAX]; /* "" for a session */
    bool session;
};

/*
 * Finds the API key in the X-Nexa-Api-Key header (preferred) or "Authorization: Bearer".
 * Either header may be NULL. Surrounding blanks are ignored. On GW_KEY_OK out holds the
 * key, which passed nf_crypto_apikey_valid; otherwise out is untouched.
 */
int gw_keys_extract(const char *x_api_key, const char *authorization, char out[NF_APIKEY_LEN + 1]);
/*
 * Finds the session token in a Cookie header ("a=b; nf_session=nfs_...; c=d"; a quoted
 * value is unquoted). GW_KEY_OK with the token in out, GW_KEY_MISSING when there is no
 * (or an empty) nf_session cookie, GW_KEY_MALFORMED when it is there but not a token
 * (out then untouched). cookie may be NULL.
 */
int gw_keys_session_cookie(const char *cookie, char out[GW_SESSION_TOKEN_LEN + 1]);
/* A session token sent as "Authorization: Bearer nfs_..." (the same token as the cookie):
 * GW_KEY_OK with it in out, GW_KEY_MISSING when the header is not a bearer one,
 * GW_KEY_MALFORMED when its value is not a session token. */
int gw_keys_bearer_session(const char *authorization, char out[GW_SESSION_TOKEN_LEN + 1]);
/*
 * Parses a credential record (the auth:key / auth:session cache value or the nf-auth verify
 * answer): {"key_id","user_id","expires_at",...} for a key, {"user_id","expires_at"} for a
 * session. Returns 0 and fills out, -1 when malformed, -2 when expired at now_ms (out then
 * untouched).
 */
int gw_keys_parse_record(const char *json, size_t len, uint64_t now_ms, bool session,
                         struct gw_principal *out);

/* Continuation after a successful authentication; who is valid only during the call. */
typedef void (*gw_authed_fn)(struct gw_ctx *ctx, struct nf_http_req *req,
                             const struct gw_principal *who);
/*
 * Authenticates req (API key headers first, else the nf_session cookie), applies the rate
 * limit and calls next, possibly later, with the RateLimit-* headers already set on the
 * answer. On failure answers req itself (403; 429 with Retry-After; 503 with Retry-After
 * when a backend is down) and never calls next.
 */
void gw_keys_auth(struct gw_ctx *ctx, struct nf_http_req *req, gw_authed_fn next);

/* ---- ratelimit.c: GCRA per key ------------------------------------------------------- */

/* One GCRA decision and the header values that describe it. */
struct gw_rl {
    bool allowed;
    int64_t tat_us;    /* the theoretical arrival time to store (unchanged when refused) */
    int rate_per_min;  /* the limit applied */
    int limit;         /* RateLimit-Limit: the burst, the most requests allowed at once */
    int remaining;     /* RateLimit-Remaining: requests still allowed right now */
    int reset_s;       /* RateLimit-Reset: seconds until the full burst is available */
    int retry_after_s; /* Retry-After when refused (>= 1), else 0 */
};

/* The Lua source of the auth + rate-limit script (see ratelimit.c). */
extern const char gw_rl_lua[];

/*
 * GCRA, pure: a request at now_us against the stored theoretical arrival time tat_us (0
 * when none) with rate_per_min requests per minute and bursts of burst (both clamped to
 * >= 1). Emission interval T = ceil(60 s / rate); allowed when max(tat, now) + T - now <=
 * burst x T.
 */
void gw_rl_gcra(int64_t now_us, int64_t tat_us, int rate_per_min, int burst, struct gw_rl *out);

/* The script's answer. */
struct gw_rl_reply {
    int status;         /* 1 found, 0 not cached, -1 revoked (tombstone), -2 bad record */
    const char *record; /* status 1: the record, pointing into the reply */
    size_t record_len;
    bool allowed;
    int64_t now_us, tat_us; /* Redis time and the stored tat the decision used */
    int rate_per_min, burst;
};

/* Reads the script's answer; -1 when it is not one (out partly filled). */
int gw_rl_parse_reply(const redisReply *reply, struct gw_rl_reply *out);
/* RateLimit-Limit, -Remaining, -Reset and -Policy on the answer. */
void gw_rl_set_headers(struct nf_http_req *req, const struct gw_rl *rl);
/* 429 rate_limited with Retry-After. */
void gw_rl_reply_limited(struct nf_http_req *req, const struct gw_rl *rl);
/* Registers the script (at start). */
int gw_rl_init(struct gw_ctx *ctx);

/* ---- snapshot.c: the Redis job:<id> hash ---------------------------------------- */

/* result: 0 stored, -1 Redis failed. */
typedef void (*gw_snapshot_put_cb)(int result, void *arg);
/* user_id, status, doc; result: 1 hit, 0 miss, -1 Redis failed. Strings valid only during
 * the call. */
typedef void (*gw_snapshot_get_cb)(int result, const char *user_id, const char *doc, size_t doc_len,
                                   void *arg);

/* Registers the Lua script used by gw_snapshot_put (at start). */
int gw_snapshot_init(struct gw_ctx *ctx);
/* HSET job:<id> user_id status=queued doc + EXPIRE 7 days, atomically. cb fires once. */
void gw_snapshot_put(struct gw_ctx *ctx, const char *job_id, const char *user_id, const char *doc,
                     size_t doc_len, gw_snapshot_put_cb cb, void *arg);
void gw_snapshot_get(struct gw_ctx *ctx, const char *job_id, gw_snapshot_get_cb cb, void *arg);
/* Best effort DEL job:<id> (after a failed produce); a no-op once Redis is freed. */
void gw_snapshot_del(struct gw_ctx *ctx, const char *job_id);

#define GW_SNAPSHOT_TTL_S (7 * 24 * 3600)

/* ---- inputs.c: the job's stored inputs, resolved before the 202 (DESIGN §12) ------- */

/* A model name (1..GW_MODEL_NAME_MAX of [a-z0-9._-]; capitals too when capitals: a name
 * that may be looked up in the catalogue). */
#define GW_MODEL_NAME_MAX 64
bool gw_model_name_valid(const char *s, bool capitals);

/* What a planned entry asks of the backends. */
enum gw_input_kind {
    GW_INPUT_OBJECT = 0, /* s3://: the registry's live file of that name */
    GW_INPUT_ARTIFACT,   /* artifact://: the registry's record of artifact_id */
    GW_INPUT_MODEL,      /* a bare model name: the catalogue (the caller's, then base) */
    GW_INPUT_NEW_MODEL,  /* output_model: must name no model of the caller's catalogue */
    GW_INPUT_DEPLOYMENT, /* generator / teacher_model / judge / evaluate's model_id and
                            compare_to "dep-...": a ready deployment of the
                            caller, called by the handler at its worker-local base URL */
};

/* One param that names stored data or a model. */
struct gw_input {
    const char *param;       /* "dataset_uri", ... (static) */
    const char *uri;         /* the value as given (points into the params) */
    const char *artifact_id; /* artifact://: the id (into uri); NULL for an s3:// name */
    enum gw_input_kind kind;
    char model_artifact[NF_ID_MAX]; /* GW_INPUT_MODEL of the account: its artifact's id */
};
/*
 * The inputs among a validated request's params (pure): dataset_uri and validation_uri
 * (s3:// or artifact://); model_id, teacher_model, student_model and compare_to (artifact:// or a
 * model name, GW_INPUT_MODEL); output_model (GW_INPUT_NEW_MODEL). At most max; returns
 * how many.
 */
size_t gw_inputs_plan(const cJSON *params, struct gw_input *out, size_t max);
/* The same for a job type: evaluate's model_id and compare_to may also name a deployment
 * (dep-...) of the caller, like generator, teacher_model and judge of every type. */
size_t gw_inputs_plan_job(const char *job_type, const cJSON *params, struct gw_input *out,
                          size_t max);
/* The last segment of a key or name ("a/b/c.parquet" -> "c.parquet"). */
const char *gw_input_basename(const char *path);
/* valid (owned by the callee again) with "inputs" added, or NULL when the answer (422 naming
 * the param, 503) was sent already: req is freed then and must not be touched. */
typedef void (*gw_inputs_cb)(struct gw_ctx *ctx, struct nf_http_req *req, cJSON *valid, void *arg);
/*
 * Checks that each input exists and belongs to user_id (both kinds are looked up in the
 * registry, nf-scheduler, as the caller; a model name in the catalogue, as the caller) and
 * adds the resolved list to valid as "inputs": [{param, uri, object_key, name, bytes}],
 * and the models named as "models": {param: model object}. A model of the account becomes
 * an input (its artifact); an unknown name is a 422 naming the param; an output_model that
 * names a model already is a 409. Takes valid over; done fires exactly once, possibly at
 * once.
 */
void gw_inputs_resolve(struct gw_ctx *ctx, struct nf_http_req *req, const char *user_id,
                       const char *job_type, cJSON *valid, gw_inputs_cb done, void *arg);

/* ---- ctx.c: the context and shared helpers ----------------------------------------- */

enum gw_backend {
    GW_BACKEND_REDIS,
    GW_BACKEND_KAFKA,
    GW_BACKEND_AUTH,
    GW_BACKEND_SCHEDULER,
    GW_BACKEND_WM,
    GW_BACKEND_BILLING,
    GW_BACKEND_S3, /* the object store */
    GW_NBACKENDS
};

enum gw_auth_fail {
    GW_AUTH_MISSING,
    GW_AUTH_MALFORMED,
    GW_AUTH_UNKNOWN, /* unknown, revoked or expired */
    GW_NAUTH_FAILS
};

/* Where a credential's record came from. */
enum gw_auth_source {
    GW_AUTH_CACHED,  /* auth:key|session:<hash>: one Redis round trip */
    GW_AUTH_FETCHED, /* cache miss: asked nf-auth */
    GW_AUTH_REVOKED, /* the tombstone: refused without asking nf-auth */
    GW_NAUTH_SOURCES
};

/* How many of something (uploads, downloads) one account has in flight. */
struct gw_account_count {
    char user_id[NF_ID_MAX];
    int n;
};
struct gw_dep_cached;
struct gw_dep_pool;
/* X-Nf-User-Id and X-Request-Id for an internal call made as the caller (the owner of the
 * data checks tenancy by it), NULL-terminated in out; user_id and req must outlive out. */
void gw_caller_headers(const char *user_id, struct nf_http_req *req, const char *out[5]);

/* Per-account slots: the accounts with at least one taken. */
struct gw_slots {
    struct gw_account_count *acc;
    size_t n;
};
/* Takes one of user_id's slots; false when it holds max already. */
bool gw_slots_take(struct gw_slots *s, const char *user_id, int max);
/* Gives one back (a no-op for an account holding none). */
void gw_slots_give(struct gw_slots *s, const char *user_id);

/*
 * Everything the gateway process holds; the callback argument of every handler. Made by
 * the descriptor's init hook. The backends (Redis, the Kafka producer, the HTTP server,
 * the metrics) are nf_svc's and reached through svc, whose pointers nf_svc clears as it
 * frees them; svc->stopping (SIGTERM: draining) and svc->closing (teardown: callbacks
 * only clean up and answer 503) are the flags every callback checks.
 */
struct gw_ctx {
    struct nf_svc *svc;
    const struct gw_config *cfg;      /* svc->own */
    struct nf_redis_script *snap_put; /* owned by redis */
    struct nf_redis_script *auth_rl;  /* the auth + rate-limit script, owned by redis */
    struct nf_redis_script *idem_begin, *idem_finish, *idem_abort; /* owned by redis */
    LIST_HEAD(, gw_stream) streams; /* live streamed answers (SSE, artifact content) */
    /* Internal HTTP clients, owned: made in start, freed (NULL) in close. */
    struct nf_http_client *auth;
    struct nf_http_client *sched;
    struct nf_http_client *wm;
    struct nf_http_client *billing;
    struct nf_s3 *s3;                /* the object store client (DESIGN §12); NULL once closing */
    struct gw_slots downloads;       /* artifact downloads in flight, per account */
    struct gw_slots uploads;         /* file uploads in flight, per account */
    struct gw_dep_cached *dep_cache; /* deploy_proxy.c: GW_DEP_CACHE_N ready deployments
                                        seen lately; NULL until the first proxied call */
    struct gw_dep_pool *dep_pool;    /* deploy_proxy.c: idle connections to endpoints */
    char *openapi;                   /* the /openapi.json body */
    size_t openapi_len;
    size_t long_polls;            /* forwarded next_job requests in flight */
    char produce_timeout[16];     /* NF_GATEWAY_PRODUCE_TIMEOUT_MS as text */
    const char *producer_conf[5]; /* svc->producer_conf: message.timeout.ms, linger.ms */
    struct nf_counter *m_submitted[NF_NJOB_TYPES];
    struct nf_counter *m_auth_fail[GW_NAUTH_FAILS];
    struct nf_counter *m_auth_source[GW_NAUTH_SOURCES];
    struct nf_counter *m_rate_limited; /* 429 answers */
    struct nf_counter *m_rl_skipped;   /* allowed without a limit: Redis was down */
    struct nf_counter *m_backend_err[GW_NBACKENDS];
};

/* Registers the gateway's metrics in svc->metrics (at init). */
void gw_metrics_register(struct gw_ctx *ctx);
/* 503 {"error":{"code":"unavailable"}} with Retry-After: retry_s. */
void gw_reply_unavailable(struct nf_http_req *req, int retry_s, const char *msg);
void gw_backend_error(struct gw_ctx *ctx, enum gw_backend b);

/* ---- forward.c: relaying a request to an internal service ----------------------- */

/* Called once when a forwarded call completes (before its answer is relayed). */
typedef void (*gw_forward_done_fn)(struct gw_ctx *ctx, void *arg);
/*
 * Forwards req to an internal service (forward.c): method and target (path + query, as
 * the backend should see them), headers (NULL or name, value, ..., NULL), body (may be
 * NULL); the backend's status, body, Content-Type and Retry-After are relayed to the
 * client. A transport failure or timeout answers 503 Retry-After 1. cli NULL (the
 * gateway is stopping) answers 503 at once. Returns 0 when the call is under way (done,
 * if given, fires once later), or -1 when req was already answered (done not called).
 */
int gw_forward(struct gw_ctx *ctx, struct nf_http_req *req, struct nf_http_client *cli,
               enum gw_backend backend, const char *method, const char *target,
               const char *const *headers, const char *body, size_t len, int timeout_ms,
               gw_forward_done_fn done, void *done_arg);

/* ---- idempotency.c: Idempotency-Key (Redis gw:idem:<user>:<key>) ------------------ */

/* gw:recent:<user_id>: jobs accepted in the last 10 minutes (zset, score = ms), read by
 * nf-scheduler's job list until it has recorded them (read-your-writes). */
#define GW_RECENT_WINDOW_MS 600000

#define GW_IDEM_KEY_MAX 255
#define GW_IDEM_TTL_S (24 * 3600)

enum gw_idem_state {
    GW_IDEM_NEW,      /* first use: this request submits (a pending marker is stored) */
    GW_IDEM_PENDING,  /* the same request is being submitted by someone else right now */
    GW_IDEM_REPLAY,   /* done before: status and body are the original answer */
    GW_IDEM_CONFLICT, /* the key was used with another body */
    GW_IDEM_ERROR,    /* Redis failed or answered something else */
};

/* The begin script's answer; body points into the Redis reply (valid in the callback). */
struct gw_idem_reply {
    enum gw_idem_state state;
    int status;
    const char *body;
    size_t body_len;
};

extern const char gw_idem_begin_lua[];
extern const char gw_idem_finish_lua[];
extern const char gw_idem_abort_lua[];

/* 1 to 255 printable ASCII characters without spaces. key may be NULL (false). */
bool gw_idem_key_valid(const char *key);
/* SHA-256 hex of job_type and the canonical form (keys sorted) of the validated request. */
void gw_idem_hash(const char *job_type, const cJSON *req, char out[NF_SHA256_HEX_LEN + 1]);
/* Reads the begin script's reply (NULL ok); -1 and state GW_IDEM_ERROR when it is not one. */
int gw_idem_parse_reply(const redisReply *reply, struct gw_idem_reply *out);
/* Registers the scripts (at start). */
int gw_idem_init(struct gw_ctx *ctx);
typedef void (*gw_idem_cb)(const struct gw_idem_reply *r, void *arg);
/*
 * Claims (user_id, key) for a request whose body hashes to hash; token identifies this
 * claim for finish/abort; a pending claim lives pending_ttl_s. cb fires exactly once.
 */
void gw_idem_begin(struct gw_ctx *ctx, const char *user_id, const char *key, const char *hash,
                   const char *token, int pending_ttl_s, gw_idem_cb cb, void *arg);
/* Stores the answer for 24 h (best effort; only while token still holds the claim). */
void gw_idem_finish(struct gw_ctx *ctx, const char *user_id, const char *key, const char *token,
                    int status, const char *body, size_t len);
/* Drops the claim (best effort; only with its token), so the client may retry. */
void gw_idem_abort(struct gw_ctx *ctx, const char *user_id, const char *key, const char *token);

/* ---- streams.c: answers streamed over many loop turns (SSE, artifact content) ------ */

/* Embedded first in each streaming operation; close ends the answer and frees it. */
struct gw_stream {
    LIST_ENTRY(gw_stream) entry; /* in ctx->streams while linked */
    bool linked;
    void (*close)(struct gw_stream *st);
};
void gw_stream_link(struct gw_ctx *ctx, struct gw_stream *st);
void gw_stream_unlink(struct gw_ctx *ctx, struct gw_stream *st);
/* At close: ends every stream still open (each closes and frees itself). */
void gw_streams_close_all(struct gw_ctx *ctx);

/* ---- sse.c: GET /api/jobs/{job_id}/events|metrics as text/event-stream ------------ */

/*
 * Streams the job's events (what "events") or metric points (what "metrics") as
 * Server-Sent Events until the job ends: polls nf-scheduler's page
 * /internal/jobs/{id}/<what> every 250 ms (at once while it says has_more), one SSE
 * message per item (id = its cursor, event = its type, data = the item JSON), and a
 * final `event: end`. last_event_id (Last-Event-ID header, may be NULL) resumes after
 * that item. The first page decides the status: 404 / 400 / 503 are answered as JSON.
 */
void gw_sse_start(struct gw_ctx *ctx, struct nf_http_req *req, const char *job_id,
                  const char *user_id, const char *last_event_id, const char *what);
/* The SSE "id/event/data" block of one event item (caller frees); NULL if it lacks a type. */
char *gw_sse_format(const cJSON *event);

/* ---- routes_artifacts.c: helpers (pure) -------------------------------------------- */

/* Content-Type for an artifact file name (by extension; application/octet-stream else). */
const char *gw_artifact_content_type(const char *name);
/*
 * Content-Disposition of a download of name (into out, len bytes): attachment;
 * filename="..." in printable ASCII (no quote or backslash; other bytes '_'; "artifact"
 * when nothing is left), plus filename*=UTF-8''<percent-encoded> (RFC 6266) when name is
 * not ASCII. out needs 4 * GW_FILENAME_MAX + 64 bytes for any name.
 */
void gw_artifact_disposition(const char *name, char *out, size_t len);

enum gw_range {
    GW_RANGE_NONE,          /* the whole object: no Range, not one we serve (several
                               ranges, another unit) or a malformed one (RFC 9110: ignored) */
    GW_RANGE_PART,          /* bytes [*first, *last] of it: 206 */
    GW_RANGE_UNSATISFIABLE, /* 416 with Content-Range: bytes * / size */
};
/*
 * A Range header (may be NULL) for an object of size bytes: "bytes=a-b", "bytes=a-" and
 * "bytes=-n" (the last n bytes); b past the end is clamped to it.
 */
enum gw_range gw_range_parse(const char *header, long long size, long long *first, long long *last);

/* ---- multipart.c: multipart/form-data, read incrementally (pure) ------------------ */

#define GW_MP_BOUNDARY_MAX 70   /* RFC 2046 */
#define GW_MP_HEAD_MAX 8192     /* one part's header block */
#define GW_MP_NAME_MAX 64       /* a part's name */
#define GW_MP_FILENAME_MAX 1024 /* a filename as sent, before gw_files_filename */
#define GW_MP_ERROR (-1)        /* gw_mp_feed: malformed (mp->error says why) */

/* A part's headers, as its part callback sees them. */
struct gw_mp_part {
    char name[GW_MP_NAME_MAX + 1];
    char filename[GW_MP_FILENAME_MAX + 1]; /* as sent (filename*= decoded), "" when none */
    bool has_filename;
    char content_type[128]; /* "" when none */
};

/* What the parser calls; each returns 0 to go on, or a positive value that stops
 * gw_mp_feed, which returns it (the parser is then done with). */
struct gw_mp_cbs {
    int (*part)(const struct gw_mp_part *part, void *arg); /* a part's headers were read */
    int (*data)(const char *buf, size_t len, void *arg);   /* bytes of its body */
    int (*part_end)(void *arg);                            /* its end */
};

/* The parser's state (embed it; the fields are multipart.c's). */
struct gw_mp {
    char delim[GW_MP_BOUNDARY_MAX + 5]; /* CRLF "--" boundary */
    size_t dlen;
    int state;
    char carry[GW_MP_BOUNDARY_MAX + 5]; /* a delimiter begun at the end of a piece */
    size_t ncarry;
    char head[GW_MP_HEAD_MAX];
    size_t nhead;
    struct gw_mp_part part;
    const char *error; /* why it failed (static text), NULL while fine */
};

/*
 * The boundary of a "multipart/form-data; boundary=..." Content-Type (quoted or not) into
 * out: 0; -1 when the type is not multipart/form-data (or NULL); -2 when the boundary is
 * missing or not RFC 2046's (1..70 of its characters, no CR or LF).
 */
int gw_mp_boundary(const char *content_type, char out[GW_MP_BOUNDARY_MAX + 1]);
void gw_mp_init(struct gw_mp *mp, const char *boundary);
/* Parses the next len bytes of the body: 0, GW_MP_ERROR or what a callback stopped with. */
int gw_mp_feed(struct gw_mp *mp, const char *buf, size_t len, const struct gw_mp_cbs *cbs,
               void *arg);
/* The closing boundary was read (what follows is ignored). */
bool gw_mp_done(const struct gw_mp *mp);

/* ---- files.c: the Files API's pure parts --------------------------------------------- */

#define GW_FILENAME_MAX 255 /* bytes of an uploaded file's name */

/* dataset, model or other. */
bool gw_files_purpose_valid(const char *purpose);
/*
 * The name an upload is known by: the last segment of what the client sent (after '/' or
 * '\'), blanks around it and control bytes dropped; -1 when that is not UTF-8, empty,
 * "." or "..", or longer than GW_FILENAME_MAX bytes (out then unspecified).
 */
int gw_files_filename(const char *raw, char out[GW_FILENAME_MAX + 1]);
/* name with every byte outside [A-Za-z0-9._-] made '_', for an object key ("file" when
 * nothing usable is left). */
void gw_files_key_name(const char *name, char out[GW_FILENAME_MAX + 1]);
/* The public file object of a registry record (nf-scheduler's artifact or file answer);
 * NULL when rec has no artifact id. New object, caller frees. */
cJSON *gw_file_object(const cJSON *rec);

/* ---- deployments.c: deployments' pure parts (DESIGN §15) ----------------------------- */

#define GW_DEP_ID_LEN 16    /* "dep-" + 12 lowercase hex digits */
#define GW_DEP_HOST_MAX 253 /* an endpoint's host name or IPv4 address */
#define GW_USAGE_ID_LEN 36  /* "use_" + 32 hex digits */

bool gw_dep_id_valid(const char *id);
/* The public deployment object of a registry record (nf-scheduler's): id, object, model,
 * status, region, replicas, job_id, base_url, created_at, stopped_at, failure; never the
 * endpoint_url, worker_id or user_id. New object, caller frees. */
cJSON *gw_dep_public(const cJSON *rec);
/* host and port of an endpoint's base URL "http://host:port" (an optional trailing "/"):
 * 0, or -1 when it is not one (another scheme, a path, no port, odd host characters). */
int gw_dep_endpoint(const char *url, char host[GW_DEP_HOST_MAX + 1], int *port);

/* Reads a streamed (SSE) answer for its usage comment line
 * `: usage {"prompt_tokens": n, "completion_tokens": m}` (the deploy endpoint's). */
struct gw_sse_usage {
    char line[256]; /* the current line's start */
    size_t n;
    bool overflow;                /* the current line is longer than line */
    long long prompt, completion; /* -1 until the comment was seen (the last one counts) */
};
void gw_sse_usage_init(struct gw_sse_usage *u);
/* The next bytes of the stream, split anywhere. */
void gw_sse_usage_feed(struct gw_sse_usage *u, const char *buf, size_t len);
bool gw_sse_usage_found(const struct gw_sse_usage *u);
/* OpenAI's usage object of a JSON answer: 0 with both counts, -1 when absent or bad. */
int gw_dep_json_usage(const char *body, size_t len, long long *prompt, long long *completion);

/* One proxied request's usage, metered on the deploy job. */
struct gw_dep_usage {
    const char *user_id, *job_id, *dep_id;
    const char *request_uid; /* made by the gateway per request: the events' ids derive
                                from it, so a redelivered message is billed once */
    int64_t start_ms, end_ms;
};
/* "use_" + the first 32 hex of SHA-256("<dep_id>:<request_uid>:<meter>"). */
void gw_dep_usage_id(const char *dep_id, const char *request_uid, const char *meter,
                     char out[GW_USAGE_ID_LEN + 1]);
/* The forge.usage.recorded envelope of one meter (input_tokens or output_tokens):
 * job_type deploy, attempt null, deployment_id, no worker_id (the gateway meters it).
 * quantity >= 1. New object, caller frees. */
cJSON *gw_dep_usage_event(const struct gw_dep_usage *u, const char *meter, long long quantity);

/* A ready deployment the proxy looked up lately (its owner's record): requests within
 * GW_DEP_CACHE_TTL_MS skip the registry. A DELETE through this gateway and a failure it
 * finds drop the entry at once; a change made elsewhere shows within the TTL. */
#define GW_DEP_CACHE_N 64
#define GW_DEP_CACHE_TTL_MS 2000
struct gw_dep_cached {
    char id[GW_DEP_ID_LEN + 1];
    char user_id[NF_ID_MAX];
    char job_id[NF_ID_MAX];
    char host[GW_DEP_HOST_MAX + 1];
    int port;
    uint64_t until_ms; /* 0: an empty slot */
};
/* The live entry for (id, user_id) at now_ms, or NULL (another user's is never found). */
const struct gw_dep_cached *gw_dep_cache_find(const struct gw_dep_cached *cache, const char *id,
                                              const char *user_id, uint64_t now_ms);
/* Records e (copied) until now_ms + TTL, in its own slot, an expired one or the oldest. */
void gw_dep_cache_put(struct gw_dep_cached *cache, const struct gw_dep_cached *e, uint64_t now_ms);
/* Forgets deployment id (cache may be NULL). */
void gw_dep_cache_drop(struct gw_dep_cached *cache, const char *id);

/* ---- routes_auth.c ------------------------------------------------------------------- */

/*
 * A new key's own limits against what this gateway applies (rate_max per minute, bursts of
 * burst_max): a key may only lower them, so a higher rate_limit_per_minute or burst in the
 * POST /api/auth/api-keys body is refused rather than stored and shown unapplied. 0 when
 * the body asks for nothing higher (or is not a JSON object: nf-auth answers that); -1 with
 * *param the offending field and msg the refusal naming the maximum.
 */
int gw_key_limits_check(const char *body, size_t len, int rate_max, int burst_max,
                        const char **param, char *msg, size_t msglen);
