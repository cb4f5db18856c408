/*
 * Unit tests for nf_time: RFC 3339 parsing in each of its modes and formatting. The strict
 * cases with NF_TIME_DATE are billing's period parameters (formerly bill_time_parse), the
 * NF_TIME_LAX ones the gateway's credential expiry (formerly gw_time_parse); flags 0 is
 * billing's usage window. nf_now_ms is covered by test_nf_event.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <string.h>
#include <time.h>

#include "nf_test.h"
#include "nf_time.h"

/* Reference: timegm of the broken-down UTC time. */
static int64_t ref_ms(int y, int mo, int d, int h, int mi, int s, int ms)
{
    struct tm tm = {0};

    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

/* What billing's period parameters accept: strict RFC 3339 or a plain date. */
static void test_parse_with_date(void **state)
{
    int64_t ms = -1;
    char buf[32];

    assert_int_equal(nf_time_parse_rfc3339("1970-01-01T00:00:00Z", NF_TIME_DATE, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28T21:03:52.123Z", NF_TIME_DATE, &ms), 0);
    assert_int_equal(ms, 1795899832123LL);
    nf_time_format_rfc3339(ms, buf);
    assert_string_equal(buf, "2026-11-28T21:03:52.123Z");
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28T23:03:52.123456+02:00", NF_TIME_DATE, &ms),
                     0);
    assert_int_equal(ms, 1795899832123LL);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28T16:03:52.1-05:00", NF_TIME_DATE, &ms), 0);
    assert_int_equal(ms, 1795899832100LL);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-01", NF_TIME_DATE, &ms), 0);
    nf_time_format_rfc3339(ms, buf);
    assert_string_equal(buf, "2026-11-01T00:00:00.000Z");
    assert_int_equal(nf_time_parse_rfc3339("2024-02-29", NF_TIME_DATE, &ms), 0); /* leap year */
    assert_int_equal(nf_time_parse_rfc3339("2000-02-29T00:00:00Z", NF_TIME_DATE, &ms), 0);

    ms = 7;
    assert_int_equal(nf_time_parse_rfc3339("2026-02-29", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("1900-02-29", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("2026-04-31", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28T21:03:52", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28T25:00:00Z", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28 21:03:52Z", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28T21:03:52.Z", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("1969-12-31T23:59:59Z", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("1970-01-01T00:30:00+01:00", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339(NULL, NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28Tjunk", NF_TIME_DATE, &ms), -1);
    assert_int_equal(ms, 7); /* untouched on error */
}

/* What the gateway accepts in a credential's expires_at. */
static void test_parse_lax(void **state)
{
    static const struct {
        const char *s;
        int y, mo, d, h, mi, sec, ms;
    } ok[] = {
        {"1970-01-01T00:00:00Z", 1970, 1, 1, 0, 0, 0, 0},
        {"2026-11-28T21:03:52.123Z", 2026, 11, 28, 21, 3, 52, 123},
        {"2026-11-28t21:03:52.5z", 2026, 11, 28, 21, 3, 52, 500},
        {"2026-11-28 21:03:52.123456Z", 2026, 11, 28, 21, 3, 52, 123},
        /* offsets: local time minus the offset is UTC */
        {"2026-11-28T23:03:52+02:00", 2026, 11, 28, 21, 3, 52, 0},
        {"2026-11-28T15:33:52.001-05:30", 2026, 11, 28, 21, 3, 52, 1},
        /* leap years */
        {"2024-02-29T00:00:00Z", 2024, 2, 29, 0, 0, 0, 0},
        {"2000-02-29T12:00:00Z", 2000, 2, 29, 12, 0, 0, 0},
        {"2099-12-31T23:59:59.999Z", 2099, 12, 31, 23, 59, 59, 999},
        /* a fraction of any length, truncated */
        {"2026-11-28T21:03:52.98765432101234567890Z", 2026, 11, 28, 21, 3, 52, 987},
    };
    int64_t ms;
    size_t i;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ms = 42;
        if (nf_time_parse_rfc3339(ok[i].s, NF_TIME_LAX, &ms) != 0)
            fail_msg("refused \"%s\"", ok[i].s);
        assert_int_equal(
            ms, ref_ms(ok[i].y, ok[i].mo, ok[i].d, ok[i].h, ok[i].mi, ok[i].sec, ok[i].ms));
    }
}

/* Refused by the gateway's mode, and so by the strictest one (flags 0) too. */
static void test_parse_failures(void **state)
{
    static const char *const bad[] = {
        "",
        "2026",
        "2026-11-28",
        "2026-11-28T21:03:52",      /* no zone */
        "2026-11-28T21:03:52.Z",    /* empty fraction */
        "2026-11-28T21:03:52ZZ",    /* trailing garbage */
        "2026-11-28T21:03:52+0200", /* offset without colon */
        "2026-11-28T21:03:52+24:00",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-02-29T00:00:00Z", /* not a leap year */
        "1900-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-11-00T00:00:00Z",
        "2026-11-28T24:00:00Z",
        "2026-11-28T21:60:00Z",
        "2026-11-28T21:03:61Z",
        "1969-12-31T23:59:59Z",      /* before the epoch */
        "1970-01-01T00:30:00+01:00", /* also before the epoch */
        "26-11-28T21:03:52Z",
        "2026/11/28T21:03:52Z",
        " 2026-11-28T21:03:52Z",
    };
    static const unsigned modes[] = {NF_TIME_LAX, 0};
    int64_t ms = 42;
    size_t i, m;

    for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            if (nf_time_parse_rfc3339(bad[i], modes[m], &ms) != -1)
                fail_msg("flags %u accepted \"%s\"", modes[m], bad[i]);
            assert_int_equal(ms, 42);
        }
        assert_int_equal(nf_time_parse_rfc3339(NULL, modes[m], &ms), -1);
    }
}

/* What only NF_TIME_LAX or only NF_TIME_DATE lets through. */
static void test_parse_flags(void **state)
{
    static const char *const lax_only[] = {
        "2026-11-28t21:03:52Z", "2026-11-28T21:03:52z", "2026-11-28 21:03:52Z",
        "2026-11-28T21:03:52.1234567890Z", /* 10 fraction digits */
    };
    int64_t ms = 42, lax;
    size_t i;

    for (i = 0; i < sizeof(lax_only) / sizeof(lax_only[0]); i++) {
        assert_int_equal(nf_time_parse_rfc3339(lax_only[i], NF_TIME_LAX, &lax), 0);
        assert_int_equal(nf_time_parse_rfc3339(lax_only[i], NF_TIME_LAX | NF_TIME_DATE, &ms), 0);
        assert_int_equal(ms, lax);
        ms = 42;
        if (nf_time_parse_rfc3339(lax_only[i], 0, &ms) != -1 ||
            nf_time_parse_rfc3339(lax_only[i], NF_TIME_DATE, &ms) != -1)
            fail_msg("strict mode accepted \"%s\"", lax_only[i]);
        assert_int_equal(ms, 42);
    }
    /* nine fraction digits are the strict limit */
    assert_int_equal(nf_time_parse_rfc3339("2026-11-28T21:03:52.123456789Z", 0, &ms), 0);
    assert_int_equal(ms, 1795899832123LL);
    /* a plain date needs NF_TIME_DATE, lax or not; then it is midnight UTC */
    ms = 42;
    assert_int_equal(nf_time_parse_rfc3339("2026-11-01", 0, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-01", NF_TIME_LAX, &ms), -1);
    assert_int_equal(ms, 42);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-01", NF_TIME_LAX | NF_TIME_DATE, &ms), 0);
    assert_int_equal(ms, ref_ms(2026, 11, 1, 0, 0, 0, 0));
    assert_int_equal(nf_time_parse_rfc3339("2026-11-01T", NF_TIME_DATE, &ms), -1);
    assert_int_equal(nf_time_parse_rfc3339("2026-11-01Z", NF_TIME_DATE, &ms), -1);
    /* a leap second is counted as the next second */
    assert_int_equal(nf_time_parse_rfc3339("2016-12-31T23:59:60Z", 0, &ms), 0);
    assert_int_equal(ms, ref_ms(2017, 1, 1, 0, 0, 0, 0));
}

static void test_format(void **state)
{
    char out[32];

    nf_time_format_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    nf_time_format_rfc3339(-1, out); /* before the epoch: the epoch */
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    nf_time_format_rfc3339(951782400007LL, out); /* leap day */
    assert_string_equal(out, "2000-02-29T00:00:00.007Z");
    nf_time_format_rfc3339(253402300799999LL, out); /* the last instant parsing accepts */
    assert_string_equal(out, "9999-12-31T23:59:59.999Z");
}

/* What is written reads back to the same millisecond in every mode. */
static void test_round_trip(void **state)
{
    static const unsigned modes[] = {0, NF_TIME_DATE, NF_TIME_LAX};
    int64_t t, back;
    char out[32];
    size_t m;

    for (t = 0; t < 253402300799999LL; t = t * 3 + 86399999) {
        nf_time_format_rfc3339(t, out);
        for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
            back = -1;
            if (nf_time_parse_rfc3339(out, modes[m], &back) != 0 || back != t)
                fail_msg("\"%s\" read back as %lld", out, (long long)back);
        }
    }
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_parse_with_date, test_parse_lax, test_parse_failures,
                       test_parse_flags, test_format, test_round_trip);
}
