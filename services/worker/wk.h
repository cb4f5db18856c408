#pragma once
/*
 * nf-worker: the worker agent (DESIGN §7). Registers with the API, long-polls for jobs,
 * runs handlers/<job_type> per job and publishes job events and usage to Kafka. An agent,
 * not a server: no HTTP listener, no Postgres, Redis or consumer; nf_svc runs it (the
 * configuration, the loop, SIGTERM and the drain deadline).
 *
 * Files, bottom up (of the service's headers each includes only wk.h; job*.c also job.h);
 * each file calls only files listed before it:
 *   wk.h + wk.c   the context, the configuration struct, shared helpers (the authorised
 *                 POST to /api/workers/..., freeing an event or a bufferevent)
 *   config.c      settings derived from the rows (API URL, labels, job types, hostname)
 *   proto.c       the handler stdout protocol       usage.c  usage records and their ids
 *   artifacts.c   artifact path checks, digests, the output plan and records
 *   inputs.c      the dispatch's inputs checked; the handler's job JSON (these five are
 *                 pure and unit-tested)
 *   stage.c       blocking object-store transfers (nf_s3), run in a job's child process
 *   jobdir.c      the work dir and the per-attempt job directories (0700), kept deploy
 *                 directories
 *   job_set.c     the jobs held (ctx->jobs): hold/delivered counts, lease lookup, the
 *                 heartbeat list and its confirmation, freeing a job that is done (then
 *                 ctx->slot_freed) (job.h: private to job*.c)
 *   publish.c     Kafka with retry: a job's slot is freed only after its terminal event and
 *                 usage were delivered. Without Kafka (NF_KAFKA_BROKERS empty) the same
 *                 messages go to POST /api/workers/events|usage, which check the lease
 *   serving.c     deployments served after their deploy job ended: GPU time metered in
 *                 windows (forge.usage, deployment_id) until the endpoint stops
 *   job_report.c  stdout lines -> proto.c; progress, logs, usage windows, terminal event
 *   job_upload.c  after exit 0: a forked uploader puts the artifacts in the store
 *   job_ckpt.c    while the handler runs: checkpoints uploaded and recorded at once
 *                 (forge.job.checkpoint), so a retry can resume from them
 *   job_child.c   fork; the child fetches the inputs (and a retry's checkpoint into
 *                 NF_RESUME_DIR), then execs the handler; stdin = job JSON,
 *                 stdout/stderr lines, signals, SIGCHLD
 *   job.c         job lifecycle: start, cancel, lease lost, drain deadline, teardown
 *   api.c         register (retry with backoff) --> poll next_job --> wk_job_start;
 *                 heartbeat every heartbeat_interval_s (leases + progress; cancelled and
 *                 lost jobs and the drain flag back); operator drain; the farewell. Sets
 *                 the context's hooks, through which the job files reach it
 *   service.c     the descriptor wk_service: NF_WORKER_* rows and the hooks (start,
 *                 SIGTERM drain, teardown)
 *   main.c        nf_svc_main(&wk_service)
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "nf_crypto.h"
#include "nf_event.h"
#include "nf_http_client.h"
#include "nf_id.h"
#include "nf_jobs.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_mem.h"
#include "nf_s3.h"

struct bufferevent;
struct nf_svc;

/* The descriptor (service.c); main.c runs it. */
struct nf_svc_desc;
extern const struct nf_svc_desc wk_service;

#define WK_VERSION "nf-worker/0.1.0"
#define WK_MAX_LINE ((size_t)64 * 1024) /* longest stdout/stderr line kept */
#define WK_MAX_LOG_EVENTS 1000          /* log events per job; more are counted, not sent */
#define WK_LOG_MSG_MAX 4096             /* a log event's message is cut to this */
#define WK_MAX_METRIC_EVENTS 10000      /* metric events per attempt; more are counted, not sent */
#define WK_EXIT_RETRYABLE 75            /* EX_TEMPFAIL: retryable failure (class infra) */

