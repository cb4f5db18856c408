/*
 * nf_kafka against a real broker (NF_TEST_KAFKA_BROKERS, e.g. 127.0.0.1:19092; skipped
 * when unset). Every run uses fresh topic and group names, so runs never see each other's
 * messages or offsets.
 *
 *   create topics twice, and a failing creation (replication above the broker count)
 *   produce N with delivery reports, consume them in a fresh group, nothing left after
 *   done out of order: a new member of the group gets exactly the offsets from the first
 *     one not done (contiguous store), and nothing once all are done
 *   max_inflight: the consumer stops at the limit and goes on after nf_kafka_msg_done,
 *     without losing, repeating or reordering messages
 *   a second member joins while the first holds messages: the revoked ones may still be
 *     done (storing nothing), each partition ends with one member, nothing is lost
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_test.h"

#define WAIT_MS 30000

struct it {
    const char *brokers;
    char prefix[64]; /* unique per run */
    struct event_base *base;
};

static int setup(void **state)
{
    static struct it it;
    const char *lvl = getenv("NF_TEST_LOG_LEVEL");
    enum nf_log_level level = NF_LOG_WARN;

    if (lvl != NULL)
        nf_log_level_parse(lvl, &level);
    nf_log_init("test", level);
    it.brokers = getenv("NF_TEST_KAFKA_BROKERS");
    snprintf(it.prefix, sizeof(it.prefix), "nf-it-%d-%lld", (int)getpid(), (long long)time(NULL));
    it.base = event_base_new();
    *state = &it;
    return 0;
}

static int teardown(void **state)
{
    struct it *it = *state;

    event_base_free(it->base);
    return 0;
}

static struct it *need_broker(void **state)
{
    struct it *it = *state;

    if (it->brokers == NULL || it->brokers[0] == '\0')
        skip();
    return it;
}

static void name(char *out, size_t len, const struct it *it, const char *what)
{
    snprintf(out, len, "%s.%s", it->prefix, what);
}

/* ---- producing ---- */

struct sent {
    int calls;
    int err;
};

static void on_dr(int err, const char *errstr, void *arg)
{
    struct sent *s = arg;

    s->calls++;
    s->err = err;
}

static bool producer_ready(void *arg)
{
    return nf_kafka_producer_ready(arg);
}

struct dr_wait {
    struct sent *sent;
    int n;
};

static bool all_reported(void *arg)
{
    struct dr_wait *w = arg;

    for (int i = 0; i < w->n; i++)
        if (w->sent[i].calls == 0)
            return false;
    return true;
}

/* Produces n messages "m<i>" with key "k<i>" and checks every delivery report. */
static void produce_n(struct it *it, const char *topic, int n)
{
    struct nf_kafka_producer *p = NULL;
    struct sent *sent = calloc((size_t)n, sizeof(*sent));
    struct dr_wait w = {sent, n};
    char err[256], key[32], payload[32];

    assert_non_null(sent);
    assert_int_equal(
        nf_kafka_producer_new(&p, it->base, it->brokers, "nf-it-producer", NULL, err, sizeof(err)),
        0);
    assert_true(nf_test_run_until(it->base, producer_ready, p, WAIT_MS));
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(payload, sizeof(payload), "m%d", i);
        assert_int_equal(nf_kafka_produce(p, topic, key, payload, strlen(payload), on_dr, &sent[i]),
                         0);
    }
    assert_true(nf_test_run_until(it->base, all_reported, &w, WAIT_MS));
    nf_test_run_for(it->base, 100);
    for (int i = 0; i < n; i++) {
        assert_int_equal(sent[i].calls, 1);
        assert_int_equal(sent[i].err, 0);
    }
    assert_int_equal(nf_kafka_producer_outq(p), 0);
    assert_true(nf_kafka_producer_ready(p));
    nf_kafka_producer_free(p, 1000);
    for (int i = 0; i < n; i++)
        assert_int_equal(sent[i].calls, 1);
    free(sent);
}

static void create(struct it *it, const char *topic, int partitions)
{
    char err[256];

    err[0] = '\0';
    if (nf_kafka_create_topics(it->brokers, &topic, 1, partitions, 1, 10000, err, sizeof(err)) != 0)
        fail_msg("create %s: %s", topic, err);
}

