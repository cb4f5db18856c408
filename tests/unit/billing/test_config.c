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

static const char *const vars[] = {
    "NF_LOG_LEVEL",
    "NF_BILLING_ADDR",
    "NF_KAFKA_BROKERS",
    "NF_KAFKA_PARTITIONS",
    "NF_KAFKA_REPLICATION",
    "NF_BILLING_GROUP",
    "NF_BILLING_MAX_INFLIGHT",
    "NF_PG_DSN",
    "NF_BILLING_PG_CONNS",
    "NF_BILLING_MIGRATIONS",
    "NF_BILLING_TIMEOUT_MS",
    "NF_BILLING_DRAIN_MS",
    "NF_BILLING_BATCH_MAX",
    "NF_BILLING_BATCH_LINGER_MS",
    "NF_BILLING_SWEEP_MS",
    "NF_BILLING_LEASE_WAIT_S",
};

static int clear_env(void **state)
{
    size_t i;

    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    return 0;
}

static void test_defaults(void **state)
{
    struct nf_svc svc;
    const struct bill_config *cfg;
    char err[256] = "";

    assert_int_equal(nf_svc_load(&svc, &bill_service, err, sizeof(err)), 0);
    cfg = svc.own;
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8103");
    assert_string_equal(svc.cfg.brokers, "127.0.0.1:9092");
    assert_int_equal(svc.cfg.partitions, 3);
    assert_int_equal(svc.cfg.replication, 1);
    assert_string_equal(svc.cfg.group, "nf-billing");
    assert_int_equal(svc.cfg.max_inflight, 20000);
    assert_string_equal(svc.cfg.pg_dsn, "host=127.0.0.1 port=5432 dbname=forge user=forge");
    assert_int_equal(svc.cfg.pg_conns, 4);
    assert_non_null(strstr(svc.cfg.migrations, "/services/billing/migrations"));
    assert_int_equal(svc.cfg.timeout_ms, 10000);
    assert_int_equal(svc.cfg.drain_ms, 10000);
    assert_null(svc.cfg.redis_addr); /* billing needs no Redis */
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
    char err[256] = "";

    setenv("NF_BILLING_DRAIN_MS", "2500", 1); /* was NF_BILLING_GRACE_MS */
    setenv("NF_BILLING_GROUP", "replay-1", 1);
    setenv("NF_BILLING_BATCH_LINGER_MS", "0", 1);
    assert_int_equal(nf_svc_load(&svc, &bill_service, err, sizeof(err)), 0);
    cfg = svc.own;
    assert_int_equal(svc.cfg.drain_ms, 2500);
    assert_string_equal(svc.cfg.group, "replay-1");
    assert_int_equal(cfg->linger_ms, 0);
    nf_svc_free(&svc);
}

static void refused(const char *var, const char *value)
{
    struct nf_svc svc;
    char err[256] = "";
    int rc;

    clear_env(NULL);
    setenv(var, value, 1);
    rc = nf_svc_load(&svc, &bill_service, err, sizeof(err));
    nf_svc_free(&svc);
    if (rc != -1)
        fail_msg("%s=%s accepted", var, value);
    if (!strstr(err, var))
        fail_msg("%s=%s: message does not name it: %s", var, value, err);
}

static void test_refusals(void **state)
{
    refused("NF_BILLING_ADDR", "8103");
    refused("NF_LOG_LEVEL", "verbose");
    refused("NF_BILLING_GROUP", "");
    refused("NF_BILLING_MAX_INFLIGHT", "0");
    refused("NF_BILLING_PG_CONNS", "65");
    refused("NF_BILLING_TIMEOUT_MS", "10");
    refused("NF_BILLING_DRAIN_MS", "-1");
    refused("NF_BILLING_BATCH_MAX", "0");
    refused("NF_BILLING_BATCH_MAX", "10001");
    refused("NF_BILLING_BATCH_LINGER_MS", "-1");
    refused("NF_BILLING_SWEEP_MS", "5");
    refused("NF_BILLING_LEASE_WAIT_S", "0");
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
    return NF_TEST_RUN(clear_env, NULL, test_defaults, test_set, test_refusals, test_descriptor);
}