/* The service's own rows (svc->own), the NF_WORKER_* table of service.c; NF_LOG_LEVEL is
 * nf_svc's. NF_KAFKA_BROKERS is a row of the worker's own: it may be empty (HTTP fallback). */
struct wk_config {
    char *api_url;       /* NF_API_URL */
    char *reg_token;     /* NF_WORKER_REGISTRATION_TOKEN (secret) */
    char *brokers;       /* NF_KAFKA_BROKERS */
    char *handlers;      /* NF_WORKER_HANDLERS directory */
    char *work_dir;      /* NF_WORKER_WORK_DIR: the job directories' root */
    char *artifact_root; /* NF_WORKER_ARTIFACT_ROOT: older name of the work dir */
    char *max_input;     /* NF_WORKER_MAX_INPUT_BYTES (text: over an int) */
    char *store_cache;   /* NF_WORKER_STORE_CACHE: base models and benchmarks from the store */
    char *handler_env;   /* NF_WORKER_HANDLER_ENV: NF_ names passed to handlers, a,b */
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
    int deploy_meter_s;  /* NF_WORKER_DEPLOY_METER_S: a serving deployment's GPU windows */
    int progress_ms;     /* NF_WORKER_PROGRESS_INTERVAL_MS */
    int outbox_max_mb;   /* NF_WORKER_OUTBOX_MAX_MB */
    char *worker_id;     /* NF_WORKER_ID: a pre-registered identity ("" = register) */
    char *worker_token;  /* NF_WORKER_TOKEN (secret), with NF_WORKER_ID */
    char *s3_endpoint;   /* NF_S3_ENDPOINT */
    char *s3_region;     /* NF_S3_REGION */
    char *s3_access_key; /* NF_S3_ACCESS_KEY (secret) */
    char *s3_secret_key; /* NF_S3_SECRET_KEY (secret) */
    char *s3_bucket;     /* NF_S3_BUCKET */
};

/* Settings derived from the configuration (config.c). */
struct wk_settings {
    char *api_host;
    int api_port;
    char *api_prefix; /* "" or "/base" without a trailing slash */
    unsigned types;   /* bit i = nf_job_types[i] */
    cJSON *labels;    /* object of strings */
    char *hostname;
    const char *work_dir;      /* NF_WORKER_WORK_DIR, else NF_WORKER_ARTIFACT_ROOT */
    long long max_input_bytes; /* a job's inputs together */
    char *store_cache;         /* NF_WORKER_STORE_CACHE, else <work dir>/store-cache */
    struct nf_s3_conf s3;      /* its strings point into the wk_config */
};

/* ---- config.c ------------------------------------------------------------------------ */

/* Derives `set` from the loaded rows; on error fills err naming the variable and returns
 * -1 (wk_settings_free it anyway). */
int wk_settings_load(const struct wk_config *cfg, struct wk_settings *set, char *err,
                     size_t errlen);
void wk_settings_free(struct wk_settings *set);
/* "http://host[:port][/prefix]" -> heap host, port (80 default), heap prefix ("" or
 * "/prefix" without trailing slash). -1 on anything else (https is refused). */
int wk_parse_url(const char *url, char **host, int *port, char **prefix);
/* "k=v,k2=v2" (spaces around items ignored) -> new object; -1 with err on bad input. */
int wk_parse_labels(const char *s, cJSON **out, char *err, size_t errlen);
/* "generate,train" -> mask; "" or an unknown name -> -1. */
int wk_parse_types(const char *s, unsigned *mask);

/* ---- proto.c: the handler stdout protocol -------------------------------------------- */

enum wk_line_kind {
    WK_LINE_EMPTY = 0, /* blank line: ignored, not counted */
    WK_LINE_MALFORMED, /* anything not understood: ignored and counted */
    WK_LINE_PROGRESS,  /* {"progress": 0.4} (0..1) */
    WK_LINE_LOG,       /* {"log": "..."} */
    WK_LINE_USAGE,     /* {"usage": {"input_tokens": n, "output_tokens": n}} */
    WK_LINE_ARTIFACT,  /* {"artifact": {"path": "...", "kind": "..."}} */
    WK_LINE_RESULT,    /* {"result": {...}} */
    WK_LINE_METRIC,    /* {"metric": {"step": n, "epoch"?: x, "<name>": x, ...}} */
};

