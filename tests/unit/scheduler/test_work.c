/*
 * work.c: lanes keep one job's events in order, retries come back after a backoff,
 * delays fire, and stopping abandons what is not in flight. Runs on a bare event_base
 * with no backends (no Kafka message is attached, so finish frees without marking).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "nf_metrics.h"
#include "sched.h"

/* A test item: counts how often its step ran. */
struct titem {
    struct sched_work w;
    int runs;
    int fail_first; /* retries this many times before succeeding */
    bool dtor_ran;
    int *order; /* shared log of who ran, in order */
    int *norder;
    int tag;
};

struct fixture {
    struct event_base *base;
    struct sched_ctx ctx;
    int dtors;
};

static struct fixture *fx;

static int setup(void **state)
{
    fx = calloc(1, sizeof(*fx));
    fx->base = event_base_new();
    fx->ctx.base = fx->base;
    assert_int_equal(nf_metrics_new(&fx->ctx.metrics), 0);
    fx->ctx.m.step_retries = nf_metrics_counter(fx->ctx.metrics, "retries", "r", NULL);
    fx->ctx.m.inflight = nf_metrics_gauge(fx->ctx.metrics, "inflight", "i", NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    sched_work_free_all(&fx->ctx);
    nf_metrics_free(fx->ctx.metrics);
    event_base_free(fx->base);
    free(fx);
    return 0;
}

static void tdtor(struct sched_work *w)
{
    ((struct titem *)w)->dtor_ran = true;
    fx->dtors++;
}

/* Records the run; stays busy (as if waiting on a backend) until the test completes it. */
static void step_hold(struct sched_work *w)
{
    struct titem *t = (struct titem *)w;

    w->what = "hold";
    t->runs++;
    if (t->order)
        t->order[(*t->norder)++] = t->tag;
}

static void step_retry_then_finish(struct sched_work *w)
{
    struct titem *t = (struct titem *)w;

    w->what = "flaky";
    t->runs++;
    if (t->runs <= t->fail_first) {
        sched_work_retry(w, "test failure");
        return;
    }
    sched_work_finish(w);
}

static struct titem *item(int tag, int *order, int *norder)
{
    struct titem *t = (struct titem *)sched_work_new(&fx->ctx, NULL, sizeof(*t));

    t->w.dtor = tdtor;
    t->tag = tag;
    t->order = order;
    t->norder = norder;
    return t;
}

/* Runs the loop until nothing is pending or ms passed. */
static void run_for(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    event_base_loopexit(fx->base, &tv);
    event_base_dispatch(fx->base);
}

static void test_lane_orders_same_key(void **state)
{
    int order[8], n = 0;
    struct titem *a = item(1, order, &n), *b = item(2, order, &n), *c = item(3, order, &n);
    struct titem *other = item(4, order, &n);

    sched_work_start(&a->w, "job_A", step_hold);
    sched_work_start(&b->w, "job_A", step_hold);
    sched_work_start(&other->w, "job_B", step_hold);
    sched_work_start(&c->w, "job_A", step_hold);
    /* a and the other key run at once; b and c wait behind a */
    assert_int_equal(a->runs, 1);
    assert_int_equal(other->runs, 1);
    assert_int_equal(b->runs, 0);
    assert_int_equal(c->runs, 0);
    assert_int_equal(sched_work_busy(&fx->ctx), 2);
    assert_int_equal(fx->ctx.nworks, 4);

    sched_work_finish(&a->w);
    assert_int_equal(fx->dtors, 1);
    assert_int_equal(b->runs, 0); /* started from the loop, not inside finish */
    run_for(50);
    assert_int_equal(b->runs, 1);
    assert_int_equal(c->runs, 0);
    /* b leaves the lane early (e.g. a delayed re-dispatch) and c may go */
    sched_work_release_lane(&b->w);
    run_for(50);
    assert_int_equal(c->runs, 1);
    assert_int_equal(n, 4);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 4);
    assert_int_equal(order[2], 2);
    assert_int_equal(order[3], 3);
    sched_work_finish(&b->w);
    sched_work_finish(&c->w);
    sched_work_finish(&other->w);
    assert_null(fx->ctx.lanes); /* empty lanes are gone */
    assert_null(fx->ctx.works);
    assert_int_equal(fx->dtors, 4);
}

static void test_retry_backoff(void **state)
{
    struct titem *t = item(1, NULL, NULL);

    t->fail_first = 2;
    sched_work_start(&t->w, NULL, step_retry_then_finish);
    assert_int_equal(t->runs, 1);
    assert_int_equal(sched_work_busy(&fx->ctx), 0); /* waiting in a backoff is not busy */
    run_for(50);
    assert_int_equal(t->runs, 1); /* first backoff is 100 ms */
    run_for(100);
    assert_int_equal(t->runs, 2);
    run_for(250);               /* second backoff 200 ms */
    assert_null(fx->ctx.works); /* third run finished it */
    assert_int_equal(fx->dtors, 1);
}

static void test_delay(void **state)
{
    struct titem *t = item(1, NULL, NULL);

    sched_work_start(&t->w, NULL, step_hold);
    sched_work_delay(&t->w, 120, step_retry_then_finish);
    run_for(60);
    assert_int_equal(t->runs, 1);
    run_for(120);
    assert_null(fx->ctx.works);
}

static void test_stopping_abandons(void **state)
{
    struct titem *a = item(1, NULL, NULL), *b = item(2, NULL, NULL), *c = item(3, NULL, NULL);

    sched_work_start(&a->w, "k", step_hold);
    sched_work_start(&b->w, "k", step_hold);
    c->fail_first = 5;
    sched_work_start(&c->w, NULL, step_retry_then_finish);
    fx->ctx.stopping = true;
    sched_work_finish(&a->w); /* b is not started any more */
    run_for(300);
    assert_int_equal(b->runs, 0);
    assert_int_equal(c->runs, 1); /* its backoff was abandoned */
    assert_int_equal(sched_work_busy(&fx->ctx), 0);
    assert_int_equal(fx->ctx.nworks, 2);
    /* a retry while stopping does not arm a timer either */
    sched_work_retry(&c->w, "again");
    run_for(150);
    assert_int_equal(c->runs, 1);
    /* teardown frees what is left, lanes included (ASan checks the leaks) */
    sched_work_free_all(&fx->ctx);
    assert_null(fx->ctx.works);
    assert_null(fx->ctx.lanes);
    assert_int_equal(fx->dtors, 3);
}

static void test_free_waiting_member(void **state)
{
    struct titem *a = item(1, NULL, NULL), *b = item(2, NULL, NULL), *c = item(3, NULL, NULL);

    sched_work_start(&a->w, "k", step_hold);
    sched_work_start(&b->w, "k", step_hold);
    sched_work_start(&c->w, "k", step_hold);
    sched_work_free(&b->w); /* from the middle of the lane */
    sched_work_finish(&a->w);
    run_for(50);
    assert_int_equal(c->runs, 1);
    sched_work_free(&c->w);
    assert_null(fx->ctx.lanes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lane_orders_same_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopping_abandons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_waiting_member, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
