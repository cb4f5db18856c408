/*
 * Internal HTTP routes (internals.md): the gateway's fallback when job:<id> is missing.
 *
 *   GET /internal/jobs/{job_id}?user_id=  -> 200 job object | 404 absent or another
 *                                           user's | 400 no user_id | 503 Postgres down
 *
 * A hit also repairs the snapshot (versioned write, so it can never regress it).
 */
#include "sched.h"

#include <string.h>

#include "nf_http.h"
#include "nf_id.h"
#include "nf_log.h"
#include "nf_pg.h"

/* clang-format off */
static const char job_sql[] =
    "SELECT " SCHED_JOB_COLS("j.") ","
    " (SELECT coalesce(json_agg(x.a ORDER BY x.a->>'artifact_id'), '[]'::json)::text"
    "  FROM (SELECT " SCHED_ARTIFACT_JSON("s.") " AS a FROM sched.artifacts s"
    "        WHERE s.job_id = $1) x) AS artifacts"
    " FROM sched.jobs j WHERE j.job_id = $1 AND j.user_id = $2";
/* clang-format on */

static void on_job(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_http_req *req = arg;
    struct sched_ctx *ctx = nf_http_req_data(req);
    struct sched_job job;
    struct sched_snap snap = {0};

    if (!res) {
        nf_log_kv(NF_LOG_WARN, "job_read_failed", "job lookup failed", "error", err, NULL);
        nf_http_set_header(req, "Retry-After", "1");
        nf_http_reply_error(req, 503, "unavailable", NULL, "job store unavailable, retry");
        return;
    }
    if (PQntuples(res) < 1) {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
        return;
    }
    sched_job_from_row(res, 0, &job);
    if (!ctx->closing && sched_snap_from_job(&job, &snap) == 0)
        (void)sched_snapshot_write(ctx, &snap, NULL, NULL); /* best effort */
    sched_snap_clear(&snap);
    nf_http_reply_json(req, 200, sched_job_json(&job));
}

static void get_job(struct nf_http_req *req, void *arg)
{
    struct sched_ctx *ctx = arg;
    const char *job_id = nf_http_req_param(req, "job_id");
    const char *user_id = nf_http_req_query(req, "user_id");
    const char *params[2];

    if (!user_id || !*user_id) {
        nf_http_reply_error(req, 400, "invalid_request", "user_id", "user_id is required");
        return;
    }
    if (!job_id || !nf_id_valid("job", job_id)) {
        nf_http_reply_error(req, 404, "not_found", NULL, "job not found");
        return;
    }
    params[0] = job_id;
    params[1] = user_id;
    nf_http_req_set_data(req, ctx);
    if (nf_pg_query(ctx->pg, job_sql, 2, params, on_job, req) < 0)
        nf_http_reply_error(req, 503, "unavailable", NULL, "job store unavailable, retry");
}

int sched_routes_internal(struct sched_ctx *ctx)
{
    return nf_http_route(ctx->http, "GET", "/internal/jobs/{job_id}", get_job, ctx);
}
