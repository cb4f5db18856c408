/*
 * nf-auth as an nf_svc descriptor: its own NF_AUTH_* rows, the route table and the hooks.
 * nf_svc does the rest (shared rows, migrations of the `auth` schema, topics, Postgres,
 * Redis, the forge.audit producer, the HTTP server, /readyz, the SIGTERM drain).
 *
 *   init   the context and its metrics; the producer's linger.ms
 *   start  borrow the backends -> the limiters' Redis scripts -> the dummy hash and the
 *          Argon2id threads -> the last_used_at timer
 *   close  (teardown, before the backends go) the timer; join the hasher threads (hashes
 *          still waiting answer 503); answer the failed logins still held back
 *   free   the context
 *
 * Kafka is optional (kafka_optional): while it is away /readyz stays ready and SIGTERM does
 * not wait for it. Audit events wait in the producer; keys and sessions must keep verifying.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_svc.h"
#include "routes.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

#define HASH_QUEUE 256 /* logins and registrations waiting for a hasher thread, then 503 */

#define OFF(f) offsetof(struct auth_config, f)

static const struct nf_cfg_opt auth_opts[] = {
    {"NF_AUTH_SESSION_TTL_S", NF_CFG_INT, "604800", 60, 31536000, false, OFF(session_ttl_s),
     "lifetime of a dashboard session (nf_session cookie)"},
    {"NF_AUTH_COOKIE_SECURE", NF_CFG_BOOL, "false", 0, 0, false, OFF(cookie_secure),
     "mark the nf_session cookie Secure (set when served over HTTPS)"},
    {"NF_AUTH_MAX_KEYS", NF_CFG_INT, "50", 1, 10000, false, OFF(max_keys),
     "live (not revoked, not expired) API keys per user"},
    {"NF_AUTH_LOGIN_MAX_FAILURES", NF_CFG_INT, "5", 1, 1000, false, OFF(login_max_failures),
     "failed logins per e-mail within the window, then 429"},
    {"NF_AUTH_LOGIN_MAX_FAILURES_ADDR", NF_CFG_INT, "50", 1, 100000, false,
     OFF(login_max_failures_addr), "failed logins per client address within the window, then 429"},
    {"NF_AUTH_LOGIN_WINDOW_S", NF_CFG_INT, "900", 1, 86400, false, OFF(login_window_s),
     "window of the failed-login counters (from the first failure)"},
    {"NF_AUTH_LOGIN_DELAY_MS", NF_CFG_INT, "250", 0, 10000, false, OFF(login_delay_ms),
     "a failed login is answered after this many ms per failure so far (10 at most)"},
    {"NF_AUTH_REGISTER_PER_HOUR", NF_CFG_INT, "100", 1, 1000000, false, OFF(register_per_hour),
     "registrations per client address per hour"},
    {"NF_AUTH_HASH_THREADS", NF_CFG_INT, "2", 1, 64, false, OFF(hash_threads),
     "Argon2id worker threads (64 MiB each while hashing)"},
    {"NF_AUTH_USAGE_FLUSH_MS", NF_CFG_INT, "5000", 100, 3600000, false, OFF(usage_flush_ms),
     "how often key usage is written to api_keys.last_used_at"},
};

/* The gateway forwards /api/auth/... here; /internal/... is its cache-miss path. */
static const struct nf_svc_route auth_routes[] = {
    {"POST", "/internal/keys/verify", auth_internal_verify_key},
    {"POST", "/internal/sessions/verify", auth_internal_verify_session},
    {"POST", "/internal/bootstrap", auth_internal_bootstrap},
    {"POST", "/api/auth/register", auth_account_register},
    {"POST", "/api/auth/login", auth_account_login},
    {"POST", "/api/auth/logout", auth_account_logout},
    {"GET", "/api/auth/me", auth_account_me},
    {"POST", "/api/auth/api-keys", auth_apikeys_create},
    {"GET", "/api/auth/api-keys", auth_apikeys_list},
    {"DELETE", "/api/auth/api-keys/{key_id}", auth_apikeys_revoke},
};

/* forge.audit events are batched for a few ms. */
static const char *const producer_conf[] = {"linger.ms", "5", NULL};

static int auth_init(struct nf_svc *svc)
{
    struct auth_ctx *ctx = nf_xcalloc(1, sizeof(*ctx));

    ctx->svc = svc;
    ctx->cfg = svc->own;
    ctx->base = svc->base;
    ctx->metrics = svc->metrics;
    LIST_INIT(&ctx->delayed);
    auth_metrics_register(ctx);
    svc->producer_conf = producer_conf;
    svc->ctx = ctx;
    return 0;
}

/* Argon2id threads, and the hash that unknown e-mails are verified against so a login
 * takes as long whether the e-mail exists or not (computed once, before the loop runs). */
static int hasher_new(struct auth_ctx *ctx)
{
    char pw[48];
    int rc;

    nf_crypto_token(24, pw, sizeof(pw));
    rc = crypto_pwhash_str(ctx->dummy_hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                           crypto_pwhash_MEMLIMIT_INTERACTIVE);
    sodium_memzero(pw, sizeof(pw));
    if (rc != 0) {
        nf_log_error("hasher_failed", "cannot compute the dummy password hash");
        return -1;
    }
    return auth_hasher_new(&ctx->hasher, ctx->base, ctx->cfg->hash_threads, HASH_QUEUE,
                           crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

static int auth_start(void *arg)
{
    struct auth_ctx *ctx = arg;

    ctx->pg = ctx->svc->pg;
    ctx->redis = ctx->svc->redis;
    ctx->producer = ctx->svc->producer;
    if (auth_account_start(ctx) != 0) {
        nf_log_error("redis_failed", "cannot register the redis scripts");
        return -1;
    }
    if (hasher_new(ctx) != 0)
        return -1;
    if (auth_usage_start(ctx) != 0) {
        nf_log_error("redis_failed", "cannot start the key usage timer");
        return -1;
    }
    return 0;
}

/* Callbacks that fire from here on (cancelled hashes, then the backends' failures as nf_svc
 * frees them) answer 503 and start no new backend work because `closing` is set. */
static void auth_close(void *arg)
{
    struct auth_ctx *ctx = arg;

    ctx->closing = true;
    auth_usage_close(ctx);
    auth_hasher_free(ctx->hasher); /* joins the threads; waiting hashes answer 503 */
    ctx->hasher = NULL;
    auth_account_close(ctx); /* held-back failed logins answer their 401 */
}

static void auth_free(void *arg)
{
    free(arg);
}

const struct nf_svc_desc auth_service = {
    .name = "auth",
    .summary = "the Nexa Forge authentication service (internal HTTP)",
    .env_prefix = "NF_AUTH",
    .addr = "127.0.0.1:8101",
    .needs = NF_SVC_PG | NF_SVC_REDIS | NF_SVC_PRODUCER,
    .kafka_optional = true,
    .schema = "auth",
    .migrations = NF_SOURCE_DIR "/services/auth/migrations",
    .timeout_ms = 5000,
    .drain_ms = 5000,
    .max_body = (size_t)64 * 1024,
    NF_SVC_OPTS(auth_opts, struct auth_config),
    NF_SVC_ROUTES(auth_routes),
    .init = auth_init,
    .start = auth_start,
    .close = auth_close,
    .free = auth_free,
};
