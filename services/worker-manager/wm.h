#pragma once
/*
 * nf-worker-manager: leases queued jobs to pull-based worker agents (DESIGN §2, §3).
 *
 *   forge.jobs.<type> --consume_jobs.c--> Redis wm:job:<id> + wm:queue:<type>
 *                                              |
 *   agent --POST /api/workers/next_job--> next_job.c --lua pop--> wm:lease:<id>, wm:leases
 *   agent --POST /api/workers/heartbeat--> heartbeat.c --lua--> renew / release leases
 *   agent --POST /api/workers/register--> routes_workers.c --> wm.workers (Postgres)
 *   reaper.c: expired leases --> forge.job.failed (class worker_lost) --> scheduler retries
 *             + fleet.c: workers silent for 3 heartbeats --> forge.worker.lost
 *   agent --POST /api/workers/drain--> fleet.c: no new jobs; none left --> forge.worker.drained
 *   scheduler --POST /internal/jobs/{id}/cancel--> cancel.c: dequeue, or tell the worker
 *   agent --POST /api/workers/events|usage--> reports.c: lease checked (409) --> Kafka
 *
 * Files, bottom up (each includes only what is below it):
 *   wm.h + ctx.c     the context, the configuration struct, metrics, the Redis scripts'
 *                    handles and the helpers the modules share (503 answers, scan replies)
 *   validate.c       pure parsing and matching (unit tested)
 *   lua.c            the Redis scripts (also run by the integration tests)
 *   worker_auth.c    registration and worker token checks, the worker's Redis record
 *   events.c         the Kafka events the service emits
 *   routes.h         the route handlers, the job consumer and the modules' hooks, implemented
 *                    by routes_workers.c, next_job.c, heartbeat.c, fleet.c, reports.c,
 *                    cancel.c, consume_jobs.c and reaper.c
 *   service.c        the descriptor wm_service: NF_WM_* rows, route table, topics, hooks
 *   main.c           nf_svc_main(&wm_service)
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "nf_cfg.h"
#include "nf_crypto.h"
#include "nf_http.h"
#include "nf_id.h"
#include "nf_jobs.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_mem.h"
#include "nf_work.h"

struct nf_counter;
struct nf_gauge;
struct nf_http_req;
struct nf_pg;
struct nf_redis;
struct nf_redis_script;
struct redisReply;

#define WM_MAX_LABELS 32
#define WM_MAX_WAIT_S 30
#define WM_DEFAULT_WAIT_S 20
#define WM_SCAN_LIMIT 50          /* jobs looked at per queue by one pop */
#define WM_POLL_RETRY_MS 200      /* long-poll rescan period */
#define WM_MAX_HB_JOBS 256        /* jobs one heartbeat may list */
#define WM_DONE_TTL_S (7 * 86400) /* wm:job:<id> kept after its lease ends (redelivery) */
#define WM_WORKER_FORBIDDEN "missing or invalid worker token" /* the 403 of worker routes */

/* The descriptor (service.c); main.c runs it. */
struct nf_svc;
struct nf_svc_desc;
extern const struct nf_svc_desc wm_service;

/* The service's own rows (svc->own); the shared ones (NF_WM_ADDR, the backends,
 * NF_WM_MIGRATIONS, NF_WM_TIMEOUT_MS, NF_WM_DRAIN_MS, NF_WM_GROUP, ...) are nf_svc's
 * (svc->cfg). */
struct wm_config {
    char *reg_token;      /* NF_WORKER_REGISTRATION_TOKEN (secret) */
    int heartbeat_s;      /* NF_WM_HEARTBEAT_INTERVAL_S */
    int lease_ttl_s;      /* NF_WM_LEASE_TTL_S (at least two heartbeats) */
    int reap_interval_ms; /* NF_WM_REAP_INTERVAL_MS */
};

/* A registered worker as the routes need it (Redis hash wm:worker:<id> or wm.workers). */
struct wm_worker {
    char worker_id[NF_ID_MAX];
    char token_hash[NF_SHA256_HEX_LEN + 1];
    char *hostname;
    char *gpu_type; /* "" = none */
    int gpu_count;
    unsigned types; /* bit i = nf_job_types[i] */
    cJSON *labels;  /* object of strings, never NULL once parsed */
    char *version;  /* may be "" */
};

/* A dispatch message reduced to what the queue needs. */
struct wm_dispatch {
    cJSON *ev;          /* the parsed envelope (owned) */
    const cJSON *data;  /* points into ev */
    const char *job_id; /* points into ev */
    int type;           /* index into nf_job_types */
    int priority;       /* 0..9 */
    long long attempt;  /* >= 1 */
};

/* ---- validate.c: pure functions, no I/O ---------------------------------------- */

