/*
 * Storage metering (DESIGN §7, §8, §12): the bytes of every registered artifact (the
 * object's size in the store, recorded when it was written) are metered as
 * storage_byte_hours on forge.usage, one event per job with artifacts per window and one
 * per uploaded file (job_id = the file's artifact id, job_type "files"), each stored
 * byte counted until the artifact is deleted.
 *
 *   timer (a quarter window, 1 s .. 60 s), one run at a time per process:
 *   --state---> sched.storage_meter.metered_until (created at the current window
 *               boundary on first use: metering starts when it is switched on)
 *   --due?----> window = [metered_until, next multiple of the window length); its end
 *               not passed yet: run over
 *   --query---> every artifact created before the window's end, with the milliseconds
 *               it was stored within the window
 *   --produce-> per job: sum of bytes x ms / 3,600,000 (byte-hours, rounded down per
 *               artifact), as forge.usage.recorded from nf-scheduler, no worker_id (the
 *               platform meters storage, billing needs no lease for it); envelope id =
 *               "use_" + 32 hex of SHA-256("job_id:attempt:storage_byte_hours:<window
 *               start in unix seconds>"), so a window produced twice is the same usage
 *   --advance-> metered_until = window end, compare-and-set (several scheduler copies
 *               never skip a window; a copy that loses the race only re-produced ids
 *               billing already has) --> the next window at once (catch-up after
 *               downtime), at most MAX_WINDOWS_PER_RUN per run
 *
 * A failed stage retries with backoff; a stop abandons the run (nothing was advanced,
 * the next start redoes the window with the same ids).
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "routes.h"

#define MAX_WINDOWS_PER_RUN 1000
#define MAX_STORAGE_BYTE_HOURS 9000000000000000LL /* billing's limit per event */

/* clang-format off */
static const char state_sql[] =
    "WITH ins AS ("
    " INSERT INTO sched.storage_meter (id, metered_until) VALUES (1, $1::timestamptz)"
    " ON CONFLICT (id) DO NOTHING RETURNING metered_until"
    ")"
    " SELECT (extract(epoch FROM m.metered_until) * 1000)::bigint AS until_ms"
    " FROM (SELECT metered_until FROM ins"
    "       UNION ALL SELECT metered_until FROM sched.storage_meter WHERE id = 1) m"
    " LIMIT 1";

/* A job's outputs are metered under the job; an uploaded file under its own id with
 * job_type "files". A deleted artifact is metered up to its deletion. */
static const char bytes_sql[] =
    "SELECT coalesce(a.job_id, a.artifact_id) AS job_id, a.user_id,"
    "  coalesce(j.job_type, 'files') AS job_type, coalesce(j.attempt, 1) AS attempt, a.bytes,"
    "  least($3::bigint, coalesce((extract(epoch FROM a.deleted_at) * 1000)::bigint,"
    "   $3::bigint))"
    "  - greatest((extract(epoch FROM a.created_at) * 1000)::bigint, $2::bigint) AS ms"
    " FROM sched.artifacts a LEFT JOIN sched.jobs j ON j.job_id = a.job_id"
    " WHERE a.created_at < $1::timestamptz AND a.bytes > 0"
    "  AND (a.deleted_at IS NULL OR a.deleted_at > to_timestamp($2::bigint / 1000.0))"
    " ORDER BY 1";

static const char advance_sql[] =
    "UPDATE sched.storage_meter SET metered_until = $2::timestamptz"
    " WHERE id = 1 AND metered_until = $1::timestamptz";
/* clang-format on */

struct storage_work {
    struct nf_work w;
    int64_t start_ms, end_ms;
    int windows;  /* advanced in this run */
    int produced; /* events of the current window */
};

static void st_state(struct nf_work *w);
static void st_query(struct nf_work *w);
static void st_advance(struct nf_work *w);

long long sched_storage_byte_hours(long long bytes, long long ms)
{
    unsigned __int128 v;

    if (bytes <= 0 || ms <= 0)
        return 0;
    v = (unsigned __int128)bytes * (unsigned long long)ms / 3600000u;
    return v > (unsigned __int128)MAX_STORAGE_BYTE_HOURS ? MAX_STORAGE_BYTE_HOURS : (long long)v;
}

int64_t sched_storage_window_end(int64_t from_ms, int64_t window_ms)
{
    if (window_ms <= 0)
        return from_ms;
    return (from_ms / window_ms) * window_ms + window_ms;
}

cJSON *sched_storage_event(const char *job_id, const char *user_id, const char *job_type,
                           int attempt, long long quantity, int64_t start_ms, int64_t end_ms)
{
    /* The window's key is its start in seconds; no worker_id: the scheduler meters. */
    struct nf_usage u = {.user_id = user_id,
                         .job_id = job_id,
                         .job_type = job_type,
                         .attempt = attempt,
                         .meter = "storage_byte_hours",
                         .quantity = quantity,
                         .window = (long long)(start_ms / 1000),
                         .start_ms = (uint64_t)start_ms,
                         .end_ms = (uint64_t)end_ms};

    return nf_event_usage(&u, SCHED_SOURCE);
}

static void storage_dtor(struct nf_work *w)
{
    sched_of(w)->storage_busy = false;
}

static long long ll(const char *s)
{
    return s ? strtoll(s, NULL, 10) : -1;
}

