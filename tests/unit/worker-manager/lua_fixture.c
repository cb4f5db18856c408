/* The worker-manager's Redis scripts called as the service calls them; see lua_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_fixture.h"
#include "nf_json.h"
#include "nf_test.h"
#include "wm.h"

redisContext *wmt_rc;

int wmt_setup(void **state)
{
    return nf_test_redis_open(&wmt_rc, WMT_DB);
}

int wmt_teardown(void **state)
{
    nf_test_redis_close(wmt_rc, WMT_DB);
    wmt_rc = NULL;
    return 0;
}

void wmt_need_redis(void)
{
    nf_test_skip_unless(wmt_rc != NULL);
}

/* The EVAL of script with nkeys keys and the n strings of args. */
static redisReply *eval_args(const char *script, int nkeys, int n, const char *const *args)
{
    return nf_test_redis_eval(wmt_rc, script, nkeys, n, args);
}

redisReply *wmt_eval(const char *script, int nkeys, ...)
{
    const char *args[60];
    int n = 0;
    va_list ap;

    va_start(ap, nkeys);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        assert_true(n < 60);
        args[n++] = a;
    }
    va_end(ap);
    return eval_args(script, nkeys, n, args);
}

long long wmt_integer(redisReply *r)
{
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

char *wmt_get(const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(wmt_rc, fmt, arg);
    assert_non_null(r);
    char *out = r->type == REDIS_REPLY_STRING ? nf_xstrdup(r->str) : NULL;
    freeReplyObject(r);
    return out;
}

long long wmt_cmd_int(const char *fmt, const char *a, const char *b)
{
    redisReply *r = redisCommand(wmt_rc, fmt, a, b);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    if (r->type == REDIS_REPLY_NIL)
        v = -2;
    freeReplyObject(r);
    return v;
}

void wmt_job_id(int n, char out[NF_ID_MAX])
{
    uint8_t rnd[10] = {0};
    rnd[9] = (uint8_t)n;
    nf_id_new_at("job", 1700000000000ULL + (uint64_t)n, rnd, out, NF_ID_MAX);
}

long long wmt_enqueue(const char *id, const char *type, int priority, int attempt,
                      const char *extra)
{
    char data[1024], key[96], lease[96], queue[64], att[16], score[16], tomb[96];
    snprintf(data, sizeof(data),
             "{\"job_id\":\"%s\",\"user_id\":\"usr_1\",\"job_type\":\"%s\",\"priority\":%d,"
             "\"attempt\":%d%s%s}",
             id, type, priority, attempt, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof(key), "wm:job:%s", id);
    snprintf(lease, sizeof(lease), "wm:lease:%s", id);
    snprintf(queue, sizeof(queue), "wm:queue:%s", type);
    snprintf(att, sizeof(att), "%d", attempt);
    snprintf(score, sizeof(score), "%d", 9 - priority);
    snprintf(tomb, sizeof(tomb), "wm:cancelled:%s", id);
    return wmt_integer(wmt_eval(wm_lua_enqueue, 5, key, queue, lease, "wm:leases", tomb, data, att,
                                score, id, NULL));
}

struct wmt_popped wmt_pop(const char *wid, const char *types, const char *gpu_type, int gpu_count,
                          const char *labels, const char *lease_id, unsigned long long now)
{
    const char *args[64];
    char count[8], now_s[24], ttl[16], wkey[96], wlkey[96];
    char queues[NF_NJOB_TYPES][48];
    int n = 0, nkeys = 3;
    snprintf(wkey, sizeof(wkey), "wm:worker:%s", wid);
    snprintf(wlkey, sizeof(wlkey), "wm:wleases:%s", wid);
    args[n++] = "wm:leases";
    args[n++] = wkey;
    args[n++] = wlkey;
    unsigned mask = 0;
    assert_int_equal(wm_types_parse(types, &mask), 0);
    for (int i = 0; i < NF_NJOB_TYPES; i++)
        if (mask & (1u << i)) {
            snprintf(queues[i], sizeof(queues[i]), "wm:queue:%s", nf_job_types[i]);
            args[n++] = queues[i];
            nkeys++;
        }
    snprintf(count, sizeof(count), "%d", gpu_count);
    snprintf(now_s, sizeof(now_s), "%llu", now);
    snprintf(ttl, sizeof(ttl), "%d", WMT_TTL_MS);
    args[n++] = wid;
    args[n++] = gpu_type;
    args[n++] = count;
    args[n++] = labels;
    args[n++] = lease_id;
    args[n++] = now_s;
    args[n++] = ttl;
    args[n++] = "50";
    args[n++] = "15";
    redisReply *r = eval_args(wm_lua_pop, nkeys, n, args);
    struct wmt_popped p = {0};
    if (r->type == REDIS_REPLY_ARRAY) {
        assert_int_equal(r->elements, 3);
        p.got = true;
        snprintf(p.job_id, sizeof(p.job_id), "%s", r->element[0]->str);
        cJSON *data = cJSON_Parse(r->element[1]->str);
        assert_non_null(data);
        assert_string_equal(nf_json_str(data, "job_id"), p.job_id);
        cJSON_Delete(data);
        p.attempt = strtoll(r->element[2]->str, NULL, 10);
    } else if (r->type == REDIS_REPLY_INTEGER) {
        assert_int_equal(r->integer, -1);
        p.draining = true;
    } else {
        assert_int_equal(r->type, REDIS_REPLY_NIL);
    }
    freeReplyObject(r);
    return p;
}

void wmt_expect_pop(const char *wid, const char *types, const char *gpu_type, int gpu_count,
                    const char *labels, const char *lease_id, const char *want)
{
    struct wmt_popped p = wmt_pop(wid, types, gpu_type, gpu_count, labels, lease_id, WMT_T0);

    if (want != NULL)
        assert_string_equal(p.job_id, want);
    else
        assert_false(p.got);
}

static void join_ids(const redisReply *list, char *out, size_t len)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < list->elements; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%s", i ? "," : "", list->element[i]->str);
}

