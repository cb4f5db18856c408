/*
 * forge.usage: metering, in batches.
 *
 *   msg --> parse (usage.c) --> appended to ctx->open, the batch gathering messages
 *   batch full (NF_BILLING_BATCH_MAX) or NF_BILLING_BATCH_LINGER_MS passed --> sealed:
 *     malformed members: their raw messages to forge.usage.dlq (counted)
 *     the others: ONE statement (bill_batch_sql), so all of it commits or none, after
 *     the batch's jobs were locked shared (bill_ingest_lock_sql, same transaction):
 *       closed       the event's attempt is closed (billing.attempts): refused
 *                    (attempt_closed), its job's cost is final; closed and waived (it
 *                    failed worker_lost, infra or preempted): after the lease check
 *                    recorded as `waived` (usage_events, usage_hourly, usage_waived;
 *                    not usage_jobs, so never priced)
 *       lease check  worker_id given: billing.leases must say this worker leased this
 *                    attempt of this user's job -> ok; another worker or user -> refused
 *                    (usage_refused + DLQ); no lease seen yet -> parked in usage_pending
 *                    (sweep.c decides later); no worker_id (platform storage) -> ok
 *       insert       usage_events ON CONFLICT (event_id) DO NOTHING
 *       rollups      only the rows the insert returned are added to usage_hourly and
 *                    usage_jobs (usage_waived for waived ones), so a redelivered,
 *                    replayed or duplicated event adds 0
 *   --> effects.c: job costs, budget alerts, DLQ messages produced
 *   --> every message of the batch marked done: offsets are stored only now
 *
 * The lease rule. A worker learns of a job only after the worker-manager's
 * forge.job.assigned event {job_id, attempt, worker_id, user_id} was delivered, and that
 * event is the only record of a lease that outlives it (wm:lease:<id> is deleted when the
 * job ends, before its last usage window arrives). Billing keeps those events in
 * billing.leases, first one per (job, attempt) wins, so a usage event is billed exactly
 * when the worker it names leased that attempt. The two topics are consumed
 * independently, hence the pending state instead of a refusal.
 */
#include "bill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "nf_time.h"
#include "routes.h"

/* clang-format off */
/* The common tail: insert the `ok` rows of cls, add what was inserted to the rollups. */
#define RECORD_CTES                                                                        \
    ", ins AS ("                                                                           \
    " INSERT INTO billing.usage_events (event_id, user_id, job_id, job_type, attempt,"     \
    "  worker_id, meter, quantity, window_start, window_end)"                              \
    " SELECT event_id, user_id, job_id, job_type, attempt, worker_id, meter, quantity,"    \
    "  window_start, window_end FROM cls WHERE verdict IN ('ok', 'waived')"                \
    "  ORDER BY event_id"                                                                  \
    " ON CONFLICT (event_id) DO NOTHING"                                                   \
    " RETURNING event_id, user_id, job_id, job_type, attempt, meter, quantity,"            \
    "  window_start"                                                                       \
    "), roll AS ("                                                                         \
    " INSERT INTO billing.usage_hourly AS h (user_id, job_type, meter, hour, quantity)"    \
    " SELECT user_id, job_type, meter, date_trunc('hour', window_start, 'UTC'),"           \
    "  sum(quantity) FROM ins GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"                     \
    " ON CONFLICT (user_id, job_type, meter, hour)"                                        \
    " DO UPDATE SET quantity = h.quantity + excluded.quantity"                             \
    " RETURNING 1"                                                                         \
    "), jroll AS ("                                                                        \
    " INSERT INTO billing.usage_jobs AS j (job_id, user_id, job_type, meter, hour,"       \
    "  quantity)"                                                                          \
    " SELECT job_id, min(user_id), min(job_type), meter,"                                  \
    "  date_trunc('hour', window_start, 'UTC'), sum(quantity)"                             \
    " FROM ins WHERE meter <> 'storage_byte_hours'"                                        \
    "  AND event_id IN (SELECT event_id FROM cls WHERE verdict = 'ok')"                    \
    " GROUP BY job_id, meter, 5 ORDER BY 1, 4, 5"                                          \
    " ON CONFLICT (job_id, meter, hour)"                                                   \
    " DO UPDATE SET quantity = j.quantity + excluded.quantity"                             \
    " RETURNING 1"                                                                         \
    "), wroll AS ("                                                                        \
    " INSERT INTO billing.usage_waived AS w (job_id, attempt, user_id, job_type, meter,"  \
    "  hour, quantity)"                                                                    \
    " SELECT job_id, attempt, min(user_id), min(job_type), meter,"                         \
    "  date_trunc('hour', window_start, 'UTC'), sum(quantity)"                             \
    " FROM ins WHERE meter <> 'storage_byte_hours'"                                        \
    "  AND event_id IN (SELECT event_id FROM cls WHERE verdict = 'waived')"                \
    " GROUP BY job_id, attempt, meter, 6 ORDER BY 1, 2, 5, 6"                              \
    " ON CONFLICT (job_id, attempt, meter, hour)"                                          \
    " DO UPDATE SET quantity = w.quantity + excluded.quantity"                             \
    " RETURNING 1"                                                                         \
    ")"

