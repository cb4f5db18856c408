/* Unit tests for nf_id: ULID encoding, monotonic order and validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <string.h>
#include <time.h>

#include "nf_crypto.h"
#include "nf_id.h"
#include "nf_test.h"

static int init(void **state)
{
    return nf_crypto_init();
}

static void test_known_vectors(void **state)
{
    const uint8_t zero[10] = {0}, seq[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    const uint8_t ones[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    char id[NF_ID_MAX];

    /* The time part of the ULID spec's example. */
    assert_int_equal(nf_id_new_at("job", 1469918176385ULL, zero, id, sizeof(id)), 0);
    assert_string_equal(id, "job_01ARYZ6S410000000000000000");
    assert_int_equal(nf_id_new_at("job", 1469918176385ULL, seq, id, sizeof(id)), 0);
    assert_string_equal(id, "job_01ARYZ6S41041061050R3GG28A");
    /* Largest time and random part. */
    assert_int_equal(nf_id_new_at("evt", (1ULL << 48) - 1, ones, id, sizeof(id)), 0);
    assert_string_equal(id, "evt_7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    /* An empty prefix gives the bare ULID. */
    assert_int_equal(nf_id_new_at("", 0, zero, id, sizeof(id)), 0);
    assert_string_equal(id, "00000000000000000000000000");
}

static void test_new_at_failures(void **state)
{
    const uint8_t zero[10] = {0};
    char id[NF_ID_MAX];

    /* Time past 48 bits. */
    assert_int_equal(nf_id_new_at("job", 1ULL << 48, zero, id, sizeof(id)), -1);
    /* "job_" + 26 + NUL = 31 bytes: 30 is one short, 31 fits. */
    assert_int_equal(nf_id_new_at("job", 1, zero, id, 30), -1);
    assert_int_equal(nf_id_new_at("job", 1, zero, id, 31), 0);
    assert_int_equal(strlen(id), 30);
}

static void test_new_is_valid_and_current(void **state)
{
    char id[NF_ID_MAX];
    uint64_t now = (uint64_t)time(NULL) * 1000, t;

    assert_int_equal(nf_id_new("job", id, sizeof(id)), 0);
    assert_int_equal(strlen(id), 4 + NF_ULID_LEN);
    assert_true(nf_id_valid("job", id));
    t = nf_id_time_ms(id);
    assert_true(t + 5000 >= now && t <= now + 5000);
    assert_int_equal(nf_id_new("job", id, 10), -1);
}

/* Many ids in a row (most within the same millisecond) sort strictly ascending. */
static void test_monotonic(void **state)
{
    char prev[NF_ID_MAX], cur[NF_ID_MAX];
    int i;

    assert_int_equal(nf_id_new("req", prev, sizeof(prev)), 0);
    for (i = 0; i < 10000; i++) {
        assert_int_equal(nf_id_new("req", cur, sizeof(cur)), 0);
        assert_true(strcmp(prev, cur) < 0);
        memcpy(prev, cur, sizeof(cur));
    }
}

static void test_time_ordering(void **state)
{
    const uint8_t big[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const uint8_t small[10] = {0};
    char a[NF_ID_MAX], b[NF_ID_MAX];

    /* An id from a later millisecond sorts after, whatever the random part. */
    assert_int_equal(nf_id_new_at("job", 1000, big, a, sizeof(a)), 0);
    assert_int_equal(nf_id_new_at("job", 1001, small, b, sizeof(b)), 0);
    assert_true(strcmp(a, b) < 0);
    assert_int_equal(nf_id_time_ms(a), 1000);
    assert_int_equal(nf_id_time_ms(b), 1001);
}

static void test_valid_rejects(void **state)
{
    const char *good = "job_01ARYZ6S41041061050R3GG28A";

    assert_true(nf_id_valid("job", good));
    assert_false(nf_id_valid("evt", good));                              /* other prefix */
    assert_false(nf_id_valid("jo", good));                               /* prefix of prefix */
    assert_false(nf_id_valid("job", "job01ARYZ6S41041061050R3GG28A"));   /* no separator */
    assert_false(nf_id_valid("job", "job_01ARYZ6S41041061050R3GG28"));   /* 25 chars */
    assert_false(nf_id_valid("job", "job_01ARYZ6S41041061050R3GG28AA")); /* 27 chars */
    assert_false(nf_id_valid("job", "job_01ARYZ6S41041061050R3GG28I"));  /* I not Crockford */
    assert_false(nf_id_valid("job", "job_01ARYZ6S41041061050R3GG28U"));  /* U not Crockford */
    assert_false(nf_id_valid("job", "job_01aryz6s41041061050r3gg28a"));  /* lowercase */
    assert_false(nf_id_valid("job", "job_81ARYZ6S41041061050R3GG28A"));  /* > 128 bits */
    assert_false(nf_id_valid("job", "job_"));
    assert_false(nf_id_valid("job", ""));
    assert_false(nf_id_valid("job", NULL));
    assert_true(nf_id_valid("", "01ARYZ6S41041061050R3GG28A"));
}

static void test_time_ms_invalid(void **state)
{
    assert_int_equal(nf_id_time_ms("job_01ARYZ6S41041061050R3GG28A"), 1469918176385ULL);
    assert_int_equal(nf_id_time_ms("01ARYZ6S41041061050R3GG28A"), 1469918176385ULL);
    assert_int_equal(nf_id_time_ms("job_nope"), 0);
    assert_int_equal(nf_id_time_ms(""), 0);
    assert_int_equal(nf_id_time_ms(NULL), 0);
}

int main(void)
{
    return NF_TEST_RUN_GROUP(init, NULL, test_known_vectors, test_new_at_failures,
                             test_new_is_valid_and_current, test_monotonic, test_time_ordering,
                             test_valid_rejects, test_time_ms_invalid);
}
