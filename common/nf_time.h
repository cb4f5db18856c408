#pragma once
/*
 * nf_time: the wall clock and RFC 3339 timestamps, as milliseconds since the Unix epoch
 * (UTC). Pure functions over caller-owned buffers; nothing here allocates or keeps state.
 *
 * Parsing accepts the profile every service writes and reads,
 *   "2026-11-28T21:03:52.123Z", "2026-11-28T23:03:52+02:00", "...T21:03:52.123456-05:30"
 * (years 1970..9999, leap days checked, second 60 allowed, the fraction truncated to
 * milliseconds, a numeric offset subtracted), and by flag two widenings:
 *   NF_TIME_DATE  a plain date "2026-11-01" is midnight UTC (billing query parameters);
 *   NF_TIME_LAX   what RFC 3339 §5.6 lets readers accept besides: 't' and 'z' in lower
 *                 case, a space instead of 'T', and a fraction of any length (strict:
 *                 upper case, 1 to 9 digits). The gateway reads nf-auth's expiry so.
 */
#include <stdint.h>

#define NF_TIME_DATE (1u << 0)
#define NF_TIME_LAX (1u << 1)

/* Milliseconds since the epoch (wall clock). */
uint64_t nf_now_ms(void);
/*
 * Parses s (may be NULL) per flags, a mask of NF_TIME_*, into *ms. 0 on success; -1 when
 * s is NULL, malformed, or before the epoch once the offset is applied; *ms is then
 * untouched.
 */
int nf_time_parse_rfc3339(const char *s, unsigned flags, int64_t *ms);
/*
 * Writes "2026-11-28T21:03:52.123Z" (UTC, always milliseconds, so strings of one era sort
 * by time) into out; a negative ms is written as the epoch.
 */
void nf_time_format_rfc3339(int64_t ms, char out[32]);
