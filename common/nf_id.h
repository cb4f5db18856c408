#pragma once
/*
 * nf_id: prefixed ULIDs, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M": 48-bit millisecond time and 80
 * random bits in Crockford base32, so ids sort by creation time. Within one millisecond
 * ids from the same process are monotonic (the random part is incremented).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NF_ULID_LEN 26
/* prefix + '_' + 26 chars + NUL must fit; 64 is always enough for our prefixes. */
#define NF_ID_MAX 64

/* Writes "<prefix>_<ULID>" into out; -1 if it does not fit. An empty prefix gives the
 * bare ULID. */
int nf_id_new(const char *prefix, char *out, size_t outlen);
/* Same with an explicit time (ms since epoch) and random source, for tests. */
int nf_id_new_at(const char *prefix, uint64_t ms, const uint8_t rnd[10], char *out, size_t outlen);
/* true if id is "<prefix>_" followed by a well-formed ULID. */
bool nf_id_valid(const char *prefix, const char *id);
/* Millisecond time encoded in a valid id, 0 when invalid. */
uint64_t nf_id_time_ms(const char *id);
