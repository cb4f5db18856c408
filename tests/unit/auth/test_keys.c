/* Unit tests for nf-auth's pure helpers (keys.c): key hashes, e-mail normalisation, the
 * cache lifetime and JSON of key and session records, key names, password rules, UTF-8,
 * session tokens and cookies, the login delay; and the API key format (nf_crypto) as
 * nf-auth issues it. */
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
#include "nf_test.h"

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
    char *s = auth_keys_record("key_1", "usr_2", NULL, 0, 0);
    cJSON *rec = cJSON_Parse(s);

    assert_non_null(rec);
    assert_string_equal(nf_json_str(rec, "key_id"), "key_1");
    assert_string_equal(nf_json_str(rec, "user_id"), "usr_2");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rec, "expires_at")));
    assert_int_equal(cJSON_GetArraySize(rec), 3);
    cJSON_Delete(rec);
    free(s);

    s = auth_keys_record("key_1", "usr_2", "2030-01-01T00:00:00.000Z", 0, 0);
    rec = cJSON_Parse(s);
    assert_string_equal(nf_json_str(rec, "expires_at"), "2030-01-01T00:00:00.000Z");
    cJSON_Delete(rec);
    free(s);

    /* a key's own limits travel with it to the gateway */
    s = auth_keys_record("key_1", "usr_2", NULL, 60, 5);
    rec = cJSON_Parse(s);
    assert_int_equal(nf_json_int(rec, "rate_limit_per_minute", -1), 60);
    assert_int_equal(nf_json_int(rec, "burst", -1), 5);
    assert_int_equal(cJSON_GetArraySize(rec), 5);
    cJSON_Delete(rec);
    free(s);

    s = auth_session_record("usr_2", "2030-01-01T00:00:00.000Z");
    rec = cJSON_Parse(s);
    assert_string_equal(nf_json_str(rec, "user_id"), "usr_2");
    assert_string_equal(nf_json_str(rec, "expires_at"), "2030-01-01T00:00:00.000Z");
    assert_null(cJSON_GetObjectItemCaseSensitive(rec, "key_id")); /* not a key record */
    assert_int_equal(cJSON_GetArraySize(rec), 2);
    cJSON_Delete(rec);
    free(s);
}

static void test_utf8(void **state)
{
    assert_int_equal(auth_utf8_len(""), 0);
    assert_int_equal(auth_utf8_len("abc"), 3);
    assert_int_equal(auth_utf8_len("h\xc3\xa9llo"), 5);     /* e acute */
    assert_int_equal(auth_utf8_len("\xe2\x82\xac"), 1);     /* euro sign */
    assert_int_equal(auth_utf8_len("\xf0\x9f\x94\x91"), 1); /* U+1F511 */
    assert_int_equal(auth_utf8_len(NULL), -1);
    assert_int_equal(auth_utf8_len("\xc3"), -1);             /* truncated */
    assert_int_equal(auth_utf8_len("\xc0\xaf"), -1);         /* overlong '/' */
    assert_int_equal(auth_utf8_len("\xe0\x80\xaf"), -1);     /* overlong */
    assert_int_equal(auth_utf8_len("\xed\xa0\x80"), -1);     /* surrogate */
    assert_int_equal(auth_utf8_len("\xf4\x90\x80\x80"), -1); /* > U+10FFFF */
    assert_int_equal(auth_utf8_len("\x80"), -1);             /* lone continuation */
    assert_int_equal(auth_utf8_len("\xff"), -1);
}

static void test_key_name(void **state)
{
    char name[80];

    assert_true(auth_keys_name_valid("laptop"));
    assert_true(auth_keys_name_valid("CI / staging \xe2\x80\x94 eu"));
    memset(name, 'n', 64);
    name[64] = '\0';
    assert_true(auth_keys_name_valid(name));
    name[64] = 'n';
    name[65] = '\0';
    assert_false(auth_keys_name_valid(name)); /* 65 bytes */
    assert_false(auth_keys_name_valid(NULL));
    assert_false(auth_keys_name_valid(""));
    assert_false(auth_keys_name_valid("tab\there"));
    assert_false(auth_keys_name_valid("new\nline"));
    assert_false(auth_keys_name_valid("del\x7f"));
    assert_false(auth_keys_name_valid("c1\xc2\x85")); /* NEL, a C1 control */
    assert_false(auth_keys_name_valid("bad\xff"));
}

static void test_password_rules(void **state)
{
    char long_pw[1100];

    assert_null(auth_password_problem("correct horse battery", "dev@nexa.dev"));
    assert_null(auth_password_problem("0123456789", NULL)); /* exactly 10 */
    /* 10 characters of 2 bytes each: counted as characters */
    assert_null(auth_password_problem("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
                                      NULL));
    assert_non_null(auth_password_problem("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", NULL));
    assert_non_null(auth_password_problem("012345678", NULL)); /* 9 */
    assert_non_null(auth_password_problem(NULL, NULL));
    assert_non_null(auth_password_problem("", NULL));
    assert_non_null(auth_password_problem("0123456789\xff", NULL));
    assert_non_null(auth_password_problem("0123456789\n", NULL));
    /* not the e-mail address, in any case */
    assert_non_null(auth_password_problem("Dev@Nexa.dev", "dev@nexa.dev"));
    assert_null(auth_password_problem("dev@nexa.dev!", "dev@nexa.dev"));
    memset(long_pw, 'p', 1024);
    long_pw[1024] = '\0';
    assert_null(auth_password_problem(long_pw, NULL));
    long_pw[1024] = 'p';
    long_pw[1025] = '\0';
    assert_non_null(auth_password_problem(long_pw, NULL));
    /* the message never repeats the password */
    assert_null(strstr(auth_password_problem("secret", NULL), "secret"));
}

