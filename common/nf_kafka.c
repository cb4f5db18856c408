/*
 * nf_kafka: librdkafka driven from the libevent loop; the contract is in nf_kafka.h.
 * This file holds what producer and consumer share: configuration, the common callbacks
 * and the loop plumbing. nf_kafka_producer.c, nf_kafka_consumer.c and nf_kafka_admin.c
 * hold the rest; nf_kafka_internal.h is the seam between them.
 *
 *   librdkafka threads --op--> queue --io event "1"--> pipe --EV_READ--> on_io --+
 *                                          100 ms tick (safety net) --> on_tick --+--> drain
 *                                          zero timer (more work left) --> on_kick -+
 *
 *   producer drain: rd_kafka_poll(rk, 0) serves everything queued on the main queue:
 *                   dr_msg_cb, error_cb, stats_cb and log lines (log.queue=true)
 *   consumer drain: rd_kafka_consumer_poll(rk, 0), at most NF_KAFKA_DRAIN_BATCH times per
 *                   wakeup; the main queue is forwarded to the consumer queue, so the same
 *                   calls serve rebalance_cb, error_cb, stats_cb and log lines
 *
 * Readiness: some broker connection is up (the statistics, every second, say whether one
 * is in state UP; an ALL_BROKERS_DOWN error clears it in between; the first metadata
 * answer, an acknowledged message or an assignment sets it early), the cluster id is known
 * (producer: a metadata answer arrived) or the consumer holds the assignment of the last
 * rebalance (nf_kafka_consumer_unready), and no fatal error.
 */
#include "nf_kafka.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nf_kafka_internal.h"
#include "nf_log.h"

/* librdkafka errors as our negative codes: its own (already negative) pass unchanged,
 * broker errors (positive) are negated. */
int nf_kafka_neg_err(rd_kafka_resp_err_t err)
{
    return err < 0 ? (int)err : -(int)err;
}

void nf_kafka_set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, fmt, a, b);
}

uint64_t nf_kafka_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- configuration ---- */

int nf_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                      size_t errlen)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        nf_kafka_set_err(err, errlen, "kafka config %s: %s", name, errstr);
        return -1;
    }
    return 0;
}

