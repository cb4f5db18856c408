/*
 * POST /api/workers/next_job {worker_id, wait_seconds}: the long poll that leases a job.
 *
 *   auth --> scan: EVALSHA pop --job--> lease written --> forge.job.assigned delivered
 *                    |                     --> 200 {job, lease_id, lease_expires_at}
 *                    |                     (not delivered: job given back, 503)
 *                    +--none--> wait (timer 200 ms growing to 1 s, or woken at once when
 *                               this process queues a job of a matching type) --> scan
 *                    +--deadline passed--> 204
 *                    +--the worker is draining--> 204 at once
 *
 * One pop script does the matching and the lease atomically, so concurrent polls (also
 * from other manager copies) never lease one job twice. A poll whose client went away
 * stops scanning; a job leased in that instant is given back to its queue.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_redis.h"
#include "nf_svc.h"
#include "routes.h"
#include "wm.h"

#define RETRY_MAX_MS 1000

struct wm_poll {
    struct wm_ctx *ctx;
    struct nf_http_req *req; /* answered exactly once, then NULL */
    struct event *timer;     /* next scan */
    uint64_t deadline_ms;
    char worker_id[NF_ID_MAX];
    char *gpu_type;
    int gpu_count;
    unsigned types;
    char *labels;             /* the worker's labels as JSON text */
    char lease_id[NF_ID_MAX]; /* the lease id of the scan in flight */
    int retry_ms;             /* current wait between empty scans */
    bool busy;                /* a pop is in flight */
    bool woken;               /* a wake-up came while busy: scan again at once */
    bool stop;                /* shutdown: answer after the scan in flight */
    bool gone;                /* the client closed the connection */
    char job_id[NF_ID_MAX];   /* the leased job, between lease and answer */
    cJSON *job;               /* its dispatch data (owned until answered) */
    char expires[32];         /* lease_expires_at of the answer */
    LIST_ENTRY(wm_poll) link; /* in ctx->polls while linked */
    bool linked;
};

static void poll_scan(struct wm_poll *p);

static void poll_link(struct wm_poll *p)
{
    struct wm_ctx *ctx = p->ctx;
    LIST_INSERT_HEAD(&ctx->polls, p, link);
    p->linked = true;
    ctx->npolls++;
    nf_metrics_gauge_set(ctx->m.polls_waiting, (double)ctx->npolls);
}

static void poll_unlink(struct wm_poll *p)
{
    struct wm_ctx *ctx = p->ctx;
    if (!p->linked)
        return;
    LIST_REMOVE(p, link);
    p->linked = false;
    ctx->npolls--;
    nf_metrics_gauge_set(ctx->m.polls_waiting, (double)ctx->npolls);
}

static void poll_free(struct wm_poll *p)
{
    poll_unlink(p);
    if (p->timer)
        event_free(p->timer);
    cJSON_Delete(p->job);
    free(p->gpu_type);
    free(p->labels);
    free(p);
}

static void reply_status(struct wm_poll *p, int status)
{
    if (status == 204) {
        nf_http_reply_raw(p->req, 204, NULL, NULL, 0);
    } else if (status == 403) {
        nf_http_reply_error(p->req, 403, "forbidden", NULL, WM_WORKER_FORBIDDEN);
    } else {
        wm_reply_unavailable(p->req, "job queue unavailable");
    }
    p->req = NULL;
}

/* nf_http: the client closed the connection while its answer is still owed. */
static void on_client_gone(struct nf_http_req *req, void *arg)
{
    struct wm_poll *p = arg;
    p->gone = true;
    nf_log_kv(NF_LOG_DEBUG, "poll_client_gone", "worker went away during long poll", "worker_id",
              p->worker_id, NULL);
    if (!p->busy && p->job == NULL) { /* idle between scans: end it now */
        reply_status(p, 204);         /* dropped by nf_http */
        poll_free(p);
    }
    /* else: the pop or the assigned event in flight sees `gone` and gives the job back */
}

