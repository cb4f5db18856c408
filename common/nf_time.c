/*
 * nf_time: the wall clock and RFC 3339 timestamps in milliseconds since the epoch. One
 * parser for every service, its strictness chosen per caller by flags (see nf_time.h).
 */
#include "nf_time.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t nf_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void nf_time_format_rfc3339(int64_t ms, char out[32])
{
    time_t sec;
    struct tm tm;
    size_t n;

    if (ms < 0)
        ms = 0;
    sec = (time_t)(ms / 1000);
    gmtime_r(&sec, &tm);
    n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

/* Reads exactly n decimal digits at *p into *v and moves *p past them. */
static bool digits(const char **p, int n, int *v)
{
    int i;

    *v = 0;
    for (i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return false;
        *v = *v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    return true;
}

/* Moves *p past one of chars; never past the terminating NUL. */
static bool skip(const char **p, const char *chars)
{
    if (**p == '\0' || !strchr(chars, **p))
        return false;
    (*p)++;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

int nf_time_parse_rfc3339(const char *s, unsigned flags, int64_t *ms)
{
    bool lax = (flags & NF_TIME_LAX) != 0;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, frac = 0, nfrac = 0, sign = 1;
    const char *p = s;
    int64_t t;

    if (!s || !digits(&p, 4, &y) || !skip(&p, "-") || !digits(&p, 2, &mo) || !skip(&p, "-") ||
        !digits(&p, 2, &d) || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    t = days_from_civil(y, mo, d) * 86400000;
    if (*p == '\0' && (flags & NF_TIME_DATE)) {
        *ms = t;
        return 0;
    }
    if (!skip(&p, lax ? "Tt " : "T") || !digits(&p, 2, &h) || !skip(&p, ":") ||
        !digits(&p, 2, &mi) || !skip(&p, ":") || !digits(&p, 2, &sec) || h > 23 || mi > 59 ||
        sec > 60)
        return -1;
    if (*p == '.') {
        /* keep the first three digits; count up to 10 to tell "too long" (strict) */
        for (p++; *p >= '0' && *p <= '9'; p++) {
            if (nfrac < 3)
                frac = frac * 10 + (*p - '0');
            if (nfrac < 10)
                nfrac++;
        }
        if (nfrac < 1 || (!lax && nfrac > 9))
            return -1;
        for (; nfrac < 3; nfrac++)
            frac *= 10;
    }
    if (!skip(&p, lax ? "Zz" : "Z")) {
        sign = *p == '-' ? -1 : 1;
        if (!skip(&p, "+-") || !digits(&p, 2, &oh) || !skip(&p, ":") || !digits(&p, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
    }
    if (*p != '\0')
        return -1;
    t += ((int64_t)h * 3600 + (int64_t)mi * 60 + sec) * 1000 + frac;
    t -= sign * ((int64_t)oh * 60 + om) * 60000;
    if (t < 0)
        return -1;
    *ms = t;
    return 0;
}
