/*
 * Unit tests for a consumer's group membership rows in nf_svc: the static membership id
 * (<P>_INSTANCE_ID, "auto" derived from the service, host and port or NF_REPLICA; explicit;
 * empty for dynamic membership; characters Kafka refuses) and NF_KAFKA_SESSION_TIMEOUT_MS.
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
#include <unistd.h>

#include "nf_svc.h"
#include "nf_test.h"

static int init_never(struct nf_svc *svc)
{
    return -1;
}

static const char *const topics[] = {"forge.usage", NULL};

static const struct nf_svc_desc consumer = {
    .name = "g",
    .summary = "a consumer",
    .env_prefix = "NF_G",
    .addr = "127.0.0.1:8123",
    .consume = topics,
    .group = "nf-g",
    .init = init_never,
};

/* A producer only: no membership rows. */
static const struct nf_svc_desc producer = {
    .name = "p",
    .summary = "a producer",
    .env_prefix = "NF_P",
    .addr = "127.0.0.1:8124",
    .needs = NF_SVC_PRODUCER,
    .init = init_never,
};

static const char *const env_names[] = {"NF_G_ADDR", "NF_G_INSTANCE_ID", "NF_REPLICA",
                                        "NF_KAFKA_SESSION_TIMEOUT_MS"};

static int setup(void **state)
{
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    return 0;
}

/* The id "auto" gives on this host with replica (NULL: none) and addr. */
static void auto_id(char *out, size_t len, const char *replica, const char *addr)
{
    char host[256] = "";

    assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
    nf_svc_instance_id(out, len, "g", host, replica, addr);
}

/* Loads the consumer with the environment as it is; returns the instance id (a copy). */
static void loaded_id(char *out, size_t len)
{
    struct nf_svc svc;
    char err[256] = "";

    assert_int_equal(nf_svc_load(&svc, &consumer, err, sizeof(err)), 0);
    snprintf(out, len, "%s", svc.cfg.instance_id);
    nf_svc_free(&svc);
}

static void test_instance_id_derivation(void **state)
{
    char id[256];

    nf_svc_instance_id(id, sizeof(id), "scheduler", "node-1", NULL, "127.0.0.1:8102");
    assert_string_equal(id, "nf-scheduler.node-1.8102");
    nf_svc_instance_id(id, sizeof(id), "scheduler", "node-1", "", "[::1]:8102");
    assert_string_equal(id, "nf-scheduler.node-1.8102");
    nf_svc_instance_id(id, sizeof(id), "billing", "node-1", "b2", "127.0.0.1:8103");
    assert_string_equal(id, "nf-billing.node-1.b2");
    /* characters Kafka refuses in an id become '_' */
    nf_svc_instance_id(id, sizeof(id), "wm", "my host@x", "a/b", NULL);
    assert_string_equal(id, "nf-wm.my_host_x.a_b");
    nf_svc_instance_id(id, sizeof(id), "wm", "", NULL, NULL);
    assert_string_equal(id, "nf-wm");
    /* truncated, never overrun */
    nf_svc_instance_id(id, 8, "scheduler", "node-1", NULL, "127.0.0.1:8102");
    assert_string_equal(id, "nf-sche");
}

static void test_auto_id_per_port_and_replica(void **state)
{
    char got[256], want[256];

    loaded_id(got, sizeof(got));
    auto_id(want, sizeof(want), NULL, "127.0.0.1:8123");
    assert_string_equal(got, want);

    /* a second replica on the same host listens elsewhere: another id */
    setenv("NF_G_ADDR", "127.0.0.1:8133", 1);
    loaded_id(got, sizeof(got));
    auto_id(want, sizeof(want), NULL, "127.0.0.1:8133");
    assert_string_equal(got, want);

    setenv("NF_REPLICA", "r2", 1);
    loaded_id(got, sizeof(got));
    auto_id(want, sizeof(want), "r2", NULL);
    assert_string_equal(got, want);
    assert_non_null(strstr(got, ".r2"));
    assert_null(strstr(got, "8133"));
}

static void test_explicit_empty_and_refused_ids(void **state)
{
    struct nf_svc svc;
    char got[256], err[256] = "";

    setenv("NF_G_INSTANCE_ID", "sched-a.1_x", 1);
    loaded_id(got, sizeof(got));
    assert_string_equal(got, "sched-a.1_x");

    setenv("NF_G_INSTANCE_ID", "", 1); /* dynamic membership */
    loaded_id(got, sizeof(got));
    assert_string_equal(got, "");

    setenv("NF_G_INSTANCE_ID", "a b", 1);
    assert_int_equal(nf_svc_load(&svc, &consumer, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_G_INSTANCE_ID"));
    assert_non_null(strstr(err, "letters, digits"));
    nf_svc_free(&svc);

    setenv("NF_G_INSTANCE_ID", "..", 1);
    assert_int_equal(nf_svc_load(&svc, &consumer, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NF_G_INSTANCE_ID"));
    nf_svc_free(&svc);
}

static void test_session_timeout_row(void **state)
{
    struct nf_svc svc;
    char err[256] = "";

    assert_int_equal(nf_svc_load(&svc, &consumer, err, sizeof(err)), 0);
    assert_int_equal(svc.cfg.session_timeout_ms, NF_KAFKA_SESSION_TIMEOUT_MS);
    nf_svc_free(&svc);
    setenv("NF_KAFKA_SESSION_TIMEOUT_MS", "999", 1);
    assert_int_equal(nf_svc_load(&svc, &consumer, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "between 1000 and 30000"));
    nf_svc_free(&svc);
    setenv("NF_KAFKA_SESSION_TIMEOUT_MS", "10000", 1);
    assert_int_equal(nf_svc_load(&svc, &consumer, err, sizeof(err)), 0);
    assert_int_equal(svc.cfg.session_timeout_ms, 10000);
    nf_svc_free(&svc);
}

static void test_only_consumers_have_membership_rows(void **state)
{
    struct nf_svc svc;
    char err[256] = "";

    assert_int_equal(nf_svc_load(&svc, &producer, err, sizeof(err)), 0);
    for (size_t i = 0; i < svc.nshared; i++) {
        assert_null(strstr(svc.shared_opts[i].env, "INSTANCE_ID"));
        assert_string_not_equal(svc.shared_opts[i].env, "NF_REPLICA");
        assert_string_not_equal(svc.shared_opts[i].env, "NF_KAFKA_SESSION_TIMEOUT_MS");
    }
    nf_svc_free(&svc);
}

int main(void)
{
    return NF_TEST_RUN(setup, NULL, test_instance_id_derivation, test_auto_id_per_port_and_replica,
                       test_explicit_empty_and_refused_ids, test_session_timeout_row,
                       test_only_consumers_have_membership_rows);
}
