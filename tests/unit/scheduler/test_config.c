/* Unit tests for nf-scheduler's configuration and descriptor (service.c's rows + nf_svc's
 * shared ones): defaults, the shared NF_SCHEDULER_* names, refusals, topics and routes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdlib.h>
#include <string.h>

#include "nf_svc.h"
#include "nf_test.h"
#include "sched.h"

/* Every variable of the descriptor's tables unset. */
static int unset_all(void **state)
{
    struct nf_svc svc;
    char err[256];
    size_t i;

    nf_svc_load(&svc, &sched_service, err, sizeof(err)); /* builds the shared rows */
    for (i = 0; i < svc.nshared; i++)
        unsetenv(svc.shared_opts[i].env);
    nf_svc_free(&svc);
    for (i = 0; i < sched_service.nopts; i++)
        unsetenv(sched_service.opts[i].env);
    return 0;
}

static void test_defaults(void **state)
{
    struct nf_svc svc;
    const struct sched_config *cfg;
    char err[256] = "";

    assert_int_equal(nf_svc_load(&svc, &sched_service, err, sizeof(err)), 0);
    cfg = svc.own;
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8102");
    assert_string_equal(svc.cfg.group, "nf-scheduler");
    assert_int_equal(svc.cfg.max_inflight, 256);
    assert_int_equal(svc.cfg.pg_conns, 4);
    assert_non_null(strstr(svc.cfg.migrations, "/services/scheduler/migrations"));
    assert_int_equal(svc.cfg.timeout_ms, 10000);
    assert_int_equal(svc.cfg.drain_ms, 10000);
    assert_int_equal(cfg->retry_cap_s, 60);
    assert_string_equal(cfg->wm_addr, "127.0.0.1:8104");
    assert_int_equal(cfg->retry_poll_ms, 500);
    assert_int_equal(cfg->reconcile_s, 5);
    assert_int_equal(cfg->stuck_s, 30);
    assert_int_equal(cfg->timeout_grace_s, 60);
    assert_string_equal(cfg->billing_addr, "127.0.0.1:8103");
    assert_int_equal(cfg->budget_wait_ms, 30000);
    assert_int_equal(cfg->storage_window_s, 3600);
    nf_svc_free(&svc);
}

/* The shared rows under the scheduler's prefix (NF_SCHEDULER_DRAIN_MS was _GRACE_MS). */
static void test_shared_names(void **state)
{
    struct nf_svc svc;
    char err[256] = "";

    setenv("NF_SCHEDULER_ADDR", "127.0.0.1:18102", 1);
    setenv("NF_SCHEDULER_DRAIN_MS", "3000", 1);
    setenv("NF_SCHEDULER_TIMEOUT_MS", "2000", 1);
    setenv("NF_SCHEDULER_GROUP", "nf-scheduler-test", 1);
    setenv("NF_SCHEDULER_MAX_INFLIGHT", "32", 1);
    assert_int_equal(nf_svc_load(&svc, &sched_service, err, sizeof(err)), 0);
    assert_string_equal(svc.cfg.addr, "127.0.0.1:18102");
    assert_int_equal(svc.cfg.drain_ms, 3000);
    assert_int_equal(svc.cfg.timeout_ms, 2000);
    assert_string_equal(svc.cfg.group, "nf-scheduler-test");
    assert_int_equal(svc.cfg.max_inflight, 32);
    nf_svc_free(&svc);
}

static void test_refusals(void **state)
{
    static const char *const bad[][2] = {
        {"NF_SCHEDULER_ADDR", "8102"},
        {"NF_WM_ADDR", "wm"},
        {"NF_BILLING_ADDR", "billing:"},
        {"NF_REDIS_ADDR", "localhost"},
        {"NF_LOG_LEVEL", "verbose"},
        {"NF_SCHEDULER_PG_CONNS", "0"},
        {"NF_SCHEDULER_DRAIN_MS", "-1"},
        {"NF_SCHEDULER_MAX_INFLIGHT", "0"},
        {"NF_SCHEDULER_RETRY_CAP_S", "0"},
        {"NF_SCHEDULER_RETRY_POLL_MS", "10"},
        {"NF_SCHEDULER_STUCK_S", "1"},
        {"NF_SCHEDULER_BUDGET_WAIT_MS", "-5"},
        {"NF_SCHEDULER_STORAGE_WINDOW_S", "0"},
    };
    struct nf_svc svc;
    char err[256];
    size_t i;
    int rc;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unset_all(NULL);
        setenv(bad[i][0], bad[i][1], 1);
        err[0] = '\0';
        rc = nf_svc_load(&svc, &sched_service, err, sizeof(err));
        nf_svc_free(&svc);
        if (rc != -1)
            fail_msg("%s=%s accepted", bad[i][0], bad[i][1]);
        if (!strstr(err, bad[i][0]))
            fail_msg("%s=%s: message does not name it: %s", bad[i][0], bad[i][1], err);
    }
}

/* The three consumed topics, the schema and the route table, each route with a handler. */
static void test_descriptor(void **state)
{
    static const char *const topics[] = {"forge.jobs.requested", "forge.jobs.events",
                                         "forge.billing.costs"};
    static const char *const routes[][2] = {
        {"GET", "/internal/jobs/{job_id}"},           {"GET", "/internal/jobs"},
        {"GET", "/internal/jobs/{job_id}/events"},    {"GET", "/internal/artifacts"},
        {"GET", "/internal/artifacts/{artifact_id}"}, {"POST", "/internal/jobs/{job_id}/cancel"},
    };
    size_t i, n = sizeof(routes) / sizeof(routes[0]);

    for (i = 0; i < 3; i++)
        assert_string_equal(sched_service.consume[i], topics[i]);
    assert_null(sched_service.consume[3]);
    assert_string_equal(sched_service.name, "scheduler");
    assert_string_equal(sched_service.schema, "sched");
    assert_non_null(sched_service.on_msg);
    assert_int_equal(sched_service.nroutes, n);
    for (i = 0; i < n; i++) {
        assert_string_equal(sched_service.routes[i].method, routes[i][0]);
        assert_string_equal(sched_service.routes[i].pattern, routes[i][1]);
        assert_non_null(sched_service.routes[i].fn);
    }
}

int main(void)
{
    return NF_TEST_RUN(unset_all, NULL, test_defaults, test_shared_names, test_refusals,
                       test_descriptor);
}