#define WK_METRIC_STEP_MAX 1000000000000LL    /* 1e12 steps: bigger is certainly a bug */
#define WK_METRIC_VALUES_MAX 32               /* values of one metric line besides step, epoch */
#define WK_METRIC_NAME_MAX NF_METRIC_NAME_MAX /* nf_metric_name_valid */

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
    cJSON *metric;        /* metric: points into doc, checked (wk_proto_parse) */
};

/*
 * Parses one stdout line (len bytes, no newline needed; a trailing \r is ignored). A
 * line is an object holding exactly one of the keys progress, log, usage, artifact,
 * result, metric (other keys are ignored). A metric is an object: "step" an integer in
 * 0..WK_METRIC_STEP_MAX, "epoch" (optional) a finite number >= 0, and 1 to
 * WK_METRIC_VALUES_MAX more members, each a well-formed name (WK_METRIC_NAME_MAX) with a
 * finite number; anything else makes the whole line malformed. Returns the kind, also stored in
 * out->kind.
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
 * The output plan: per announced artifact (duplicates once) {artifact_id, name, kind,
 * path (relative to dir), object_key = key_prefix + path}. NULL with *why and *bad_path
 * (the announced path) when one is refused (outside dir, not a file, a path that is not
 * printable ASCII without spaces, too long a key).
 */
cJSON *wk_artifact_plan(const char *dir, const cJSON *announced, const char *key_prefix,
                        const char **why, const char **bad_path);
/* The resolved path of an announced artifact relative to dir, its segments checked. */
int wk_artifact_rel(const char *dir, const char *path, char *rel, size_t len, const char **why);
/*
 * Opens dir/rel for reading without following a symlink in any component of rel; the
 * descriptor (O_CLOEXEC) of a regular file, or -1 with *why.
 */
int wk_artifact_open(const char *dir, const char *rel, const char **why);
/* The succeeded event's record of a plan item: {artifact_id, name, kind, bytes, sha256,
 * object_key, uri: "artifact://<artifact_id>"}. */
cJSON *wk_artifact_record(const cJSON *item, uint64_t bytes, const char *sha_hex);

/* ---- inputs.c: the dispatch's inputs and the handler's job JSON --------------------------- */

#define WK_MAX_INPUTS 16
#define WK_PARAM_MAX 64
#define WK_NAME_MAX 255

struct wk_input {
    char param[WK_PARAM_MAX + 1]; /* [a-z][a-z0-9_]*: also a directory name */
    char name[WK_NAME_MAX + 1];   /* plain file name */
    char *object_key;             /* under tenants/<user_id>/ */
    char *uri;                    /* the user's name for it, for messages ("" if none) */
    long long bytes;              /* as the dispatch says; -1 when absent */
};

struct wk_inputs {
    struct wk_input *v;
    int n;
};

/* A path segment we write or upload: 1..WK_NAME_MAX bytes of printable ASCII without
 * space, '/' or backslash, not "." or "..". */
bool wk_segment_valid(const char *s, size_t len);
/* An input's file name: as a segment, but spaces are allowed (uploaded file names). */
bool wk_file_name_valid(const char *name);
bool wk_param_valid(const char *param);
/* A user id as it appears in object keys: 1..64 of [A-Za-z0-9_-]. */
bool wk_user_id_valid(const char *user_id);
/* key is tenants/<user_id>/ plus one or more valid segments, at most NF_S3_KEY_MAX bytes. */
bool wk_tenant_key_valid(const char *key, const char *user_id);
/*
 * Checks the dispatch's "inputs" (absent, null or an array of at most WK_MAX_INPUTS
 * entries, each param unique) against doc's user_id into out (wk_inputs_free it). -1 with
 * err on the first bad entry; out untouched then.
 */
