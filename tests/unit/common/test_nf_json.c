/* Unit tests for nf_json: typed getters, their error reports and the parse helper. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "nf_json.h"
#include "nf_test.h"

#define DOC                                                                                        \
    "{\"s\":\"text\",\"i\":42,\"neg\":-7,\"f\":1.5,\"whole\":3.0,\"exp\":1e3,"                     \
    "\"huge\":1e300,\"big\":12345678901234567890,\"b\":true,\"n\":null,"                           \
    "\"o\":{\"k\":1},\"a\":[1,2],\"str_num\":\"5\"}"

static int setup(void **state)
{
    cJSON *doc = nf_json_parse(DOC, strlen(DOC));

    assert_non_null(doc);
    *state = doc;
    return 0;
}

static int teardown(void **state)
{
    cJSON_Delete(*state);
    return 0;
}

static void test_str(void **state)
{
    const cJSON *doc = *state;
    struct nf_json_err err = {0};
    const char *s = "untouched";

    assert_int_equal(nf_json_get_str(doc, "s", true, &s, &err), 0);
    assert_string_equal(s, "text");

    s = "untouched";
    assert_int_equal(nf_json_get_str(doc, "missing", false, &s, &err), NF_JSON_ABSENT);
    assert_int_equal(nf_json_get_str(doc, "n", false, &s, &err), NF_JSON_ABSENT);
    assert_string_equal(s, "untouched");

    assert_int_equal(nf_json_get_str(doc, "missing", true, &s, &err), -1);
    assert_string_equal(err.param, "missing");
    assert_string_equal(err.msg, "missing is required");
    /* JSON null counts as absent, so a required null is "required", not a type error. */
    assert_int_equal(nf_json_get_str(doc, "n", true, &s, &err), -1);
    assert_string_equal(err.msg, "n is required");

    assert_int_equal(nf_json_get_str(doc, "i", true, &s, &err), -1);
    assert_string_equal(err.param, "i");
    assert_string_equal(err.msg, "i must be a string");
    assert_string_equal(s, "untouched");
}

static void test_int(void **state)
{
    const cJSON *doc = *state;
    struct nf_json_err err = {0};
    long long v = -99;

    assert_int_equal(nf_json_get_int(doc, "i", true, 1, 100, &v, &err), 0);
    assert_int_equal(v, 42);
    assert_int_equal(nf_json_get_int(doc, "neg", true, LLONG_MIN, LLONG_MAX, &v, &err), 0);
    assert_int_equal(v, -7);
    /* 3.0 and 1e3 are whole numbers: JSON has no separate integer type. */
    assert_int_equal(nf_json_get_int(doc, "whole", true, 0, 10, &v, &err), 0);
    assert_int_equal(v, 3);
    assert_int_equal(nf_json_get_int(doc, "exp", true, 0, 1000, &v, &err), 0);
    assert_int_equal(v, 1000);
    /* Bounds are inclusive. */
    assert_int_equal(nf_json_get_int(doc, "i", true, 42, 42, &v, &err), 0);

    v = -99;
    assert_int_equal(nf_json_get_int(doc, "i", true, 1, 41, &v, &err), -1);
    assert_string_equal(err.param, "i");
    assert_string_equal(err.msg, "i must be an integer between 1 and 41");
    assert_int_equal(nf_json_get_int(doc, "i", true, 43, 100, &v, &err), -1);
    assert_int_equal(nf_json_get_int(doc, "f", true, 0, 10, &v, &err), -1);
    assert_string_equal(err.msg, "f must be an integer between 0 and 10");
    assert_int_equal(nf_json_get_int(doc, "huge", true, LLONG_MIN, LLONG_MAX, &v, &err), -1);
    assert_string_equal(err.msg, "huge must be an integer");
    assert_int_equal(nf_json_get_int(doc, "big", true, LLONG_MIN, LLONG_MAX, &v, &err), -1);
    assert_int_equal(nf_json_get_int(doc, "str_num", true, 0, 10, &v, &err), -1);
    assert_int_equal(nf_json_get_int(doc, "b", true, 0, 10, &v, &err), -1);
    assert_int_equal(nf_json_get_int(doc, "missing", true, 0, 10, &v, &err), -1);
    assert_string_equal(err.msg, "missing is required");
    assert_int_equal(nf_json_get_int(doc, "n", false, 0, 10, &v, &err), NF_JSON_ABSENT);
    assert_int_equal(v, -99);
}

