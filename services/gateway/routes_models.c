/*
 * /api/models: the model catalogue belongs to nf-scheduler (the operator's base models and
 * the accounts' own, DESIGN §15); the gateway forwards with the caller in X-Nf-User-Id, so
 * another account's model is a 404 and absent from the list.
 *
 *   GET    /api/models            -> nf-scheduler GET /internal/models
 *   GET    /api/models/{model}    -> GET /internal/models/{model}     (name or mdl_ id)
 *   DELETE /api/models/{model}    -> DELETE /internal/models/{model}  (a base model: 403)
 *   POST   /api/models {name, uri} -> POST /internal/models            (201 the model)
 */
#include <stdio.h>
#include <string.h>

#include "gw.h"
#include "nf_http.h"
#include "routes.h"

static void list_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *headers[5];

    gw_caller_headers(who->user_id, req, headers);
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, "GET", "/internal/models", headers, NULL,
               0, 0, NULL, NULL);
}

static void one(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who,
                const char *method)
{
    const char *headers[5], *name = nf_http_req_param(req, "model");
    char target[64 + GW_MODEL_NAME_MAX];

    if (!gw_model_name_valid(name, true)) {
        nf_http_reply_error(req, 404, "not_found", NULL,
                            "no such model; GET /api/models lists the models you can use");
        return;
    }
    gw_caller_headers(who->user_id, req, headers);
    snprintf(target, sizeof(target), "/internal/models/%s", name);
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, method, target, headers, NULL, 0, 0,
               NULL, NULL);
}

static void get_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    one(ctx, req, who, "GET");
}

static void delete_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    one(ctx, req, who, "DELETE");
}

static void create_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    const char *headers[5], *body;
    size_t len = 0;

    if (!nf_http_req_json(req)) /* answered 400 */
        return;
    body = nf_http_req_body(req, &len);
    gw_caller_headers(who->user_id, req, headers);
    gw_forward(ctx, req, ctx->sched, GW_BACKEND_SCHEDULER, "POST", "/internal/models", headers,
               body, len, 0, NULL, NULL);
}

GW_ROUTE_AUTHED(gw_models_list, list_authed)
GW_ROUTE_AUTHED(gw_models_get, get_authed)
GW_ROUTE_AUTHED(gw_models_delete, delete_authed)
GW_ROUTE_AUTHED(gw_models_create, create_authed)
