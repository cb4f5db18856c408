#pragma once
/*
 * nf_kafka internals shared by nf_kafka.c (configuration, common callbacks, loop
 * plumbing), nf_kafka_producer.c, nf_kafka_consumer.c and nf_kafka_admin.c. Not for use
 * outside libnf's nf_kafka modules; the public contract is in nf_kafka.h.
 */
#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NF_KAFKA_TICK_MS 100
#define NF_KAFKA_DRAIN_BATCH 64
#define NF_KAFKA_STATS_INTERVAL "1000"
/* librdkafka backs off reconnecting up to 10 s; after a broker restart that delays the
 * group coordinator's connection, and so the partitions, by as much. A reconnect a second
 * to a handful of brokers costs nothing. */
#define NF_KAFKA_RECONNECT_MAX_MS "1000"

/*
 * The loop plumbing shared by producer and consumer. It is the first member of both, and
 * the librdkafka opaque points at the owner, so the common callbacks cast it to
 * struct nf_kafka_io.
 */
struct nf_kafka_io {
    struct event_base *base;
    rd_kafka_t *rk;
    rd_kafka_queue_t *rkqu; /* the queue whose io event writes to fds[1] */
    int fds[2];             /* non-blocking pipe; -1 when closed */
    struct event *io_ev;    /* EV_READ|EV_PERSIST on fds[0] */
    struct event *tick_ev;  /* NF_KAFKA_TICK_MS persistent safety net */
    struct event *kick_ev;  /* made active when a drain left work behind */
    void (*drain)(void *owner);
    void *owner;
    const char *kind;   /* "producer" or "consumer", for logs */
    bool fatal;         /* librdkafka raised a fatal error */
    bool brokers_up;    /* last statistics saw a broker UP, no ALL_BROKERS_DOWN since */
    bool metadata_seen; /* the cluster id is known */
};

/* librdkafka errors as our negative codes: its own (already negative) pass unchanged,
 * broker errors (positive) are negated. */
int nf_kafka_neg_err(rd_kafka_resp_err_t err);
/* snprintf(err, errlen, fmt, a, b) when err is not NULL. */
void nf_kafka_set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b);
uint64_t nf_kafka_mono_ms(void);

/* Sets one property; on failure returns -1 with err filled. */
int nf_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                      size_t errlen);
/* Sets NULL-terminated name/value pairs (kv may be NULL), stopping at the first bad one. */
int nf_kafka_conf_set_all(rd_kafka_conf_t *conf, const char *const *kv, char *err, size_t errlen);
/*
 * A new configuration with what every loop-driven handle shares: bootstrap.servers, then
 * fixed (NULL-terminated name, value pairs of the handle's kind; may be NULL), statistics
 * (for readiness), log lines through the queue, reconnects backed off at most
 * NF_KAFKA_RECONNECT_MAX_MS, and the log, error and stats callbacks
 * with owner (which starts with struct nf_kafka_io) as opaque. The caller sets the rest,
 * the caller's extra pairs last so that they may override ours, and owns the result.
 * Returns NULL with err filled on a bad pair.
 */
rd_kafka_conf_t *nf_kafka_conf_new(const char *brokers, const char *const *fixed, void *owner,
                                   char *err, size_t errlen);
/* librdkafka's log callback: one log line of ours per librdkafka line. */
void nf_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* Pipe and events, not armed yet. Returns 0, or -1 with err filled (io is then half
 * built: undo with nf_kafka_io_stop_events and nf_kafka_io_close). */
int nf_kafka_io_init(struct nf_kafka_io *io, struct event_base *base, void (*drain)(void *),
                     void *owner, const char *kind, char *err, size_t errlen);
/*
 * Creates io->rk of type from conf, routes its log lines and the wake-ups of its main
 * queue (producer) or consumer queue (consumer, the main queue forwarded to it) to the
 * pipe, and arms the events. Returns 0 with conf owned by io->rk, or -1 with err filled
 * and conf still the caller's.
 */
int nf_kafka_io_start(struct nf_kafka_io *io, rd_kafka_type_t type, rd_kafka_conf_t *conf,
                      char *err, size_t errlen);
/* Makes the drain run again soon (a zero timer), to yield to the loop in between. */
void nf_kafka_io_kick(struct nf_kafka_io *io);
/* Stops the events; the librdkafka handle is still alive and usable. */
void nf_kafka_io_stop_events(struct nf_kafka_io *io);
/* Stops the wake-ups and lets the queue go: before rd_kafka_destroy. */
void nf_kafka_io_release_queue(struct nf_kafka_io *io);
/* After rd_kafka_destroy: nobody writes to the pipe any more. */
void nf_kafka_io_close(struct nf_kafka_io *io);
