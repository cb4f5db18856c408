/*
 * nf_kafka: librdkafka driven from the libevent loop; the contract is in nf_kafka.h.
 *
 *   librdkafka threads --op--> queue --io event "1"--> pipe --EV_READ--> on_io --+
 *                                          100 ms tick (safety net) --> on_tick --+--> drain
 *                                          zero timer (more work left) --> on_kick -+
 *
 *   producer drain: rd_kafka_poll(rk, 0) serves everything queued on the main queue:
 *                   dr_msg_cb, error_cb, stats_cb and log lines (log.queue=true)
 *   consumer drain: rd_kafka_consumer_poll(rk, 0), at most DRAIN_BATCH times per wakeup;
 *                   the main queue is forwarded to the consumer queue, so the same calls
 *                   serve rebalance_cb, error_cb, stats_cb and log lines
 *
 * Consumer message flow and backpressure:
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
 * Readiness: some broker connection is up (the statistics, every second, say whether one
 * is in state UP; an ALL_BROKERS_DOWN error clears it in between; an acknowledged
 * message or an assignment sets it early), the cluster id is known (producer: a metadata
 * answer arrived) or a first assignment arrived (consumer), and no fatal error.
 */
#include "nf_kafka.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nf_kafka_track.h"
#include "nf_log.h"
#include "nf_mem.h"

#define TICK_MS 100
#define DRAIN_BATCH 64
#define STATS_INTERVAL "1000"

const char *const nf_kafka_forge_topics[] = {
    "forge.jobs.requested", "forge.jobs.generate", "forge.jobs.audit",
    "forge.jobs.distill",   "forge.jobs.train",    "forge.jobs.evaluate",
    "forge.jobs.deploy",    "forge.jobs.events",   "forge.jobs.dlq",
    "forge.usage",          "forge.usage.dlq",     "forge.workers.events",
    "forge.audit",          "forge.billing.costs", NULL,
};

/*
 * The loop plumbing shared by producer and consumer. It is the first member of both, and
 * the librdkafka opaque points at the owner, so the common callbacks cast it to kio.
 */
struct kio {
    struct event_base *base;
    rd_kafka_t *rk;
    rd_kafka_queue_t *rkqu; /* the queue whose io event writes to fds[1] */
    int fds[2];             /* non-blocking pipe; -1 when closed */
    struct event *io_ev;    /* EV_READ|EV_PERSIST on fds[0] */
    struct event *tick_ev;  /* TICK_MS persistent safety net */
    struct event *kick_ev;  /* made active when a drain left work behind */
    void (*drain)(void *owner);
    void *owner;
    const char *kind;   /* "producer" or "consumer", for logs */
    bool fatal;         /* librdkafka raised a fatal error */
    bool brokers_up;    /* last statistics saw a broker UP, no ALL_BROKERS_DOWN since */
    bool metadata_seen; /* the cluster id is known */
};

/* Delivery record of one accepted message; the per-message opaque. */
struct dr {
    nf_kafka_delivery_cb cb; /* may be NULL */
    void *arg;
    struct dr *prev, *next; /* in p->outstanding until reported */
};

struct nf_kafka_producer {
    struct kio io;          /* first: see struct kio */
    struct dr *outstanding; /* accepted, not yet reported */
    int outq;               /* length of outstanding */
};

/* A consumed message: the public part first, so nf_kafka_msg_done finds the rest. */
struct kmsg {
    struct nf_kafka_msg msg;
    struct nf_kafka_consumer *c;
    struct nf_kafka_track_entry *entry; /* NULL while pending */
    struct kmsg *prev, *next;           /* in c->inflight or c->pending */
    /* the topic, key and payload copies follow in the same allocation */
};

struct kmsg_list {
    struct kmsg *first, *last;
    size_t n;
};

struct nf_kafka_consumer {
    struct kio io; /* first: see struct kio */
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
    bool draining;
};

/* librdkafka errors as our negative codes: its own (already negative) pass unchanged,
 * broker errors (positive) are negated. */
static int neg_err(rd_kafka_resp_err_t err)
{
    return err < 0 ? (int)err : -(int)err;
}

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, fmt, a, b);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- configuration ---- */

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                    size_t errlen)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        set_err(err, errlen, "kafka config %s: %s", name, errstr);
        return -1;
    }
    return 0;
}

