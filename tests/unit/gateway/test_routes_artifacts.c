/*
 * routes_artifacts.c, the pure parts: the Content-Type of an artifact download, and which
 * file:// URIs of the registry may be served from the local store (never a path that
 * climbs out of it).
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

static void path_is(const char *uri, const char *root, const char *want)
{
    char *got = gw_artifact_path(uri, root);

    if (!want) {
        if (got)
            fail_msg("%s under %s: served as %s", uri, root ? root : "(any)", got);
        return;
    }
    if (!got)
        fail_msg("%s under %s: refused", uri, root ? root : "(any)");
    assert_string_equal(got, want);
    free(got);
}

static void test_paths(void **state)
{
    path_is("file:///srv/art/job_1/a.jsonl", "/srv/art", "/srv/art/job_1/a.jsonl");
    path_is("file:///srv/art/job_1/a.jsonl", "/srv/art/", "/srv/art/job_1/a.jsonl");
    path_is("file:///srv/art/job_1/a.jsonl", "", "/srv/art/job_1/a.jsonl");
    path_is("file:///srv/art/job_1/a.jsonl", NULL, "/srv/art/job_1/a.jsonl");
    /* outside the store, or only looking like it */
    path_is("file:///etc/passwd", "/srv/art", NULL);
    path_is("file:///srv/artifacts/x", "/srv/art", NULL);
    path_is("file:///srv/art", "/srv/art", NULL);
    path_is("file:///srv/art/", "/srv/art", NULL);
    /* climbing, doubled or dotted segments, encodings: never, root or not */
    path_is("file:///srv/art/../etc/passwd", "/srv/art", NULL);
    path_is("file:///srv/art/job/..", "", NULL);
    path_is("file:///srv/art/./x", "", NULL);
    path_is("file:///srv/art/x/.", "", NULL);
    path_is("file:///srv//art/x", "", NULL);
    path_is("file:///srv/art/%2e%2e/x", "", NULL);
    path_is("file:///srv/art/x?y", "", NULL);
    /* not a local absolute path */
    path_is("file://host/srv/art/x", "", NULL);
    path_is("file:///", "", NULL);
    path_is("s3://bucket/x", "", NULL);
    path_is("/srv/art/x", "", NULL);
    path_is(NULL, "", NULL);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_content_type, test_paths);
}
