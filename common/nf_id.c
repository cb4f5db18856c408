/*
 * nf_id: ULIDs (https://github.com/ulid/spec) with a type prefix.
 *
 *   01ARZ3NDEK TSV4RRFFQ69G5FAV
 *   |--------| |--------------|
 *   48-bit ms   80 random bits      26 Crockford base32 chars, 5 bits each (130 bits:
 *   10 chars    16 chars            the top two bits are zero, so the first char is 0..7)
 *
 * Monotonic within a millisecond: the generator keeps the last time and random part and,
 * when the clock has not moved on, increments the random part instead of drawing a new
 * one. That state (last_ms, last_rnd) is the generator itself, the one deliberate
 * exception to "no mutable globals"; every process has one event loop thread.
 */
#include "nf_id.h"

#include <string.h>
#include <time.h>

#include "nf_crypto.h"

#define ULID_TIME_CHARS 10
#define ULID_RAND_BYTES 10
#define ULID_MAX_MS ((UINT64_C(1) << 48) - 1)

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static uint64_t last_ms;
static uint8_t last_rnd[ULID_RAND_BYTES];

/* Value of a Crockford base32 character (uppercase only, as we emit), -1 otherwise. */
static int crockford_value(char c)
{
    const char *p;

    if (c == '\0')
        return -1;
    p = strchr(crockford, c);
    return p ? (int)(p - crockford) : -1;
}

/* Writes the 26 ULID characters (no NUL) for ms and rnd. */
static void ulid_encode(uint64_t ms, const uint8_t rnd[ULID_RAND_BYTES], char *out)
{
    int i, bit;

    for (i = ULID_TIME_CHARS - 1; i >= 0; i--) {
        out[i] = crockford[ms & 31];
        ms >>= 5;
    }
    /* 80 random bits, 5 at a time, most significant first. */
    for (i = 0; i < NF_ULID_LEN - ULID_TIME_CHARS; i++) {
        int v = 0, b;

        for (b = 0; b < 5; b++) {
            bit = i * 5 + b;
            v = (v << 1) | ((rnd[bit / 8] >> (7 - bit % 8)) & 1);
        }
        out[ULID_TIME_CHARS + i] = crockford[v];
    }
}

/* Checks the 26 characters at s (exactly, followed by NUL); sets *ms when valid. */
static bool ulid_parse(const char *s, uint64_t *ms)
{
    uint64_t t = 0;
    int i, v;

    if (strlen(s) != NF_ULID_LEN)
        return false;
    for (i = 0; i < NF_ULID_LEN; i++) {
        v = crockford_value(s[i]);
        if (v < 0)
            return false;
        if (i == 0 && v > 7) /* would overflow 128 bits */
            return false;
        if (i < ULID_TIME_CHARS)
            t = (t << 5) | (uint64_t)v;
    }
    *ms = t;
    return true;
}

/* Adds one to the 80-bit big-endian number; false when it wrapped around. */
static bool rnd_increment(uint8_t rnd[ULID_RAND_BYTES])
{
    int i;

    for (i = ULID_RAND_BYTES - 1; i >= 0; i--) {
        if (++rnd[i] != 0)
            return true;
    }
    return false;
}

/* An empty (or NULL) prefix gives the bare ULID without the '_' separator. */
int nf_id_new_at(const char *prefix, uint64_t ms, const uint8_t rnd[10], char *out, size_t outlen)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    size_t sep = plen ? 1 : 0;

    if (ms > ULID_MAX_MS || plen + sep + NF_ULID_LEN + 1 > outlen)
        return -1;
    if (sep) {
        memcpy(out, prefix, plen);
        out[plen] = '_';
    }
    ulid_encode(ms, rnd, out + plen + sep);
    out[plen + sep + NF_ULID_LEN] = '\0';
    return 0;
}

int nf_id_new(const char *prefix, char *out, size_t outlen)
{
    struct timespec ts;
    uint64_t ms;

    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (ms <= last_ms) {
        /* Same millisecond, or the clock stepped back: stay on last_ms and count up. */
        ms = last_ms;
        if (!rnd_increment(last_rnd)) {
            /* 2^80 ids in one millisecond: borrow the next millisecond. */
            ms++;
            nf_crypto_random(last_rnd, sizeof(last_rnd));
        }
    } else {
        nf_crypto_random(last_rnd, sizeof(last_rnd));
    }
    last_ms = ms;
    return nf_id_new_at(prefix, ms, last_rnd, out, outlen);
}

bool nf_id_valid(const char *prefix, const char *id)
{
    size_t plen;
    uint64_t ms;

    if (!prefix || !id)
        return false;
    plen = strlen(prefix);
    if (plen) {
        if (strncmp(id, prefix, plen) != 0 || id[plen] != '_')
            return false;
        id += plen + 1;
    }
    return ulid_parse(id, &ms);
}

uint64_t nf_id_time_ms(const char *id)
{
    const char *sep;
    uint64_t ms;

    if (!id)
        return 0;
    sep = strrchr(id, '_');
    if (sep)
        id = sep + 1;
    return ulid_parse(id, &ms) ? ms : 0;
}
