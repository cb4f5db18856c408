/*
 * metrics.c, the pure part: a forge.job.metric event is checked again by the scheduler
 * (anything with a producer can write to forge.jobs.events) before a point is kept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_test.h"
#include "sched.h"

#define JOB "job_01JDQ7Z8X9Y0ABCDEFGHJKMNPQ"

/* An envelope of type `type` whose data is {job_id, attempt, metric: <metric JSON>}. */
static cJSON *event(const char *type, const char *subject, const char *attempt, const char *metric)
{
    char text[4096];
    cJSON *data;

    snprintf(text, sizeof(text), "{\"job_id\":\"%s\",\"user_id\":\"usr_1\",\"attempt\":%s%s%s}",
             JOB, attempt, metric ? ",\"metric\":" : "", metric ? metric : "");
    data = cJSON_Parse(text);
    assert_non_null(data);
    return nf_event_new(type, "nf-worker/w1", subject, "ev-1", data);
}

static void test_metric_ok(void **state)
{
    struct sched_metric m;
    const char *why = NULL;
    cJSON *ev = event("forge.job.metric", JOB, "2",
                      "{\"step\":7,\"epoch\":1,\"train_loss\":2.5,\"arc_easy/acc\":0.25}");

    assert_true(sched_metric_event(ev));
    assert_int_equal(sched_metric_parse(ev, &m, &why), 0);
    assert_string_equal(m.job_id, JOB);
    assert_string_equal(m.id, "ev-1");
    assert_string_equal(m.attempt, "2");
    assert_string_equal(m.step, "7");
    assert_string_equal(m.epoch, "1");
    /* the values without step and epoch */
    assert_int_equal(cJSON_GetArraySize(m.values), 2);
    assert_true(cJSON_GetObjectItemCaseSensitive(m.values, "train_loss")->valuedouble == 2.5);
    sched_metric_clear(&m);
    sched_metric_clear(&m); /* twice is fine */
    cJSON_Delete(ev);

    ev = event("forge.job.metric", JOB, "1", "{\"step\":0,\"valid_loss\":3}");
    assert_int_equal(sched_metric_parse(ev, &m, &why), 0);
    assert_string_equal(m.epoch, ""); /* absent */
    sched_metric_clear(&m);
    cJSON_Delete(ev);

    ev = event("forge.job.log", JOB, "1", "{\"step\":0,\"valid_loss\":3}");
    assert_false(sched_metric_event(ev));
    cJSON_Delete(ev);
}

static void test_metric_bad(void **state)
{
    static const char *const bad[] = {
        "{\"train_loss\":1}",                           /* no step */
        "{\"step\":1}",                                 /* no value */
        "{\"step\":-1,\"l\":1}",                        /* negative */
        "{\"step\":1.5,\"l\":1}",                       /* fractional */
        "{\"step\":2e12,\"l\":1}",                      /* too big */
        "{\"step\":1,\"l\":\"1\"}",                     /* a string */
        "{\"step\":1,\"l\":null}",                      /* null */
        "{\"step\":1,\"l\":1e999}",                     /* infinite */
        "{\"step\":1,\"epoch\":-2,\"l\":1}",            /* negative epoch */
        "{\"step\":1,\"bad name\":1}",                  /* a space */
        "{\"step\":1,\"<script>\":1}",                  /* markup */
        "{\"step\":1,\"l\":1,\"l\":2}",                 /* a name twice */
        "{\"step\":1,\"epoch\":1,\"epoch\":2,\"l\":1}", /* epoch twice */
        "[1]",
        "7",
    };
    struct sched_metric m;
    const char *why;
    char many[2048];
    size_t n;
    cJSON *ev;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ev = event("forge.job.metric", JOB, "1", bad[i]);
        why = NULL;
        if (sched_metric_parse(ev, &m, &why) == 0)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(why);
        assert_null(m.values);
        cJSON_Delete(ev);
    }
    /* 33 values */
    n = (size_t)snprintf(many, sizeof(many), "{\"step\":1");
    for (int i = 0; i <= SCHED_METRIC_VALUES_MAX; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, ",\"m%d\":1", i);
    snprintf(many + n, sizeof(many) - n, "}");
    ev = event("forge.job.metric", JOB, "1", many);
    assert_int_equal(sched_metric_parse(ev, &m, &why), -1);
    cJSON_Delete(ev);
    /* no metric; bad attempt; subject not the job */
    ev = event("forge.job.metric", JOB, "1", NULL);
    assert_int_equal(sched_metric_parse(ev, &m, &why), -1);
    cJSON_Delete(ev);
    ev = event("forge.job.metric", JOB, "0", "{\"step\":1,\"l\":1}");
    assert_int_equal(sched_metric_parse(ev, &m, &why), -1);
    cJSON_Delete(ev);
    ev = event("forge.job.metric", "job_01JDQ7Z8X9Y0ABCDEFGHJKMNPR", "1", "{\"step\":1,\"l\":1}");
    assert_int_equal(sched_metric_parse(ev, &m, &why), -1);
    cJSON_Delete(ev);
}

static void test_metric_names(void **state)
{
    assert_true(nf_metric_name_valid("train_loss"));
    assert_true(nf_metric_name_valid("hellaswag/acc_norm"));
    assert_true(nf_metric_name_valid("lr-0.1"));
    assert_false(nf_metric_name_valid(""));
    assert_false(nf_metric_name_valid(NULL));
    assert_false(nf_metric_name_valid("/x"));
    assert_false(nf_metric_name_valid("a b"));
    assert_false(nf_metric_name_valid("a\"b"));
    assert_true(nf_metric_name_valid(
        "a123456789012345678901234567890123456789012345678901234567890123")); /* 64 */
    assert_false(nf_metric_name_valid(
        "a1234567890123456789012345678901234567890123456789012345678901234")); /* 65 */
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(NULL, NULL, test_metric_ok, test_metric_bad, test_metric_names);
}
