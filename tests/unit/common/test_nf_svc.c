/*
 * Unit tests for nf_svc's configuration: the shared rows a descriptor gets, their names,
 * defaults and refusals, the service's own rows and its cross-check, and --help.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_svc.h"
#include "nf_test.h"

struct own {
    int limit;
};

static const struct nf_cfg_opt own_opts[] = {
    {"NF_T_LIMIT", NF_CFG_INT, "7", 1, 100, false, offsetof(struct own, limit), "a limit"},
};

static int check_limit(const struct nf_svc *svc, char *err, size_t errlen)
{
    const struct own *own = svc->own;

    if (own->limit == 13) {
        snprintf(err, errlen, "NF_T_LIMIT: must not be 13");
        return -1;
    }
    return 0;
}

static int init_never(struct nf_svc *svc)
{
    return -1;
}

static const char *const topics[] = {"forge.usage", NULL};

static const struct nf_svc_desc full = {
    .name = "t",
    .summary = "a test service",
    .env_prefix = "NF_T",
    .addr = "127.0.0.1:8999",
    .needs = NF_SVC_PG | NF_SVC_REDIS | NF_SVC_PRODUCER,
    .schema = "t",
    .migrations = "/nowhere",
    .timeout_ms = 2500,
    .drain_ms = 3000,
    .opts = own_opts,
    .nopts = 1,
    .cfg_size = sizeof(struct own),
    .check = check_limit,
    .consume = topics,
    .group = "nf-t",
    .max_inflight = 99,
    .init = init_never,
};

/* No HTTP, no backends: only the log level and the drain rows. */
static const struct nf_svc_desc bare = {
    .name = "bare",
    .summary = "an agent",
    .env_prefix = "NF_BARE",
    .init = init_never,
};

/* Every variable of both descriptors unset. */
static int setup(void **state)
{
    nf_test_svc_clear_env(&full);
    nf_test_svc_clear_env(&bare);
    return 0;
}

static bool has_row(const struct nf_svc *svc, const char *env)
{
    size_t i;

    for (i = 0; i < svc->nshared; i++)
        if (strcmp(svc->shared_opts[i].env, env) == 0)
            return true;
    return false;
}

static void test_defaults_of_a_full_service(void **state)
{
    struct nf_svc svc;
    const struct own *own = nf_test_svc_load(&svc, &full);

    assert_int_equal(svc.cfg.log_level, NF_LOG_INFO);
    assert_string_equal(svc.cfg.addr, "127.0.0.1:8999");
    assert_string_equal(svc.cfg.brokers, "127.0.0.1:9092");
    assert_int_equal(svc.cfg.partitions, 3);
    assert_int_equal(svc.cfg.replication, 1);
    assert_string_equal(svc.cfg.group, "nf-t");
    assert_int_equal(svc.cfg.max_inflight, 99);
    assert_string_equal(svc.cfg.redis_addr, "127.0.0.1:6379");
    assert_non_null(strstr(svc.cfg.pg_dsn, "dbname=forge"));
    assert_int_equal(svc.cfg.pg_conns, 4);
    assert_string_equal(svc.cfg.migrations, "/nowhere");
    assert_int_equal(svc.cfg.timeout_ms, 2500);
    assert_int_equal(svc.cfg.drain_ms, 3000);
    assert_int_equal(own->limit, 7);
    nf_svc_free(&svc);
}

static void test_a_bare_service_gets_only_its_rows(void **state)
{
    struct nf_svc svc;
    char err[256] = "";

    assert_int_equal(nf_svc_load(&svc, &bare, err, sizeof(err)), 0);
    assert_true(has_row(&svc, "NF_LOG_LEVEL"));
    assert_true(has_row(&svc, "NF_BARE_DRAIN_MS"));
    assert_false(has_row(&svc, "NF_BARE_ADDR"));
    assert_false(has_row(&svc, "NF_KAFKA_BROKERS"));
    assert_false(has_row(&svc, "NF_REDIS_ADDR"));
    assert_false(has_row(&svc, "NF_PG_DSN"));
    assert_int_equal(svc.nshared, 2);
    assert_int_equal(svc.cfg.drain_ms, 10000);
    nf_svc_free(&svc);
}

static void test_environment_wins(void **state)
{
    struct nf_svc svc;

    nf_test_setenv("NF_LOG_LEVEL=debug", "NF_T_ADDR=[::1]:8080", "NF_T_GROUP=replay",
                   "NF_T_LIMIT=42", NULL);
    nf_test_svc_load(&svc, &full);
    assert_int_equal(svc.cfg.log_level, NF_LOG_DEBUG);
    assert_string_equal(svc.cfg.addr, "[::1]:8080");
    assert_string_equal(svc.cfg.group, "replay");
    assert_int_equal(((const struct own *)svc.own)->limit, 42);
    nf_svc_free(&svc);
}

