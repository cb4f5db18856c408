/*
 * nf_kafka consumer: a consumer-group member with at-least-once hand-out, bounded
 * inflight and per-partition contiguous offset storing (contract in nf_kafka.h).
 *
 * Message flow and backpressure:
 *
 *   consumer_poll --> kmsg --(inflight < max, nothing pending)--> hand_out --> cb
 *                      |                                             |
 *                      +--(else)--> pending (FIFO)  --when room--------+
 *   hand_out: track entry added; inflight == max --> pause the assignment ("full")
 *   nf_kafka_msg_done: track says what became contiguous --> rd_kafka_offsets_store;
 *                      inflight below the resume mark --> resume, kick the drain
 *
 * Pausing (not merely not polling) keeps the member polling while full, so it still
 * takes part in rebalances and never exceeds max.poll.interval.ms. librdkafka discards
 * what it had prefetched for a paused partition and fetches again from the position after
 * the last message it returned to us, so nothing is skipped; the few messages that may
 * race the pause wait in `pending`.
 *
 * Group membership, as readiness sees it (nf_kafka_consumer_unready):
 *
 *   JOINING --assign--> MEMBER --revoke (eager)--> REBALANCING --assign--> MEMBER
 *                         |  \--revoke, assignment lost (session timed out, fenced,
 *                         |      broker away for longer than session.timeout.ms)--> LOST
 *                         +-- an empty assignment is still MEMBER: a standby replica of a
 *                             group with more members than partitions
 */
#include "nf_kafka.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "nf_kafka_internal.h"
#include "nf_kafka_track.h"
#include "nf_log.h"
#include "nf_mem.h"

#define STR_(x) #x
#define STR(x) STR_(x)

/* What makes a consumer ours (offsets stored by nf_kafka_msg_done only); extra pairs may
 * override it. */
/* clang-format off */
static const char *const consumer_conf[] = {
    "enable.auto.offset.store", "false",
    "enable.auto.commit",       "true",
    "auto.offset.reset",        "earliest",
    /* docs/internals.md, "Consumer groups". Our loop polls every NF_KAFKA_TICK_MS and
     * never blocks once the consumer exists, so a member that does not poll for
     * NF_KAFKA_MAX_POLL_MS is wedged: its partitions go elsewhere, and a rebalance waits
     * at most that long for a member. */
    "session.timeout.ms",       STR(NF_KAFKA_SESSION_TIMEOUT_MS),
    "heartbeat.interval.ms",    STR(NF_KAFKA_HEARTBEAT_MS),
    "max.poll.interval.ms",     STR(NF_KAFKA_MAX_POLL_MS),
    NULL,
};
/* clang-format on */
_Static_assert(NF_KAFKA_HEARTBEAT_MS ==
                   NF_KAFKA_SESSION_TIMEOUT_MS / NF_KAFKA_HEARTBEATS_PER_SESSION,
               "NF_KAFKA_HEARTBEAT_MS is a sixth of the session timeout");

/* A consumed message: the public part first, so nf_kafka_msg_done finds the rest. */
struct kmsg {
    struct nf_kafka_msg msg;
    struct nf_kafka_consumer *c;
    struct nf_kafka_track_entry *entry; /* NULL while pending */
    TAILQ_ENTRY(kmsg) link;             /* in c->inflight or c->pending */
    /* the topic, key and payload copies follow in the same allocation */
};

/* Where the member stands in its group (see the diagram at the top). */
enum group_state {
    GROUP_JOINING,     /* no assignment yet */
    GROUP_MEMBER,      /* the last rebalance gave us our assignment (maybe empty) */
    GROUP_REBALANCING, /* revoked, the next assignment not here yet */
    GROUP_LOST,        /* the assignment was lost; rejoining */
};

/* A FIFO of messages with its length. */
struct kmsg_list {
    TAILQ_HEAD(, kmsg) q;
    size_t n;
};

