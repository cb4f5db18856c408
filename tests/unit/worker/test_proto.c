/*
 * proto.c: the handler stdout protocol. Every kind, and the lines that must be ignored
 * (and counted) rather than trusted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "nf_log.h"
#include "nf_test.h"
#include "wk.h"

static enum wk_line_kind parse(const char *text, struct wk_line *l)
{
    return wk_proto_parse(text, strlen(text), l);
}

/* Each of the n lines must parse as malformed (and leave no document behind when
 * no_doc). */
static void expect_malformed(const char *const *bad, size_t n, bool no_doc)
{
    struct wk_line l;

    for (size_t i = 0; i < n; i++) {
        if (parse(bad[i], &l) != WK_LINE_MALFORMED)
            fail_msg("accepted: %s", bad[i]);
        if (no_doc)
            assert_null(l.doc);
    }
}

static void test_progress(void **state)
{
    struct wk_line l;
    assert_int_equal(parse("{\"progress\": 0.4}", &l), WK_LINE_PROGRESS);
    assert_true(l.progress > 0.399 && l.progress < 0.401);
    wk_line_clear(&l);
    assert_int_equal(parse("{\"progress\":0}\r", &l), WK_LINE_PROGRESS);
    wk_line_clear(&l);
    assert_int_equal(parse("  {\"progress\":1}  ", &l), WK_LINE_PROGRESS);
    assert_true(l.progress == 1.0);
    wk_line_clear(&l);
    assert_int_equal(parse("{\"progress\":1.01}", &l), WK_LINE_MALFORMED);
    assert_null(l.doc);
    assert_int_equal(parse("{\"progress\":-0.1}", &l), WK_LINE_MALFORMED);
    assert_int_equal(parse("{\"progress\":\"0.5\"}", &l), WK_LINE_MALFORMED);
    assert_int_equal(parse("{\"progress\":null}", &l), WK_LINE_MALFORMED);
}

static void test_log_and_result(void **state)
{
    struct wk_line l;
    assert_int_equal(parse("{\"log\":\"epoch 1 loss=2.3\"}", &l), WK_LINE_LOG);
    assert_string_equal(l.message, "epoch 1 loss=2.3");
    assert_int_equal(l.kind, WK_LINE_LOG);
    wk_line_clear(&l);
    assert_int_equal(parse("{\"log\":5}", &l), WK_LINE_MALFORMED);

    assert_int_equal(parse("{\"result\":{\"num_samples\":10,\"nested\":{\"a\":[1]}}}", &l),
                     WK_LINE_RESULT);
    assert_int_equal(nf_json_int(l.result, "num_samples", 0), 10);
    /* the result can be detached and outlive the line */
    cJSON *kept = cJSON_DetachItemViaPointer(l.doc, l.result);
    wk_line_clear(&l);
    assert_int_equal(nf_json_int(kept, "num_samples", 0), 10);
    cJSON_Delete(kept);
    assert_int_equal(parse("{\"result\":[1,2]}", &l), WK_LINE_MALFORMED);
    assert_int_equal(parse("{\"result\":\"done\"}", &l), WK_LINE_MALFORMED);
}

static void test_usage(void **state)
{
    struct wk_line l;
    assert_int_equal(parse("{\"usage\":{\"input_tokens\":12,\"output_tokens\":34}}", &l),
                     WK_LINE_USAGE);
    assert_int_equal(l.input_tokens, 12);
    assert_int_equal(l.output_tokens, 34);
    wk_line_clear(&l);
    assert_int_equal(parse("{\"usage\":{\"output_tokens\":7,\"cache\":1}}", &l), WK_LINE_USAGE);
    assert_int_equal(l.input_tokens, 0);
    assert_int_equal(l.output_tokens, 7);
    wk_line_clear(&l);
    static const char *const bad[] = {
        "{\"usage\":{}}",
        "{\"usage\":{\"input_tokens\":-1}}",
        "{\"usage\":{\"input_tokens\":1.5}}",
        "{\"usage\":{\"input_tokens\":\"3\"}}",
        "{\"usage\":{\"output_tokens\":1e13}}",
        "{\"usage\":5}",
    };
    expect_malformed(bad, sizeof(bad) / sizeof(bad[0]), false);
}