/* A fresh topic "<prefix>.<what>" with n messages in it, and a fresh group name for it. */
static void topic_with_messages(struct it *it, const char *what, int partitions, int n,
                                char topic[128], char group[128])
{
    char g[64];

    snprintf(g, sizeof(g), "%s.g", what);
    name(topic, 128, it, what);
    name(group, 128, it, g);
    create(it, topic, partitions);
    produce_n(it, topic, n);
}

/* ---- consuming ---- */

#define MAXMSG 256
#define MAXPART 8

struct rx {
    struct nf_kafka_consumer *c;
    int max_inflight;
    bool auto_done; /* done inside the callback */
    int received;
    int copies[MAXMSG];                /* per message number, from the payload "m<i>" */
    struct nf_kafka_msg *held[MAXMSG]; /* not done yet, by message number */
    int64_t offset_of[MAXMSG];
    int64_t last_offset[MAXPART];
    bool bad; /* a malformed message, reordering or overflow */
    int want;
};

static void rx_init(struct rx *rx, int max_inflight, bool auto_done)
{
    memset(rx, 0, sizeof(*rx));
    rx->max_inflight = max_inflight;
    rx->auto_done = auto_done;
    for (int i = 0; i < MAXPART; i++)
        rx->last_offset[i] = -1;
}

static void on_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct rx *rx = arg;
    char want_key[32];
    int i;

    rx->received++;
    if (sscanf(msg->payload, "m%d", &i) != 1 || i < 0 || i >= MAXMSG ||
        msg->len != strlen(msg->payload) || msg->partition < 0 || msg->partition >= MAXPART) {
        rx->bad = true;
        nf_kafka_msg_done(msg);
        return;
    }
    snprintf(want_key, sizeof(want_key), "k%d", i);
    if (strcmp(msg->key, want_key) != 0 || msg->offset <= rx->last_offset[msg->partition] ||
        nf_kafka_consumer_inflight(rx->c) > (size_t)rx->max_inflight)
        rx->bad = true;
    rx->last_offset[msg->partition] = msg->offset;
    rx->copies[i]++;
    rx->offset_of[i] = msg->offset;
    if (rx->auto_done) {
        nf_kafka_msg_done(msg);
    } else {
        if (rx->held[i] != NULL)
            rx->bad = true;
        rx->held[i] = msg;
    }
}

static bool rx_has_want(void *arg)
{
    struct rx *rx = arg;

    return rx->received >= rx->want;
}

static bool consumer_ready(void *arg)
{
    struct rx *rx = arg;

    return nf_kafka_consumer_ready(rx->c);
}

/* rx_init, then a consumer of topic in group into rx that waits for want messages. */
static void consumer_start(struct it *it, struct rx *rx, const char *group, const char *topic,
                           int max_inflight, bool auto_done, int want)
{
    char err[256];

    rx_init(rx, max_inflight, auto_done);
    rx->want = want;
    err[0] = '\0';
    if (nf_kafka_consumer_new(&rx->c, it->base, it->brokers, group, &topic, 1, rx->max_inflight,
                              NULL, on_msg, rx, err, sizeof(err)) != 0)
        fail_msg("consumer: %s", err);
}

/* Done with every message rx holds. */
static void rx_done_held(struct rx *rx)
{
    for (int i = 0; i < MAXMSG; i++) {
        if (rx->held[i] != NULL) {
            nf_kafka_msg_done(rx->held[i]);
            rx->held[i] = NULL;
        }
    }
}

/* Everything in topic was done in group: a new member of the group gets nothing. */
static void assert_group_done(struct it *it, const char *group, const char *topic)
{
    struct rx rx;

    consumer_start(it, &rx, group, topic, 100, true, 0);
    assert_true(nf_test_run_until(it->base, consumer_ready, &rx, WAIT_MS));
    nf_test_run_for(it->base, 2000);
    assert_int_equal(rx.received, 0);
    nf_kafka_consumer_free(rx.c);
}

/* ---- tests ---- */

static void test_create_topics(void **state)
{
    struct it *it = need_broker(state);
    char a[128], b[128], c[128], err[256];
    const char *topics[2] = {a, b};
    const char *bad[1] = {c};

    name(a, sizeof(a), it, "create.a");
    name(b, sizeof(b), it, "create.b");
    name(c, sizeof(c), it, "create.c");
    err[0] = '\0';
    assert_int_equal(nf_kafka_create_topics(it->brokers, topics, 2, 3, 1, 10000, err, sizeof(err)),
                     0);
    assert_int_equal(nf_kafka_create_topics(it->brokers, topics, 2, 3, 1, 10000, err, sizeof(err)),
                     0); /* exists: fine */
    err[0] = '\0';
    assert_int_equal(nf_kafka_create_topics(it->brokers, bad, 1, 1, 3, 10000, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, c));
}

