/*
 * nf_kafka without a broker: the contiguous-offset tracker (nf_kafka_track), bad
 * configurations, a producer and a consumer pointed at a closed port (delivery failures
 * fire each callback exactly once, in the loop or at free), local produce errors, and
 * topic creation that cannot reach a broker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_kafka.h"
#include "nf_kafka_track.h"
#include "nf_log.h"
#include "nf_test.h"

/* Nothing listens on port 1. */
#define DEAD_BROKER "127.0.0.1:1"

static int setup_log(void **state)
{
    nf_log_init("test", NF_LOG_ERROR);
    return 0;
}

/* nf_kafka_track_done for tests that do not look at the topic and partition. */
static int64_t done(struct nf_kafka_track_entry *e)
{
    const char *topic;
    int32_t part;

    return nf_kafka_track_done(e, &topic, &part);
}

/* ---- tracker ---- */

/* An entry at offset of partition 0 of topic "a", the partition most tests use. */
static struct nf_kafka_track_entry *add(struct nf_kafka_track *t, int64_t offset)
{
    return nf_kafka_track_add(t, "a", 0, offset);
}

static void test_track_in_order(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *e[5];
    const char *topic = NULL;
    int32_t part = -1;

    nf_kafka_track_assign(t, "a", 0);
    for (int i = 0; i < 5; i++)
        e[i] = add(t, i);
    assert_int_equal(nf_kafka_track_open(t, "a", 0), 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(nf_kafka_track_done(e[i], &topic, &part), i + 1);
        assert_string_equal(topic, "a");
        assert_int_equal(part, 0);
    }
    assert_int_equal(nf_kafka_track_open(t, "a", 0), 0);
    nf_kafka_track_free(t);
}

static void test_track_out_of_order(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *e10, *e11, *e12, *e13;
    const char *topic = NULL;
    int32_t part = -1;

    nf_kafka_track_assign(t, "a", 2);
    e10 = nf_kafka_track_add(t, "a", 2, 10);
    e11 = nf_kafka_track_add(t, "a", 2, 11);
    e12 = nf_kafka_track_add(t, "a", 2, 12);
    e13 = nf_kafka_track_add(t, "a", 2, 13);
    assert_int_equal(nf_kafka_track_done(e11, &topic, &part), -1);
    assert_int_equal(nf_kafka_track_done(e13, &topic, &part), -1);
    assert_null(topic); /* untouched while nothing is storable */
    assert_int_equal(nf_kafka_track_open(t, "a", 2), 2);
    assert_int_equal(nf_kafka_track_done(e10, &topic, &part), 12); /* 10, 11 contiguous */
    assert_string_equal(topic, "a");
    assert_int_equal(part, 2);
    assert_int_equal(nf_kafka_track_done(e12, &topic, &part), 14); /* 12, 13 */
    nf_kafka_track_free(t);
}

/* Offsets with holes (compaction, control records): only the hand-out order counts. */
static void test_track_gaps(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *e5, *e9, *e20;

    e5 = add(t, 5); /* never assigned: started implicitly */
    e9 = add(t, 9);
    e20 = add(t, 20);
    assert_int_equal(nf_kafka_track_parts(t), 1);
    assert_int_equal(done(e9), -1);
    assert_int_equal(done(e5), 10);
    assert_int_equal(done(e20), 21);
    nf_kafka_track_free(t);
}

static void test_track_partitions_independent(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *a0, *a1, *b0;
    const char *topic;
    int32_t part;

    nf_kafka_track_assign(t, "a", 0);
    nf_kafka_track_assign(t, "a", 1);
    nf_kafka_track_assign(t, "b", 0);
    assert_int_equal(nf_kafka_track_parts(t), 3);
    a0 = add(t, 7);
    a1 = nf_kafka_track_add(t, "a", 1, 3);
    b0 = nf_kafka_track_add(t, "b", 0, 100);
    assert_int_equal(nf_kafka_track_done(b0, &topic, &part), 101);
    assert_string_equal(topic, "b");
    assert_int_equal(part, 0);
    assert_int_equal(nf_kafka_track_done(a1, &topic, &part), 4);
    assert_string_equal(topic, "a");
    assert_int_equal(part, 1);
    assert_int_equal(nf_kafka_track_done(a0, &topic, &part), 8);
    assert_int_equal(part, 0);
    nf_kafka_track_free(t);
}

/* Messages of a revoked partition may still be done but store nothing, and a later
 * assignment of the same partition starts its own sequence. */