static void on_requeued(redisReply *reply, void *arg)
{
    char *job_id = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        nf_log_kv(NF_LOG_WARN, "job_requeue_failed",
                  "could not give a job back; its lease will expire", "job_id", job_id, NULL);
    free(job_id);
}

/* The client left while its pop ran: put the job back where it was. */
static void give_back(struct wm_poll *p, const char *job_id, const cJSON *job)
{
    struct wm_ctx *ctx = p->ctx;
    char queue[64], score[24];
    int type = nf_job_type_index(nf_json_str(job, "job_type"));
    long long prio = nf_json_int(job, "priority", 0);
    if (type < 0 || ctx->svc->closing)
        return; /* the lease expires and the reaper takes over */
    snprintf(queue, sizeof(queue), "wm:queue:%s", nf_job_types[type]);
    snprintf(score, sizeof(score), "%lld", 9 - prio);
    const char *argv[] = {"wm:leases", queue, job_id, p->lease_id, score};
    nf_redis_eval(ctx->redis, ctx->lua_requeue, on_requeued, nf_xstrdup(job_id), 2, 5, argv, NULL);
}

/* After the lease: the assigned event must be in Kafka before the worker hears of the
 * job, so `assigned` always precedes the worker's own `running`. */
static void on_assigned(int err, const char *errstr, void *arg)
{
    struct wm_poll *p = arg;
    struct wm_ctx *ctx = p->ctx;
    if (err != 0) {
        nf_log_kv(NF_LOG_ERROR, "assign_not_recorded",
                  "assigned event not delivered, job given back", "job_id", p->job_id, "error",
                  errstr, NULL);
        nf_metrics_counter_add(ctx->m.events_failed, 1);
        give_back(p, p->job_id, p->job);
        reply_status(p, 503);
        poll_free(p);
        return;
    }
    if (p->gone) {
        /* assigned is recorded but nobody will run it: the lease goes back to the queue
         * and the next worker's assigned event supersedes this one */
        give_back(p, p->job_id, p->job);
        reply_status(p, 204);
        poll_free(p);
        return;
    }
    nf_metrics_counter_add(ctx->m.jobs_leased, 1);
    nf_log_kv(NF_LOG_INFO, "job_leased", "job leased", "job_id", p->job_id, "worker_id",
              p->worker_id, "lease_id", p->lease_id, NULL);
    cJSON *body = nf_json_obj();
    cJSON_AddItemToObject(body, "job", p->job);
    p->job = NULL; /* owned by body */
    nf_json_add_str(body, "lease_id", p->lease_id);
    nf_json_add_str(body, "lease_expires_at", p->expires);
    nf_http_reply_json(p->req, 200, body);
    p->req = NULL;
    poll_free(p);
}

/* A job was leased to this poll: record the assignment, then answer (on_assigned).
 * Takes over p (freed here or by on_assigned). */
static void answer_job(struct wm_poll *p, const char *job_id, const char *data)
{
    struct wm_ctx *ctx = p->ctx;
    snprintf(p->job_id, sizeof(p->job_id), "%s", job_id);
    p->job = nf_json_parse(data, strlen(data));
    if (p->job == NULL) {
        /* The enqueue script only stores parsed dispatch data; treat as an outage. */
        nf_log_kv(NF_LOG_ERROR, "job_data_bad", "leased job has malformed data", "job_id", job_id,
                  NULL);
        reply_status(p, 503);
        poll_free(p);
        return;
    }
    if (p->gone || ctx->svc->closing) {
        give_back(p, job_id, p->job);
        reply_status(p, p->gone ? 204 : 503);
        poll_free(p);
        return;
    }
    poll_unlink(p); /* no more wake-ups or flushes: it has its job */
    nf_event_time(nf_now_ms() + (uint64_t)ctx->cfg->lease_ttl_s * 1000, p->expires);
    cJSON *data_ev = nf_json_obj();
    nf_json_add_str(data_ev, "job_id", job_id);
    nf_json_add_str(data_ev, "user_id", nf_json_str(p->job, "user_id"));
    nf_json_add_int(data_ev, "attempt", nf_json_int(p->job, "attempt", 1));
    nf_json_add_str(data_ev, "status", "assigned");
    nf_json_add_str(data_ev, "worker_id", p->worker_id);
    nf_json_add_str(data_ev, "lease_id", p->lease_id);
    if (wm_event_send(ctx, NF_TOPIC_JOBS_EVENTS, "forge.job.assigned", job_id, data_ev, on_assigned,
                      p) < 0)
        on_assigned(-1, "not queued", p);
}

