#pragma once
/*
 * nf-scheduler: owns the `sched` schema (jobs, job_events, artifacts, storage_meter) and
 * the job:<id> snapshots in Redis. It consumes forge.jobs.requested (insert, dispatch,
 * emit queued), forge.jobs.events (the job state machine of DESIGN §4) and
 * forge.billing.costs, and answers the internal job, event and artifact routes.
 *
 *   forge.jobs.requested --> consume_requested.c: INSERT job --> produce forge.jobs.<type>
 *                              (dispatch) + forge.job.queued --> snapshot --> msg done
 *   forge.jobs.events    --> consume_events.c: state.c decides the rule, one SQL
 *                              statement applies it --> snapshot --> follow-ups (retrying,
 *                              dead_lettered + forge.jobs.dlq) --> done
 *   forge.billing.costs  --> consume_costs.c: a job's cost from billing, kept when larger
 *                              --> snapshot --> done
 *   GET /internal/...    --> routes_internal.c (reads); POST .../cancel --> cancel.c
 *   timers               --> reconciler.c: due retries, lost dispatches, timeouts, stuck
 *                              cancels, snapshot repair (passes in reconciler_passes.c)
 *                        --> storage_meter.c: stored artifacts -> storage_byte_hours on
 *                              forge.usage, one window at a time
 *   before a dispatch      consume_requested.c asks nf-billing GET /internal/budget; over
 *                              budget -> the job fails with budget_exceeded (budget.c)
 *
 * Every message, cancel, reconciler pass and metering run is a work item (nf_work.h): a
 * small chain of stages, each waiting on one backend; a failed stage is retried with
 * backoff and a Kafka message is marked done only when its last stage succeeded
 * (at-least-once, every stage idempotent).
 *
 * Files, bottom up (each includes only what is below it):
 *   sched.h + ctx.c   the context, the configuration struct, metrics and the helpers every
 *                     module shares (a work item's backend failures)
 *   state.c, job.c, list.c, budget.c   pure: the state machine, requests, events and the
 *                     job object, list queries and cursors, billing's budget answer
 *   models.c          pure: the operator's base model catalogue (NF_SCHEDULER_MODELS_FILE)
 *   snapshot.c        job:<id> writes (Redis)
 *   cancel.c          the cancel flow; the other modules ask it to stop a job again
 *   routes.h          the route handlers, the consumers and the modules' hooks, implemented
 *                     by routes_internal.c, routes_artifacts.c, routes_models.c, cancel.c,
 *                     consume_requested.c,
 *                     consume_events.c, consume_costs.c, storage_meter.c and reconciler.c
 *   reconciler.h      the reconciler's own parts: reconciler.c (the pass runner, timers)
 *                     and reconciler_passes.c (statements, Lua checks, the table of passes)
 *   service.c         the descriptor sched_service: NF_SCHEDULER_* rows, route table,
 *                     consumed topics, hooks
 *   main.c            nf_svc_main(&sched_service)
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nf_id.h"
#include "nf_jobs.h"
#include "nf_json.h"
#include "nf_redis.h"
#include "nf_svc.h"
#include "nf_work.h"

struct nf_counter;
struct nf_gauge;
struct nf_http_client;
struct nf_kafka_msg;
struct nf_metrics;
struct nf_pg;
struct sched_reconciler;

/* The descriptor (service.c); main.c runs it. */
extern const struct nf_svc_desc sched_service;

#define SCHED_SOURCE "nf-scheduler" /* the source of the events it produces */
#define SCHED_SNAPSHOT_TTL_S (7 * 24 * 3600)

/* ------------------------------------------------------------------------------------
 * Configuration: the NF_SCHEDULER_* rows of service.c
 * ------------------------------------------------------------------------------------ */
/* The service's own rows (svc->own); the shared ones (NF_SCHEDULER_ADDR, the backends,
 * NF_SCHEDULER_MIGRATIONS, _PG_CONNS, _TIMEOUT_MS, _DRAIN_MS, _GROUP, _MAX_INFLIGHT) are
 * nf_svc's (svc->cfg). */
