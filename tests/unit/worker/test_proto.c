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
                       test_malformed_and_empty);
}