struct nf_kafka_consumer {
    struct nf_kafka_io io; /* first: see struct nf_kafka_io */
    nf_kafka_msg_cb cb;
    void *arg;
    size_t max_inflight;
    size_t resume_below; /* resume fetching once inflight drops below this */
    struct nf_kafka_track *track;
    struct kmsg_list inflight;               /* handed out, not done */
    struct kmsg_list pending;                /* consumed, waiting for room */
    rd_kafka_topic_partition_list_t *paused; /* what we paused while full */
    bool full;                               /* inflight reached max; the assignment is paused */
    bool assigned;                           /* a first assignment arrived */
    enum group_state group;
    int nparts; /* partitions assigned now */
    bool draining;
    int64_t progress_ms; /* monotonic: the last done, or when inflight became non-empty */
    int stall_ms;        /* NF_KAFKA_STALL_MS unless a test set it */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void list_push(struct kmsg_list *l, struct kmsg *km)
{
    TAILQ_INSERT_TAIL(&l->q, km, link);
    l->n++;
}

static void list_del(struct kmsg_list *l, struct kmsg *km)
{
    TAILQ_REMOVE(&l->q, km, link);
    l->n--;
}

/* One allocation: struct, then topic, key and payload, each NUL-terminated. */
static struct kmsg *kmsg_new(struct nf_kafka_consumer *c, const rd_kafka_message_t *rkm)
{
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    size_t tlen = strlen(topic), klen = rkm->key ? rkm->key_len : 0;
    size_t plen = rkm->payload ? rkm->len : 0;
    struct kmsg *km = nf_xcalloc(1, sizeof(*km) + tlen + 1 + klen + 1 + plen + 1);
    char *s = (char *)(km + 1);

    km->c = c;
    memcpy(s, topic, tlen + 1);
    km->msg.topic = s;
    s += tlen + 1;
    if (klen > 0)
        memcpy(s, rkm->key, klen);
    km->msg.key = s;
    s += klen + 1;
    if (plen > 0)
        memcpy(s, rkm->payload, plen);
    km->msg.payload = s;
    km->msg.len = plen;
    km->msg.partition = rkm->partition;
    km->msg.offset = rkm->offset;
    return km;
}

/* Pauses the assigned partitions in list that are not paused yet, remembering them. */
static void pause_some(struct nf_kafka_consumer *c, const rd_kafka_topic_partition_list_t *list)
{
    rd_kafka_topic_partition_list_t *todo = rd_kafka_topic_partition_list_new(list->cnt);

    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &list->elems[i];

        if (rd_kafka_topic_partition_list_find(c->paused, tp->topic, tp->partition) == NULL) {
            rd_kafka_topic_partition_list_add(todo, tp->topic, tp->partition);
            rd_kafka_topic_partition_list_add(c->paused, tp->topic, tp->partition);
        }
    }
    if (todo->cnt > 0)
        rd_kafka_pause_partitions(c->io.rk, todo);
    rd_kafka_topic_partition_list_destroy(todo);
}

/* inflight reached max: stop fetching until enough is done. */
static void set_full(struct nf_kafka_consumer *c)
{
    rd_kafka_topic_partition_list_t *assigned = NULL;

    c->full = true;
    if (rd_kafka_assignment(c->io.rk, &assigned) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        pause_some(c, assigned);
        rd_kafka_topic_partition_list_destroy(assigned);
    }
}

static void maybe_resume(struct nf_kafka_consumer *c)
{
    if (!c->full || c->inflight.n >= c->resume_below)
        return;
    c->full = false;
    if (c->paused->cnt > 0) {
        rd_kafka_resume_partitions(c->io.rk, c->paused);
        rd_kafka_topic_partition_list_destroy(c->paused);
        c->paused = rd_kafka_topic_partition_list_new(4);
    }
    nf_kafka_io_kick(&c->io); /* pending messages, and whatever the resume brings */
}