struct sched_config {
    int retry_cap_s;      /* cap of the job retry backoff (2^attempt s) */
    char *wm_addr;        /* nf-worker-manager host:port (job cancel) */
    int retry_poll_ms;    /* period of the due-retry poller (reconciler.c) */
    int reconcile_s;      /* period of the reconciler's sweeps */
    int stuck_s;          /* queued / cancel_requested this long: looked at again */
    int timeout_grace_s;  /* running past timeout_seconds + this: failed as timeout */
    char *billing_addr;   /* nf-billing host:port (budget checks) */
    int budget_wait_ms;   /* billing unreachable this long: dispatch unchecked */
    int storage_window_s; /* storage metering window (3600: hourly byte-hours) */
    char *models_file;    /* the operator's base model catalogue (models.c) */
};

/* ------------------------------------------------------------------------------------
 * The state machine (state.c, pure)
 * ------------------------------------------------------------------------------------ */
enum sched_status {
    SCHED_QUEUED = 0,
    SCHED_ASSIGNED,
    SCHED_RUNNING,
    SCHED_CANCEL_REQUESTED,
    SCHED_SUCCEEDED,
    SCHED_FAILED,
    SCHED_CANCELLED,
    SCHED_DEAD_LETTERED,
    SCHED_NSTATUS
};

/* forge.job.<name> */
enum sched_evtype {
    SCHED_EV_QUEUED = 0,
    SCHED_EV_ASSIGNED,
    SCHED_EV_RUNNING,
    SCHED_EV_PROGRESS,
    SCHED_EV_LOG,
    SCHED_EV_SUCCEEDED,
    SCHED_EV_FAILED,
    SCHED_EV_CANCEL_REQUESTED,
    SCHED_EV_CANCELLED,
    SCHED_EV_RETRYING,
    SCHED_EV_DEAD_LETTERED,
    SCHED_EV_CHECKPOINT, /* a checkpoint artifact uploaded during the run: recorded always */
    SCHED_NEVTYPE
};

/* error.class of a failed event. */
enum sched_fail_class {
    SCHED_FAIL_NONE = 0, /* no error object or no class */
    SCHED_FAIL_USER_ERROR,
    SCHED_FAIL_WORKER_LOST,
    SCHED_FAIL_PREEMPTED,
    SCHED_FAIL_TIMEOUT,
    SCHED_FAIL_INFRA,
    SCHED_FAIL_UNKNOWN, /* a class we do not know: treated as not retryable */
};

#define SCHED_BIT(s) (1u << (s))
#define SCHED_NONTERMINAL                                                                          \
    (SCHED_BIT(SCHED_QUEUED) | SCHED_BIT(SCHED_ASSIGNED) | SCHED_BIT(SCHED_RUNNING) |              \
     SCHED_BIT(SCHED_CANCEL_REQUESTED))

/*
 * What one event type may do. An event carries the attempt it belongs to (ev_attempt);
 * the job row has its current attempt. The event applies when the job's status is in
 *   from_same and ev_attempt == attempt, or
 *   from_next and ev_attempt == attempt + 1 (someone requeued the job), or
 *   from_any  and ev_attempt <= attempt (attempt-agnostic, e.g. a user's cancel).
 * It is an echo (recorded in job_events, nothing changes, not counted as ignored) when
 * the status is in `echo` and ev_attempt == attempt: the scheduler reading back its own
 * queued / retrying / dead_lettered events. Anything else is ignored and counted.
 */
struct sched_rule {
    unsigned from_same, from_next, from_any, echo; /* SCHED_BIT() masks */
    enum sched_status to; /* the status the event sets, when has_to (failed: see failure) */
    bool has_to;
    bool failure;    /* failed: the target depends on class, attempts and status */
    bool record_any; /* log: recorded whenever the job exists, never changes it */
};

enum sched_outcome {
    SCHED_OUT_IGNORE = 0, /* stale or illegal: nothing stored, counted */
    SCHED_OUT_APPLY,      /* the row changes */
    SCHED_OUT_ECHO,       /* recorded only */
    SCHED_OUT_RECORD,     /* recorded only (log) */
};

/* The job row as the state machine sees it. */
struct sched_job_state {
    enum sched_status status;
    int attempt;
    int max_attempts;
};

/* The outcome of one event on one job (the reference semantics the SQL implements). */
struct sched_decision {
    enum sched_outcome outcome;
    enum sched_status status; /* after the event */
    int attempt;              /* after the event */
    bool retry;               /* emit forge.job.retrying, re-dispatch after backoff */
    bool emit_dead_letter;    /* emit forge.job.dead_lettered (the scheduler decided it) */
    bool dlq;                 /* produce to forge.jobs.dlq */
};

