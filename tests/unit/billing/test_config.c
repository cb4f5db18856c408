/* Unit tests for nf-billing's configuration (service.c's rows + nf_svc's shared ones):
 * defaults, the renamed NF_BILLING_DRAIN_MS, refusals, and the descriptor's topics and
 * routes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bill.h"
#include "nf_kafka.h"
#include "nf_svc.h"
#include "nf_test.h"

static void test_defaults(void **state)
{
    struct nf_svc svc;
    const struct bill_config *cfg = nf_test_svc_load(&svc, &bill_service);

    nf_test_svc_backend_defaults(&svc, true, false, true); /* kafka, redis, pg */
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8103");
    assert_string_equal(svc.cfg.group, "nf-billing");
    assert_int_equal(svc.cfg.max_inflight, 20000);
    assert_non_null(strstr(svc.cfg.migrations, "/services/billing/migrations"));
    assert_int_equal(svc.cfg.timeout_ms, 10000);
    assert_int_equal(svc.cfg.drain_ms, 10000);
    assert_int_equal(cfg->batch_max, 1000);
    assert_int_equal(cfg->linger_ms, 5);
    assert_int_equal(cfg->sweep_ms, 500);
    assert_int_equal(cfg->lease_wait_s, 3600);
    nf_svc_free(&svc);
}

static void test_set(void **state)
{
    struct nf_svc svc;
    const struct bill_config *cfg;

    /* NF_BILLING_DRAIN_MS was NF_BILLING_GRACE_MS */
    nf_test_setenv("NF_BILLING_DRAIN_MS=2500", "NF_BILLING_GROUP=replay-1",
                   "NF_BILLING_BATCH_LINGER_MS=0", NULL);
    cfg = nf_test_svc_load(&svc, &bill_service);
    assert_int_equal(svc.cfg.drain_ms, 2500);
    assert_string_equal(svc.cfg.group, "replay-1");
    assert_int_equal(cfg->linger_ms, 0);
    nf_svc_free(&svc);
}

static void test_refusals(void **state)
{
    nf_test_svc_refuses(&bill_service, "NF_BILLING_ADDR=8103", "NF_LOG_LEVEL=verbose",
                        "NF_BILLING_GROUP=", "NF_BILLING_MAX_INFLIGHT=0", "NF_BILLING_PG_CONNS=65",
                        "NF_BILLING_TIMEOUT_MS=10", "NF_BILLING_DRAIN_MS=-1",
                        "NF_BILLING_BATCH_MAX=0", "NF_BILLING_BATCH_MAX=10001",
                        "NF_BILLING_BATCH_LINGER_MS=-1", "NF_BILLING_SWEEP_MS=5",
                        "NF_BILLING_LEASE_WAIT_S=0", NULL);
}

/* The service consumes forge.usage and forge.jobs.events and serves five routes. */
static void test_descriptor(void **state)
{
    static const char *const routes[][2] = {
        {"GET", "/internal/summary"},
        {"GET", "/internal/usage"},
        {"GET", "/internal/jobs/{job_id}/cost"},
        {"GET", "/internal/budget"},
        {"PUT", "/internal/budget"},
    };
    size_t i;

    assert_string_equal(bill_service.name, "billing");
    assert_string_equal(bill_service.schema, "billing");
    assert_string_equal(bill_service.consume[0], NF_TOPIC_USAGE);
    assert_string_equal(bill_service.consume[1], NF_TOPIC_JOBS_EVENTS);
    assert_null(bill_service.consume[2]);
    assert_int_equal(bill_service.nroutes, sizeof(routes) / sizeof(routes[0]));
    for (i = 0; i < bill_service.nroutes; i++) {
        assert_string_equal(bill_service.routes[i].method, routes[i][0]);
        assert_string_equal(bill_service.routes[i].pattern, routes[i][1]);
        assert_non_null(bill_service.routes[i].fn);
    }
}

int main(void)
{
    return NF_TEST_RUN_SVC(&bill_service, test_defaults, test_set, test_refusals, test_descriptor);
}