/* Gives km to the handler; km may be done (and gone) when this returns. */
static void hand_out(struct nf_kafka_consumer *c, struct kmsg *km)
{
    km->entry = nf_kafka_track_add(c->track, km->msg.topic, km->msg.partition, km->msg.offset);
    if (c->inflight.n == 0)
        c->progress_ms = mono_ms();
    list_push(&c->inflight, km);
    if (c->inflight.n >= c->max_inflight && !c->full)
        set_full(c);
    c->cb(&km->msg, c->arg);
}

static void consumer_drain(void *owner)
{
    struct nf_kafka_consumer *c = owner;
    int n = 0;

    if (c->draining)
        return;
    c->draining = true;
    while (n < NF_KAFKA_DRAIN_BATCH && !TAILQ_EMPTY(&c->pending.q) &&
           c->inflight.n < c->max_inflight) {
        struct kmsg *km = TAILQ_FIRST(&c->pending.q);

        list_del(&c->pending, km);
        hand_out(c, km);
        n++;
    }
    while (n < NF_KAFKA_DRAIN_BATCH) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->io.rk, 0);
        struct kmsg *km;

        if (rkm == NULL)
            break;
        n++;
        if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
            /* e.g. fenced by a newer member with our group.instance.id: the consumer is
             * done for good (the error op comes as a message, not through error_cb) */
            char why[512];

            rd_kafka_fatal_error(c->io.rk, why, sizeof(why));
            if (!c->io.fatal)
                nf_log_kv(NF_LOG_ERROR, "kafka_fatal", "kafka client failed for good", "client",
                          rd_kafka_name(c->io.rk), "error", why, NULL);
            c->io.fatal = true;
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                nf_log_kv(NF_LOG_WARN, "kafka_consume_error", rd_kafka_message_errstr(rkm),
                          "client", rd_kafka_name(c->io.rk), "topic",
                          rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : NULL, NULL);
            rd_kafka_message_destroy(rkm);
            continue;
        }
        km = kmsg_new(c, rkm);
        rd_kafka_message_destroy(rkm);
        if (!TAILQ_EMPTY(&c->pending.q) || c->inflight.n >= c->max_inflight)
            list_push(&c->pending, km);
        else
            hand_out(c, km);
    }
    c->draining = false;
    if (n >= NF_KAFKA_DRAIN_BATCH)
        nf_kafka_io_kick(&c->io); /* yield to the loop; more may be waiting */
}

/* Drops pending messages of a revoked partition: they were never handed out. */
static void pending_drop(struct nf_kafka_consumer *c, const char *topic, int32_t partition)
{
    struct kmsg *km, *next;

    for (km = TAILQ_FIRST(&c->pending.q); km != NULL; km = next) {
        next = TAILQ_NEXT(km, link);
        if (km->msg.partition == partition && strcmp(km->msg.topic, topic) == 0) {
            list_del(&c->pending, km);
            free(km);
        }
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct nf_kafka_consumer *c = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    bool lost;
    char count[16], now[16];

    snprintf(count, sizeof(count), "%d", parts->cnt);
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        for (int i = 0; i < parts->cnt; i++)
            nf_kafka_track_assign(c->track, parts->elems[i].topic, parts->elems[i].partition);
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
        if (c->full)
            pause_some(c, parts);
        c->assigned = true;
        c->group = GROUP_MEMBER;
        /* counted here: rd_kafka_assignment() from inside this callback deadlocks when
         * rd_kafka_consumer_close runs it */
        c->nparts = cooperative ? c->nparts + parts->cnt : parts->cnt;
        c->io.brokers_up = true; /* the coordinator answered; statistics follow */
        snprintf(now, sizeof(now), "%d", c->nparts);
        nf_log_kv(NF_LOG_INFO, "kafka_assigned", "partitions assigned", "client", rd_kafka_name(rk),
                  "partitions", count, "assigned", now, NULL);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        lost = rd_kafka_assignment_lost(rk);
        for (int i = 0; i < parts->cnt; i++) {
            nf_kafka_track_revoke(c->track, parts->elems[i].topic, parts->elems[i].partition);
            pending_drop(c, parts->elems[i].topic, parts->elems[i].partition);
        }
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
        c->nparts = cooperative && c->nparts > parts->cnt ? c->nparts - parts->cnt : 0;
        if (lost)
            c->group = GROUP_LOST;
        else if (!cooperative) /* eager: everything goes, the next assignment follows */
            c->group = GROUP_REBALANCING;
        nf_log_kv(lost ? NF_LOG_WARN : NF_LOG_INFO, "kafka_revoked",
                  lost ? "partitions lost" : "partitions revoked", "client", rd_kafka_name(rk),
                  "partitions", count, NULL);
        break;
    default:
        nf_log_kv(NF_LOG_ERROR, "kafka_rebalance_failed", rd_kafka_err2str(err), "client",
                  rd_kafka_name(rk), NULL);
        aerr = rd_kafka_assign(rk, NULL);
        c->nparts = 0;
        c->group = GROUP_LOST;
        break;
    }
    if (error != NULL) {
        nf_log_kv(NF_LOG_ERROR, "kafka_assign_failed", rd_kafka_error_string(error), "client",
                  rd_kafka_name(rk), NULL);
        rd_kafka_error_destroy(error);
    }
    if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        nf_log_kv(NF_LOG_ERROR, "kafka_assign_failed", rd_kafka_err2str(aerr), "client",
                  rd_kafka_name(rk), NULL);
}

