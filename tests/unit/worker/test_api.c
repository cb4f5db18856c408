/*
 * api.c's heartbeat timer with a link-time fake of wk.c: this file defines wk_post (and
 * wk.c's two other functions), so the archive's wk.o is never linked and every request
 * the agent sends is recorded here, answered when the test says so.
 *
 * The case: a beat still waiting for its answer when the next tick comes (a slow manager)
 * must not cost that tick's beat, or one slow answer becomes two missed beats and a live
 * worker's lease can expire (issue 23: 6 s leases, 2 s beats).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_http_client.h"
#include "nf_log.h"
#include "nf_test.h"
#include "wk.h"

/* ---- the fake wk.c ---------------------------------------------------------------------- */

#define MAX_POSTS 16

struct post {
    char route[32];
    long long at_ms; /* nf_test_now_ms() when sent */
    nf_http_client_cb cb;
    void *arg;
    bool answered;
};

static struct post posts[MAX_POSTS];
static int nposts;

int wk_post(struct wk_ctx *ctx, struct nf_http_client *cli, const char *route, const char *token,
            cJSON *body, int timeout_ms, nf_http_client_cb cb, void *arg)
{
    assert_true(nposts < MAX_POSTS);
    assert_non_null(token);
    assert_true(timeout_ms >= 2000); /* a beat waits at least 2 s for its answer */
    cJSON_Delete(body);
    snprintf(posts[nposts].route, sizeof(posts[nposts].route), "%s", route);
    posts[nposts].at_ms = nf_test_now_ms();
    posts[nposts].cb = cb;
    posts[nposts].arg = arg;
    posts[nposts].answered = false;
    nposts++;
    return 0;
}

void wk_event_free(struct event **ev)
{
    if (*ev != NULL) {
        event_free(*ev);
        *ev = NULL;
    }
}

void wk_bev_free(struct bufferevent **bev)
{
    if (*bev != NULL) {
        bufferevent_free(*bev);
        *bev = NULL;
    }
}

/* Answers post i: status 0 is a timeout, 200 an empty heartbeat answer. */
static void answer(int i, int status)
{
    static const char ok[] = "{\"cancelled\":[],\"lost\":[],\"lost_leases\":[],"
                             "\"drain\":false,\"heartbeat_interval_s\":1}";
    struct nf_http_resp resp = {.status = status, .body = "", .len = 0};
    assert_true(i < nposts && !posts[i].answered);
    if (status == 200) {
        resp.body = ok;
        resp.len = sizeof(ok) - 1;
    } else {
        resp.error = "timed out";
    }
    posts[i].answered = true;
    posts[i].cb(&resp, posts[i].arg);
}

/* ---- fixture -------------------------------------------------------------------------------- */

static struct wk_ctx *ctx;
static struct wk_config cfg;

static int setup(void **state)
{
    nf_test_log_quiet();
    ctx = calloc(1, sizeof(*ctx));
    ctx->base = event_base_new();
    memset(&cfg, 0, sizeof(cfg));
    cfg.slots = 1;
    ctx->cfg = &cfg;
    snprintf(ctx->worker_id, sizeof(ctx->worker_id), "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    ctx->worker_token = nf_xstrdup("worker-token");
    ctx->registered = true;
    ctx->heartbeat_s = 1; /* the shortest interval the manager may set: a quick test */
    nposts = 0;
    return 0;
}

static int teardown(void **state)
{
    ctx->closing = true;
    for (int i = 0; i < nposts; i++)
        if (!posts[i].answered)
            answer(i, 0); /* as the HTTP client does when it is freed */
    wk_event_free(&ctx->heartbeat);
    wk_event_free(&ctx->heartbeat_kick);
    event_base_free(ctx->base);
    free(ctx->worker_token);
    free(ctx);
    return 0;
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* One beat per tick while the answers come quickly. */
static void test_beats_every_interval(void **state)
{
    wk_api_heartbeat_start(ctx);
    nf_test_run_for(ctx->base, 1150);
    assert_int_equal(nposts, 1);
    assert_string_equal(posts[0].route, "heartbeat");
    answer(0, 200);
    nf_test_run_for(ctx->base, 1000);
    assert_int_equal(nposts, 2);
    answer(1, 200);
    nf_test_run_for(ctx->base, 100);
    assert_int_equal(nposts, 2); /* nothing more before the next tick */
}

/* A tick that finds the previous beat unanswered sends its beat as soon as that one ends
 * (here a timeout), not one interval later. */
static void test_tick_during_a_slow_beat_is_not_lost(void **state)
{
    wk_api_heartbeat_start(ctx);
    nf_test_run_for(ctx->base, 1150); /* tick 1: beat 0 sent, no answer yet */
    assert_int_equal(nposts, 1);
    nf_test_run_for(ctx->base, 1000); /* tick 2 finds beat 0 still waiting */
    assert_int_equal(nposts, 1);      /* one beat in flight at a time */
    long long t0 = nf_test_now_ms();
    answer(0, 0); /* beat 0 times out */
    nf_test_run_for(ctx->base, 50);
    assert_int_equal(nposts, 2); /* tick 2's beat, at once */
    assert_true(posts[1].at_ms - t0 < 50);
    answer(1, 200);
    nf_test_run_for(ctx->base, 100);
    assert_int_equal(nposts, 2); /* and the timer goes on as before */
}

/* A failed beat (503) leaves the next one to the next tick: no retry storm. */
static void test_failed_beat_waits_for_the_next_tick(void **state)
{
    wk_api_heartbeat_start(ctx);
    nf_test_run_for(ctx->base, 1150);
    assert_int_equal(nposts, 1);
    answer(0, 503);
    nf_test_run_for(ctx->base, 500);
    assert_int_equal(nposts, 1);
    nf_test_run_for(ctx->base, 600);
    assert_int_equal(nposts, 2);
}

int main(void)
{
    return NF_TEST_RUN(setup, teardown, test_beats_every_interval,
                       test_tick_during_a_slow_beat_is_not_lost,
                       test_failed_beat_waits_for_the_next_tick);
}
