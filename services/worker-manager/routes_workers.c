/*
 * POST /api/workers/register and GET /api/workers/.
 *
 *   register: Bearer registration token (constant time) -> body checks -> new worker id
 *             and token -> INSERT wm.workers -> Redis wm:worker:<id> -> 201
 *   list:     wm.workers (newest first; not the ones that stopped cleanly or were seen
 *             last over a day ago) -> EVALSHA fleet: last heartbeat, draining flag and
 *             leased jobs (and their owners) from Redis -> status idle / busy / draining /
 *             lost -> 200; a user's view (X-Nf-User-Id, set by the gateway): current_jobs
 *             only theirs, hostname null
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "nf_redis.h"
#include "nf_svc.h"
#include "routes.h"
#include "wm.h"

#define WORKER_TOKEN_BYTES 32
#define LIST_DEFAULT 100
#define LIST_MAX 500

#define TS_SQL(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* One registration between the INSERT and its answer. */
struct reg_call {
    struct wm_ctx *ctx;
    struct nf_http_req *req;
    struct wm_worker w;
    char token[64];
};

static void reg_call_free(struct reg_call *call)
{
    wm_worker_clear(&call->w);
    explicit_bzero(call->token, sizeof(call->token));
    free(call);
}

static void on_inserted(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct reg_call *call = arg;
    struct wm_ctx *ctx = call->ctx;

    if (res == NULL) {
        nf_log_kv(NF_LOG_ERROR, "worker_register_failed", "worker insert failed", "error", err,
                  "pgcode", pgcode, NULL);
        wm_reply_unavailable(call->req, "worker registry unavailable, retry later");
        reg_call_free(call);
        return;
    }
    const char *registered_at = nf_pg_val(res, 0, "registered_at");
    if (!ctx->svc->closing) {
        wm_worker_cache(ctx, &call->w, registered_at);
        cJSON *data = nf_json_obj();
        nf_json_add_str(data, "worker_id", call->w.worker_id);
        nf_json_add_str(data, "hostname", call->w.hostname);
        nf_json_add_str(data, "gpu_type", call->w.gpu_type[0] ? call->w.gpu_type : NULL);
        nf_json_add_int(data, "gpu_count", call->w.gpu_count);
        cJSON *types = cJSON_AddArrayToObject(data, "job_types");
        for (int t = 0; t < NF_NJOB_TYPES; t++)
            if (call->w.types & (1u << t))
                cJSON_AddItemToArray(types, cJSON_CreateString(nf_job_types[t]));
        cJSON_AddItemToObject(data, "labels", cJSON_Duplicate(call->w.labels, true));
        nf_json_add_str(data, "registered_at", registered_at);
        wm_event_worker(ctx, "forge.worker.registered", call->w.worker_id, data);
    }
    nf_metrics_counter_add(ctx->m.workers_registered, 1);
    nf_log_kv(NF_LOG_INFO, "worker_registered", "worker registered", "worker_id", call->w.worker_id,
              "hostname", call->w.hostname, NULL);

    cJSON *body = nf_json_obj();
    nf_json_add_str(body, "worker_id", call->w.worker_id);
    nf_json_add_str(body, "worker_token", call->token);
    nf_json_add_int(body, "heartbeat_interval_s", ctx->cfg->heartbeat_s);
    nf_json_add_int(body, "lease_ttl_s", ctx->cfg->lease_ttl_s);
    nf_http_reply_json(call->req, 201, body);
    reg_call_free(call);
}