int nf_kafka_consumer_new(struct nf_kafka_consumer **out, struct event_base *base,
                          const char *brokers, const char *group_id, const char *const *topics,
                          size_t ntopics, int max_inflight, const char *const *extra,
                          nf_kafka_msg_cb cb, void *arg, char *err, size_t errlen)
{
    struct nf_kafka_consumer *c;
    rd_kafka_conf_t *conf;
    rd_kafka_topic_partition_list_t *subs;
    rd_kafka_resp_err_t rerr;

    if (brokers == NULL || brokers[0] == '\0' || group_id == NULL || group_id[0] == '\0' ||
        topics == NULL || ntopics == 0 || max_inflight < 1 || cb == NULL) {
        nf_kafka_set_err(err, errlen, "kafka consumer: %s%s",
                         "brokers, group, topics, callback and max_inflight >= 1 are required", "");
        return -1;
    }
    c = nf_xcalloc(1, sizeof(*c));
    TAILQ_INIT(&c->inflight.q);
    TAILQ_INIT(&c->pending.q);
    c->cb = cb;
    c->arg = arg;
    c->max_inflight = (size_t)max_inflight;
    c->stall_ms = NF_KAFKA_STALL_MS;
    c->resume_below = c->max_inflight - c->max_inflight / 4; /* 25 % hysteresis */
    c->track = nf_kafka_track_new();
    c->paused = rd_kafka_topic_partition_list_new(4);
    if (nf_kafka_io_init(&c->io, base, consumer_drain, c, "consumer", err, errlen) < 0)
        goto fail_io;

    conf = nf_kafka_conf_new(brokers, consumer_conf, c, err, errlen);
    if (conf == NULL)
        goto fail_io;
    if (nf_kafka_conf_set(conf, "group.id", group_id, err, errlen) < 0 ||
        nf_kafka_conf_set_all(conf, extra, err, errlen) < 0)
        goto fail_conf;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);

    if (nf_kafka_io_start(&c->io, RD_KAFKA_CONSUMER, conf, err, errlen) < 0)
        goto fail_conf;
    conf = NULL; /* owned by c->io.rk */

    subs = rd_kafka_topic_partition_list_new((int)ntopics);
    for (size_t i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    rerr = rd_kafka_subscribe(c->io.rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        nf_kafka_set_err(err, errlen, "kafka consumer: subscribe: %s%s", rd_kafka_err2str(rerr),
                         "");
        goto fail_rk;
    }
    *out = c;
    return 0;

fail_rk:
    nf_kafka_consumer_free(c);
    return -1;
fail_conf:
    rd_kafka_conf_destroy(conf);
fail_io:
    nf_kafka_consumer_free(c);
    return -1;
}

