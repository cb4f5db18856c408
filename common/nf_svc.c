/*
 * nf_svc: the one start-up, drain and teardown of every service (see nf_svc.h for the
 * flow). The shared configuration rows are built here from the descriptor, so each row
 * (name, type, default, bounds, help) is written once for all services.
 */
#include "nf_svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "nf_cfg.h"
#include "nf_http_client.h"
#include "nf_json.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_migrate.h"
#include "nf_pg.h"
#include "nf_redis.h"

#define MIGRATE_TRIES 30 /* one a second while Postgres comes up */
#define TOPICS_TIMEOUT_MS 30000
#define FLUSH_TIMEOUT_MS 5000
#define DRAIN_TICK_MS 20
#define GRACE_BACKSTOP_MS 5000 /* the loop ends this long after the drain deadline anyway */

#define OFF(f) offsetof(struct nf_svc_cfg, f)

#define INSTANCE_AUTO "auto" /* <PREFIX>_INSTANCE_ID: derive it (nf_svc_instance_id) */
#define INSTANCE_ID_MAX 249  /* Kafka's limit, the same as a topic name's */

static bool uses_kafka(const struct nf_svc_desc *d)
{
    return (d->needs & NF_SVC_PRODUCER) || d->consume;
}

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ configuration rows */

static void row(struct nf_svc *svc, const char *suffix, enum nf_cfg_type type, const char *def,
                long long min, long long max, bool secret, size_t off, const char *help)
{
    struct nf_cfg_opt *o = &svc->shared_opts[svc->nshared];
    char *env = svc->env_names[svc->nshared];

    if (strncmp(suffix, "NF_", 3) == 0)
        snprintf(env, sizeof(svc->env_names[0]), "%s", suffix);
    else
        snprintf(env, sizeof(svc->env_names[0]), "%s_%s", svc->desc->env_prefix, suffix);
    *o = (struct nf_cfg_opt){env, type, def, min, max, secret, off, help};
    svc->nshared++;
}

/* The default of the next row, from the descriptor (fallback when it says 0). */
static const char *int_def(struct nf_svc *svc, int v, int fallback)
{
    char *buf = svc->env_defs[svc->nshared];

    snprintf(buf, sizeof(svc->env_defs[0]), "%d", v > 0 ? v : fallback);
    return buf;
}

