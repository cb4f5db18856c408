/*
 * routes_auth.c, the pure part: a new key may only lower the limits this gateway applies;
 * asking for more (issue 15: a key created with rate_limit_per_minute 1000000 showed it but
 * got 600 a minute) is refused with the field and the maximum named.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_test.h"

/* Checks body against a gateway applying 600 a minute in bursts of 100. */
static int check(const char *body, const char **param, char *msg, size_t msglen)
{
    *param = NULL;
    msg[0] = '\0';
    return gw_key_limits_check(body, body != NULL ? strlen(body) : 0, 600, 100, param, msg, msglen);
}

static void test_higher_than_applied_is_refused(void **state)
{
    const char *param;
    char msg[192];

    assert_int_equal(
        check("{\"name\":\"k\",\"rate_limit_per_minute\":1000000}", &param, msg, sizeof(msg)), -1);
    assert_string_equal(param, "rate_limit_per_minute");
    assert_non_null(strstr(msg, "rate_limit_per_minute must be at most 600"));

    assert_int_equal(
        check("{\"name\":\"k\",\"rate_limit_per_minute\":601}", &param, msg, sizeof(msg)), -1);
    assert_int_equal(
        check("{\"name\":\"k\",\"rate_limit_per_minute\":600.5}", &param, msg, sizeof(msg)), -1);

    assert_int_equal(check("{\"name\":\"k\",\"burst\":101}", &param, msg, sizeof(msg)), -1);
    assert_string_equal(param, "burst");
    assert_non_null(strstr(msg, "burst must be at most 100"));
}

static void test_lower_or_equal_or_other_goes_through(void **state)
{
    const char *param;
    char msg[192];
    const char *ok[] = {
        "{\"name\":\"k\"}",
        "{\"name\":\"k\",\"rate_limit_per_minute\":600,\"burst\":100}",
        "{\"name\":\"k\",\"rate_limit_per_minute\":6,\"burst\":5}",
        /* not for this check to judge: nf-auth answers these 422 or 400 */
        "{\"name\":\"k\",\"rate_limit_per_minute\":0}",
        "{\"name\":\"k\",\"rate_limit_per_minute\":\"9999\"}",
        "[1000000]",
        "{\"rate_limit_per_minute\": ",
        "",
        NULL,
    };

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (check(ok[i], &param, msg, sizeof(msg)) != 0)
            fail_msg("refused %s: %s", ok[i] != NULL ? ok[i] : "(null)", msg);
        assert_null(param);
    }
}

int main(void)
{
    nf_test_log_quiet();
    return NF_TEST_RUN(NULL, NULL, test_higher_than_applied_is_refused,
                       test_lower_or_equal_or_other_goes_through);
}
