/* Unit tests for the gateway's credential handling (keys.c): API key header extraction,
 * the nf_session cookie, key and session records (their expires_at parsing is nf_time's,
 * tested in test_nf_time). The asynchronous lookup is covered by test_it_ratelimit (the
 * script) and the end-to-end suite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <string.h>

#include "gw.h"
#include "nf_crypto.h"
#include "nf_test.h"

#define USR "usr_01ARYZ6S41041061050R3GG28A"
#define KEY "key_01ARYZ6S41041061050R3GG28B"
/* 2030-01-01T00:00:00Z in ms since the epoch */
#define T2030 1893456000000ULL

static char valid_key[NF_APIKEY_LEN + 1];

static int setup(void **state)
{
    if (nf_crypto_init() != 0)
        return -1;
    nf_crypto_apikey_new(valid_key);
    return nf_crypto_apikey_valid(valid_key) ? 0 : -1;
}

/* Runs gw_keys_extract and checks the outcome; on success the key must be valid_key. */
static void extract(const char *x, const char *authz, int want)
{
    char out[NF_APIKEY_LEN + 1];
    int rc;

    memset(out, '#', sizeof(out));
    rc = gw_keys_extract(x, authz, out);
    if (rc != want)
        fail_msg("x=[%s] authz=[%s]: got %d, want %d", x ? x : "(null)", authz ? authz : "(null)",
                 rc, want);
    if (want == GW_KEY_OK)
        assert_string_equal(out, valid_key);
    else
        assert_int_equal(out[0], '#'); /* untouched */
}

static void test_extract_header_forms(void **state)
{
    char buf[128];

    extract(valid_key, NULL, GW_KEY_OK);
    snprintf(buf, sizeof(buf), "  %s\t ", valid_key);
    extract(buf, NULL, GW_KEY_OK);
    snprintf(buf, sizeof(buf), "Bearer %s", valid_key);
    extract(NULL, buf, GW_KEY_OK);
    snprintf(buf, sizeof(buf), "bearer %s", valid_key);
    extract(NULL, buf, GW_KEY_OK);
    snprintf(buf, sizeof(buf), "  BEARER \t %s  ", valid_key);
    extract(NULL, buf, GW_KEY_OK);
    /* a blank X-Nexa-Api-Key falls back to Authorization */
    snprintf(buf, sizeof(buf), "Bearer %s", valid_key);
    extract("   ", buf, GW_KEY_OK);
    /* X-Nexa-Api-Key wins over Authorization */
    extract(valid_key, "Bearer nope", GW_KEY_OK);
}

static void test_extract_missing(void **state)
{
    char buf[128];

    extract(NULL, NULL, GW_KEY_MISSING);
    extract("", NULL, GW_KEY_MISSING);
    extract(" \t ", "", GW_KEY_MISSING);
    extract(NULL, "Bearer", GW_KEY_MISSING);
    extract(NULL, "Bearer    ", GW_KEY_MISSING);
    snprintf(buf, sizeof(buf), "Basic %s", valid_key);
    extract(NULL, buf, GW_KEY_MISSING); /* another scheme carries no API key */
    snprintf(buf, sizeof(buf), "Bearer%s", valid_key);
    extract(NULL, buf, GW_KEY_MISSING); /* no blank after the scheme */
}

static void test_extract_malformed(void **state)
{
    char buf[128], bad[NF_APIKEY_LEN + 1];

    extract("not-a-key", NULL, GW_KEY_MALFORMED);
    extract(NULL, "Bearer not-a-key", GW_KEY_MALFORMED);
    /* right shape, wrong checksum */
    extract("nexa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000", NULL, GW_KEY_MALFORMED);
    /* one character changed */
    memcpy(bad, valid_key, sizeof(bad));
    bad[10] = bad[10] == 'A' ? 'B' : 'A';
    extract(bad, NULL, GW_KEY_MALFORMED);
    /* wrong prefix */
    memcpy(bad, valid_key, sizeof(bad));
    bad[0] = 'N';
    extract(bad, NULL, GW_KEY_MALFORMED);
    /* too short, too long */
    snprintf(buf, sizeof(buf), "%.*s", NF_APIKEY_LEN - 1, valid_key);
    extract(buf, NULL, GW_KEY_MALFORMED);
    snprintf(buf, sizeof(buf), "%sA", valid_key);
    extract(buf, NULL, GW_KEY_MALFORMED);
    /* a space inside */
    snprintf(buf, sizeof(buf), "%.20s %s", valid_key, valid_key + 21);
    extract(buf, NULL, GW_KEY_MALFORMED);
    /* X-Nexa-Api-Key wins even when it is the bad one */
    snprintf(buf, sizeof(buf), "Bearer %s", valid_key);
    extract("nexa_bad", buf, GW_KEY_MALFORMED);
}