/* The shared rows this descriptor needs, in the order --help shows them. */
static void build_rows(struct nf_svc *svc)
{
    const struct nf_svc_desc *d = svc->desc;

    row(svc, "NF_LOG_LEVEL", NF_CFG_LEVEL, "info", 0, 0, false, OFF(log_level),
        "least severe log level written");
    if (d->addr)
        row(svc, "ADDR", NF_CFG_ADDR, d->addr, 0, 0, false, OFF(addr), "HTTP listen address");
    if (uses_kafka(d)) {
        row(svc, "NF_KAFKA_BROKERS", NF_CFG_STR, "127.0.0.1:9092", 1, 0, false, OFF(brokers),
            "Kafka bootstrap servers (host:port,...)");
        row(svc, "NF_KAFKA_PARTITIONS", NF_CFG_INT, "3", 1, 1024, false, OFF(partitions),
            "partitions of the topics created at start");
        row(svc, "NF_KAFKA_REPLICATION", NF_CFG_INT, "1", 1, 16, false, OFF(replication),
            "replication factor of the topics created at start");
    }
    if (d->consume) {
        row(svc, "GROUP", NF_CFG_STR, d->group, 1, 255, false, OFF(group),
            "Kafka consumer group (a new group replays the topics from the start)");
        row(svc, "MAX_INFLIGHT", NF_CFG_INT, int_def(svc, d->max_inflight, 256), 1, 1000000, false,
            OFF(max_inflight), "Kafka messages handled at once");
        row(svc, "INSTANCE_ID", NF_CFG_STR, INSTANCE_AUTO, 0, INSTANCE_ID_MAX, false,
            OFF(instance_id),
            "static group membership id, one per replica, kept across restarts (auto: "
            "nf-<name>.<host>.<NF_REPLICA or listen port>; empty: dynamic membership)");
        row(svc, "NF_REPLICA", NF_CFG_STR, "", 0, 64, false, OFF(replica),
            "this replica's name on its host, in an auto instance id instead of the port");
        row(svc, "NF_KAFKA_SESSION_TIMEOUT_MS", NF_CFG_INT,
            int_def(svc, NF_KAFKA_SESSION_TIMEOUT_MS, 0), 1000, NF_KAFKA_MAX_POLL_MS, false,
            OFF(session_timeout_ms),
            "a consumer silent this long loses its partitions (heartbeats: every sixth of it)");
    }
    if (d->needs & NF_SVC_REDIS)
        row(svc, "NF_REDIS_ADDR", NF_CFG_ADDR, "127.0.0.1:6379", 0, 0, false, OFF(redis_addr),
            "Redis address");
    if (d->needs & NF_SVC_PG) {
        row(svc, "NF_PG_DSN", NF_CFG_STR, "host=127.0.0.1 port=5432 dbname=forge user=forge", 1, 0,
            true, OFF(pg_dsn), "libpq conninfo");
        row(svc, "PG_CONNS", NF_CFG_INT, "4", 1, 64, false, OFF(pg_conns),
            "Postgres connections in the pool");
    }
    if (d->schema)
        row(svc, "MIGRATIONS", NF_CFG_STR, d->migrations, 1, 0, false, OFF(migrations),
            "directory of the schema migrations");
    if (d->addr || (d->needs & (NF_SVC_PG | NF_SVC_REDIS)))
        row(svc, "TIMEOUT_MS", NF_CFG_INT, int_def(svc, d->timeout_ms, 5000), 100, 300000, false,
            OFF(timeout_ms), "deadline of one Postgres, Redis or internal HTTP call");
    if (!d->drain_of)
        row(svc, "DRAIN_MS", NF_CFG_INT, int_def(svc, d->drain_ms, 10000), 0, 600000, false,
            OFF(drain_ms), "on SIGTERM, how long work in flight may take to finish");
}

static void tables_new(struct nf_svc *svc, const struct nf_svc_desc *desc)
{
    memset(svc, 0, sizeof(*svc));
    svc->desc = desc;
    build_rows(svc);
    svc->own = nf_xcalloc(1, desc->cfg_size ? desc->cfg_size : 1);
}

static bool id_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

/* Appends ".part" with the characters Kafka refuses replaced. */
static void id_append(char *out, size_t len, const char *part)
{
    size_t n = strlen(out);

    if (part == NULL || part[0] == '\0' || n + 1 >= len)
        return;
    out[n++] = '.';
    for (; *part && n + 1 < len; part++)
        out[n++] = id_char(*part) ? *part : '_';
    out[n] = '\0';
}

void nf_svc_instance_id(char *out, size_t len, const char *name, const char *host,
                        const char *replica, const char *addr)
{
    const char *port = addr ? strrchr(addr, ':') : NULL;

    snprintf(out, len, "nf-%s", name);
    id_append(out, len, host);
    if (replica && replica[0])
        id_append(out, len, replica);
    else if (port)
        id_append(out, len, port + 1);
}

