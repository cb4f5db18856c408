/*
 * files.c, the Files API's pure parts: an upload's name as shown (paths, '..', control
 * bytes, CRLF, bad UTF-8 and over-long names refused or cleaned) and as it goes into an
 * object key, the purposes, and the public file object made from a registry record.
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

static void name_is(const char *raw, const char *want)
{
    char out[GW_FILENAME_MAX + 1];
    int rc = gw_files_filename(raw, out);

    if (want == NULL) {
        if (rc == 0)
            fail_msg("%s: accepted as %s", raw, out);
        return;
    }
    if (rc != 0)
        fail_msg("%s: refused", raw);
    assert_string_equal(out, want);
}

static void test_filenames(void **state)
{
    char long_name[300];

    name_is("data.parquet", "data.parquet");
    name_is("/etc/passwd", "passwd");
    name_is("../../secret.txt", "secret.txt");
    name_is("C:\\Users\\me\\train.jsonl", "train.jsonl");
    name_is("  spaced name.csv  ", "spaced name.csv");
    name_is("a\r\nContent-Type: x.txt", "aContent-Type: x.txt"); /* CRLF gone */
    name_is("tab\there", "tabhere");
    name_is("donn\xc3\xa9"
            "es.csv",
            "donn\xc3\xa9"
            "es.csv");
    name_is("..", NULL);
    name_is(".", NULL);
    name_is("dir/..", NULL);
    name_is("dir/", NULL);
    name_is("", NULL);
    name_is("\r\n", NULL);
    name_is("bad\xff.bin", NULL);
    name_is("half\xc3", NULL);
    name_is(NULL, NULL);
    memset(long_name, 'n', sizeof(long_name));
    long_name[GW_FILENAME_MAX] = '\0';
    name_is(long_name, long_name);
    long_name[GW_FILENAME_MAX] = 'n';
    long_name[GW_FILENAME_MAX + 1] = '\0';
    name_is(long_name, NULL);
}

static void test_key_names(void **state)
{
    char out[GW_FILENAME_MAX + 1];

    gw_files_key_name("data.parquet", out);
    assert_string_equal(out, "data.parquet");
    gw_files_key_name("donn\xc3\xa9"
                      "es v2.csv",
                      out);
    assert_string_equal(out, "donn__es_v2.csv");
    gw_files_key_name("a\\b%c", out);
    assert_string_equal(out, "a_b_c");
    gw_files_key_name("", out);
    assert_string_equal(out, "file");
    /* what comes out is a valid key segment */
    gw_files_key_name("...", out);
    assert_string_equal(out, "...");
}

static void test_purposes(void **state)
{
    assert_true(gw_files_purpose_valid("dataset"));
    assert_true(gw_files_purpose_valid("model"));
    assert_true(gw_files_purpose_valid("other"));
    assert_false(gw_files_purpose_valid("fine-tune"));
    assert_false(gw_files_purpose_valid("Dataset"));
    assert_false(gw_files_purpose_valid(""));
    assert_false(gw_files_purpose_valid(NULL));
}

static void test_file_object(void **state)
{
    cJSON *rec = cJSON_Parse(
        "{\"artifact_id\":\"art_01J0000000000000000000000A\",\"name\":\"d.parquet\","
        "\"purpose\":\"dataset\",\"s3_uri\":\"s3://b/d.parquet\",\"bytes\":12,"
        "\"sha256\":\"ab\",\"created_at\":\"2026-01-01T00:00:00Z\",\"object_key\":\"tenants/x\","
        "\"source\":\"upload\",\"job_id\":null}");
    cJSON *obj = gw_file_object(rec);
    char *text = cJSON_PrintUnformatted(obj);

    assert_string_equal(text, "{\"id\":\"art_01J0000000000000000000000A\",\"object\":\"file\","
                              "\"uri\":\"artifact://art_01J0000000000000000000000A\","
                              "\"s3_uri\":\"s3://b/d.parquet\",\"filename\":\"d.parquet\","
                              "\"purpose\":\"dataset\",\"bytes\":12,\"sha256\":\"ab\","
                              "\"created_at\":\"2026-01-01T00:00:00Z\"}");
    free(text);
    cJSON_Delete(obj);
    cJSON_Delete(rec);
    /* a filename field wins over name; missing fields are null; no id: none */
    rec = cJSON_Parse(
        "{\"id\":\"art_01J0000000000000000000000A\",\"filename\":\"f\",\"name\":\"n\"}");
    obj = gw_file_object(rec);
    assert_string_equal(nf_json_str(obj, "filename"), "f");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(obj, "sha256")));
    cJSON_Delete(obj);
    cJSON_Delete(rec);
    rec = cJSON_Parse("{\"id\":\"job_x\"}");
    assert_null(gw_file_object(rec));
    cJSON_Delete(rec);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_filenames, test_key_names, test_purposes, test_file_object);
}