static void wait_more(struct wm_poll *p)
{
    uint64_t now = nf_now_ms();
    if (p->stop || p->gone || now >= p->deadline_ms) {
        if (!p->gone)
            nf_metrics_counter_add(p->ctx->m.polls_empty, 1);
        reply_status(p, 204);
        poll_free(p);
        return;
    }
    if (p->woken) {
        p->woken = false;
        event_active(p->timer, EV_TIMEOUT, 0);
        return;
    }
    uint64_t wait = (uint64_t)p->retry_ms;
    if (wait > p->deadline_ms - now)
        wait = p->deadline_ms - now;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    evtimer_add(p->timer, &tv);
    p->retry_ms = p->retry_ms * 3 / 2 > RETRY_MAX_MS ? RETRY_MAX_MS : p->retry_ms * 3 / 2;
}

static void on_popped(redisReply *reply, void *arg)
{
    struct wm_poll *p = arg;
    struct wm_ctx *ctx = p->ctx;
    p->busy = false;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (reply != NULL)
            nf_log_kv(NF_LOG_ERROR, "job_pop_failed", "pop script failed", "error", reply->str,
                      NULL);
        reply_status(p, 503);
        poll_free(p);
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER) { /* the worker is draining: nothing for it */
        nf_metrics_counter_add(ctx->m.polls_draining, 1);
        reply_status(p, 204);
        poll_free(p);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        answer_job(p, reply->element[0]->str, reply->element[1]->str); /* takes p */
        return;
    }
    if (ctx->svc->closing) {
        reply_status(p, 503);
        poll_free(p);
        return;
    }
    wait_more(p);
}

static void poll_scan(struct wm_poll *p)
{
    struct wm_ctx *ctx = p->ctx;
    const char *argv[3 + NF_NJOB_TYPES + 9];
    char leases_key[] = "wm:leases", worker_key[NF_ID_MAX + 16], wleases_key[NF_ID_MAX + 16];
    char queues[NF_NJOB_TYPES][32];
    char count[16], now_s[24], ttl_ms[16], limit[8], worker_ttl[16];
    int nkeys = 0, argc;

    if (p->gone || p->stop) {
        wait_more(p); /* answers and frees */
        return;
    }
    snprintf(worker_key, sizeof(worker_key), "wm:worker:%s", p->worker_id);
    snprintf(wleases_key, sizeof(wleases_key), "wm:wleases:%s", p->worker_id);
    argv[nkeys++] = leases_key;
    argv[nkeys++] = worker_key;
    argv[nkeys++] = wleases_key;
    for (int i = 0; i < NF_NJOB_TYPES; i++) {
        if (!(p->types & (1u << i)))
            continue;
        snprintf(queues[i], sizeof(queues[i]), "wm:queue:%s", nf_job_types[i]);
        argv[nkeys++] = queues[i];
    }
    nf_id_new("lse", p->lease_id, sizeof(p->lease_id));
    snprintf(count, sizeof(count), "%d", p->gpu_count);
    snprintf(now_s, sizeof(now_s), "%llu", (unsigned long long)nf_now_ms());
    snprintf(ttl_ms, sizeof(ttl_ms), "%d", ctx->cfg->lease_ttl_s * 1000);
    snprintf(limit, sizeof(limit), "%d", WM_SCAN_LIMIT);
    snprintf(worker_ttl, sizeof(worker_ttl), "%d", 3 * ctx->cfg->heartbeat_s);
    argc = nkeys;
    argv[argc++] = p->worker_id;
    argv[argc++] = p->gpu_type;
    argv[argc++] = count;
    argv[argc++] = p->labels;
    argv[argc++] = p->lease_id;
    argv[argc++] = now_s;
    argv[argc++] = ttl_ms;
    argv[argc++] = limit;
    argv[argc++] = worker_ttl;
    p->busy = true;
    /* On -1 on_popped already ran with NULL and freed p. */
    nf_redis_eval(ctx->redis, ctx->lua_pop, on_popped, p, nkeys, argc, argv, NULL);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    poll_scan(arg);
}

