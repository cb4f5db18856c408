/* Unit tests for nf_cfg: loading, every refusal, masking and address splitting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_cfg.h"
#include "nf_log.h"
#include "nf_test.h"

struct tcfg {
    char *addr;
    int port;
    bool debug;
    char *token;
    char *name;
    int any;
    long long size;
};

static const struct nf_cfg_opt opts[] = {
    {"NF_T_ADDR", NF_CFG_STR, "127.0.0.1:8000", 0, 0, false, offsetof(struct tcfg, addr),
     "listen address host:port"},
    {"NF_T_PORT", NF_CFG_INT, "8000", 1, 65535, false, offsetof(struct tcfg, port), "a port"},
    {"NF_T_DEBUG", NF_CFG_BOOL, "false", 0, 0, false, offsetof(struct tcfg, debug), "debug mode"},
    {"NF_T_TOKEN", NF_CFG_STR, NULL, 8, 64, true, offsetof(struct tcfg, token),
     "registration token"},
    {"NF_T_NAME", NF_CFG_STR, "", 0, 0, false, offsetof(struct tcfg, name), "may be empty"},
    {"NF_T_ANY", NF_CFG_INT, "-5", 0, 0, false, offsetof(struct tcfg, any), "unbounded"},
    {"NF_T_SIZE", NF_CFG_I64, "5368709120", 0, 1LL << 50, false, offsetof(struct tcfg, size),
     "bytes"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const char *const env_names[] = {"NF_T_ADDR", "NF_T_PORT", "NF_T_DEBUG", "NF_T_TOKEN",
                                        "NF_T_NAME", "NF_T_ANY",  "NF_T_SIZE"};

/* Clean environment with only the required token set. */
static int setup(void **state)
{
    size_t i;

    for (i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    setenv("NF_T_TOKEN", "s3cr3t-token-value", 1);
    return 0;
}

/* Loads with the current environment; on failure checks nothing was left allocated. */
static int load(struct tcfg *c, char *err, size_t errlen)
{
    int rc;

    memset(c, 0, sizeof(*c));
    err[0] = '\0';
    rc = nf_cfg_load(opts, NOPTS, c, err, errlen);
    if (rc != 0) {
        assert_null(c->addr);
        assert_null(c->token);
        assert_null(c->name);
    }
    return rc;
}

/* Sets var to value (NULL: unsets it) and loads: must fail, with the message want
 * unless want is NULL. The variable keeps its value. */
static void refused(const char *var, const char *value, const char *want)
{
    struct tcfg c;
    char err[256];

    if (value != NULL)
        setenv(var, value, 1);
    else
        unsetenv(var);
    assert_int_equal(load(&c, err, sizeof(err)), -1);
    if (want != NULL)
        assert_string_equal(err, want);
}

static void test_defaults(void **state)
{
    struct tcfg c;
    char err[256];

    assert_int_equal(load(&c, err, sizeof(err)), 0);
    assert_string_equal(c.addr, "127.0.0.1:8000");
    assert_int_equal(c.port, 8000);
    assert_false(c.debug);
    assert_string_equal(c.token, "s3cr3t-token-value");
    assert_string_equal(c.name, "");
    assert_int_equal(c.any, -5);
    assert_true(c.size == 5368709120LL); /* past an int */
    nf_cfg_free(opts, NOPTS, &c);
    assert_null(c.addr);
    nf_cfg_free(opts, NOPTS, &c); /* twice is harmless: fields are NULL now */
}

static void test_env_overrides(void **state)
{
    struct tcfg c;
    char err[256];

    setenv("NF_T_ADDR", "[::1]:9000", 1);
    setenv("NF_T_PORT", "65535", 1);
    setenv("NF_T_DEBUG", "YES", 1);
    setenv("NF_T_ANY", "+2147483647", 1);
    assert_int_equal(load(&c, err, sizeof(err)), 0);
    assert_string_equal(c.addr, "[::1]:9000");
    assert_int_equal(c.port, 65535);
    assert_true(c.debug);
    assert_int_equal(c.any, 2147483647);
    nf_cfg_free(opts, NOPTS, &c);
}

static void test_bools(void **state)
{
    const char *t[] = {"1", "true", "TRUE", "yes", "on", "On"};
    const char *f[] = {"0", "false", "no", "off", "OFF"};
    struct tcfg c;
    char err[256];
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        setenv("NF_T_DEBUG", t[i], 1);
        assert_int_equal(load(&c, err, sizeof(err)), 0);
        assert_true(c.debug);
        nf_cfg_free(opts, NOPTS, &c);
    }
    for (i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        setenv("NF_T_DEBUG", f[i], 1);
        assert_int_equal(load(&c, err, sizeof(err)), 0);
        assert_false(c.debug);
        nf_cfg_free(opts, NOPTS, &c);
    }
}

