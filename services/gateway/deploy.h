#pragma once
/*
 * Deployments (DESIGN §15): the registry calls routes_deployments.c makes for itself and
 * for the proxy (deploy_proxy.c). The registry is nf-scheduler's (sched.deployments),
 * always asked as the caller: another account's deployment is a 404 there.
 */
#include "gw.h"

/*
 * Fires once with the caller's deployment record (valid during the call; nf-scheduler's,
 * with endpoint_url), or with rec NULL when req was answered already (404 no such
 * deployment, 503 registry unavailable): req must not be touched then.
 */
typedef void (*gw_dep_cb)(struct gw_ctx *ctx, struct nf_http_req *req, const cJSON *rec, void *arg);
/* Looks deployment id up as user_id (copied); id must be gw_dep_id_valid. cb may fire
 * before this returns. */
void gw_dep_lookup(struct gw_ctx *ctx, struct nf_http_req *req, const char *user_id, const char *id,
                   gw_dep_cb cb, void *arg);
/* Marks a ready deployment of user_id failed (its endpoint is gone), best effort: logged,
 * nothing answered. why is the failure shown to the user. */
void gw_dep_mark_failed(struct gw_ctx *ctx, const char *user_id, const char *id, const char *why);

/* deploy_proxy.c: {GET,POST} /api/deployments/{deployment_id}/v1/... to the endpoint. */
void gw_deployments_proxy(struct nf_http_req *req, void *arg);
/* Closes the idle connections to endpoints (the close hook, after the streams ended). */
void gw_dep_pool_free(struct gw_ctx *ctx);
