/*
 * forge.jobs.events, for two facts: who leased which attempt of which job, and how each
 * attempt ended.
 *
 *   msg --> forge.job.assigned {job_id, attempt, worker_id, user_id}: INSERT INTO
 *           billing.leases, first one per (job, attempt) wins --> done after the commit
 *       --> forge.job.succeeded / failed / cancelled {job_id, attempt, user_id,
 *           usage_events?}: INSERT INTO billing.attempts, first one per (job, attempt)
 *           wins --> effects.c (close the attempt if its usage is complete, the job's
 *           cost with its closed attempts) --> done
 *       --> anything else: done at once
 *
 * usage_events comes only from the worker that ran the attempt (how many forge.usage
 * events it published); an end the platform reported (worker lost, timeout, cancel
 * before the run) has none and closes the attempt at once. A failed end's error.class
 * is kept with it and decides the charge (bill_class_waived): worker_lost, infra and
 * preempted attempts are waived - their usage is metered, never priced (effects.c moves
 * it out of the job's cells when the attempt closes).
 *
 * A malformed assigned event is logged and skipped: it cannot become a lease, so the
 * usage it would have covered waits as pending and is refused after the lease wait. A
 * malformed end is skipped the same way; its attempt is closed by a later end or never.
 */
#include "bill.h"

#include <stdio.h>
#include <string.h>

#include "nf_event.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "nf_str.h"
#include "routes.h"

const char bill_lease_sql[] =
    "INSERT INTO billing.leases (job_id, attempt, worker_id, user_id)"
    " VALUES ($1, $2::int, $3, $4) ON CONFLICT (job_id, attempt) DO NOTHING";

const char bill_attempt_sql[] =
    "INSERT INTO billing.attempts (job_id, attempt, user_id, usage_events, error_class,"
    "  waived)"
    " VALUES ($1, $2::int, $3, $4::int, $5, coalesce($6::bool, false))"
    " ON CONFLICT (job_id, attempt) DO NOTHING";

/* The event types that end an attempt. */
static const char *const end_types[] = {"forge.job.succeeded", "forge.job.failed",
                                        "forge.job.cancelled"};
#define NEND_TYPES (sizeof(end_types) / sizeof(end_types[0]))

static void on_lease(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_work *w = arg;
    struct bill_ctx *ctx = bill_ctx_of(w);

    if (nf_work_failed(w, res, err))
        return;
    nf_metrics_counter_add(ctx->m.leases, 1);
    nf_work_finish(w); /* w->msg done */
}

static void st_lease(struct nf_work *w)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(bill_work_of(w)->ev, "data");
    const char *params[BILL_LEASE_NPARAMS];
    char attempt[24];

    w->what = "lease";
    snprintf(attempt, sizeof(attempt), "%lld", nf_json_int(data, "attempt", 0));
    params[0] = nf_json_str(data, "job_id");
    params[1] = attempt;
    params[2] = nf_json_str(data, "worker_id");
    params[3] = nf_json_str(data, "user_id");
    if (nf_pg_query(bill_ctx_of(w)->pg, bill_lease_sql, BILL_LEASE_NPARAMS, params, on_lease, w) <
        0)
        nf_work_retry(w, "could not queue the lease");
}

static void on_attempt(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_work *w = arg;
    struct bill_work *bw = bill_work_of(w);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(bw->ev, "data");

    if (nf_work_failed(w, res, err))
        return;
    nf_metrics_counter_add(bill_ctx_of(w)->m.ends, 1);
    bill_work_add_job(bw, nf_json_str(data, "job_id"));
    bill_effects_start(w); /* then w->msg done */
}