const char *sched_status_name(enum sched_status s);
int sched_status_parse(const char *name, enum sched_status *out);
bool sched_status_terminal(enum sched_status s);
const char *sched_evtype_name(enum sched_evtype t);
/* "forge.job.running" -> SCHED_EV_RUNNING; -1 for anything else. */
int sched_evtype_parse(const char *ce_type, enum sched_evtype *out);
enum sched_fail_class sched_fail_class_parse(const char *cls);
const char *sched_fail_class_name(enum sched_fail_class c);
/* infra, timeout, preempted and worker_lost are retried. */
bool sched_fail_class_retryable(enum sched_fail_class c);
/* The rule of an event type; -1 for an out-of-range type. */
int sched_state_rule(enum sched_evtype t, struct sched_rule *out);
/* "{queued,assigned}" for a mask (Postgres text[] literal) into out; -1 if it does not fit. */
int sched_status_array(unsigned mask, char *out, size_t outlen);
/* The same for any n names: "{a,b}" of names[i] for each bit i of mask. */
int sched_names_array(unsigned mask, const char *const *names, int n, char *out, size_t outlen);
/*
 * Applies one event to a job state: the pure reference of what consume_events.c makes
 * Postgres do in one statement (the integration test checks they agree). -1 on a bad
 * type; *out is always written otherwise.
 */
int sched_state_decide(const struct sched_job_state *cur, enum sched_evtype t, int ev_attempt,
                       enum sched_fail_class cls, struct sched_decision *out);
/* Delay before re-dispatching a failed attempt: 2^attempt s, capped at cap_s. */
int sched_retry_backoff_ms(int attempt, int cap_s);

/* ------------------------------------------------------------------------------------
 * Requests, events and the job object (job.c, pure)
 * ------------------------------------------------------------------------------------ */
/* Strict RFC 3339 ("2026-11-28T21:03:52.123Z", "...+02:00"). */
bool sched_time_valid(const char *s);

/* forge.job.metric (metrics.c): one point a job's handler printed, checked again here.
 * Pointers point into the parsed event; values is owned (sched_metric_clear). */
#define SCHED_METRIC_STEP_MAX 1e12
#define SCHED_METRIC_VALUES_MAX 32               /* besides step and epoch */
#define SCHED_METRIC_NAME_MAX NF_METRIC_NAME_MAX /* nf_metric_name_valid */
struct sched_metric {
    const char *id, *job_id, *time; /* time NULL when absent or not RFC 3339 */
    char attempt[16], step[24];
    char epoch[32]; /* "" when absent */
    cJSON *values;  /* {"<name>": number}: the point without step and epoch */
};
int sched_metric_parse(const cJSON *ev, struct sched_metric *m, const char **why);
void sched_metric_clear(struct sched_metric *m);
/* true for an envelope of type forge.job.metric (sched_events_handle passes it on). */
bool sched_metric_event(const cJSON *ev);

/* data of forge.job.requested; every pointer points into the parsed event. */
struct sched_request {
    const char *job_id, *user_id, *job_type;
    const cJSON *params, *metadata, *labels; /* metadata / labels may be NULL */
    const cJSON *inputs;                     /* resolved input objects; NULL when none */
    const cJSON *models; /* resolved models, {param: catalogue entry}; NULL when none */
    long long priority, max_attempts;
    long long timeout_seconds; /* 0: none */
    const char *gpu_type;      /* may be NULL */
    long long gpu_count;       /* -1: none */
    const char *created_at;    /* NULL when absent or not RFC 3339 */
};

/*
 * Validates the data of a forge.job.requested event (subject must be the job id).
 * Defaults: priority 5, max_attempts 3. 0 on success (*out filled), -1 with err set.
 */
int sched_request_parse(const cJSON *data, const char *subject, struct sched_request *out,
                        struct nf_json_err *err);

/* A job event from forge.jobs.events; pointers into the parsed envelope. */
struct sched_event {
    const char *id, *job_id, *time; /* time NULL unless RFC 3339 */
    enum sched_evtype type;
    int attempt;
    const cJSON *data;
    const char *worker_id; /* may be NULL */
    bool has_progress;
    double progress;     /* 0..1 */
    const cJSON *result; /* succeeded; may be NULL */
    const cJSON *error;  /* failed / cancelled / dead_lettered; may be NULL */
    enum sched_fail_class cls;
    const cJSON *artifacts; /* succeeded; may be NULL */
};

