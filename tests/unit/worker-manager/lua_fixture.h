#pragma once
/*
 * What the tests of the worker-manager's Redis scripts share (test_it_lua*.c, linked
 * with lua_fixture.c): a connection to NF_TEST_REDIS_ADDR in a database of their own,
 * emptied around each test (the scripts use fixed wm:* keys), and one call per script
 * with the keys and arguments the service passes. Every call fails the running test on
 * a Redis error.
 */
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "nf_id.h"

#define WMT_DB 13
#define WMT_TTL_MS 30000        /* the lease TTL the tests grant */
#define WMT_T0 1800000000000ULL /* the tests' "now", in ms */

/* The connection; NULL when NF_TEST_REDIS_ADDR is unset (each test then skips). */
extern redisContext *wmt_rc;

/* Per-test setup and teardown: connect, select WMT_DB and empty it; empty it, close. */
int wmt_setup(void **state);
int wmt_teardown(void **state);

/* Skips the running test unless there is a connection. */
void wmt_need_redis(void);

/* EVAL script with nkeys keys then arguments, a NULL-terminated list. Caller frees. */
redisReply *wmt_eval(const char *script, int nkeys, ...);

/* r's integer (r must be one); frees r. */
long long wmt_integer(redisReply *r);

/* A string reply of the command as a new string (caller frees), NULL for another type. */
char *wmt_get(const char *fmt, const char *arg);

/* An integer or numeric string reply of the command; -2 for nil, -1 for another type. */
long long wmt_cmd_int(const char *fmt, const char *a, const char *b);

/* A job id that sorts by n. */
void wmt_job_id(int n, char out[NF_ID_MAX]);

/* Queues a dispatch through the enqueue script (extra: more JSON members of the job, or
 * NULL); returns the script's answer. */
long long wmt_enqueue(const char *id, const char *type, int priority, int attempt,
                      const char *extra);

/* What the pop script gave. */
struct wmt_popped {
    bool draining; /* the script answered -1 */
    bool got;
    char job_id[NF_ID_MAX];
    long long attempt;
};

/* Pops for worker wid over the given queue types (a comma list) at time now. */
struct wmt_popped wmt_pop(const char *wid, const char *types, const char *gpu_type, int gpu_count,
                          const char *labels, const char *lease_id, unsigned long long now);

/* wmt_pop at WMT_T0, checked: the job popped is want, or nothing when want is NULL. */
void wmt_expect_pop(const char *wid, const char *types, const char *gpu_type, int gpu_count,
                    const char *labels, const char *lease_id, const char *want);

/* One heartbeat: what the agent says, and what the script answered (ids joined by ','). */
struct wmt_beat {
    bool stopping; /* in: the agent says it is stopping */
    long long pg;  /* 1: Postgres' last_seen_at is due */
    long long renewed;
    long long released;
    long long draining;
    long long drained;
    char cancelled[512];
    char lost[512];
    char lost_leases[512];
};

/* Runs the heartbeat script for worker wid at now with the (job id, lease id) pairs it
 * lists, a NULL-terminated list; fills hb. */
void wmt_heartbeat(struct wmt_beat *hb, const char *wid, unsigned long long now, ...);
