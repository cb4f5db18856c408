/*
 * The gateway's configuration table (docs/internals.md): every NF_* variable it reads,
 * with default, bounds and help. Read once at start; `nf-gateway --help` prints it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_cfg.h"
#include "nf_log.h"

#ifndef NF_BINARY_DIR
#define NF_BINARY_DIR "."
#endif

#define OPT(env, type, def, min, max, field, help)                                                 \
    {                                                                                              \
        env, type, def, min, max, false, offsetof(struct gw_config, field), help                   \
    }

static const struct nf_cfg_opt gw_opts[] = {
    OPT("NF_LOG_LEVEL", NF_CFG_STR, "info", 1, 0, log_level, "debug, info, warn or error"),
    OPT("NF_GATEWAY_ADDR", NF_CFG_STR, "127.0.0.1:8000", 3, 0, addr,
        "public listen address host:port (0.0.0.0:8000 to expose)"),
    OPT("NF_GATEWAY_REUSEPORT", NF_CFG_BOOL, "false", 0, 0, reuseport,
        "SO_REUSEPORT, so several gateway processes share the port"),
    OPT("NF_GATEWAY_MAX_BODY", NF_CFG_INT, "1048576", 1024, 67108864, max_body,
        "largest request body in bytes (larger: 413)"),
    OPT("NF_GATEWAY_OPENAPI", NF_CFG_STR, NF_BINARY_DIR "/openapi.json", 1, 0, openapi,
        "OpenAPI JSON served at /openapi.json (must exist at start)"),
    OPT("NF_AUTH_ADDR", NF_CFG_STR, "127.0.0.1:8101", 3, 0, auth_addr,
        "nf-auth internal address host:port"),
    OPT("NF_SCHEDULER_ADDR", NF_CFG_STR, "127.0.0.1:8102", 3, 0, sched_addr,
        "nf-scheduler internal address host:port"),
    OPT("NF_WM_ADDR", NF_CFG_STR, "127.0.0.1:8104", 3, 0, wm_addr,
        "nf-worker-manager address host:port (/api/workers/* is forwarded there)"),
    OPT("NF_BILLING_ADDR", NF_CFG_STR, "127.0.0.1:8103", 3, 0, billing_addr,
        "nf-billing internal address host:port (/api/billing/* is forwarded there)"),
    OPT("NF_GATEWAY_ARTIFACT_ROOT", NF_CFG_STR, "", 0, 0, artifact_root,
        "local artifact store: /api/artifacts/{id}/content serves files under it only "
        "(empty: any file:// path the artifact registry holds)"),
    OPT("NF_KAFKA_BROKERS", NF_CFG_STR, "127.0.0.1:9092", 1, 0, kafka_brokers,
        "Kafka bootstrap servers"),
    OPT("NF_KAFKA_PARTITIONS", NF_CFG_INT, "3", 1, 1024, kafka_partitions,
        "partitions for topics created at start"),
    OPT("NF_KAFKA_REPLICATION", NF_CFG_INT, "1", 1, 16, kafka_replication,
        "replication factor for topics created at start"),
    OPT("NF_REDIS_ADDR", NF_CFG_STR, "127.0.0.1:6379", 3, 0, redis_addr, "Redis host:port"),
    OPT("NF_GATEWAY_BACKEND_TIMEOUT_MS", NF_CFG_INT, "5000", 100, 60000, backend_timeout_ms,
        "timeout of Redis, nf-auth and nf-scheduler calls"),
    OPT("NF_GATEWAY_PRODUCE_TIMEOUT_MS", NF_CFG_INT, "10000", 1000, 300000, produce_timeout_ms,
        "Kafka delivery deadline of a submitted job (then 503)"),
    OPT("NF_GATEWAY_WM_CONNS", NF_CFG_INT, "256", 1, 65536, wm_conns,
        "connections to the worker-manager (each next_job long poll holds one)"),
    OPT("NF_GATEWAY_DRAIN_MS", NF_CFG_INT, "10000", 0, 600000, drain_ms,
        "graceful stop: longest wait for in-flight requests and Kafka deliveries"),
    OPT("NF_GATEWAY_RATE_LIMIT", NF_CFG_INT, "600", 1, 1000000, rate_per_min,
        "requests per minute per API key (or per user for sessions); a key may carry less"),
    OPT("NF_GATEWAY_RATE_BURST", NF_CFG_INT, "100", 1, 1000000, rate_burst,
        "requests an API key may send at once before the per-minute rate applies"),
};

#define GW_NOPTS (sizeof(gw_opts) / sizeof(gw_opts[0]))

int gw_config_load(struct gw_config *cfg, char *err, size_t errlen)
{
    enum nf_log_level level;
    char *host = NULL;
    int port;
    const char *addrs[5][2];
    size_t i;

    memset(cfg, 0, sizeof(*cfg));
    if (nf_cfg_load(gw_opts, GW_NOPTS, cfg, err, errlen) != 0)
        goto fail;
    if (nf_log_level_parse(cfg->log_level, &level) != 0) {
        snprintf(err, errlen, "NF_LOG_LEVEL: must be debug, info, warn or error (got %s)",
                 cfg->log_level);
        goto fail;
    }
    addrs[0][0] = "NF_GATEWAY_ADDR";
    addrs[0][1] = cfg->addr;
    addrs[1][0] = "NF_AUTH_ADDR";
    addrs[1][1] = cfg->auth_addr;
    addrs[2][0] = "NF_SCHEDULER_ADDR";
    addrs[2][1] = cfg->sched_addr;
    addrs[3][0] = "NF_WM_ADDR";
    addrs[3][1] = cfg->wm_addr;
    addrs[4][0] = "NF_BILLING_ADDR";
    addrs[4][1] = cfg->billing_addr;
    for (i = 0; i < 5; i++) {
        if (nf_cfg_split_addr(addrs[i][1], &host, &port) != 0) {
            snprintf(err, errlen, "%s: must be host:port (got %s)", addrs[i][0], addrs[i][1]);
            goto fail;
        }
        free(host);
        host = NULL;
    }
    if (nf_cfg_split_addr(cfg->redis_addr, &host, &port) != 0) {
        snprintf(err, errlen, "NF_REDIS_ADDR: must be host:port (got %s)", cfg->redis_addr);
        goto fail;
    }
    free(host);
    return 0;

fail:
    gw_config_free(cfg);
    return -1;
}

void gw_config_log(const struct gw_config *cfg)
{
    nf_cfg_log(gw_opts, GW_NOPTS, cfg);
}

void gw_config_free(struct gw_config *cfg)
{
    if (cfg)
        nf_cfg_free(gw_opts, GW_NOPTS, cfg);
}

void gw_config_usage(FILE *out)
{
    fprintf(out, "usage: nf-gateway [--help]\n\n"
                 "The Nexa Forge public API gateway.\n\n");
    nf_cfg_usage(gw_opts, GW_NOPTS, out);
}