/* Resolves an "auto" instance id; checks an explicit one as Kafka would. */
static int instance_id_resolve(struct nf_svc *svc, char *err, size_t errlen)
{
    char id[INSTANCE_ID_MAX + 1], host[256] = "";
    const char *v = svc->cfg.instance_id;
    char env[64];

    snprintf(env, sizeof(env), "%s_INSTANCE_ID", svc->desc->env_prefix);
    if (strcmp(v, INSTANCE_AUTO) == 0) {
        if (gethostname(host, sizeof(host) - 1) != 0)
            host[0] = '\0';
        nf_svc_instance_id(id, sizeof(id), svc->desc->name, host, svc->cfg.replica, svc->cfg.addr);
        free(svc->cfg.instance_id);
        svc->cfg.instance_id = nf_xstrdup(id);
        return 0;
    }
    if (strcmp(v, ".") == 0 || strcmp(v, "..") == 0) {
        snprintf(err, errlen, "%s: must not be \".\" or \"..\"", env);
        return -1;
    }
    for (; *v; v++) {
        if (!id_char(*v)) {
            snprintf(err, errlen, "%s: may hold only letters, digits, '.', '_' and '-'", env);
            return -1;
        }
    }
    return 0;
}

int nf_svc_load(struct nf_svc *svc, const struct nf_svc_desc *desc, char *err, size_t errlen)
{
    tables_new(svc, desc);
    if (nf_cfg_load(svc->shared_opts, svc->nshared, &svc->cfg, err, errlen) != 0)
        return -1;
    if (desc->consume && instance_id_resolve(svc, err, errlen) != 0)
        return -1;
    if (desc->nopts && nf_cfg_load(desc->opts, desc->nopts, svc->own, err, errlen) != 0)
        return -1;
    if (desc->drain_of)
        svc->cfg.drain_ms = desc->drain_of(svc->own);
    if (desc->check && desc->check(svc, err, errlen) != 0)
        return -1;
    return 0;
}

/* The shared rows and the service's own, as one list. */
static size_t tables(const struct nf_svc *svc, struct nf_cfg_table t[2])
{
    t[0] = (struct nf_cfg_table){svc->shared_opts, svc->nshared, &svc->cfg};
    t[1] = (struct nf_cfg_table){svc->desc->opts, svc->desc->nopts, svc->own};
    return svc->desc->nopts ? 2 : 1;
}

void nf_svc_usage(struct nf_svc *svc, FILE *out)
{
    struct nf_cfg_table t[2];

    fprintf(out, "nf-%s: %s\n\n", svc->desc->name, svc->desc->summary);
    fprintf(out, "usage: nf-%s [--help | --check-config]\n\n", svc->desc->name);
    nf_cfg_usage(t, tables(svc, t), out);
}

static void config_log(struct nf_svc *svc)
{
    struct nf_cfg_table t[2];

    nf_cfg_log(t, tables(svc, t));
}

/* ------------------------------------------------------------------ start */

static int migrate(struct nf_svc *svc)
{
    char err[512], n[16];
    int i, rc = -1;

    for (i = 0; i < MIGRATE_TRIES; i++) {
        rc = nf_migrate_run(svc->cfg.pg_dsn, svc->desc->schema, svc->cfg.migrations, err,
                            sizeof(err));
        if (rc >= 0)
            break;
        nf_log_kv(NF_LOG_WARN, "migrate_retry", "migrations failed, retrying", "error", err, NULL);
        sleep(1);
    }
    if (rc < 0) {
        nf_log_kv(NF_LOG_ERROR, "migrate_failed", "cannot apply migrations", "dir",
                  svc->cfg.migrations, "error", err, NULL);
        return -1;
    }
    snprintf(n, sizeof(n), "%d", rc);
    nf_log_kv(NF_LOG_INFO, "migrated", "migrations applied", "applied", n, NULL);
    return 0;
}

/* A consumer cannot run without its topics; a producer-only service starts without the
 * broker and answers 503 until it is back (/readyz says so). */
static int topics(struct nf_svc *svc)
{
    char err[512];

    if (nf_kafka_create_forge_topics(svc->cfg.brokers, svc->cfg.partitions, svc->cfg.replication,
                                     svc->desc->consume ? TOPICS_TIMEOUT_MS : 5000, err,
                                     sizeof(err)) == 0)
        return 0;
    nf_log_kv(svc->desc->consume ? NF_LOG_ERROR : NF_LOG_WARN, "topics_failed",
              "cannot create kafka topics", "error", err, NULL);
    return svc->desc->consume ? -1 : 0;
}

