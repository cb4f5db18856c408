/*
 * nf-auth's configuration table (docs/internals.md). Read once at start; `nf-auth --help`
 * prints it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_cfg.h"
#include "nf_log.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

#define OPT(env, type, def, min, max, secret, field, help)                                         \
    {                                                                                              \
        env, type, def, min, max, secret, offsetof(struct auth_config, field), help                \
    }

static const struct nf_cfg_opt auth_opts[] = {
    OPT("NF_LOG_LEVEL", NF_CFG_STR, "info", 1, 0, false, log_level, "debug, info, warn or error"),
    OPT("NF_AUTH_ADDR", NF_CFG_STR, "127.0.0.1:8101", 3, 0, false, addr,
        "internal listen address host:port"),
    OPT("NF_PG_DSN", NF_CFG_STR, "host=127.0.0.1 port=5432 dbname=forge user=forge", 1, 0, true,
        pg_dsn, "libpq conninfo of the forge database"),
    OPT("NF_REDIS_ADDR", NF_CFG_STR, "127.0.0.1:6379", 3, 0, false, redis_addr, "Redis host:port"),
    OPT("NF_KAFKA_BROKERS", NF_CFG_STR, "127.0.0.1:9092", 1, 0, false, kafka_brokers,
        "Kafka bootstrap servers (forge.audit)"),
    OPT("NF_KAFKA_PARTITIONS", NF_CFG_INT, "3", 1, 1024, false, kafka_partitions,
        "partitions for topics created at start"),
    OPT("NF_KAFKA_REPLICATION", NF_CFG_INT, "1", 1, 16, false, kafka_replication,
        "replication factor for topics created at start"),
    OPT("NF_AUTH_MIGRATIONS", NF_CFG_STR, NF_SOURCE_DIR "/services/auth/migrations", 1, 0, false,
        migrations, "directory of the auth schema migrations (NNNN_*.sql)"),
    OPT("NF_AUTH_PG_CONNS", NF_CFG_INT, "4", 1, 64, false, pg_conns, "Postgres connections"),
    OPT("NF_AUTH_TIMEOUT_MS", NF_CFG_INT, "5000", 100, 60000, false, timeout_ms,
        "timeout of Postgres and Redis calls"),
    OPT("NF_AUTH_DRAIN_MS", NF_CFG_INT, "5000", 0, 600000, false, drain_ms,
        "graceful stop: longest wait for in-flight requests"),
    OPT("NF_AUTH_SESSION_TTL_S", NF_CFG_INT, "604800", 60, 31536000, false, session_ttl_s,
        "lifetime of a dashboard session (nf_session cookie)"),
    OPT("NF_AUTH_COOKIE_SECURE", NF_CFG_BOOL, "false", 0, 0, false, cookie_secure,
        "mark the nf_session cookie Secure (set when served over HTTPS)"),
    OPT("NF_AUTH_MAX_KEYS", NF_CFG_INT, "50", 1, 10000, false, max_keys,
        "live (not revoked, not expired) API keys per user"),
    OPT("NF_AUTH_LOGIN_MAX_FAILURES", NF_CFG_INT, "5", 1, 1000, false, login_max_failures,
        "failed logins per e-mail within the window, then 429"),
    OPT("NF_AUTH_LOGIN_MAX_FAILURES_ADDR", NF_CFG_INT, "50", 1, 100000, false,
        login_max_failures_addr, "failed logins per client address within the window, then 429"),
    OPT("NF_AUTH_LOGIN_WINDOW_S", NF_CFG_INT, "900", 1, 86400, false, login_window_s,
        "window of the failed-login counters (from the first failure)"),
    OPT("NF_AUTH_LOGIN_DELAY_MS", NF_CFG_INT, "250", 0, 10000, false, login_delay_ms,
        "a failed login is answered after this many ms per failure so far (10 at most)"),
    OPT("NF_AUTH_REGISTER_PER_HOUR", NF_CFG_INT, "100", 1, 1000000, false, register_per_hour,
        "registrations per client address per hour"),
    OPT("NF_AUTH_HASH_THREADS", NF_CFG_INT, "2", 1, 64, false, hash_threads,
        "Argon2id worker threads (64 MiB each while hashing)"),
    OPT("NF_AUTH_USAGE_FLUSH_MS", NF_CFG_INT, "5000", 100, 3600000, false, usage_flush_ms,
        "how often key usage is written to api_keys.last_used_at"),
};

#define AUTH_NOPTS (sizeof(auth_opts) / sizeof(auth_opts[0]))

int auth_config_load(struct auth_config *cfg, char *err, size_t errlen)
{
    enum nf_log_level level;
    char *host = NULL;
    int port;

    memset(cfg, 0, sizeof(*cfg));
    if (nf_cfg_load(auth_opts, AUTH_NOPTS, cfg, err, errlen) != 0)
        goto fail;
    if (nf_log_level_parse(cfg->log_level, &level) != 0) {
        snprintf(err, errlen, "NF_LOG_LEVEL: must be debug, info, warn or error (got %s)",
                 cfg->log_level);
        goto fail;
    }
    if (nf_cfg_split_addr(cfg->addr, &host, &port) != 0) {
        snprintf(err, errlen, "NF_AUTH_ADDR: must be host:port (got %s)", cfg->addr);
        goto fail;
    }
    free(host);
    host = NULL;
    if (nf_cfg_split_addr(cfg->redis_addr, &host, &port) != 0) {
        snprintf(err, errlen, "NF_REDIS_ADDR: must be host:port (got %s)", cfg->redis_addr);
        goto fail;
    }
    free(host);
    return 0;

fail:
    auth_config_free(cfg);
    return -1;
}

void auth_config_log(const struct auth_config *cfg)
{
    nf_cfg_log(auth_opts, AUTH_NOPTS, cfg);
}

void auth_config_free(struct auth_config *cfg)
{
    if (cfg)
        nf_cfg_free(auth_opts, AUTH_NOPTS, cfg);
}

void auth_config_usage(FILE *out)
{
    fprintf(out, "usage: nf-auth [--help]\n\n"
                 "The Nexa Forge authentication service (internal HTTP).\n\n");
    nf_cfg_usage(auth_opts, AUTH_NOPTS, out);
}
