/*
 * /api/deployments (DESIGN §15): a deploy job's endpoint, reached through the gateway by
 * its owner only. The registry is nf-scheduler's, asked as the caller (another account's
 * deployment is a 404); what users see is gw_dep_public's object, never the endpoint's
 * worker-local URL.
 *
 *   GET    /api/deployments       -> /internal/deployments -> {object: list, data}
 *   GET    /api/deployments/{id}  -> /internal/deployments/{id} -> the deployment
 *   DELETE /api/deployments/{id}  -> the record; ready: POST <endpoint>/admin/stop (the
 *          endpoint exits; one already gone is fine) -> status stopped in the registry
 *          -> 200 the deployment (stopped); stopped or failed already: 200 as it is
 *
 * The proxy (/v1/...) is deploy_proxy.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deploy.h"
#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "routes.h"

#define STOP_TIMEOUT_MS 3000

/* ---- the registry ---------------------------------------------------------------------- */

struct lookup {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    gw_dep_cb cb;
    void *arg;
};

static void not_found(struct nf_http_req *req)
{
    nf_http_reply_error(req, 404, "not_found", NULL,
                        "no such deployment; GET /api/deployments lists yours");
}

static void on_record(const struct nf_http_resp *resp, void *arg)
{
    struct lookup *lk = arg;
    cJSON *rec = NULL;

    if (resp->status == 200)
        rec = nf_json_parse(resp->body, resp->len);
    if (rec != NULL && cJSON_IsObject(rec)) {
        lk->cb(lk->ctx, lk->req, rec, lk->arg);
    } else {
        if (resp->status == 404) {
            not_found(lk->req);
        } else {
            nf_log_kv(NF_LOG_WARN, "scheduler_unavailable", "deployment read failed", "error",
                      resp->error ? resp->error : "unexpected answer", NULL);
            gw_backend_error(lk->ctx, GW_BACKEND_SCHEDULER);
            gw_reply_unavailable(lk->req, 1, "the deployment registry is unavailable, try again");
        }
        lk->cb(lk->ctx, lk->req, NULL, lk->arg);
    }
    cJSON_Delete(rec);
    free(lk);
}