static void test_track_revoke_and_reassign(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *old0, *old1, *new0;

    nf_kafka_track_assign(t, "a", 0);
    old0 = add(t, 0);
    old1 = add(t, 1);
    nf_kafka_track_revoke(t, "a", 0);
    nf_kafka_track_revoke(t, "a", 9); /* unknown: ignored */
    assert_int_equal(nf_kafka_track_parts(t), 0);
    assert_int_equal(done(old0), -1);

    nf_kafka_track_assign(t, "a", 0);
    new0 = add(t, 1); /* redelivered */
    assert_int_equal(done(old1), -1);
    assert_int_equal(nf_kafka_track_open(t, "a", 0), 1);
    assert_int_equal(done(new0), 2);
    nf_kafka_track_free(t);
}

/* Assign while the partition still has open messages: the old ones store nothing. */
static void test_track_assign_twice(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *old, *cur;

    nf_kafka_track_assign(t, "a", 0);
    old = add(t, 4);
    nf_kafka_track_assign(t, "a", 0);
    assert_int_equal(nf_kafka_track_parts(t), 1);
    cur = add(t, 4);
    assert_int_equal(done(cur), 5);
    assert_int_equal(done(old), -1);
    nf_kafka_track_free(t);
}

/* Offsets that go back (a reset) must never let a store pass the older open ones. */
static void test_track_rewind(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *e5, *e6, *e3;

    e5 = add(t, 5);
    e6 = add(t, 6);
    e3 = add(t, 3);
    assert_int_equal(nf_kafka_track_open(t, "a", 0), 1);
    assert_int_equal(done(e6), -1);
    assert_int_equal(done(e5), -1);
    assert_int_equal(done(e3), 4);
    nf_kafka_track_free(t);
}

/* A dropped message must not be skipped: its partition stores nothing afterwards. */
static void test_track_drop(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *e0, *e1, *e2;

    nf_kafka_track_assign(t, "a", 0);
    e0 = add(t, 0);
    e1 = add(t, 1);
    e2 = add(t, 2);
    assert_int_equal(done(e1), -1);
    nf_kafka_track_drop(e0);
    assert_int_equal(nf_kafka_track_parts(t), 0);
    assert_int_equal(done(e2), -1);
    nf_kafka_track_free(t);
}

/* Open entries outlive the tracker (ASan checks nothing leaks or is touched twice). */
static void test_track_free_with_open(void **state)
{
    struct nf_kafka_track *t = nf_kafka_track_new();
    struct nf_kafka_track_entry *a, *b, *c;

    a = add(t, 0);
    b = add(t, 1);
    c = nf_kafka_track_add(t, "b", 3, 0);
    assert_int_equal(done(b), -1);
    nf_kafka_track_free(t);
    assert_int_equal(done(a), -1);
    nf_kafka_track_drop(c);
    nf_kafka_track_free(NULL);
}

/* ---- producer ---- */

struct dr_seen {
    int calls;
    int err;
    char errstr[128];
};

static void on_dr(int err, const char *errstr, void *arg)
{
    struct dr_seen *s = arg;

    s->calls++;
    s->err = err;
    snprintf(s->errstr, sizeof(s->errstr), "%s", errstr ? errstr : "(null)");
}

/* nf_kafka_producer_new fails, says why (err contains want) and leaves *out untouched. */
static void producer_refused(struct event_base *base, const char *brokers, const char *const *extra,
                             const char *want)
{
    struct nf_kafka_producer *p = (struct nf_kafka_producer *)0x1;
    char err[256];

    err[0] = '\0';
    assert_int_equal(nf_kafka_producer_new(&p, base, brokers, "t", extra, err, sizeof(err)), -1);
    assert_non_null(strstr(err, want));
    assert_ptr_equal(p, (struct nf_kafka_producer *)0x1);
}

static void test_producer_bad_config(void **state)
{
    struct event_base *base = event_base_new();
    const char *unknown[] = {"no.such.property", "1", NULL};
    const char *bad_value[] = {"linger.ms", "banana", NULL};
    const char *conflict[] = {"acks", "1", NULL}; /* idempotence needs acks=all */
    const char *odd[] = {"linger.ms", NULL};

    producer_refused(base, DEAD_BROKER, unknown, "no.such.property");
    producer_refused(base, DEAD_BROKER, bad_value, "linger.ms");
    producer_refused(base, DEAD_BROKER, conflict, "acks");
    producer_refused(base, DEAD_BROKER, odd, "value missing");
    producer_refused(base, "", NULL, "brokers");
    nf_kafka_producer_free(NULL, 0);
    event_base_free(base);
}

