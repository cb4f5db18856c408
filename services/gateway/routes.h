#pragma once
/*
 * The gateway's route handlers, one group per file; service.c lists them in its route
 * table (nf_svc registers them with the gw_ctx as their argument). Every route but
 * register, login, logout, the worker protocol and the documents authenticates first.
 */
#include "gw.h"

/*
 * Defines the route handler name: gw_keys_auth, then fn with the caller (or the answer
 * gw_keys_auth gave: 403, 429, 503).
 */
#define GW_ROUTE_AUTHED(name, fn)                                                                  \
    void name(struct nf_http_req *req, void *arg)                                                  \
    {                                                                                              \
        gw_keys_auth(arg, req, fn);                                                                \
    }

/* routes_jobs.c: POST /api/jobs/{job_type}, GET /api/jobs/{job_id}, GET /api/jobs,
 * POST /api/jobs/{job_id}/cancel, GET /api/jobs/{job_id}/events (JSON or SSE). */
void gw_jobs_submit(struct nf_http_req *req, void *arg);
void gw_jobs_get(struct nf_http_req *req, void *arg);
void gw_jobs_list(struct nf_http_req *req, void *arg);
void gw_jobs_cancel(struct nf_http_req *req, void *arg);
void gw_jobs_events(struct nf_http_req *req, void *arg);
/* GET /api/jobs/{job_id}/metrics (owner only; JSON or SSE) */
void gw_jobs_metrics(struct nf_http_req *req, void *arg);
/* GET /api/jobs/{job_id}/checkpoints (owner only) */
void gw_jobs_checkpoints(struct nf_http_req *req, void *arg);

/* routes_workers.c: /api/workers/... forwarded to nf-worker-manager as it came;
 * GET /api/workers (the fleet list) after gw_keys_auth, without the user's credentials. */
void gw_workers_forward(struct nf_http_req *req, void *arg);
void gw_workers_list(struct nf_http_req *req, void *arg);

/* routes_auth.c: /api/auth/... to nf-auth; register, login and logout as they came, me
 * and api-keys after gw_keys_auth with the caller in X-Nf-* headers. */
void gw_auth_register(struct nf_http_req *req, void *arg);
void gw_auth_login(struct nf_http_req *req, void *arg);
void gw_auth_logout(struct nf_http_req *req, void *arg);
void gw_auth_me(struct nf_http_req *req, void *arg);
void gw_auth_keys(struct nf_http_req *req, void *arg);
void gw_auth_key(struct nf_http_req *req, void *arg);

/* routes_billing.c: GET /api/billing/summary, /usage, GET and PUT /api/billing/budget. */
void gw_billing_summary(struct nf_http_req *req, void *arg);
void gw_billing_usage(struct nf_http_req *req, void *arg);
void gw_billing_budget(struct nf_http_req *req, void *arg);

/* routes_artifacts.c: GET /api/artifacts, /api/artifacts/{artifact_id}, and .../content
 * streamed from the object store (Range, backpressure, a cap per account). */
void gw_artifacts_list(struct nf_http_req *req, void *arg);
void gw_artifacts_get(struct nf_http_req *req, void *arg);
void gw_artifacts_content(struct nf_http_req *req, void *arg);

/* routes_models.c: GET and POST /api/models, GET and DELETE /api/models/{model}, forwarded
 * to nf-scheduler's catalogue as the caller. */
void gw_models_list(struct nf_http_req *req, void *arg);
void gw_models_get(struct nf_http_req *req, void *arg);
void gw_models_delete(struct nf_http_req *req, void *arg);
void gw_models_create(struct nf_http_req *req, void *arg);

/* routes_deployments.c: GET /api/deployments, GET and DELETE /api/deployments/{deployment_id};
 * the proxy of .../v1/... is deploy.h's gw_deployments_proxy. */
void gw_deployments_list(struct nf_http_req *req, void *arg);
void gw_deployments_get(struct nf_http_req *req, void *arg);
void gw_deployments_delete(struct nf_http_req *req, void *arg);

/* routes_files.c: GET /api/files, GET and DELETE /api/files/{file_id}. */
void gw_files_list(struct nf_http_req *req, void *arg);
void gw_files_get(struct nf_http_req *req, void *arg);
void gw_files_delete(struct nf_http_req *req, void *arg);
/* files_upload.c: POST /api/files, a streaming route (service.c registers it in start). */
void gw_files_upload(struct nf_http_req *req, void *arg);

/* routes_meta.c: GET /openapi.json and GET /docs. */
void gw_meta_openapi(struct nf_http_req *req, void *arg);
void gw_meta_docs(struct nf_http_req *req, void *arg);
/* Reads cfg->openapi into ctx (it must exist and be a JSON object); -1 with err. */
int gw_meta_load(struct gw_ctx *ctx, char *err, size_t errlen);