/* Checks a whole envelope (nf_event_data) and its data; -1 with *why on malformed. */
int sched_event_parse(const cJSON *ev, struct sched_event *out, const char **why);

/* 64 lowercase hex digits (a SHA-256 as the worker and the gateway write it). */
bool sched_sha256_hex(const char *s);
/* A plain file name: 1..255 bytes, no control byte, slash or backslash, not "." or "..". */
bool sched_file_name_ok(const char *s);

/*
 * One entry of a request's inputs[] (DESIGN §12, resolved by the gateway): {param (a
 * param that names an input), uri, object_key under "tenants/<user_id>/", name (a plain
 * file name), bytes >= 0}.
 */
bool sched_input_valid(const cJSON *in, const char *user_id);

/*
 * The well-formed members of a succeeded event's artifacts[]: a new array (caller owns)
 * of {artifact_id ("art_<ULID>"), name, kind, uri, bytes >= 0, sha256 (64 hex or null),
 * object_key (or null; the insert keeps only keys under the job's own output prefix)};
 * *dropped counts the members left out. arr may be NULL (-> []).
 */
cJSON *sched_artifacts_clean(const cJSON *arr, int *dropped);

/*
 * A job row in the text form Postgres returns (NULL = SQL NULL). The columns come from
 * SCHED_JOB_COLS; artifacts is a JSON array text.
 */
struct sched_job {
    const char *job_id, *user_id, *job_type, *status;
    const char *params, *metadata, *labels, *result, *error; /* JSON texts */
    const char *inputs;                                      /* JSON array text */
    const char *models; /* JSON object text: {param: catalogue entry} (NULL: {}) */
    const char *priority, *attempt, *max_attempts, *timeout_seconds, *gpu_type, *gpu_count;
    const char *worker_id, *progress, *cost_micros, *version;
    const char *cost_final; /* "t" / "f" */
    const char *created_at, *updated_at, *started_at, *finished_at;
    const char *artifacts;
    const char *resume; /* JSON object text: the job's newest checkpoint (NULL: none) */
};

/* Fills job with pointers into res (valid while res lives). Missing columns -> NULL. */
void sched_job_from_row(const PGresult *res, int row, struct sched_job *job);
/*
 * The job object of internals.md ("Job events in detail"): every field always present,
 * null when unknown. The one builder used by the snapshot and the HTTP route. Caller owns.
 */
cJSON *sched_job_json(const struct sched_job *job);
/* data of forge.job.dispatch: the request fields plus attempt. Caller owns. */
cJSON *sched_dispatch_data(const struct sched_job *job);
/* "0.000123" from integer micro-USD; out needs 32 bytes. */
void sched_usd_format(long long micros, char out[32]);
/* Deterministic event id "evt_" + 32 hex of SHA-256("kind:job_id:attempt"), so a step
 * that is retried produces the same event (deduplicated by job_events). out: NF_ID_MAX. */
void sched_event_id(const char *kind, const char *job_id, int attempt, char *out, size_t len);

/*
 * Everything needed to write a snapshot, copied out of a result (heap strings, owned).
 */
struct sched_snap {
    char *job_id, *user_id, *status, *doc;
    long long version;
};
/* Builds from a row (doc = sched_job_json). 0 or -1 when the row lacks an id. */
int sched_snap_from_job(const struct sched_job *job, struct sched_snap *out);
void sched_snap_clear(struct sched_snap *s);

/* Column list of a job row, formatted for sched_job_from_row; p is a table alias + ".". */
/* clang-format off */
#define SCHED_TS(c) "to_char(" c " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define SCHED_JOB_COLS(p)                                                                  \
    p "job_id AS job_id, "                                                                 \
    p "user_id AS user_id, "                                                               \
    p "job_type AS job_type, "                                                             \
    p "status AS status, "                                                                 \
    p "params::text AS params, "                                                           \
    p "metadata::text AS metadata, "                                                       \
    p "labels::text AS labels, "                                                           \
    p "inputs::text AS inputs, "                                                           \
    p "models::text AS models, "                                                           \
    p "priority AS priority, "                                                             \
    p "attempt AS attempt, "                                                               \
    p "max_attempts AS max_attempts, "                                                     \
    p "timeout_seconds AS timeout_seconds, "                                               \
    p "gpu_type AS gpu_type, "                                                             \
    p "gpu_count AS gpu_count, "                                                           \
    p "worker_id AS worker_id, "                                                           \
    p "progress AS progress, "                                                             \
    p "result::text AS result, "                                                           \
    p "error::text AS error, "                                                             \
    p "cost_micros AS cost_micros, "                                                       \
    p "cost_final AS cost_final, "                                                         \
    p "version AS version, "                                                               \
    SCHED_TS(p "created_at") " AS created_at, "                                            \
    SCHED_TS(p "updated_at") " AS updated_at, "                                            \
    SCHED_TS(p "started_at") " AS started_at, "                                            \
    SCHED_TS(p "finished_at") " AS finished_at"
