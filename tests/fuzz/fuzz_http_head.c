/*
 * The gateway's HTTP/1.1 request-head parser (nf_http_head_parse, the connection filter
 * that frames every request before evhttp sees it) and the rewrite it hands evhttp.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "nf_http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nf_http_head h;
    size_t max = 8192;
    /* every prefix length the filter may see as bytes trickle in, then the whole */
    for (size_t n = size > 64 ? size - 64 : 0; n <= size; n++) {
        int rc = nf_http_head_parse((const char *)data, n, max, &h);
        if (rc != 1)
            continue;
        if (h.len > n || h.target_len > h.len)
            abort(); /* the parser claimed bytes it was not given */
        size_t len = 0;
        free(nf_http_head_rewrite((const char *)data, &h, NULL, &len));
        free(nf_http_head_rewrite((const char *)data, &h, "tok123", &len));
        break;
    }
    return 0;
}
