/*
 * nf_kafka consumer group membership against a real broker (NF_TEST_KAFKA_BROKERS; skipped
 * when unset): static membership (group.instance.id, KIP-345) and what readiness says.
 * Fresh topic, group and instance names per run.
 *
 *   a static member SIGKILLed in a child process and started again with the same id holds
 *     every partition again at once, although its session timeout is 30 s
 *   readiness: "joining" before the first assignment; a member that the group gave no
 *     partition (more members than partitions) is a ready standby
 *   two live members with one id: the broker fences the older, whose readiness says
 *     "fatal error", and the newer one works
 *   a member holding a message it cannot finish says "no progress" once the stall time
 *     passes, and is ready again when the message is done
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <event2/event.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_test.h"

#define WAIT_MS 30000
#define LONG_SESSION_MS "30000" /* a dynamic member's restart would wait this long */

struct it {
    const char *brokers;
    struct event_base *base;
};

static struct it it_state;

static int setup(void **state)
{
    nf_log_init("test", NF_LOG_WARN);
    it_state.brokers = nf_test_env("NF_TEST_KAFKA_BROKERS");
    if (it_state.brokers == NULL) {
        *state = NULL;
        return 0;
    }
    it_state.base = event_base_new();
    *state = &it_state;
    return 0;
}

static int teardown(void **state)
{
    if (it_state.base != NULL)
        event_base_free(it_state.base);
    it_state.base = NULL;
    return 0;
}

static void on_msg(struct nf_kafka_msg *msg, void *arg)
{
    nf_kafka_msg_done(msg);
}

/* A topic of nparts partitions, its name unique to this run. */
static void topic_new(const struct it *it, char *out, size_t len, int nparts)
{
    const char *topics[1] = {out};
    char err[256] = "";

    nf_test_unique_name(out, len, "nf-it-group-");
    assert_int_equal(
        nf_kafka_create_topics(it->brokers, topics, 1, nparts, 1, 10000, err, sizeof(err)), 0);
}

/* A consumer of topic in group; instance NULL: dynamic membership. */
static struct nf_kafka_consumer *member(struct event_base *base, const char *brokers,
                                        const char *group, const char *topic, const char *instance,
                                        const char *session_ms)
{
    const char *extra[] = {"session.timeout.ms", session_ms, "group.instance.id", instance, NULL};
    struct nf_kafka_consumer *c = NULL;
    char err[256] = "";

    if (instance == NULL)
        extra[2] = NULL;
    if (nf_kafka_consumer_new(&c, base, brokers, group, &topic, 1, 16, extra, on_msg, NULL, err,
                              sizeof(err)) != 0)
        fail_msg("consumer: %s", err);
    return c;
}

struct pair {
    struct nf_kafka_consumer *a, *b;
    int nparts;
};

static bool holds(void *arg)
{
    const struct pair *p = arg;

    return nf_kafka_consumer_ready(p->a) && nf_kafka_consumer_partitions(p->a) == p->nparts;
}

static bool both_ready(void *arg)
{
    const struct pair *p = arg;

    return nf_kafka_consumer_ready(p->a) && nf_kafka_consumer_ready(p->b) &&
           nf_kafka_consumer_partitions(p->a) + nf_kafka_consumer_partitions(p->b) == p->nparts;
}

static bool a_fenced_b_ready(void *arg)
{
    const struct pair *p = arg;
    const char *why = nf_kafka_consumer_unready(p->a);

    return why != NULL && strcmp(why, "fatal error") == 0 && nf_kafka_consumer_ready(p->b);
}

/* The child: joins as instance, says so on fd, then consumes until it is killed. */
static void child_member(const char *brokers, const char *group, const char *topic,
                         const char *instance, int fd)
{
    struct event_base *base = event_base_new();
    struct pair p = {member(base, brokers, group, topic, instance, LONG_SESSION_MS), NULL, 3};

    if (!nf_test_run_until(base, holds, &p, WAIT_MS) || write(fd, "r", 1) != 1)
        _exit(1);
    nf_test_run_for(base, 120000);
    _exit(0);
}

/* First in the list: the fork happens before this process has any librdkafka thread. */
static void test_static_member_restarted_after_sigkill_is_back_at_once(void **state)
{
    struct it *it = nf_test_need(state);
    char topic[128], group[128], instance[128], r;
    struct pollfd pfd;
    struct pair p = {NULL, NULL, 3};
    int fds[2], status;
    long long t0, took;
    pid_t pid;

    topic_new(it, topic, sizeof(topic), 3);
    nf_test_unique_name(group, sizeof(group), "nf-it-group-g-");
    nf_test_unique_name(instance, sizeof(instance), "nf-it-group-i-");
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        child_member(it->brokers, group, topic, instance, fds[1]);
    }
    close(fds[1]);
    pfd = (struct pollfd){.fd = fds[0], .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
    assert_int_equal(read(fds[0], &r, 1), 1);
    close(fds[0]);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);

    t0 = nf_test_now_ms();
    p.a = member(it->base, it->brokers, group, topic, instance, LONG_SESSION_MS);
    assert_true(nf_test_run_until(it->base, holds, &p, WAIT_MS));
    took = nf_test_now_ms() - t0;
    print_message("static member back with all partitions %lld ms after its restart\n", took);
    assert_true(took < 10000); /* the session timeout is 30 s */
    nf_kafka_consumer_free(p.a);
}