static void test_artifact(void **state)
{
    struct wk_line l;
    assert_int_equal(parse("{\"artifact\":{\"path\":\"samples.jsonl\",\"kind\":\"dataset\"}}", &l),
                     WK_LINE_ARTIFACT);
    assert_string_equal(l.path, "samples.jsonl");
    assert_string_equal(l.art_kind, "dataset");
    wk_line_clear(&l);
    assert_int_equal(parse("{\"artifact\":{\"path\":\"out/m.bin\"}}", &l), WK_LINE_ARTIFACT);
    assert_string_equal(l.art_kind, "file");
    wk_line_clear(&l);
    static const char *const bad[] = {
        "{\"artifact\":{\"kind\":\"dataset\"}}",
        "{\"artifact\":{\"path\":\"\"}}",
        "{\"artifact\":{\"path\":3}}",
        "{\"artifact\":{\"path\":\"a\",\"kind\":\"Data Set\"}}",
        "{\"artifact\":{\"path\":\"a\",\"kind\":7}}",
        "{\"artifact\":\"a.txt\"}",
    };
    expect_malformed(bad, sizeof(bad) / sizeof(bad[0]), false);
}

/* A metric line is hostile input: only an integer step, finite numbers and well-formed
 * names pass, and a bounded number of them. */
static void test_metric(void **state)
{
    struct wk_line l;
    assert_int_equal(parse("{\"metric\":{\"step\":3,\"epoch\":1,\"train_loss\":2.5,"
                           "\"learning_rate\":1e-4}}",
                           &l),
                     WK_LINE_METRIC);
    assert_int_equal(nf_json_int(l.metric, "step", -1), 3);
    assert_true(cJSON_GetObjectItemCaseSensitive(l.metric, "train_loss")->valuedouble == 2.5);
    wk_line_clear(&l);
    /* evaluate's per-task scores: a slash in the name, step 0, no epoch */
    assert_int_equal(parse("{\"metric\":{\"step\":0,\"arc_easy/acc\":0.25}}", &l), WK_LINE_METRIC);
    wk_line_clear(&l);
    assert_int_equal(parse("{\"metric\":{\"step\":1e12,\"valid_loss\":-0.5}}", &l), WK_LINE_METRIC);
    wk_line_clear(&l);

    /* the most values a line may carry, and one more */
    char line[4096];
    size_t n = (size_t)snprintf(line, sizeof(line), "{\"metric\":{\"step\":1");
    for (int i = 0; i < WK_METRIC_VALUES_MAX; i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"m%d\":%d", i, i);
    snprintf(line + n, sizeof(line) - n, "}}");
    assert_int_equal(parse(line, &l), WK_LINE_METRIC);
    wk_line_clear(&l);
    snprintf(line + n, sizeof(line) - n, ",\"one_more\":1}}");
    assert_int_equal(parse(line, &l), WK_LINE_MALFORMED);
    assert_null(l.doc);

    /* a name of the longest length, and one longer */
    char name[WK_METRIC_NAME_MAX + 2];
    memset(name, 'a', sizeof(name) - 1);
    name[WK_METRIC_NAME_MAX] = '\0';
    snprintf(line, sizeof(line), "{\"metric\":{\"step\":1,\"%s\":1}}", name);
    assert_int_equal(parse(line, &l), WK_LINE_METRIC);
    wk_line_clear(&l);
    name[WK_METRIC_NAME_MAX] = 'a';
    name[WK_METRIC_NAME_MAX + 1] = '\0';
    snprintf(line, sizeof(line), "{\"metric\":{\"step\":1,\"%s\":1}}", name);
    assert_int_equal(parse(line, &l), WK_LINE_MALFORMED);

    static const char *const bad[] = {
        "{\"metric\":{\"train_loss\":1}}",                   /* no step */
        "{\"metric\":{\"step\":1}}",                         /* no value */
        "{\"metric\":{\"step\":-1,\"loss\":1}}",             /* negative step */
        "{\"metric\":{\"step\":1.5,\"loss\":1}}",            /* fractional step */
        "{\"metric\":{\"step\":1e13,\"loss\":1}}",           /* step too big */
        "{\"metric\":{\"step\":\"1\",\"loss\":1}}",          /* step a string */
        "{\"metric\":{\"step\":1,\"loss\":\"1\"}}",          /* value a string */
        "{\"metric\":{\"step\":1,\"loss\":null}}",           /* value null */
        "{\"metric\":{\"step\":1,\"loss\":true}}",           /* value a boolean */
        "{\"metric\":{\"step\":1,\"loss\":[1]}}",            /* value an array */
        "{\"metric\":{\"step\":1,\"loss\":{\"a\":1}}}",      /* value an object */
        "{\"metric\":{\"step\":1,\"loss\":1e999}}",          /* infinite */
        "{\"metric\":{\"step\":1,\"loss\":-1e999}}",         /* -infinite */
        "{\"metric\":{\"step\":1,\"loss\":NaN}}",            /* not JSON */
        "{\"metric\":{\"step\":1,\"epoch\":-1,\"loss\":1}}", /* negative epoch */
        "{\"metric\":{\"step\":1,\"\":1}}",                  /* empty name */
        "{\"metric\":{\"step\":1,\"bad name\":1}}",          /* space */
        "{\"metric\":{\"step\":1,\"_x\":1}}",                /* leading punctuation */
        "{\"metric\":{\"step\":1,\"a\\nb\":1}}",             /* control byte */
        "{\"metric\":{\"step\":1,\"lo\\\"ss\":1}}",          /* quote */
        "{\"metric\":{\"step\":1,\"loss\":1,\"loss\":2}}",   /* a name twice */
        "{\"metric\":{\"step\":1,\"step\":2,\"loss\":1}}",   /* step twice */
        "{\"metric\":[1,2]}",                                /* not an object */
        "{\"metric\":3}",
        "{\"metric\":{\"step\":1,\"loss\":1},\"log\":\"x\"}", /* two kinds at once */
    };
    expect_malformed(bad, sizeof(bad) / sizeof(bad[0]), true);
}

