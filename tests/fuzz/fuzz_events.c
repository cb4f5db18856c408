/*
 * Kafka messages and worker reports as the consumers read them: a CloudEvents envelope
 * (nf_event_data), a forge.usage.recorded for billing (bill_usage_parse), a dispatch for
 * the worker-manager (wm_dispatch_parse), and a worker's report through the API
 * (wm_report_parse: events and usage).
 */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "bill.h"
#include "fuzz.h"
#include "nf_event.h"
#include "nf_json.h"
#include "wm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wm_dispatch d;
    const char *why = NULL;
    if (wm_dispatch_parse((const char *)data, size, &d, &why) == 0)
        wm_dispatch_clear(&d);

    cJSON *ev = nf_json_parse((const char *)data, size);
    if (ev == NULL)
        return 0;
    const char *type = NULL, *subject = NULL, *msg = NULL;
    (void)nf_event_data(ev, &type, &subject, &msg);
    struct bill_usage u;
    if (bill_usage_parse(ev, &u, &why) == 0 && (u.quantity < 1 || u.end_ms < u.start_ms))
        abort(); /* accepted usage must be within its bounds */
    struct wm_report r;
    struct nf_json_err err = {{0}, {0}};
    (void)wm_report_parse(ev, WM_REPORT_EVENT, "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ", &r, &err);
    (void)wm_report_parse(ev, WM_REPORT_USAGE, "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ", &r, &err);
    cJSON_Delete(ev);
    return 0;
}