static void test_int_extremes(void **state)
{
    struct nf_json_err err = {0};
    const char *txt = "{\"inf\":1e400,\"edge\":9223372036854775807,\"lo\":-9223372036854775808,"
                      "\"p53\":9007199254740992}";
    cJSON *doc = nf_json_parse(txt, strlen(txt));
    long long v = 0;

    assert_non_null(doc);
    /* 1e400 overflows a double (infinity). */
    assert_int_equal(nf_json_get_int(doc, "inf", true, LLONG_MIN, LLONG_MAX, &v, &err), -1);
    /* 2^63-1 rounds to 2^63 as a double, which does not fit a long long. */
    assert_int_equal(nf_json_get_int(doc, "edge", true, LLONG_MIN, LLONG_MAX, &v, &err), -1);
    /* -2^63 is exact and fits. */
    assert_int_equal(nf_json_get_int(doc, "lo", true, LLONG_MIN, LLONG_MAX, &v, &err), 0);
    assert_true(v == LLONG_MIN);
    assert_int_equal(nf_json_get_int(doc, "p53", true, 0, LLONG_MAX, &v, &err), 0);
    assert_int_equal(v, 9007199254740992LL);
    cJSON_Delete(doc);
}

static void test_num(void **state)
{
    const cJSON *doc = *state;
    struct nf_json_err err = {0};
    double d = -1;

    assert_int_equal(nf_json_get_num(doc, "f", true, 0, 2, &d, &err), 0);
    assert_true(d == 1.5);
    assert_int_equal(nf_json_get_num(doc, "i", true, 0, 100, &d, &err), 0);
    assert_true(d == 42);
    d = -1;
    assert_int_equal(nf_json_get_num(doc, "f", true, 0, 1, &d, &err), -1);
    assert_string_equal(err.param, "f");
    assert_string_equal(err.msg, "f must be a number between 0 and 1");
    assert_int_equal(nf_json_get_num(doc, "huge", true, 0, 1e6, &d, &err), -1);
    assert_int_equal(nf_json_get_num(doc, "s", true, 0, 1, &d, &err), -1);
    assert_int_equal(nf_json_get_num(doc, "n", false, 0, 1, &d, &err), NF_JSON_ABSENT);
    assert_int_equal(nf_json_get_num(doc, "n", true, 0, 1, &d, &err), -1);
    assert_true(d == -1);
}

static void test_bool_obj_arr(void **state)
{
    const cJSON *doc = *state, *o = NULL, *a = NULL;
    struct nf_json_err err = {0};
    bool b = false;

    assert_int_equal(nf_json_get_bool(doc, "b", true, &b, &err), 0);
    assert_true(b);
    assert_int_equal(nf_json_get_bool(doc, "i", true, &b, &err), -1);
    assert_string_equal(err.msg, "i must be a boolean");
    assert_int_equal(nf_json_get_bool(doc, "missing", false, &b, &err), NF_JSON_ABSENT);

    assert_int_equal(nf_json_get_obj(doc, "o", true, &o, &err), 0);
    assert_int_equal(nf_json_int(o, "k", 0), 1);
    assert_int_equal(nf_json_get_obj(doc, "a", true, &o, &err), -1);
    assert_string_equal(err.msg, "a must be an object");
    assert_int_equal(nf_json_get_obj(doc, "n", false, &o, &err), NF_JSON_ABSENT);

    assert_int_equal(nf_json_get_arr(doc, "a", true, &a, &err), 0);
    assert_int_equal(cJSON_GetArraySize(a), 2);
    assert_int_equal(nf_json_get_arr(doc, "o", true, &a, &err), -1);
    assert_string_equal(err.msg, "o must be an array");
    assert_int_equal(nf_json_get_arr(doc, "missing", true, &a, &err), -1);
}

