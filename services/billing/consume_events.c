/*
 * forge.jobs.events, for one fact: who leased which attempt of which job.
 *
 *   msg --> not forge.job.assigned: done at once
 *       --> assigned {job_id, attempt, worker_id, user_id}: INSERT INTO billing.leases,
 *           first one per (job, attempt) wins --> done after the commit
 *
 * A malformed assigned event is logged and skipped: it cannot become a lease, so the
 * usage it would have covered waits as pending and is refused after the lease wait.
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
#include "routes.h"

const char bill_lease_sql[] =
    "INSERT INTO billing.leases (job_id, attempt, worker_id, user_id)"
    " VALUES ($1, $2::int, $3, $4) ON CONFLICT (job_id, attempt) DO NOTHING";

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

static bool id_ok(const char *s)
{
    return s && *s && strlen(s) <= 128;
}

void bill_events_handle(struct bill_ctx *ctx, struct nf_kafka_msg *msg)
{
    const char *type = NULL, *subject = NULL, *why = NULL;
    const cJSON *data;
    struct bill_work *bw;
    long long attempt;
    cJSON *ev;

    /* most job events are progress and logs: skip them without parsing */
    if (!strstr(msg->payload, "forge.job.assigned")) {
        nf_kafka_msg_done(msg);
        return;
    }
    ev = nf_json_parse(msg->payload, msg->len);
    data = ev ? nf_event_data(ev, &type, &subject, &why) : NULL;
    if (!data || strcmp(type, "forge.job.assigned") != 0) {
        cJSON_Delete(ev);
        nf_kafka_msg_done(msg);
        return;
    }
    attempt = nf_json_int(data, "attempt", 0);
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