static void test_malformed_and_empty(void **state)
{
    struct wk_line l;
    assert_int_equal(parse("", &l), WK_LINE_EMPTY);
    assert_int_equal(parse("   \r", &l), WK_LINE_EMPTY);
    static const char *const bad[] = {
        "hello world",                         /* plain text */
        "{\"progress\":0.5",                   /* truncated */
        "[{\"progress\":0.5}]",                /* not an object */
        "{}",                                  /* no known key */
        "{\"status\":\"ok\"}",                 /* unknown key only */
        "{\"progress\":0.5,\"log\":\"both\"}", /* two kinds at once */
        "\"progress\"",
        "42",
    };
    expect_malformed(bad, sizeof(bad) / sizeof(bad[0]), true);
    /* unknown keys beside a known one are ignored */
    assert_int_equal(parse("{\"progress\":0.5,\"ts\":123}", &l), WK_LINE_PROGRESS);
    wk_line_clear(&l);
    /* an embedded NUL never reaches the JSON parser */
    const char nul[] = "{\"log\":\"a\0b\"}";
    assert_int_equal(wk_proto_parse(nul, sizeof(nul) - 1, &l), WK_LINE_MALFORMED);
    /* only len bytes are read: the line ends before the closing brace */
    const char *cut = "{\"progress\":0.5}";
    assert_int_equal(wk_proto_parse(cut, strlen(cut) - 1, &l), WK_LINE_MALFORMED);
    wk_line_clear(NULL);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(NULL, NULL, test_progress, test_log_and_result, test_usage, test_artifact,
                       test_metric, test_malformed_and_empty);
}
