#pragma once
/*
 * nf-worker-manager's middle layer: the route handlers and the job consumer that service.c
 * lists in its descriptor, and the hooks of the modules holding state of their own (the
 * waiting polls, the dispatch queue, the reaper). Each handler is an nf_http_handler whose
 * argument is the struct wm_ctx. These modules include wm.h, and this header for a peer's
 * hook (consume_jobs.c wakes polls, reaper.c runs the lost-worker scan); never service.c.
 */
struct nf_http_req;
struct nf_kafka_msg;
struct wm_ctx;

/* ---- routes_workers.c ---------------------------------------------------------------- */

/* POST /api/workers/register: registration token -> 201 {worker_id, worker_token, ...}. */
void wm_route_register(struct nf_http_req *req, void *arg);
/* GET /api/workers/: {"data": [worker...]} with live status, current jobs, last heartbeat.
 * The gateway authenticates the user's API key before forwarding it. */
void wm_route_list(struct nf_http_req *req, void *arg);

/* ---- next_job.c ------------------------------------------------------------------------ */

/* POST /api/workers/next_job: the long poll that leases a job. */
void wm_route_next_job(struct nf_http_req *req, void *arg);
/* A job of type `type` was queued: wake long polls that could take it. */
void wm_polls_wake(struct wm_ctx *ctx, int type);
/* Answers every waiting poll with 204 and frees them (stop and close hooks); a poll whose
 * scan is in flight answers when the scan returns. */
void wm_polls_flush(struct wm_ctx *ctx);

/* ---- heartbeat.c ----------------------------------------------------------------------- */

/* POST /api/workers/heartbeat: renew, release, cancel and drain in one answer. */
void wm_route_heartbeat(struct nf_http_req *req, void *arg);

/* ---- fleet.c --------------------------------------------------------------------------- */

/* POST /api/workers/drain {worker_id}: registration token or that worker's token. */
void wm_route_drain(struct nf_http_req *req, void *arg);
/* One lost-worker scan (called by the reaper's tick): forge.worker.lost per worker. */
void wm_fleet_scan(struct wm_ctx *ctx);

/* ---- disable.c ------------------------------------------------------------------------- */

/* POST /api/workers/disable {worker_id}: registration token only; the worker's token is
 * refused from then on, cached or not -> 200 {"worker_id", "status": "disabled"}. */
void wm_route_disable(struct nf_http_req *req, void *arg);

/* ---- cancel.c -------------------------------------------------------------------------- */

/* POST /internal/jobs/{job_id}/cancel -> 200 {"job_id", "state", "worker_id"}. */
void wm_route_cancel(struct nf_http_req *req, void *arg);

/* ---- reports.c ------------------------------------------------------------------------- */

/* POST /api/workers/events and /api/workers/usage: the HTTP fallback for agents without
 * Kafka; 409 when the worker does not hold the lease. */
void wm_route_events(struct nf_http_req *req, void *arg);
void wm_route_usage(struct nf_http_req *req, void *arg);

/* ---- consume_jobs.c -------------------------------------------------------------------- */

/* The consumer of forge.jobs.<type>: each dispatch message becomes an item of ctx->work
 * (initialised by the start hook) until Redis has it. */
void wm_consume_msg(struct nf_kafka_msg *msg, void *arg);

/* ---- reaper.c -------------------------------------------------------------------------- */

/* Starts the periodic lease reaper (start hook). */
void wm_reaper_start(struct wm_ctx *ctx);
/* Ends it (stop and close hooks); a round in flight finishes. Idempotent. */
void wm_reaper_stop(struct wm_ctx *ctx);