static void test_joining_then_standby_is_ready(void **state)
{
    struct it *it = nf_test_need(state);
    char topic[128], group[128], ia[128], ib[128];
    struct pair p = {NULL, NULL, 1};

    topic_new(it, topic, sizeof(topic), 1);
    nf_test_unique_name(group, sizeof(group), "nf-it-group-g-");
    nf_test_unique_name(ia, sizeof(ia), "nf-it-group-a-");
    nf_test_unique_name(ib, sizeof(ib), "nf-it-group-b-");
    p.a = member(it->base, it->brokers, group, topic, ia, "6000");
    assert_string_equal(nf_kafka_consumer_unready(p.a), "no partitions yet (joining the group)");
    assert_false(nf_kafka_consumer_ready(p.a));
    assert_int_equal(nf_kafka_consumer_partitions(p.a), 0);
    assert_true(nf_test_run_until(it->base, holds, &p, WAIT_MS));

    /* one partition, two members: one of them holds it, the other stands by, ready */
    p.b = member(it->base, it->brokers, group, topic, ib, "6000");
    assert_true(nf_test_run_until(it->base, both_ready, &p, WAIT_MS));
    assert_int_equal(nf_kafka_consumer_partitions(p.a) * nf_kafka_consumer_partitions(p.b), 0);
    nf_kafka_consumer_free(p.b);
    nf_kafka_consumer_free(p.a);
}

static void test_duplicate_instance_is_fenced(void **state)
{
    struct it *it = nf_test_need(state);
    char topic[128], group[128], instance[128];
    struct pair p = {NULL, NULL, 3};

    topic_new(it, topic, sizeof(topic), 3);
    nf_test_unique_name(group, sizeof(group), "nf-it-group-g-");
    nf_test_unique_name(instance, sizeof(instance), "nf-it-group-i-");
    p.a = member(it->base, it->brokers, group, topic, instance, "6000");
    assert_true(nf_test_run_until(it->base, holds, &p, WAIT_MS));
    nf_test_log_quiet(); /* the fenced member logs its fatal error */
    p.b = member(it->base, it->brokers, group, topic, instance, "6000");
    assert_true(nf_test_run_until(it->base, a_fenced_b_ready, &p, WAIT_MS));
    assert_int_equal(nf_kafka_consumer_partitions(p.b), 3);
    nf_kafka_consumer_free(p.a);
    nf_kafka_consumer_free(p.b);
}

/* The stall test's consumer keeps what it is given. */
struct held {
    struct nf_kafka_consumer *c;
    struct nf_kafka_msg *msg;
};

static void keep_msg(struct nf_kafka_msg *msg, void *arg)
{
    ((struct held *)arg)->msg = msg;
}

static bool got_msg(void *arg)
{
    return ((struct held *)arg)->msg != NULL;
}

static bool stalled(void *arg)
{
    const char *why = nf_kafka_consumer_unready(((struct held *)arg)->c);
    return why != NULL && strncmp(why, "no progress", 11) == 0;
}

static bool producer_up(void *arg)
{
    return nf_kafka_producer_ready(arg);
}

static void test_stalled_member_says_no_progress(void **state)
{
    struct it *it = nf_test_need(state);
    char topic[128], group[128], err[256] = "";
    const char *t = topic;
    struct held h = {NULL, NULL};
    struct nf_kafka_producer *p = NULL;

    topic_new(it, topic, sizeof(topic), 1);
    nf_test_unique_name(group, sizeof(group), "nf-it-group-g-");
    if (nf_kafka_consumer_new(&h.c, it->base, it->brokers, group, &t, 1, 16, NULL, keep_msg, &h,
                              err, sizeof(err)) != 0)
        fail_msg("consumer: %s", err);
    nf_kafka_consumer_set_stall_ms(h.c, 1000);
    assert_int_equal(
        nf_kafka_producer_new(&p, it->base, it->brokers, "nf-it-stall", NULL, err, sizeof(err)), 0);
    assert_true(nf_test_run_until(it->base, producer_up, p, WAIT_MS));
    assert_int_equal(nf_kafka_produce(p, topic, "k", "m", 1, NULL, NULL), 0);
    assert_true(nf_test_run_until(it->base, got_msg, &h, WAIT_MS));
    assert_null(nf_kafka_consumer_unready(h.c)); /* in flight, within the stall time */
    assert_true(nf_test_run_until(it->base, stalled, &h, 5000));
    nf_kafka_msg_done(h.msg);
    assert_null(nf_kafka_consumer_unready(h.c));
    nf_kafka_producer_free(p, 1000);
    nf_kafka_consumer_free(h.c);
}

int main(void)
{
    return NF_TEST_RUN(setup, teardown, test_static_member_restarted_after_sigkill_is_back_at_once,
                       test_joining_then_standby_is_ready, test_duplicate_instance_is_fenced,
                       test_stalled_member_says_no_progress);
}