int wk_inputs_parse(const cJSON *doc, struct wk_inputs *out, char *err, size_t errlen);
void wk_inputs_free(struct wk_inputs *in);
/*
 * The dispatch's "resume" (absent or null: none; else {object_key, name, uri, bytes,
 * artifact_id, ...}: the job's newest checkpoint, for a retried attempt) as one input
 * whose param is "checkpoint", checked like an input entry. -1 with err; out untouched.
 */
int wk_resume_parse(const cJSON *doc, struct wk_inputs *out, char *err, size_t errlen);
/* <inputs_dir>/<param>/<name>; -1 when it does not fit. */
int wk_input_path(const char *inputs_dir, const struct wk_input *in, char *out, size_t len);
/* A copy of doc whose "inputs" is {"<param>": "<inputs_dir>/<param>/<name>"} (always an
 * object); NULL when a path does not fit. */
cJSON *wk_inputs_job_json(const cJSON *doc, const struct wk_inputs *in, const char *inputs_dir);

/* ---- stage.c: blocking transfers, in a child process ------------------------------------- */

/* Writes all of buf to fd (a pipe: short writes and EINTR retried); errors ignored, a
 * negative fd is a no-op. */
void wk_write_all(int fd, const char *buf, size_t len);

/* Why a transfer failed: the class and code of the failed event, and its message. */
struct wk_stage_err {
    char klass[16];
    char code[32];
    char message[400];
};

/*
 * Downloads every input to <inputs_dir>/<param>/<name>; the job's inputs together at most
 * max_bytes. A {"log": "input <param> fetched (<n> bytes)"} line goes to log_fd (-1: none)
 * per input. -1 with err: no such object or too large (user_error), anything else (infra).
 */
int wk_stage_in(const struct nf_s3_conf *conf, const struct wk_inputs *in, const char *inputs_dir,
                long long max_bytes, int log_fd, struct wk_stage_err *err);
/* Uploads dir/rel (opened by wk_artifact_open) to key; its size and SHA-256 out. -1 with
 * err. */
int wk_stage_out_one(const struct nf_s3_conf *conf, const char *dir, const char *rel,
                     const char *key, uint64_t *bytes, char sha_hex[NF_SHA256_HEX_LEN + 1],
                     char *err, size_t errlen);

/* ---- storecache.c: base models and benchmark data from the store, cached ------------------ */

#define WK_STORE_MAX 8 /* store prefixes one job may need */

enum wk_store_kind { WK_STORE_MODEL, WK_STORE_BENCHMARK };

struct wk_store_item {
    enum wk_store_kind kind;
    char param[WK_PARAM_MAX + 1]; /* model: the param it is the base of; benchmark: its name */
    char *uri;                    /* s3://<bucket>/<prefix>, for messages */
    char *prefix;                 /* the key prefix, ending in '/' */
    char *dir;                    /* <cache root>/<bucket>/<prefix without the last '/'> */
};

struct wk_store_items {
    struct wk_store_item *v;
    int n;
};

/* "s3://<bucket>/<prefix>[/]" of our bucket, the prefix outside tenants/ and made of valid
 * segments -> "<prefix>/" in prefix (cap bytes). -1 for anything else. */
int wk_store_prefix(const char *source, const char *bucket, char *prefix, size_t cap);
/*
 * What of the store the job needs: each "models" entry of kind base whose source is
 * s3:// (checked by wk_store_prefix; else -1 with err naming the model), and for an
 * evaluate job its params.benchmark (not custom) under benchmarks/<name>/. out (free it
 * with wk_store_items_free) is untouched on error.
 */
int wk_store_parse(const cJSON *doc, const char *bucket, const char *cache_root,
                   struct wk_store_items *out, char *err, size_t errlen);
void wk_store_items_free(struct wk_store_items *s);
/* Adds to the handler's job JSON where each item will be: models.<param>.local_dir, and
 * benchmark_data {name, uri, dir} (dir missing after the fetch: the store has none). */