/* One artifact as the job object lists it. */
#define SCHED_ARTIFACT_JSON(p)                                                             \
    "json_build_object('artifact_id', " p "artifact_id, 'name', " p "name, "               \
    "'kind', " p "kind, 'uri', " p "uri, 'bytes', " p "bytes, 'sha256', " p "sha256, "    \
    "'object_key', " p "object_key)"
/* The column `resume`: the newest live checkpoint artifact of job id j (an SQL
 * expression) that has an object key, as a JSON object {artifact_id, name, uri, bytes,
 * sha256, object_key}, or NULL. A retried attempt's dispatch carries it (DESIGN §15). */
#define SCHED_RESUME_OF(j)                                                                 \
    "(SELECT " SCHED_ARTIFACT_JSON("c.") "::text FROM sched.artifacts c"                   \
    "  WHERE c.job_id = " j " AND c.kind = 'checkpoint' AND c.object_key IS NOT NULL"      \
    "   AND c.deleted_at IS NULL"                                                          \
    "  ORDER BY c.created_at DESC, c.artifact_id DESC LIMIT 1) AS resume"
/* The column `artifacts`: the artifacts of job id j (an SQL expression) as a JSON array. */
#define SCHED_ARTIFACTS_OF(j)                                                              \
    "(SELECT coalesce(json_agg(x.a ORDER BY x.a->>'artifact_id'), '[]'::json)::text"       \
    "  FROM (SELECT " SCHED_ARTIFACT_JSON("s.") " AS a FROM sched.artifacts s"             \
    "        WHERE s.job_id = " j ") x) AS artifacts"
/* clang-format on */

/* ------------------------------------------------------------------------------------
 * The running service (ctx.c)
 * ------------------------------------------------------------------------------------ */
/* Metric series, registered at init (sched_metrics_register). */
struct sched_counters {
    struct nf_counter *requested;      /* jobs inserted */
    struct nf_counter *requested_dup;  /* requested redelivered (already known) */
    struct nf_counter *dispatch_known; /* redelivered, the worker-manager holds it: no dispatch */
    struct nf_counter *dispatched;
    struct nf_counter *malformed_req;
    struct nf_counter *malformed_ev;
    struct nf_counter *retries; /* failed attempts sent back to queued */
    struct nf_counter *dead_lettered;
    struct nf_counter *step_retries;     /* backend failures retried (ctx->work.retries) */
    struct nf_gauge *inflight;           /* live work items (ctx->work.inflight) */
    struct nf_counter *budget_refused;   /* jobs failed with budget_exceeded */
    struct nf_counter *budget_unchecked; /* dispatched while billing was unreachable */
    struct nf_counter *costs_applied;    /* job cost updates that changed a job */
    struct nf_counter *storage_events;   /* storage_byte_hours usage events produced */
};

/*
 * The service context, made by the descriptor's init hook; the backends are nf_svc's
 * (borrowed, set in start). Callbacks check svc->stopping (SIGTERM: take no new work)
 * and svc->closing (teardown: only unwind).
 */
struct sched_ctx {
    struct nf_svc *svc;             /* the service frame (not owned) */
    const struct sched_config *cfg; /* svc->own */
    struct event_base *base;
    struct nf_metrics *metrics;
    struct nf_pg *pg;
    struct nf_redis *redis;
    struct nf_redis_script *snap_script;   /* sched_snapshot_lua (snapshot.c) */
    struct nf_redis_script *recent_script; /* sched_recent_lua (routes_internal.c) */
    struct nf_work_queue work;             /* messages, cancels, passes, metering runs */
    struct sched_counters m;
    struct nf_http_client *wm;      /* the worker-manager's cancel route (cancel.c) */
    struct nf_http_client *billing; /* budget checks (consume_requested.c) */
    struct sched_reconciler *rec;   /* reconciler.c */
    struct event *storage_tick;     /* storage metering timer */
    uint64_t billing_down_until_ms; /* billing outage remembered: jobs dispatch unchecked at once */
    bool storage_busy;              /* a storage metering run is alive */
    cJSON *catalogue;               /* the base models, public model objects (models.c); owned */
};

