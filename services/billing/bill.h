#pragma once
/*
 * nf-billing: owns the `billing` schema (usage_events, usage_hourly, usage_jobs,
 * price_book, budgets, leases, ...). It consumes forge.usage and forge.jobs.events and
 * answers the internal billing routes (the gateway forwards /api/billing/... here).
 *
 *   forge.jobs.events --> consume_events.c: forge.job.assigned -> billing.leases
 *                         (who leased which attempt); succeeded / failed / cancelled ->
 *                         billing.attempts (how an attempt ended, with the number of
 *                         usage events its worker published and the failure's class:
 *                         worker_lost, infra, preempted waive it) -> effects; others: done
 *   forge.usage --> consume_usage.c: messages gathered into a batch (NF_BILLING_BATCH_MAX
 *                   or NF_BILLING_BATCH_LINGER_MS) --> bad ones: to forge.usage.dlq
 *               --> ONE statement for the good ones: each event checked against its
 *                   lease (ok | pending | refused), inserted if its id is new, and only
 *                   the inserted ones added to usage_hourly and usage_jobs
 *               --> follow-ups (effects.c): the touched jobs' ended attempts closed
 *                   when their usage is complete (a waived one's usage moved from
 *                   usage_jobs to usage_waived), the cost of every touched job (with
 *                   how many of its attempts are closed) to forge.billing.costs, budget
 *                   alerts to forge.audit, refused to the DLQ
 *               --> every message of the batch marked done (offsets stored) last
 *   sweep.c (timer) --> pending usage whose lease has shown up: recorded or refused;
 *                   pending longer than NF_BILLING_LEASE_WAIT_S: refused; attempts
 *                   ended longer than NF_BILLING_CLOSE_WAIT_S ago and still open: closed
 *   routes_internal.c: summary, usage time series, job cost; routes_budget.c: budgets
 *
 * Money is integer micro-USD (DESIGN §8); no floating point anywhere on the path.
 *
 * Files, bottom up (each includes only what is below it):
 *   bill.h + ctx.c   the context, the configuration struct, the metrics and the billing
 *                    parts of a work item (nf_work: follow-up lists, its dtor and done hook)
 *   usage.c, budget.c  pure: validation, price math, periods, thresholds
 *   effects.c        the stages after a commit: costs, budget alerts, DLQ copies
 *   routes.h         what service.c wires: the route handlers (routes_internal.c,
 *                    routes_budget.c), the consumers (consume_usage.c, consume_events.c)
 *                    and the sweep timer (sweep.c)
 *   service.c        the descriptor bill_service: NF_BILLING_* rows, route table, hooks
 *   main.c           nf_svc_main(&bill_service)
 *   migrations/      the `billing` schema
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nf_jobs.h"
#include "nf_json.h"
#include "nf_work.h"

struct nf_counter;
struct nf_gauge;
struct nf_kafka_msg;
struct nf_kafka_producer;
struct nf_metrics;
struct nf_pg;
struct nf_svc;

/* The descriptor (service.c); main.c runs it. */
struct nf_svc_desc;
extern const struct nf_svc_desc bill_service;

#define BILL_SOURCE "nf-billing"

/* ------------------------------------------------------------------------------------
 * Configuration: the NF_BILLING_* rows of service.c
 * ------------------------------------------------------------------------------------ */
/* The service's own rows (svc->own); the shared ones (address, Kafka, Postgres,
 * NF_BILLING_GROUP, NF_BILLING_MAX_INFLIGHT, NF_BILLING_DRAIN_MS, ...) are nf_svc's. */
