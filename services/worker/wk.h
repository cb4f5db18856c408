#pragma once
/*
 * nf-worker: the worker agent (DESIGN §7). Registers with the API, long-polls for jobs,
 * runs handlers/<job_type> per job and publishes job events and usage to Kafka.
 *
 *   api.c      register (retry with backoff) --> poll next_job --> wk_job_start
 *              heartbeat every heartbeat_interval_s (leases + progress; cancelled and
 *              lost jobs and the drain flag back)
 *   job.c      fork/exec handler, stdin = job JSON, stdout lines --> proto.c
 *              SIGCHLD --> exit status --> terminal event (+ artifacts.c, usage.c)
 *   publish.c  Kafka with retry: a job's slot is freed only after its terminal event and
 *              usage were delivered. Without Kafka (NF_KAFKA_BROKERS empty) the same
 *              messages go to POST /api/workers/events|usage, which check the lease
 *   wk.c       context, configuration parsing, SIGTERM drain, operator drain
 *
 * Pure, unit-tested parts: proto.c (stdout protocol), artifacts.c (path checks, digests),
 * usage.c (window ids and usage records), config.c (URL, labels, types parsing).
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "nf_app.h"
#include "nf_cfg.h"
#include "nf_crypto.h"
#include "nf_id.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_mem.h"

struct bufferevent;
struct nf_http_client;

#define WK_NJOB_TYPES 6
#define WK_VERSION "nf-worker/0.1.0"
#define WK_MAX_LINE ((size_t)64 * 1024) /* longest stdout/stderr line kept */
#define WK_MAX_LOG_EVENTS 1000          /* log events per job; more are counted, not sent */
#define WK_LOG_MSG_MAX 4096             /* a log event's message is cut to this */
#define WK_EXIT_RETRYABLE 75            /* EX_TEMPFAIL: retryable failure (class infra) */

extern const char *const wk_job_types[WK_NJOB_TYPES];

struct wk_config {
    char *api_url;       /* NF_API_URL */
    char *reg_token;     /* NF_WORKER_REGISTRATION_TOKEN (secret) */
    char *brokers;       /* NF_KAFKA_BROKERS */
    char *handlers;      /* NF_WORKER_HANDLERS directory */
    char *artifact_root; /* NF_WORKER_ARTIFACT_ROOT */
    int slots;           /* NF_WORKER_SLOTS */
    char *gpu_type;      /* NF_WORKER_GPU_TYPE, "" = none */
    int gpu_count;       /* NF_WORKER_GPU_COUNT */
    char *job_types;     /* NF_WORKER_JOB_TYPES, comma separated */
    char *labels;        /* NF_WORKER_LABELS "k=v,k2=v2" */
    char *hostname;      /* NF_WORKER_HOSTNAME, "" = gethostname() */
    int poll_wait_s;     /* NF_WORKER_POLL_WAIT_S */
    int drain_timeout_s; /* NF_WORKER_DRAIN_TIMEOUT_S */
    int kill_grace_s;    /* NF_WORKER_KILL_GRACE_S */
    int usage_window_s;  /* NF_WORKER_USAGE_WINDOW_S */
    int progress_ms;     /* NF_WORKER_PROGRESS_INTERVAL_MS */
    char *worker_id;     /* NF_WORKER_ID: a pre-registered identity ("" = register) */
    char *worker_token;  /* NF_WORKER_TOKEN (secret), with NF_WORKER_ID */
};

extern const struct nf_cfg_opt wk_cfg_opts[];
extern const size_t wk_cfg_nopts;

/* Settings derived from the configuration at start. */
struct wk_settings {
    char *api_host;
    int api_port;
    char *api_prefix; /* "" or "/base" without a trailing slash */
    unsigned types;   /* bit i = wk_job_types[i] */
    cJSON *labels;    /* object of strings */
    char *hostname;
};

/* ---- config.c ------------------------------------------------------------------------ */

/* Loads the table and derives `set`; on error fills err, returns -1 (free both anyway). */
int wk_config_load(struct wk_config *cfg, struct wk_settings *set, char *err, size_t errlen);
void wk_config_free(struct wk_config *cfg, struct wk_settings *set);
/* "http://host[:port][/prefix]" -> heap host, port (80 default), heap prefix ("" or
 * "/prefix" without trailing slash). -1 on anything else (https is refused). */
