/*
 * A handler's stdout as the worker agent reads it (wk_proto_parse): one JSON line per
 * protocol message. Handlers read users' datasets, and what they print can echo them, so
 * a line is hostile input to the agent.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "wk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wk_line l;
    enum wk_line_kind k = wk_proto_parse((const char *)data, size, &l);
    if (k == WK_LINE_PROGRESS && !(l.progress >= 0.0 && l.progress <= 1.0))
        abort(); /* progress outside 0..1 */
    if (k == WK_LINE_USAGE && (l.input_tokens < 0 || l.output_tokens < 0))
        abort(); /* negative usage */
    if (k == WK_LINE_ARTIFACT && (l.path == NULL || l.art_kind == NULL))
        abort();
    wk_line_clear(&l);
    return 0;
}