void wm_route_register(struct nf_http_req *req, void *arg)
{
    struct wm_ctx *ctx = arg;
    struct nf_json_err err = {0};

    if (!wm_registration_ok(ctx, wm_bearer(nf_http_req_header(req, "Authorization")))) {
        nf_metrics_counter_add(ctx->m.auth_failed, 1);
        nf_http_reply_error(req, 403, "forbidden", NULL,
                            "missing or invalid worker registration token");
        return;
    }
    cJSON *body = nf_http_req_json(req);
    if (body == NULL)
        return; /* answered 400 */

    struct reg_call *call = nf_xcalloc(1, sizeof(*call));
    call->ctx = ctx;
    call->req = req;
    if (wm_register_parse(body, &call->w, &err) < 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param[0] ? err.param : NULL, "%s",
                            err.msg);
        reg_call_free(call);
        return;
    }
    if (nf_id_new("wrk", call->w.worker_id, sizeof(call->w.worker_id)) < 0)
        abort(); /* NF_ID_MAX always fits */
    nf_crypto_token(WORKER_TOKEN_BYTES, call->token, sizeof(call->token));
    nf_crypto_sha256_hex(call->token, strlen(call->token), call->w.token_hash);

    char count[16], types[160], *labels = nf_json_print(call->w.labels);
    char joined[128];
    snprintf(count, sizeof(count), "%d", call->w.gpu_count);
    wm_types_join(call->w.types, joined, sizeof(joined));
    snprintf(types, sizeof(types), "{%s}", joined);
    const char *params[] = {call->w.worker_id,
                            call->w.token_hash,
                            call->w.hostname,
                            call->w.gpu_type[0] ? call->w.gpu_type : NULL,
                            count,
                            types,
                            labels,
                            call->w.version};
    nf_pg_query(ctx->pg,
                "INSERT INTO wm.workers (worker_id, token_hash, hostname, gpu_type, gpu_count, "
                "job_types, labels, version, registered_at, last_seen_at, status) "
                "VALUES ($1, $2, $3, $4, $5::int, $6::text[], $7::jsonb, $8, now(), now(), "
                "'online') RETURNING " TS_SQL("registered_at") " AS registered_at",
                8, params, on_inserted, call);
    free(labels);
}

/* ---- list ---------------------------------------------------------------------------- */

#define LIST_MAX_AGE "1 day" /* lost workers stay listed this long after their last beat */

struct list_call {
    struct wm_ctx *ctx;
    struct nf_http_req *req;
    cJSON *workers;         /* the answer array, built from Postgres */
    char tenant[NF_ID_MAX]; /* X-Nf-User-Id: a user's view ("": the operator's) */
};

static void list_reply(struct list_call *call)
{
    cJSON *body = nf_json_obj();
    cJSON_AddItemToObject(body, "data", call->workers);
    nf_http_reply_json(call->req, 200, body);
    free(call);
}

/* Fills status, current_jobs and last_heartbeat_at of each worker from the fleet script
 * (NULL reply: Redis down -> every worker shows as lost, with Postgres' last_seen_at). */
static void on_fleet(redisReply *reply, void *arg)
{
    struct list_call *call = arg;
    struct wm_ctx *ctx = call->ctx;
    bool ok = reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
              reply->elements == (size_t)cJSON_GetArraySize(call->workers);
    uint64_t now = nf_now_ms();
    size_t i = 0;
    cJSON *w = NULL;
    if (!ok && reply != NULL && reply->type == REDIS_REPLY_ERROR)
        nf_log_kv(NF_LOG_ERROR, "fleet_failed", "fleet script failed", "error", reply->str, NULL);
    cJSON_ArrayForEach(w, call->workers)
    {
        const redisReply *r = ok ? reply->element[i++] : NULL;
        uint64_t seen = 0;
        bool draining = false;
        cJSON *jobs = cJSON_CreateArray();
        size_t busy = 0;
        if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
            if (r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len > 0)
                seen = strtoull(r->element[0]->str, NULL, 10);
            draining =
                r->element[1]->type == REDIS_REPLY_STRING && strcmp(r->element[1]->str, "1") == 0;
            const redisReply *ids = r->element[2], *owners = r->element[3];
            busy = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
            for (size_t j = 0; j < busy; j++) {
                const redisReply *id = ids->element[j];
                const redisReply *owner = owners->type == REDIS_REPLY_ARRAY && j < owners->elements
                                              ? owners->element[j]
                                              : NULL;
                /* a user sees only their own jobs on the shared fleet */
                bool mine = call->tenant[0] == '\0' ||
                            (owner != NULL && owner->type == REDIS_REPLY_STRING &&
                             strcmp(owner->str, call->tenant) == 0);
                if (id->type == REDIS_REPLY_STRING && mine)
                    cJSON_AddItemToArray(jobs, cJSON_CreateString(id->str));
            }
        }
        if (seen > 0) {
            char ts[32];
            nf_event_time(seen, ts);
            cJSON_ReplaceItemInObject(w, "last_heartbeat_at", cJSON_CreateString(ts));
        }
        const char *status = wm_worker_status(now, seen, ctx->cfg->heartbeat_s, draining, busy);
        cJSON_ReplaceItemInObject(w, "status", cJSON_CreateString(status));
        cJSON_ReplaceItemInObject(w, "current_jobs", jobs);
    }
    list_reply(call);
}