struct bill_config {
    int batch_max;    /* usage events per ingest statement */
    int linger_ms;    /* wait this long for a batch to fill */
    int sweep_ms;     /* pending usage sweep interval */
    int lease_wait_s; /* pending usage without a lease is refused after this */
    int close_wait_s; /* an ended attempt missing usage is closed anyway after this */
};

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
/* The meter's base unit for people: "ms", "token", "byte-hour". */
const char *bill_meter_base_unit(enum bill_meter m);
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
 * The rounding rule: the cost of one cell (a quantity at one price: one job's compute
 * meter in one hour, or an account's storage of a job type in one hour) is
 * quantity * price_micros / per_units micro-USD rounded half up, computed exactly in
 * 128-bit integers. Every total adds whole cells (in SQL: billing.cell_cost_micros, the
 * same rule, checked against this one by the integration test). 0 with *out set;
 * -EINVAL for a bad rate; -ERANGE when the result does not fit an int64.
 */
int bill_cost_micros(uint64_t quantity, const struct bill_rate *rate, long long *out);
/* "12.345678" (6 decimals) from micro-USD; out needs 32 bytes. */
void bill_usd_format(long long micros, char out[32]);
/* Start of the UTC month containing ms. */
int64_t bill_month_start(int64_t ms);
/* Parses a non-negative decimal integer (Postgres numeric/bigint text) into a uint64;
 * -1 on junk or overflow. */
int bill_u64_parse(const char *s, uint64_t *out);

/*
 * Whether an attempt that ended with this error class is free of charge: the platform's
 * fault (worker_lost, infra, preempted), so its usage is metered but not priced (the
 * attempt is retried). user_error, timeout, no class (succeeded, cancelled) or an unknown
 * class: charged. NULL -> false.
 */
bool bill_class_waived(const char *error_class);

/* ------------------------------------------------------------------------------------
 * Query parameters (usage.c, pure)
 * ------------------------------------------------------------------------------------ */
enum bill_bucket { BILL_BUCKET_HOUR = 0, BILL_BUCKET_DAY };

/* The longest period a summary or time series may cover. */
#define BILL_MAX_PERIOD_MS (366LL * 24 * 3600 * 1000)

/* "hour" | "day"; NULL or "" -> hour. -1 for anything else. */
int bill_bucket_parse(const char *s, enum bill_bucket *out);
const char *bill_bucket_name(enum bill_bucket b);
/*
 * A [start, end) period from the period_start / period_end query values (RFC 3339 or a
 * plain date; NULL or "" -> default): start defaults to the start of now's UTC month,
 * end to now. -1 with err (param + message) when a value is malformed, end <= start or
 * the period is longer than BILL_MAX_PERIOD_MS; *start / *end untouched then.
 */
int bill_period_parse(const char *ps, const char *pe, int64_t now_ms, int64_t *start, int64_t *end,
                      struct nf_json_err *err);

/* ------------------------------------------------------------------------------------
 * Budgets (budget.c, pure)
 * ------------------------------------------------------------------------------------ */
/* The largest monthly budget: one billion USD. */
#define BILL_MAX_BUDGET_MICROS 1000000000000000LL
#define BILL_NALERTS 3
/* The alert thresholds in percent of the monthly budget: 50, 80, 100. */
extern const int bill_alert_pcts[BILL_NALERTS];

/*
 * "12", "12.5", "0.000001": a non-negative USD amount with at most 6 decimals, at most
 * BILL_MAX_BUDGET_MICROS. 0 with *micros set, or -1.
 */
int bill_usd_parse(const char *s, long long *micros);
/*
 * The body of PUT /api/billing/budget: {"monthly_limit_usd": "50.00" | 50.5 | null}
 * (null removes the budget). No other keys. 0 with *has_limit / *micros set, or -1 with
 * err (param + message).
 */
int bill_budget_parse(const cJSON *body, bool *has_limit, long long *micros,
                      struct nf_json_err *err);
/* A user is over budget when a budget exists (limit >= 0) and spent >= limit. */
bool bill_budget_over(long long spent, long long limit);
/*
 * Bit i set when spent has reached bill_alert_pcts[i] percent of limit (exact integer
 * math). No budget (limit < 0) or a zero budget: 0 (nothing was spent against it).
 */
unsigned bill_budget_crossed(long long spent, long long limit);
/* floor(100 * spent / limit), capped at 999; -1 without a positive budget. */
int bill_budget_percent(long long spent, long long limit);
/* "alr_" + first 32 hex of SHA-256("user:YYYY-MM:pct"): one id per alert, out >= 40 B. */
void bill_alert_id(const char *user_id, int64_t month_ms, int pct, char out[40]);
/*
 * The forge.billing.budget_alert envelope (forge.audit, subject = user id) for the month
 * starting at month_ms. Caller owns.
 */
cJSON *bill_alert_event(const char *user_id, int64_t month_ms, int pct, long long limit,
                        long long spent);
/*
 * The forge.billing.job_cost envelope (forge.billing.costs, subject = job id):
 * attempts_closed = n says attempts 1..n of the job are closed (no usage is added to them
 * any more), so with the job terminal at attempt <= n its cost is final. Caller owns.
 */
cJSON *bill_cost_event(const char *job_id, const char *user_id, long long cost_micros,
                       long long attempts_closed);

/* ------------------------------------------------------------------------------------
 * The running service (ctx.c)
 * ------------------------------------------------------------------------------------ */
struct bill_counters {
    struct nf_counter *recorded;        /* new usage events */
    struct nf_counter *duplicate;       /* redelivered usage events */
    struct nf_counter *invalid;         /* malformed, sent to forge.usage.dlq */
    struct nf_counter *refused;         /* not leased by the emitting worker */
    struct nf_counter *pending;         /* parked until their lease is seen */
    struct nf_counter *waived;          /* recorded for a waived attempt after its close */
    struct nf_counter *attempts_waived; /* attempts closed free of charge */
    struct nf_counter *leases;          /* forge.job.assigned recorded */
    struct nf_counter *ends;            /* attempt ends recorded (succeeded/failed/cancelled) */
    struct nf_counter *closed;          /* attempts closed (usage complete, ended, timeout) */
    struct nf_counter *alerts;          /* budget alerts sent */
    struct nf_counter *costs;           /* job cost updates produced */
    struct nf_counter *batches;         /* ingest statements committed */
    struct nf_counter *step_retries;    /* backend failures retried */
    struct nf_gauge *inflight;          /* live work items */
};

struct bill_work;

/* Everything hangs off the context; the backends are borrowed from the svc. */
struct bill_ctx {
    struct nf_svc *svc;
    const struct bill_config *cfg; /* svc->own */
    struct event_base *base;
    struct nf_metrics *metrics;
    struct nf_pg *pg;
    struct nf_kafka_producer *producer; /* DLQ, costs, alerts */
    const bool *stopping;               /* svc->stopping: SIGTERM, take no new work */
    const bool *closing;                /* svc->closing: teardown, callbacks only unwind */
    struct nf_work_queue work;          /* every live work item */
    struct bill_work *open;             /* the usage batch still gathering messages, or NULL */
    struct event *sweep;                /* periodic pending sweep */
    bool sweeping;                      /* a sweep work item is alive */
    struct bill_counters m;
};

void bill_metrics_register(struct bill_ctx *ctx);
/* One usage event recorded for a waived attempt (counted, its quantity by meter). */
void bill_count_waived(struct bill_ctx *ctx, enum bill_meter meter, long long q);

/* ------------------------------------------------------------------------------------
 * Work items (nf_work + ctx.c): a Kafka batch, a lease, a sweep or an alert check, each a
 * chain of stages waiting on one backend at a time; failed stages retry with backoff
 * (nf_work_retry). Nothing is marked done before the last stage succeeded, so a crash or
 * a failed backend only ever leads to redelivery, which every stage tolerates
 * (insert-if-absent, the same event ids, monotonic cost updates).
 * ------------------------------------------------------------------------------------ */

/* One forge.usage message of a batch. */
struct bill_item {
    struct nf_kafka_msg *msg; /* ours until done */
    cJSON *ev;                /* parsed envelope; u points into it */
    struct bill_usage u;
    bool valid;
};

/* A message to produce once the work's effect is committed. */
struct bill_out {
    const char *topic; /* static */
    char *key, *payload;
    size_t len;
};

/* A budget alert to mark as sent after its event was delivered. */
struct bill_alert {
    char *user_id;
    int pct;
};

struct bill_work {
    struct nf_work work;     /* first: nf_work_new allocates the whole bill_work */
    cJSON *ev;               /* a job event's envelope (work.msg is its message), or NULL */
    struct bill_item *items; /* a usage batch: its messages, marked done by the done hook */
    size_t nitems, cap;
    char **jobs, **users; /* follow-ups: costs to push, budgets to check (owned) */
    size_t njobs, nusers;
    struct bill_out *outs; /* produced by effects.c */
    size_t nouts;
    struct bill_alert *alerts;
    size_t nalerts;
    int64_t month_ms; /* the month the alerts belong to */
    bool sweep;       /* the pending sweep (ctx->sweeping while alive) */
    bool sweep_full;  /* the sweep returned a full page: sweep again at once */
};

static inline struct bill_work *bill_work_of(struct nf_work *w)
{
    return (struct bill_work *)w;
}

static inline struct bill_ctx *bill_ctx_of(struct nf_work *w)
{
    return w->ctx;
}

/*
 * A new item of ctx->work holding msg (a job event; NULL for a batch, a sweep or an
 * alert check). Its dtor frees the billing fields; a batch's done hook marks every
 * message of items[] done.
 */
struct bill_work *bill_work_new(struct bill_ctx *ctx, struct nf_kafka_msg *msg);
/* Follow-ups to run after the commit; strings are copied. */
void bill_work_add_job(struct bill_work *bw, const char *job_id);
void bill_work_add_user(struct bill_work *bw, const char *user_id);
void bill_work_add_out(struct bill_work *bw, const char *topic, const char *key, cJSON *ev);
void bill_work_add_raw(struct bill_work *bw, const char *topic, const char *key,
                       const char *payload, size_t len);
/* Sorts and de-duplicates jobs and users. */
void bill_work_dedupe(struct bill_work *bw);

/* effects.c: the stages after a commit: costs + budgets query -> produce -> markers ->
 * nf_work_finish. */
void bill_effects_start(struct nf_work *w);

/* consume_usage.c: the batch statement, $1 = JSON array of events (bill_usage_json);
 * bill_ingest_lock_sql (same $1) runs first in its transaction (see BILL_LOCK_CLASS). */
extern const char bill_batch_sql[];
extern const char bill_ingest_lock_sql[];
/* The sweep statement: $1 = lease wait in seconds, $2 = page size. */
extern const char bill_sweep_sql[];
/* One event as a member of the batch array. Caller owns. */
cJSON *bill_usage_json(const struct bill_usage *u);
/* usage.c: the usage envelope rebuilt from a row's fields (for the DLQ copy of a pending
 * event refused by the sweep or a close). Caller owns. */
cJSON *bill_usage_rebuild(const char *event_id, const char *user_id, const char *job_id,
                          const char *job_type, long long attempt, const char *worker_id,
                          const char *meter, long long quantity, const char *start,
                          const char *end);

/* consume_events.c: $1 job, $2 attempt, $3 worker, $4 user. */
#define BILL_LEASE_NPARAMS 4
extern const char bill_lease_sql[];
/* consume_events.c: an attempt's end: $1 job, $2 attempt, $3 user, $4 usage events or NULL,
 * $5 error class or NULL, $6 waived ("true" / "false"; NULL: false). */
#define BILL_ATTEMPT_NPARAMS 6
extern const char bill_attempt_sql[];

/* sweep.c */
#define BILL_SWEEP_PAGE 1000
/* Jobs with an attempt ended over $1 seconds ago and still open, at most $2. */
extern const char bill_overdue_sql[];

/*
 * Closing attempts (effects.c) and ingesting usage (consume_usage.c) exclude each other
 * per job through a transaction-scoped advisory lock (class BILL_LOCK_CLASS, key
 * hashtext(job_id)): an ingest holds it shared while it decides and records, a close
 * exclusively. So a usage event is either recorded before its attempt closes, and the
 * close (a later snapshot) counts it and the cost after it includes it, or it sees the
 * attempt closed and is refused: no usage lands in a closed attempt.
 */
#define BILL_LOCK_CLASS "1651076204" /* "bill" */
/* $1 job ids (JSON array): the exclusive locks; then bill_close_sql in the same
 * transaction: $1 job ids, $2 close wait in seconds. */
extern const char bill_close_lock_sql[];
extern const char bill_close_sql[];
/* effects.c: the follow-up query, $1 job ids, $2 user ids (JSON arrays), $3 month start,
 * $4 month as a date. */
extern const char bill_effects_sql[];
extern const char bill_markers_sql[];

/* clang-format off */
/* Price of an hour: the latest price_book row effective at `hour` for x.meter. */
#define BILL_PRICE_AT(hour)                                                                \
    " LEFT JOIN LATERAL (SELECT b.unit, b.price_micros, b.per_units, b.effective_from"     \
    "  FROM billing.price_book b WHERE b.meter = x.meter AND b.effective_from <= " hour     \
    "  ORDER BY b.effective_from DESC LIMIT 1) p ON true"
#define BILL_TS(c) "to_char(" c " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
/* The cost of the cells x (billing.cells, usage_jobs or usage_hourly rows) priced by p,
 * summed as text (migrations/0005_cost_cells.sql): the column `cost_micros` that
 * bill_rows_cost and the reads add up. */
#define BILL_CELLS_COST                                                                    \
    "sum(billing.cell_cost_micros(x.quantity, p.price_micros, p.per_units))::text"
/* clang-format on */

/* routes_internal.c: the summary's rows, $1 user, $2 $3 the period; one row per (job
 * type, meter, price version) with its quantity and cost_micros. */
extern const char bill_summary_sql[];

/*
 * Adds up rows of cells: each row's cost_micros is the sum of its cells' costs
 * (BILL_CELLS_COST); *total gets the sum. Rows with a NULL meter count nothing. Columns:
 * meter, cost_micros. -1 (logged) on a malformed or missing cost (a meter without a
 * price) or overflow.
 */
int bill_rows_cost(const PGresult *res, int first, int last, long long *total);