static void test_produce_consume(void **state)
{
    struct it *it = need_broker(state);
    char topic[128], group[128];
    struct rx rx;
    const int n = 30;

    topic_with_messages(it, "pc", 3, n, topic, group);
    consumer_start(it, &rx, group, topic, 100, true, n);
    assert_true(nf_test_run_until(it->base, rx_has_want, &rx, WAIT_MS));
    nf_test_run_for(it->base, 500);
    assert_false(rx.bad);
    assert_int_equal(rx.received, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(rx.copies[i], 1);
    assert_true(nf_test_run_until(it->base, consumer_ready, &rx, WAIT_MS));
    assert_int_equal(nf_kafka_consumer_inflight(rx.c), 0);
    nf_kafka_consumer_free(rx.c);
    assert_group_done(it, group, topic);
}

static void test_redelivery_contiguous(void **state)
{
    struct it *it = need_broker(state);
    char topic[128], group[128];
    static const int done_order[] = {9, 4, 0, 2, 1, 7, 5}; /* 3, 6 and 8 stay open */
    struct rx rx;
    const int n = 10;

    topic_with_messages(it, "rd", 1, n, topic, group);
    consumer_start(it, &rx, group, topic, 100, false, n);
    assert_true(nf_test_run_until(it->base, rx_has_want, &rx, WAIT_MS));
    assert_false(rx.bad);
    for (int i = 0; i < n; i++)
        assert_int_equal(rx.offset_of[i], i); /* one partition, produced in order */
    assert_int_equal(nf_kafka_consumer_inflight(rx.c), n);
    for (size_t k = 0; k < sizeof(done_order) / sizeof(done_order[0]); k++) {
        nf_kafka_msg_done(rx.held[done_order[k]]);
        rx.held[done_order[k]] = NULL;
    }
    assert_int_equal(nf_kafka_consumer_inflight(rx.c), 3);
    nf_test_run_for(it->base, 200);
    nf_kafka_consumer_free(rx.c); /* 3, 6, 8 freed without storing */

    /* stored offset is 3: everything from the first open message comes again */
    consumer_start(it, &rx, group, topic, 100, true, 7);
    assert_true(nf_test_run_until(it->base, rx_has_want, &rx, WAIT_MS));
    nf_test_run_for(it->base, 1500);
    assert_false(rx.bad);
    assert_int_equal(rx.received, 7);
    for (int i = 0; i < n; i++)
        assert_int_equal(rx.copies[i], i >= 3 ? 1 : 0);
    nf_kafka_consumer_free(rx.c);
    assert_group_done(it, group, topic); /* now all are done */
}

static void test_max_inflight(void **state)
{
    struct it *it = need_broker(state);
    char topic[128], group[128];
    struct rx rx;
    const int n = 40, max = 3;
    int first = -1;

    topic_with_messages(it, "bp", 2, n, topic, group);
    consumer_start(it, &rx, group, topic, max, false, max);
    assert_true(nf_test_run_until(it->base, rx_has_want, &rx, WAIT_MS));
    nf_test_run_for(it->base, 1500);
    assert_false(rx.bad);
    assert_int_equal(rx.received, max); /* stopped at the limit */
    assert_int_equal(nf_kafka_consumer_inflight(rx.c), max);

    /* one done: room for one more */
    for (int i = 0; i < MAXMSG && first < 0; i++)
        if (rx.held[i] != NULL)
            first = i;
    nf_kafka_msg_done(rx.held[first]);
    rx.held[first] = NULL;
    assert_int_equal(nf_kafka_consumer_inflight(rx.c), max - 1);
    rx.want = max + 1;
    assert_true(nf_test_run_until(it->base, rx_has_want, &rx, WAIT_MS));
    nf_test_run_for(it->base, 500);
    assert_int_equal(rx.received, max + 1);
    assert_int_equal(nf_kafka_consumer_inflight(rx.c), max);

    /* then keep finishing whatever is held until all n arrived */
    for (long long end = nf_test_now_ms() + WAIT_MS; rx.received < n && nf_test_now_ms() < end;) {
        rx_done_held(&rx);
        nf_test_run_for(it->base, 20);
    }
    nf_test_run_for(it->base, 500);
    rx_done_held(&rx);
    assert_false(rx.bad);
    assert_int_equal(rx.received, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(rx.copies[i], 1);
    assert_int_equal(nf_kafka_consumer_inflight(rx.c), 0);
    nf_kafka_consumer_free(rx.c);
}

/* ---- rebalance: two members, messages still held across the revocation ---- */

struct member {
    struct nf_kafka_consumer *c;
    int received;
    int copies[MAXMSG];
    int32_t partition_of[MAXMSG];
    struct nf_kafka_msg *held[4 * MAXMSG];
    int nheld;
};

static void on_member_msg(struct nf_kafka_msg *msg, void *arg)
{
    struct member *m = arg;
    int i;

    m->received++;
    if (sscanf(msg->payload, "m%d", &i) == 1 && i >= 0 && i < MAXMSG) {
        m->copies[i]++;
        m->partition_of[i] = msg->partition;
    }
    if (m->nheld < 4 * MAXMSG)
        m->held[m->nheld++] = msg;
    else
        nf_kafka_msg_done(msg);
}

static void member_done_all(struct member *m)
{
    for (int i = 0; i < m->nheld; i++)
        nf_kafka_msg_done(m->held[i]);
    m->nheld = 0;
}

struct pair {
    struct member *a, *b;
    int n;
};

/* Both members hold a copy of every message received after the rebalance. */
static bool pair_covers(void *arg)
{
    struct pair *pr = arg;

    if (!nf_kafka_consumer_ready(pr->b->c))
        return false;
    for (int i = 0; i < pr->n; i++)
        if (pr->a->copies[i] < 2 && pr->b->copies[i] < 1)
            return false;
    return true;
}

/* A consumer of topic in group into m, holding what it gets. */
static void member_start(struct it *it, struct member *m, const char *group, const char *topic)
{
    char err[256];

    assert_int_equal(nf_kafka_consumer_new(&m->c, it->base, it->brokers, group, &topic, 1, 1000,
                                           NULL, on_member_msg, m, err, sizeof(err)),
                     0);
}

static void test_rebalance_with_held(void **state)
{
    struct it *it = need_broker(state);
    char topic[128], group[128];
    struct member *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    struct pair pr = {a, b, 20};
    int b_total = 0;

    assert_true(a && b);
    topic_with_messages(it, "rb", 2, pr.n, topic, group);
    member_start(it, a, group, topic);
    for (long long end = nf_test_now_ms() + WAIT_MS; a->received < pr.n && nf_test_now_ms() < end;)
        nf_test_run_for(it->base, 20);
    assert_int_equal(a->received, pr.n);

    /* b joins: a loses a partition while holding all 20, gets the other one again from
     * the (empty) committed offset, and b gets its partition from the start */
    member_start(it, b, group, topic);
    assert_true(nf_test_run_until(it->base, pair_covers, &pr, WAIT_MS));
    nf_test_run_for(it->base, 1000);
    for (int i = 0; i < pr.n; i++) {
        b_total += b->copies[i];
        /* a partition belongs to one member after the rebalance */
        assert_false(a->copies[i] == 2 && b->copies[i] == 1);
    }
    assert_true(b_total > 0 && b_total < pr.n); /* two partitions, one each */

    /* old copies done after the revocation store nothing; the new ones do */
    member_done_all(a);
    member_done_all(b);
    assert_int_equal(nf_kafka_consumer_inflight(a->c), 0);
    nf_test_run_for(it->base, 200);
    nf_kafka_consumer_free(b->c);
    nf_kafka_consumer_free(a->c);
    assert_group_done(it, group, topic);
    free(a);
    free(b);
}

/* Messages held at shutdown are freed by nf_kafka_consumer_free (ASan checks). */
static void test_free_with_held(void **state)
{
    struct it *it = need_broker(state);
    char topic[128], group[128];
    struct rx rx;

    topic_with_messages(it, "held", 1, 5, topic, group);
    consumer_start(it, &rx, group, topic, 2, false, 2);
    assert_true(nf_test_run_until(it->base, rx_has_want, &rx, WAIT_MS));
    assert_int_equal(nf_kafka_consumer_inflight(rx.c), 2);
    nf_kafka_consumer_free(rx.c);
}

int main(void)
{
    return NF_TEST_RUN_GROUP(setup, teardown, test_create_topics, test_produce_consume,
                             test_redelivery_contiguous, test_max_inflight,
                             test_rebalance_with_held, test_free_with_held);
}
