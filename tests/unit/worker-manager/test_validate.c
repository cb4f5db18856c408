/*
 * validate.c: registration bodies, dispatch envelopes, requirement matching, helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_log.h"
#include "nf_test.h"
#include "wm.h"

static cJSON *json(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    return j;
}

/* Parses a registration body; returns the rc and leaves the error param in err. */
static int reg(const char *text, struct wm_worker *w, struct nf_json_err *err)
{
    cJSON *body = json(text);
    memset(w, 0, sizeof(*w));
    memset(err, 0, sizeof(*err));
    int rc = wm_register_parse(body, w, err);
    cJSON_Delete(body);
    return rc;
}

static void test_register_ok(void **state)
{
    struct wm_worker w;
    struct nf_json_err err;
    assert_int_equal(reg("{\"hostname\":\"gpu-01\",\"gpu_type\":\"a100\",\"gpu_count\":8,"
                         "\"job_types\":[\"generate\",\"train\",\"generate\"],"
                         "\"labels\":{\"zone\":\"eu\",\"tier\":\"gold\"},\"version\":\"1.0\"}",
                         &w, &err),
                     0);
    assert_string_equal(w.hostname, "gpu-01");
    assert_string_equal(w.gpu_type, "a100");
    assert_int_equal(w.gpu_count, 8);
    assert_int_equal(w.types, (1u << 0) | (1u << 3));
    assert_string_equal(nf_json_str(w.labels, "zone"), "eu");
    assert_string_equal(w.version, "1.0");
    wm_worker_clear(&w);

    /* optional fields default: no GPU type, 0 GPUs, no labels, empty version */
    assert_int_equal(
        reg("{\"hostname\":\"h\",\"job_types\":[\"deploy\"],\"gpu_type\":null}", &w, &err), 0);
    assert_string_equal(w.gpu_type, "");
    assert_int_equal(w.gpu_count, 0);
    assert_int_equal(cJSON_GetArraySize(w.labels), 0);
    assert_string_equal(w.version, "");
    wm_worker_clear(&w);
    wm_worker_clear(NULL);
}