void wk_store_job_json(cJSON *hdoc, const struct wk_store_items *s);
/* Blocking (the job's child): brings each item's directory up to date with the store,
 * one {"log"} line each on log_fd. -1 with why (infra) on the first failure. */
int wk_store_fetch(const struct nf_s3_conf *conf, const struct wk_store_items *s, int log_fd,
                   struct wk_stage_err *why);

/* ---- usage.c ------------------------------------------------------------------------- */

#define WK_USAGE_ID_LEN 36 /* "use_" + 32 hex */

/* "use_" + first 32 hex of SHA-256("job_id:attempt:meter:window_index"). */
void wk_usage_id(const char *job_id, long long attempt, const char *meter, long long window,
                 char out[WK_USAGE_ID_LEN + 1]);
/* GPU milliseconds of a window: wall ms x gpu_count (0 when gpu_count <= 0). */
uint64_t wk_gpu_ms(uint64_t wall_ms, int gpu_count);

/* The complete forge.usage.recorded envelope (nf_event_usage: deterministic id), heap JSON
 * text. The agent's u->window is the window index (0 for per-job totals). */
char *wk_usage_event(const struct nf_usage *u, const char *source);
/* A serving deployment's window: "use_" + first 32 hex of SHA-256
 * ("job_id:serving:meter:window"), apart from every attempt's ids. */
void wk_serving_usage_id(const char *job_id, const char *meter, long long window,
                         char out[WK_USAGE_ID_LEN + 1]);
/* Its envelope, heap JSON text: u's, with that id, data.attempt null (u->attempt is
 * ignored) and data.deployment_id = dep_id. */
char *wk_serving_event(const struct nf_usage *u, const char *dep_id, const char *source);
/* "dep-" + 12 lowercase hex (the deploy handler's deployment id). */
bool wk_deployment_id_valid(const char *s);

/* ---- the running agent ----------------------------------------------------------------- */

struct wk_job;
struct wk_out;
struct wk_outbox;
struct wk_kept;
struct wk_serving;

struct wk_ctx {
    struct nf_svc *svc;                 /* not owned: nf_svc_stop, the exit status */
    const struct wk_config *cfg;        /* svc->own */
    struct wk_settings set;             /* derived from cfg (owned) */
    struct event_base *base;            /* not owned */
    struct nf_kafka_producer *producer; /* the worker's own; NULL without Kafka */
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
    struct event *drain;  /* SIGTERM + NF_WORKER_DRAIN_TIMEOUT_S: terminate running jobs */
    struct event *finish; /* deferred: every job reported -> the farewell */
    struct wk_job *jobs;  /* running and finishing jobs */
    int njobs;
    struct wk_outbox *outbox;   /* journal of what is published (outbox.c); NULL: none */
    char gpu_type[32];          /* what the worker reports: NF_WORKER_GPU_TYPE or detected */
    int gpu_count;              /* NF_WORKER_GPU_COUNT or detected */
    long long gpu_memory_mib;   /* detected (0: unknown) */
    int gpu_devices[64];        /* the device ids jobs are pinned to (gpus.c) */
    int ngpu_devices;           /* -1: the agent's CUDA_VISIBLE_DEVICES is no id list */
    int gpu_refs[64];           /* jobs pinned to gpu_devices[i] now */
    struct wk_out *outs;        /* messages waiting for a retry, oldest first */
    struct wk_out *outs_tail;   /* the newest of them */
    struct event *outs_timer;   /* their retry */
    int outs_delay_ms;          /* the next retry's delay (backoff) */
    char root[4096];            /* the work dir, absolute (wk_root_prepare) */
    struct wk_kept *kept;       /* deploy job directories kept while their endpoint runs */
    struct wk_serving *serving; /* deployments metered while they serve (serving.c) */
    struct event *serving_ev;   /* checks them while any is metered */
    struct event *keep_ev;      /* checks them while any is kept */
    bool stopping;              /* SIGTERM: no new jobs */
    bool draining;              /* the manager said drain: no new jobs, exit once idle */
    bool stopped;               /* the farewell is done: nothing left in flight */
    bool closing;               /* tearing down: callbacks must not chain */
    /* api.c's hooks for the job files below it, set by wk_api_start (NULL: none) */
    void (*heartbeat_now)(struct wk_ctx *ctx); /* a job started: confirm its lease at once */
    void (*slot_freed)(struct wk_ctx *ctx);    /* a job was freed: poll, or finish a stop */
};

