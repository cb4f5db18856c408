/* Unit tests for nf_app: signals drive the shutdown state machine inside a real loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_app.h"
#include "nf_log.h"
#include "nf_test.h"

/* What the fake service saw; passed as ctx. */
struct svc {
    struct nf_app *app;
    int stops;          /* on_stop calls */
    int done_after_ms;  /* >= 0: call nf_app_stop_done this long after on_stop */
    struct event *done; /* that timer */
};

/* Log lines go to memory so tests can look for the shutdown events. */
static struct nf_test_log cap;

static int setup(void **state)
{
    nf_test_log_begin(&cap);
    unsetenv("NF_LOG_LEVEL");
    return 0;
}

static int teardown(void **state)
{
    nf_test_log_end(&cap);
    return 0;
}

static bool logged(const char *event)
{
    return nf_test_logged(&cap, event);
}

static void on_done_timer(evutil_socket_t fd, short what, void *arg)
{
    struct svc *s = arg;

    nf_app_stop_done(s->app);
}

static void on_stop(void *ctx)
{
    struct svc *s = ctx;
    struct timeval tv;

    s->stops++;
    if (s->done_after_ms == 0) {
        nf_app_stop_done(s->app);
    } else if (s->done_after_ms > 0) {
        tv.tv_sec = 0;
        tv.tv_usec = (suseconds_t)s->done_after_ms * 1000;
        s->done = evtimer_new(s->app->base, on_done_timer, s);
        evtimer_add(s->done, &tv);
    }
}

/* A one-shot timer that raises a signal from inside the loop. */
struct raise_at {
    int sig;
    struct event *ev;
};

static void on_raise(evutil_socket_t fd, short what, void *arg)
{
    struct raise_at *r = arg;

    raise(r->sig);
}

static void arm_raise(struct nf_app *app, struct raise_at *r, int sig, int after_ms)
{
    struct timeval tv = {after_ms / 1000, (suseconds_t)(after_ms % 1000) * 1000};

    r->sig = sig;
    r->ev = evtimer_new(app->base, on_raise, r);
    assert_non_null(r->ev);
    assert_int_equal(evtimer_add(r->ev, &tv), 0);
}

/* A safety net: fails the test instead of hanging if the loop never exits. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    fail_msg("event loop did not stop");
}

static struct event *arm_watchdog(struct nf_app *app)
{
    struct timeval tv = {5, 0};
    struct event *ev = evtimer_new(app->base, on_watchdog, NULL);

    evtimer_add(ev, &tv);
    return ev;
}

static void test_sigterm_then_stop_done(void **state)
{
    struct nf_app app;
    struct svc s = {.app = &app, .done_after_ms = 20};
    struct raise_at r;
    struct event *wd;
    long long t0;

    assert_int_equal(nf_app_init(&app, on_stop, &s, 3000), 0);
    arm_raise(&app, &r, SIGTERM, 10);
    wd = arm_watchdog(&app);
    t0 = nf_test_now_ms();
    assert_int_equal(nf_app_run(&app), 0);
    assert_int_equal(s.stops, 1);
    assert_true(nf_test_now_ms() - t0 < 2000); /* left through stop_done, long before the grace */
    assert_true(logged("shutdown_signal"));
    assert_false(logged("shutdown_grace_expired"));
    event_free(s.done);
    event_free(r.ev);
    event_free(wd);
    nf_app_free(&app);
}

static void test_sigint_grace_expires(void **state)
{
    struct nf_app app;
    struct svc s = {.app = &app, .done_after_ms = -1}; /* never finishes on its own */
    struct raise_at r;
    struct event *wd;
    long long t0, dt;

    assert_int_equal(nf_app_init(&app, on_stop, &s, 150), 0);
    arm_raise(&app, &r, SIGINT, 10);
    wd = arm_watchdog(&app);
    t0 = nf_test_now_ms();
    assert_int_equal(nf_app_run(&app), 0);
    dt = nf_test_now_ms() - t0;
    assert_int_equal(s.stops, 1);
    assert_true(dt >= 150 && dt < 2000);
    assert_true(logged("shutdown_grace_expired"));
    event_free(r.ev);
    event_free(wd);
    nf_app_free(&app);
}

static void test_second_signal_exits_at_once(void **state)
{
    struct nf_app app;
    struct svc s = {.app = &app, .done_after_ms = -1};
    struct raise_at r1, r2;
    struct event *wd;
    long long t0;

    assert_int_equal(nf_app_init(&app, on_stop, &s, 10000), 0);
    arm_raise(&app, &r1, SIGTERM, 10);
    arm_raise(&app, &r2, SIGINT, 40);
    wd = arm_watchdog(&app);
    t0 = nf_test_now_ms();
    assert_int_equal(nf_app_run(&app), 0);
    assert_int_equal(s.stops, 1); /* on_stop only for the first signal */
    assert_true(nf_test_now_ms() - t0 < 2000);
    assert_true(logged("shutdown_forced"));
    event_free(r1.ev);
    event_free(r2.ev);
    event_free(wd);
    nf_app_free(&app);
}

/* nf_app_stop acts like a signal, once; on_stop may finish synchronously. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct nf_app *app = arg;

    nf_app_stop(app);
    nf_app_stop(app);
}

static void test_stop_called_twice_sync_done(void **state)
{
    struct nf_app app;
    struct svc s = {.app = &app, .done_after_ms = 0};
    struct timeval tv = {0, 1000};
    struct event *kick, *wd;

    assert_int_equal(nf_app_init(&app, on_stop, &s, 10000), 0);
    kick = evtimer_new(app.base, on_kick, &app);
    evtimer_add(kick, &tv);
    wd = arm_watchdog(&app);
    assert_int_equal(nf_app_run(&app), 0);
    assert_int_equal(s.stops, 1);
    event_free(kick);
    event_free(wd);
    nf_app_free(&app);
}

/* A fatal error before the loop: stop + stop_done, then run returns at once. */
static void test_stop_before_run(void **state)
{
    struct nf_app app;
    struct svc s = {.app = &app, .done_after_ms = 0};

    assert_int_equal(nf_app_init(&app, on_stop, &s, 10000), 0);
    nf_app_stop(&app);
    assert_int_equal(s.stops, 1);
    assert_int_equal(nf_app_run(&app), 0); /* would hang on the signal events otherwise */
    nf_app_free(&app);
}

static void test_sigpipe_ignored(void **state)
{
    struct nf_app app;
    struct sigaction sa;

    assert_int_equal(nf_app_init(&app, NULL, NULL, 100), 0);
    assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
    assert_ptr_equal(sa.sa_handler, SIG_IGN);
    assert_int_equal(raise(SIGPIPE), 0); /* still alive */
    nf_app_free(&app);
    nf_app_free(NULL);
}

int main(void)
{
    return NF_TEST_RUN(setup, teardown, test_sigterm_then_stop_done, test_sigint_grace_expires,
                       test_second_signal_exits_at_once, test_stop_called_twice_sync_done,
                       test_stop_before_run, test_sigpipe_ignored);
}