static void test_bad_bool(void **state)
{
    refused("NF_T_DEBUG", "maybe",
            "NF_T_DEBUG: must be a boolean: 1/0, true/false, yes/no, on/off (got \"maybe\")");
    refused("NF_T_DEBUG", "", NULL);
    refused("NF_T_DEBUG", "2", NULL);
}

static void test_bad_ints(void **state)
{
    const char *bad[] = {"12x", "", " 80", "80 ", "0x50", "8.0", "+", "-", "1e3"};
    struct tcfg c;
    char err[256], want[128];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("NF_T_PORT", bad[i], 1);
        assert_int_equal(load(&c, err, sizeof(err)), -1);
        snprintf(want, sizeof(want), "NF_T_PORT: must be an integer (got \"%s\")", bad[i]);
        assert_string_equal(err, want);
    }
}

static void test_int_bounds(void **state)
{
    refused("NF_T_PORT", "0", "NF_T_PORT: must be between 1 and 65535 (got 0)");
    refused("NF_T_PORT", "65536", "NF_T_PORT: must be between 1 and 65535 (got 65536)");
    refused("NF_T_PORT", "-1", NULL);
    refused("NF_T_PORT", "99999999999999999999999", NULL); /* overflows long long */
    setenv("NF_T_PORT", "1", 1);
    /* An "unbounded" int is still an int. */
    refused("NF_T_ANY", "2147483648",
            "NF_T_ANY: must be between -2147483648 and 2147483647 (got 2147483648)");
    setenv("NF_T_ANY", "1", 1);
    refused("NF_T_SIZE", "1125899906842625",
            "NF_T_SIZE: must be between 0 and 1125899906842624 (got 1125899906842625)");
    refused("NF_T_SIZE", "5GiB", "NF_T_SIZE: must be an integer (got \"5GiB\")");
}

static void test_required(void **state)
{
    refused("NF_T_TOKEN", NULL, "NF_T_TOKEN: is required but not set");
}

