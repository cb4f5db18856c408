#include "nf_mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *checked(void *p, size_t n)
{
    if (p == NULL && n != 0) {
        fprintf(stderr,
                "{\"level\":\"error\",\"event\":\"oom\",\"msg\":\"out of memory\","
                "\"bytes\":%zu}\n",
                n);
        abort();
    }
    return p;
}

void *nf_xmalloc(size_t n)
{
    return checked(malloc(n ? n : 1), n ? n : 1);
}

void *nf_xcalloc(size_t count, size_t size)
{
    size_t n = count * size;

    return checked(calloc(count ? count : 1, size ? size : 1), n != 0 ? n : 1);
}

void *nf_xrealloc(void *p, size_t n)
{
    return checked(realloc(p, n ? n : 1), n ? n : 1);
}

char *nf_xstrdup(const char *s)
{
    return checked(strdup(s), strlen(s) + 1);
}

char *nf_xstrndup(const char *s, size_t n)
{
    return checked(strndup(s, n), n + 1);
}