/* The context of a work item (every item of ctx->work carries it). */
static inline struct sched_ctx *sched_of(const struct nf_work *w)
{
    return w->ctx;
}

/* Registers the metric series of ctx->m in ctx->metrics. */
void sched_metrics_register(struct sched_ctx *ctx);
/*
 * nf_work_failed for a Redis reply: true when the callback must stop here (teardown, or
 * the stage is retried after a backoff); a reply of another type than want fails too (0:
 * anything but an error reply).
 */
bool sched_redis_failed(struct nf_work *w, const redisReply *reply, int want);

/* ------------------------------------------------------------------------------------
 * The consumers' statements and pure parts (consume_*.c, storage_meter.c, budget.c)
 * ------------------------------------------------------------------------------------ */
/* forge.billing.costs: the statement that keeps a job's cost and its closed attempts when
 * larger: $1 job, $2 user, $3 cost micros, $4 attempts closed. */
#define SCHED_COSTS_NPARAMS 4
extern const char sched_costs_sql[];
/* Byte-hours of `bytes` stored for `ms` milliseconds, rounded down (pure). */
long long sched_storage_byte_hours(long long bytes, long long ms);
/* The storage window [start, end) that follows `from` (end = the next multiple of
 * window_ms after from). */
int64_t sched_storage_window_end(int64_t from_ms, int64_t window_ms);
/* The usage event of one job's stored bytes in a window; caller owns. */
cJSON *sched_storage_event(const char *job_id, const char *user_id, const char *job_type,
                           int attempt, long long quantity, int64_t start_ms, int64_t end_ms);
/* Budget answer from billing's GET /internal/budget: 1 over budget, 0 not, -1 malformed. */
int sched_budget_over(const char *body, size_t len);
/* The error of a job refused for its budget, {code "budget_exceeded", message naming the
 * limit and the spending from billing's answer, class "user_error"}. Caller owns. */
cJSON *sched_budget_error(const char *body, size_t len);

/* ------------------------------------------------------------------------------------
 * The model catalogue (models.c, pure; routes_models.c)
 * ------------------------------------------------------------------------------------ */
#define SCHED_MODEL_NAME_MAX 64
/* A name an account model may take: 1..64 of [a-z0-9._-]. */
bool sched_model_name_valid(const char *s);
/* A name a lookup may carry: 1..64 of [A-Za-z0-9._-] (catalogue names may have capitals). */
bool sched_model_lookup_valid(const char *s);
/*
 * Parses the operator's catalogue (deploy/models.json): {"models": {"<name>": {architecture,
 * parameters, source, stand_in, owned_by, created?}}}. *out: an array of public model
 * objects (kind "base"), owned by the caller. -1 with err naming the entry and field.
 */
int sched_catalogue_parse(const char *text, size_t len, cJSON **out, char *err, size_t errlen);
/* Reads and parses path (sched_catalogue_parse); -1 with err. */
int sched_catalogue_load(const char *path, cJSON **out, char *err, size_t errlen);
/* The base model called name in cat; NULL when none. */
const cJSON *sched_catalogue_find(const cJSON *cat, const char *name);
/* The default name of a train's model, an SQL expression over base (the model_id param)
 * and job (the job id): <base, made a valid name, at most 54 chars>-ft-<job id's last 6,
 * lowercase>; a base named by artifact:// is "model". */
/* clang-format off */
#define SCHED_MODEL_DEFAULT_NAME(base, job)                                                \
    "left(regexp_replace(lower(CASE WHEN starts_with(" base ", 'artifact://') THEN 'model'" \
    " ELSE " base " END), '[^a-z0-9._-]+', '-', 'g'), 54) || '-ft-' || lower(right(" job ", 6))"
/* clang-format on */

/* The events statement and its parameters (exported for the integration test). */
#define SCHED_EVENTS_NPARAMS 20
extern const char sched_events_sql[];
/*
 * Fills params[SCHED_EVENTS_NPARAMS] for ev; bufs is scratch space the params point into
 * (freed by the caller with sched_events_params_free). retry_cap_s caps the backoff a
 * retried attempt waits (next_attempt_at). Returns 0.
 */
