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

static void test_defaults(void **state)
{
    struct nf_svc svc;
    const struct auth_config *cfg = nf_test_svc_load(&svc, &auth_service);

    nf_test_svc_backend_defaults(&svc, true, true, true); /* kafka, redis, pg */
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8101");
    assert_true(strstr(svc.cfg.migrations, "/services/auth/migrations") != NULL);
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

static void test_refusals(void **state)
{
    nf_test_svc_refuses(&auth_service, "NF_AUTH_ADDR=8101", "NF_REDIS_ADDR=localhost",
                        "NF_LOG_LEVEL=verbose", "NF_AUTH_PG_CONNS=0", "NF_AUTH_PG_CONNS=65",
                        "NF_AUTH_TIMEOUT_MS=10", "NF_PG_DSN=", "NF_AUTH_SESSION_TTL_S=10",
                        "NF_AUTH_COOKIE_SECURE=sometimes", "NF_AUTH_MAX_KEYS=0",
                        "NF_AUTH_HASH_THREADS=0", "NF_AUTH_LOGIN_DELAY_MS=-1",
                        "NF_AUTH_USAGE_FLUSH_MS=1", NULL);
}

int main(void)
{
    return NF_TEST_RUN_SVC(&auth_service, test_defaults, test_refusals);
}