static int redis_new(struct nf_svc *svc)
{
    char *host = NULL;
    int port, rc;

    if (nf_cfg_split_addr(svc->cfg.redis_addr, &host, &port) != 0)
        return -1; /* checked at load */
    rc = nf_redis_new(&svc->redis, svc->base, host, port, svc->cfg.timeout_ms);
    free(host);
    if (rc != 0)
        nf_log_error("redis_failed", "cannot create the redis client");
    return rc;
}

/* NULL when Kafka is usable, else why not: the producer's reason, then the consumer's. */
static const char *kafka_unready(const struct nf_svc *svc)
{
    const char *why = NULL;

    if (svc->producer)
        why = nf_kafka_producer_unready(svc->producer);
    if (!why && svc->desc->consume)
        why = svc->consumer ? nf_kafka_consumer_unready(svc->consumer)
                            : "no partitions yet (starting)";
    return why;
}

/* /readyz: one check per backend, "ok" or why not (the Kafka check says which). */
static bool ready(cJSON *checks, void *arg)
{
    struct nf_svc *svc = arg;
    bool ok = !svc->stopping, up;
    const char *why;

    if (uses_kafka(svc->desc)) {
        why = kafka_unready(svc);
        if (!why && svc->consumer && nf_kafka_consumer_partitions(svc->consumer) == 0)
            nf_json_add_str(checks, "kafka", "ok (standby: no partitions)");
        else
            nf_json_add_str(checks, "kafka", why ? why : "ok");
        ok = ok && (!why || svc->desc->kafka_optional);
    }
    if (svc->redis) {
        up = nf_redis_ready(svc->redis);
        nf_json_add_str(checks, "redis", up ? "ok" : "down");
        ok = ok && up;
    }
    if (svc->pg) {
        up = nf_pg_ready(svc->pg);
        nf_json_add_str(checks, "postgres", up ? "ok" : "down");
        ok = ok && up;
    }
    if (svc->desc->ready)
        ok = svc->desc->ready(svc->ctx, checks) && ok;
    return ok;
}

static int http_new(struct nf_svc *svc)
{
    const struct nf_svc_desc *d = svc->desc;
    struct nf_http_limits limits = {svc->max_body ? svc->max_body : d->max_body, 0,
                                    d->http_timeout_s, true};
    char *host = NULL;
    size_t i;
    int port, rc;

    if (nf_cfg_split_addr(svc->cfg.addr, &host, &port) != 0)
        return -1; /* checked at load */
    rc = nf_http_server_new(&svc->http, svc->base, host, port, &limits, svc->reuseport,
                            svc->metrics);
    free(host);
    if (rc != 0) {
        nf_log_kv(NF_LOG_ERROR, "listen_failed", "cannot listen", "addr", svc->cfg.addr, NULL);
        return -1;
    }
    nf_http_set_ready(svc->http, ready, svc);
    for (i = 0; i < d->nroutes; i++) {
        if (nf_http_route(svc->http, d->routes[i].method, d->routes[i].pattern, d->routes[i].fn,
                          svc->ctx) != 0) {
            nf_log_kv(NF_LOG_ERROR, "route_failed", "cannot register a route", "route",
                      d->routes[i].pattern, NULL);
            return -1;
        }
    }
    return 0;
}

static void on_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct nf_svc *svc = arg;

    if (svc->stopping)
        return; /* left un-done: redelivered to the next consumer of the partition */
    svc->desc->on_msg(msg, svc->ctx);
}

/*
 * The group membership settings (docs/internals.md, "Consumer groups"), then the
 * service's own consumer_conf, which may override them. *out is owned by the caller, its
 * strings by svc and the two buffers.
 */
