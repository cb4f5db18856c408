/*
 * forge.billing.costs: the job object's cost_usd, kept up to date while the job runs, and
 * its cost_final.
 *
 *   nf-billing, after committing usage or an attempt's end, produces the job's total cost
 *   (forge.billing.job_cost {job_id, user_id, cost_micros, attempts_closed}) -->
 *   msg --parse--> malformed? log + count + done
 *       --apply--> lock the job row, then ONE statement: (cost_attempts_closed,
 *                  cost_micros) = the new pair when it is larger, compared in that order
 *                  (version + 1), returns the row --> snapshot job:<id> --> done
 *       nothing changed (older or repeated values, an unknown job): done
 *
 * cost_final is a generated column of sched.jobs: terminal status and
 * cost_attempts_closed >= attempt. attempts_closed = n means billing closed attempts
 * 1..n (it takes no more usage for them) and counted all their usage in this total; so
 * once the job is terminal at an attempt <= n, its cost never changes again. Whichever
 * comes last - the terminal event or the cost message - makes it final.
 *
 * Why this way: billing is the only one that knows when a job's usage is committed and
 * what it costs (price book, rounding), and the scheduler is the only writer of the job
 * object. While the set of closed attempts stays the same a total only grows (usage is
 * never removed and prices apply by hour); a close may lower it once - an attempt that
 * failed through the platform's fault (worker_lost, infra, preempted) is waived, its
 * usage taken out of the cost - and a close never comes undone, so attempts_closed
 * only grows. So the pair (attempts_closed, cost) compared in that order is largest for
 * the latest state, and keeping the largest pair makes redelivered, reordered or
 * replayed updates harmless, and the last usage window, which lands after the terminal
 * event, still reaches the object. (A waived attempt that closes before an earlier one,
 * which leaves n unchanged, shows in cost_usd when n grows - before cost_final.)
 */
#include "sched.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nf_event.h"
#include "nf_id.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "routes.h"

/*
 * The row lock comes first, in a statement of its own: the update's snapshot is then
 * taken after any transaction that held the row (e.g. the one recording `succeeded` and
 * its artifacts) committed. In one statement, the update would wait for that lock and
 * re-read the job row, but its artifacts subquery would still see the older snapshot
 * and the job object would lose its artifacts.
 */
static const char lock_sql[] = "SELECT 1 FROM sched.jobs WHERE job_id = $1 FOR UPDATE";

/* clang-format off */
const char sched_costs_sql[] =
    "WITH upd AS ("
    " UPDATE sched.jobs SET cost_micros = CASE"
    "   WHEN cost_attempts_closed < $4::int THEN $3::bigint"
    "   ELSE greatest(cost_micros, $3::bigint) END,"
    "  cost_attempts_closed = greatest(cost_attempts_closed, $4::int),"
    "  updated_at = now(), version = version + 1"
    " WHERE job_id = $1 AND user_id = $2"
    "  AND (cost_attempts_closed < $4::int"
    "   OR (cost_attempts_closed = $4::int AND cost_micros < $3::bigint))"
    " RETURNING *"
    ")"
    " SELECT " SCHED_JOB_COLS("r.") ","
    "  " SCHED_ARTIFACTS_OF("$1")
    " FROM upd r";
/* clang-format on */

struct cost_work {
    struct nf_work w;
    char job_id[NF_ID_MAX], user_id[NF_ID_MAX], micros[24], closed[24];
    struct sched_snap snap;
};

static void st_apply(struct nf_work *w);

static void cost_dtor(struct nf_work *w)
{
    sched_snap_clear(&((struct cost_work *)w)->snap);
}

static void on_snapshot(redisReply *reply, void *arg)
{
    struct cost_work *cw = arg;

    if (sched_redis_failed(&cw->w, reply, 0))
        return;
    nf_work_finish(&cw->w);
}

static void st_snapshot(struct nf_work *w)
{
    struct cost_work *cw = (struct cost_work *)w;

    w->what = "snapshot";
    (void)sched_snapshot_write(sched_of(w), &cw->snap, on_snapshot, cw);
}

