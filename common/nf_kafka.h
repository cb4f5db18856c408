#pragma once
/*
 * nf_kafka: librdkafka driven from the libevent loop.
 *
 * Both the producer and the consumer route librdkafka's queues to a non-blocking pipe
 * (rd_kafka_queue_io_event_enable); a libevent read event on the pipe drains the queue
 * fully, and a periodic 100 ms timer polls as a safety net. No librdkafka call blocks
 * the loop except the explicit flush at shutdown.
 *
 * Producer: enable.idempotence=true, acks=all. Every accepted message gets exactly one
 * delivery callback, also on shutdown (err set).
 *
 * Consumer: a consumer-group member with enable.auto.offset.store=false and auto commit of
 * stored offsets. A message is handed to the callback and then belongs to the handler
 * until nf_kafka_msg_done(). Offsets are stored per partition only up to the highest
 * contiguous done message, so a crash redelivers everything not yet done
 * (at-least-once). At most `max_inflight` messages are outstanding; beyond that the
 * consumer pauses its partitions (it keeps polling, so it stays in the group) until
 * inflight drops below max_inflight - max_inflight / 4. On rebalance, messages of revoked
 * partitions may still be done (their offsets are then dropped).
 *
 * Group timeouts (the extra pairs may override them; docs/internals.md says why these):
 * session.timeout.ms NF_KAFKA_SESSION_TIMEOUT_MS, heartbeat.interval.ms
 * NF_KAFKA_HEARTBEAT_MS, max.poll.interval.ms NF_KAFKA_MAX_POLL_MS (librdkafka wants it
 * >= the session timeout). No group.instance.id unless the extra pairs give one.
 */
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nf_kafka_producer;
struct nf_kafka_consumer;

/* Consumer group timeouts (docs/internals.md, "Consumer groups"); plain numbers, as they
 * are spelled into librdkafka's configuration. */
#define NF_KAFKA_SESSION_TIMEOUT_MS 6000 /* the broker's default group.min.session.timeout.ms */
#define NF_KAFKA_HEARTBEATS_PER_SESSION 6
#define NF_KAFKA_HEARTBEAT_MS 1000 /* NF_KAFKA_SESSION_TIMEOUT_MS / HEARTBEATS_PER_SESSION */
#define NF_KAFKA_MAX_POLL_MS 30000
/* A consumer with messages in flight and none done for this long is not making progress
 * (an effect that keeps failing: Postgres or a peer away), and /readyz says so. Longer
 * than any wait the services mean to make (the scheduler's budget wait is 30 s). */
#define NF_KAFKA_STALL_MS 60000

/* err: 0 on success, else a negative rd_kafka_resp_err_t (librdkafka's own errors, already
 * negative, as they are; broker errors negated); errstr NULL on success. */
typedef void (*nf_kafka_delivery_cb)(int err, const char *errstr, void *arg);

/* extra: NULL or NULL-terminated name, value pairs of librdkafka properties. err gets a
 * message on failure. */
int nf_kafka_producer_new(struct nf_kafka_producer **out, struct event_base *base,
                          const char *brokers, const char *client_id, const char *const *extra,
                          char *err, size_t errlen);
/* Flushes for up to timeout_ms, fails what is left (callbacks fire), frees. NULL ok. */
void nf_kafka_producer_free(struct nf_kafka_producer *p, int timeout_ms);
/*
 * Queues a message (key and payload are copied). Returns 0 and later calls cb exactly
 * once; or returns a negative error without calling cb (queue full, unknown topic...).
 * cb may be NULL.
 */
int nf_kafka_produce(struct nf_kafka_producer *p, const char *topic, const char *key,
                     const void *payload, size_t len, nf_kafka_delivery_cb cb, void *arg);
/* Messages queued and not yet reported. */
int nf_kafka_producer_outq(const struct nf_kafka_producer *p);
/* true once a broker answered and no fatal error occurred (for /readyz). */
bool nf_kafka_producer_ready(const struct nf_kafka_producer *p);
/* NULL when ready, else why not, for /readyz: "fatal error", "no broker connection" or
 * "no cluster metadata yet" (a static string). */
const char *nf_kafka_producer_unready(const struct nf_kafka_producer *p);

struct nf_kafka_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key;     /* NUL-terminated copy, "" when absent */
    const char *payload; /* NUL-terminated copy */
    size_t len;
};

/* The message stays valid until nf_kafka_msg_done(). */
typedef void (*nf_kafka_msg_cb)(struct nf_kafka_msg *msg, void *arg);

int nf_kafka_consumer_new(struct nf_kafka_consumer **out, struct event_base *base,
                          const char *brokers, const char *group_id, const char *const *topics,
                          size_t ntopics, int max_inflight, const char *const *extra,
                          nf_kafka_msg_cb cb, void *arg, char *err, size_t errlen);
