#pragma once
/*
 * nf-auth: owner of the `auth` schema (users, API keys, sessions) and of the Redis
 * auth:* keys. Internal HTTP only (loopback by default).
 *
 *   POST /internal/keys/verify {"key_hash"}
 *     -> UPDATE api_keys (live key: not revoked, not expired) SET last_used_at
 *     -> 200 {"key_id","user_id","expires_at"} + SET auth:key:<hash> EX min(300, ttl)
 *     -> 404 when no live key has that hash
 *   POST /internal/bootstrap {"email"}
 *     -> one transaction: user if absent + a new API key -> 201 {..., "api_key"}
 *
 * Files by role: config.c (the NF_AUTH_* table), auth.c (context, migrations, shutdown),
 * keys.c (pure key and email helpers), routes_internal.c.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nf_crypto.h"
#include "nf_id.h"

struct event;
struct event_base;
struct nf_app;
struct nf_counter;
struct nf_http_server;
struct nf_metrics;
struct nf_pg;
struct nf_redis;

/* ---- config.c --------------------------------------------------------------------- */

struct auth_config {
    char *log_level;
    char *addr;   /* internal listen address host:port */
    char *pg_dsn; /* libpq conninfo (a secret: it may hold a password) */
    char *redis_addr;
    char *migrations; /* directory of NNNN_*.sql */
    int pg_conns;
    int timeout_ms; /* Postgres and Redis calls */
    int drain_ms;   /* graceful stop: longest wait for in-flight requests */
};

/* Reads the environment into cfg; -1 with err filled on a bad value (cfg is then freed). */
int auth_config_load(struct auth_config *cfg, char *err, size_t errlen);
void auth_config_log(const struct auth_config *cfg);
void auth_config_free(struct auth_config *cfg);
void auth_config_usage(FILE *out);

/* ---- keys.c (pure) ---------------------------------------------------------------- */

#define AUTH_CACHE_TTL_S 300 /* auth:key:<hash> lifetime */
#define AUTH_EMAIL_MAX 254

/* true for exactly 64 lowercase hex digits (a SHA-256 as stored in api_keys.key_hash). */
bool auth_keys_hash_valid(const char *hash);
/*
 * Trims blanks and lowercases an e-mail address into out and checks its shape: one '@',
 * non-empty local part, a domain with a dot inside, no spaces or control characters, at
 * most AUTH_EMAIL_MAX bytes. -1 when invalid (out then unspecified).
 */
int auth_keys_email_normalize(const char *in, char *out, size_t outlen);
/*
 * Cache lifetime for a key record: AUTH_CACHE_TTL_S, or less when the key expires sooner.
 * secs_left < 0 means the key never expires. 0 means "do not cache".
 */
int auth_keys_cache_ttl(long long secs_left);
/* {"key_id","user_id","expires_at"} (expires_at NULL -> null); heap string, free(). */
char *auth_keys_record(const char *key_id, const char *user_id, const char *expires_at);

/* ---- auth.c: the context ------------------------------------------------------------ */

enum auth_backend { AUTH_BACKEND_PG, AUTH_BACKEND_REDIS, AUTH_NBACKENDS };

/* Everything the process holds; the callback argument of every handler. */
struct auth_ctx {
    const struct auth_config *cfg;
    struct nf_app *app;
    struct event_base *base;
    struct nf_metrics *metrics;
    struct nf_http_server *srv;
    struct nf_pg *pg;
    struct nf_redis *redis;
    struct event *drain; /* polls in-flight requests during a graceful stop */
    uint64_t drain_deadline_ms;
    bool stopping; /* SIGTERM seen: listener closed, draining */
    bool closing;  /* auth_free running: callbacks must not start backend work */
    struct nf_counter *m_verify_ok;
    struct nf_counter *m_verify_miss;
    struct nf_counter *m_bootstrap;
    struct nf_counter *m_backend_err[AUTH_NBACKENDS];
};

/*
 * Applies the migrations (blocking, retried while Postgres is not reachable yet), then
 * builds backends, server and routes. cfg and app must outlive the context. -1 on failure
 * (logged), *out untouched.
 */
int auth_new(struct auth_ctx **out, const struct auth_config *cfg, struct nf_app *app);
/* nf_app on_stop: closes the listener and waits (bounded) for in-flight requests. */
void auth_stop(void *arg);
/* Fails what is still pending (503), frees everything. NULL ok. */
void auth_free(struct auth_ctx *ctx);

/* ---- routes_internal.c ---------------------------------------------------------------- */

int auth_internal_register(struct auth_ctx *ctx);