static void on_apply(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct cost_work *cw = arg;
    struct sched_job job;

    if (nf_work_failed(&cw->w, res, err))
        return;
    if (PQntuples(res) < 1) { /* not larger, or a job we do not know */
        nf_work_finish(&cw->w);
        return;
    }
    sched_job_from_row(res, 0, &job);
    sched_snap_clear(&cw->snap);
    if (sched_snap_from_job(&job, &cw->snap) < 0) {
        nf_work_retry(&cw->w, "incomplete job row");
        return;
    }
    nf_metrics_counter_add(sched_of(&cw->w)->m.costs_applied, 1);
    nf_work_goto(&cw->w, st_snapshot);
}

static void st_apply(struct nf_work *w)
{
    struct cost_work *cw = (struct cost_work *)w;
    const char *params[SCHED_COSTS_NPARAMS] = {cw->job_id, cw->user_id, cw->micros, cw->closed};
    const char *lock_params[1] = {cw->job_id};
    const struct nf_pg_stmt stmts[] = {
        {lock_sql, 1, lock_params},
        {sched_costs_sql, SCHED_COSTS_NPARAMS, params},
    };

    w->what = "cost";
    if (nf_pg_tx(sched_of(w)->pg, stmts, 2, on_apply, cw) < 0)
        nf_work_retry(w, "could not queue the cost update");
}

static void malformed(struct sched_ctx *ctx, struct nf_kafka_msg *msg, const char *why)
{
    nf_log_kv(NF_LOG_WARN, "cost_malformed", "malformed job cost skipped", "reason", why, "key",
              msg->key, NULL);
    nf_metrics_counter_add(nf_metrics_counter(ctx->metrics, "nf_sched_malformed_total",
                                              "malformed messages skipped",
                                              "topic=\"" NF_TOPIC_BILLING_COSTS "\""),
                           1);
    nf_kafka_msg_done(msg);
}

void sched_costs_handle(struct sched_ctx *ctx, struct nf_kafka_msg *msg)
{
    const char *type = NULL, *subject = NULL, *why = "payload is not a JSON object";
    const char *job_id, *user_id;
    const cJSON *data, *micros, *closed;
    struct cost_work *cw;
    cJSON *ev = nf_json_parse(msg->payload, msg->len);

    data = ev ? nf_event_data(ev, &type, &subject, &why) : NULL;
    if (!data || strcmp(type, "forge.billing.job_cost") != 0) {
        malformed(ctx, msg, data ? "type is not forge.billing.job_cost" : why);
        cJSON_Delete(ev);
        return;
    }
    job_id = nf_json_str(data, "job_id");
    user_id = nf_json_str(data, "user_id");
    micros = cJSON_GetObjectItemCaseSensitive(data, "cost_micros");
    if (!job_id || !user_id || strlen(job_id) >= NF_ID_MAX || strlen(user_id) >= NF_ID_MAX ||
        !cJSON_IsNumber(micros) || micros->valuedouble < 0 || micros->valuedouble > 9e15 ||
        floor(micros->valuedouble) != micros->valuedouble) {
        malformed(ctx, msg, "job_id, user_id and cost_micros (integer >= 0) are required");
        cJSON_Delete(ev);
        return;
    }
    /* absent (an older billing): nothing said about closed attempts */
    closed = cJSON_GetObjectItemCaseSensitive(data, "attempts_closed");
    if (closed &&
        (!cJSON_IsNumber(closed) || closed->valuedouble < 0 || closed->valuedouble > 1000 ||
         floor(closed->valuedouble) != closed->valuedouble)) {
        malformed(ctx, msg, "attempts_closed must be an integer from 0 to 1000");
        cJSON_Delete(ev);
        return;
    }
    cw = (struct cost_work *)nf_work_new(&ctx->work, msg, sizeof(*cw));
    cw->w.dtor = cost_dtor;
    snprintf(cw->job_id, sizeof(cw->job_id), "%s", job_id);
    snprintf(cw->user_id, sizeof(cw->user_id), "%s", user_id);
    snprintf(cw->micros, sizeof(cw->micros), "%.0f", micros->valuedouble);
    snprintf(cw->closed, sizeof(cw->closed), "%.0f", closed ? closed->valuedouble : 0.0);
    cJSON_Delete(ev);
    nf_work_start(&cw->w, NULL, st_apply);
}
