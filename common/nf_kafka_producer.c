/*
 * nf_kafka producer: idempotent, acks=all, one delivery callback per accepted message
 * (contract in nf_kafka.h). Each accepted message carries a struct dr as its librdkafka
 * opaque; the records also sit in p->outstanding, so shutdown can fail whatever
 * librdkafka never reported:
 *
 *   nf_kafka_produce --> dr on outstanding --> dr_msg_cb (from the drain) --> cb, free
 *   nf_kafka_producer_free --> flush --> purge --> the rest: cb(-RD_KAFKA_RESP_ERR__DESTROY)
 */
#include "nf_kafka.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "nf_kafka_internal.h"
#include "nf_log.h"
#include "nf_mem.h"

/* What makes a producer ours; extra pairs may override it. */
/* clang-format off */
static const char *const producer_conf[] = {
    "enable.idempotence", "true",
    "acks",               "all",
    "linger.ms",          "5",
    "message.timeout.ms", "10000",
    NULL,
};
/* clang-format on */

/* Delivery record of one accepted message; the per-message opaque. */
struct dr {
    nf_kafka_delivery_cb cb; /* may be NULL */
    void *arg;
    struct dr *prev, *next; /* in p->outstanding until reported */
};

struct nf_kafka_producer {
    struct nf_kafka_io io;  /* first: see struct nf_kafka_io */
    struct dr *outstanding; /* accepted, not yet reported */
    int outq;               /* length of outstanding */
};

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
        d->cb(err ? nf_kafka_neg_err(err) : 0, err ? rd_kafka_err2str(err) : NULL, d->arg);
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

    if (brokers == NULL || brokers[0] == '\0') {
        nf_kafka_set_err(err, errlen, "kafka producer: %s%s", "no brokers given", "");
        return -1;
    }
    p = nf_xcalloc(1, sizeof(*p));
    if (nf_kafka_io_init(&p->io, base, producer_drain, p, "producer", err, errlen) < 0)
        goto fail_io;

    conf = nf_kafka_conf_new(brokers, producer_conf, p, err, errlen);
    if (conf == NULL)
        goto fail_io;
    if ((client_id != NULL && nf_kafka_conf_set(conf, "client.id", client_id, err, errlen) < 0) ||
        nf_kafka_conf_set_all(conf, extra, err, errlen) < 0)
        goto fail_conf;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);

    if (nf_kafka_io_start(&p->io, RD_KAFKA_PRODUCER, conf, err, errlen) < 0)
        goto fail_conf;
    conf = NULL; /* owned by p->io.rk */
    *out = p;
    return 0;

fail_conf:
    rd_kafka_conf_destroy(conf);
fail_io:
    nf_kafka_io_stop_events(&p->io);
    nf_kafka_io_close(&p->io);
    free(p);
    return -1;
}

void nf_kafka_producer_free(struct nf_kafka_producer *p, int timeout_ms)
{
    rd_kafka_resp_err_t err;

    if (p == NULL)
        return;
    nf_kafka_io_stop_events(&p->io);
    if (p->io.rk != NULL) {
        /* rd_kafka_flush polls, so delivery callbacks fire from inside it */
        err = rd_kafka_flush(p->io.rk, timeout_ms > 0 ? timeout_ms : 0);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR || p->outq > 0) {
            nf_log_kv(NF_LOG_WARN, "kafka_flush_incomplete",
                      "failing messages not delivered before shutdown", "client",
                      rd_kafka_name(p->io.rk), NULL);
            rd_kafka_purge(p->io.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            for (uint64_t end = nf_kafka_mono_ms() + 1000; p->outq > 0 && nf_kafka_mono_ms() < end;)
                rd_kafka_poll(p->io.rk, 10);
        }
        nf_kafka_io_release_queue(&p->io);
        rd_kafka_destroy(p->io.rk);
        p->io.rk = NULL;
    }
    /* whatever librdkafka never reported still gets its one callback */
    while (p->outstanding != NULL)
        dr_finish(p, p->outstanding, RD_KAFKA_RESP_ERR__DESTROY);
    nf_kafka_io_close(&p->io);
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
        return nf_kafka_neg_err(err);
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

const char *nf_kafka_producer_unready(const struct nf_kafka_producer *p)
{
    if (p->io.fatal)
        return "fatal error";
    if (!p->io.brokers_up)
        return "no broker connection";
    if (!p->io.metadata_seen)
        return "no cluster metadata yet";
    return NULL;
}

bool nf_kafka_producer_ready(const struct nf_kafka_producer *p)
{
    return nf_kafka_producer_unready(p) == NULL;
}
