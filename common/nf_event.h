#pragma once
/*
 * nf_event: CloudEvents 1.0 structured JSON envelopes (DESIGN §6), the public contract
 * of every Kafka topic:
 *   {"specversion":"1.0","id","source","type","time","subject",
 *    "datacontenttype":"application/json","data":{...}}
 */
#include <cjson/cJSON.h>
#include <stdint.h>

/*
 * Builds an envelope. id NULL -> a fresh "evt_<ULID>"; data is consumed (owned by the
 * envelope). time is now in RFC 3339 UTC with milliseconds.
 */
cJSON *nf_event_new(const char *type, const char *source, const char *subject, const char *id,
                    cJSON *data);
/* Checks the envelope fields; returns the data object or NULL (msg gets the reason). */
const cJSON *nf_event_data(const cJSON *ev, const char **type, const char **subject,
                           const char **msg);
/* RFC 3339 UTC with milliseconds for ms since the epoch: "2026-11-28T21:03:52.123Z". */
void nf_event_time(uint64_t ms, char out[32]);
/* Milliseconds since the epoch (wall clock). */
uint64_t nf_now_ms(void);
