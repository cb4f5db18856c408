/* Unit tests for the gateway's configuration (service.c's rows + nf_svc's shared ones):
 * defaults and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_svc.h"
#include "nf_test.h"

static const char *const vars[] = {
    "NF_LOG_LEVEL",
    "NF_GATEWAY_ADDR",
    "NF_GATEWAY_REUSEPORT",
    "NF_GATEWAY_MAX_BODY",
    "NF_GATEWAY_OPENAPI",
    "NF_AUTH_ADDR",
    "NF_SCHEDULER_ADDR",
    "NF_WM_ADDR",
    "NF_BILLING_ADDR",
    "NF_KAFKA_BROKERS",
    "NF_KAFKA_PARTITIONS",
    "NF_KAFKA_REPLICATION",
    "NF_REDIS_ADDR",
    "NF_GATEWAY_TIMEOUT_MS",
    "NF_GATEWAY_PRODUCE_TIMEOUT_MS",
    "NF_GATEWAY_WM_CONNS",
    "NF_GATEWAY_DRAIN_MS",
    "NF_GATEWAY_RATE_LIMIT",
    "NF_GATEWAY_RATE_BURST",
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
    const struct gw_config *cfg;
    char err[256] = "";

    assert_int_equal(nf_svc_load(&svc, &gw_service, err, sizeof(err)), 0);
    cfg = svc.own;
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8000");
    assert_false(cfg->reuseport);
    assert_int_equal(cfg->max_body, 1048576);
    assert_string_equal(cfg->auth_addr, "127.0.0.1:8101");
    assert_string_equal(cfg->sched_addr, "127.0.0.1:8102");
    assert_string_equal(cfg->wm_addr, "127.0.0.1:8104");
    assert_string_equal(cfg->billing_addr, "127.0.0.1:8103");
    assert_string_equal(svc.cfg.brokers, "127.0.0.1:9092");
    assert_string_equal(svc.cfg.redis_addr, "127.0.0.1:6379");
    assert_true(strstr(cfg->openapi, "/openapi.json") != NULL);
    assert_int_equal(svc.cfg.timeout_ms, 5000);
    assert_int_equal(svc.cfg.drain_ms, 10000);
    assert_int_equal(cfg->rate_per_min, 600); /* issue 3: 600 a minute, bursts of 100 */
    assert_int_equal(cfg->rate_burst, 100);
    nf_svc_free(&svc);
}

static void test_overrides(void **state)
{
    struct nf_svc svc;
    const struct gw_config *cfg;
    char err[256] = "";

    setenv("NF_GATEWAY_ADDR", "0.0.0.0:9000", 1);
    setenv("NF_GATEWAY_REUSEPORT", "yes", 1);
    setenv("NF_GATEWAY_MAX_BODY", "2048", 1);
    setenv("NF_GATEWAY_RATE_LIMIT", "60", 1);
    setenv("NF_GATEWAY_RATE_BURST", "5", 1);
    setenv("NF_GATEWAY_TIMEOUT_MS", "2500", 1);
    assert_int_equal(nf_svc_load(&svc, &gw_service, err, sizeof(err)), 0);
    cfg = svc.own;
    assert_int_equal(cfg->rate_per_min, 60);
    assert_int_equal(cfg->rate_burst, 5);
    assert_string_equal(svc.cfg.addr, "0.0.0.0:9000");
    assert_true(cfg->reuseport);
    assert_int_equal(cfg->max_body, 2048);
    assert_int_equal(svc.cfg.timeout_ms, 2500);
    nf_svc_free(&svc);
}

/* var=value must be refused with a message naming var. */
static void refused(const char *var, const char *value)
{
    struct nf_svc svc;
    char err[256] = "";
    int rc;

    clear_env(NULL);
    setenv(var, value, 1);
    rc = nf_svc_load(&svc, &gw_service, err, sizeof(err));
    nf_svc_free(&svc); /* safe on a half-loaded svc */
    if (rc != -1)
        fail_msg("%s=%s accepted", var, value);
    if (!strstr(err, var))
        fail_msg("%s=%s: message does not name it: %s", var, value, err);
}

static void test_refusals(void **state)
{
    refused("NF_GATEWAY_MAX_BODY", "100");
    refused("NF_GATEWAY_MAX_BODY", "lots");
    refused("NF_GATEWAY_ADDR", "nohostport");
    refused("NF_AUTH_ADDR", "host:notaport");
    refused("NF_SCHEDULER_ADDR", "host:");
    refused("NF_WM_ADDR", "host:70000");
    refused("NF_BILLING_ADDR", "nohostport");
    refused("NF_REDIS_ADDR", "redis");
    refused("NF_LOG_LEVEL", "loud");
    refused("NF_GATEWAY_REUSEPORT", "maybe");
    refused("NF_GATEWAY_DRAIN_MS", "-1");
    refused("NF_GATEWAY_TIMEOUT_MS", "99");
    refused("NF_GATEWAY_WM_CONNS", "0");
    refused("NF_GATEWAY_RATE_LIMIT", "0");
    refused("NF_GATEWAY_RATE_LIMIT", "fast");
    refused("NF_GATEWAY_RATE_BURST", "0");
    refused("NF_GATEWAY_RATE_BURST", "1000001");
}

int main(void)
{
    return NF_TEST_RUN(clear_env, NULL, test_defaults, test_overrides, test_refusals);
}