static void st_attempt(struct nf_work *w)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(bill_work_of(w)->ev, "data");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(data, "usage_events"), *error;
    const char *params[BILL_ATTEMPT_NPARAMS], *cls;
    char attempt[24], count[24];

    w->what = "attempt";
    snprintf(attempt, sizeof(attempt), "%lld", nf_json_int(data, "attempt", 0));
    params[0] = nf_json_str(data, "job_id");
    params[1] = attempt;
    params[2] = nf_json_str(data, "user_id");
    params[3] = NULL; /* no count (or a malformed one): the attempt closes at once */
    /* the class decides the charge: a failure through the platform's fault is free */
    error = cJSON_GetObjectItemCaseSensitive(data, "error");
    cls = strcmp(nf_json_str(bill_work_of(w)->ev, "type"), "forge.job.failed") == 0
              ? nf_json_str(error, "class")
              : NULL;
    params[4] = cls && strlen(cls) <= 32 ? cls : NULL;
    params[5] = bill_class_waived(params[4]) ? "true" : "false";
    if (cJSON_IsNumber(n) && n->valuedouble >= 0 && n->valuedouble <= 1e9 &&
        (double)(long long)n->valuedouble == n->valuedouble) {
        snprintf(count, sizeof(count), "%lld", (long long)n->valuedouble);
        params[3] = count;
    }
    if (nf_pg_query(bill_ctx_of(w)->pg, bill_attempt_sql, BILL_ATTEMPT_NPARAMS, params, on_attempt,
                    w) < 0)
        nf_work_retry(w, "could not queue the attempt end");
}

static bool id_ok(const char *s)
{
    return s && *s && strlen(s) <= 128;
}

/* Whether the payload may hold a type this consumer records (cheap, before parsing). */
static bool interesting(const char *payload)
{
    size_t i;

    if (strstr(payload, "forge.job.assigned"))
        return true;
    for (i = 0; i < NEND_TYPES; i++)
        if (strstr(payload, end_types[i]))
            return true;
    return false;
}

void bill_events_handle(struct bill_ctx *ctx, struct nf_kafka_msg *msg)
{
    const char *type = NULL, *subject = NULL, *why = NULL;
    const cJSON *data;
    struct bill_work *bw;
    long long attempt;
    bool end;
    cJSON *ev;

    /* most job events are progress and logs: skip them without parsing */
    if (!interesting(msg->payload)) {
        nf_kafka_msg_done(msg);
        return;
    }
    ev = nf_json_parse(msg->payload, msg->len);
    data = ev ? nf_event_data(ev, &type, &subject, &why) : NULL;
    end = data && nf_str_index(end_types, NEND_TYPES, type) >= 0;
    if (!data || (!end && strcmp(type, "forge.job.assigned") != 0)) {
        cJSON_Delete(ev);
        nf_kafka_msg_done(msg);
        return;
    }
    attempt = nf_json_int(data, "attempt", 0);
    if (end) {
        if (!id_ok(nf_json_str(data, "job_id")) || !id_ok(nf_json_str(data, "user_id")) ||
            attempt < 1 || attempt > 1000) {
            nf_log_kv(NF_LOG_WARN, "attempt_end_malformed",
                      "attempt end without job, user or attempt", "key", msg->key, NULL);
            cJSON_Delete(ev);
            nf_kafka_msg_done(msg);
            return;
        }
        bw = bill_work_new(ctx, msg);
        bw->ev = ev; /* owned by bw */
        nf_work_goto(&bw->work, st_attempt);
        return;
    }
    if (!id_ok(nf_json_str(data, "job_id")) || !id_ok(nf_json_str(data, "worker_id")) ||
        !id_ok(nf_json_str(data, "user_id")) || attempt < 1 || attempt > 1000) {
        nf_log_kv(NF_LOG_WARN, "assigned_malformed", "assigned event without a usable lease", "key",
                  msg->key, NULL);
        cJSON_Delete(ev);
        nf_kafka_msg_done(msg);
        return;
    }
    bw = bill_work_new(ctx, msg);
    bw->ev = ev; /* owned by bw */
    nf_work_goto(&bw->work, st_lease);
}