struct sched_events_bufs {
    char attempt[16], same[160], next[160], any[160], echo[160], progress[32], failure[16];
    char backoff[16];
    char model_id[NF_ID_MAX]; /* the mdl_ id a succeeded train's model would get */
    char *data, *result, *error, *artifacts;
    int dropped_artifacts; /* malformed members of data.artifacts left out */
};
int sched_events_params(const struct sched_event *ev, int retry_cap_s,
                        const char *params[SCHED_EVENTS_NPARAMS], struct sched_events_bufs *bufs);
void sched_events_params_free(struct sched_events_bufs *bufs);
/* The requested statement (insert-if-absent, returns the row and `inserted`). */
#define SCHED_REQUESTED_NPARAMS 14
extern const char sched_requested_sql[];

/* ------------------------------------------------------------------------------------
 * Snapshots (snapshot.c)
 * ------------------------------------------------------------------------------------ */
/* The Lua source: writes user_id, status, doc, ver unless a newer version is stored. */
extern const char sched_snapshot_lua[];
/*
 * Writes job:<id> (HSET + EXPIRE, skipped when the stored `ver` is newer). cb gets the
 * reply (NULL on failure; integer 1 written, 0 stale). Same return contract as
 * nf_redis_eval.
 */
int sched_snapshot_write(struct sched_ctx *ctx, const struct sched_snap *s, nf_redis_cb cb,
                         void *arg);
/* The snapshot's `h` field: the first 16 hex of SHA-256(doc). */
#define SCHED_DOC_HASH_LEN 16
void sched_doc_hash(const char *doc, char out[SCHED_DOC_HASH_LEN + 1]);

/* ------------------------------------------------------------------------------------
 * Reads, cancel and the reconciler (list.c pure; routes_internal.c, cancel.c,
 * reconciler_passes.c)
 * ------------------------------------------------------------------------------------ */
/* Opaque list cursors: base64url("<kind>1:<position>"), see list.c. */
#define SCHED_CURSOR_JOBS 'j'      /* position: the last job id of the page */
#define SCHED_CURSOR_EVENTS 'e'    /* position: job_events.seq */
#define SCHED_CURSOR_ARTIFACTS 'a' /* position: the last artifact id of the page */
#define SCHED_CURSOR_MAX 96
/* Encodes a cursor into out; -1 when pos is not a valid position for kind or out is small. */
int sched_cursor_encode(char kind, const char *pos, char *out, size_t outlen);
/* Decodes a cursor of kind into pos; -1 (pos untouched) for anything we did not make. */
int sched_cursor_decode(char kind, const char *cursor, char *pos, size_t poslen);

enum sched_list_kind {
    SCHED_LIST_JOBS,
    SCHED_LIST_EVENTS,
    SCHED_LIST_ARTIFACTS,
    SCHED_LIST_FILES,
    SCHED_LIST_METRICS, /* a job's metric points: cursor as events (a seq), limit to 1000,
                         * stream=true|false accepted (the gateway acts on it) */
};
#define SCHED_METRICS_DEFAULT_LIMIT 100
#define SCHED_METRICS_MAX_LIMIT 1000
#define SCHED_LIST_DEFAULT_LIMIT 20
#define SCHED_LIST_MAX_LIMIT 100
#define SCHED_LIST_MAX_META 16

/* A parsed list query. */
struct sched_list_query {
    int limit;
    char after[NF_ID_MAX];  /* the cursor's position, "" from the start */
    unsigned statuses;      /* jobs: SCHED_BIT() mask, 0 = any */
    unsigned types;         /* jobs: bit i = nf_job_types[i], 0 = any */
    cJSON *metadata;        /* jobs: {"key": "value"} that must all match; NULL = none */
    char job_id[NF_ID_MAX]; /* artifacts: of this job only, "" = any */
    char purpose[16];       /* files: of this purpose only, "" = any */
    char s3_uri[1101];      /* files: the one of this s3:// name, "" = any */
};
/*
 * Parses the raw (percent-encoded) query string of a list route. Jobs take status and
 * job_type (comma-separated lists), metadata[key]=value (up to 16), limit (1..100,
 * default 20) and cursor; events take limit and cursor; artifacts take job_id, limit and
 * cursor; files take purpose, s3_uri, limit and cursor. Unknown, repeated or invalid parameters
 * fail with err.param naming them. query may be NULL. On success *out owns metadata
 * (sched_list_query_clear); on failure *out is untouched.
 */