void nf_kafka_msg_done(struct nf_kafka_msg *msg)
{
    struct kmsg *km = (struct kmsg *)msg;
    struct nf_kafka_consumer *c = km->c;
    const char *topic = NULL;
    int32_t partition = 0;
    int64_t store;

    store = nf_kafka_track_done(km->entry, &topic, &partition);
    if (store >= 0) {
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(list, topic, partition);
        rd_kafka_resp_err_t err;

        tp->offset = store;
        err = rd_kafka_offsets_store(c->io.rk, list);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR || tp->err != RD_KAFKA_RESP_ERR_NO_ERROR)
            nf_log_kv(NF_LOG_DEBUG, "kafka_store_skipped", rd_kafka_err2str(err ? err : tp->err),
                      "topic", topic, NULL);
        rd_kafka_topic_partition_list_destroy(list);
    }
    list_del(&c->inflight, km);
    free(km);
    c->progress_ms = mono_ms();
    maybe_resume(c);
}

void nf_kafka_consumer_free(struct nf_kafka_consumer *c)
{
    struct kmsg *km, *next;
    rd_kafka_resp_err_t err;

    if (c == NULL)
        return;
    nf_kafka_io_stop_events(&c->io);
    if (c->io.rk != NULL) {
        /* Commits what was stored (not when no broker is up: a commit waits for the
         * coordinator up to session.timeout.ms); close then revokes (rebalance_cb runs
         * from inside it, and with auto commit librdkafka commits the stored offsets
         * once more) and leaves the group. */
        if (c->assigned && c->io.brokers_up) {
            err = rd_kafka_commit(c->io.rk, NULL, 0);
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
                nf_log_kv(NF_LOG_WARN, "kafka_commit_failed", rd_kafka_err2str(err), "client",
                          rd_kafka_name(c->io.rk), NULL);
        }
        err = rd_kafka_consumer_close(c->io.rk);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            nf_log_kv(NF_LOG_WARN, "kafka_close_failed", rd_kafka_err2str(err), "client",
                      rd_kafka_name(c->io.rk), NULL);
        nf_kafka_io_release_queue(&c->io);
        rd_kafka_destroy(c->io.rk);
        c->io.rk = NULL;
    }
    for (km = TAILQ_FIRST(&c->inflight.q); km != NULL; km = next) {
        next = TAILQ_NEXT(km, link);
        nf_kafka_track_drop(km->entry);
        free(km);
    }
    for (km = TAILQ_FIRST(&c->pending.q); km != NULL; km = next) {
        next = TAILQ_NEXT(km, link);
        free(km);
    }
    nf_kafka_track_free(c->track);
    if (c->paused != NULL)
        rd_kafka_topic_partition_list_destroy(c->paused);
    nf_kafka_io_close(&c->io);
    free(c);
}

const char *nf_kafka_consumer_unready(const struct nf_kafka_consumer *c)
{
    if (c->io.fatal)
        return "fatal error";
    if (c->group == GROUP_JOINING)
        return "no partitions yet (joining the group)";
    if (!c->io.brokers_up)
        return "no broker connection";
    if (c->group == GROUP_REBALANCING)
        return "no partitions (rebalancing)";
    if (c->group == GROUP_LOST)
        return "no partitions (assignment lost, rejoining)";
    if (c->inflight.n > 0 && mono_ms() - c->progress_ms > c->stall_ms)
        return "no progress (messages in flight, none done for the stall time)";
    return NULL;
}

void nf_kafka_consumer_set_stall_ms(struct nf_kafka_consumer *c, int ms)
{
    c->stall_ms = ms;
}

bool nf_kafka_consumer_ready(const struct nf_kafka_consumer *c)
{
    return nf_kafka_consumer_unready(c) == NULL;
}

int nf_kafka_consumer_partitions(const struct nf_kafka_consumer *c)
{
    return c->nparts;
}

size_t nf_kafka_consumer_inflight(const struct nf_kafka_consumer *c)
{
    return c->inflight.n;
}
