#pragma once
/*
 * nf_mem: allocation that aborts on out of memory (Redis zmalloc, h2o), so callers never
 * test for NULL after an allocation. Every other library error is still checked.
 */
#include <stddef.h>

void *nf_xmalloc(size_t n);
void *nf_xcalloc(size_t count, size_t size);
void *nf_xrealloc(void *p, size_t n);
/* s must not be NULL. */
char *nf_xstrdup(const char *s);
char *nf_xstrndup(const char *s, size_t n);
