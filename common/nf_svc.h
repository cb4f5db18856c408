#pragma once
/*
 * nf_svc: a service is a descriptor; nf_svc_main() runs it. Everything every service does
 * around its own logic lives here once: arguments, configuration, migrations, topics,
 * backends, the HTTP server with /healthz /readyz /metrics, the Kafka consumer, the SIGTERM
 * drain and the teardown.
 *
 *   nf_svc_main(desc, argc, argv)
 *     --help | --check-config   usage, or validate the configuration and exit (0 | 2)
 *     configuration: the shared rows (log level, listen address, the backends the service
 *         needs) + desc->opts, read once; a bad value exits 2 naming the variable; a
 *         consumer's <PREFIX>_INSTANCE_ID "auto" becomes its static membership id
 *     desc->init(svc)        service context (svc->ctx), metrics; no backend yet
 *     migrations (retried while Postgres comes up) -> topics -> Postgres pool -> Redis
 *       -> Kafka producer -> HTTP server + desc->routes -> desc->start(ctx) -> consumer
 *     event loop
 *   SIGTERM: svc->stopping, listener closed, desc->stop(ctx); new messages are left
 *       un-done (redelivered to the next consumer); every 20 ms: HTTP requests in flight +
 *       Kafka messages queued + desc->busy(ctx) == 0, or <PREFIX>_DRAIN_MS passed ->
 *   teardown, the reverse of the start: desc->close(ctx) (the service ends its own timers
 *       and clients) -> consumer (commits) -> producer (flush) -> Redis -> Postgres -> HTTP
 *       server -> desc->free(ctx) -> metrics -> configuration.
 *
 * Callbacks that fire while a backend is freed (error replies, failed deliveries) find the
 * service context alive and svc->closing set: they must only clean up.
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "nf_app.h"
#include "nf_cfg.h"
#include "nf_http.h"
#include "nf_kafka.h"

struct nf_http_client;
struct nf_metrics;
struct nf_pg;
struct nf_redis;

/* The backends a service needs (desc->needs). A consumer (desc->consume) implies Kafka. */
enum nf_svc_need {
    NF_SVC_PG = 1 << 0,       /* Postgres pool; migrations when desc->schema is set */
    NF_SVC_REDIS = 1 << 1,    /* one Redis client */
    NF_SVC_PRODUCER = 1 << 2, /* an idempotent Kafka producer */
};

/* A route of the service's HTTP server; fn gets the service context as its argument. */
struct nf_svc_route {
    const char *method;
    const char *pattern;
    nf_http_handler fn;
};

/* The shared configuration rows; a row exists only where the descriptor needs it. */
struct nf_svc_cfg {
    int log_level;    /* NF_LOG_LEVEL */
    char *addr;       /* <PREFIX>_ADDR, when desc->addr */
    char *brokers;    /* NF_KAFKA_BROKERS, when Kafka */
    int partitions;   /* NF_KAFKA_PARTITIONS of the topics created at start */
    int replication;  /* NF_KAFKA_REPLICATION */
    char *group;      /* <PREFIX>_GROUP, when consuming */
    int max_inflight; /* <PREFIX>_MAX_INFLIGHT, when consuming */
    /* <PREFIX>_INSTANCE_ID, when consuming: the static group membership id (KIP-345) after
     * load, "auto" resolved (nf_svc_instance_id); "" for dynamic membership */
    char *instance_id;
    char *replica;          /* NF_REPLICA, when consuming: part of an "auto" instance id */
    int session_timeout_ms; /* NF_KAFKA_SESSION_TIMEOUT_MS, when consuming */
    char *redis_addr;       /* NF_REDIS_ADDR */
    char *pg_dsn;           /* NF_PG_DSN (secret) */
    int pg_conns;           /* <PREFIX>_PG_CONNS */
    char *migrations;       /* <PREFIX>_MIGRATIONS, when desc->schema */
    int timeout_ms;         /* <PREFIX>_TIMEOUT_MS: Postgres, Redis and internal HTTP calls */
    int drain_ms;           /* <PREFIX>_DRAIN_MS: how long SIGTERM waits for work in flight */
};

struct nf_svc;

#define NF_SVC_MAX_ROWS 20 /* shared rows a descriptor can need */

struct nf_svc_desc {
    const char *name;       /* "billing": the log's svc, the binary is nf-<name> */
    const char *summary;    /* one line for --help */
    const char *env_prefix; /* "NF_BILLING": the prefix of the service's own rows */
    const char *addr;       /* default listen address; NULL: no HTTP server */
    unsigned needs;         /* enum nf_svc_need bits */
    bool kafka_optional;    /* Kafka down: /readyz reports it but stays ready, no drain wait */
    const char *schema;     /* migrations' schema (nf_migrate), NULL for none */
    const char *migrations; /* default migrations directory */
    int timeout_ms;         /* default <PREFIX>_TIMEOUT_MS */
    int drain_ms;           /* default <PREFIX>_DRAIN_MS */
    size_t max_body;        /* HTTP body limit; 0: nf_http's default */
    int http_timeout_s;     /* HTTP idle timeout; 0: nf_http's default */