static void test_non_object_input(void **state)
{
    struct nf_json_err err = {0};
    const char *s = NULL;
    cJSON *arr = nf_json_parse("[1]", 3);

    assert_int_equal(nf_json_get_str(NULL, "k", false, &s, &err), NF_JSON_ABSENT);
    assert_int_equal(nf_json_get_str(arr, "k", true, &s, &err), -1);
    assert_null(nf_json_str(arr, "k"));
    assert_int_equal(nf_json_int(NULL, "k", 7), 7);
    cJSON_Delete(arr);
}

static void test_fail(void **state)
{
    struct nf_json_err err = {0};
    char longkey[300];

    assert_int_equal(nf_json_fail(&err, "params.epochs", "epochs must be %d..%d", 1, 100), -1);
    assert_string_equal(err.param, "params.epochs");
    assert_string_equal(err.msg, "epochs must be 1..100");
    /* An overlong param is truncated, not overflowed. */
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(nf_json_fail(&err, longkey, "x"), -1);
    assert_int_equal(strlen(err.param), sizeof(err.param) - 1);
    assert_int_equal(nf_json_fail(NULL, "p", "no err struct"), -1);
}

static void test_parse(void **state)
{
    const char buf[] = "{\"a\":1}GARBAGE";
    cJSON *j;

    /* Exactly len bytes: the trailing bytes beyond len are ignored. */
    j = nf_json_parse(buf, 7);
    assert_non_null(j);
    cJSON_Delete(j);
    /* But within len only whitespace may follow the value. */
    assert_null(nf_json_parse(buf, sizeof(buf) - 1));
    j = nf_json_parse("  [1, 2] \r\n", 11);
    assert_non_null(j);
    cJSON_Delete(j);
    assert_null(nf_json_parse("{\"a\":1", 6)); /* truncated */
    assert_null(nf_json_parse("\"str\"", 5));  /* not an object/array */
    assert_null(nf_json_parse("42", 2));
    assert_null(nf_json_parse("{}\0{}", 5)); /* embedded NUL */
    assert_null(nf_json_parse("", 0));
    assert_null(nf_json_parse(NULL, 0));
    assert_null(nf_json_parse("{\"a\":}", 6));
}

static void test_build_and_print(void **state)
{
    cJSON *o = nf_json_obj();
    char *s;

    nf_json_add_str(o, "name", "x\"y");
    nf_json_add_str(o, "none", NULL);
    nf_json_add_int(o, "n", 1234567890123LL);
    s = nf_json_print(o);
    assert_string_equal(s, "{\"name\":\"x\\\"y\",\"none\":null,\"n\":1234567890123}");
    free(s);
    assert_string_equal(nf_json_str(o, "name"), "x\"y");
    assert_null(nf_json_str(o, "none"));
    assert_null(nf_json_str(o, "n"));
    assert_int_equal(nf_json_int(o, "n", -1), 1234567890123LL);
    assert_int_equal(nf_json_int(o, "name", -1), -1);
    assert_int_equal(nf_json_int(o, "missing", -1), -1);
    cJSON_Delete(o);
}

int main(void)
{
    int rc;

    rc = NF_TEST_RUN(setup, teardown, test_str, test_int, test_num, test_bool_obj_arr);
    rc |= NF_TEST_RUN(NULL, NULL, test_int_extremes, test_non_object_input, test_fail, test_parse,
                      test_build_and_print);
    return rc;
}