static int parse(const char *json, uint64_t now, struct gw_principal *who)
{
    return gw_keys_parse_record(json, strlen(json), now, false, who);
}

static int parse_session(const char *json, uint64_t now, struct gw_principal *who)
{
    return gw_keys_parse_record(json, strlen(json), now, true, who);
}

static void test_record(void **state)
{
    struct gw_principal who;
    uint64_t exp = T2030;

    memset(&who, 0, sizeof(who));
    assert_int_equal(
        parse("{\"key_id\":\"" KEY "\",\"user_id\":\"" USR "\",\"expires_at\":null}", exp, &who),
        0);
    assert_string_equal(who.user_id, USR);
    assert_string_equal(who.key_id, KEY);
    assert_false(who.session);
    /* extra fields (the key's own rate limit) are fine */
    assert_int_equal(parse("{\"key_id\":\"" KEY "\",\"user_id\":\"" USR
                           "\",\"expires_at\":null,\"rate_limit_per_minute\":5,\"burst\":2}",
                           exp, &who),
                     0);
    /* expires_at may be absent */
    memset(&who, 0, sizeof(who));
    assert_int_equal(parse("{\"key_id\":\"" KEY "\",\"user_id\":\"" USR "\"}", exp, &who), 0);
    assert_string_equal(who.user_id, USR);
    /* not yet expired: one millisecond before */
    assert_int_equal(parse("{\"key_id\":\"" KEY "\",\"user_id\":\"" USR
                           "\",\"expires_at\":\"2030-01-01T00:00:00.000Z\"}",
                           exp - 1, &who),
                     0);
}

static void test_record_expired_and_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[]",
        "{}",
        "{\"key_id\":\"" KEY "\"}",
        "{\"user_id\":\"" USR "\"}",
        "{\"key_id\":\"" KEY "\",\"user_id\":\"usr_short\"}",
        "{\"key_id\":\"" KEY "\",\"user_id\":\"" KEY "\"}", /* wrong prefix */
        "{\"key_id\":\"" USR "\",\"user_id\":\"" USR "\"}",
        "{\"key_id\":\"" KEY "\",\"user_id\":7}",
        "{\"key_id\":\"" KEY "\",\"user_id\":\"" USR "\",\"expires_at\":1893456000}",
        "{\"key_id\":\"" KEY "\",\"user_id\":\"" USR "\",\"expires_at\":\"tomorrow\"}",
    };
    const char *expiring =
        "{\"key_id\":\"" KEY "\",\"user_id\":\"" USR "\",\"expires_at\":\"2030-01-01T00:00:00Z\"}";
    uint64_t exp = T2030;
    struct gw_principal who;
    size_t i;

    memset(&who, 'x', sizeof(who));
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], 0, &who) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(who.user_id[0], 'x'); /* untouched */
    }
    /* expired exactly now, and later */
    assert_int_equal(parse(expiring, exp, &who), -2);
    assert_int_equal(parse(expiring, exp + 60000, &who), -2);
    assert_int_equal(who.user_id[0], 'x');
}

static void test_session_record(void **state)
{
    static const char *const bad[] = {
        "{}",
        "{\"user_id\":\"usr_short\"}",
        "{\"user_id\":\"" KEY "\"}",
        /* a key record is not a session record */
        "{\"key_id\":\"" KEY "\",\"user_id\":\"" USR "\",\"expires_at\":null}",
        "{\"user_id\":\"" USR "\",\"expires_at\":\"soon\"}",
    };
    uint64_t exp = T2030;
    struct gw_principal who;
    size_t i;

    memset(&who, 'x', sizeof(who));
    assert_int_equal(parse_session("{\"user_id\":\"" USR
                                   "\",\"expires_at\":\"2030-01-01T00:00:00.000Z\"}",
                                   exp - 1, &who),
                     0);
    assert_string_equal(who.user_id, USR);
    assert_string_equal(who.key_id, "");
    assert_true(who.session);
    memset(&who, 'x', sizeof(who));
    assert_int_equal(parse_session("{\"user_id\":\"" USR
                                   "\",\"expires_at\":\"2030-01-01T00:00:00.000Z\"}",
                                   exp, &who),
                     -2);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse_session(bad[i], 0, &who) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(who.user_id[0], 'x'); /* untouched */
    }
    /* and a session record is not a key record */
    assert_int_equal(parse("{\"user_id\":\"" USR "\",\"expires_at\":null}", 0, &who), -1);
}