static void consumer_extra(struct nf_svc *svc, const char ***out, char session[16],
                           char heartbeat[16])
{
    const char *const *own = svc->consumer_conf;
    size_t n = 0, nown = 0;
    const char **kv;

    while (own && own[nown])
        nown++;
    kv = nf_xcalloc(6 + nown + 1, sizeof(*kv));
    snprintf(session, 16, "%d", svc->cfg.session_timeout_ms);
    snprintf(heartbeat, 16, "%d", svc->cfg.session_timeout_ms / NF_KAFKA_HEARTBEATS_PER_SESSION);
    kv[n++] = "session.timeout.ms";
    kv[n++] = session;
    kv[n++] = "heartbeat.interval.ms";
    kv[n++] = heartbeat;
    if (svc->cfg.instance_id[0] != '\0') {
        kv[n++] = "group.instance.id";
        kv[n++] = svc->cfg.instance_id;
    }
    for (size_t i = 0; i < nown; i++)
        kv[n++] = own[i];
    kv[n] = NULL;
    *out = kv;
}

static int consumer_new(struct nf_svc *svc)
{
    const char *const *t;
    const char **extra = NULL;
    char err[512], session[16], heartbeat[16];
    size_t n = 0;
    int rc;

    for (t = svc->desc->consume; *t; t++)
        n++;
    consumer_extra(svc, &extra, session, heartbeat);
    rc = nf_kafka_consumer_new(&svc->consumer, svc->base, svc->cfg.brokers, svc->cfg.group,
                               svc->desc->consume, n, svc->cfg.max_inflight, extra, on_msg, svc,
                               err, sizeof(err));
    free(extra);
    if (rc == 0) {
        nf_log_kv(NF_LOG_INFO, "consumer_started", "joining the consumer group", "group",
                  svc->cfg.group, "instance_id",
                  svc->cfg.instance_id[0] ? svc->cfg.instance_id : "(dynamic)", "session_ms",
                  session, NULL);
        return 0;
    }
    nf_log_kv(NF_LOG_ERROR, "consumer_failed", "cannot create the kafka consumer", "error", err,
              NULL);
    return -1;
}

static int start(struct nf_svc *svc)
{
    const struct nf_svc_desc *d = svc->desc;
    char err[512], client_id[64];

    if (nf_metrics_new(&svc->metrics) != 0 || d->init(svc) != 0)
        return -1;
    if (d->schema && migrate(svc) != 0)
        return -1;
    if (uses_kafka(d) && topics(svc) != 0)
        return -1;
    if ((d->needs & NF_SVC_PG) && nf_pg_new(&svc->pg, svc->base, svc->cfg.pg_dsn, svc->cfg.pg_conns,
                                            svc->cfg.timeout_ms) != 0) {
        nf_log_error("pg_failed", "cannot create the postgres pool");
        return -1;
    }
    if ((d->needs & NF_SVC_REDIS) && redis_new(svc) != 0)
        return -1;
    snprintf(client_id, sizeof(client_id), "nf-%s", d->name);
    if ((d->needs & NF_SVC_PRODUCER) &&
        nf_kafka_producer_new(&svc->producer, svc->base, svc->cfg.brokers, client_id,
                              svc->producer_conf, err, sizeof(err)) != 0) {
        nf_log_kv(NF_LOG_ERROR, "producer_failed", "cannot create the kafka producer", "error", err,
                  NULL);
        return -1;
    }
    if (d->addr && http_new(svc) != 0)
        return -1;
    if (d->start && d->start(svc->ctx) != 0)
        return -1;
    if (d->consume && consumer_new(svc) != 0)
        return -1;
    nf_log_kv(NF_LOG_INFO, "started", "service started", "addr", svc->cfg.addr, NULL);
    return 0;
}

/* ------------------------------------------------------------------ stop */