/* The lease `l` of an event `s`: its attempt's; for a serving deployment's GPU time
 * (attempt null, a worker named) any attempt of the job that worker leased. */
#define LEASE_JOIN                                                                         \
    " LEFT JOIN LATERAL (SELECT l0.* FROM billing.leases l0 WHERE l0.job_id = s.job_id"    \
    "  AND (l0.attempt = s.attempt OR (s.attempt IS NULL AND l0.worker_id = s.worker_id))" \
    "  ORDER BY l0.attempt DESC LIMIT 1) l ON true"

/* The verdict of an event; cls reads a source `s` joined to its lease `l` (LEASE_JOIN) and
 * its attempt's end `a` (ATTEMPT_JOIN). A closed attempt takes nothing new, except a waived
 * one: usage its worker leased is recorded as waived (usage_waived, never priced). */
#define ATTEMPT_JOIN                                                                       \
    " LEFT JOIN billing.attempts a ON a.job_id = s.job_id AND a.attempt = s.attempt"
#define LEASED_VERDICT                                                                     \
    " CASE WHEN a.closed_at IS NOT NULL AND a.waived THEN 'waived' ELSE 'ok' END"
#define LEASE_VERDICT(none)                                                                \
    " CASE WHEN a.closed_at IS NOT NULL AND NOT a.waived AND NOT EXISTS ("                 \
    "   SELECT 1 FROM billing.usage_events e WHERE e.event_id = s.event_id) THEN 'closed'" \
    "  WHEN s.worker_id IS NULL THEN" LEASED_VERDICT                                       \
    "  WHEN l.job_id IS NULL THEN " none                                                   \
    "  WHEN l.worker_id = s.worker_id AND l.user_id = s.user_id THEN" LEASED_VERDICT       \
    "  ELSE 'refused' END AS verdict"

const char bill_batch_sql[] =
    "WITH src AS ("
    " SELECT DISTINCT ON (x.event_id) x.*"
    " FROM jsonb_to_recordset($1::jsonb) AS x(event_id text, user_id text, job_id text,"
    "  job_type text, attempt int, worker_id text, meter text, quantity bigint,"
    "  window_start timestamptz, window_end timestamptz)"
    " ORDER BY x.event_id"
    "), cls AS ("
    " SELECT s.*," LEASE_VERDICT("'pending'")
    " FROM src s" LEASE_JOIN
    ATTEMPT_JOIN
    ")" RECORD_CTES
    ", pend AS ("
    " INSERT INTO billing.usage_pending (event_id, user_id, job_id, job_type, attempt,"
    "  worker_id, meter, quantity, window_start, window_end)"
    " SELECT event_id, user_id, job_id, job_type, attempt, worker_id, meter, quantity,"
    "  window_start, window_end FROM cls c WHERE c.verdict = 'pending'"
    "  AND NOT EXISTS (SELECT 1 FROM billing.usage_events e WHERE e.event_id = c.event_id)"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING 1"
    "), ref AS ("
    " INSERT INTO billing.usage_refused (event_id, user_id, job_id, attempt, worker_id,"
    "  meter, quantity, reason)"
    " SELECT event_id, user_id, job_id, attempt, worker_id, meter, quantity,"
    "  CASE verdict WHEN 'closed' THEN 'attempt_closed' ELSE 'not_leased' END"
    " FROM cls WHERE verdict IN ('refused', 'closed')"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING 1"
    ")"
    " SELECT c.event_id, CASE WHEN c.verdict NOT IN ('ok', 'waived') THEN c.verdict"
    "  WHEN i.event_id IS NULL THEN 'duplicate'"
    "  WHEN c.verdict = 'waived' THEN 'waived' ELSE 'recorded' END AS verdict,"
    "  c.job_id, c.user_id, c.meter"
    " FROM cls c LEFT JOIN ins i ON i.event_id = c.event_id ORDER BY c.event_id";

