/*
 * cancel.c: reading the worker-manager's answer to POST /internal/jobs/{job_id}/cancel.
 * Anything but a 200 with a known state is "failed" (the reconciler asks again), never a
 * guess that could cancel a job someone is still running.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <string.h>

#include "nf_test.h"
#include "sched.h"

static enum sched_wm_cancel parse(int status, const char *body)
{
    return sched_wm_cancel_parse(status, body, body ? strlen(body) : 0);
}

static void test_states(void **state)
{
    assert_int_equal(parse(200, "{\"job_id\":\"j\",\"state\":\"dequeued\",\"worker_id\":null}"),
                     SCHED_WM_DEQUEUED);
    assert_int_equal(parse(200, "{\"state\":\"signalled\",\"worker_id\":\"wrk_1\"}"),
                     SCHED_WM_SIGNALLED);
    assert_int_equal(parse(200, "{\"state\":\"unknown\"}"), SCHED_WM_UNKNOWN);
}

static void test_anything_else_failed(void **state)
{
    assert_int_equal(parse(0, NULL), SCHED_WM_FAILED); /* no answer */
    assert_int_equal(parse(404, "{\"state\":\"dequeued\"}"), SCHED_WM_FAILED);
    assert_int_equal(parse(503, "{\"state\":\"unknown\"}"), SCHED_WM_FAILED);
    assert_int_equal(parse(200, ""), SCHED_WM_FAILED);
    assert_int_equal(parse(200, "not json"), SCHED_WM_FAILED);
    assert_int_equal(parse(200, "[\"dequeued\"]"), SCHED_WM_FAILED);
    assert_int_equal(parse(200, "{\"state\":\"DEQUEUED\"}"), SCHED_WM_FAILED);
    assert_int_equal(parse(200, "{\"state\":1}"), SCHED_WM_FAILED);
    assert_int_equal(parse(200, "{}"), SCHED_WM_FAILED);
    assert_int_equal(parse(200, NULL), SCHED_WM_FAILED);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_states, test_anything_else_failed);
}