/* Each bad value is refused with a message naming its variable and saying why. */
static void test_bad_values_are_refused(void **state)
{
    nf_test_svc_refused(&full, "NF_LOG_LEVEL=loud", "must be debug, info, warn or error");
    nf_test_svc_refused(&full, "NF_T_ADDR=8000", "must be host:port");
    nf_test_svc_refused(&full, "NF_T_ADDR=host:99999", "must be host:port");
    nf_test_svc_refused(&full, "NF_REDIS_ADDR=redis", "must be host:port");
    nf_test_svc_refused(&full, "NF_KAFKA_PARTITIONS=0", "between 1 and 1024");
    nf_test_svc_refused(&full, "NF_T_MAX_INFLIGHT=x", "must be an integer");
    nf_test_svc_refused(&full, "NF_T_DRAIN_MS=-1", "between 0 and 600000");
    nf_test_svc_refused(&full, "NF_T_LIMIT=101", "between 1 and 100");
    nf_test_svc_refused(&full, "NF_T_LIMIT=13", "must not be 13"); /* the descriptor's check */
}

/* The DSN row is a secret: masked when logged and in --help. */
static void test_pg_dsn_is_secret(void **state)
{
    struct nf_svc svc;
    char err[256] = "";
    size_t i, found = 0;

    assert_int_equal(nf_svc_load(&svc, &full, err, sizeof(err)), 0);
    for (i = 0; i < svc.nshared; i++) {
        if (strcmp(svc.shared_opts[i].env, "NF_PG_DSN") == 0) {
            assert_true(svc.shared_opts[i].secret);
            found++;
        }
    }
    assert_int_equal(found, 1);
    nf_svc_free(&svc);
}

static void test_help_lists_shared_and_own_rows(void **state)
{
    struct nf_svc svc;
    char err[256], *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    assert_int_equal(nf_svc_load(&svc, &full, err, sizeof(err)), 0);
    nf_svc_usage(&svc, out);
    fclose(out);
    assert_non_null(strstr(text, "nf-t: a test service"));
    assert_non_null(strstr(text, "NF_T_DRAIN_MS"));
    assert_non_null(strstr(text, "NF_T_LIMIT"));
    assert_non_null(strstr(text, "NF_REDIS_ADDR"));
    assert_null(strstr(text, "host=127.0.0.1")); /* the DSN default is masked */
    free(text);
    nf_svc_free(&svc);
}

static void test_main_exit_codes(void **state)
{
    char *help[] = {"nf-t", "--help", NULL};
    char *check[] = {"nf-t", "--check-config", NULL};
    char *bad[] = {"nf-t", "--frobnicate", NULL};
    char *run[] = {"nf-t", NULL};
    FILE *saved = stdout;

    stdout = fopen("/dev/null", "w");
    nf_log_set_output(stdout);
    assert_int_equal(nf_svc_main(&full, 2, help), 0);
    assert_int_equal(nf_svc_main(&full, 2, check), 0);
    assert_int_equal(nf_svc_main(&full, 2, bad), 2);
    setenv("NF_T_LIMIT", "0", 1);
    assert_int_equal(nf_svc_main(&full, 2, check), 2);
    unsetenv("NF_T_LIMIT");
    /* a start that fails (init refuses) exits 1 after tearing down what was built */
    assert_int_equal(nf_svc_main(&bare, 1, run), 1);
    fclose(stdout);
    stdout = saved;
    nf_log_set_output(NULL);
}

/* --check-config logs the effective configuration at info: shown at info, hidden at error. */
static bool config_logged(const char *level)
{
    char *check[] = {"nf-t", "--check-config", NULL};
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    bool seen;

    setenv("NF_LOG_LEVEL", level, 1);
    nf_log_set_output(out);
    assert_int_equal(nf_svc_main(&full, 2, check), 0);
    nf_log_set_output(NULL);
    fclose(out);
    seen = strstr(text, "\"event\":\"config\"") != NULL;
    free(text);
    unsetenv("NF_LOG_LEVEL");
    return seen;
}

static void test_log_level_applied(void **state)
{
    assert_true(config_logged("info"));
    assert_false(config_logged("error"));
}

int main(void)
{
    return NF_TEST_RUN(
        setup, NULL, test_defaults_of_a_full_service, test_a_bare_service_gets_only_its_rows,
        test_environment_wins, test_bad_values_are_refused, test_pg_dsn_is_secret,
        test_help_lists_shared_and_own_rows, test_main_exit_codes, test_log_level_applied);
}