/*
 * Reads a registration body (hostname, gpu_type, gpu_count, job_types[], labels{},
 * version) into w (worker_id and token_hash untouched). On error fills err (param and
 * message for a 422) and returns -1; w may then hold partial fields (wm_worker_clear).
 */
int wm_register_parse(const cJSON *body, struct wm_worker *w, struct nf_json_err *err);
/* Frees the heap fields of w and zeroes it. NULL ok. */
void wm_worker_clear(struct wm_worker *w);
/* "generate,train" for a types mask into out; "" when empty. */
void wm_types_join(unsigned types, char *out, size_t outlen);
/* Parses "generate,train" (as written by wm_types_join); -1 on an unknown name. */
int wm_types_parse(const char *s, unsigned *types);
/*
 * The requirement rule the pop script applies, in C (tests and documentation): the job's
 * gpu_type is null/empty or equals the worker's; its gpu_count (absent = 0) is at most the
 * worker's; every job label is present in the worker labels with the same value.
 */
bool wm_job_matches(const struct wm_worker *w, const cJSON *job);
/*
 * Parses a forge.job.dispatch envelope. On success fills d (free with wm_dispatch_clear)
 * and returns 0; on a malformed message returns -1 with *why set to a static reason.
 */
int wm_dispatch_parse(const char *payload, size_t len, struct wm_dispatch *d, const char **why);
void wm_dispatch_clear(struct wm_dispatch *d);
/* Parses "Bearer <token>"; returns the token (pointer into header) or NULL. */
const char *wm_bearer(const char *header);

/*
 * A worker's status in the fleet list: "lost" when no heartbeat came for 3 intervals
 * (last_seen_ms 0 = never / record gone), else "draining", "busy" (holds leases) or
 * "idle". Returns a static string.
 */
const char *wm_worker_status(uint64_t now_ms, uint64_t last_seen_ms, int heartbeat_s, bool draining,
                             size_t njobs);

/*
 * The reaper's guard against its own silence. A lease also runs out while no manager
 * answers heartbeats - this process was down and just started, or its loop stood still -
 * and then live workers could not renew it. Called on every reaper tick with the time of
 * the previous tick (0: the first tick after start) and the current hold deadline;
 * returns the new one: at start, or when the ticks were more than one heartbeat interval
 * behind (the manager stalled), now + one lease TTL, so every live worker gets a full
 * lease of a serving manager to renew before its job is called lost. The reaper neither
 * reaps leases nor declares workers lost while now < the returned deadline.
 */
uint64_t wm_reap_hold(uint64_t now_ms, uint64_t prev_tick_ms, uint64_t hold_until_ms,
                      const struct wm_config *cfg);

/* A report an agent without Kafka posts to /api/workers/events or /api/workers/usage. */
struct wm_report {
    const cJSON *event;   /* the CloudEvents envelope (points into the body) */
    const char *lease_id; /* points into the body */
    const char *job_id;   /* data.job_id */
    long long attempt;    /* data.attempt */
};

enum wm_report_kind { WM_REPORT_EVENT, WM_REPORT_USAGE };

/*
 * Checks a report body {worker_id, lease_id, event}: event is a CloudEvents 1.0
 * envelope whose type a worker may send on that route - forge.job.{running, progress,
 * log, succeeded, failed, cancelled} with subject = data.job_id (events), or
 * forge.usage.recorded with data.worker_id = worker_id (usage) - and data.job_id,
 * data.attempt are well formed. On success fills out (pointers into body) and returns 0;
 * else -1 with err (param and message for a 422).
 */
int wm_report_parse(const cJSON *body, enum wm_report_kind kind, const char *worker_id,
                    struct wm_report *out, struct nf_json_err *err);

/* ---- lua.c: the Redis scripts (sources, also run by the integration tests) -------- */

