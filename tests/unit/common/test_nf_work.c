/*
 * nf_work: lanes keep one key's items in order, retries come back after a backoff, delays
 * fire, stopping abandons what is not in flight, closing marks nothing done, and a done
 * hook replaces the default marking. Runs on a bare event_base with no backends (no Kafka
 * message is attached, so finish frees without marking).
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
#include "nf_test.h"
#include "nf_work.h"

/* A test item: counts how often its step ran. */
struct titem {
    struct nf_work w;
    int runs;
    int fail_first; /* retries this many times before succeeding */
    bool dtor_ran;
    int *order; /* shared log of who ran, in order */
    int *norder;
    int tag;
};

struct fixture {
    struct event_base *base;
    struct nf_metrics *metrics;
    struct nf_work_queue q;
    bool stopping, closing;
    int dtors, done_hooks;
};

static struct fixture *fx;

static int setup(void **state)
{
    fx = calloc(1, sizeof(*fx));
    fx->base = event_base_new();
    nf_work_queue_init(&fx->q, fx->base, NULL, &fx->stopping, &fx->closing, fx);
    assert_int_equal(nf_metrics_new(&fx->metrics), 0);
    fx->q.retries = nf_metrics_counter(fx->metrics, "retries", "r", NULL);
    fx->q.inflight = nf_metrics_gauge(fx->metrics, "inflight", "i", NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    nf_work_free_all(&fx->q);
    nf_metrics_free(fx->metrics);
    event_base_free(fx->base);
    free(fx);
    return 0;
}

static void tdtor(struct nf_work *w)
{
    ((struct titem *)w)->dtor_ran = true;
    fx->dtors++;
}

/* Records the run; stays busy (as if waiting on a backend) until the test completes it. */
static void step_hold(struct nf_work *w)
{
    struct titem *t = (struct titem *)w;

    w->what = "hold";
    t->runs++;
    if (t->order)
        t->order[(*t->norder)++] = t->tag;
}

static void step_retry_then_finish(struct nf_work *w)
{
    struct titem *t = (struct titem *)w;

    w->what = "flaky";
    t->runs++;
    if (t->runs <= t->fail_first) {
        nf_work_retry(w, "test failure");
        return;
    }
    nf_work_finish(w);
}

static struct titem *item(int tag, int *order, int *norder)
{
    struct titem *t = (struct titem *)nf_work_new(&fx->q, NULL, sizeof(*t));

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

    nf_work_start(&a->w, "job_A", step_hold);
    nf_work_start(&b->w, "job_A", step_hold);
    nf_work_start(&other->w, "job_B", step_hold);
    nf_work_start(&c->w, "job_A", step_hold);
    /* a and the other key run at once; b and c wait behind a */
    assert_int_equal(a->runs, 1);
    assert_int_equal(other->runs, 1);
    assert_int_equal(b->runs, 0);
    assert_int_equal(c->runs, 0);
    assert_int_equal(nf_work_busy(&fx->q), 2);
    assert_int_equal(fx->q.nworks, 4);

    nf_work_finish(&a->w);
    assert_int_equal(fx->dtors, 1);
    assert_int_equal(b->runs, 0); /* started from the loop, not inside finish */
    run_for(50);
    assert_int_equal(b->runs, 1);
    assert_int_equal(c->runs, 0);
    /* b leaves the lane early (e.g. a delayed re-dispatch) and c may go */
    nf_work_release_lane(&b->w);
    run_for(50);
    assert_int_equal(c->runs, 1);
    assert_int_equal(n, 4);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 4);
    assert_int_equal(order[2], 2);
    assert_int_equal(order[3], 3);
    nf_work_finish(&b->w);
    nf_work_finish(&c->w);
    nf_work_finish(&other->w);
    assert_null(fx->q.lanes); /* empty lanes are gone */
    assert_true(LIST_EMPTY(&fx->q.works));
    assert_int_equal(fx->dtors, 4);
}