/* Nothing can be delivered: free with a short timeout fails each message exactly once. */
static void test_producer_unreachable_free_fails_once(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_kafka_producer *p = NULL;
    struct dr_seen seen[5];
    char err[256];
    long long t0;

    memset(seen, 0, sizeof(seen));
    assert_int_equal(
        nf_kafka_producer_new(&p, base, DEAD_BROKER, "t-unreach", NULL, err, sizeof(err)), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(nf_kafka_produce(p, "nf.test", "k", "payload", 7, on_dr, &seen[i]), 0);
    assert_int_equal(nf_kafka_produce(p, "nf.test", NULL, NULL, 0, NULL, NULL), 0);
    assert_int_equal(nf_kafka_producer_outq(p), 6);

    nf_test_run_until(base, NULL, NULL, 300);
    assert_false(nf_kafka_producer_ready(p));
    for (int i = 0; i < 5; i++)
        assert_int_equal(seen[i].calls, 0); /* message.timeout.ms is 10 s */

    t0 = nf_test_now_ms();
    nf_kafka_producer_free(p, 200);
    assert_true(nf_test_now_ms() - t0 < 5000);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(seen[i].calls, 1);
        assert_true(seen[i].err < 0);
        assert_string_not_equal(seen[i].errstr, "(null)");
    }
    event_base_free(base);
}

static bool all_called(void *arg)
{
    struct dr_seen *seen = arg;

    for (int i = 0; i < 3; i++)
        if (seen[i].calls == 0)
            return false;
    return true;
}

