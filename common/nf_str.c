/*
 * nf_str: the UTF-8 decoder and table lookup shared by nf_log, the services' validators
 * and their enum parsers.
 */
#include "nf_str.h"

#include <string.h>

size_t nf_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t need, i;
    uint32_t c;

    if (n == 0)
        return 0;
    if (s[0] < 0x80) {
        need = 1;
        c = s[0];
    } else if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        need = 2;
        c = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        need = 3;
        c = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        need = 4;
        c = s[0] & 0x07;
    } else {
        return 0; /* continuation byte, overlong lead (c0, c1) or beyond U+10FFFF */
    }
    if (n < need)
        return 0;
    for (i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0; /* also stops at a NUL */
        c = (c << 6) | (s[i] & 0x3f);
    }
    /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid. */
    if ((need == 3 && c < 0x800) || (need == 4 && c < 0x10000) || (c >= 0xd800 && c <= 0xdfff) ||
        c > 0x10ffff)
        return 0;
    if (cp)
        *cp = c;
    return need;
}

int nf_str_index(const char *const *names, size_t n, const char *name)
{
    size_t i;

    if (!name)
        return -1;
    for (i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}