/* Sets NULL-terminated name/value pairs, stopping at the first bad one. */
static int conf_set_all(rd_kafka_conf_t *conf, const char *const *kv, char *err, size_t errlen)
{
    for (size_t i = 0; kv != NULL && kv[i] != NULL; i += 2) {
        if (kv[i + 1] == NULL) {
            set_err(err, errlen, "kafka config %s: %s", kv[i], "value missing");
            return -1;
        }
        if (conf_set(conf, kv[i], kv[i + 1], err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* ---- callbacks common to producer and consumer (always on the loop thread) ---- */

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
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
    struct kio *io = opaque;
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
    struct kio *io = opaque;
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

/* Every handle gets the same settings first; extra pairs may override them. */
static void conf_callbacks(rd_kafka_conf_t *conf, void *owner)
{
    rd_kafka_conf_set_opaque(conf, owner);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
}

/* ---- loop plumbing ---- */

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct kio *io = arg;
    char buf[64];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    io->drain(io->owner);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct kio *io = arg;

    if (!io->metadata_seen) {
        char *id = rd_kafka_clusterid(io->rk, 0);

        if (id != NULL) {
            io->metadata_seen = true;
            rd_kafka_mem_free(io->rk, id);
        }
    }
    io->drain(io->owner);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct kio *io = arg;

    io->drain(io->owner);
}

static void kio_kick(struct kio *io)
{
    if (io->kick_ev != NULL)
        event_active(io->kick_ev, EV_TIMEOUT, 0);
}

/* Pipe and events, not armed yet. */
static int kio_init(struct kio *io, struct event_base *base, void (*drain)(void *), void *owner,
                    const char *kind, char *err, size_t errlen)
{
    io->base = base;
    io->drain = drain;
    io->owner = owner;
    io->kind = kind;
    io->fds[0] = io->fds[1] = -1;
    if (pipe2(io->fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        set_err(err, errlen, "kafka %s: pipe: %s", kind, strerror(errno));
        io->fds[0] = io->fds[1] = -1;
        return -1;
    }
    io->io_ev = event_new(base, io->fds[0], EV_READ | EV_PERSIST, on_io, io);
    io->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, io);
    io->kick_ev = event_new(base, -1, 0, on_kick, io);
    if (io->io_ev == NULL || io->tick_ev == NULL || io->kick_ev == NULL) {
        set_err(err, errlen, "kafka %s: %s", kind, "cannot create events");
        return -1;
    }
    return 0;
}

/* Routes rkqu's wake-ups to the pipe and arms the events; rkqu is owned by io now. */
static void kio_start(struct kio *io, rd_kafka_queue_t *rkqu)
{
    struct timeval tick = {0, (suseconds_t)TICK_MS * 1000};

    io->rkqu = rkqu;
    rd_kafka_queue_io_event_enable(rkqu, io->fds[1], "1", 1);
    event_add(io->io_ev, NULL);
    event_add(io->tick_ev, &tick);
}

/* Stops the events; the librdkafka handle is still alive and usable. */
static void kio_stop_events(struct kio *io)
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
static void kio_release_queue(struct kio *io)
{
    if (io->rkqu != NULL) {
        rd_kafka_queue_io_event_enable(io->rkqu, -1, NULL, 0);
        rd_kafka_queue_destroy(io->rkqu);
        io->rkqu = NULL;
    }
}

/* After rd_kafka_destroy: nobody writes to the pipe any more. */
static void kio_close(struct kio *io)
{
    for (int i = 0; i < 2; i++) {
        if (io->fds[i] >= 0)
            close(io->fds[i]);
        io->fds[i] = -1;
    }
}

/* ---- producer ---- */

static void dr_unlink(struct nf_kafka_producer *p, struct dr *d)
{
    if (p->outstanding == d)
        p->outstanding = d->next;
    else
        d->prev->next = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
    p->outq--;
}

/* Reports one message to its owner, exactly once, and frees the record. */
static void dr_finish(struct nf_kafka_producer *p, struct dr *d, rd_kafka_resp_err_t err)
{
    dr_unlink(p, d);
    if (d->cb != NULL)
        d->cb(err ? neg_err(err) : 0, err ? rd_kafka_err2str(err) : NULL, d->arg);
    free(d);
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    struct nf_kafka_producer *p = opaque;
    struct dr *d = rkm->_private;

    if (d == NULL)
        return;
    if (rkm->err)
        nf_log_kv(NF_LOG_DEBUG, "kafka_delivery_failed", rd_kafka_err2str(rkm->err), "topic",
                  rd_kafka_topic_name(rkm->rkt), NULL);
    else
        p->io.brokers_up = true; /* a broker acknowledged; statistics follow */
    dr_finish(p, d, rkm->err);
}

static void producer_drain(void *owner)
{
    struct nf_kafka_producer *p = owner;

    rd_kafka_poll(p->io.rk, 0);
}

int nf_kafka_producer_new(struct nf_kafka_producer **out, struct event_base *base,
                          const char *brokers, const char *client_id, const char *const *extra,
                          char *err, size_t errlen)
{
    struct nf_kafka_producer *p;
    rd_kafka_conf_t *conf;
    char errstr[512];

    if (brokers == NULL || brokers[0] == '\0') {
        set_err(err, errlen, "kafka producer: %s%s", "no brokers given", "");
        return -1;
    }
    p = nf_xcalloc(1, sizeof(*p));
    if (kio_init(&p->io, base, producer_drain, p, "producer", err, errlen) < 0)
        goto fail_io;

    conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", brokers, err, errlen) < 0 ||
        (client_id != NULL && conf_set(conf, "client.id", client_id, err, errlen) < 0) ||
        conf_set(conf, "enable.idempotence", "true", err, errlen) < 0 ||
        conf_set(conf, "acks", "all", err, errlen) < 0 ||
        conf_set(conf, "linger.ms", "5", err, errlen) < 0 ||
        conf_set(conf, "message.timeout.ms", "10000", err, errlen) < 0 ||
        conf_set(conf, "statistics.interval.ms", STATS_INTERVAL, err, errlen) < 0 ||
        conf_set(conf, "log.queue", "true", err, errlen) < 0 ||
        conf_set_all(conf, extra, err, errlen) < 0)
        goto fail_conf;
    conf_callbacks(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);

    p->io.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (p->io.rk == NULL) {
        set_err(err, errlen, "kafka producer: %s%s", errstr, "");
        goto fail_conf;
    }
    conf = NULL; /* owned by rk */
    rd_kafka_set_log_queue(p->io.rk, NULL);
    kio_start(&p->io, rd_kafka_queue_get_main(p->io.rk));
    *out = p;
    return 0;

fail_conf:
    rd_kafka_conf_destroy(conf);
fail_io:
    kio_stop_events(&p->io);
    kio_close(&p->io);
    free(p);
    return -1;
}

void nf_kafka_producer_free(struct nf_kafka_producer *p, int timeout_ms)
{
    rd_kafka_resp_err_t err;

    if (p == NULL)
        return;
    kio_stop_events(&p->io);
    if (p->io.rk != NULL) {
        /* rd_kafka_flush polls, so delivery callbacks fire from inside it */
        err = rd_kafka_flush(p->io.rk, timeout_ms > 0 ? timeout_ms : 0);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR || p->outq > 0) {
            nf_log_kv(NF_LOG_WARN, "kafka_flush_incomplete",
                      "failing messages not delivered before shutdown", "client",
                      rd_kafka_name(p->io.rk), NULL);
            rd_kafka_purge(p->io.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            for (uint64_t end = mono_ms() + 1000; p->outq > 0 && mono_ms() < end;)
                rd_kafka_poll(p->io.rk, 10);
        }
        kio_release_queue(&p->io);
        rd_kafka_destroy(p->io.rk);
        p->io.rk = NULL;
    }
    /* whatever librdkafka never reported still gets its one callback */
    while (p->outstanding != NULL)
        dr_finish(p, p->outstanding, RD_KAFKA_RESP_ERR__DESTROY);
    kio_close(&p->io);
    free(p);
}

int nf_kafka_produce(struct nf_kafka_producer *p, const char *topic, const char *key,
                     const void *payload, size_t len, nf_kafka_delivery_cb cb, void *arg)
{
    struct dr *d = nf_xcalloc(1, sizeof(*d));
    size_t klen = key != NULL ? strlen(key) : 0;
    rd_kafka_resp_err_t err;

    d->cb = cb;
    d->arg = arg;
    err = rd_kafka_producev(p->io.rk, RD_KAFKA_V_TOPIC(topic),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, klen),
                            RD_KAFKA_V_VALUE((void *)payload, len), RD_KAFKA_V_OPAQUE(d),
                            RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        nf_log_kv(NF_LOG_WARN, "kafka_produce_failed", rd_kafka_err2str(err), "topic", topic, NULL);
        free(d);
        return neg_err(err);
    }
    d->next = p->outstanding; /* accepted: reported by dr_msg_cb or at free */
    if (d->next)
        d->next->prev = d;
    p->outstanding = d;
    p->outq++;
    return 0;
}

int nf_kafka_producer_outq(const struct nf_kafka_producer *p)
{
    return p->outq;
}

bool nf_kafka_producer_ready(const struct nf_kafka_producer *p)
{
    return p->io.metadata_seen && p->io.brokers_up && !p->io.fatal;
}

/* ---- consumer ---- */

static void list_push(struct kmsg_list *l, struct kmsg *km)
{
    km->next = NULL;
    km->prev = l->last;
    if (l->last)
        l->last->next = km;
    else
        l->first = km;
    l->last = km;
    l->n++;
}

static void list_del(struct kmsg_list *l, struct kmsg *km)
{
    if (l->first == km)
        l->first = km->next;
    else
        km->prev->next = km->next;
    if (l->last == km)
        l->last = km->prev;
    else
        km->next->prev = km->prev;
    km->prev = km->next = NULL;
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
    kio_kick(&c->io); /* pending messages, and whatever the resume brings */
}

/* Gives km to the handler; km may be done (and gone) when this returns. */
static void hand_out(struct nf_kafka_consumer *c, struct kmsg *km)
{
    km->entry = nf_kafka_track_add(c->track, km->msg.topic, km->msg.partition, km->msg.offset);
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
    while (n < DRAIN_BATCH && c->pending.first != NULL && c->inflight.n < c->max_inflight) {
        struct kmsg *km = c->pending.first;

        list_del(&c->pending, km);
        hand_out(c, km);
        n++;
    }
    while (n < DRAIN_BATCH) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->io.rk, 0);
        struct kmsg *km;

        if (rkm == NULL)
            break;
        n++;
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
        if (c->pending.first != NULL || c->inflight.n >= c->max_inflight)
            list_push(&c->pending, km);
        else
            hand_out(c, km);
    }
    c->draining = false;
    if (n >= DRAIN_BATCH)
        kio_kick(&c->io); /* yield to the loop; more may be waiting */
}