static void test_retry_backoff(void **state)
{
    struct titem *t = item(1, NULL, NULL);

    t->fail_first = 2;
    nf_work_start(&t->w, NULL, step_retry_then_finish);
    assert_int_equal(t->runs, 1);
    assert_int_equal(nf_work_busy(&fx->q), 0); /* waiting in a backoff is not busy */
    run_for(50);
    assert_int_equal(t->runs, 1); /* first backoff is 100 ms */
    run_for(100);
    assert_int_equal(t->runs, 2);
    run_for(250);                          /* second backoff 200 ms */
    assert_true(LIST_EMPTY(&fx->q.works)); /* third run finished it */
    assert_int_equal(fx->dtors, 1);
}

static void test_delay(void **state)
{
    struct titem *t = item(1, NULL, NULL);

    nf_work_start(&t->w, NULL, step_hold);
    nf_work_delay(&t->w, 120, step_retry_then_finish);
    run_for(60);
    assert_int_equal(t->runs, 1);
    run_for(120);
    assert_true(LIST_EMPTY(&fx->q.works));
}

static void test_stopping_abandons(void **state)
{
    struct titem *a = item(1, NULL, NULL), *b = item(2, NULL, NULL), *c = item(3, NULL, NULL);

    nf_work_start(&a->w, "k", step_hold);
    nf_work_start(&b->w, "k", step_hold);
    c->fail_first = 5;
    nf_work_start(&c->w, NULL, step_retry_then_finish);
    fx->stopping = true;
    nf_work_finish(&a->w); /* b is not started any more */
    run_for(300);
    assert_int_equal(b->runs, 0);
    assert_int_equal(c->runs, 1); /* its backoff was abandoned */
    assert_int_equal(nf_work_busy(&fx->q), 0);
    assert_int_equal(fx->q.nworks, 2);
    /* a retry while stopping does not arm a timer either */
    nf_work_retry(&c->w, "again");
    run_for(150);
    assert_int_equal(c->runs, 1);
    /* teardown frees what is left, lanes included (ASan checks the leaks) */
    nf_work_free_all(&fx->q);
    assert_true(LIST_EMPTY(&fx->q.works));
    assert_null(fx->q.lanes);
    assert_int_equal(fx->dtors, 3);
}

static void test_free_waiting_member(void **state)
{
    struct titem *a = item(1, NULL, NULL), *b = item(2, NULL, NULL), *c = item(3, NULL, NULL);

    nf_work_start(&a->w, "k", step_hold);
    nf_work_start(&b->w, "k", step_hold);
    nf_work_start(&c->w, "k", step_hold);
    nf_work_free(&b->w); /* from the middle of the lane */
    nf_work_finish(&a->w);
    run_for(50);
    assert_int_equal(c->runs, 1);
    nf_work_free(&c->w);
    assert_null(fx->q.lanes);
}

static void count_done(struct nf_work *w)
{
    fx->done_hooks++;
}

static void test_done_hook_and_closing(void **state)
{
    struct titem *a = item(1, NULL, NULL), *b = item(2, NULL, NULL);

    assert_ptr_equal(a->w.ctx, fx); /* the queue's context is every item's */
    a->w.done = count_done;
    b->w.done = count_done;
    nf_work_start(&a->w, NULL, step_hold);
    nf_work_finish(&a->w);
    assert_int_equal(fx->done_hooks, 1);
    /* teardown: a closing service marks nothing done, runs no stage, retries nothing */
    fx->closing = true;
    nf_work_goto(&b->w, step_hold);
    assert_int_equal(b->runs, 0);
    assert_int_equal(nf_work_busy(&fx->q), 0);
    nf_work_retry(&b->w, "late failure");
    run_for(150);
    assert_int_equal(b->runs, 0);
    nf_work_finish(&b->w);
    assert_int_equal(fx->done_hooks, 1);
    assert_int_equal(fx->dtors, 2);
}

int main(void)
{
    return NF_TEST_RUN(setup, teardown, test_lane_orders_same_key, test_retry_backoff, test_delay,
                       test_stopping_abandons, test_free_waiting_member,
                       test_done_hook_and_closing);
}