static size_t busy(struct nf_svc *svc)
{
    size_t n = 0;

    if (svc->http)
        n += nf_http_inflight(svc->http);
    /* an optional Kafka that is down holds no drain: the teardown's flush still tries */
    if (svc->producer && (!svc->desc->kafka_optional || nf_kafka_producer_ready(svc->producer)))
        n += (size_t)nf_kafka_producer_outq(svc->producer);
    if (svc->desc->busy)
        n += svc->desc->busy(svc->ctx);
    return n;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct nf_svc *svc = arg;
    size_t left = busy(svc);
    char n[24];

    if (left > 0 && mono_ms() < svc->drain_deadline_ms)
        return;
    snprintf(n, sizeof(n), "%zu", left);
    nf_log_kv(left ? NF_LOG_WARN : NF_LOG_INFO, "drained",
              left ? "drain deadline passed, stopping" : "work in flight finished, stopping",
              "left", n, NULL);
    event_del(svc->drain);
    nf_app_stop_done(&svc->app);
}

static void on_stop(void *arg)
{
    struct nf_svc *svc = arg;
    struct timeval tick = {0, (suseconds_t)DRAIN_TICK_MS * 1000};

    if (svc->stopping)
        return;
    svc->stopping = true;
    svc->drain_deadline_ms = mono_ms() + svc->cfg.drain_ms;
    if (svc->http)
        nf_http_server_stop(svc->http);
    if (svc->desc->stop && svc->ctx)
        svc->desc->stop(svc->ctx);
    nf_log_info("draining", "stopping: finishing work in flight");
    svc->drain = event_new(svc->base, -1, EV_PERSIST, on_drain, svc);
    if (!svc->drain)
        abort();
    event_add(svc->drain, &tick);
}

void nf_svc_stop(struct nf_svc *svc)
{
    nf_app_stop(&svc->app);
}

/*
 * Adds host:port to the endpoint list; a name that resolves to several addresses of one
 * family (a headless service, round-robin DNS) adds one endpoint per address, resolved
 * once here. Other names stay names (evhttp resolves them at each connect): "localhost"
 * giving ::1 and 127.0.0.1 is one server, not two replicas.
 */
static void add_endpoints(char *host, int port, char **hosts, int *ports, size_t *n)
{
    struct addrinfo hints = {0}, *res = NULL, *ai;
    size_t first = *n, found = 0;
    char ip[INET6_ADDRSTRLEN];

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) == 0) {
        for (ai = res; ai && *n < NF_HTTP_CLIENT_MAX_ENDPOINTS; ai = ai->ai_next) {
            const void *a = ai->ai_family == AF_INET
                                ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            bool dup = false;

            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                ai->ai_family != res->ai_family || !inet_ntop(ai->ai_family, a, ip, sizeof(ip)))
                continue;
            for (size_t i = first; i < *n; i++)
                dup = dup || strcmp(hosts[i], ip) == 0;
            if (dup)
                continue;
            hosts[*n] = nf_xstrdup(ip);
            ports[(*n)++] = port;
            found++;
        }
        freeaddrinfo(res);
    }
    if (found > 1) {
        free(host);
        return;
    }
    while (*n > first) /* one address or none: keep the name */
        free(hosts[--*n]);
    if (*n < NF_HTTP_CLIENT_MAX_ENDPOINTS) {
        hosts[*n] = host;
        ports[(*n)++] = port;
    } else
        free(host);
}

int nf_svc_client(struct nf_svc *svc, struct nf_http_client **out, const char *env,
                  const char *addrs, int timeout_ms, int conns)
{
    char *list[NF_CFG_MAX_ADDRS], *hosts[NF_HTTP_CLIENT_MAX_ENDPOINTS];
    int ports[NF_HTTP_CLIENT_MAX_ENDPOINTS];
    int nlist = nf_cfg_split_addrs(addrs, list, NF_CFG_MAX_ADDRS), rc = -1;
    size_t n = 0;

    for (int i = 0; i < nlist; i++) {
        char *host = NULL;
        int port;

        if (nf_cfg_split_addr(list[i], &host, &port) == 0)
            add_endpoints(host, port, hosts, ports, &n);
        free(list[i]);
    }
    if (n > 0)
        rc = nf_http_client_new_multi(out, svc->base, (const char *const *)hosts, ports, n,
                                      timeout_ms, conns);
    for (size_t i = 0; i < n; i++)
        free(hosts[i]);
    if (rc != 0)
        nf_log_kv(NF_LOG_ERROR, "client_failed", "cannot create http client", "env", env, NULL);
    else if (n > 1)
        nf_log_kv(NF_LOG_INFO, "client_replicas", "calls fail over between the replicas", "env",
                  env, "addrs", addrs, NULL);
    return rc;
}

