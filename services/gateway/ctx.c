/*
 * The bottom of the gateway: helpers every module shares (503 answers, backend error
 * counts) and the metrics the context holds. The context itself is made and freed by
 * the descriptor's hooks (service.c).
 */
#include <stdio.h>
#include <string.h>

#include "gw.h"
#include "nf_mem.h"
#include "nf_metrics.h"

void gw_reply_unavailable(struct nf_http_req *req, int retry_s, const char *msg)
{
    char v[16];

    snprintf(v, sizeof(v), "%d", retry_s);
    nf_http_set_header(req, "Retry-After", v);
    nf_http_reply_error(req, 503, "unavailable", NULL, "%s", msg);
}

void gw_backend_error(struct gw_ctx *ctx, enum gw_backend b)
{
    nf_metrics_counter_add(ctx->m_backend_err[b], 1);
}

void gw_metrics_register(struct gw_ctx *ctx)
{
    static const char *const fails[GW_NAUTH_FAILS] = {"missing", "malformed", "unknown"};
    static const char *const sources[GW_NAUTH_SOURCES] = {"cache", "auth", "revoked"};
    static const char *const backends[GW_NBACKENDS] = {
        "redis", "kafka", "auth", "scheduler", "worker_manager", "billing", "s3"};
    struct nf_metrics *m = ctx->svc->metrics;
    char labels[64];
    int i;

    for (i = 0; i < NF_NJOB_TYPES; i++) {
        snprintf(labels, sizeof(labels), "job_type=\"%s\"", nf_job_types[i]);
        ctx->m_submitted[i] = nf_metrics_counter(m, "nf_gw_jobs_submitted_total",
                                                 "jobs accepted (202) by job type", labels);
    }
    for (i = 0; i < GW_NAUTH_FAILS; i++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", fails[i]);
        ctx->m_auth_fail[i] = nf_metrics_counter(m, "nf_gw_auth_failures_total",
                                                 "requests refused with 403 by reason", labels);
    }
    for (i = 0; i < GW_NAUTH_SOURCES; i++) {
        snprintf(labels, sizeof(labels), "source=\"%s\"", sources[i]);
        ctx->m_auth_source[i] = nf_metrics_counter(
            m, "nf_gw_auth_lookups_total", "credential records by where they came from", labels);
    }
    ctx->m_rate_limited = nf_metrics_counter(m, "nf_gw_rate_limited_total",
                                             "requests refused with 429 by the rate limit", NULL);
    ctx->m_rl_skipped =
        nf_metrics_counter(m, "nf_gw_rate_limit_skipped_total",
                           "requests let through without a rate limit (Redis unavailable)", NULL);
    for (i = 0; i < GW_NBACKENDS; i++) {
        snprintf(labels, sizeof(labels), "backend=\"%s\"", backends[i]);
        ctx->m_backend_err[i] =
            nf_metrics_counter(m, "nf_gw_backend_errors_total",
                               "failed calls to a backend (timeouts, refusals, errors)", labels);
    }
}

/* ---- per-account slots ----------------------------------------------------------------- */

static struct gw_account_count *slots_find(struct gw_slots *s, const char *user_id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->acc[i].user_id, user_id) == 0)
            return &s->acc[i];
    return NULL;
}

bool gw_slots_take(struct gw_slots *s, const char *user_id, int max)
{
    struct gw_account_count *a = slots_find(s, user_id);

    if (a != NULL && a->n >= max)
        return false;
    if (a == NULL) {
        s->acc = nf_xrealloc(s->acc, (s->n + 1) * sizeof(*s->acc));
        a = &s->acc[s->n++];
        snprintf(a->user_id, sizeof(a->user_id), "%s", user_id);
        a->n = 0;
    }
    a->n++;
    return true;
}

void gw_slots_give(struct gw_slots *s, const char *user_id)
{
    struct gw_account_count *a = slots_find(s, user_id);

    if (a != NULL && --a->n <= 0)
        *a = s->acc[--s->n]; /* the last one takes its place */
}

void gw_caller_headers(const char *user_id, struct nf_http_req *req, const char *out[5])
{
    out[0] = "X-Nf-User-Id";
    out[1] = user_id;
    out[2] = "X-Request-Id";
    out[3] = nf_http_req_id(req);
    out[4] = NULL;
}
