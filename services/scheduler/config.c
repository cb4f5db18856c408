/*
 * The scheduler's configuration table (internals.md): read once at start, validated,
 * logged with secrets masked, printed by --help.
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_cfg.h"
#include "nf_log.h"

#define OFF(f) offsetof(struct sched_config, f)

static const struct nf_cfg_opt opts[] = {
    {"NF_LOG_LEVEL", NF_CFG_STR, "info", 1, 0, false, OFF(log_level), "debug, info, warn or error"},
    {"NF_SCHEDULER_ADDR", NF_CFG_STR, "127.0.0.1:8102", 3, 0, false, OFF(addr),
     "internal HTTP listen address host:port"},
    {"NF_KAFKA_BROKERS", NF_CFG_STR, "127.0.0.1:9092", 3, 0, false, OFF(brokers),
     "Kafka bootstrap servers"},
    {"NF_KAFKA_PARTITIONS", NF_CFG_INT, "3", 1, 1024, false, OFF(partitions),
     "partitions of topics created at start"},
    {"NF_KAFKA_REPLICATION", NF_CFG_INT, "1", 1, 16, false, OFF(replication),
     "replication factor of topics created at start"},
    {"NF_REDIS_ADDR", NF_CFG_STR, "127.0.0.1:6379", 3, 0, false, OFF(redis_addr),
     "Redis host:port"},
    {"NF_PG_DSN", NF_CFG_STR, "host=127.0.0.1 port=5432 dbname=forge user=forge", 1, 0, true,
     OFF(pg_dsn), "libpq conninfo"},
    {"NF_SCHEDULER_MIGRATIONS", NF_CFG_STR, NF_SOURCE_DIR "/services/scheduler/migrations", 1, 0,
     false, OFF(migrations), "directory of the sched schema migrations"},
    {"NF_SCHEDULER_PG_CONNS", NF_CFG_INT, "4", 1, 64, false, OFF(pg_conns),
     "Postgres connections in the pool"},
    {"NF_SCHEDULER_MAX_INFLIGHT", NF_CFG_INT, "256", 1, 100000, false, OFF(max_inflight),
     "Kafka messages handled at once"},
    {"NF_SCHEDULER_RETRY_CAP_S", NF_CFG_INT, "60", 1, 3600, false, OFF(retry_cap_s),
     "cap in seconds of the retry backoff of failed attempts (2^attempt s)"},
    {"NF_SCHEDULER_GRACE_MS", NF_CFG_INT, "10000", 100, 600000, false, OFF(grace_ms),
     "time allowed on SIGTERM to finish in-flight work"},
    {"NF_WM_ADDR", NF_CFG_STR, "127.0.0.1:8104", 3, 0, false, OFF(wm_addr),
     "nf-worker-manager address host:port (job cancel)"},
    {"NF_SCHEDULER_RETRY_POLL_MS", NF_CFG_INT, "500", 50, 60000, false, OFF(retry_poll_ms),
     "how often retries that are due are dispatched"},
    {"NF_SCHEDULER_RECONCILE_S", NF_CFG_INT, "5", 1, 3600, false, OFF(reconcile_s),
     "period of the reconciler (lost dispatches, timeouts, stuck cancels, snapshots)"},
    {"NF_SCHEDULER_STUCK_S", NF_CFG_INT, "30", 5, 86400, false, OFF(stuck_s),
     "a queued job the worker-manager does not hold, or a cancel unanswered, this long is "
     "handled again"},
    {"NF_SCHEDULER_TIMEOUT_GRACE_S", NF_CFG_INT, "60", 0, 86400, false, OFF(timeout_grace_s),
     "a job running this long past its timeout_seconds is failed with class timeout"},
    {"NF_BILLING_ADDR", NF_CFG_STR, "127.0.0.1:8103", 3, 0, false, OFF(billing_addr),
     "nf-billing internal address host:port (budget checks before dispatch)"},
    {"NF_SCHEDULER_BUDGET_WAIT_MS", NF_CFG_INT, "30000", 0, 3600000, false, OFF(budget_wait_ms),
     "billing unreachable this long: a new job is dispatched without its budget check"},
    {"NF_SCHEDULER_STORAGE_WINDOW_S", NF_CFG_INT, "3600", 1, 86400, false, OFF(storage_window_s),
     "stored artifacts are metered (byte-hours) per window of this length"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

int sched_config_load(struct sched_config *cfg, char *err, size_t errlen)
{
    enum nf_log_level lvl;
    char *host = NULL;
    int port;

    memset(cfg, 0, sizeof(*cfg));
    if (nf_cfg_load(opts, NOPTS, cfg, err, errlen) < 0)
        goto fail;
    if (nf_log_level_parse(cfg->log_level, &lvl) < 0) {
        snprintf(err, errlen, "NF_LOG_LEVEL: must be debug, info, warn or error (got %s)",
                 cfg->log_level);
        goto fail;
    }
    if (nf_cfg_split_addr(cfg->addr, &host, &port) < 0) {
        snprintf(err, errlen, "NF_SCHEDULER_ADDR: must be host:port (got %s)", cfg->addr);
        goto fail;
    }
    free(host);
    host = NULL;
    if (nf_cfg_split_addr(cfg->redis_addr, &host, &port) < 0) {
        snprintf(err, errlen, "NF_REDIS_ADDR: must be host:port (got %s)", cfg->redis_addr);
        goto fail;
    }
    free(host);
    host = NULL;
    if (nf_cfg_split_addr(cfg->wm_addr, &host, &port) < 0) {
        snprintf(err, errlen, "NF_WM_ADDR: must be host:port (got %s)", cfg->wm_addr);
        goto fail;
    }
    free(host);
    host = NULL;
    if (nf_cfg_split_addr(cfg->billing_addr, &host, &port) < 0) {
        snprintf(err, errlen, "NF_BILLING_ADDR: must be host:port (got %s)", cfg->billing_addr);
        goto fail;
    }
    free(host);
    return 0;
fail:
    sched_config_free(cfg);
    return -1;
}

void sched_config_log(const struct sched_config *cfg)
{
    nf_cfg_log(opts, NOPTS, cfg);
}

void sched_config_free(struct sched_config *cfg)
{
    if (!cfg)
        return;
    nf_cfg_free(opts, NOPTS, cfg);
    memset(cfg, 0, sizeof(*cfg));
}

void sched_config_usage(FILE *out)
{
    fprintf(out, "nf-scheduler: schedules jobs and tracks their state (DESIGN §2)\n\n");
    nf_cfg_usage(opts, NOPTS, out);
}
