/*
 * The body de-framer of the connection filter (nf_http_frame: chunked and Content-Length
 * bodies, the chunk size lines, extensions and trailers), fed in pieces whose sizes the
 * first input byte picks, and its data taken in pieces too.
 */
#include <event2/buffer.h>
#include <stdlib.h>

#include "fuzz.h"
#include "nf_http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned step = (unsigned)(data[0] % 17) + 1, take = (unsigned)(data[1] % 5) + 1;
    data += 2;
    size -= 2;
    struct nf_http_frame f;
    bool chunked = step % 2 == 1;
    nf_http_frame_init(&f, chunked ? NF_HTTP_FRAME_CHUNKED : NF_HTTP_FRAME_LENGTH,
                       chunked ? 0 : (uint64_t)size / 2 + 1, 1024);
    struct evbuffer *in = evbuffer_new();
    size_t fed = 0, got = 0;
    for (;;) {
        const char *p;
        size_t n;
        int rc = nf_http_frame_next(&f, in, &p, &n);
        if (rc == NF_HTTP_FRAME_BAD || rc == NF_HTTP_FRAME_DONE)
            break;
        if (rc == NF_HTTP_FRAME_DATA) {
            if (n == 0 || n > evbuffer_get_length(in))
                abort(); /* data the buffer does not hold */
            size_t k = n > take ? n / take : n;
            got += k;
            nf_http_frame_consume(&f, in, k);
            continue;
        }
        if (fed == size)
            break; /* NEED with nothing left: the body is cut short */
        size_t k = size - fed < step ? size - fed : step;
        evbuffer_add(in, data + fed, k);
        fed += k;
    }
    if (got > size)
        abort();
    evbuffer_free(in);
    return 0;
}
