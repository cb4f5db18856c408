/* Unit tests for nf_crypto: known vectors and the API key format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <string.h>

#include "nf_crypto.h"
#include "nf_test.h"

static int init(void **state)
{
    return nf_crypto_init();
}

static void test_sha256_vectors(void **state)
{
    char hex[NF_SHA256_HEX_LEN + 1];
    uint8_t raw[32];

    nf_crypto_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    nf_crypto_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    nf_crypto_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* The binary form matches the hex form. */
    nf_crypto_sha256("abc", 3, raw);
    assert_int_equal(raw[0], 0xba);
    assert_int_equal(raw[31], 0xad);
}

static void test_crc32(void **state)
{
    assert_int_equal(nf_crypto_crc32("123456789", 9), 0xCBF43926U);
    assert_int_equal(nf_crypto_crc32("", 0), 0);
    assert_int_equal(nf_crypto_crc32("The quick brown fox jumps over the lazy dog", 43),
                     0x414FA339U);
}

static void test_equal(void **state)
{
    assert_true(nf_crypto_equal("abcdef", "abcdef", 6));
    assert_false(nf_crypto_equal("abcdef", "abcdeg", 6));
    assert_false(nf_crypto_equal("xbcdef", "abcdef", 6));
}

static void test_b64url(void **state)
{
    const uint8_t data[] = {0xfb, 0xff, 0xfe, 0x01};
    char out[16], tiny[4];

    /* RFC 4648 vectors, without padding. */
    assert_int_equal(nf_crypto_b64url("f", 1, out, sizeof(out)), 2);
    assert_string_equal(out, "Zg");
    assert_int_equal(nf_crypto_b64url("foobar", 6, out, sizeof(out)), 8);
    assert_string_equal(out, "Zm9vYmFy");
    /* The url-safe alphabet: '-' and '_' instead of '+' and '/'. */
    assert_int_equal(nf_crypto_b64url(data, sizeof(data), out, sizeof(out)), 6);
    assert_string_equal(out, "-__-AQ");
    /* Too small an output buffer writes nothing. */
    assert_int_equal(nf_crypto_b64url("foobar", 6, tiny, sizeof(tiny)), 0);
    assert_string_equal(tiny, "");
}

static void test_random_and_token(void **state)
{
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
    char t1[64], t2[64];

    nf_crypto_random(a, sizeof(a));
    nf_crypto_random(b, sizeof(b));
    assert_memory_not_equal(a, zero, sizeof(a));
    assert_memory_not_equal(a, b, sizeof(a));
    nf_crypto_token(32, t1, sizeof(t1));
    nf_crypto_token(32, t2, sizeof(t2));
    assert_int_equal(strlen(t1), 43);
    assert_string_not_equal(t1, t2);
    assert_int_equal(strspn(t1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     43);
}

static void test_apikey_roundtrip(void **state)
{
    char k1[NF_APIKEY_LEN + 1], k2[NF_APIKEY_LEN + 1];
    int i;

    for (i = 0; i < 100; i++) {
        nf_crypto_apikey_new(k1);
        assert_int_equal(strlen(k1), NF_APIKEY_LEN);
        assert_memory_equal(k1, "nexa_", 5);
        assert_true(nf_crypto_apikey_valid(k1));
    }
    nf_crypto_apikey_new(k2);
    assert_string_not_equal(k1, k2);
}

/* A known key: the checksum is CRC32 of the first 48 chars in 6 base62 digits. */
static void test_apikey_checksum_format(void **state)
{
    const char body[] = "nexa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    char key[NF_APIKEY_LEN + 1];
    uint32_t crc = nf_crypto_crc32(body, 48);
    const char *digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    int i;

    assert_int_equal(strlen(body), 48);
    memcpy(key, body, 48);
    for (i = 5; i >= 0; i--) {
        key[48 + i] = digits[crc % 62];
        crc /= 62;
    }
    key[NF_APIKEY_LEN] = '\0';
    assert_true(nf_crypto_apikey_valid(key));
}

static void test_apikey_rejects(void **state)
{
    char key[NF_APIKEY_LEN + 1], bad[NF_APIKEY_LEN + 2];
    size_t i;
    int rejected = 0;

    nf_crypto_apikey_new(key);

    /* Every single-character typo in the body or checksum is refused. */
    for (i = 5; i < NF_APIKEY_LEN; i++) {
        memcpy(bad, key, sizeof(key));
        bad[i] = bad[i] == 'a' ? 'b' : 'a';
        if (!nf_crypto_apikey_valid(bad))
            rejected++;
    }
    assert_int_equal(rejected, NF_APIKEY_LEN - 5);

    /* Wrong prefix. */
    memcpy(bad, key, sizeof(key));
    bad[0] = 'N';
    assert_false(nf_crypto_apikey_valid(bad));
    /* One character short and one too long. */
    memcpy(bad, key, sizeof(key));
    bad[NF_APIKEY_LEN - 1] = '\0';
    assert_false(nf_crypto_apikey_valid(bad));
    memcpy(bad, key, sizeof(key));
    bad[NF_APIKEY_LEN] = 'x';
    bad[NF_APIKEY_LEN + 1] = '\0';
    assert_false(nf_crypto_apikey_valid(bad));
    /* Out of alphabet characters. */
    memcpy(bad, key, sizeof(key));
    bad[10] = '+';
    assert_false(nf_crypto_apikey_valid(bad));
    memcpy(bad, key, sizeof(key));
    bad[NF_APIKEY_LEN - 1] = '-'; /* '-' is base64url but not base62 */
    assert_false(nf_crypto_apikey_valid(bad));
    assert_false(nf_crypto_apikey_valid(""));
    assert_false(nf_crypto_apikey_valid(NULL));
    assert_false(nf_crypto_apikey_valid("nexa_"));
}

int main(void)
{
    return NF_TEST_RUN_GROUP(init, NULL, test_sha256_vectors, test_crc32, test_equal, test_b64url,
                             test_random_and_token, test_apikey_roundtrip,
                             test_apikey_checksum_format, test_apikey_rejects);
}
