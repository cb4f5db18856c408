/* Unit tests for the gateway's configuration table (config.c): defaults and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"

static const char *const vars[] = {
    "NF_LOG_LEVEL",
    "NF_GATEWAY_ADDR",
    "NF_GATEWAY_REUSEPORT",
    "NF_GATEWAY_MAX_BODY",
    "NF_GATEWAY_OPENAPI",
    "NF_AUTH_ADDR",
    "NF_SCHEDULER_ADDR",
    "NF_WM_ADDR",
    "NF_KAFKA_BROKERS",
    "NF_KAFKA_PARTITIONS",
    "NF_KAFKA_REPLICATION",
    "NF_REDIS_ADDR",
    "NF_GATEWAY_BACKEND_TIMEOUT_MS",
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
    struct gw_config cfg;
    char err[256] = "";

    assert_int_equal(gw_config_load(&cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.addr, "127.0.0.1:8000");
    assert_false(cfg.reuseport);
    assert_int_equal(cfg.max_body, 1048576);
    assert_string_equal(cfg.auth_addr, "127.0.0.1:8101");
    assert_string_equal(cfg.sched_addr, "127.0.0.1:8102");
    assert_string_equal(cfg.wm_addr, "127.0.0.1:8104");
    assert_string_equal(cfg.kafka_brokers, "127.0.0.1:9092");
    assert_string_equal(cfg.redis_addr, "127.0.0.1:6379");
    assert_true(strstr(cfg.openapi, "/openapi.json") != NULL);
    assert_int_equal(cfg.drain_ms, 10000);
    assert_int_equal(cfg.rate_per_min, 600); /* issue 3: 600 a minute, bursts of 100 */
    assert_int_equal(cfg.rate_burst, 100);
    gw_config_free(&cfg);
}

static void test_overrides(void **state)
{
    struct gw_config cfg;
    char err[256] = "";

    setenv("NF_GATEWAY_ADDR", "0.0.0.0:9000", 1);
    setenv("NF_GATEWAY_REUSEPORT", "yes", 1);
    setenv("NF_GATEWAY_MAX_BODY", "2048", 1);
    setenv("NF_GATEWAY_RATE_LIMIT", "60", 1);
    setenv("NF_GATEWAY_RATE_BURST", "5", 1);
    assert_int_equal(gw_config_load(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.rate_per_min, 60);
    assert_int_equal(cfg.rate_burst, 5);
    assert_string_equal(cfg.addr, "0.0.0.0:9000");
    assert_true(cfg.reuseport);
    assert_int_equal(cfg.max_body, 2048);
    gw_config_free(&cfg);
}

/* var=value must be refused with a message naming var. */
static void refused(const char *var, const char *value)
{
    struct gw_config cfg;
    char err[256] = "";

    clear_env(NULL);
    setenv(var, value, 1);
    if (gw_config_load(&cfg, err, sizeof(err)) != -1)
        fail_msg("%s=%s accepted", var, value);
    if (!strstr(err, var))
        fail_msg("%s=%s: message does not name it: %s", var, value, err);
    gw_config_free(&cfg); /* safe on the freed struct */
}

static void test_refusals(void **state)
{
    refused("NF_GATEWAY_MAX_BODY", "100");
    refused("NF_GATEWAY_MAX_BODY", "lots");
    refused("NF_GATEWAY_ADDR", "nohostport");
    refused("NF_AUTH_ADDR", "host:notaport");
    refused("NF_SCHEDULER_ADDR", "host:");
    refused("NF_WM_ADDR", "host:70000");
    refused("NF_REDIS_ADDR", "redis");
    refused("NF_LOG_LEVEL", "loud");
    refused("NF_GATEWAY_REUSEPORT", "maybe");
    refused("NF_GATEWAY_DRAIN_MS", "-1");
    refused("NF_GATEWAY_WM_CONNS", "0");
    refused("NF_GATEWAY_RATE_LIMIT", "0");
    refused("NF_GATEWAY_RATE_LIMIT", "fast");
    refused("NF_GATEWAY_RATE_BURST", "0");
    refused("NF_GATEWAY_RATE_BURST", "1000001");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_overrides, clear_env),
        cmocka_unit_test_setup(test_refusals, clear_env),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