/* Drops pending messages of a revoked partition: they were never handed out. */
static void pending_drop(struct nf_kafka_consumer *c, const char *topic, int32_t partition)
{
    struct kmsg_list keep = {NULL, NULL, 0};
    struct kmsg *km;

    while ((km = c->pending.first) != NULL) {
        c->pending.first = km->next;
        if (km->msg.partition == partition && strcmp(km->msg.topic, topic) == 0)
            free(km);
        else
            list_push(&keep, km);
    }
    c->pending = keep;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct nf_kafka_consumer *c = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    char count[16];

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
        c->io.brokers_up = true; /* the coordinator answered; statistics follow */
        nf_log_kv(NF_LOG_INFO, "kafka_assigned", "partitions assigned", "client", rd_kafka_name(rk),
                  "partitions", count, NULL);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        for (int i = 0; i < parts->cnt; i++) {
            nf_kafka_track_revoke(c->track, parts->elems[i].topic, parts->elems[i].partition);
            pending_drop(c, parts->elems[i].topic, parts->elems[i].partition);
        }
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
        nf_log_kv(NF_LOG_INFO, "kafka_revoked", "partitions revoked", "client", rd_kafka_name(rk),
                  "partitions", count, NULL);
        break;
    default:
        nf_log_kv(NF_LOG_ERROR, "kafka_rebalance_failed", rd_kafka_err2str(err), "client",
                  rd_kafka_name(rk), NULL);
        aerr = rd_kafka_assign(rk, NULL);
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
    char errstr[512];

    if (brokers == NULL || brokers[0] == '\0' || group_id == NULL || group_id[0] == '\0' ||
        topics == NULL || ntopics == 0 || max_inflight < 1 || cb == NULL) {
        set_err(err, errlen, "kafka consumer: %s%s",
                "brokers, group, topics, callback and max_inflight >= 1 are required", "");
        return -1;
    }
    c = nf_xcalloc(1, sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    c->max_inflight = (size_t)max_inflight;
    c->resume_below = c->max_inflight - c->max_inflight / 4; /* 25 % hysteresis */
    c->track = nf_kafka_track_new();
    c->paused = rd_kafka_topic_partition_list_new(4);
    if (kio_init(&c->io, base, consumer_drain, c, "consumer", err, errlen) < 0)
        goto fail_io;

    conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", brokers, err, errlen) < 0 ||
        conf_set(conf, "group.id", group_id, err, errlen) < 0 ||
        conf_set(conf, "enable.auto.offset.store", "false", err, errlen) < 0 ||
        conf_set(conf, "enable.auto.commit", "true", err, errlen) < 0 ||
        conf_set(conf, "auto.offset.reset", "earliest", err, errlen) < 0 ||
        conf_set(conf, "statistics.interval.ms", STATS_INTERVAL, err, errlen) < 0 ||
        conf_set(conf, "log.queue", "true", err, errlen) < 0 ||
        conf_set_all(conf, extra, err, errlen) < 0)
        goto fail_conf;
    conf_callbacks(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);

    c->io.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (c->io.rk == NULL) {
        set_err(err, errlen, "kafka consumer: %s%s", errstr, "");
        goto fail_conf;
    }
    conf = NULL;                          /* owned by rk */
    rd_kafka_poll_set_consumer(c->io.rk); /* main queue now forwards to the consumer queue */
    rd_kafka_set_log_queue(c->io.rk, NULL);
    kio_start(&c->io, rd_kafka_queue_get_consumer(c->io.rk));

    subs = rd_kafka_topic_partition_list_new((int)ntopics);
    for (size_t i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    rerr = rd_kafka_subscribe(c->io.rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        set_err(err, errlen, "kafka consumer: subscribe: %s%s", rd_kafka_err2str(rerr), "");
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
    maybe_resume(c);
}

void nf_kafka_consumer_free(struct nf_kafka_consumer *c)
{
    rd_kafka_resp_err_t err;

    if (c == NULL)
        return;
    kio_stop_events(&c->io);
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
        kio_release_queue(&c->io);
        rd_kafka_destroy(c->io.rk);
        c->io.rk = NULL;
    }
    while (c->inflight.first != NULL) {
        struct kmsg *km = c->inflight.first;

        list_del(&c->inflight, km);
        nf_kafka_track_drop(km->entry);
        free(km);
    }
    while (c->pending.first != NULL) {
        struct kmsg *km = c->pending.first;

        list_del(&c->pending, km);
        free(km);
    }
    nf_kafka_track_free(c->track);
    if (c->paused != NULL)
        rd_kafka_topic_partition_list_destroy(c->paused);
    kio_close(&c->io);
    free(c);
}

bool nf_kafka_consumer_ready(const struct nf_kafka_consumer *c)
{
    return c->assigned && c->io.brokers_up && !c->io.fatal;
}

size_t nf_kafka_consumer_inflight(const struct nf_kafka_consumer *c)
{
    return c->inflight.n;
}

/* ---- admin ---- */

int nf_kafka_create_topics(const char *brokers, const char *const *topics, size_t ntopics,
                           int partitions, int replication, int timeout_ms, char *err,
                           size_t errlen)
{
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_queue_t *rkqu;
    rd_kafka_NewTopic_t **newt;
    rd_kafka_AdminOptions_t *opts;
    char errstr[512];
    uint64_t deadline;
    size_t made = 0;
    int rc = -1;

    if (brokers == NULL || brokers[0] == '\0' || (topics == NULL && ntopics > 0)) {
        set_err(err, errlen, "kafka create topics: %s%s", "no brokers given", "");
        return -1;
    }
    if (partitions < 1 || replication < 1) {
        set_err(err, errlen, "kafka create topics: %s%s",
                "partitions and replication must be at least 1", "");
        return -1;
    }
    if (ntopics == 0)
        return 0;
    if (timeout_ms <= 0)
        timeout_ms = 1;

    conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", brokers, err, errlen) < 0 ||
        conf_set(conf, "client.id", "nf-admin", err, errlen) < 0 ||
        conf_set(conf, "log.queue", "true", err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        set_err(err, errlen, "kafka create topics: %s%s", errstr, "");
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    conf = NULL; /* owned by rk */
    rkqu = rd_kafka_queue_new(rk);
    rd_kafka_set_log_queue(rk, rkqu); /* log lines arrive as events on rkqu */

    newt = nf_xcalloc(ntopics, sizeof(rd_kafka_NewTopic_t *));
    for (made = 0; made < ntopics; made++) {
        newt[made] =
            rd_kafka_NewTopic_new(topics[made], partitions, replication, errstr, sizeof(errstr));
        if (newt[made] == NULL) {
            set_err(err, errlen, "kafka create topics: %s: %s", topics[made], errstr);
            goto out_topics;
        }
    }
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk, newt, ntopics, opts, rkqu);
    rd_kafka_AdminOptions_destroy(opts);

    /* a margin past the request timeout so librdkafka reports its own timeout */
    deadline = mono_ms() + (uint64_t)timeout_ms + 2000;
    for (;;) {
        uint64_t now = mono_ms();
        rd_kafka_event_t *ev;

        if (now >= deadline) {
            set_err(err, errlen, "kafka create topics: %s%s", "timed out", "");
            break;
        }
        ev = rd_kafka_queue_poll(rkqu, (int)(deadline - now));
        if (ev == NULL)
            continue;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_LOG) {
            const char *fac, *str;
            int level;

            if (rd_kafka_event_log(ev, &fac, &str, &level) == 0)
                log_cb(rk, level, fac, str);
            rd_kafka_event_destroy(ev);
            continue;
        }
        if (rd_kafka_event_type(ev) != RD_KAFKA_EVENT_CREATETOPICS_RESULT) {
            rd_kafka_event_destroy(ev);
            continue;
        }
        if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            set_err(err, errlen, "kafka create topics: %s%s", rd_kafka_event_error_string(ev), "");
        } else {
            const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
            size_t nres = 0;
            const rd_kafka_topic_result_t **tres = rd_kafka_CreateTopics_result_topics(res, &nres);
            rc = 0;
            for (size_t i = 0; i < nres; i++) {
                rd_kafka_resp_err_t terr = rd_kafka_topic_result_error(tres[i]);
                const char *name = rd_kafka_topic_result_name(tres[i]);

                if (terr == RD_KAFKA_RESP_ERR_NO_ERROR) {
                    nf_log_kv(NF_LOG_INFO, "kafka_topic_created", "topic created", "topic", name,
                              NULL);
                } else if (terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                    const char *why = rd_kafka_topic_result_error_string(tres[i]);

                    set_err(err, errlen, "kafka create topics: %s: %s", name,
                            why ? why : rd_kafka_err2str(terr));
                    rc = -1;
                }
            }
        }
        rd_kafka_event_destroy(ev);
        break;
    }

out_topics:
    for (size_t i = 0; i < made; i++)
        rd_kafka_NewTopic_destroy(newt[i]);
    free(newt);
    rd_kafka_queue_destroy(rkqu);
    rd_kafka_destroy(rk);
    return rc;
}

int nf_kafka_create_forge_topics(const char *brokers, int partitions, int replication,
                                 int timeout_ms, char *err, size_t errlen)
{
    size_t n = 0;

    while (nf_kafka_forge_topics[n])
        n++;
    return nf_kafka_create_topics(brokers, nf_kafka_forge_topics, n, partitions, replication,
                                  timeout_ms, err, errlen);
}