#define TOKEN "nfs_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdE"

/* Runs gw_keys_session_cookie and checks the outcome; on success the token is TOKEN. */
static void cookie(const char *header, int want)
{
    char out[GW_SESSION_TOKEN_LEN + 1];
    int rc;

    memset(out, '#', sizeof(out));
    rc = gw_keys_session_cookie(header, out);
    if (rc != want)
        fail_msg("cookie [%s]: got %d, want %d", header ? header : "(null)", rc, want);
    if (want == GW_KEY_OK)
        assert_string_equal(out, TOKEN);
    else
        assert_int_equal(out[0], '#'); /* untouched */
}

static void test_session_cookie(void **state)
{
    assert_int_equal(strlen(TOKEN), GW_SESSION_TOKEN_LEN);
    cookie("nf_session=" TOKEN, GW_KEY_OK);
    cookie("theme=dark; nf_session=" TOKEN "; lang=en", GW_KEY_OK);
    cookie("theme=dark;nf_session=" TOKEN, GW_KEY_OK);
    cookie("  nf_session=" TOKEN "  ", GW_KEY_OK);
    cookie("nf_session=\"" TOKEN "\"", GW_KEY_OK); /* RFC 6265 quoted value */
    /* a broken one first, a good one later (two paths): the good one counts */
    cookie("nf_session=garbage; nf_session=" TOKEN, GW_KEY_OK);

    cookie(NULL, GW_KEY_MISSING);
    cookie("", GW_KEY_MISSING);
    cookie("theme=dark; lang=en", GW_KEY_MISSING);
    cookie("nf_session=", GW_KEY_MISSING); /* the clearing cookie */
    cookie("nf_session=; theme=dark", GW_KEY_MISSING);
    cookie("xnf_session=" TOKEN, GW_KEY_MISSING); /* another cookie's name */
    cookie("nf_sessionx=" TOKEN, GW_KEY_MISSING);
    cookie("nf_session " TOKEN, GW_KEY_MISSING);

    cookie("nf_session=garbage", GW_KEY_MALFORMED);
    cookie("nf_session=" TOKEN "x", GW_KEY_MALFORMED); /* too long */
    cookie("nf_session=nfs_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCd",
           GW_KEY_MALFORMED); /* too short */
    cookie("nf_session=nfx_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdE", GW_KEY_MALFORMED);
    cookie("nf_session=nfs_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AbCdE", GW_KEY_MALFORMED);
    cookie("nf_session=\"" TOKEN, GW_KEY_MALFORMED); /* half quoted */
}

static void test_bearer_session(void **state)
{
    char out[GW_SESSION_TOKEN_LEN + 1];

    assert_int_equal(gw_keys_bearer_session("Bearer " TOKEN, out), GW_KEY_OK);
    assert_string_equal(out, TOKEN);
    assert_int_equal(gw_keys_bearer_session("  bearer   " TOKEN "  ", out), GW_KEY_OK);
    assert_int_equal(gw_keys_bearer_session(NULL, out), GW_KEY_MISSING);
    assert_int_equal(gw_keys_bearer_session("Basic " TOKEN, out), GW_KEY_MISSING);
    assert_int_equal(gw_keys_bearer_session("Bearer", out), GW_KEY_MISSING);
    assert_int_equal(gw_keys_bearer_session("Bearer nexa_abc", out), GW_KEY_MALFORMED);
    assert_int_equal(gw_keys_bearer_session("Bearer " TOKEN "x", out), GW_KEY_MALFORMED);
}

int main(void)
{
    return NF_TEST_RUN_GROUP(setup, NULL, test_extract_header_forms, test_extract_missing,
                             test_extract_malformed, test_record, test_record_expired_and_malformed,
                             test_session_record, test_session_cookie, test_bearer_session);
}