/* jobdir.c */
/* mkdir -p path, the last directory mode 0700 (an existing one is made so); its absolute
 * path to abs. -1 with errno. */
int wk_root_prepare(const char *path, char *abs, size_t len);
/* Creates <root>/<job_id>-<attempt>/ with inputs/ and out/, each 0700 (one left by a dead
 * agent is removed first); its path to dir. -1 with errno. */
int wk_jobdir_create(const char *root, const char *job_id, long long attempt, char *dir,
                     size_t len);
/* rm -rf path, never following a symlink; 0 when it is gone (or never was). */
int wk_rmtree(const char *path);
/* Keeps a deploy job's directory until out/endpoint.pid names no live process. */
void wk_jobdir_keep(struct wk_ctx *ctx, const char *dir);
/* Removes every kept directory (the agent exits: so do the endpoints). */
void wk_jobdir_free_all(struct wk_ctx *ctx);
/* Whether <dir>/out/endpoint.pid names a live process (not a zombie). */
bool wk_endpoint_alive(const char *dir);

/* wk.c */
/*
 * POSTs body (consumed) to <api prefix>/api/workers/<route> on cli with "Authorization:
 * Bearer <token>"; cb gets the answer (timeout_ms 0: the client's). -1 when not sent (cb
 * is then never called).
 */
int wk_post(struct wk_ctx *ctx, struct nf_http_client *cli, const char *route, const char *token,
            cJSON *body, int timeout_ms, nf_http_client_cb cb, void *arg);
/* Frees *ev and sets it NULL; NULL-safe. */
void wk_event_free(struct event **ev);
/* Frees *bev (closing its socket or pipe) and sets it NULL; NULL-safe. */
void wk_bev_free(struct bufferevent **bev);

/* api.c */
/* Sets the context's hooks, creates the retry and finish timers and starts: registers, or
 * runs as the pre-registered NF_WORKER_ID (heartbeat + poll; a 403 registers anew). -1 on
 * failure. */
int wk_api_start(struct wk_ctx *ctx);
void wk_api_register(struct wk_ctx *ctx);
void wk_api_poll(struct wk_ctx *ctx);
void wk_api_heartbeat_start(struct wk_ctx *ctx);
/* Sends a heartbeat now (or right after the one in flight). */
void wk_api_heartbeat_now(struct wk_ctx *ctx);
/* SIGTERM (ctx->stopping set): drops the waiting poll and the retry, heartbeats now with
 * draining: true; once no job is left, the farewell. */
void wk_api_stop(struct wk_ctx *ctx);
/* A job slot became free (or the agent is idle): poll, or finish a shutdown or drain. */
void wk_slot_freed(struct wk_ctx *ctx);
/* The manager asked this worker to drain: stop polling, exit once every job is reported. */
void wk_drain(struct wk_ctx *ctx);

/* job.c */
/* Starts a job from a next_job answer (job object and lease id; job not consumed). When
 * the agent is stopping, the job is reported failed (infra) without running. */
void wk_job_start(struct wk_ctx *ctx, const cJSON *job, const char *lease_id);
/* Heartbeat said the user cancelled the job: SIGTERM, grace, SIGKILL, then
 * forge.job.cancelled. */
void wk_job_cancel(struct wk_ctx *ctx, const char *job_id);
/* Heartbeat said the lease is gone (reaped or superseded): stop the handler and report
 * nothing - the job has moved on without this worker. lease_id NULL: every attempt of
 * the job held here. */
void wk_job_lost(struct wk_ctx *ctx, const char *job_id, const char *lease_id);
/* Drain deadline: terminate every running job (reported failed, class infra). */
void wk_jobs_terminate(struct wk_ctx *ctx);
/* Frees every job without reporting (teardown). */
void wk_jobs_free(struct wk_ctx *ctx);