/*
 * Pending usage whose lease is known now, or that waited longer than $1 seconds: at most
 * $2 rows, locked so that several billing copies never take the same one.
 */
const char bill_sweep_sql[] =
    "WITH pick AS ("
    " SELECT p.event_id FROM billing.usage_pending p"
    " WHERE EXISTS (SELECT 1 FROM billing.leases l WHERE l.job_id = p.job_id"
    "  AND (l.attempt = p.attempt OR (p.attempt IS NULL AND l.worker_id = p.worker_id)))"
    "  OR p.parked_at < now() - make_interval(secs => $1::int)"
    " ORDER BY p.event_id LIMIT $2::int FOR UPDATE SKIP LOCKED"
    "), s AS ("
    " DELETE FROM billing.usage_pending p USING pick WHERE p.event_id = pick.event_id"
    " RETURNING p.*"
    "), cls AS ("
    " SELECT s.*," LEASE_VERDICT("'expired'")
    " FROM s" LEASE_JOIN
    ATTEMPT_JOIN
    ")" RECORD_CTES
    ", ref AS ("
    " INSERT INTO billing.usage_refused (event_id, user_id, job_id, attempt, worker_id,"
    "  meter, quantity, reason)"
    " SELECT event_id, user_id, job_id, attempt, worker_id, meter, quantity,"
    "  CASE verdict WHEN 'expired' THEN 'lease_timeout' WHEN 'closed' THEN 'attempt_closed'"
    "  ELSE 'not_leased' END"
    " FROM cls WHERE verdict NOT IN ('ok', 'waived')"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING 1"
    ")"
    " SELECT c.event_id, CASE WHEN c.verdict NOT IN ('ok', 'waived') THEN c.verdict"
    "  WHEN i.event_id IS NULL THEN 'duplicate'"
    "  WHEN c.verdict = 'waived' THEN 'waived' ELSE 'recorded' END AS verdict,"
    "  c.job_id, c.user_id, c.job_type, c.attempt, c.worker_id, c.meter,"
    "  c.quantity, " BILL_TS("c.window_start") " AS window_start,"
    "  " BILL_TS("c.window_end") " AS window_end"
    " FROM cls c LEFT JOIN ins i ON i.event_id = c.event_id ORDER BY c.event_id";

/* The shared per-job locks of a batch (BILL_LOCK_CLASS): taken before bill_batch_sql, in
 * the same transaction, so its snapshot sees every close committed before it and no close
 * commits until it did. */
const char bill_ingest_lock_sql[] =
    "SELECT pg_advisory_xact_lock_shared(" BILL_LOCK_CLASS ", hashtext(j.job_id))"
    " FROM (SELECT DISTINCT x->>'job_id' AS job_id FROM jsonb_array_elements($1::jsonb) x"
    "       ORDER BY 1) j";
/* clang-format on */

