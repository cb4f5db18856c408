/* Unit tests for nf_log: every line must be one valid JSON object with the fixed fields. */
#define _GNU_SOURCE /* strptime, timegm */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nf_log.h"
#include "nf_test.h"

/* Each test captures the log output in memory (its state). */
static int setup(void **state)
{
    struct nf_test_log *c = calloc(1, sizeof(*c));

    assert_non_null(c);
    nf_log_init("testsvc", NF_LOG_DEBUG);
    nf_test_log_begin(c);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    nf_test_log_end(*state);
    free(*state);
    return 0;
}

/* Number of '\n'-terminated lines captured so far. */
static int line_count(struct nf_test_log *c)
{
    int n = 0;
    size_t i;

    fflush(c->f);
    for (i = 0; i < c->len; i++)
        if (c->buf[i] == '\n')
            n++;
    return n;
}

/* Parses the single captured line; fails the test unless there is exactly one. */
static cJSON *only_line(struct nf_test_log *c)
{
    cJSON *j;

    assert_int_equal(line_count(c), 1);
    assert_int_equal(c->buf[c->len - 1], '\n');
    j = cJSON_ParseWithLength(c->buf, c->len);
    assert_non_null(j);
    assert_true(cJSON_IsObject(j));
    return j;
}

static const char *field(const cJSON *j, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);

    assert_true(cJSON_IsString(it));
    return it->valuestring;
}

static void test_basic_line(void **state)
{
    struct nf_test_log *c = *state;
    cJSON *j;

    nf_log_info("http_listen", "listening on %d", 8000);
    j = only_line(c);
    assert_string_equal(field(j, "level"), "info");
    assert_string_equal(field(j, "svc"), "testsvc");
    assert_string_equal(field(j, "event"), "http_listen");
    assert_string_equal(field(j, "msg"), "listening on 8000");
    cJSON_Delete(j);
}

static void test_timestamp_utc_ms(void **state)
{
    struct nf_test_log *c = *state;
    const char *ts;
    struct tm tm = {0};
    char *rest;
    time_t now = time(NULL), t;
    cJSON *j;

    nf_log_warn("tick", "tick");
    j = only_line(c);
    ts = field(j, "ts");
    /* 2026-11-28T21:03:52.123Z */
    assert_int_equal(strlen(ts), 24);
    rest = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(rest);
    assert_true(rest[0] == '.' && rest[1] >= '0' && rest[1] <= '9' && rest[2] >= '0' &&
                rest[2] <= '9' && rest[3] >= '0' && rest[3] <= '9');
    assert_string_equal(rest + 4, "Z");
    /* UTC, not local time: within a few seconds of now. */
    t = timegm(&tm);
    assert_true(t >= now - 5 && t <= now + 5);
    cJSON_Delete(j);
}

static void test_escaping(void **state)
{
    struct nf_test_log *c = *state;
    const char *nasty = "quote\" back\\slash\nnew\ttab\r\x01\x1f end";
    cJSON *j;

    nf_log_error("esc", "%s", nasty);
    /* The raw line must not contain a raw newline before its end nor raw control chars. */
    fflush(c->f);
    assert_null(memchr(c->buf, '\x01', c->len));
    assert_ptr_equal(memchr(c->buf, '\n', c->len), c->buf + c->len - 1);
    j = only_line(c);
    assert_string_equal(field(j, "msg"), nasty);
    cJSON_Delete(j);
}

static void test_utf8_kept_and_invalid_replaced(void **state)
{
    struct nf_test_log *c = *state;
    cJSON *j;

    /* Valid multi-byte text passes through; a lone 0xff and a truncated sequence become
     * U+FFFD, so the line stays valid UTF-8 JSON. */
    nf_log_info("utf8", "caf\xc3\xa9 \xe2\x82\xac bad\xff trunc\xe2\x82");
    j = only_line(c);
    assert_string_equal(field(j, "msg"),
                        "caf\xc3\xa9 \xe2\x82\xac bad\xef\xbf\xbd trunc\xef\xbf\xbd\xef\xbf\xbd");
    cJSON_Delete(j);
}

static void test_level_filter(void **state)
{
    struct nf_test_log *c = *state;

    nf_log_init("testsvc", NF_LOG_WARN);
    nf_log_debug("d", "dropped");
    nf_log_info("i", "dropped");
    assert_int_equal(line_count(c), 0);
    nf_log_warn("w", "kept");
    nf_log_error("e", "kept");
    assert_int_equal(line_count(c), 2);
}

static void test_kv_fields_and_null(void **state)
{
    struct nf_test_log *c = *state;
    const cJSON *n;
    cJSON *j;

    nf_log_kv(NF_LOG_INFO, "job_queued", "job queued", "job_id", "job_1", "user\"id", "u\n1",
              "worker_id", (const char *)NULL, (const char *)NULL);
    j = only_line(c);
    assert_string_equal(field(j, "event"), "job_queued");
    assert_string_equal(field(j, "msg"), "job queued");
    assert_string_equal(field(j, "job_id"), "job_1");
    assert_string_equal(field(j, "user\"id"), "u\n1");
    n = cJSON_GetObjectItemCaseSensitive(j, "worker_id");
    assert_non_null(n);
    assert_true(cJSON_IsNull(n));
    cJSON_Delete(j);
}

static void test_kvs_array(void **state)
{
    struct nf_test_log *c = *state;
    const char *kv[] = {"a", "1", "b", NULL};
    cJSON *j;

    nf_log_kvs(NF_LOG_INFO, "config", "effective configuration", kv, 2);
    j = only_line(c);
    assert_string_equal(field(j, "a"), "1");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "b")));
    cJSON_Delete(j);
}

static void test_long_message(void **state)
{
    struct nf_test_log *c = *state;
    size_t n = 5000;
    char *big = malloc(n + 1);
    cJSON *j;

    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    nf_log_info("big", "%s!", big);
    j = only_line(c);
    assert_int_equal(strlen(field(j, "msg")), n + 1);
    assert_int_equal(field(j, "msg")[n], '!');
    cJSON_Delete(j);
    free(big);
}

static void test_level_parse(void **state)
{
    enum nf_log_level lv = NF_LOG_ERROR;

    assert_int_equal(nf_log_level_parse("debug", &lv), 0);
    assert_int_equal(lv, NF_LOG_DEBUG);
    assert_int_equal(nf_log_level_parse("info", &lv), 0);
    assert_int_equal(lv, NF_LOG_INFO);
    assert_int_equal(nf_log_level_parse("warn", &lv), 0);
    assert_int_equal(lv, NF_LOG_WARN);
    assert_int_equal(nf_log_level_parse("ERROR", &lv), 0);
    assert_int_equal(lv, NF_LOG_ERROR);
    lv = NF_LOG_INFO;
    assert_int_equal(nf_log_level_parse("verbose", &lv), -1);
    assert_int_equal(nf_log_level_parse("", &lv), -1);
    assert_int_equal(nf_log_level_parse("info ", &lv), -1);
    assert_int_equal(nf_log_level_parse(NULL, &lv), -1);
    assert_int_equal(lv, NF_LOG_INFO); /* untouched on failure */
}

int main(void)
{
    int rc;

    rc = NF_TEST_RUN(setup, teardown, test_basic_line, test_timestamp_utc_ms, test_escaping,
                     test_utf8_kept_and_invalid_replaced, test_level_filter,
                     test_kv_fields_and_null, test_kvs_array, test_long_message);
    rc |= NF_TEST_RUN(NULL, NULL, test_level_parse);
    return rc;
}