/*
 * enqueue: KEYS wm:job:<id>, wm:queue:<type>, wm:lease:<id>, wm:leases, wm:cancelled:<id>;
 *   ARGV data, attempt, score, job_id. Returns 1 queued, 0 duplicate (same or newer
 *   attempt already known) or dropped (the job was cancelled: tombstone).
 * pop: KEYS wm:leases, wm:worker:<wid>, wm:wleases:<wid>, wm:queue:<type>...;
 *   ARGV worker_id, gpu_type, gpu_count, labels_json, lease_id, now_ms, lease_ttl_ms,
 *   scan_limit, worker_ttl_s. Returns nil, -1 (the worker is draining: no new jobs) or
 *   {job_id, data, attempt}.
 * heartbeat: KEYS wm:leases, wm:worker:<wid>, wm:wleases:<wid>, wm:cancel:<wid>,
 *   wm:workers; ARGV worker_id, now_ms, lease_ttl_ms, worker_ttl_s, done_ttl_s,
 *   pg_every_ms, draining ("1" = the agent is stopping), then job_id, lease_id pairs.
 *   Renews (and marks confirmed) the listed leases that are this worker's; releases its
 *   confirmed leases it no longer lists. A lease never confirmed (the answer carrying the
 *   job may never have reached the worker) is not released by omission: it expires and
 *   the reaper reports it lost. A draining worker left with no lease becomes drained
 *   (once) and leaves wm:workers; any other known worker is (re)stamped there. Returns
 *   {update_pg (0/1), {cancelled job ids...}, renewed, released, {lost job ids...},
 *   draining (0/1), drained (0 no, 1 just now, 2 before), {their lease ids...}}.
 *   cancelled: listed jobs in wm:cancel:<wid>; lost: listed jobs whose lease is not (any
 *   more) this worker's, with the lease ids the worker sent for them.
 * reap_claim: KEYS wm:leases; ARGV now_ms, limit, reclaim_ms. Returns a flat array of
 *   job_id, lease_json ("" when the lease key is gone), job data ("" when gone).
 * reap_done: KEYS wm:leases; ARGV job_id, lease_id ("" = unknown), done_ttl_s.
 * requeue: KEYS wm:leases, wm:queue:<type>; ARGV job_id, lease_id, score. Gives a job
 *   just leased back to its queue (the poll's client went away). Returns 1, or 0 when the
 *   lease is not that one any more.
 * lost_claim: KEYS wm:workers; ARGV cutoff_ms, limit. Removes workers last seen at or
 *   before cutoff (a worker whose hash shows a newer heartbeat is re-stamped instead) and
 *   returns a flat array of worker_id, last_seen_ms, {job ids in its wleases set}.
 * drain: KEYS wm:worker:<wid>, wm:wleases:<wid>, wm:workers; ARGV worker_id. Returns -1
 *   (no live worker), 1 (draining, jobs left), 2 (drained before), 3 (drained now).
 * cancel: KEYS wm:job:<id>, wm:lease:<id>, wm:cancelled:<id>; ARGV job_id, tombstone_s.
 *   Leaves the tombstone, then takes the job out of its ready queue, or asks its worker
 *   to stop it. Returns {"dequeued"|"signalled"|"unknown", worker_id or ""}.
 * lease_check: KEYS wm:lease:<id>; ARGV worker_id, lease_id, attempt. 1 when that lease
 *   is held (not being reaped) by that worker for that attempt, else 0.
 * fleet: no keys; ARGV worker ids. Returns per worker {last_seen_ms or "", draining
 *   ("1" or ""), {job ids leased to it, sorted}}.
 */
extern const char wm_lua_enqueue[];
extern const char wm_lua_pop[];
extern const char wm_lua_heartbeat[];
extern const char wm_lua_reap_claim[];
extern const char wm_lua_reap_done[];
extern const char wm_lua_requeue[];
extern const char wm_lua_lost_claim[];
extern const char wm_lua_drain[];
extern const char wm_lua_cancel[];
extern const char wm_lua_lease_check[];
extern const char wm_lua_fleet[];

/* ---- ctx.c: the context and the helpers the modules share -------------------------- */

struct wm_poll; /* next_job.c: one waiting long poll */

struct wm_metrics {
    struct nf_counter *dispatch_queued;
    struct nf_counter *dispatch_duplicate;
    struct nf_counter *dispatch_malformed;
    struct nf_counter *dispatch_retry;
    struct nf_counter *jobs_leased;
    struct nf_counter *polls_empty;
    struct nf_counter *leases_released;
    struct nf_counter *leases_reaped;
    struct nf_counter *workers_registered;
    struct nf_counter *auth_failed;
    struct nf_counter *events_failed;
    struct nf_counter *heartbeat_lost_jobs; /* heartbeats listing leases no longer held */
    struct nf_counter *workers_lost;
    struct nf_counter *workers_drained;
    struct nf_counter *polls_draining; /* polls of draining workers answered 204 */
    struct nf_counter *cancel_dequeued;
    struct nf_counter *cancel_signalled;
    struct nf_counter *cancel_unknown;
    struct nf_counter *reports_accepted; /* HTTP fallback events and usage produced */
    struct nf_counter *reports_refused;  /* ... refused 409: lease not held */
    struct nf_gauge *polls_waiting;
};

/*
 * Everything the process holds; the callback argument of every handler. Made by the
 * descriptor's init hook; the backends are nf_svc's (borrowed, set in start). Callbacks
 * check svc->stopping (SIGTERM: take no new work) and svc->closing (teardown: the backends
 * are being freed, only clean up).
 */