/* Sets NULL-terminated name/value pairs, stopping at the first bad one. */
int nf_kafka_conf_set_all(rd_kafka_conf_t *conf, const char *const *kv, char *err, size_t errlen)
{
    for (size_t i = 0; kv != NULL && kv[i] != NULL; i += 2) {
        if (kv[i + 1] == NULL) {
            nf_kafka_set_err(err, errlen, "kafka config %s: %s", kv[i], "value missing");
            return -1;
        }
        if (nf_kafka_conf_set(conf, kv[i], kv[i + 1], err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* ---- callbacks common to producer and consumer (always on the loop thread) ---- */

void nf_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels; librdkafka reports refused connections at 3, which a broker
     * restart makes routine: warn */
    enum nf_log_level lvl = level <= 2   ? NF_LOG_ERROR
                            : level <= 4 ? NF_LOG_WARN
                            : level <= 6 ? NF_LOG_INFO
                                         : NF_LOG_DEBUG;

    nf_log_kv(lvl, "kafka_log", buf, "client", rd_kafka_name(rk), "facility", fac, NULL);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct nf_kafka_io *io = opaque;
    char fatal[512];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        io->fatal = true;
        nf_log_kv(NF_LOG_ERROR, "kafka_fatal", "kafka client failed for good", "client",
                  rd_kafka_name(rk), "error", fatal, NULL);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        io->brokers_up = false;
    nf_log_kv(NF_LOG_WARN, "kafka_error", reason, "client", rd_kafka_name(rk), "error",
              rd_kafka_err2name((rd_kafka_resp_err_t)err), NULL);
}

/* Statistics only tell us whether some broker connection is up. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    struct nf_kafka_io *io = opaque;
    cJSON *doc = cJSON_ParseWithLength(json, json_len);
    const cJSON *brokers, *b;
    bool up = false;

    if (doc == NULL)
        return 0;
    brokers = cJSON_GetObjectItemCaseSensitive(doc, "brokers");
    cJSON_ArrayForEach(b, brokers)
    {
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(b, "state");

        if (cJSON_IsString(state) && strcmp(state->valuestring, "UP") == 0)
            up = true;
    }
    if (up != io->brokers_up)
        nf_log_kv(up ? NF_LOG_INFO : NF_LOG_WARN, "kafka_brokers",
                  up ? "kafka broker connection up" : "no kafka broker connection up", "client",
                  rd_kafka_name(rk), NULL);
    io->brokers_up = up;
    cJSON_Delete(doc);
    return 0; /* librdkafka frees json */
}

/* The callbacks every loop-driven handle shares; owner starts with struct nf_kafka_io. */
static void conf_callbacks(rd_kafka_conf_t *conf, void *owner)
{
    rd_kafka_conf_set_opaque(conf, owner);
    rd_kafka_conf_set_log_cb(conf, nf_kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
}

rd_kafka_conf_t *nf_kafka_conf_new(const char *brokers, const char *const *fixed, void *owner,
                                   char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (nf_kafka_conf_set(conf, "bootstrap.servers", brokers, err, errlen) < 0 ||
        nf_kafka_conf_set_all(conf, fixed, err, errlen) < 0 ||
        nf_kafka_conf_set(conf, "statistics.interval.ms", NF_KAFKA_STATS_INTERVAL, err, errlen) <
            0 ||
        nf_kafka_conf_set(conf, "log.queue", "true", err, errlen) < 0 ||
        nf_kafka_conf_set(conf, "reconnect.backoff.max.ms", NF_KAFKA_RECONNECT_MAX_MS, err,
                          errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    conf_callbacks(conf, owner);
    return conf;
}

/* ---- loop plumbing ---- */

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct nf_kafka_io *io = arg;
    char buf[64];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    io->drain(io->owner);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct nf_kafka_io *io = arg;

    if (!io->metadata_seen) {
        char *id = rd_kafka_clusterid(io->rk, 0);

        if (id != NULL) {
            io->metadata_seen = true;
            io->brokers_up = true; /* a broker answered; statistics follow */
            rd_kafka_mem_free(io->rk, id);
        }
    }
    io->drain(io->owner);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct nf_kafka_io *io = arg;

    io->drain(io->owner);
}

void nf_kafka_io_kick(struct nf_kafka_io *io)
{
    if (io->kick_ev != NULL)
        event_active(io->kick_ev, EV_TIMEOUT, 0);
}

/* Pipe and events, not armed yet. */
int nf_kafka_io_init(struct nf_kafka_io *io, struct event_base *base, void (*drain)(void *),
                     void *owner, const char *kind, char *err, size_t errlen)
{
    io->base = base;
    io->drain = drain;
    io->owner = owner;
    io->kind = kind;
    io->fds[0] = io->fds[1] = -1;
    if (pipe2(io->fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        nf_kafka_set_err(err, errlen, "kafka %s: pipe: %s", kind, strerror(errno));
        io->fds[0] = io->fds[1] = -1;
        return -1;
    }
    io->io_ev = event_new(base, io->fds[0], EV_READ | EV_PERSIST, on_io, io);
    io->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, io);
    io->kick_ev = event_new(base, -1, 0, on_kick, io);
    if (io->io_ev == NULL || io->tick_ev == NULL || io->kick_ev == NULL) {
        nf_kafka_set_err(err, errlen, "kafka %s: %s", kind, "cannot create events");
        return -1;
    }
    return 0;
}

int nf_kafka_io_start(struct nf_kafka_io *io, rd_kafka_type_t type, rd_kafka_conf_t *conf,
                      char *err, size_t errlen)
{
    struct timeval tick = {0, (suseconds_t)NF_KAFKA_TICK_MS * 1000};
    char errstr[512];

    io->rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (io->rk == NULL) {
        nf_kafka_set_err(err, errlen, "kafka %s: %s", io->kind, errstr);
        return -1;
    }
    /* conf is owned by rk now */
    if (type == RD_KAFKA_CONSUMER) {
        rd_kafka_poll_set_consumer(io->rk); /* main queue now forwards to the consumer queue */
        io->rkqu = rd_kafka_queue_get_consumer(io->rk);
    } else {
        io->rkqu = rd_kafka_queue_get_main(io->rk);
    }
    rd_kafka_set_log_queue(io->rk, NULL); /* log lines to the main queue */
    rd_kafka_queue_io_event_enable(io->rkqu, io->fds[1], "1", 1);
    event_add(io->io_ev, NULL);
    event_add(io->tick_ev, &tick);
    return 0;
}

/* Stops the events; the librdkafka handle is still alive and usable. */
void nf_kafka_io_stop_events(struct nf_kafka_io *io)
{
    if (io->io_ev != NULL)
        event_free(io->io_ev);
    if (io->tick_ev != NULL)
        event_free(io->tick_ev);
    if (io->kick_ev != NULL)
        event_free(io->kick_ev);
    io->io_ev = io->tick_ev = io->kick_ev = NULL;
}

/* Stops the wake-ups and lets the queue go: before rd_kafka_destroy. */
void nf_kafka_io_release_queue(struct nf_kafka_io *io)
{
    if (io->rkqu != NULL) {
        rd_kafka_queue_io_event_enable(io->rkqu, -1, NULL, 0);
        rd_kafka_queue_destroy(io->rkqu);
        io->rkqu = NULL;
    }
}

/* After rd_kafka_destroy: nobody writes to the pipe any more. */
void nf_kafka_io_close(struct nf_kafka_io *io)
{
    for (int i = 0; i < 2; i++) {
        if (io->fds[i] >= 0)
            close(io->fds[i]);
        io->fds[i] = -1;
    }
}