/* The reverse of start; accepts a half-started svc. */
static void teardown(struct nf_svc *svc)
{
    const struct nf_svc_desc *d = svc->desc;

    svc->stopping = svc->closing = true;
    if (svc->drain)
        event_free(svc->drain);
    svc->drain = NULL;
    if (svc->ctx && d->close)
        d->close(svc->ctx);
    nf_kafka_consumer_free(svc->consumer);
    svc->consumer = NULL;
    nf_kafka_producer_free(svc->producer, FLUSH_TIMEOUT_MS);
    svc->producer = NULL;
    nf_redis_free(svc->redis);
    svc->redis = NULL;
    nf_pg_free(svc->pg);
    svc->pg = NULL;
    nf_http_server_free(svc->http);
    svc->http = NULL;
    if (svc->ctx && d->free)
        d->free(svc->ctx);
    svc->ctx = NULL;
    nf_metrics_free(svc->metrics);
    svc->metrics = NULL;
}

void nf_svc_free(struct nf_svc *svc)
{
    if (!svc || !svc->desc)
        return;
    teardown(svc);
    nf_cfg_free(svc->shared_opts, svc->nshared, &svc->cfg);
    if (svc->desc->nopts && svc->own)
        nf_cfg_free(svc->desc->opts, svc->desc->nopts, svc->own);
    free(svc->own);
    memset(svc, 0, sizeof(*svc));
}

/* ------------------------------------------------------------------ main */

int nf_svc_main(const struct nf_svc_desc *desc, int argc, char **argv)
{
    struct nf_svc svc;
    char err[512];
    bool check_only = false;
    int rc = 1;

    if (argc > 2 || (argc == 2 && strcmp(argv[1], "--help") != 0 && strcmp(argv[1], "-h") != 0 &&
                     strcmp(argv[1], "--check-config") != 0)) {
        fprintf(stderr, "nf-%s: unknown argument %s (try --help)\n", desc->name, argv[1]);
        return 2;
    }
    if (argc == 2 && strcmp(argv[1], "--check-config") != 0) {
        tables_new(&svc, desc);
        nf_svc_usage(&svc, stdout);
        nf_svc_free(&svc);
        return 0;
    }
    check_only = argc == 2;
    nf_log_init(desc->name, NF_LOG_INFO);
    if (nf_svc_load(&svc, desc, err, sizeof(err)) != 0) {
        nf_log_kv(NF_LOG_ERROR, "config_invalid", "invalid configuration", "error", err, NULL);
        nf_svc_free(&svc);
        return 2;
    }
    nf_log_init(desc->name, (enum nf_log_level)svc.cfg.log_level);
    config_log(&svc);
    if (check_only) {
        nf_svc_free(&svc);
        return 0;
    }
    if (nf_app_init(&svc.app, on_stop, &svc, svc.cfg.drain_ms + GRACE_BACKSTOP_MS) != 0)
        goto out;
    svc.base = svc.app.base;
    if (start(&svc) == 0)
        rc = nf_app_run(&svc.app);
    else
        nf_log_error("start_failed", "cannot start");
    if (rc == 0)
        rc = svc.exit_code;
    teardown(&svc);
    nf_app_free(&svc.app);
out:
    nf_svc_free(&svc);
    return rc;
}
