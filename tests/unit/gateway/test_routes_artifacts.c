/*
 * routes_artifacts.c, the pure parts: the Content-Type and Content-Disposition of an
 * artifact download, and the Range header of one (one range: 206; unsatisfiable: 416; anything
 * else: the whole).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_test.h"

static void test_content_type(void **state)
{
    assert_string_equal(gw_artifact_content_type("samples.jsonl"), "application/x-ndjson");
    assert_string_equal(gw_artifact_content_type("SAMPLES.JSONL"), "application/x-ndjson");
    assert_string_equal(gw_artifact_content_type("model.json"), "application/json");
    assert_string_equal(gw_artifact_content_type("report.txt"), "text/plain; charset=utf-8");
    assert_string_equal(gw_artifact_content_type("data.csv"), "text/csv; charset=utf-8");
    assert_string_equal(gw_artifact_content_type("README.md"), "text/markdown; charset=utf-8");
    /* anything else, including what a browser would render, is a download */
    assert_string_equal(gw_artifact_content_type("page.html"), "application/octet-stream");
    assert_string_equal(gw_artifact_content_type("weights.bin"), "application/octet-stream");
    assert_string_equal(gw_artifact_content_type(".json"), "application/octet-stream");
    assert_string_equal(gw_artifact_content_type("json"), "application/octet-stream");
    assert_string_equal(gw_artifact_content_type(""), "application/octet-stream");
    assert_string_equal(gw_artifact_content_type(NULL), "application/octet-stream");
}

static void test_disposition(void **state)
{
    char out[4 * GW_FILENAME_MAX + 64];

    gw_artifact_disposition("samples.jsonl", out, sizeof(out));
    assert_string_equal(out, "attachment; filename=\"samples.jsonl\"");
    gw_artifact_disposition("a \"b\"\\c\r\n.txt", out, sizeof(out)); /* no header injection */
    assert_string_equal(out, "attachment; filename=\"a bc.txt\"");
    gw_artifact_disposition("donn\xc3\xa9"
                            "es \xc3\xa9t\xc3\xa9.csv",
                            out, sizeof(out));
    assert_string_equal(out, "attachment; filename=\"donn__es __t__.csv\"; "
                             "filename*=UTF-8''donn%C3%A9es%20%C3%A9t%C3%A9.csv");
    gw_artifact_disposition("", out, sizeof(out));
    assert_string_equal(out, "attachment; filename=\"artifact\"");
}

/* Parses h for an object of size bytes; the expected kind and, for a part, its bounds. */
static void range_is(const char *h, long long size, enum gw_range want, long long first,
                     long long last)
{
    long long f = -7, l = -7;
    enum gw_range got = gw_range_parse(h, size, &f, &l);

    if (got != want)
        fail_msg("%s of %lld: got kind %d, want %d", h ? h : "(none)", size, got, want);
    if (want == GW_RANGE_PART && (f != first || l != last))
        fail_msg("%s of %lld: got %lld-%lld, want %lld-%lld", h, size, f, l, first, last);
}

static void test_ranges(void **state)
{
    range_is("bytes=0-99", 1000, GW_RANGE_PART, 0, 99);
    range_is("bytes=100-", 1000, GW_RANGE_PART, 100, 999);
    range_is("bytes=-100", 1000, GW_RANGE_PART, 900, 999);
    range_is("bytes=-5000", 1000, GW_RANGE_PART, 0, 999);      /* more than there is: all */
    range_is("bytes=990-5000", 1000, GW_RANGE_PART, 990, 999); /* clamped */
    range_is("BYTES= 5-5 ", 1000, GW_RANGE_PART, 5, 5);
    /* unsatisfiable: 416 */
    range_is("bytes=1000-", 1000, GW_RANGE_UNSATISFIABLE, 0, 0);
    range_is("bytes=1000-2000", 1000, GW_RANGE_UNSATISFIABLE, 0, 0);
    range_is("bytes=-0", 1000, GW_RANGE_UNSATISFIABLE, 0, 0);
    range_is("bytes=0-", 0, GW_RANGE_UNSATISFIABLE, 0, 0);
    range_is("bytes=-1", 0, GW_RANGE_UNSATISFIABLE, 0, 0);
    /* ignored (the whole object): absent, several ranges, other units, malformed */
    range_is(NULL, 1000, GW_RANGE_NONE, 0, 0);
    range_is("bytes=0-1,5-6", 1000, GW_RANGE_NONE, 0, 0);
    range_is("items=0-1", 1000, GW_RANGE_NONE, 0, 0);
    range_is("bytes=5-1", 1000, GW_RANGE_NONE, 0, 0);
    range_is("bytes=a-b", 1000, GW_RANGE_NONE, 0, 0);
    range_is("bytes=-", 1000, GW_RANGE_NONE, 0, 0);
    range_is("bytes=", 1000, GW_RANGE_NONE, 0, 0);
    range_is("bytes=1-2-3", 1000, GW_RANGE_NONE, 0, 0);
    range_is("bytes=99999999999999999999-", 1000, GW_RANGE_NONE, 0, 0);
    range_is("bytes=0-99", -1, GW_RANGE_NONE, 0, 0); /* size unknown */
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_content_type, test_disposition, test_ranges);
}