int wk_parse_url(const char *url, char **host, int *port, char **prefix);
/* "k=v,k2=v2" (spaces around items ignored) -> new object; -1 with err on bad input. */
int wk_parse_labels(const char *s, cJSON **out, char *err, size_t errlen);
/* "generate,train" -> mask; "" or an unknown name -> -1. */
int wk_parse_types(const char *s, unsigned *mask);
int wk_job_type_index(const char *name);

/* ---- proto.c: the handler stdout protocol -------------------------------------------- */

enum wk_line_kind {
    WK_LINE_EMPTY = 0, /* blank line: ignored, not counted */
    WK_LINE_MALFORMED, /* anything not understood: ignored and counted */
    WK_LINE_PROGRESS,  /* {"progress": 0.4} (0..1) */
    WK_LINE_LOG,       /* {"log": "..."} */
    WK_LINE_USAGE,     /* {"usage": {"input_tokens": n, "output_tokens": n}} */
    WK_LINE_ARTIFACT,  /* {"artifact": {"path": "...", "kind": "..."}} */
    WK_LINE_RESULT,    /* {"result": {...}} */
};

struct wk_line {
    enum wk_line_kind kind;
    cJSON *doc; /* the parsed line (owned; wk_line_clear) */
    double progress;
    const char *message;    /* log: points into doc */
    long long input_tokens; /* usage: 0 when absent */
    long long output_tokens;
    const char *path;     /* artifact: points into doc */
    const char *art_kind; /* artifact: "file" when absent */
    cJSON *result;        /* result: points into doc; detach to keep it */
};

/*
 * Parses one stdout line (len bytes, no newline needed; a trailing \r is ignored). A
 * line is an object holding exactly one of the keys progress, log, usage, artifact,
 * result (other keys are ignored). Returns the kind, also stored in out->kind.
 */
enum wk_line_kind wk_proto_parse(const char *line, size_t len, struct wk_line *out);
void wk_line_clear(struct wk_line *l);

/* ---- artifacts.c ------------------------------------------------------------------- */

/*
 * Resolves an artifact path announced by a handler: relative to dir, or absolute. The
 * real path (symlinks resolved) must be a regular file strictly inside dir's real path.
 * On success writes it to out and returns 0; else -1 with *why a static reason.
 */
int wk_artifact_resolve(const char *dir, const char *path, char *out, size_t outlen,
                        const char **why);
/* Size and SHA-256 (lowercase hex) of a file, streamed. -1 with errno on I/O error. */
int wk_artifact_digest(const char *path, uint64_t *bytes, char sha_hex[NF_SHA256_HEX_LEN + 1]);
/*
 * Builds the artifact record of a succeeded event: {artifact_id, name, kind, uri, bytes,
 * sha256} for the resolved file; NULL with *why on failure.
 */
cJSON *wk_artifact_record(const char *dir, const char *path, const char *kind, const char **why);

/* ---- usage.c ------------------------------------------------------------------------- */

#define WK_USAGE_ID_LEN 36 /* "use_" + 32 hex */

/* "use_" + first 32 hex of SHA-256("job_id:attempt:meter:window_index"). */
void wk_usage_id(const char *job_id, long long attempt, const char *meter, long long window,
                 char out[WK_USAGE_ID_LEN + 1]);
/* GPU milliseconds of a window: wall ms x gpu_count (0 when gpu_count <= 0). */
uint64_t wk_gpu_ms(uint64_t wall_ms, int gpu_count);

struct wk_usage {
    const char *user_id;
    const char *job_id;
    const char *job_type;
    long long attempt;
    const char *worker_id;
    const char *meter; /* gpu_ms, input_tokens, output_tokens */
    long long quantity;
    long long window; /* window index (0 for per-job totals) */
    uint64_t start_ms, end_ms;
};

/* The complete forge.usage.recorded envelope (deterministic id), heap JSON text. */
char *wk_usage_event(const struct wk_usage *u, const char *source);

/* ---- the running agent ----------------------------------------------------------------- */

struct wk_job;
struct wk_out;