cJSON *bill_usage_json(const struct bill_usage *u)
{
    char start[32], end[32];
    cJSON *o = nf_json_obj();

    nf_time_format_rfc3339(u->start_ms, start);
    nf_time_format_rfc3339(u->end_ms, end);
    nf_json_add_str(o, "event_id", u->event_id);
    nf_json_add_str(o, "user_id", u->user_id);
    nf_json_add_str(o, "job_id", u->job_id);
    nf_json_add_str(o, "job_type", u->job_type);
    if (u->attempt > 0)
        nf_json_add_int(o, "attempt", u->attempt);
    else if (!cJSON_AddNullToObject(o, "attempt"))
        abort();
    nf_json_add_str(o, "worker_id", u->worker_id); /* NULL -> null */
    nf_json_add_str(o, "meter", bill_meter_name(u->meter));
    nf_json_add_int(o, "quantity", u->quantity);
    nf_json_add_str(o, "window_start", start);
    nf_json_add_str(o, "window_end", end);
    return o;
}

static void st_ingest(struct nf_work *w);

static int cmp_item(const void *a, const void *b)
{
    const struct bill_item *x = *(struct bill_item *const *)a, *y = *(struct bill_item *const *)b;

    return strcmp(x->u.event_id, y->u.event_id);
}

