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

/* The rows without a default: the object store's. */
static void set_required(void)
{
    nf_test_setenv("NF_S3_ENDPOINT=http://127.0.0.1:9000", "NF_S3_ACCESS_KEY=key",
                   "NF_S3_SECRET_KEY=secret", NULL);
}

static void test_defaults(void **state)
{
    struct nf_svc svc;
    const struct gw_config *cfg;

    set_required();
    cfg = nf_test_svc_load(&svc, &gw_service);

    nf_test_svc_backend_defaults(&svc, true, true, false); /* kafka, redis, pg */
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8000");
    assert_false(cfg->reuseport);
    assert_int_equal(cfg->max_body, 1048576);
    assert_string_equal(cfg->auth_addr, "127.0.0.1:8101");
    assert_string_equal(cfg->sched_addr, "127.0.0.1:8102");
    assert_string_equal(cfg->wm_addr, "127.0.0.1:8104");
    assert_string_equal(cfg->billing_addr, "127.0.0.1:8103");
    assert_true(strstr(cfg->openapi, "/openapi.json") != NULL);
    assert_int_equal(svc.cfg.timeout_ms, 5000);
    assert_int_equal(svc.cfg.drain_ms, 10000);
    assert_int_equal(cfg->rate_per_min, 600); /* issue 3: 600 a minute, bursts of 100 */
    assert_int_equal(cfg->rate_burst, 100);
    assert_true(cfg->max_upload == 5368709120LL); /* 5 GiB */
    assert_int_equal(cfg->downloads_per_account, 4);
    assert_string_equal(cfg->s3_region, "us-east-1");
    assert_string_equal(cfg->s3_bucket, "nexa-forge");
    nf_svc_free(&svc);
}

static void test_overrides(void **state)
{
    struct nf_svc svc;
    const struct gw_config *cfg;

    set_required();
    nf_test_setenv("NF_GATEWAY_MAX_UPLOAD_BYTES=1099511627776", "NF_S3_BUCKET=other-bucket",
                   "NF_GATEWAY_DOWNLOADS_PER_ACCOUNT=10", NULL);
    nf_test_setenv("NF_GATEWAY_ADDR=0.0.0.0:9000", "NF_GATEWAY_REUSEPORT=yes",
                   "NF_GATEWAY_MAX_BODY=2048", "NF_GATEWAY_RATE_LIMIT=60",
                   "NF_GATEWAY_RATE_BURST=5", "NF_GATEWAY_TIMEOUT_MS=2500", NULL);
    cfg = nf_test_svc_load(&svc, &gw_service);
    assert_int_equal(cfg->rate_per_min, 60);
    assert_int_equal(cfg->rate_burst, 5);
    assert_string_equal(svc.cfg.addr, "0.0.0.0:9000");
    assert_true(cfg->reuseport);
    assert_int_equal(cfg->max_body, 2048);
    assert_int_equal(svc.cfg.timeout_ms, 2500);
    assert_true(cfg->max_upload == 1099511627776LL);
    assert_int_equal(cfg->downloads_per_account, 10);
    assert_string_equal(cfg->s3_bucket, "other-bucket");
    nf_svc_free(&svc);
}

/* Each bad value is refused with a message naming its variable. */
static void test_refusals(void **state)
{
    nf_test_svc_refused(&gw_service, "NF_S3_ENDPOINT", "required");
    set_required();
    nf_test_svc_refused(&gw_service, "NF_S3_ENDPOINT=ftp://store:21", "http:// or https://");
    nf_test_svc_refused(&gw_service, "NF_S3_BUCKET=Upper_Case", "3..63");
    nf_test_svc_refused(&gw_service, "NF_S3_SECRET_KEY=", NULL);
    nf_test_svc_refuses(
        &gw_service, "NF_GATEWAY_MAX_UPLOAD_BYTES=0", "NF_GATEWAY_MAX_UPLOAD_BYTES=5G",
        "NF_GATEWAY_MAX_UPLOAD_BYTES=1099511627777", "NF_GATEWAY_DOWNLOADS_PER_ACCOUNT=0",
        "NF_GATEWAY_DOWNLOADS_PER_ACCOUNT=1001", NULL);
    nf_test_svc_refuses(&gw_service, "NF_GATEWAY_MAX_BODY=100", "NF_GATEWAY_MAX_BODY=lots",
                        "NF_GATEWAY_ADDR=nohostport", "NF_AUTH_ADDR=host:notaport",
                        "NF_SCHEDULER_ADDR=host:", "NF_WM_ADDR=host:70000",
                        "NF_BILLING_ADDR=nohostport", "NF_REDIS_ADDR=redis", "NF_LOG_LEVEL=loud",
                        "NF_GATEWAY_REUSEPORT=maybe", "NF_GATEWAY_DRAIN_MS=-1",
                        "NF_GATEWAY_TIMEOUT_MS=99", "NF_GATEWAY_WM_CONNS=0",
                        "NF_GATEWAY_RATE_LIMIT=0", "NF_GATEWAY_RATE_LIMIT=fast",
                        "NF_GATEWAY_RATE_BURST=0", "NF_GATEWAY_RATE_BURST=1000001", NULL);
}

int main(void)
{
    return NF_TEST_RUN_SVC(&gw_service, test_defaults, test_overrides, test_refusals);
}
