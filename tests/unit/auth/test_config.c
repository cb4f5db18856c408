/* Unit tests for nf-auth's configuration (service.c's rows + nf_svc's shared ones):
 * defaults and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_svc.h"
#include "nf_test.h"

static const char *const vars[] = {
    "NF_LOG_LEVEL",
    "NF_AUTH_ADDR",
    "NF_PG_DSN",
    "NF_REDIS_ADDR",
    "NF_KAFKA_BROKERS",
    "NF_KAFKA_PARTITIONS",
    "NF_KAFKA_REPLICATION",
    "NF_AUTH_MIGRATIONS",
    "NF_AUTH_PG_CONNS",
    "NF_AUTH_TIMEOUT_MS",
    "NF_AUTH_DRAIN_MS",
    "NF_AUTH_SESSION_TTL_S",
    "NF_AUTH_COOKIE_SECURE",
    "NF_AUTH_MAX_KEYS",
    "NF_AUTH_LOGIN_MAX_FAILURES",
    "NF_AUTH_LOGIN_MAX_FAILURES_ADDR",
    "NF_AUTH_LOGIN_WINDOW_S",
    "NF_AUTH_LOGIN_DELAY_MS",
    "NF_AUTH_REGISTER_PER_HOUR",
    "NF_AUTH_HASH_THREADS",
    "NF_AUTH_USAGE_FLUSH_MS",
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
    const struct auth_config *cfg;
    char err[256] = "";

    assert_int_equal(nf_svc_load(&svc, &auth_service, err, sizeof(err)), 0);
    cfg = svc.own;
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8101");
    assert_string_equal(svc.cfg.pg_dsn, "host=127.0.0.1 port=5432 dbname=forge user=forge");
    assert_string_equal(svc.cfg.redis_addr, "127.0.0.1:6379");
    assert_true(strstr(svc.cfg.migrations, "/services/auth/migrations") != NULL);
    assert_int_equal(svc.cfg.pg_conns, 4);
    assert_string_equal(svc.cfg.brokers, "127.0.0.1:9092");
    assert_int_equal(svc.cfg.timeout_ms, 5000);
    assert_int_equal(svc.cfg.drain_ms, 5000);
    assert_int_equal(cfg->session_ttl_s, 7 * 24 * 3600);
    assert_false(cfg->cookie_secure);
    assert_int_equal(cfg->max_keys, 50); /* issue 3: at most 50 active keys per user */
    assert_int_equal(cfg->login_max_failures, 5);
    assert_int_equal(cfg->login_window_s, 900);
    assert_int_equal(cfg->hash_threads, 2);
    assert_int_equal(cfg->usage_flush_ms, 5000);
    nf_svc_free(&svc);
}

static void refused(const char *var, const char *value)
{
    struct nf_svc svc;
    char err[256] = "";
    int rc;

    clear_env(NULL);
    setenv(var, value, 1);
    rc = nf_svc_load(&svc, &auth_service, err, sizeof(err));
    nf_svc_free(&svc);
    if (rc != -1)
        fail_msg("%s=%s accepted", var, value);
    if (!strstr(err, var))
        fail_msg("%s=%s: message does not name it: %s", var, value, err);
}

static void test_refusals(void **state)
{
    refused("NF_AUTH_ADDR", "8101");
    refused("NF_REDIS_ADDR", "localhost");
    refused("NF_LOG_LEVEL", "verbose");
    refused("NF_AUTH_PG_CONNS", "0");
    refused("NF_AUTH_PG_CONNS", "65");
    refused("NF_AUTH_TIMEOUT_MS", "10");
    refused("NF_PG_DSN", "");
    refused("NF_AUTH_SESSION_TTL_S", "10");
    refused("NF_AUTH_COOKIE_SECURE", "sometimes");
    refused("NF_AUTH_MAX_KEYS", "0");
    refused("NF_AUTH_HASH_THREADS", "0");
    refused("NF_AUTH_LOGIN_DELAY_MS", "-1");
    refused("NF_AUTH_USAGE_FLUSH_MS", "1");
}

int main(void)
{
    return NF_TEST_RUN(clear_env, NULL, test_defaults, test_refusals);
}