static struct bill_item *find_item(struct bill_item **sorted, size_t n, const char *id)
{
    size_t lo = 0, hi = n;
    int c;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        c = strcmp(sorted[mid]->u.event_id, id);
        if (c == 0)
            return sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void count_quantity(struct bill_ctx *ctx, enum bill_meter meter, long long q)
{
    char labels[64];

    snprintf(labels, sizeof(labels), "meter=\"%s\"", bill_meter_name(meter));
    nf_metrics_counter_add(nf_metrics_counter(ctx->metrics, "nf_bill_usage_quantity_total",
                                              "metered quantity recorded, base units", labels),
                           (uint64_t)q);
}

static void on_ingest(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_work *w = arg;
    struct bill_work *bw = bill_work_of(w);
    struct bill_ctx *ctx = bill_ctx_of(w);
    struct bill_item **sorted, *it;
    size_t i, n = 0;
    int row, rows;

    if (nf_work_failed(w, res, err))
        return;
    sorted = nf_xcalloc(bw->nitems ? bw->nitems : 1, sizeof(struct bill_item *));
    for (i = 0; i < bw->nitems; i++)
        if (bw->items[i].valid)
            sorted[n++] = &bw->items[i];
    qsort(sorted, n, sizeof(struct bill_item *), cmp_item);
    rows = PQntuples(res);
    for (row = 0; row < rows; row++) {
        const char *id = nf_pg_val(res, row, "event_id");
        const char *verdict = nf_pg_val(res, row, "verdict");
        const char *meter = nf_pg_val(res, row, "meter");

        it = id ? find_item(sorted, n, id) : NULL;
        if (!it || !verdict)
            continue;
        if (strcmp(verdict, "recorded") == 0) {
            nf_metrics_counter_add(ctx->m.recorded, 1);
            count_quantity(ctx, it->u.meter, it->u.quantity);
        } else if (strcmp(verdict, "waived") == 0) {
            bill_count_waived(ctx, it->u.meter, it->u.quantity);
            nf_log_kv(NF_LOG_INFO, "usage_waived",
                      "usage of a waived attempt recorded, not charged", "event_id", id, "job_id",
                      it->u.job_id, NULL);
        } else if (strcmp(verdict, "duplicate") == 0) {
            nf_metrics_counter_add(ctx->m.duplicate, 1);
        } else if (strcmp(verdict, "pending") == 0) {
            nf_metrics_counter_add(ctx->m.pending, 1);
            nf_log_kv(NF_LOG_INFO, "usage_pending", "usage parked until its lease is seen",
                      "event_id", id, "job_id", it->u.job_id, "worker_id", it->u.worker_id, NULL);
            continue;
        } else {
            nf_metrics_counter_add(ctx->m.refused, 1);
            nf_log_kv(NF_LOG_WARN, "usage_refused",
                      strcmp(verdict, "closed") == 0
                          ? "usage for an attempt whose cost is final"
                          : "usage from a worker that did not lease the job",
                      "event_id", id, "job_id", it->u.job_id, "worker_id", it->u.worker_id, NULL);
            bill_work_add_raw(bw, NF_TOPIC_USAGE_DLQ, it->msg->key, it->msg->payload, it->msg->len);
            continue;
        }
        /* recorded or already recorded: the job's cost and the user's budget are due
         * (again, after a crash that may have cut the follow-ups short) */
        if (meter && strcmp(meter, "storage_byte_hours") != 0)
            bill_work_add_job(bw, it->u.job_id);
        bill_work_add_user(bw, it->u.user_id);
    }
    free(sorted);
    nf_metrics_counter_add(ctx->m.batches, 1);
    bill_effects_start(w);
}

static void st_ingest(struct nf_work *w)
{
    struct bill_work *bw = bill_work_of(w);
    cJSON *arr = cJSON_CreateArray();
    const char *params[1];
    struct nf_pg_stmt stmts[2];
    char *text;
    size_t i, n = 0;

    w->what = "ingest";
    if (!arr)
        abort();
    for (i = 0; i < bw->nitems; i++) {
        if (!bw->items[i].valid)
            continue;
        if (!cJSON_AddItemToArray(arr, bill_usage_json(&bw->items[i].u)))
            abort();
        n++;
    }
    if (n == 0) { /* only malformed messages: straight to their DLQ copies */
        cJSON_Delete(arr);
        bill_effects_start(w);
        return;
    }
    text = nf_json_print(arr);
    cJSON_Delete(arr);
    params[0] = text;
    stmts[0] = (struct nf_pg_stmt){bill_ingest_lock_sql, 1, params};
    stmts[1] = (struct nf_pg_stmt){bill_batch_sql, 1, params};
    if (nf_pg_tx(bill_ctx_of(w)->pg, stmts, 2, on_ingest, w) < 0)
        nf_work_retry(w, "could not queue the batch");
    free(text);
}

/* The batch stops gathering (full, or its linger ran out): the next message starts a new
 * one. */
static void st_seal(struct nf_work *w)
{
    struct bill_ctx *ctx = bill_ctx_of(w);

    if (ctx->open == bill_work_of(w))
        ctx->open = NULL;
    nf_work_cancel_delay(w);
    nf_work_goto(w, st_ingest);
}

void bill_usage_handle(struct bill_ctx *ctx, struct nf_kafka_msg *msg)
{
    struct bill_work *bw = ctx->open;
    struct bill_item *it;
    const char *why = "payload is not a JSON object";
    char part[16], off[24];

    if (!bw) {
        bw = bill_work_new(ctx, NULL);
        bw->work.what = "gather";
        ctx->open = bw;
        nf_work_delay(&bw->work, ctx->cfg->linger_ms, st_seal);
    }
    if (bw->nitems == bw->cap) {
        bw->cap = bw->cap ? bw->cap * 2 : 64;
        bw->items = nf_xrealloc(bw->items, bw->cap * sizeof(*bw->items));
    }
    it = &bw->items[bw->nitems++];
    memset(it, 0, sizeof(*it));
    it->msg = msg;
    it->ev = nf_json_parse(msg->payload, msg->len);
    it->valid = it->ev && bill_usage_parse(it->ev, &it->u, &why) == 0;
    if (!it->valid) {
        snprintf(part, sizeof(part), "%d", (int)msg->partition);
        snprintf(off, sizeof(off), "%lld", (long long)msg->offset);
        nf_log_kv(NF_LOG_WARN, "usage_invalid", "invalid usage event sent to the dlq", "reason",
                  why, "partition", part, "offset", off, "key", msg->key, NULL);
        nf_metrics_counter_add(ctx->m.invalid, 1);
        bill_work_add_raw(bw, NF_TOPIC_USAGE_DLQ, msg->key, msg->payload, msg->len);
    }
    if (bw->nitems >= (size_t)ctx->cfg->batch_max)
        nf_work_goto(&bw->work, st_seal);
}
