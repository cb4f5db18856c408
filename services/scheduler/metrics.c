/*
 * Live metrics (issue 17 §2): forge.job.metric events kept in sched.job_metrics
 * (migrations/0008) and served to the job's owner.
 *
 *   forge.jobs.events msg of type forge.job.metric (sched_events_handle hands it here)
 *     --parse----> sched_metric_parse: the envelope and the point checked again (the
 *                  worker checked the handler's line; this is the other side of a topic
 *                  anything with a producer could write to) --> malformed: log, count, done
 *     --lane-----> the job's lane (its events' order: a point is recorded before the
 *                  terminal event that follows it, so a reader that saw the job ended has
 *                  seen all its points)
 *     --insert---> ONE statement; a redelivered event (same event id) inserts nothing;
 *                  an unknown job inserts nothing --> done. The job's state never changes.
 *
 *   GET /internal/jobs/{job_id}/metrics?limit=&cursor=&stream=
 *     -> 200 {object: "list", data: [{type: "metric", step, epoch, attempt, time, values,
 *        cursor}], has_more, next_cursor, job_status} in recorded order (the shape of the
 *        events page, so the gateway's SSE poller (sse.c) streams it as it streams events)
 *     -> 404 not the caller's job (an accepted job not recorded yet: an empty page)
 */
#include "sched.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_http.h"
#include "nf_id.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"
#include "nf_pg.h"
#include "routes.h"

/* clang-format off */
static const char insert_sql[] =
    "INSERT INTO sched.job_metrics (event_id, job_id, attempt, step, epoch, data, at)"
    " SELECT $2, j.job_id, $3::int, $4::bigint, $5::float8, $6::jsonb,"
    "  coalesce($7::timestamptz, now())"
    " FROM sched.jobs j WHERE j.job_id = $1"
    " ON CONFLICT (event_id) DO NOTHING";

static const char page_sql[] =
    "SELECT j.status AS job_status, m.seq, m.step, m.epoch, m.attempt, m.data::text AS data,"
    " " SCHED_TS("m.at") " AS at"
    " FROM sched.jobs j"
    " LEFT JOIN LATERAL (SELECT * FROM sched.job_metrics v"
    "   WHERE v.job_id = j.job_id AND v.seq > $3::bigint ORDER BY v.seq LIMIT $4::int) m"
    "  ON true"
    " WHERE j.job_id = $1 AND j.user_id = $2"
    " ORDER BY m.seq";
/* clang-format on */

/* ---- the event -------------------------------------------------------------------------- */

/* The point's values (step and epoch apart) into m->values; -1 with *why when bad. */
static int parse_point(const cJSON *metric, struct sched_metric *m, const char **why)
{
    const cJSON *it;
    bool step = false;
    int n = 0;

    if (!cJSON_IsObject(metric)) {
        *why = "data.metric must be an object";
        return -1;
    }
    m->values = nf_json_obj();
    cJSON_ArrayForEach(it, metric)
    {
        if (!it->string || !cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
            *why = "data.metric members must be finite numbers";
            return -1;
        }
        if (strcmp(it->string, "step") == 0) {
            if (step || it->valuedouble < 0 || it->valuedouble > SCHED_METRIC_STEP_MAX ||
                floor(it->valuedouble) != it->valuedouble) {
                *why = "data.metric.step must be an integer from 0 to 1e12";
                return -1;
            }
            step = true;
            snprintf(m->step, sizeof(m->step), "%.0f", it->valuedouble);
        } else if (strcmp(it->string, "epoch") == 0) {
            if (m->epoch[0] || it->valuedouble < 0) {
                *why = "data.metric.epoch must be a number >= 0";
                return -1;
            }
            snprintf(m->epoch, sizeof(m->epoch), "%.17g", it->valuedouble);
        } else {
            if (!nf_metric_name_valid(it->string) ||
                cJSON_GetObjectItemCaseSensitive(m->values, it->string)) {
                *why = "data.metric names must be [A-Za-z0-9_./-], at most 64, each once";
                return -1;
            }
            if (++n > SCHED_METRIC_VALUES_MAX) {
                *why = "data.metric holds more than 32 values";
                return -1;
            }
            if (!cJSON_AddNumberToObject(m->values, it->string, it->valuedouble))
                abort();
        }
    }
    if (!step || n == 0) {
        *why = "data.metric needs step and at least one value";
        return -1;
    }
    return 0;
}

