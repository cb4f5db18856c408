/*
 * nf_kafka admin: blocking topic creation for start-up, and the forge topic set
 * (contract in nf_kafka.h). A short-lived producer handle sends CreateTopics and its
 * queue is polled until the result, with librdkafka's log lines routed to ours.
 */
#include "nf_kafka.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>

#include "nf_kafka_internal.h"
#include "nf_log.h"
#include "nf_mem.h"

const char *const nf_kafka_forge_topics[] = {
    NF_TOPIC_JOBS_REQUESTED, NF_TOPIC_JOBS_GENERATE, NF_TOPIC_JOBS_AUDIT,
    NF_TOPIC_JOBS_DISTILL,   NF_TOPIC_JOBS_TRAIN,    NF_TOPIC_JOBS_EVALUATE,
    NF_TOPIC_JOBS_DEPLOY,    NF_TOPIC_JOBS_EVENTS,   NF_TOPIC_JOBS_DLQ,
    NF_TOPIC_USAGE,          NF_TOPIC_USAGE_DLQ,     NF_TOPIC_WORKERS_EVENTS,
    NF_TOPIC_AUDIT,          NF_TOPIC_BILLING_COSTS, NULL,
};

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
        nf_kafka_set_err(err, errlen, "kafka create topics: %s%s", "no brokers given", "");
        return -1;
    }
    if (partitions < 1 || replication < 1) {
        nf_kafka_set_err(err, errlen, "kafka create topics: %s%s",
                         "partitions and replication must be at least 1", "");
        return -1;
    }
    if (ntopics == 0)
        return 0;
    if (timeout_ms <= 0)
        timeout_ms = 1;

    conf = rd_kafka_conf_new();
    if (nf_kafka_conf_set(conf, "bootstrap.servers", brokers, err, errlen) < 0 ||
        nf_kafka_conf_set(conf, "client.id", "nf-admin", err, errlen) < 0 ||
        nf_kafka_conf_set(conf, "log.queue", "true", err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_log_cb(conf, nf_kafka_log_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        nf_kafka_set_err(err, errlen, "kafka create topics: %s%s", errstr, "");
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
            nf_kafka_set_err(err, errlen, "kafka create topics: %s: %s", topics[made], errstr);
            goto out_topics;
        }
    }
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk, newt, ntopics, opts, rkqu);
    rd_kafka_AdminOptions_destroy(opts);

    /* a margin past the request timeout so librdkafka reports its own timeout */
    deadline = nf_kafka_mono_ms() + (uint64_t)timeout_ms + 2000;
    for (;;) {
        uint64_t now = nf_kafka_mono_ms();
        rd_kafka_event_t *ev;

        if (now >= deadline) {
            nf_kafka_set_err(err, errlen, "kafka create topics: %s%s", "timed out", "");
            break;
        }
        ev = rd_kafka_queue_poll(rkqu, (int)(deadline - now));
        if (ev == NULL)
            continue;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_LOG) {
            const char *fac, *str;
            int level;

            if (rd_kafka_event_log(ev, &fac, &str, &level) == 0)
                nf_kafka_log_cb(rk, level, fac, str);
            rd_kafka_event_destroy(ev);
            continue;
        }
        if (rd_kafka_event_type(ev) != RD_KAFKA_EVENT_CREATETOPICS_RESULT) {
            rd_kafka_event_destroy(ev);
            continue;
        }
        if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            nf_kafka_set_err(err, errlen, "kafka create topics: %s%s",
                             rd_kafka_event_error_string(ev), "");
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

                    nf_kafka_set_err(err, errlen, "kafka create topics: %s: %s", name,
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