void wmt_heartbeat(struct wmt_beat *hb, const char *wid, unsigned long long now, ...)
{
    const char *args[64];
    char wkey[96], wlkey[96], ckey[96], now_s[24], ttl[16];
    int n = 0;
    va_list ap;
    snprintf(wkey, sizeof(wkey), "wm:worker:%s", wid);
    snprintf(wlkey, sizeof(wlkey), "wm:wleases:%s", wid);
    snprintf(ckey, sizeof(ckey), "wm:cancel:%s", wid);
    snprintf(now_s, sizeof(now_s), "%llu", now);
    snprintf(ttl, sizeof(ttl), "%d", WMT_TTL_MS);
    args[n++] = "wm:leases";
    args[n++] = wkey;
    args[n++] = wlkey;
    args[n++] = ckey;
    args[n++] = "wm:workers";
    args[n++] = wid;
    args[n++] = now_s;
    args[n++] = ttl;
    args[n++] = "15";     /* worker TTL s */
    args[n++] = "604800"; /* done TTL s */
    args[n++] = "60000";  /* pg every ms */
    args[n++] = hb->stopping ? "1" : "0";
    va_start(ap, now);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        assert_true(n < 60);
        args[n++] = a;
    }
    va_end(ap);
    redisReply *r = eval_args(wm_lua_heartbeat, 5, n, args);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 8);
    hb->pg = r->element[0]->integer;
    hb->renewed = r->element[2]->integer;
    hb->released = r->element[3]->integer;
    hb->draining = r->element[5]->integer;
    hb->drained = r->element[6]->integer;
    join_ids(r->element[1], hb->cancelled, sizeof(hb->cancelled));
    join_ids(r->element[4], hb->lost, sizeof(hb->lost));
    join_ids(r->element[7], hb->lost_leases, sizeof(hb->lost_leases));
    assert_int_equal(r->element[4]->elements, r->element[7]->elements);
    freeReplyObject(r);
}
