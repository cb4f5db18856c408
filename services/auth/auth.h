#pragma once
/*
 * nf-auth: owner of the `auth` schema (users, API keys, sessions) and of the Redis
 * auth:* keys. Internal HTTP only (loopback by default): the gateway authenticates the
 * public caller and forwards /api/auth/... here with the principal in trusted headers.
 *
 *   gateway --/api/auth/register, login, logout (no caller)----------------> nf-auth
 *           --/api/auth/me, api-keys (X-Nf-User-Id, X-Nf-Key-Id, X-Nf-Auth)--> nf-auth
 *           --/internal/keys/verify, /internal/sessions/verify (cache miss)-> nf-auth
 *   every forward carries X-Nf-Client-Addr (the caller's address) and X-Request-Id.
 *
 *   POST /api/auth/register  -> per-address limit -> Argon2id (hasher thread) -> INSERT user
 *   POST /api/auth/login     -> failure counters (per e-mail, per address) -> user row
 *                            -> Argon2id verify (a dummy hash for unknown e-mails) ->
 *                               ok: session row, Set-Cookie nf_session, audit login
 *                               bad: count, answer 401 after a growing delay
 *   POST /api/auth/api-keys  -> tx: lock user row, INSERT if < max live keys -> audit
 *   DELETE .../{key_id}      -> UPDATE revoked_at -> SET auth:key:<hash> "revoked" -> audit
 *   POST /internal/keys/verify -> SELECT live key -> SET NX auth:key:<hash> -> record
 *   timer: drain auth:used (written by the gateway's rate-limit script) -> last_used_at
 *
 * Redis keys: auth:key:<sha256> and auth:session:<sha256> (record or the tombstone
 * "revoked", TTL <= 300 s), auth:used (hash key_id -> last use ms), auth:lf:email:<sha256>
 * and auth:lf:addr:<addr> (login failures), auth:reg:addr:<addr> (registrations).
 *
 * Files, bottom up (each includes only what is below it):
 *   auth.h + ctx.c   the context, the configuration struct, shared helpers (503 answers,
 *                    backend error counts, the gateway's trusted headers)
 *   keys.c           pure helpers (hashes, e-mails, passwords, tokens, cookies)
 *   hasher.c         Argon2id threads          audit.c   forge.audit events
 *   routes.h         the route handlers and the modules' start/close hooks, implemented by
 *                    routes_account.c, routes_keys.c, routes_internal.c and usage.c
 *                    (last_used_at batches, session cleanup)
 *   service.c        the descriptor auth_service: NF_AUTH_* rows, route table, hooks
 *   main.c           nf_svc_main(&auth_service)
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>

#include <cjson/cJSON.h>

#include "nf_crypto.h"
#include "nf_id.h"

struct event;
struct event_base;
struct nf_counter;
struct nf_http_req;
struct nf_kafka_producer;
struct nf_metrics;
struct nf_pg;
struct nf_redis;
struct nf_redis_script;
struct nf_svc;
struct auth_hasher;
struct auth_login_op;

/* The descriptor (service.c); main.c runs it. */
struct nf_svc_desc;
extern const struct nf_svc_desc auth_service;

/* ---- configuration: the NF_AUTH_* rows of service.c --------------------------------- */

/* The service's own rows (svc->own); the shared ones (address, backends, NF_AUTH_TIMEOUT_MS,
 * NF_AUTH_DRAIN_MS, ...) are nf_svc's (svc->cfg). */
struct auth_config {
    int session_ttl_s;
    bool cookie_secure;          /* add Secure to the nf_session cookie (HTTPS deployments) */
    int max_keys;                /* live API keys per user */
    int login_max_failures;      /* per e-mail within login_window_s, then 429 */
    int login_max_failures_addr; /* per client address within login_window_s */
    int login_window_s;
    int login_delay_ms;    /* a failed login is answered after this x failures so far */
    int register_per_hour; /* registrations per client address */
    int hash_threads;      /* Argon2id worker threads */
    int usage_flush_ms;    /* last_used_at batch interval */
};

/* ---- keys.c (pure) ---------------------------------------------------------------- */

#define AUTH_CACHE_TTL_S 300 /* auth:key:<hash> and auth:session:<hash> lifetime */
#define AUTH_EMAIL_MAX 254
#define AUTH_KEY_NAME_MAX 64
#define AUTH_PASSWORD_MIN 10   /* characters (code points) */
#define AUTH_PASSWORD_MAX 1024 /* bytes */
#define AUTH_TOMBSTONE "revoked"
/* Session tokens: "nfs_" + 43 base64url chars (32 random bytes). */
#define AUTH_SESSION_PREFIX "nfs_"
#define AUTH_SESSION_TOKEN_LEN 47
#define AUTH_SESSION_COOKIE "nf_session"
#define AUTH_LOGIN_DELAY_STEPS 10 /* the delay stops growing after this many failures */
#define AUTH_ADDR_MAX 64          /* a client address as text, with its NUL */

