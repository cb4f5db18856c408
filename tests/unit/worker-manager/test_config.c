/* Unit tests for nf-worker-manager's configuration and descriptor (service.c's rows +
 * nf_svc's shared ones): defaults, refusals, the lease rule and the consumed topics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_svc.h"
#include "nf_test.h"
#include "wm.h"

#define TOKEN "0123456789abcdef-registration"

/* Every variable of the descriptor's tables unset, but the one that has no default. */
static int clear_env(void **state)
{
    nf_test_svc_clear_env(&wm_service);
    setenv("NF_WORKER_REGISTRATION_TOKEN", TOKEN, 1);
    return 0;
}

static void test_defaults(void **state)
{
    struct nf_svc svc;
    const struct wm_config *cfg = nf_test_svc_load(&svc, &wm_service);

    nf_test_svc_backend_defaults(&svc, true, true, true); /* kafka, redis, pg */
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8104");
    assert_string_equal(svc.cfg.group, "nf-worker-manager");
    assert_int_equal(svc.cfg.max_inflight, 256);
    assert_true(strstr(svc.cfg.migrations, "/services/worker-manager/migrations") != NULL);
    assert_int_equal(svc.cfg.timeout_ms, 5000);
    assert_int_equal(svc.cfg.drain_ms, 15000);
    assert_string_equal(cfg->reg_token, TOKEN);
    assert_int_equal(cfg->heartbeat_s, 2);
    assert_int_equal(cfg->lease_ttl_s, 6);
    assert_int_equal(cfg->reap_interval_ms, 500);
    nf_svc_free(&svc);
}

/* A site's own liveness settings (slow links: 5 s heartbeats, 20 s leases, a 1 s reaper)
 * and the shared NF_WM_* names. */
static void test_site_settings(void **state)
{
    struct nf_svc svc;
    const struct wm_config *cfg;

    nf_test_setenv("NF_WM_HEARTBEAT_INTERVAL_S=5", "NF_WM_LEASE_TTL_S=20",
                   "NF_WM_REAP_INTERVAL_MS=1000", "NF_WM_ADDR=127.0.0.1:18104",
                   "NF_WM_GROUP=nf-wm-test", "NF_WM_DRAIN_MS=3000",
                   "NF_WM_MIGRATIONS=/tmp/wm-migrations", NULL);
    cfg = nf_test_svc_load(&svc, &wm_service);
    assert_string_equal(svc.cfg.addr, "127.0.0.1:18104");
    assert_string_equal(svc.cfg.group, "nf-wm-test");
    assert_int_equal(svc.cfg.drain_ms, 3000);
    assert_string_equal(svc.cfg.migrations, "/tmp/wm-migrations");
    assert_int_equal(cfg->heartbeat_s, 5);
    assert_int_equal(cfg->lease_ttl_s, 20);
    assert_int_equal(cfg->reap_interval_ms, 1000);
    nf_svc_free(&svc);
}

static void test_refusals(void **state)
{
    nf_test_svc_refuses(
        &wm_service, "NF_WORKER_REGISTRATION_TOKEN", "NF_WORKER_REGISTRATION_TOKEN=short",
        "NF_WM_ADDR=8104", "NF_REDIS_ADDR=localhost", "NF_LOG_LEVEL=verbose", "NF_WM_PG_CONNS=0",
        "NF_WM_TIMEOUT_MS=10", "NF_WM_MAX_INFLIGHT=0", "NF_PG_DSN=", "NF_WM_HEARTBEAT_INTERVAL_S=0",
        "NF_WM_LEASE_TTL_S=1", "NF_WM_REAP_INTERVAL_MS=10", NULL);
}

/* A lease must outlive two heartbeats (service.c's cross-check). */
static void test_lease_rule(void **state)
{
    struct nf_svc svc;
    char err[256] = "";
    int rc;

    setenv("NF_WM_HEARTBEAT_INTERVAL_S", "5", 1);
    setenv("NF_WM_LEASE_TTL_S", "9", 1);
    rc = nf_svc_load(&svc, &wm_service, err, sizeof(err));
    nf_svc_free(&svc);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "NF_WM_LEASE_TTL_S"));
    assert_non_null(strstr(err, "two heartbeats"));

    setenv("NF_WM_LEASE_TTL_S", "10", 1);
    assert_int_equal(nf_svc_load(&svc, &wm_service, err, sizeof(err)), 0);
    nf_svc_free(&svc);
}

/* The consumer reads the six dispatch topics, forge.jobs.<type> in nf_job_types order. */
static void test_topics(void **state)
{
    char want[64];
    int i;

    for (i = 0; i < NF_NJOB_TYPES; i++) {
        snprintf(want, sizeof(want), "forge.jobs.%s", nf_job_types[i]);
        assert_non_null(wm_service.consume[i]);
        assert_string_equal(wm_service.consume[i], want);
    }
    assert_null(wm_service.consume[NF_NJOB_TYPES]);
    assert_non_null(wm_service.on_msg);
    assert_string_equal(wm_service.schema, "wm");
}

/* The route table: every worker route and the scheduler's cancel, each with a handler. */
static void test_routes(void **state)
{
    static const char *const want[][2] = {
        {"POST", "/api/workers/register"},
        {"POST", "/api/workers/next_job"},
        {"POST", "/api/workers/heartbeat"},
        {"GET", "/api/workers"},
        {"POST", "/api/workers/drain"},
        {"POST", "/api/workers/disable"},
        {"POST", "/api/workers/events"},
        {"POST", "/api/workers/usage"},
        {"POST", "/internal/jobs/{job_id}/cancel"},
    };
    size_t i, n = sizeof(want) / sizeof(want[0]);

    assert_int_equal(wm_service.nroutes, n);
    for (i = 0; i < n; i++) {
        assert_string_equal(wm_service.routes[i].method, want[i][0]);
        assert_string_equal(wm_service.routes[i].pattern, want[i][1]);
        assert_non_null(wm_service.routes[i].fn);
    }
}

int main(void)
{
    return NF_TEST_RUN(clear_env, NULL, test_defaults, test_site_settings, test_refusals,
                       test_lease_rule, test_topics, test_routes);
}