int sched_list_parse(enum sched_list_kind kind, const char *query, struct sched_list_query *out,
                     struct nf_json_err *err);
void sched_list_query_clear(struct sched_list_query *q);
/* Percent-decodes len bytes of s ('+' is a space) into a new string; -1 on a malformed
 * escape or an encoded NUL. */
int sched_query_decode(const char *s, size_t len, char **out);
/* "{generate,train}" for a job types mask (Postgres text[] literal); -1 if it does not fit. */
int sched_types_array(unsigned mask, char *out, size_t outlen);

/* The worker-manager's answer to POST /internal/jobs/{job_id}/cancel. */
enum sched_wm_cancel {
    SCHED_WM_DEQUEUED,  /* it was waiting in a queue: removed, nobody runs it */
    SCHED_WM_SIGNALLED, /* leased: the worker is told on its next heartbeat */
    SCHED_WM_UNKNOWN,   /* neither queued nor leased there */
    SCHED_WM_FAILED,    /* no usable answer (down, timeout, unexpected status or body) */
};
/* Reads the answer (status 0 = no answer); pure. */
enum sched_wm_cancel sched_wm_cancel_parse(int status, const char *body, size_t len);
/* The cancel statements (exported for the integration test): request $1 job_id,
 * $2 user_id -> the row, old_status, changed; finalize $1 job_id -> the row, changed. */
extern const char sched_cancel_request_sql[];
extern const char sched_cancel_finalize_sql[];
/* Best effort: asks the worker-manager to stop job_id again (a cancelled job showed
 * activity). Fire and forget. */
void sched_cancel_notify_wm(struct sched_ctx *ctx, const char *job_id);
/*
 * The reconciler's look at a job stuck in cancel_requested: asks the worker-manager again
 * and finishes the cancel (cancelled) when nobody holds the job any more. Fire and forget.
 */
void sched_cancel_recheck(struct sched_ctx *ctx, const char *job_id);

/* The reconciler's statements (reconciler_passes.c; exported for the integration test).
 * retry due: $1 limit; retry clear: $1 job ids, $2 attempts (text[] and int[] literals). */
extern const char sched_retry_due_sql[];
extern const char sched_retry_clear_sql[];
/* stuck: $1 stuck_s, $2 after job id, $3 limit (rows + age_s); requeue: $1 job ids,
 * $2 attempts (the rows at attempt + 1); timeout: $1 grace s, $2 limit. */
extern const char sched_stuck_sql[];
extern const char sched_requeue_sql[];
extern const char sched_timeout_sql[];
/* The Redis check of the stuck-queued pass: KEYS per job wm:queue:<type>, wm:lease:<id>,
 * wm:job:<id>; returns per job {in_queue 0/1, leased 0/1, known attempt or -1}. */
extern const char sched_wm_check_lua[];
/* Snapshot repair: KEYS job:<id>...; ARGV their row versions, then the hashes of their
 * docs (sched_doc_hash); returns the 1-based indexes of the snapshots missing, older than
 * their row, or of the same version with another doc. */
extern const char sched_snap_check_lua[];
/*
 * Read-your-writes for GET /internal/jobs: the gateway notes each accepted job in
 * gw:recent:<user_id> (zset of job ids by acceptance time, ms). KEYS gw:recent:<user>;
 * ARGV oldest score, user_id. Returns the docs of those job:<id> snapshots that the
 * scheduler has not written yet (no `ver`): jobs accepted but not recorded in Postgres.
 */
extern const char sched_recent_lua[];
#define SCHED_RECENT_WINDOW_MS 600000 /* gw:recent entries older than this are ignored */
/*
 * Merges the recent, unrecorded jobs (docs, JSON texts) into one page of the jobs list:
 * pg holds the Postgres rows' job objects (newest first, up to limit + 1 of them); docs
 * that fail the query's filters, are at or past its cursor, are already in pg, or sort
 * below pg's last row when pg has more rows than limit, are left out. On return pg holds
 * the page (at most limit) and *has_more is set. Pure (unit tested).
 */
void sched_list_merge(cJSON *pg, const struct sched_list_query *q, const char *const *docs,
                      size_t ndocs, bool *has_more);