    /* The service's own rows, loaded into a struct of cfg_size bytes (svc->own). */
    const struct nf_cfg_opt *opts;
    size_t nopts;
    size_t cfg_size;
    /* Checks across values after loading; -1 with err filled refuses to start. May be NULL. */
    int (*check)(const struct nf_svc *svc, char *err, size_t errlen);
    /* When set: the SIGTERM drain deadline in ms is computed from the service's own rows
     * (svc->own) at load, and there is no <PREFIX>_DRAIN_MS row (the worker: its job drain,
     * the handlers' kill grace and the final reports). May be NULL. */
    int (*drain_of)(const void *own);

    /* Kafka topics consumed in group <PREFIX>_GROUP (default `group`); NULL-terminated. */
    const char *const *consume;
    const char *group;
    int max_inflight; /* default <PREFIX>_MAX_INFLIGHT */

    const struct nf_svc_route *routes; /* registered before start; may be NULL */
    size_t nroutes;

    /* Hooks; each gets svc->ctx. Only init is required. */
    int (*init)(struct nf_svc *svc);                     /* set svc->ctx; -1 stops the start */
    int (*start)(void *ctx);                             /* backends are up; -1 stops the start */
    void (*on_msg)(struct nf_kafka_msg *msg, void *ctx); /* consumer messages */
    bool (*ready)(void *ctx, cJSON *checks);             /* extra readiness checks */
    void (*stop)(void *ctx);                             /* SIGTERM: take no new work */
    size_t (*busy)(void *ctx);                           /* work still in flight */
    void (*close)(void *ctx);                            /* end own timers and clients */
    void (*free)(void *ctx);                             /* free the context */
};

/* Descriptor fields from arrays: the service's own rows and the struct they fill, and the
 * route table (each sets the array and its length together). */
#define NF_SVC_OPTS(opts_, cfg_type)                                                               \
    .opts = (opts_), .nopts = sizeof(opts_) / sizeof((opts_)[0]), .cfg_size = sizeof(cfg_type)
#define NF_SVC_ROUTES(routes_)                                                                     \
    .routes = (routes_), .nroutes = sizeof(routes_) / sizeof((routes_)[0])

struct nf_svc {
    const struct nf_svc_desc *desc;
    struct nf_app app;
    struct event_base *base;
    struct nf_svc_cfg cfg; /* the shared rows */
    void *own;             /* the service's rows (desc->cfg_size bytes) */
    void *ctx;             /* the service context, set by desc->init */
    /* Backends, owned by the svc; NULL where not needed. */
    struct nf_metrics *metrics;
    struct nf_pg *pg;
    struct nf_redis *redis;
    struct nf_kafka_producer *producer;
    struct nf_kafka_consumer *consumer;
    struct nf_http_server *http;
    /* Extra librdkafka producer properties (name, value, ..., NULL) set by init; not owned. */
    const char *const *producer_conf;
    /* The same for the consumer (NULL: none); set by init; not owned. */
    const char *const *consumer_conf;
    /* Set by init: the HTTP body limit from a row of the service's own; 0: desc->max_body. */
    size_t max_body;
    bool reuseport; /* set by init: share the listen port between processes */
    int exit_code;  /* set by the service: the exit status of a clean stop (0 unless set) */
    bool stopping;  /* SIGTERM received: take no new work */
    bool closing;   /* teardown: callbacks only clean up */
    struct event *drain;
    long long drain_deadline_ms;
    /* Tables built from the descriptor; owned. */
    struct nf_cfg_opt shared_opts[NF_SVC_MAX_ROWS];
    size_t nshared;
    char env_names[NF_SVC_MAX_ROWS][64];
    char env_defs[NF_SVC_MAX_ROWS][24]; /* int defaults taken from the descriptor */
};

/*
 * Runs the service: returns the process exit status (0 after a clean stop, 1 when the
 * start failed, 2 for a bad argument or configuration).
 */
int nf_svc_main(const struct nf_svc_desc *desc, int argc, char **argv);

/*
 * For tests and tools: builds the svc and loads the configuration only (no loop, no
 * backends). 0, or -1 with err filled; nf_svc_free releases it either way.
 */
int nf_svc_load(struct nf_svc *svc, const struct nf_svc_desc *desc, char *err, size_t errlen);
void nf_svc_free(struct nf_svc *svc);
/*
 * The static group membership id "auto" stands for: nf-<name>.<host>.<replica>, where
 * replica is NF_REPLICA when set, else the port of the listen address (two replicas on one
 * host listen on different ports; a restart of one keeps its port), else nothing. Characters
 * Kafka refuses in an id (outside [A-Za-z0-9._-]) become '_'. Writes at most len bytes.
 */
void nf_svc_instance_id(char *out, size_t len, const char *name, const char *host,
                        const char *replica, const char *addr);
/* Prints the --help text. */
void nf_svc_usage(struct nf_svc *svc, FILE *out);
/* Starts the graceful stop as SIGTERM would. */
void nf_svc_stop(struct nf_svc *svc);
/*
 * A client of another service's internal HTTP API on the service's loop: addrs is the value
 * of the NF_CFG_ADDRS row env (checked at load): one host:port or the service's replicas,
 * with failover between them (nf_http_client.c). 0 with *out set (the caller owns it), or -1
 * logged (event client_failed, naming env) with *out untouched.
 */
int nf_svc_client(struct nf_svc *svc, struct nf_http_client **out, const char *env,
                  const char *addrs, int timeout_ms, int conns);
