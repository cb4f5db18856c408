#pragma once
/*
 * nf_event: CloudEvents 1.0 structured JSON envelopes (DESIGN §6), the public contract
 * of every Kafka topic:
 *   {"specversion":"1.0","id","source","type","time","subject",
 *    "datacontenttype":"application/json","data":{...}}
 */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "nf_time.h" /* nf_now_ms, long reached through this header */

/*
 * Builds an envelope. id NULL -> a fresh "evt_<ULID>"; data is consumed (owned by the
 * envelope). time is now in RFC 3339 UTC with milliseconds.
 */
cJSON *nf_event_new(const char *type, const char *source, const char *subject, const char *id,
                    cJSON *data);
/* Checks the envelope fields; returns the data object or NULL (msg gets the reason). */
const cJSON *nf_event_data(const cJSON *ev, const char **type, const char **subject,
                           const char **msg);
/*
 * A deterministic id "<prefix>_<32 hex>": the first 128 bits of SHA-256 over the key that
 * fmt and its arguments print (cut at 255 bytes; ids are short and a cut key is still
 * deterministic). The same facts give the same id, so an event produced twice is one event
 * to its consumers. out (outlen >= NF_EVENT_ID_MAX is always enough) is NUL-terminated.
 */
#define NF_EVENT_ID_MAX 40
void nf_event_id(char *out, size_t outlen, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A forge.usage.recorded fact (DESIGN §6); the strings are borrowed. */
struct nf_usage {
    const char *user_id;
    const char *job_id;
    const char *job_type;
    long long attempt;
    const char *worker_id; /* NULL: no worker (the scheduler's storage meter) */
    const char *meter;     /* gpu_ms, input_tokens, output_tokens, storage_byte_hours */
    long long quantity;
    long long window; /* the window's key: the producer's index or start, stable per window */
    uint64_t start_ms, end_ms;
};
/*
 * The forge.usage.recorded envelope of u, subject user_id, with the id
 * "use_" + nf_event_id over "job_id:attempt:meter:window": a record produced twice (a retry
 * after a lost delivery report, a restart) is the same record to billing. Caller owns it.
 */
cJSON *nf_event_usage(const struct nf_usage *u, const char *source);

/* RFC 3339 UTC with milliseconds for ms since the epoch: "2026-11-28T21:03:52.123Z"
 * (nf_time_format_rfc3339 for an unsigned time). */
void nf_event_time(uint64_t ms, char out[32]);