void gw_dep_lookup(struct gw_ctx *ctx, struct nf_http_req *req, const char *user_id, const char *id,
                   gw_dep_cb cb, void *arg)
{
    const char *headers[5];
    char target[64];
    struct lookup *lk = nf_xcalloc(1, sizeof(*lk));

    lk->ctx = ctx;
    lk->req = req;
    lk->cb = cb;
    lk->arg = arg;
    gw_caller_headers(user_id, req, headers);
    snprintf(target, sizeof(target), "/internal/deployments/%s", id);
    if (!ctx->sched || nf_http_client_request(ctx->sched, "GET", target, headers, NULL, 0, 0,
                                              on_record, lk) != 0) {
        gw_backend_error(ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(req, 1, "the deployment registry is unavailable, try again");
        free(lk);
        cb(ctx, req, NULL, arg);
    }
}

/* A status change: the answer (the record after) goes to done (NULL: logged only). */
struct mark {
    struct gw_ctx *ctx;
    struct nf_http_req *req; /* NULL for a best-effort mark */
    char id[GW_DEP_ID_LEN + 1];
};

static void on_marked(const struct nf_http_resp *resp, void *arg)
{
    struct mark *m = arg;
    cJSON *rec = NULL;

    if (resp->status == 200)
        rec = nf_json_parse(resp->body, resp->len);
    if (m->req == NULL) {
        if (rec == NULL)
            nf_log_kv(NF_LOG_WARN, "deployment_mark_failed", "could not mark a deployment",
                      "deployment_id", m->id, "error",
                      resp->error ? resp->error : "unexpected answer", NULL);
    } else if (rec != NULL) {
        nf_http_reply_json(m->req, 200, gw_dep_public(rec));
    } else if (resp->status == 404) {
        not_found(m->req);
    } else {
        gw_backend_error(m->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(m->req, 1, "the deployment registry is unavailable, try again");
    }
    cJSON_Delete(rec);
    free(m);
}

/* POST /internal/deployments/{id}/status as user_id; req NULL: best effort. */
static void mark(struct gw_ctx *ctx, struct nf_http_req *req, const char *user_id, const char *id,
                 const char *status, const char *why)
{
    const char *headers[] = {"X-Nf-User-Id", user_id, NULL};
    struct mark *m = nf_xcalloc(1, sizeof(*m));
    char target[96], *body;
    cJSON *doc = nf_json_obj();

    m->ctx = ctx;
    m->req = req;
    snprintf(m->id, sizeof(m->id), "%s", id);
    nf_json_add_str(doc, "status", status);
    if (why != NULL)
        nf_json_add_str(doc, "failure", why);
    body = nf_json_print(doc);
    cJSON_Delete(doc);
    snprintf(target, sizeof(target), "/internal/deployments/%s/status", id);
    if (!ctx->sched || nf_http_client_request(ctx->sched, "POST", target, headers, body,
                                              strlen(body), 0, on_marked, m) != 0) {
        struct nf_http_resp none = {.status = 0, .error = "the registry is unreachable"};
        on_marked(&none, m);
    }
    free(body);
}

void gw_dep_mark_failed(struct gw_ctx *ctx, const char *user_id, const char *id, const char *why)
{
    nf_log_kv(NF_LOG_WARN, "deployment_failed", "a deployment's endpoint is gone", "deployment_id",
              id, "error", why, NULL);
    gw_dep_cache_drop(ctx->dep_cache, id);
    mark(ctx, NULL, user_id, id, "failed", why);
}

/* ---- the routes -------------------------------------------------------------------------- */

static void on_list(const struct nf_http_resp *resp, void *arg)
{
    struct lookup *lk = arg;
    cJSON *doc = resp->status == 200 ? nf_json_parse(resp->body, resp->len) : NULL;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data"), *rec;
    cJSON *out, *list;

    if (!cJSON_IsArray(data)) {
        nf_log_kv(NF_LOG_WARN, "scheduler_unavailable", "deployment list failed", "error",
                  resp->error ? resp->error : "unexpected answer", NULL);
        gw_backend_error(lk->ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(lk->req, 1, "the deployment registry is unavailable, try again");
    } else {
        out = nf_json_obj();
        nf_json_add_str(out, "object", "list");
        if (!(list = cJSON_AddArrayToObject(out, "data")))
            abort();
        cJSON_ArrayForEach(rec, data)
        {
            cJSON_AddItemToArray(list, gw_dep_public(rec));
        }
        nf_http_reply_json(lk->req, 200, out);
    }
    cJSON_Delete(doc);
    free(lk);
}

static void list_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *headers[5];
    struct lookup *lk = nf_xcalloc(1, sizeof(*lk));

    lk->ctx = ctx;
    lk->req = req;
    gw_caller_headers(who->user_id, req, headers);
    if (!ctx->sched || nf_http_client_request(ctx->sched, "GET", "/internal/deployments", headers,
                                              NULL, 0, 0, on_list, lk) != 0) {
        gw_backend_error(ctx, GW_BACKEND_SCHEDULER);
        gw_reply_unavailable(req, 1, "the deployment registry is unavailable, try again");
        free(lk);
    }
}

static void on_get(struct gw_ctx *ctx, struct nf_http_req *req, const cJSON *rec, void *arg)
{
    (void)ctx;
    (void)arg;
    if (rec != NULL)
        nf_http_reply_json(req, 200, gw_dep_public(rec));
}

static void get_authed(struct gw_ctx *ctx, struct nf_http_req *req, const struct gw_principal *who)
{
    const char *id = nf_http_req_param(req, "deployment_id");

    if (!gw_dep_id_valid(id)) {
        not_found(req);
        return;
    }
    gw_dep_lookup(ctx, req, who->user_id, id, on_get, NULL);
}

/* DELETE: the endpoint is told to stop, then the registry. */
struct stop {
    struct gw_ctx *ctx;
    struct nf_http_req *req;
    struct nf_http_client *cli; /* to the endpoint, made for this one call */
    char user_id[NF_ID_MAX];
    char id[GW_DEP_ID_LEN + 1];
};

static void free_client(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    nf_http_client_free(arg);
}

static void on_stopped(const struct nf_http_resp *resp, void *arg)
{
    struct stop *st = arg;

    /* an endpoint already gone (refused) is as stopped as it gets */
    if (resp->status != 200)
        nf_log_kv(NF_LOG_INFO, "deployment_stop", "the endpoint did not answer the stop",
                  "deployment_id", st->id, "error", resp->error ? resp->error : "not 200", NULL);
    /* freed from the loop, not inside its own connection's callback */
    if (event_base_once(st->ctx->svc->base, -1, EV_TIMEOUT, free_client, st->cli, NULL) != 0)
        nf_log_kv(NF_LOG_WARN, "client_leak", "could not schedule a client's free", NULL);
    mark(st->ctx, st->req, st->user_id, st->id, "stopped", NULL);
    free(st);
}

static void on_delete_record(struct gw_ctx *ctx, struct nf_http_req *req, const cJSON *rec,
                             void *arg)
{
    struct stop *st = arg;
    const char *status = nf_json_str(rec, "status");
    char host[GW_DEP_HOST_MAX + 1];
    int port;

    if (rec == NULL) {
        free(st);
        return;
    }
    if (status == NULL || strcmp(status, "ready") != 0) { /* stopped or failed: as it is */
        nf_http_reply_json(req, 200, gw_dep_public(rec));
        free(st);
        return;
    }
    if (gw_dep_endpoint(nf_json_str(rec, "endpoint_url"), host, &port) != 0 ||
        nf_http_client_new(&st->cli, ctx->svc->base, host, port, STOP_TIMEOUT_MS, 1) != 0 ||
        nf_http_client_request(st->cli, "POST", "/admin/stop", NULL, "{}", 2, 0, on_stopped, st) !=
            0) {
        nf_http_client_free(st->cli);
        mark(ctx, req, st->user_id, st->id, "stopped", NULL);
        free(st);
    }
}

static void delete_authed(struct gw_ctx *ctx, struct nf_http_req *req,
                          const struct gw_principal *who)
{
    const char *id = nf_http_req_param(req, "deployment_id");
    struct stop *st;

    if (!gw_dep_id_valid(id)) {
        not_found(req);
        return;
    }
    gw_dep_cache_drop(ctx->dep_cache, id); /* the proxy asks the registry again */
    st = nf_xcalloc(1, sizeof(*st));
    st->ctx = ctx;
    st->req = req;
    snprintf(st->user_id, sizeof(st->user_id), "%s", who->user_id);
    snprintf(st->id, sizeof(st->id), "%s", id);
    gw_dep_lookup(ctx, req, who->user_id, id, on_delete_record, st);
}

GW_ROUTE_AUTHED(gw_deployments_list, list_authed)
GW_ROUTE_AUTHED(gw_deployments_get, get_authed)
GW_ROUTE_AUTHED(gw_deployments_delete, delete_authed)