static void on_listed(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct list_call *call = arg;
    struct wm_ctx *ctx = call->ctx;

    if (res == NULL) {
        nf_log_kv(NF_LOG_ERROR, "worker_list_failed", "worker list failed", "error", err, NULL);
        wm_reply_unavailable(call->req, "worker registry unavailable");
        cJSON_Delete(call->workers);
        free(call);
        return;
    }
    int n = PQntuples(res);
    const char **ids = nf_xcalloc((size_t)n + 1, sizeof(*ids));
    for (int i = 0; i < n; i++) {
        cJSON *w = nf_json_obj();
        const char *id = nf_pg_val(res, i, "worker_id");
        const char *gpu_type = nf_pg_val(res, i, "gpu_type");
        const char *types = nf_pg_val(res, i, "job_types");
        const char *labels = nf_pg_val(res, i, "labels");
        nf_json_add_str(w, "worker_id", id);
        /* host names are the operator's business, not the tenants' */
        nf_json_add_str(w, "hostname", call->tenant[0] ? NULL : nf_pg_val(res, i, "hostname"));
        nf_json_add_str(w, "status", "lost");
        nf_json_add_str(w, "gpu_type", gpu_type && *gpu_type ? gpu_type : NULL);
        nf_json_add_int(w, "gpu_count", strtol(nf_pg_val(res, i, "gpu_count") ?: "0", NULL, 10));
        cJSON *arr = cJSON_AddArrayToObject(w, "job_types");
        unsigned mask = 0;
        if (types != NULL && wm_types_parse(types, &mask) == 0)
            for (int t = 0; t < NF_NJOB_TYPES; t++)
                if (mask & (1u << t))
                    cJSON_AddItemToArray(arr, cJSON_CreateString(nf_job_types[t]));
        cJSON *lab = labels ? nf_json_parse(labels, strlen(labels)) : NULL;
        cJSON_AddItemToObject(w, "labels", lab ? lab : nf_json_obj());
        cJSON_AddArrayToObject(w, "current_jobs");
        nf_json_add_str(w, "last_heartbeat_at", nf_pg_val(res, i, "last_seen_at"));
        nf_json_add_str(w, "version", nf_pg_val(res, i, "version"));
        nf_json_add_str(w, "registered_at", nf_pg_val(res, i, "registered_at"));
        cJSON_AddItemToArray(call->workers, w);
        ids[i] = nf_json_str(w, "worker_id"); /* lives in call->workers */
    }
    if (n == 0 || ctx->svc->closing)
        list_reply(call);
    else
        nf_redis_eval(ctx->redis, ctx->lua_fleet, on_fleet, call, 0, n, ids, NULL);
    free(ids);
}

void wm_route_list(struct nf_http_req *req, void *arg)
{
    struct wm_ctx *ctx = arg;
    long limit = LIST_DEFAULT;
    const char *q = nf_http_req_query(req, "limit");
    if (q != NULL) {
        char *end = NULL;
        limit = strtol(q, &end, 10);
        if (end == q || *end != '\0' || limit < 1 || limit > LIST_MAX) {
            nf_http_reply_error(req, 422, "invalid_params", "limit",
                                "limit must be an integer between 1 and %d", LIST_MAX);
            return;
        }
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%ld", limit);
    struct list_call *call = nf_xcalloc(1, sizeof(*call));
    call->ctx = ctx;
    call->req = req;
    call->workers = cJSON_CreateArray();
    const char *tenant = nf_http_req_header(req, "X-Nf-User-Id");
    if (tenant != NULL) {
        if (!nf_id_valid("usr", tenant)) {
            cJSON_Delete(call->workers);
            free(call);
            nf_http_reply_error(req, 400, "bad_request", NULL, "X-Nf-User-Id is not a user id");
            return;
        }
        snprintf(call->tenant, sizeof(call->tenant), "%s", tenant);
    }
    const char *params[] = {lim};
    nf_pg_query(ctx->pg,
                "SELECT worker_id, hostname, gpu_type, gpu_count, "
                "array_to_string(job_types, ',') AS job_types, labels::text AS labels, "
                "version, " TS_SQL("registered_at") " AS registered_at, " TS_SQL(
                    "last_seen_at") " AS last_seen_at FROM wm.workers "
                                    "WHERE status NOT IN ('offline', 'disabled') "
                                    "AND last_seen_at > now() - interval '" LIST_MAX_AGE "' "
                                    "ORDER BY registered_at DESC, worker_id DESC LIMIT $1::int",
                1, params, on_listed, call);
}