struct wk {
    struct wk_config cfg;
    struct wk_settings set;
    struct nf_app *app;      /* not owned */
    struct event_base *base; /* not owned */
    struct nf_kafka_producer *producer;
    struct nf_http_client *http;        /* register and heartbeat */
    struct nf_http_client *poll_http;   /* next_job long polls (dropped at SIGTERM) */
    struct nf_http_client *report_http; /* HTTP fallback reports (no Kafka), one at a time */
    char worker_id[NF_ID_MAX];
    char *worker_token;
    char source[NF_ID_MAX + 16]; /* "nf-worker/<worker_id>" */
    int heartbeat_s;
    bool registered;
    bool registering; /* a register request is in flight */
    bool polling;     /* a next_job request is in flight */
    bool heartbeating;
    bool heartbeat_again; /* another heartbeat is wanted once this one answers */
    int backoff_ms;       /* register / poll retry delay */
    struct event *retry;  /* register or poll retry */
    struct event *heartbeat;
    struct event *heartbeat_kick; /* one-shot: heartbeat now */
    struct event *sigchld;
    struct event *drain;  /* drain deadline after SIGTERM */
    struct event *finish; /* deferred shutdown completion */
    struct wk_job *jobs;  /* running and finishing jobs */
    int njobs;
    struct wk_out *outs; /* messages waiting for a Kafka retry */
    bool stopping;       /* SIGTERM: no new jobs */
    bool draining;       /* the manager said drain: no new jobs, exit once idle */
    bool closing;        /* tearing down: callbacks must not chain */
    int exit_code;
};

/* wk.c */
/* Takes over cfg and set (zeroed). Creates the producer and HTTP client and starts the
 * registration. -1 (logged) on failure, *out untouched. */
int wk_new(struct wk **out, struct nf_app *app, struct wk_config *cfg, struct wk_settings *set);
void wk_free(struct wk *ctx);
void wk_on_stop(void *arg);
/* A job slot became free (or the agent is idle): poll, or finish a shutdown or drain. */
void wk_slot_freed(struct wk *ctx);
/* The manager asked this worker to drain: stop polling, exit once every job is reported. */
void wk_drain(struct wk *ctx);

/* api.c */
void wk_api_register(struct wk *ctx);
/* Starts as the pre-registered NF_WORKER_ID (heartbeat + poll); a 403 registers anew. */
void wk_api_resume(struct wk *ctx);
void wk_api_poll(struct wk *ctx);
void wk_api_heartbeat_start(struct wk *ctx);
/* Sends a heartbeat now (or right after the one in flight). */
void wk_api_heartbeat_now(struct wk *ctx);
/* Shutdown: a last heartbeat listing no jobs (releases their leases), then
 * nf_app_stop_done. Stops at once when not registered. */
void wk_api_farewell(struct wk *ctx);

/* job.c */
/* Starts a job from a next_job answer (job object and lease id; job not consumed). When
 * the agent is stopping, the job is reported failed (infra) without running. */
void wk_job_start(struct wk *ctx, const cJSON *job, const char *lease_id);
/* Heartbeat said the user cancelled the job: SIGTERM, grace, SIGKILL, then
 * forge.job.cancelled. */
void wk_job_cancel(struct wk *ctx, const char *job_id);
/* Heartbeat said the lease is gone (reaped or superseded): stop the handler and report
 * nothing - the job has moved on without this worker. lease_id NULL: every attempt of
 * the job held here. */
void wk_job_lost(struct wk *ctx, const char *job_id, const char *lease_id);
/* The lease id of a job this agent holds (for HTTP fallback reports); NULL if unknown. */
const char *wk_job_lease(struct wk *ctx, const char *job_id);
/* Drain deadline: terminate every running job (reported failed, class infra). */
void wk_jobs_terminate(struct wk *ctx);
/* The heartbeat's jobs array: [{job_id, lease_id, progress}]; marks the jobs listed. */
cJSON *wk_jobs_heartbeat(struct wk *ctx);
/* That heartbeat was answered 200 (ok) or not: listed jobs become confirmed; finished,
 * delivered and confirmed jobs are freed. */
void wk_jobs_heartbeat_done(struct wk *ctx, bool ok);
void wk_on_sigchld(evutil_socket_t fd, short what, void *arg);
/* publish.c: a reliable message of job was queued (hold) / delivered (released). The job
 * is freed, and its slot reused, once it finished and nothing is held any more. */
void wk_job_hold(struct wk_job *job);
void wk_job_delivered(struct wk_job *job);
/* Frees every job without reporting (teardown). */
void wk_jobs_free(struct wk *ctx);

/* publish.c */
/*
 * Queues a message and retries it until delivered (or teardown). job may be NULL; else
 * its pending count is held until delivery. payload is copied.
 */
void wk_publish(struct wk *ctx, struct wk_job *job, const char *topic, const char *key,
                const char *payload);
/* A job event on forge.jobs.events (CloudEvents; data consumed). reliable: retried until
 * delivered and counted against the job; else fire and forget. */
void wk_publish_job_event(struct wk *ctx, struct wk_job *job, const char *type, cJSON *data,
                          bool reliable);
/* Frees timer-waiting messages at teardown. */
void wk_publish_free(struct wk *ctx);
