/*
 * A handler's stdout as the worker agent reads it (wk_proto_parse): one JSON line per
 * protocol message. Handlers read users' datasets, and what they print can echo them, so
 * a line is hostile input to the agent.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    if (k == WK_LINE_METRIC) {
        /* what reaches the event: an integer step in range, then only finite numbers */
        const cJSON *it, *step = cJSON_GetObjectItemCaseSensitive(l.metric, "step");
        int n = 0;
        if (!cJSON_IsNumber(step) || step->valuedouble < 0 ||
            step->valuedouble > (double)WK_METRIC_STEP_MAX ||
            step->valuedouble != floor(step->valuedouble))
            abort();
        cJSON_ArrayForEach(it, l.metric)
        {
            if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->string == NULL ||
                strlen(it->string) > WK_METRIC_NAME_MAX)
                abort();
            n++;
        }
        if (n < 2 || n > WK_METRIC_VALUES_MAX + 2)
            abort();
    }
    wk_line_clear(&l);
    return 0;
}
