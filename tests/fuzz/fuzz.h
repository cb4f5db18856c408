/*
 * Shared by the libFuzzer targets (tests/fuzz/README.md): the input as NUL-terminated
 * fields. Inputs are hostile bytes; a target feeds them to one parser the way the
 * service does, and the sanitizers (ASan, UBSan) turn any memory or UB error into a crash.
 */
#ifndef NF_FUZZ_H
#define NF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A heap copy of data[0..n) with a NUL after it (the caller frees). */
static inline char *fuzz_strndup(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* Splits a copy of the input at its first `nf - 1` 0xff bytes into nf NUL-terminated
 * fields (missing ones are ""), their lengths in lens (may be NULL); fields[0] owns the
 * copy: free(fields[0]) frees all. A field may hold NUL bytes: a parser of C strings sees
 * it cut there, as it would a header. */
static inline void fuzz_fields(const uint8_t *data, size_t n, char **fields, size_t *lens, int nf)
{
    char *all = malloc(n + 1);
    if (all == NULL)
        abort();
    memcpy(all, data, n);
    all[n] = '\0';
    int k = 0;
    fields[k++] = all;
    for (size_t i = 0; i < n && k < nf; i++) {
        if ((uint8_t)all[i] == 0xff) {
            all[i] = '\0';
            fields[k++] = all + i + 1;
        }
    }
    while (k < nf)
        fields[k++] = all + n; /* "" */
    for (int i = 0; lens != NULL && i < nf; i++) {
        const char *end = i + 1 < nf && fields[i + 1] != all + n ? fields[i + 1] - 1 : all + n;
        lens[i] = fields[i] == all + n ? 0 : (size_t)(end - fields[i]);
    }
}

#endif