int sched_metric_parse(const cJSON *ev, struct sched_metric *m, const char **why)
{
    const char *type = NULL, *subject = NULL;
    const cJSON *data;
    struct nf_json_err err;
    long long attempt;

    memset(m, 0, sizeof(*m));
    data = nf_event_data(ev, &type, &subject, why);
    if (!data)
        return -1;
    if (strcmp(type, "forge.job.metric") != 0) {
        *why = "type is not forge.job.metric";
        return -1;
    }
    m->id = nf_json_str(ev, "id");
    if (!m->id || !*m->id || strlen(m->id) > 128) {
        *why = "event id must have 1 to 128 characters";
        return -1;
    }
    m->time = nf_json_str(ev, "time");
    if (!sched_time_valid(m->time))
        m->time = NULL;
    m->job_id = nf_json_str(data, "job_id");
    if (!m->job_id || !nf_id_valid("job", m->job_id) || strcmp(m->job_id, subject) != 0) {
        *why = "data.job_id must be job_<ULID>, equal to the subject";
        return -1;
    }
    if (nf_json_get_int(data, "attempt", true, 1, 1000, &attempt, &err) < 0) {
        *why = "data.attempt must be an integer between 1 and 1000";
        return -1;
    }
    snprintf(m->attempt, sizeof(m->attempt), "%lld", attempt);
    if (parse_point(cJSON_GetObjectItemCaseSensitive(data, "metric"), m, why) < 0) {
        sched_metric_clear(m);
        return -1;
    }
    return 0;
}

void sched_metric_clear(struct sched_metric *m)
{
    if (!m)
        return;
    cJSON_Delete(m->values);
    m->values = NULL;
}

struct metric_work {
    struct nf_work w;
    cJSON *ev; /* the envelope; m points into it */
    struct sched_metric m;
};

static void metric_dtor(struct nf_work *w)
{
    struct metric_work *mw = (struct metric_work *)w;

    sched_metric_clear(&mw->m);
    cJSON_Delete(mw->ev);
}

static void on_insert(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct metric_work *mw = arg;

    (void)pgcode;
    if (nf_work_failed(&mw->w, res, err))
        return;
    nf_work_finish(&mw->w); /* inserted, a redelivery, or a job we do not know: all done */
}

static void st_insert(struct nf_work *w)
{
    struct metric_work *mw = (struct metric_work *)w;
    char *values = nf_json_print(mw->m.values);
    const char *params[7] = {mw->m.job_id, mw->m.id, mw->m.attempt, mw->m.step,
                             NULL,         values,   mw->m.time};

    params[4] = mw->m.epoch[0] ? mw->m.epoch : NULL;
    w->what = "metric";
    if (nf_pg_query(sched_of(w)->pg, insert_sql, 7, params, on_insert, mw) < 0)
        nf_work_retry(w, "could not queue the metric insert");
    free(values);
}

bool sched_metric_event(const cJSON *ev)
{
    const char *type = nf_json_str(ev, "type");

    return type && strcmp(type, "forge.job.metric") == 0;
}

void sched_metrics_handle(struct sched_ctx *ctx, struct nf_kafka_msg *msg, cJSON *ev)
{
    struct metric_work *mw;
    struct sched_metric m;
    const char *why = "malformed";

    if (sched_metric_parse(ev, &m, &why) < 0) {
        nf_log_kv(NF_LOG_WARN, "metric_malformed", "malformed metric event skipped", "reason", why,
                  "key", msg->key, NULL);
        nf_metrics_counter_add(ctx->m.malformed_ev, 1);
        cJSON_Delete(ev);
        nf_kafka_msg_done(msg);
        return;
    }
    mw = (struct metric_work *)nf_work_new(&ctx->work, msg, sizeof(*mw));
    mw->w.dtor = metric_dtor;
    mw->ev = ev; /* owned by mw */
    mw->m = m;
    nf_work_start(&mw->w, m.job_id, st_insert);
}

/* ---- GET /internal/jobs/{job_id}/metrics ------------------------------------------------ */

/* One metric point of the page: {type: "metric", step, epoch, attempt, time, values}. */
static cJSON *point_item(const PGresult *res, int i)
{
    const char *epoch = nf_pg_val(res, i, "epoch"), *text = nf_pg_val(res, i, "data");
    cJSON *item = nf_json_obj(), *values = text ? cJSON_Parse(text) : NULL;

    nf_json_add_str(item, "type", "metric");
    nf_json_add_int(item, "step", strtoll(nf_pg_val(res, i, "step"), NULL, 10));
    if (!cJSON_AddItemToObject(
            item, "epoch", epoch ? cJSON_CreateNumber(strtod(epoch, NULL)) : cJSON_CreateNull()))
        abort();
    nf_json_add_int(item, "attempt", strtoll(nf_pg_val(res, i, "attempt"), NULL, 10));
    nf_json_add_str(item, "time", nf_pg_val(res, i, "at"));
    if (!cJSON_AddItemToObject(item, "values", values ? values : cJSON_CreateObject()))
        abort();
    return item;
}

void sched_route_metrics(struct nf_http_req *req, void *arg)
{
    static const struct sched_log points = {page_sql, SCHED_LIST_METRICS, point_item, "list"};

    sched_http_log_page(req, arg, &points);
}