static void test_session_token(void **state)
{
    char a[AUTH_SESSION_TOKEN_LEN + 1], b[AUTH_SESSION_TOKEN_LEN + 1], bad[64];

    auth_session_token_new(a);
    auth_session_token_new(b);
    assert_int_equal(strlen(a), AUTH_SESSION_TOKEN_LEN);
    assert_memory_equal(a, "nfs_", 4);
    assert_true(auth_session_token_valid(a));
    assert_string_not_equal(a, b); /* random */
    assert_false(auth_session_token_valid(NULL));
    assert_false(auth_session_token_valid(""));
    snprintf(bad, sizeof(bad), "%sx", a);
    assert_false(auth_session_token_valid(bad)); /* too long */
    snprintf(bad, sizeof(bad), "%.46s", a);
    assert_false(auth_session_token_valid(bad)); /* too short */
    snprintf(bad, sizeof(bad), "nfx_%s", a + 4);
    assert_false(auth_session_token_valid(bad));
    snprintf(bad, sizeof(bad), "%s", a);
    bad[10] = '=';
    assert_false(auth_session_token_valid(bad));
}

static void test_cookie(void **state)
{
    char c[256], small[20];

    assert_int_equal(auth_session_cookie(c, sizeof(c), "nfs_TOKEN", 3600, false), 0);
    assert_string_equal(c, "nf_session=nfs_TOKEN; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax");
    assert_int_equal(auth_session_cookie(c, sizeof(c), "nfs_TOKEN", 60, true), 0);
    assert_string_equal(c, "nf_session=nfs_TOKEN; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; "
                           "Secure");
    /* the clearing cookie */
    assert_int_equal(auth_session_cookie(c, sizeof(c), NULL, 3600, false), 0);
    assert_string_equal(c, "nf_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    assert_int_equal(auth_session_cookie(small, sizeof(small), "nfs_TOKEN", 60, false), -1);
}

static void test_login_delay(void **state)
{
    assert_int_equal(auth_login_delay_ms(0, 250), 0);
    assert_int_equal(auth_login_delay_ms(-3, 250), 0);
    assert_int_equal(auth_login_delay_ms(1, 250), 250);
    assert_int_equal(auth_login_delay_ms(4, 250), 1000);
    assert_int_equal(auth_login_delay_ms(10, 250), 2500);
    assert_int_equal(auth_login_delay_ms(11, 250), 2500); /* capped */
    assert_int_equal(auth_login_delay_ms(1000000000000LL, 250), 2500);
    assert_int_equal(auth_login_delay_ms(5, 0), 0);
}

/* The keys nf-auth hands out: format, checksum, and what a typo does to them. */
static void test_api_key_format(void **state)
{
    char key[NF_APIKEY_LEN + 1], other[NF_APIKEY_LEN + 1], hash[NF_SHA256_HEX_LEN + 1];
    char hash2[NF_SHA256_HEX_LEN + 1];
    size_t i;

    assert_int_equal(nf_crypto_init(), 0);
    nf_crypto_apikey_new(key);
    nf_crypto_apikey_new(other);
    assert_int_equal(strlen(key), 54);
    assert_memory_equal(key, "nexa_", 5);
    assert_true(nf_crypto_apikey_valid(key));
    assert_string_not_equal(key, other);
    for (i = 5; i < NF_APIKEY_LEN; i++) {
        char typo[NF_APIKEY_LEN + 1];

        memcpy(typo, key, sizeof(typo));
        typo[i] = typo[i] == 'A' ? 'B' : 'A'; /* one character mistyped */
        if (nf_crypto_apikey_valid(typo))
            fail_msg("typo at %zu accepted", i);
    }
    /* only the SHA-256 is stored: hex, 64 digits, the same for the same key */
    nf_crypto_sha256_hex(key, NF_APIKEY_LEN, hash);
    nf_crypto_sha256_hex(key, NF_APIKEY_LEN, hash2);
    assert_true(auth_keys_hash_valid(hash));
    assert_string_equal(hash, hash2);
    assert_null(strstr(hash, key + 5));
    nf_crypto_sha256_hex(other, NF_APIKEY_LEN, hash2);
    assert_string_not_equal(hash, hash2);
    /* the known vector: SHA-256("test") */
    nf_crypto_sha256_hex("test", 4, hash);
    assert_string_equal(hash, HASH);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_hash_valid, test_email, test_email_small_buffer,
                       test_cache_ttl, test_record, test_utf8, test_key_name, test_password_rules,
                       test_session_token, test_cookie, test_login_delay, test_api_key_format);
}
