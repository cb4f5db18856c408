#pragma once
/*
 * nf-billing: owns the `billing` schema (usage_events, usage_hourly, price_book,
 * budgets). It consumes forge.usage and answers the internal billing routes.
 *
 *   forge.usage --> consume_usage.c: usage.c validates --> bad: raw message to
 *                   forge.usage.dlq --> done
 *                                     --> good: ONE statement inserts the event if absent
 *                   and adds it to its hourly rollup --> done after the commit
 *   GET /internal/summary, GET /internal/jobs/{job_id}/cost --> routes_internal.c:
 *                   quantities x price_book, cost per line in integer micro-USD (usage.c)
 *
 * Money is integer micro-USD (DESIGN §8); no floating point anywhere on the path.
 *
 * Files: main.c (thin), bill.c (context, start, stop), config.c, usage.c (pure:
 * validation, price math, times), consume_usage.c, routes_internal.c, migrations/.
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct nf_app;
struct nf_counter;
struct nf_gauge;
struct nf_http_server;
struct nf_kafka_consumer;
struct nf_kafka_msg;
struct nf_kafka_producer;
struct nf_metrics;
struct nf_pg;

#define BILL_SOURCE "nf-billing"
#define BILL_GROUP "nf-billing"
#define BILL_TOPIC_USAGE "forge.usage"
#define BILL_TOPIC_DLQ "forge.usage.dlq"

/* ------------------------------------------------------------------------------------
 * Configuration (config.c)
 * ------------------------------------------------------------------------------------ */
struct bill_config {
    char *log_level;
    char *addr;
    char *brokers;
    int partitions;
    int replication;
    char *pg_dsn;
    char *migrations;
    int pg_conns;
    int max_inflight;
    int grace_ms;
};

int bill_config_load(struct bill_config *cfg, char *err, size_t errlen);
void bill_config_log(const struct bill_config *cfg);
void bill_config_free(struct bill_config *cfg);
void bill_config_usage(FILE *out);

/* ------------------------------------------------------------------------------------
 * Meters, usage events, prices (usage.c, pure)
 * ------------------------------------------------------------------------------------ */
enum bill_meter {
    BILL_GPU_MS = 0,
    BILL_INPUT_TOKENS,
    BILL_OUTPUT_TOKENS,
    BILL_STORAGE_BYTE_HOURS,
    BILL_NMETERS
};

/*
 * Largest quantity one usage event may carry, per meter. Each is at most 2^53 so the
 * JSON number is exact:
 *   gpu_ms              1e10   (~115 GPU-days in one window)
 *   input/output tokens 1e11
 *   storage_byte_hours  9e15   (9 PB for one hour)
 */
#define BILL_MAX_GPU_MS 10000000000LL
#define BILL_MAX_TOKENS 100000000000LL
#define BILL_MAX_STORAGE_BYTE_HOURS 9000000000000000LL

const char *bill_meter_name(enum bill_meter m);
int bill_meter_parse(const char *name, enum bill_meter *out);
long long bill_meter_max(enum bill_meter m);

/* A forge.usage.recorded event; string pointers point into the parsed envelope. */
struct bill_usage {
    const char *event_id, *user_id, *job_id, *job_type;
    const char *worker_id; /* may be NULL (e.g. storage metered by the platform) */
    long long attempt;     /* 0 when absent */
    enum bill_meter meter;
    long long quantity;                    /* 1 .. bill_meter_max(meter) */
    const char *window_start, *window_end; /* RFC 3339 as sent */
    int64_t start_ms, end_ms;              /* the same in ms; end >= start */
};

/*
 * Validates a whole envelope (nf_event_data) and its data. 0 with *out filled, or -1 with
 * *why set to a static reason ("meter is not known", ...).
 */
int bill_usage_parse(const cJSON *ev, struct bill_usage *out, const char **why);

/*
 * A price: price_micros micro-USD per per_units units of the meter's base unit, e.g. GPU
 * $2.50/hour = 2,500,000 per 3,600,000 gpu_ms. Kept as this exact fraction, never as a
 * float.
 */
struct bill_rate {
    long long price_micros; /* >= 0 */
    long long per_units;    /* > 0 */
};