static void on_advance(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct storage_work *sw = arg;
    char n[16], start[32];

    if (nf_work_failed(&sw->w, res, err))
        return;
    snprintf(n, sizeof(n), "%d", sw->produced);
    nf_event_time((uint64_t)sw->start_ms, start);
    nf_log_kv(NF_LOG_INFO, "storage_metered", "storage window metered", "window_start", start,
              "events", n, NULL);
    if (++sw->windows >= MAX_WINDOWS_PER_RUN) {
        nf_work_finish(&sw->w);
        return;
    }
    nf_work_goto(&sw->w, st_state); /* the next window, if it is due already */
}

static void st_advance(struct nf_work *w)
{
    struct storage_work *sw = (struct storage_work *)w;
    char from[32], to[32];
    const char *params[2] = {from, to};

    w->what = "storage_advance";
    nf_event_time((uint64_t)sw->start_ms, from);
    nf_event_time((uint64_t)sw->end_ms, to);
    if (nf_pg_query(sched_of(w)->pg, advance_sql, 2, params, on_advance, sw) < 0)
        nf_work_retry(w, "could not queue the advance");
}

/* Produces one event per job from rows ordered by job id. */
static void produce_rows(struct storage_work *sw, const PGresult *res)
{
    struct sched_ctx *ctx = sched_of(&sw->w);
    int rows = PQntuples(res), row, first;
    long long q, add;

    for (first = 0; first < rows; first = row) {
        const char *job_id = nf_pg_val(res, first, "job_id");

        q = 0;
        for (row = first; row < rows; row++) {
            const char *j = nf_pg_val(res, row, "job_id");

            if (!j || !job_id || strcmp(j, job_id) != 0)
                break;
            add = sched_storage_byte_hours(ll(nf_pg_val(res, row, "bytes")),
                                           ll(nf_pg_val(res, row, "ms")));
            q = q > MAX_STORAGE_BYTE_HOURS - add ? MAX_STORAGE_BYTE_HOURS : q + add;
        }
        if (row == first)
            row++; /* a row without a job id: skip it */
        if (!job_id || q <= 0)
            continue;
        nf_work_produce(&sw->w, NF_TOPIC_USAGE, nf_pg_val(res, first, "user_id"),
                        sched_storage_event(job_id, nf_pg_val(res, first, "user_id"),
                                            nf_pg_val(res, first, "job_type"),
                                            (int)ll(nf_pg_val(res, first, "attempt")), q,
                                            sw->start_ms, sw->end_ms));
        sw->produced++;
        nf_metrics_counter_add(ctx->m.storage_events, 1);
    }
}

static void on_query(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct storage_work *sw = arg;

    if (nf_work_failed(&sw->w, res, err))
        return;
    sw->produced = 0;
    nf_work_produce_begin(&sw->w);
    produce_rows(sw, res);
    nf_work_produce_end(&sw->w, st_advance);
}

static void st_query(struct nf_work *w)
{
    struct storage_work *sw = (struct storage_work *)w;
    char end[32], start_ms[24], end_ms[24];
    const char *params[3] = {end, start_ms, end_ms};

    w->what = "storage_query";
    nf_event_time((uint64_t)sw->end_ms, end);
    snprintf(start_ms, sizeof(start_ms), "%lld", (long long)sw->start_ms);
    snprintf(end_ms, sizeof(end_ms), "%lld", (long long)sw->end_ms);
    if (nf_pg_query(sched_of(w)->pg, bytes_sql, 3, params, on_query, sw) < 0)
        nf_work_retry(w, "could not queue the storage query");
}

static void on_state(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct storage_work *sw = arg;
    int64_t window_ms = (int64_t)sched_of(&sw->w)->cfg->storage_window_s * 1000, until;

    if (nf_work_failed(&sw->w, res, err))
        return;
    until = ll(nf_pg_val(res, 0, "until_ms"));
    if (until < 0) {
        nf_work_retry(&sw->w, "no storage meter state");
        return;
    }
    sw->start_ms = until;
    sw->end_ms = sched_storage_window_end(until, window_ms);
    if (sw->end_ms > (int64_t)nf_now_ms()) {
        nf_work_finish(&sw->w); /* not due yet */
        return;
    }
    nf_work_goto(&sw->w, st_query);
}

static void st_state(struct nf_work *w)
{
    int64_t window_ms = (int64_t)sched_of(w)->cfg->storage_window_s * 1000;
    int64_t now = (int64_t)nf_now_ms();
    char first[32];
    const char *params[1] = {first};

    w->what = "storage_state";
    nf_event_time((uint64_t)((now / window_ms) * window_ms), first);
    if (nf_pg_query(sched_of(w)->pg, state_sql, 1, params, on_state, w) < 0)
        nf_work_retry(w, "could not queue the storage state");
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct sched_ctx *ctx = arg;
    struct storage_work *sw;

    if (ctx->storage_busy || ctx->svc->stopping || ctx->svc->closing)
        return;
    sw = (struct storage_work *)nf_work_new(&ctx->work, NULL, sizeof(*sw));
    sw->w.dtor = storage_dtor;
    ctx->storage_busy = true;
    nf_work_start(&sw->w, NULL, st_state);
}

int sched_storage_start(struct sched_ctx *ctx)
{
    int s = ctx->cfg->storage_window_s / 4;
    struct timeval tv = {s < 1 ? 1 : (s > 60 ? 60 : s), 0};

    ctx->storage_tick = event_new(ctx->base, -1, EV_PERSIST, on_tick, ctx);
    if (!ctx->storage_tick)
        return -1;
    return event_add(ctx->storage_tick, &tv);
}