static void test_str_length_and_secret_not_echoed(void **state)
{
    struct tcfg c;
    char err[256];

    setenv("NF_T_TOKEN", "short", 1);
    assert_int_equal(load(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "NF_T_TOKEN: must be at least 8 characters long (got 5)");
    assert_null(strstr(err, "short"));
    setenv("NF_T_TOKEN", "0123456789012345678901234567890123456789012345678901234567890123456789",
           1);
    assert_int_equal(load(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "NF_T_TOKEN: must be at most 64 characters long (got 70)");
}

/* A failure after strings were stored frees them (ASan would report a leak otherwise). */
static void test_failure_frees_earlier_strings(void **state)
{
    /* NF_T_ANY is the last option, after every string */
    refused("NF_T_ANY", "nope", "NF_T_ANY: must be an integer (got \"nope\")");
}

static void test_small_err_buffer(void **state)
{
    struct tcfg c;
    char err[12];

    setenv("NF_T_PORT", "0", 1);
    assert_int_equal(load(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "NF_T_PORT: ");
    memset(&c, 0, sizeof(c));
    assert_int_equal(nf_cfg_load(opts, NOPTS, &c, NULL, 0), -1);
}

static void test_log_masks_secret(void **state)
{
    struct tcfg c;
    char err[256], *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cJSON *j;

    assert_non_null(f);
    assert_int_equal(load(&c, err, sizeof(err)), 0);
    nf_log_init("test", NF_LOG_INFO);
    nf_log_set_output(f);
    nf_cfg_log(&(struct nf_cfg_table){opts, NOPTS, &c}, 1);
    nf_log_set_output(NULL);
    fclose(f);
    assert_null(strstr(buf, "s3cr3t"));
    j = cJSON_Parse(buf);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "event")->valuestring, "config");
    assert_string_equal(cJSON_GetObjectItem(j, "NF_T_TOKEN")->valuestring, "***");
    assert_string_equal(cJSON_GetObjectItem(j, "NF_T_ADDR")->valuestring, "127.0.0.1:8000");
    assert_string_equal(cJSON_GetObjectItem(j, "NF_T_PORT")->valuestring, "8000");
    assert_string_equal(cJSON_GetObjectItem(j, "NF_T_DEBUG")->valuestring, "false");
    assert_string_equal(cJSON_GetObjectItem(j, "NF_T_ANY")->valuestring, "-5");
    cJSON_Delete(j);
    free(buf);
    nf_cfg_free(opts, NOPTS, &c);
}

static void test_usage(void **state)
{
    static const struct nf_cfg_opt sopts[] = {
        {"NF_T_KEY", NF_CFG_STR, "default-secret", 0, 0, true, 0, "a secret with a default"},
    };
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    nf_cfg_usage((struct nf_cfg_table[]){{opts, NOPTS, NULL}, {sopts, 1, NULL}}, 2, f);
    fclose(f);
    assert_non_null(strstr(buf, "NF_T_PORT"));
    assert_non_null(strstr(buf, "1..65535"));
    assert_non_null(strstr(buf, "default \"8000\""));
    assert_non_null(strstr(buf, "a port"));
    assert_non_null(strstr(buf, "required"));
    assert_null(strstr(buf, "default-secret"));
    free(buf);
}

static void test_split_addr(void **state)
{
    char *host = NULL;
    int port = 0;

    assert_int_equal(nf_cfg_split_addr("127.0.0.1:8000", &host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8000);
    free(host);
    assert_int_equal(nf_cfg_split_addr("localhost:1", &host, &port), 0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 1);
    free(host);
    assert_int_equal(nf_cfg_split_addr("[::1]:80", &host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 80);
    free(host);
    assert_int_equal(nf_cfg_split_addr("0.0.0.0:65535", &host, &port), 0);
    assert_int_equal(port, 65535);
    free(host);
}

static void test_split_addr_rejects(void **state)
{
    const char *bad[] = {
        "localhost",   /* no port */
        "localhost:",  /* empty port */
        ":8000",       /* empty host */
        "host:0",      /* port 0 */
        "host:65536",  /* too large */
        "host:-1",     /* sign */
        "host:80x",    /* trailing junk */
        "host:+80",    /* sign */
        "host:000080", /* too many digits */
        "host: 80",    /* space */
        "ho st:80",    /* space in host */
        "::1:80",      /* bare IPv6 is ambiguous */
        "[::1]80",     /* no colon after ] */
        "[::1]:",      /* empty port */
        "[]:80",       /* empty v6 */
        "[::1:80",     /* unclosed bracket */
        "[host]:80",   /* not a v6 address */
        "",
    };
    char *host = (char *)"untouched";
    int port = -7;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (nf_cfg_split_addr(bad[i], &host, &port) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(nf_cfg_split_addr(NULL, &host, &port), -1);
    assert_string_equal(host, "untouched");
    assert_int_equal(port, -7);
}

int main(void)
{
    int rc;

    rc = NF_TEST_RUN(setup, NULL, test_defaults, test_env_overrides, test_bools, test_bad_bool,
                     test_bad_ints, test_int_bounds, test_required,
                     test_str_length_and_secret_not_echoed, test_failure_frees_earlier_strings,
                     test_small_err_buffer, test_log_masks_secret, test_usage);
    rc |= NF_TEST_RUN(NULL, NULL, test_split_addr, test_split_addr_rejects);
    return rc;
}