/* The seeded price book (must match migrations/0002_price_book.sql). GB = 1e9 bytes,
 * month = 730 hours. */
#define BILL_GPU_RATE                                                                              \
    {                                                                                              \
        2500000LL, 3600000LL                                                                       \
    } /* $2.50 per GPU hour */
#define BILL_INPUT_RATE                                                                            \
    {                                                                                              \
        10000000LL, 1000000LL                                                                      \
    } /* $10 per 1M input tokens */
#define BILL_OUTPUT_RATE                                                                           \
    {                                                                                              \
        30000000LL, 1000000LL                                                                      \
    } /* $30 per 1M output tokens */
#define BILL_STORAGE_RATE                                                                          \
    {                                                                                              \
        20000LL, 730000000000LL                                                                    \
    } /* $0.02 per GB-month */

/*
 * The rounding rule: the cost of one line (a quantity at one price) is
 * quantity * price_micros / per_units micro-USD rounded half up, computed exactly in
 * 128-bit integers. Totals add rounded lines. 0 with *out set; -EINVAL for a bad rate;
 * -ERANGE when the result does not fit an int64.
 */
int bill_cost_micros(uint64_t quantity, const struct bill_rate *rate, long long *out);
/* "12.345678" (6 decimals) from micro-USD; out needs 32 bytes. */
void bill_usd_format(long long micros, char out[32]);
/*
 * Parses RFC 3339 ("2026-11-28T21:03:52.123Z", "...+02:00") or a plain date
 * ("2026-11-01", midnight UTC) into ms since the epoch (fraction truncated to ms).
 * -1 when malformed or out of range (years 1970..9999).
 */
int bill_time_parse(const char *s, int64_t *ms);
/* The other way: "2026-11-28T21:03:52.123Z"; out needs 32 bytes. */
void bill_time_format(int64_t ms, char out[32]);
/* Start of the UTC month containing ms. */
int64_t bill_month_start(int64_t ms);
/* Parses a non-negative decimal integer (Postgres numeric/bigint text) into a uint64;
 * -1 on junk or overflow. */
int bill_u64_parse(const char *s, uint64_t *out);

/* ------------------------------------------------------------------------------------
 * The running service
 * ------------------------------------------------------------------------------------ */
struct bill_work;

struct bill_counters {
    struct nf_counter *recorded;     /* new usage events */
    struct nf_counter *duplicate;    /* redelivered usage events */
    struct nf_counter *invalid;      /* sent to forge.usage.dlq */
    struct nf_counter *step_retries; /* backend failures retried */
    struct nf_gauge *inflight;
};

struct bill_ctx {
    struct event_base *base;
    struct nf_app *app;
    struct bill_config cfg;
    struct nf_metrics *metrics;
    struct nf_http_server *http;
    struct nf_pg *pg;
    struct nf_kafka_producer *producer; /* forge.usage.dlq */
    struct nf_kafka_consumer *consumer; /* forge.usage, group nf-billing */
    struct bill_work *works;            /* every live work item */
    size_t nworks;
    struct event *drain;
    bool stopping, closing;
    struct bill_counters m;
};

int bill_new(struct bill_ctx **out, struct event_base *base, struct nf_app *app,
             struct bill_config *cfg);
void bill_stop(void *ctx);
void bill_free(struct bill_ctx *ctx);

/* consume_usage.c */
void bill_usage_handle(struct bill_ctx *ctx, struct nf_kafka_msg *msg);
size_t bill_work_busy(const struct bill_ctx *ctx);
void bill_work_free_all(struct bill_ctx *ctx);
/* The insert-if-absent + rollup statement (exported for the integration test). */
#define BILL_USAGE_NPARAMS 10
extern const char bill_usage_sql[];
/* params[BILL_USAGE_NPARAMS] for u; bufs holds the numbers' text. */
struct bill_usage_bufs {
    char attempt[24], quantity[24], start[32], end[32];
};
void bill_usage_params(const struct bill_usage *u, const char *params[BILL_USAGE_NPARAMS],
                       struct bill_usage_bufs *bufs);

/* routes_internal.c */
int bill_routes_internal(struct bill_ctx *ctx);