struct wm_ctx {
    struct nf_svc *svc;          /* the service frame (not owned) */
    const struct wm_config *cfg; /* svc->own */
    struct event_base *base;
    struct nf_redis *redis;
    struct nf_pg *pg;
    struct nf_kafka_producer *producer;
    struct wm_metrics m;
    struct nf_redis_script *lua_enqueue; /* owned by redis */
    struct nf_redis_script *lua_pop;
    struct nf_redis_script *lua_heartbeat;
    struct nf_redis_script *lua_reap_claim;
    struct nf_redis_script *lua_reap_done;
    struct nf_redis_script *lua_requeue;
    struct nf_redis_script *lua_lost_claim;
    struct nf_redis_script *lua_drain;
    struct nf_redis_script *lua_cancel;
    struct nf_redis_script *lua_lease_check;
    struct nf_redis_script *lua_fleet;
    uint8_t reg_token_hash[32]; /* SHA-256 of the registration token */
    LIST_HEAD(, wm_poll) polls; /* waiting long polls */
    size_t npolls;
    struct nf_work_queue work; /* dispatch messages on their way into Redis */
    struct event *reaper;      /* periodic lease reaper (owned) */
    int reaping;               /* reaper and lost-worker rounds in flight */
    uint64_t reap_prev_ms;     /* the previous reaper tick (0: none yet) */
    uint64_t reap_hold_ms;     /* no reaping before (wm_reap_hold) */
};

/* A new context for svc (svc->own loaded, svc->metrics made): token hash and metrics.
 * Backends are borrowed later by wm_ctx_start. */
struct wm_ctx *wm_ctx_new(struct nf_svc *svc);
/* Borrows the backends and registers the Redis scripts (start hook). */
void wm_ctx_start(struct wm_ctx *ctx);
/* 503 {"error":{"code":"unavailable"}} with Retry-After: 1. */
void wm_reply_unavailable(struct nf_http_req *req, const char *msg);
/* While stopping, answers 503 "the worker-manager is stopping" and returns true. */
bool wm_refuse_stopping(struct wm_ctx *ctx, struct nf_http_req *req);
/* One row of a scan script's reply: an id, a string and a string or an array. */
typedef void (*wm_scan_fn)(struct wm_ctx *ctx, const char *id, const char *second,
                           const struct redisReply *third);
/*
 * Ends a reaper round (ctx->reaping--) with the reply of a scan script (reap_claim,
 * lost_claim): a flat array of (id, second, third) rows, third of hiredis type
 * third_type. Calls fn for each well-formed row; none on no answer, on a script error
 * (logged as `event`) or during the teardown.
 */
void wm_scan_rows(struct wm_ctx *ctx, const struct redisReply *reply, int third_type, wm_scan_fn fn,
                  const char *event, const char *msg);

/* ---- worker_auth.c ------------------------------------------------------------------ */

/* Constant-time check of token against the registration token (operator secret). */
bool wm_registration_ok(const struct wm_ctx *ctx, const char *token);
/*
 * The start of a worker route: "Authorization: Bearer <token>" (missing: 403 with the
 * message `forbidden`, counted) and the JSON body (bad: 400). Returns the body (lives with
 * req) with *token pointing into the header, or NULL when req was answered.
 */
cJSON *wm_req_body(struct wm_ctx *ctx, struct nf_http_req *req, const char *forbidden,
                   const char **token);
/* Answers a failed wm_auth_worker: 403 with the message `forbidden`, else 503. */
void wm_reply_auth_failed(struct nf_http_req *req, int status, const char *forbidden);
/*
 * Checks "Authorization: Bearer <worker_token>" against worker_id's stored hash (Redis
 * wm:worker:<id>, else wm.workers, which then refills Redis). cb fires exactly once:
 * status 0 with the worker (valid only during the callback), or status 403 / 503 with w
 * NULL. The caller still owns req and answers it.
 */
typedef void (*wm_auth_cb)(struct wm_ctx *ctx, int status, const struct wm_worker *w, void *arg);
void wm_auth_worker(struct wm_ctx *ctx, const char *worker_id, const char *token, wm_auth_cb cb,
                    void *arg);
/* Writes the worker's Redis hash (HSET + EXPIRE), fire and forget. */
void wm_worker_cache(struct wm_ctx *ctx, const struct wm_worker *w, const char *registered_at);

/* ---- events.c ------------------------------------------------------------------------ */

/* Produces an event (CloudEvents envelope, source nf-worker-manager, key = subject); data
 * consumed. 0: cb fires later exactly once; -1: not queued (logged), cb not called. */
int wm_event_send(struct wm_ctx *ctx, const char *topic, const char *type, const char *subject,
                  cJSON *data, nf_kafka_delivery_cb cb, void *arg);
/* Produces a worker event to forge.workers.events; data consumed. */
void wm_event_worker(struct wm_ctx *ctx, const char *type, const char *worker_id, cJSON *data);
/* Emits forge.worker.drained (the worker is draining and holds no lease). */
void wm_worker_drained(struct wm_ctx *ctx, const char *worker_id, const char *reason);