/* Marks msg handled (its effect is committed), stores offsets that became contiguous,
 * frees msg. Exactly once per message. */
void nf_kafka_msg_done(struct nf_kafka_msg *msg);
/* Commits stored offsets, closes, frees. Messages not yet done are freed without storing.
 * A dynamic member leaves the group; a static one (group.instance.id in extra) does not
 * (KIP-345): its partitions wait for it until the broker's session timeout. NULL ok. */
void nf_kafka_consumer_free(struct nf_kafka_consumer *c);
/*
 * NULL while the consumer is a member of its group holding the assignment of the last
 * rebalance (possibly empty: a standby member of a group with more members than
 * partitions) with a broker connection up; else why not, for /readyz (a static string):
 * "fatal error" (e.g. fenced by another consumer with the same group.instance.id),
 * "no partitions yet (joining the group)", "no broker connection",
 * "no partitions (rebalancing)", "no partitions (assignment lost, rejoining)",
 * "no progress (messages in flight, none done for the stall time)": messages were handed
 * out and none was done for NF_KAFKA_STALL_MS (or what nf_kafka_consumer_set_stall_ms set).
 */
const char *nf_kafka_consumer_unready(const struct nf_kafka_consumer *c);
/* The stall time of nf_kafka_consumer_unready (tests shorten it). */
void nf_kafka_consumer_set_stall_ms(struct nf_kafka_consumer *c, int ms);
/* nf_kafka_consumer_unready(c) == NULL. */
bool nf_kafka_consumer_ready(const struct nf_kafka_consumer *c);
/* Partitions assigned now (0 before the first assignment, while rebalancing, standby). */
int nf_kafka_consumer_partitions(const struct nf_kafka_consumer *c);
/* Messages handed out and not yet done. */
size_t nf_kafka_consumer_inflight(const struct nf_kafka_consumer *c);

/*
 * Creates topics that do not exist yet (blocking, for start-up only; existing topics are
 * fine). Returns 0, or -1 with err filled.
 */
int nf_kafka_create_topics(const char *brokers, const char *const *topics, size_t ntopics,
                           int partitions, int replication, int timeout_ms, char *err,
                           size_t errlen);

/*
 * Topic names: the one list every service and test uses (DESIGN §6, plus forge.usage.dlq
 * and forge.billing.costs). Per-type job topics are NF_TOPIC_JOBS_PREFIX + job type,
 * e.g. snprintf(topic, sizeof(topic), NF_TOPIC_JOBS_PREFIX "%s", type).
 */
#define NF_TOPIC_JOBS_REQUESTED "forge.jobs.requested" /* gateway -> scheduler */
#define NF_TOPIC_JOBS_EVENTS                                                                       \
    "forge.jobs.events"                    /* workers, scheduler, wm -> scheduler, billing         \
                                            */
#define NF_TOPIC_JOBS_DLQ "forge.jobs.dlq" /* dead-lettered jobs */
#define NF_TOPIC_JOBS_PREFIX "forge.jobs." /* + job type: dispatch, -> wm */
#define NF_TOPIC_JOBS_GENERATE NF_TOPIC_JOBS_PREFIX "generate"
#define NF_TOPIC_JOBS_AUDIT NF_TOPIC_JOBS_PREFIX "audit"
#define NF_TOPIC_JOBS_DISTILL NF_TOPIC_JOBS_PREFIX "distill"
#define NF_TOPIC_JOBS_TRAIN NF_TOPIC_JOBS_PREFIX "train"
#define NF_TOPIC_JOBS_EVALUATE NF_TOPIC_JOBS_PREFIX "evaluate"
#define NF_TOPIC_JOBS_DEPLOY NF_TOPIC_JOBS_PREFIX "deploy"
#define NF_TOPIC_USAGE "forge.usage"                   /* workers, scheduler -> billing */
#define NF_TOPIC_USAGE_DLQ "forge.usage.dlq"           /* usage billing could not take */
#define NF_TOPIC_BILLING_COSTS "forge.billing.costs"   /* job costs, billing -> scheduler */
#define NF_TOPIC_AUDIT "forge.audit"                   /* auth events, budget alerts */
#define NF_TOPIC_WORKERS_EVENTS "forge.workers.events" /* worker lifecycle, from wm */

/* Every topic above, the six job types' included, NULL-terminated. */
extern const char *const nf_kafka_forge_topics[];

/* nf_kafka_create_topics over nf_kafka_forge_topics: every service creates the whole set
 * at start, so whichever starts first, no topic is missing for another. */
int nf_kafka_create_forge_topics(const char *brokers, int partitions, int replication,
                                 int timeout_ms, char *err, size_t errlen);