/* true for exactly 64 lowercase hex digits (a SHA-256 as stored in api_keys.key_hash). */
bool auth_keys_hash_valid(const char *hash);
/*
 * Trims blanks and lowercases an e-mail address into out and checks its shape: one '@',
 * non-empty local part, a domain with a dot inside, no spaces or control characters, at
 * most AUTH_EMAIL_MAX bytes. -1 when invalid (out then unspecified).
 */
int auth_keys_email_normalize(const char *in, char *out, size_t outlen);
/*
 * Cache lifetime for a key or session record: AUTH_CACHE_TTL_S, or less when it expires
 * sooner. secs_left < 0 means it never expires. 0 means "do not cache".
 */
int auth_keys_cache_ttl(long long secs_left);
/*
 * The cached key record {"key_id","user_id","expires_at"} plus "rate_limit_per_minute"
 * and "burst" when set (> 0). expires_at NULL -> null. Heap string, free().
 */
char *auth_keys_record(const char *key_id, const char *user_id, const char *expires_at,
                       int rate_limit_per_minute, int burst);
/* The cached session record {"user_id","expires_at"}; heap string, free(). */
char *auth_session_record(const char *user_id, const char *expires_at);
/* A key name: 1..AUTH_KEY_NAME_MAX bytes of valid UTF-8 without control characters. */
bool auth_keys_name_valid(const char *name);
/* Code points in a valid UTF-8 string (no overlongs, surrogates or > U+10FFFF); -1 when
 * invalid or NULL. */
long auth_utf8_len(const char *s);
/*
 * The password rules: valid UTF-8, at least AUTH_PASSWORD_MIN characters, at most
 * AUTH_PASSWORD_MAX bytes, no control characters, not the e-mail address itself (email
 * is the normalised address, may be NULL). NULL when acceptable, else a static message
 * for the 422 answer (it never quotes the password).
 */
const char *auth_password_problem(const char *password, const char *email);
/* A new session token "nfs_..." into out (AUTH_SESSION_TOKEN_LEN + 1 bytes). */
void auth_session_token_new(char out[AUTH_SESSION_TOKEN_LEN + 1]);
/* true when token has the prefix, the length and the base64url alphabet. */
bool auth_session_token_valid(const char *token);
/*
 * The Set-Cookie value for a session: "nf_session=<token>; Path=/; Max-Age=<n>; HttpOnly;
 * SameSite=Lax" plus "; Secure" when secure. token NULL writes the clearing cookie
 * (empty value, Max-Age=0). -1 when out is too small.
 */
int auth_session_cookie(char *out, size_t outlen, const char *token, int max_age_s, bool secure);
/* How long to hold back the answer to a failed login: base_ms x failures so far, capped
 * at AUTH_LOGIN_DELAY_STEPS x base_ms; 0 for failures <= 0. */
int auth_login_delay_ms(long long failures, int base_ms);

/* ---- hasher.c: Argon2id off the event loop ------------------------------------------- */

/*
 * crypto_pwhash_str with INTERACTIVE limits takes ~50-100 ms of CPU and 64 MiB: run on the
 * loop it would stall every other request (key verification included). A few worker
 * threads take jobs from a queue; each finished job is put on a done list and the loop is
 * woken through a pipe, where the callback runs (on the loop thread, like every other
 * callback).
 *
 *   loop --job--> [queue] --> thread: crypto_pwhash_str(_verify) --> [done] --pipe--> loop cb
 */
enum {
    AUTH_HASH_OK = 0,         /* hashed, or the password matches */
    AUTH_HASH_MISMATCH = 1,   /* verify: wrong password (or an unreadable hash) */
    AUTH_HASH_FAILED = -1,    /* out of memory inside libsodium */
    AUTH_HASH_CANCELLED = -2, /* the hasher was freed first */
};

/* rc as above; hash (hash jobs with AUTH_HASH_OK only, else NULL) is valid during the call. */
typedef void (*auth_hash_cb)(int rc, const char *hash, void *arg);

/* threads >= 1; max_queue bounds waiting jobs (beyond it submissions are refused).
 * opslimit/memlimit as crypto_pwhash_str (tests pass the MIN values). -1 on failure. */
int auth_hasher_new(struct auth_hasher **out, struct event_base *base, int threads, int max_queue,
                    unsigned long long opslimit, size_t memlimit);
