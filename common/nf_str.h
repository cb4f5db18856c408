#pragma once
/*
 * nf_str: small pure string helpers every module would otherwise write again: one strict
 * UTF-8 decoder and the lookup of a name in a fixed table (enum names, job types).
 */
#include <stddef.h>
#include <stdint.h>

/*
 * Length (1..4) of the valid UTF-8 sequence at s, reading at most n bytes; 0 when it is
 * not valid UTF-8: a continuation or overlong lead byte, a sequence cut short, an overlong
 * form, a UTF-16 surrogate or a code point past U+10FFFF. *cp (may be NULL) gets the code
 * point on success.
 */
size_t nf_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp);

/* Index of name in names[0..n) (exact, case-sensitive); -1 when absent or name is NULL. */
int nf_str_index(const char *const *names, size_t n, const char *name);