/* The loop alone delivers failures: message.timeout.ms overridden through extra. */
static void test_producer_timeout_in_loop(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_kafka_producer *p = NULL;
    const char *extra[] = {"message.timeout.ms", "400", NULL};
    struct dr_seen seen[3];
    char err[256];

    memset(seen, 0, sizeof(seen));
    assert_int_equal(nf_kafka_producer_new(&p, base, DEAD_BROKER, NULL, extra, err, sizeof(err)),
                     0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(nf_kafka_produce(p, "nf.test", "k", "x", 1, on_dr, &seen[i]), 0);
    assert_true(nf_test_run_until(base, all_called, seen, 8000));
    nf_test_run_until(base, NULL, NULL, 200);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(seen[i].calls, 1);
        assert_int_equal(seen[i].err, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    }
    assert_int_equal(nf_kafka_producer_outq(p), 0);
    nf_kafka_producer_free(p, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(seen[i].calls, 1);
    event_base_free(base);
}

/* Errors librdkafka reports at once: returned, and the callback never fires. */
static void test_producer_local_errors(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_kafka_producer *p = NULL;
    const char *extra[] = {"queue.buffering.max.messages", "2", NULL};
    struct dr_seen seen[3];
    char err[256];

    memset(seen, 0, sizeof(seen));
    assert_int_equal(nf_kafka_producer_new(&p, base, DEAD_BROKER, "t", extra, err, sizeof(err)), 0);
    assert_int_equal(nf_kafka_produce(p, "nf.test", "k", "a", 1, on_dr, &seen[0]), 0);
    assert_int_equal(nf_kafka_produce(p, "nf.test", "k", "b", 1, on_dr, &seen[1]), 0);
    assert_int_equal(nf_kafka_produce(p, "nf.test", "k", "c", 1, on_dr, &seen[2]),
                     RD_KAFKA_RESP_ERR__QUEUE_FULL);
    assert_int_equal(nf_kafka_producer_outq(p), 2);
    nf_kafka_producer_free(p, 0);
    assert_int_equal(seen[0].calls, 1);
    assert_int_equal(seen[1].calls, 1);
    assert_int_equal(seen[2].calls, 0);
    event_base_free(base);
}

/* ---- consumer ---- */

static void on_msg_unused(struct nf_kafka_msg *msg, void *arg)
{
    int *calls = arg;

    (*calls)++;
    nf_kafka_msg_done(msg);
}

/* nf_kafka_consumer_new of "nf.test" fails with a message (containing want unless NULL)
 * and leaves *out untouched. */
static void consumer_refused(struct event_base *base, const char *group, size_t ntopics,
                             int max_inflight, const char *const *extra, nf_kafka_msg_cb cb,
                             const char *want)
{
    struct nf_kafka_consumer *c = (struct nf_kafka_consumer *)0x1;
    const char *topics[] = {"nf.test"};
    int calls = 0;
    char err[256];

    err[0] = '\0';
    assert_int_equal(nf_kafka_consumer_new(&c, base, DEAD_BROKER, group, topics, ntopics,
                                           max_inflight, extra, cb, &calls, err, sizeof(err)),
                     -1);
    assert_true(err[0] != '\0');
    if (want != NULL)
        assert_non_null(strstr(err, want));
    assert_ptr_equal(c, (struct nf_kafka_consumer *)0x1);
    assert_int_equal(calls, 0);
}

static void test_consumer_bad_args(void **state)
{
    struct event_base *base = event_base_new();
    const char *unknown[] = {"no.such.property", "1", NULL};

    consumer_refused(base, "g", 1, 0, NULL, on_msg_unused, "max_inflight");
    consumer_refused(base, "g", 0, 4, NULL, on_msg_unused, NULL);
    consumer_refused(base, "", 1, 4, NULL, on_msg_unused, NULL);
    consumer_refused(base, "g", 1, 4, NULL, NULL, NULL);
    consumer_refused(base, "g", 1, 4, unknown, on_msg_unused, "no.such.property");
    nf_kafka_consumer_free(NULL);
    event_base_free(base);
}

/* A consumer that never reaches a broker is not ready and shuts down promptly. */
static void test_consumer_unreachable(void **state)
{
    struct event_base *base = event_base_new();
    struct nf_kafka_consumer *c = NULL;
    const char *topics[] = {"nf.test", "nf.test2"};
    int calls = 0;
    char err[256];
    long long t0;

    assert_int_equal(nf_kafka_consumer_new(&c, base, DEAD_BROKER, "g-unreach", topics, 2, 4, NULL,
                                           on_msg_unused, &calls, err, sizeof(err)),
                     0);
    nf_test_run_until(base, NULL, NULL, 500);
    assert_false(nf_kafka_consumer_ready(c));
    assert_int_equal(nf_kafka_consumer_inflight(c), 0);
    assert_int_equal(calls, 0);
    t0 = nf_test_now_ms();
    nf_kafka_consumer_free(c);
    assert_true(nf_test_now_ms() - t0 < 5000);
    event_base_free(base);
}

/* ---- admin ---- */

static void test_create_topics_unreachable(void **state)
{
    const char *topics[] = {"nf.a", "nf.b"};
    char err[256];
    long long t0 = nf_test_now_ms();

    err[0] = '\0';
    assert_int_equal(nf_kafka_create_topics(DEAD_BROKER, topics, 2, 1, 1, 500, err, sizeof(err)),
                     -1);
    assert_true(err[0] != '\0');
    assert_true(nf_test_now_ms() - t0 < 6000);
}

/* nf_kafka_create_topics of "nf.a" fails at once with a message (containing want). */
static void create_refused(const char *brokers, int partitions, int replication, const char *want)
{
    const char *topics[] = {"nf.a"};
    char err[256];

    err[0] = '\0';
    assert_int_equal(
        nf_kafka_create_topics(brokers, topics, 1, partitions, replication, 500, err, sizeof(err)),
        -1);
    assert_true(err[0] != '\0');
    assert_non_null(strstr(err, want));
}

static void test_create_topics_bad_args(void **state)
{
    const char *topics[] = {"nf.a"};
    char err[256];

    create_refused(DEAD_BROKER, 0, 1, "partitions");
    create_refused(DEAD_BROKER, 1, 0, "replication");
    create_refused(NULL, 1, 1, "brokers");
    assert_int_equal(nf_kafka_create_topics(DEAD_BROKER, topics, 0, 1, 1, 500, err, sizeof(err)),
                     0);
}

static void test_forge_topics(void **state)
{
    const char *want[] = {"forge.jobs.requested", "forge.jobs.generate", "forge.jobs.audit",
                          "forge.jobs.distill",   "forge.jobs.train",    "forge.jobs.evaluate",
                          "forge.jobs.deploy",    "forge.jobs.events",   "forge.jobs.dlq",
                          "forge.usage",          "forge.usage.dlq",     "forge.workers.events",
                          "forge.audit",          "forge.billing.costs"};
    size_t n = 0;

    while (nf_kafka_forge_topics[n] != NULL)
        n++;
    assert_int_equal(n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < n; i++)
        assert_string_equal(nf_kafka_forge_topics[i], want[i]);
}

int main(void)
{
    return NF_TEST_RUN_GROUP(
        setup_log, NULL, test_track_in_order, test_track_out_of_order, test_track_gaps,
        test_track_partitions_independent, test_track_revoke_and_reassign, test_track_assign_twice,
        test_track_rewind, test_track_drop, test_track_free_with_open, test_producer_bad_config,
        test_producer_unreachable_free_fails_once, test_producer_timeout_in_loop,
        test_producer_local_errors, test_consumer_bad_args, test_consumer_unreachable,
        test_create_topics_unreachable, test_create_topics_bad_args, test_forge_topics);
}