static void on_auth(struct wm_ctx *ctx, int status, const struct wm_worker *w, void *arg)
{
    struct wm_poll *p = arg;
    if (status != 0 || ctx->svc->closing) {
        reply_status(p, status == 403 ? 403 : 503);
        poll_free(p);
        return;
    }
    if (ctx->svc->stopping) {
        reply_status(p, 503);
        poll_free(p);
        return;
    }
    p->gpu_type = nf_xstrdup(w->gpu_type);
    p->gpu_count = w->gpu_count;
    p->types = w->types;
    p->labels = nf_json_print(w->labels);
    p->timer = evtimer_new(ctx->base, on_timer, p);
    if (p->timer == NULL)
        abort();
    poll_link(p);
    nf_http_stream_on_close(p->req, on_client_gone, p);
    poll_scan(p);
}

void wm_route_next_job(struct nf_http_req *req, void *arg)
{
    struct wm_ctx *ctx = arg;
    struct nf_json_err err = {0};
    const char *worker_id = NULL;
    long long wait_s = WM_DEFAULT_WAIT_S;

    const char *token = NULL;
    cJSON *body = wm_req_body(ctx, req, WM_WORKER_FORBIDDEN, &token);
    if (body == NULL)
        return; /* answered 403 or 400 */
    if (nf_json_get_str(body, "worker_id", true, &worker_id, &err) != 0 ||
        nf_json_get_int(body, "wait_seconds", false, 0, WM_MAX_WAIT_S, &wait_s, &err) < 0) {
        nf_http_reply_error(req, 422, "invalid_params", err.param, "%s", err.msg);
        return;
    }
    struct wm_poll *p = nf_xcalloc(1, sizeof(*p));
    p->ctx = ctx;
    p->req = req;
    p->retry_ms = WM_POLL_RETRY_MS;
    p->deadline_ms = nf_now_ms() + (uint64_t)wait_s * 1000;
    snprintf(p->worker_id, sizeof(p->worker_id), "%s", worker_id);
    wm_auth_worker(ctx, worker_id, token, on_auth, p);
}

void wm_polls_wake(struct wm_ctx *ctx, int type)
{
    struct wm_poll *p;

    LIST_FOREACH(p, &ctx->polls, link)
    {
        if (!(p->types & (1u << type)))
            continue;
        p->retry_ms = WM_POLL_RETRY_MS;
        if (p->busy) {
            p->woken = true;
        } else {
            evtimer_del(p->timer);
            event_active(p->timer, EV_TIMEOUT, 0);
        }
    }
}

void wm_polls_flush(struct wm_ctx *ctx)
{
    struct wm_poll *p = LIST_FIRST(&ctx->polls), *next;
    for (; p != NULL; p = next) {
        next = LIST_NEXT(p, link);
        p->stop = true;
        if (!p->busy) {
            reply_status(p, 204);
            poll_free(p);
        }
    }
}