/* job_child.c */
/* SIGCHLD: reaps the handlers that exited; each job finishes once its pipes are done. */
void wk_on_sigchld(evutil_socket_t fd, short what, void *arg);

/* job_set.c */
/* The lease id of a job this agent holds (for HTTP fallback reports); NULL if unknown. */
const char *wk_job_lease(struct wk_ctx *ctx, const char *job_id);
/* The heartbeat's jobs array: [{job_id, lease_id, progress}]; marks the jobs listed. */
cJSON *wk_jobs_heartbeat(struct wk_ctx *ctx);
/* That heartbeat was answered 200 (ok) or not: listed jobs become confirmed; finished,
 * delivered and confirmed jobs are freed. */
void wk_jobs_heartbeat_done(struct wk_ctx *ctx, bool ok);
/* publish.c: a reliable message of job was queued (hold) / delivered (released). The job
 * is freed, and ctx->slot_freed called, once it finished and nothing is held any more. */
void wk_job_hold(struct wk_job *job);
void wk_job_delivered(struct wk_job *job);

/* ---- gpus.c: the worker's GPUs and each job's ------------------------------------- */

/* "NVIDIA H100 80GB HBM3" -> "h100" ("" when no word names a model). */
void wk_gpu_type_of(const char *product, char *out, size_t len);
/* nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits output -> the
 * first GPU's type and memory (MiB) and the number of GPUs; -1 when none is listed. */
int wk_gpus_parse_smi(const char *text, char *type, size_t type_len, int *count,
                      long long *memory_mib);
/* Fills ctx->gpu_type, gpu_count and gpu_memory_mib from nvidia-smi when the operator set
 * no NF_WORKER_GPU_TYPE and the machine has NVIDIA GPUs; else leaves the configured ones. */
void wk_gpus_detect(struct wk_ctx *ctx);
/* The device ids the agent may hand out: its own CUDA_VISIBLE_DEVICES (visible, may be
 * NULL) when set, else 0..count-1; at most max. -1 when visible is not a list of ids. */
int wk_gpus_devices(const char *visible, int count, int *ids, int max);
/* Picks want of the ndev devices for a job, free ones (not in busy) first: their bit mask
 * (bit i = devices[i]) and their ids as "2,3" in out ("" when want <= 0). */
uint64_t wk_gpus_busy(const struct wk_ctx *ctx);
/* A job's GPUs (its gpu_count of the worker's devices) taken and given back; the
 * job's CUDA_VISIBLE_DEVICES value is job->gpus. */
void wk_gpus_take(struct wk_job *job);
void wk_gpus_give(struct wk_job *job);
uint64_t wk_gpus_pick(uint64_t busy, const int *devices, int ndev, int want, char *out, size_t len);

/* publish.c */
/*
 * Queues a message and retries it until delivered (or teardown). job may be NULL; else
 * its pending count is held until delivery. payload is copied.
 */
void wk_publish(struct wk_ctx *ctx, struct wk_job *job, const char *topic, const char *key,
                const char *payload);
/* Frees timer-waiting messages at teardown. */
/* Publishes what the outbox holds from an earlier agent (at start, once the producer
 * exists). */
void wk_publish_replay(struct wk_ctx *ctx);
void wk_publish_free(struct wk_ctx *ctx);

/* ---- serving.c ----------------------------------------------------------------------- */

/* Starts metering a deployment that serves from the kept job directory dir (its
 * out/endpoint.pid) from start_ms on; nothing for gpu_count <= 0 or without Kafka. */
void wk_serving_start(struct wk_ctx *ctx, const char *job_id, const char *user_id,
                      const char *dep_id, int gpu_count, uint64_t start_ms, const char *dir);
/* The agent closes (its endpoints stop with it): every deployment's last window, up to
 * now, is published (before the producer's flush), and the list freed. */
void wk_serving_close(struct wk_ctx *ctx);
