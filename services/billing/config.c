/*
 * The billing service's configuration table (internals.md): read once at start,
 * validated, logged with secrets masked, printed by --help.
 */
#include "bill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_cfg.h"
#include "nf_log.h"

#define OFF(f) offsetof(struct bill_config, f)

static const struct nf_cfg_opt opts[] = {
    {"NF_LOG_LEVEL", NF_CFG_STR, "info", 1, 0, false, OFF(log_level), "debug, info, warn or error"},
    {"NF_BILLING_ADDR", NF_CFG_STR, "127.0.0.1:8103", 3, 0, false, OFF(addr),
     "internal HTTP listen address host:port"},
    {"NF_KAFKA_BROKERS", NF_CFG_STR, "127.0.0.1:9092", 3, 0, false, OFF(brokers),
     "Kafka bootstrap servers"},
    {"NF_KAFKA_PARTITIONS", NF_CFG_INT, "3", 1, 1024, false, OFF(partitions),
     "partitions of topics created at start"},
    {"NF_KAFKA_REPLICATION", NF_CFG_INT, "1", 1, 16, false, OFF(replication),
     "replication factor of topics created at start"},
    {"NF_PG_DSN", NF_CFG_STR, "host=127.0.0.1 port=5432 dbname=forge user=forge", 1, 0, true,
     OFF(pg_dsn), "libpq conninfo"},
    {"NF_BILLING_MIGRATIONS", NF_CFG_STR, NF_SOURCE_DIR "/services/billing/migrations", 1, 0, false,
     OFF(migrations), "directory of the billing schema migrations"},
    {"NF_BILLING_PG_CONNS", NF_CFG_INT, "4", 1, 64, false, OFF(pg_conns),
     "Postgres connections in the pool"},
    {"NF_BILLING_MAX_INFLIGHT", NF_CFG_INT, "20000", 1, 1000000, false, OFF(max_inflight),
     "Kafka messages held at once (many batches: pausing the consumer makes it refetch)"},
    {"NF_BILLING_GRACE_MS", NF_CFG_INT, "10000", 100, 600000, false, OFF(grace_ms),
     "time allowed on SIGTERM to finish in-flight work"},
    {"NF_BILLING_GROUP", NF_CFG_STR, BILL_GROUP, 1, 0, false, OFF(group),
     "Kafka consumer group (a new group replays forge.usage from the start)"},
    {"NF_BILLING_BATCH_MAX", NF_CFG_INT, "1000", 1, 10000, false, OFF(batch_max),
     "usage events recorded by one statement"},
    {"NF_BILLING_BATCH_LINGER_MS", NF_CFG_INT, "5", 0, 10000, false, OFF(linger_ms),
     "how long a batch waits to fill before it is recorded"},
    {"NF_BILLING_SWEEP_MS", NF_CFG_INT, "500", 10, 600000, false, OFF(sweep_ms),
     "how often usage waiting for its lease is looked at again"},
    {"NF_BILLING_LEASE_WAIT_S", NF_CFG_INT, "3600", 1, 604800, false, OFF(lease_wait_s),
     "usage whose lease is still unknown after this long is refused"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

int bill_config_load(struct bill_config *cfg, char *err, size_t errlen)
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
        snprintf(err, errlen, "NF_BILLING_ADDR: must be host:port (got %s)", cfg->addr);
        goto fail;
    }
    free(host);
    return 0;
fail:
    bill_config_free(cfg);
    return -1;
}

void bill_config_log(const struct bill_config *cfg)
{
    nf_cfg_log(opts, NOPTS, cfg);
}

void bill_config_free(struct bill_config *cfg)
{
    if (!cfg)
        return;
    nf_cfg_free(opts, NOPTS, cfg);
    memset(cfg, 0, sizeof(*cfg));
}

void bill_config_usage(FILE *out)
{
    fprintf(out, "nf-billing: meters usage and prices it (DESIGN §8)\n\n");
    nf_cfg_usage(opts, NOPTS, out);
}
