/*
 * The worker-manager's configuration table (internals.md "Configuration").
 */
#include <stddef.h>
#include <stdio.h>

#include "nf_cfg.h"
#include "wm.h"

#ifndef NF_SOURCE_DIR
#define NF_SOURCE_DIR "."
#endif

#define OPT(env, type, def, min, max, secret, field, help)                                         \
    {                                                                                              \
        env, type, def, min, max, secret, offsetof(struct wm_config, field), help                  \
    }

const struct nf_cfg_opt wm_cfg_opts[] = {
    OPT("NF_WM_ADDR", NF_CFG_STR, "127.0.0.1:8104", 3, 0, false, addr,
        "listen address host:port for the worker routes"),
    OPT("NF_KAFKA_BROKERS", NF_CFG_STR, "127.0.0.1:9092", 1, 0, false, brokers,
        "Kafka bootstrap servers"),
    OPT("NF_KAFKA_PARTITIONS", NF_CFG_INT, "3", 1, 1000, false, partitions,
        "partitions for topics created at start"),
    OPT("NF_KAFKA_REPLICATION", NF_CFG_INT, "1", 1, 16, false, replication,
        "replication factor for topics created at start"),
    OPT("NF_REDIS_ADDR", NF_CFG_STR, "127.0.0.1:6379", 3, 0, false, redis_addr, "Redis host:port"),
    OPT("NF_PG_DSN", NF_CFG_STR, "host=127.0.0.1 port=5432 dbname=forge user=forge", 1, 0, true,
        pg_dsn, "libpq conninfo"),
    OPT("NF_WORKER_REGISTRATION_TOKEN", NF_CFG_STR, NULL, 16, 0, true, reg_token,
        "operator secret workers present at registration (at least 16 characters)"),
    OPT("NF_WM_HEARTBEAT_INTERVAL_S", NF_CFG_INT, "5", 1, 300, false, heartbeat_s,
        "seconds between worker heartbeats (told to workers at registration)"),
    OPT("NF_WM_LEASE_TTL_S", NF_CFG_INT, "30", 2, 3600, false, lease_ttl_s,
        "seconds a job lease lives without a heartbeat"),
    OPT("NF_WM_REAP_INTERVAL_MS", NF_CFG_INT, "1000", 50, 60000, false, reap_interval_ms,
        "how often expired leases are looked for"),
    OPT("NF_WM_MIGRATIONS", NF_CFG_STR, NF_SOURCE_DIR "/services/worker-manager/migrations", 1, 0,
        false, migrations, "directory of the wm schema migrations"),
};
const size_t wm_cfg_nopts = sizeof(wm_cfg_opts) / sizeof(wm_cfg_opts[0]);

int wm_config_load(struct wm_config *cfg, char *err, size_t errlen)
{
    if (nf_cfg_load(wm_cfg_opts, wm_cfg_nopts, cfg, err, errlen) < 0)
        return -1;
    if (cfg->lease_ttl_s < 2 * cfg->heartbeat_s) {
        snprintf(err, errlen, "NF_WM_LEASE_TTL_S: must be at least two heartbeats (%d s) (got %d)",
                 2 * cfg->heartbeat_s, cfg->lease_ttl_s);
        return -1;
    }
    return 0;
}

void wm_config_free(struct wm_config *cfg)
{
    if (cfg == NULL)
        return;
    nf_cfg_free(wm_cfg_opts, wm_cfg_nopts, cfg);
}