static void test_register_refused(void **state)
{
    static const struct {
        const char *body;
        const char *param;
    } cases[] = {
        {"{\"job_types\":[\"generate\"]}", "hostname"},
        {"{\"hostname\":\"\",\"job_types\":[\"generate\"]}", "hostname"},
        {"{\"hostname\":7,\"job_types\":[\"generate\"]}", "hostname"},
        {"{\"hostname\":\"h\"}", "job_types"},
        {"{\"hostname\":\"h\",\"job_types\":[]}", "job_types"},
        {"{\"hostname\":\"h\",\"job_types\":[\"generate\",\"mine_bitcoin\"]}", "job_types"},
        {"{\"hostname\":\"h\",\"job_types\":[3]}", "job_types"},
        {"{\"hostname\":\"h\",\"job_types\":\"generate\"}", "job_types"},
        {"{\"hostname\":\"h\",\"job_types\":[\"train\"],\"gpu_count\":17}", "gpu_count"},
        {"{\"hostname\":\"h\",\"job_types\":[\"train\"],\"gpu_count\":-1}", "gpu_count"},
        {"{\"hostname\":\"h\",\"job_types\":[\"train\"],\"gpu_count\":1.5}", "gpu_count"},
        {"{\"hostname\":\"h\",\"job_types\":[\"train\"],\"labels\":[\"a\"]}", "labels"},
        {"{\"hostname\":\"h\",\"job_types\":[\"train\"],\"labels\":{\"zone\":1}}", "labels.zone"},
        {"{\"hostname\":\"h\",\"job_types\":[\"train\"],\"labels\":{\"\":\"x\"}}", "labels."},
        {"{\"hostname\":\"h\\u0001\",\"job_types\":[\"train\"]}", "hostname"},
        {"{\"hostname\":\"h\",\"job_types\":[\"train\"],\"gpu_type\":5}", "gpu_type"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wm_worker w;
        struct nf_json_err err;
        int rc = reg(cases[i].body, &w, &err);
        if (rc != -1)
            fail_msg("case %zu accepted: %s", i, cases[i].body);
        assert_string_equal(err.param, cases[i].param);
        assert_true(strlen(err.msg) > 0);
        wm_worker_clear(&w);
    }
}

static void test_register_label_limits(void **state)
{
    char body[4096];
    size_t off = (size_t)snprintf(body, sizeof(body),
                                  "{\"hostname\":\"h\",\"job_types\":[\"audit\"],"
                                  "\"labels\":{");
    for (int i = 0; i < WM_MAX_LABELS + 1; i++)
        off += (size_t)snprintf(body + off, sizeof(body) - off, "%s\"k%d\":\"v\"", i ? "," : "", i);
    snprintf(body + off, sizeof(body) - off, "}}");
    struct wm_worker w;
    struct nf_json_err err;
    assert_int_equal(reg(body, &w, &err), -1);
    assert_string_equal(err.param, "labels");
    wm_worker_clear(&w);

    /* a value longer than 255 characters */
    char big[400];
    memset(big, 'x', 300);
    big[300] = '\0';
    snprintf(body, sizeof(body),
             "{\"hostname\":\"h\",\"job_types\":[\"audit\"],\"labels\":"
             "{\"k\":\"%s\"}}",
             big);
    assert_int_equal(reg(body, &w, &err), -1);
    assert_string_equal(err.param, "labels.k");
    wm_worker_clear(&w);
}

static void test_types_join_parse(void **state)
{
    char out[128];
    unsigned mask = 0;
    wm_types_join((1u << 0) | (1u << 5), out, sizeof(out));
    assert_string_equal(out, "generate,deploy");
    assert_int_equal(wm_types_parse(out, &mask), 0);
    assert_int_equal(mask, (1u << 0) | (1u << 5));
    wm_types_join(0, out, sizeof(out));
    assert_string_equal(out, "");
    assert_int_equal(wm_types_parse("", &mask), 0);
    assert_int_equal(mask, 0);
    assert_int_equal(wm_types_parse("generate,,train", &mask), -1);
    assert_int_equal(wm_types_parse("generate,nope", &mask), -1);
    /* a short buffer is cut, never overrun */
    char small[10];
    wm_types_join(0x3f, small, sizeof(small));
    assert_true(strlen(small) < sizeof(small));
    assert_int_equal(nf_job_type_index("evaluate"), 4);
    assert_int_equal(nf_job_type_index("Evaluate"), -1);
    assert_int_equal(nf_job_type_index(NULL), -1);
}

static struct wm_worker worker(const char *gpu_type, int gpu_count, const char *labels)
{
    struct wm_worker w = {0};
    w.gpu_type = nf_xstrdup(gpu_type);
    w.gpu_count = gpu_count;
    w.labels = json(labels);
    return w;
}

static bool matches(struct wm_worker *w, const char *job_text)
{
    cJSON *job = json(job_text);
    bool ok = wm_job_matches(w, job);
    cJSON_Delete(job);
    return ok;
}

static void test_job_matches(void **state)
{
    struct wm_worker a100 = worker("a100", 4, "{\"zone\":\"eu\",\"tier\":\"gold\"}");
    struct wm_worker cpu = worker("", 0, "{}");

    assert_true(matches(&a100, "{}"));
    assert_true(matches(&a100, "{\"gpu_type\":null,\"gpu_count\":4,\"labels\":null}"));
    assert_true(matches(&a100, "{\"gpu_type\":\"a100\",\"gpu_count\":1}"));
    assert_true(matches(&a100, "{\"gpu_type\":\"\"}"));
    assert_false(matches(&a100, "{\"gpu_type\":\"h100\"}"));
    assert_false(matches(&a100, "{\"gpu_count\":5}"));
    assert_true(matches(&a100, "{\"labels\":{\"zone\":\"eu\"}}"));
    assert_true(matches(&a100, "{\"labels\":{\"zone\":\"eu\",\"tier\":\"gold\"}}"));
    assert_false(matches(&a100, "{\"labels\":{\"zone\":\"us\"}}"));
    assert_false(matches(&a100, "{\"labels\":{\"rack\":\"7\"}}"));
    assert_true(matches(&a100, "{\"labels\":{}}"));

    /* a worker without GPUs takes only jobs asking for none */
    assert_false(matches(&cpu, "{\"gpu_count\":1}"));
    assert_true(matches(&cpu, "{\"gpu_count\":0}"));
    assert_false(matches(&cpu, "{\"gpu_type\":\"a100\",\"gpu_count\":0}"));
    assert_false(matches(&cpu, "{\"labels\":{\"zone\":\"eu\"}}"));
    wm_worker_clear(&a100);
    wm_worker_clear(&cpu);
}

static char *dispatch(const char *type, const char *data)
{
    cJSON *ev =
        nf_event_new(type, "nf-scheduler", "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M", NULL, json(data));
    char *text = nf_json_print(ev);
    cJSON_Delete(ev);
    return text;
}

static void test_dispatch_ok(void **state)
{
    char *text = dispatch("forge.job.dispatch",
                          "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"user_id\":\"usr_1\","
                          "\"job_type\":\"train\",\"priority\":7,\"attempt\":2,"
                          "\"gpu_type\":null,\"gpu_count\":1,\"labels\":{\"zone\":\"eu\"},"
                          "\"params\":{\"model_id\":\"m\"}}");
    struct wm_dispatch d;
    const char *why = NULL;
    assert_int_equal(wm_dispatch_parse(text, strlen(text), &d, &why), 0);
    assert_string_equal(d.job_id, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M");
    assert_int_equal(d.type, 3);
    assert_int_equal(d.priority, 7);
    assert_int_equal(d.attempt, 2);
    assert_string_equal(nf_json_str(d.data, "user_id"), "usr_1");
    wm_dispatch_clear(&d);
    wm_dispatch_clear(NULL);
    free(text);

    /* priority absent -> 0 */
    text = dispatch("forge.job.dispatch", "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\","
                                          "\"job_type\":\"deploy\",\"attempt\":1}");
    assert_int_equal(wm_dispatch_parse(text, strlen(text), &d, &why), 0);
    assert_int_equal(d.priority, 0);
    wm_dispatch_clear(&d);
    free(text);
}

static void test_dispatch_malformed(void **state)
{
    static const char *const datas[] = {
        "{\"job_type\":\"train\",\"attempt\":1}",
        "{\"job_id\":\"job_bad\",\"job_type\":\"train\",\"attempt\":1}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"sing\",\"attempt\":1}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\"}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\",\"attempt\":0}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\",\"attempt\":1.5}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\",\"attempt\":1,"
        "\"priority\":10}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\",\"attempt\":1,"
        "\"priority\":\"high\"}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\",\"attempt\":1,"
        "\"gpu_count\":\"1\"}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\",\"attempt\":1,"
        "\"gpu_type\":3}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\",\"attempt\":1,"
        "\"labels\":[1]}",
        "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\",\"job_type\":\"train\",\"attempt\":1,"
        "\"labels\":{\"a\":1}}",
    };
    for (size_t i = 0; i < sizeof(datas) / sizeof(datas[0]); i++) {
        char *text = dispatch("forge.job.dispatch", datas[i]);
        struct wm_dispatch d = {0};
        const char *why = NULL;
        if (wm_dispatch_parse(text, strlen(text), &d, &why) != -1)
            fail_msg("case %zu accepted: %s", i, datas[i]);
        assert_non_null(why);
        assert_null(d.ev);
        free(text);
    }
    /* wrong event type, not an envelope, not JSON, empty */
    char *text = dispatch("forge.job.requested", "{\"job_id\":\"job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M\","
                                                 "\"job_type\":\"train\",\"attempt\":1}");
    struct wm_dispatch d = {0};
    const char *why = NULL;
    assert_int_equal(wm_dispatch_parse(text, strlen(text), &d, &why), -1);
    free(text);
    const char *bad[] = {"{\"data\":{}}", "not json", "", "[1,2]"};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(wm_dispatch_parse(bad[i], strlen(bad[i]), &d, &why), -1);
}

static void test_bearer(void **state)
{
    assert_string_equal(wm_bearer("Bearer abc"), "abc");
    assert_string_equal(wm_bearer("bearer   abc"), "abc");
    assert_null(wm_bearer("Basic abc"));
    assert_null(wm_bearer("Bearer "));
    assert_null(wm_bearer("Bearer"));
    assert_null(wm_bearer(NULL));
}

static void test_worker_status(void **state)
{
    const uint64_t now = 1800000000000ULL;
    /* heartbeat every 5 s: lost after 3 missed ones (15 s) */
    assert_string_equal(wm_worker_status(now, now - 1000, 5, false, 0), "idle");
    assert_string_equal(wm_worker_status(now, now - 1000, 5, false, 2), "busy");
    assert_string_equal(wm_worker_status(now, now - 1000, 5, true, 2), "draining");
    assert_string_equal(wm_worker_status(now, now - 15000, 5, false, 1), "busy");
    assert_string_equal(wm_worker_status(now, now - 15001, 5, false, 1), "lost");
    assert_string_equal(wm_worker_status(now, now - 15001, 5, true, 0), "lost");
    assert_string_equal(wm_worker_status(now, 0, 5, false, 0), "lost");
    /* a clock step backwards (stamp in the future) is not a loss */
    assert_string_equal(wm_worker_status(now, now + 5000, 1, false, 0), "idle");
    assert_string_equal(wm_worker_status(now, now - 3001, 1, false, 0), "lost");
}

/* The reaper holds off one lease TTL after start and after a stall of its loop. */
static void test_reap_hold(void **state)
{
    const struct wm_config cfg = {.heartbeat_s = 2, .lease_ttl_s = 6, .reap_interval_ms = 500};
    const uint64_t t = 1800000000000ULL;
    uint64_t hold;

    /* the first tick after start: hold one lease TTL */
    hold = wm_reap_hold(t, 0, 0, &cfg);
    assert_int_equal(hold, t + 6000);
    /* ticks on time (and up to one heartbeat late) keep the hold as it is */
    assert_int_equal(wm_reap_hold(t + 500, t, hold, &cfg), hold);
    assert_int_equal(wm_reap_hold(t + 9000, t + 6500, hold, &cfg), hold);
    assert_int_equal(wm_reap_hold(t + 9000, t + 8500, 0, &cfg), 0);
    /* a tick more than one heartbeat late: the loop stood still - a new hold */
    assert_int_equal(wm_reap_hold(t + 9001, t + 6500, hold, &cfg), t + 9001 + 6000);
    assert_int_equal(wm_reap_hold(t + 20000, t + 500, 0, &cfg), t + 26000);
    /* a hold is never shortened */
    assert_int_equal(wm_reap_hold(t + 3000, 0, t + 60000, &cfg), t + 60000);
    /* a clock stepped back is not a stall */
    assert_int_equal(wm_reap_hold(t, t + 30000, 0, &cfg), 0);
    /* a site's slower settings scale it: 10 s beats, 40 s leases */
    const struct wm_config slow = {.heartbeat_s = 10, .lease_ttl_s = 40, .reap_interval_ms = 1000};
    assert_int_equal(wm_reap_hold(t + 11000, t, 0, &slow), 0);
    assert_int_equal(wm_reap_hold(t + 11001, t, 0, &slow), t + 11001 + 40000);
}

#define JOB "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"
#define LEASE "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"
#define WRK "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"

/* Parses a report; returns rc, the error param in param (or ""). */
static int report(const char *text, enum wm_report_kind kind, struct wm_report *rep, char *param,
                  size_t len)
{
    struct nf_json_err err = {0};
    cJSON *body = json(text);
    memset(rep, 0, sizeof(*rep));
    int rc = wm_report_parse(body, kind, WRK, rep, &err);
    snprintf(param, len, "%s", rc < 0 ? err.param : "");
    if (rc == 0) {
        assert_non_null(rep->event);
        assert_string_equal(rep->job_id, JOB);
        assert_string_equal(rep->lease_id, LEASE);
    }
    cJSON_Delete(body);
    return rc;
}

static void test_report(void **state)
{
    struct wm_report rep;
    char param[64], text[1024];
    const char *ev_fmt = "{\"worker_id\":\"" WRK "\",\"lease_id\":\"%s\",\"event\":"
                         "{\"specversion\":\"%s\",\"id\":\"%s\",\"source\":\"x\",\"type\":\"%s\","
                         "\"subject\":\"%s\",\"data\":{\"job_id\":\"%s\",\"attempt\":%s,"
                         "\"user_id\":\"usr_1\",\"worker_id\":\"%s\"}}}";
#define EV(lease, spec, id, type, subject, job, attempt, wid)                                      \
    snprintf(text, sizeof(text), ev_fmt, lease, spec, id, type, subject, job, attempt, wid)

    EV(LEASE, "1.0", "evt_1", "forge.job.succeeded", JOB, JOB, "2", WRK);
    assert_int_equal(report(text, WM_REPORT_EVENT, &rep, param, sizeof(param)), 0);
    assert_int_equal(rep.attempt, 2);
    EV(LEASE, "1.0", "use_1", "forge.usage.recorded", "usr_1", JOB, "1", WRK);
    assert_int_equal(report(text, WM_REPORT_USAGE, &rep, param, sizeof(param)), 0);

    /* each refusal names the field */
    static const struct {
        enum wm_report_kind kind;
        const char *lease, *spec, *id, *type, *subject, *job, *attempt, *wid, *param;
    } bad[] = {
        {WM_REPORT_EVENT, "lse_bad", "1.0", "e", "forge.job.log", JOB, JOB, "1", WRK, "lease_id"},
        {WM_REPORT_EVENT, LEASE, "0.3", "e", "forge.job.log", JOB, JOB, "1", WRK,
         "event.specversion"},
        {WM_REPORT_EVENT, LEASE, "1.0", "", "forge.job.log", JOB, JOB, "1", WRK, "event.id"},
        /* services' event types are not the worker's to send */
        {WM_REPORT_EVENT, LEASE, "1.0", "e", "forge.job.assigned", JOB, JOB, "1", WRK,
         "event.type"},
        {WM_REPORT_EVENT, LEASE, "1.0", "e", "forge.job.retrying", JOB, JOB, "1", WRK,
         "event.type"},
        {WM_REPORT_EVENT, LEASE, "1.0", "e", "forge.usage.recorded", "usr_1", JOB, "1", WRK,
         "event.type"},
        {WM_REPORT_EVENT, LEASE, "1.0", "e", "forge.job.log", "job_other", JOB, "1", WRK,
         "event.subject"},
        {WM_REPORT_EVENT, LEASE, "1.0", "e", "forge.job.log", JOB, "job_x", "1", WRK,
         "event.data.job_id"},
        {WM_REPORT_EVENT, LEASE, "1.0", "e", "forge.job.log", JOB, JOB, "0", WRK,
         "event.data.attempt"},
        {WM_REPORT_EVENT, LEASE, "1.0", "e", "forge.job.log", JOB, JOB, "\"1\"", WRK,
         "event.data.attempt"},
        {WM_REPORT_USAGE, LEASE, "1.0", "e", "forge.job.log", JOB, JOB, "1", WRK, "event.type"},
        /* usage on behalf of another worker */
        {WM_REPORT_USAGE, LEASE, "1.0", "e", "forge.usage.recorded", "usr_1", JOB, "1",
         "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ", "event.data.worker_id"},
        {WM_REPORT_USAGE, LEASE, "1.0", "e", "forge.usage.recorded", "usr_2", JOB, "1", WRK,
         "event.subject"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        EV(bad[i].lease, bad[i].spec, bad[i].id, bad[i].type, bad[i].subject, bad[i].job,
           bad[i].attempt, bad[i].wid);
        if (report(text, bad[i].kind, &rep, param, sizeof(param)) != -1 ||
            strcmp(param, bad[i].param) != 0)
            fail_msg("case %zu: expected a refusal naming %s, got \"%s\"", i, bad[i].param, param);
    }
    assert_int_equal(report("{\"worker_id\":\"" WRK "\",\"lease_id\":\"" LEASE "\"}",
                            WM_REPORT_EVENT, &rep, param, sizeof(param)),
                     -1);
    assert_string_equal(param, "event");
    assert_int_equal(report("{\"lease_id\":\"" LEASE "\",\"event\":[]}", WM_REPORT_EVENT, &rep,
                            param, sizeof(param)),
                     -1);
    assert_string_equal(param, "event");
#undef EV
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(NULL, NULL, test_register_ok, test_register_refused,
                       test_register_label_limits, test_types_join_parse, test_job_matches,
                       test_dispatch_ok, test_dispatch_malformed, test_bearer, test_worker_status,
                       test_reap_hold, test_report);
}
