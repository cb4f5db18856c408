/* Unit tests for nf-auth's pure helpers (keys.c): key hashes, e-mail normalisation, the
 * cache lifetime of a key record and its JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_json.h"

#define HASH "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static void test_hash_valid(void **state)
{
    char buf[80];

    assert_true(auth_keys_hash_valid(HASH));
    assert_true(
        auth_keys_hash_valid("0000000000000000000000000000000000000000000000000000000000000000"));
    assert_false(auth_keys_hash_valid(NULL));
    assert_false(auth_keys_hash_valid(""));
    /* uppercase is not how we store hashes */
    assert_false(
        auth_keys_hash_valid("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"));
    snprintf(buf, sizeof(buf), "%.63s", HASH); /* 63 digits */
    assert_false(auth_keys_hash_valid(buf));
    snprintf(buf, sizeof(buf), "%s0", HASH); /* 65 digits */
    assert_false(auth_keys_hash_valid(buf));
    snprintf(buf, sizeof(buf), "%.63sg", HASH); /* not hex */
    assert_false(auth_keys_hash_valid(buf));
    snprintf(buf, sizeof(buf), " %.63s", HASH);
    assert_false(auth_keys_hash_valid(buf));
}

static void norm_ok(const char *in, const char *want)
{
    char out[AUTH_EMAIL_MAX + 1];

    if (auth_keys_email_normalize(in, out, sizeof(out)) != 0)
        fail_msg("refused \"%s\"", in);
    assert_string_equal(out, want);
}

static void norm_bad(const char *in)
{
    char out[AUTH_EMAIL_MAX + 1];

    if (auth_keys_email_normalize(in, out, sizeof(out)) != -1)
        fail_msg("accepted \"%s\"", in ? in : "(null)");
}

static void test_email(void **state)
{
    char long_ok[300], too_long[300];

    norm_ok("dev@nexa.dev", "dev@nexa.dev");
    norm_ok("  Dev.Ops+forge@Example.COM \n", "dev.ops+forge@example.com");
    norm_ok("a@b.co", "a@b.co");
    norm_ok("\tx@sub.domain.org\t", "x@sub.domain.org");

    norm_bad(NULL);
    norm_bad("");
    norm_bad("   ");
    norm_bad("plainaddress");
    norm_bad("@nexa.dev");
    norm_bad("dev@");
    norm_bad("dev@nexa");      /* no dot in the domain */
    norm_bad("dev@.nexa.dev"); /* dot first */
    norm_bad("dev@nexa.dev."); /* dot last */
    norm_bad("a@b@c.dev");
    norm_bad("de v@nexa.dev");
    norm_bad("dev@ne\txa.dev");
    norm_bad("dev\x01@nexa.dev");

    /* 254 characters is the limit */
    memset(long_ok, 'a', sizeof(long_ok));
    memcpy(long_ok + 254 - strlen("@nexa.dev"), "@nexa.dev", strlen("@nexa.dev") + 1);
    assert_int_equal(strlen(long_ok), 254);
    norm_ok(long_ok, long_ok);
    memset(too_long, 'a', sizeof(too_long));
    memcpy(too_long + 255 - strlen("@nexa.dev"), "@nexa.dev", strlen("@nexa.dev") + 1);
    assert_int_equal(strlen(too_long), 255);
    norm_bad(too_long);
}

static void test_email_small_buffer(void **state)
{
    char out[8];

    assert_int_equal(auth_keys_email_normalize("a@b.co", out, sizeof(out)), 0);
    assert_int_equal(auth_keys_email_normalize("ab@c.co", out, 7), -1); /* no room for NUL */
    assert_int_equal(auth_keys_email_normalize("abc@def.gh", out, sizeof(out)), -1);
}

static void test_cache_ttl(void **state)
{
    assert_int_equal(auth_keys_cache_ttl(-1), AUTH_CACHE_TTL_S); /* never expires */
    assert_int_equal(auth_keys_cache_ttl(100000), AUTH_CACHE_TTL_S);
    assert_int_equal(auth_keys_cache_ttl(300), 300);
    assert_int_equal(auth_keys_cache_ttl(299), 299);
    assert_int_equal(auth_keys_cache_ttl(1), 1);
    assert_int_equal(auth_keys_cache_ttl(0), 0); /* expiring now: do not cache */
    assert_int_equal(AUTH_CACHE_TTL_S, 300);
}

static void test_record(void **state)
{
    char *s = auth_keys_record("key_1", "usr_2", NULL);
    cJSON *rec = cJSON_Parse(s);

    assert_non_null(rec);
    assert_string_equal(nf_json_str(rec, "key_id"), "key_1");
    assert_string_equal(nf_json_str(rec, "user_id"), "usr_2");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rec, "expires_at")));
    assert_int_equal(cJSON_GetArraySize(rec), 3);
    cJSON_Delete(rec);
    free(s);

    s = auth_keys_record("key_1", "usr_2", "2030-01-01T00:00:00.000Z");
    rec = cJSON_Parse(s);
    assert_string_equal(nf_json_str(rec, "expires_at"), "2030-01-01T00:00:00.000Z");
    cJSON_Delete(rec);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_valid),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_email_small_buffer),
        cmocka_unit_test(test_cache_ttl),
        cmocka_unit_test(test_record),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
