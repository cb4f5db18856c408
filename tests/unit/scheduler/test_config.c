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

static void test_defaults(void **state)
{
    struct nf_svc svc;
    const struct sched_config *cfg = nf_test_svc_load(&svc, &sched_service);

    nf_test_svc_backend_defaults(&svc, true, true, true); /* kafka, redis, pg */
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8102");
    assert_string_equal(svc.cfg.group, "nf-scheduler");
    assert_int_equal(svc.cfg.max_inflight, 256);
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
    assert_non_null(strstr(cfg->models_file, "/deploy/models.json"));
    nf_svc_free(&svc);
}

/* The shared rows under the scheduler's prefix (NF_SCHEDULER_DRAIN_MS was _GRACE_MS). */
static void test_shared_names(void **state)
{
    struct nf_svc svc;

    nf_test_setenv("NF_SCHEDULER_ADDR=127.0.0.1:18102", "NF_SCHEDULER_DRAIN_MS=3000",
                   "NF_SCHEDULER_TIMEOUT_MS=2000", "NF_SCHEDULER_GROUP=nf-scheduler-test",
                   "NF_SCHEDULER_MAX_INFLIGHT=32", NULL);
    nf_test_svc_load(&svc, &sched_service);
    assert_string_equal(svc.cfg.addr, "127.0.0.1:18102");
    assert_int_equal(svc.cfg.drain_ms, 3000);
    assert_int_equal(svc.cfg.timeout_ms, 2000);
    assert_string_equal(svc.cfg.group, "nf-scheduler-test");
    assert_int_equal(svc.cfg.max_inflight, 32);
    nf_svc_free(&svc);
}

static void test_refusals(void **state)
{
    nf_test_svc_refuses(
        &sched_service, "NF_SCHEDULER_ADDR=8102", "NF_WM_ADDR=wm",
        "NF_BILLING_ADDR=billing:", "NF_REDIS_ADDR=localhost", "NF_LOG_LEVEL=verbose",
        "NF_SCHEDULER_PG_CONNS=0", "NF_SCHEDULER_DRAIN_MS=-1", "NF_SCHEDULER_MAX_INFLIGHT=0",
        "NF_SCHEDULER_RETRY_CAP_S=0", "NF_SCHEDULER_RETRY_POLL_MS=10", "NF_SCHEDULER_STUCK_S=1",
        "NF_SCHEDULER_BUDGET_WAIT_MS=-5", "NF_SCHEDULER_STORAGE_WINDOW_S=0", NULL);
}

/* The three consumed topics, the schema and the route table, each route with a handler. */
static void test_descriptor(void **state)
{
    static const char *const topics[] = {"forge.jobs.requested", "forge.jobs.events",
                                         "forge.billing.costs"};
    static const char *const routes[][2] = {
        {"GET", "/internal/jobs/{job_id}"},
        {"GET", "/internal/jobs"},
        {"GET", "/internal/jobs/{job_id}/events"},
        {"GET", "/internal/jobs/{job_id}/checkpoints"},
        {"GET", "/internal/jobs/{job_id}/metrics"},
        {"GET", "/internal/artifacts"},
        {"GET", "/internal/artifacts/{artifact_id}"},
        {"DELETE", "/internal/artifacts/{artifact_id}"},
        {"POST", "/internal/files"},
        {"GET", "/internal/files"},
        {"POST", "/internal/jobs/{job_id}/cancel"},
        {"GET", "/internal/models"},
        {"POST", "/internal/models"},
        {"GET", "/internal/models/{model}"},
        {"DELETE", "/internal/models/{model}"},
        {"GET", "/internal/deployments"},
        {"GET", "/internal/deployments/{deployment_id}"},
        {"POST", "/internal/deployments/{deployment_id}/status"},
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
    return NF_TEST_RUN_SVC(&sched_service, test_defaults, test_shared_names, test_refusals,
                           test_descriptor);
}
