/*
 * multipart/form-data (the Files API upload body, gateway multipart.c): the first field
 * is the Content-Type header (boundary), the second the body, fed in pieces of a size the
 * first body byte picks.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gw.h"

struct seen {
    int parts;
    size_t bytes;
    bool in_part;
};

static int on_part(const struct gw_mp_part *part, void *arg)
{
    struct seen *s = arg;
    if (s->in_part || strlen(part->name) > GW_MP_NAME_MAX ||
        strlen(part->filename) > GW_MP_FILENAME_MAX)
        abort();
    s->in_part = true;
    s->parts++;
    return s->parts > 64 ? 7 : 0; /* a callback may stop the parser */
}

static int on_data(const char *buf, size_t len, void *arg)
{
    struct seen *s = arg;
    if (!s->in_part)
        abort();                                          /* data outside a part */
    volatile char sink = len ? buf[0] ^ buf[len - 1] : 0; /* ASan checks the range */
    (void)sink;
    s->bytes += len;
    return 0;
}

static int on_end(void *arg)
{
    struct seen *s = arg;
    if (!s->in_part)
        abort();
    s->in_part = false;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *f[2];
    size_t len[2];
    fuzz_fields(data, size, f, len, 2);
    char boundary[GW_MP_BOUNDARY_MAX + 1];
    size_t blen = len[1];
    if (gw_mp_boundary(f[0], boundary) == 0 && blen > 0) {
        struct gw_mp mp;
        struct seen s = {0};
        const struct gw_mp_cbs cbs = {on_part, on_data, on_end};
        size_t step = (size_t)((uint8_t)f[1][0] % 31) + 1;
        gw_mp_init(&mp, boundary);
        for (size_t off = 0; off < blen; off += step) {
            size_t n = blen - off < step ? blen - off : step;
            if (gw_mp_feed(&mp, f[1] + off, n, &cbs, &s) != 0)
                break;
        }
        (void)gw_mp_done(&mp);
    }
    free(f[0]);
    return 0;
}