/* Joins the threads (a job being computed finishes first), then calls every callback not
 * yet called with AUTH_HASH_CANCELLED. NULL ok. */
void auth_hasher_free(struct auth_hasher *h);
/* Queues a hash of password (copied, wiped after use). 0 and cb fires later exactly once;
 * -1 when the queue is full or the hasher is stopping (cb is not called). */
int auth_hasher_hash(struct auth_hasher *h, const char *password, auth_hash_cb cb, void *arg);
/* Queues a verification of password against an Argon2 string; same contract. */
int auth_hasher_verify(struct auth_hasher *h, const char *hash, const char *password,
                       auth_hash_cb cb, void *arg);
/* Jobs queued or running (for metrics and tests). */
size_t auth_hasher_pending(const struct auth_hasher *h);

/* ---- ctx.c: the context and shared helpers ----------------------------------------- */

enum auth_backend { AUTH_BACKEND_PG, AUTH_BACKEND_REDIS, AUTH_BACKEND_KAFKA, AUTH_NBACKENDS };

enum auth_login_result { AUTH_LOGIN_OK, AUTH_LOGIN_FAILED, AUTH_LOGIN_LIMITED, AUTH_NLOGIN };

/*
 * Everything the process holds; the callback argument of every handler. Made by the
 * descriptor's init hook; the backends are nf_svc's (borrowed, set in start).
 */
struct auth_ctx {
    struct nf_svc *svc;            /* the running service: read by service.c's hooks only */
    const struct auth_config *cfg; /* svc->own */
    struct event_base *base;
    struct nf_metrics *metrics;
    struct nf_pg *pg;
    struct nf_redis *redis;
    struct nf_kafka_producer *producer; /* forge.audit */
    struct nf_redis_script *lf_check;   /* login failure counters: read (owned by redis) */
    struct nf_redis_script *lf_fail;    /* login failure counters: count one */
    struct nf_redis_script *reg_count;  /* registrations per address */
    struct nf_redis_script *used_drain; /* auth:used: read and delete */
    struct auth_hasher *hasher;         /* owned: made in start, joined in close */
    char dummy_hash[128]; /* Argon2id of a random password: unknown e-mails verify too */
    struct event *usage;  /* the last_used_at flush timer (owned) */
    LIST_HEAD(, auth_login_op) delayed; /* failed logins waiting to be answered */
    bool usage_busy;                    /* a flush is in flight */
    uint64_t last_cleanup_ms;           /* expired sessions last deleted */
    bool closing;                       /* teardown: callbacks must not start backend work */
    struct nf_counter *m_verify_ok;
    struct nf_counter *m_verify_miss;
    struct nf_counter *m_bootstrap;
    struct nf_counter *m_keys_created;
    struct nf_counter *m_keys_revoked;
    struct nf_counter *m_registered;
    struct nf_counter *m_login[AUTH_NLOGIN];
    struct nf_counter *m_usage_flushed;
    struct nf_counter *m_backend_err[AUTH_NBACKENDS];
};

/* Registers the service's metrics in ctx->metrics (at init). */
void auth_metrics_register(struct auth_ctx *ctx);
/* 503 {"error":{"code":"unavailable"}} with Retry-After: 1. */
void auth_reply_unavailable(struct nf_http_req *req, const char *msg);
/* Counts a failed call to backend b (not during the teardown: those fail on purpose). */
void auth_backend_error(struct auth_ctx *ctx, enum auth_backend b);
/* Both: counts the failure of b, then answers 503 with msg. */
void auth_unavailable(struct auth_ctx *ctx, struct nf_http_req *req, enum auth_backend b,
                      const char *msg);

/* Who calls, from the gateway's trusted headers (X-Nf-User-Id, X-Nf-Key-Id, X-Nf-Auth). */
struct auth_caller {
    char user_id[NF_ID_MAX];
    char key_id[NF_ID_MAX]; /* "" for a session */
    bool session;
};

/* Fills out from the headers; answers 403 itself and returns false when they are missing
 * or malformed (a request that did not come through the gateway's authentication). */
bool auth_req_caller(struct nf_http_req *req, struct auth_caller *out);
/* The caller's address as the gateway saw it (X-Nf-Client-Addr), else the TCP peer. */
const char *auth_req_client_addr(struct nf_http_req *req);

/* ---- audit.c: forge.audit ------------------------------------------------------------ */

/*
 * Produces forge.auth.<what> (key_created, key_revoked, login) with subject and message
 * key user_id. data is consumed. Never pass a secret. Best effort: a failure is logged and
 * counted, never answered to the caller (the change it reports is already committed).
 */
void auth_audit(struct auth_ctx *ctx, const char *what, const char *user_id, cJSON *data);
