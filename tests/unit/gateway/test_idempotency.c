/*
 * idempotency.c, the pure parts: which keys are accepted, which requests are "the same
 * body" (hash of the canonical validated request), and how the begin script's answers
 * are read - including the malformed ones, which must never turn into a replay.
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

static void test_key_valid(void **state)
{
    char longest[GW_IDEM_KEY_MAX + 2];

    assert_true(gw_idem_key_valid("a"));
    assert_true(gw_idem_key_valid("8e4b2c1a-0f3d-4c6e-9a51-7b2d3e4f5a6b"));
    assert_true(gw_idem_key_valid("order:42/retry#1~!"));
    memset(longest, 'k', GW_IDEM_KEY_MAX);
    longest[GW_IDEM_KEY_MAX] = '\0';
    assert_true(gw_idem_key_valid(longest));
    longest[GW_IDEM_KEY_MAX] = 'k';
    longest[GW_IDEM_KEY_MAX + 1] = '\0';
    assert_false(gw_idem_key_valid(longest)); /* 256 */
    assert_false(gw_idem_key_valid(""));
    assert_false(gw_idem_key_valid(NULL));
    assert_false(gw_idem_key_valid("has space"));
    assert_false(gw_idem_key_valid("tab\there"));
    assert_false(gw_idem_key_valid("new\nline"));
    assert_false(gw_idem_key_valid("caf\xc3\xa9"));
    assert_false(gw_idem_key_valid("del\x7f"));
}

/* The hash of a body as the submit route computes it: validated, then hashed. */
static void hash_of(const char *type, const char *body, char out[NF_SHA256_HEX_LEN + 1])
{
    struct nf_json_err err;
    cJSON *b = cJSON_Parse(body), *valid = NULL;

    assert_non_null(b);
    if (gw_validate_job(type, b, &valid, &err) != 0)
        fail_msg("%s: %s", err.param, err.msg);
    gw_idem_hash(type, valid, out);
    assert_int_equal(strlen(out), NF_SHA256_HEX_LEN);
    cJSON_Delete(valid);
    cJSON_Delete(b);
}

static void test_hash_same_request(void **state)
{
    char a[NF_SHA256_HEX_LEN + 1], b[NF_SHA256_HEX_LEN + 1];

    hash_of("generate", "{\"domain\":\"law\",\"num_samples\":2}", a);
    /* the nested shape, other key order, defaults spelled out: the same request */
    hash_of(
        "generate",
        "{\"priority\":5,\"params\":{\"num_samples\":2,\"domain\":\"law\",\"format\":\"jsonl\"},"
        "\"max_attempts\":3}",
        b);
    assert_string_equal(a, b);
    /* metadata in another order is the same metadata */
    hash_of("generate",
            "{\"domain\":\"x\",\"num_samples\":1,\"metadata\":{\"a\":\"1\",\"b\":\"2\"}}", a);
    hash_of("generate",
            "{\"metadata\":{\"b\":\"2\",\"a\":\"1\"},\"num_samples\":1,\"domain\":\"x\"}", b);
    assert_string_equal(a, b);
}

static void test_hash_other_request(void **state)
{
    char a[NF_SHA256_HEX_LEN + 1], b[NF_SHA256_HEX_LEN + 1];
    struct nf_json_err err;
    cJSON *body, *valid = NULL;

    hash_of("generate", "{\"domain\":\"law\",\"num_samples\":2}", a);
    hash_of("generate", "{\"domain\":\"law\",\"num_samples\":3}", b);
    assert_string_not_equal(a, b);
    hash_of("generate", "{\"domain\":\"law\",\"num_samples\":2,\"priority\":4}", b);
    assert_string_not_equal(a, b);
    hash_of("generate", "{\"domain\":\"law\",\"num_samples\":2,\"metadata\":{\"k\":\"v\"}}", b);
    assert_string_not_equal(a, b);
    /* the same normalised body for another job type is another request */
    body = cJSON_Parse("{\"model_id\":\"m\"}");
    assert_int_equal(gw_validate_job("deploy", body, &valid, &err), 0);
    gw_idem_hash("deploy", valid, a);
    gw_idem_hash("train", valid, b);
    assert_string_not_equal(a, b);
    cJSON_Delete(valid);
    cJSON_Delete(body);
}

/* ---- the begin script's answer ---------------------------------------------------------- */

static redisReply *str(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = REDIS_REPLY_STRING;
    r->str = (char *)s;
    r->len = strlen(s);
    return r;
}

/* An array reply of the given strings (the elements are ours: freed by arr_free). */
static redisReply *arr(int n, const char *const *items)
{
    redisReply *r = calloc(1, sizeof(*r));
    int i;

    r->type = REDIS_REPLY_ARRAY;
    r->elements = (size_t)n;
    r->element = calloc((size_t)n + 1, sizeof(*r->element));
    for (i = 0; i < n; i++)
        r->element[i] = str(items[i]);
    return r;
}

static void arr_free(redisReply *r)
{
    size_t i;

    for (i = 0; i < r->elements; i++)
        free(r->element[i]);
    free(r->element);
    free(r);
}

static int parse(int n, const char *const *items, struct gw_idem_reply *out)
{
    redisReply *r = arr(n, items);
    int rc = gw_idem_parse_reply(r, out);

    arr_free(r);
    return rc;
}

static void test_parse_states(void **state)
{
    struct gw_idem_reply r;
    redisReply *rep;

    assert_int_equal(parse(1, (const char *const[]){"new"}, &r), 0);
    assert_int_equal(r.state, GW_IDEM_NEW);
    assert_int_equal(parse(1, (const char *const[]){"pending"}, &r), 0);
    assert_int_equal(r.state, GW_IDEM_PENDING);
    assert_int_equal(parse(1, (const char *const[]){"conflict"}, &r), 0);
    assert_int_equal(r.state, GW_IDEM_CONFLICT);
    rep = arr(3, (const char *const[]){"replay", "202", "{\"job_id\":\"j\"}"});
    assert_int_equal(gw_idem_parse_reply(rep, &r), 0);
    assert_int_equal(r.state, GW_IDEM_REPLAY);
    assert_int_equal(r.status, 202);
    assert_int_equal(r.body_len, 14);
    assert_memory_equal(r.body, "{\"job_id\":\"j\"}", 14);
    arr_free(rep);
}

static void test_parse_malformed(void **state)
{
    struct gw_idem_reply r;
    redisReply err = {.type = REDIS_REPLY_ERROR, .str = "NOSCRIPT", .len = 8};
    redisReply empty = {.type = REDIS_REPLY_ARRAY, .elements = 0};

    assert_int_equal(gw_idem_parse_reply(NULL, &r), -1);
    assert_int_equal(r.state, GW_IDEM_ERROR);
    assert_int_equal(gw_idem_parse_reply(&err, &r), -1);
    assert_int_equal(gw_idem_parse_reply(&empty, &r), -1);
    assert_int_equal(parse(1, (const char *const[]){"maybe"}, &r), -1);
    assert_int_equal(r.state, GW_IDEM_ERROR);
    /* a replay without its answer, with a bad or non-2xx status, or an empty body */
    assert_int_equal(parse(1, (const char *const[]){"replay"}, &r), -1);
    assert_int_equal(parse(2, (const char *const[]){"replay", "202"}, &r), -1);
    assert_int_equal(parse(3, (const char *const[]){"replay", "20x", "{}"}, &r), -1);
    assert_int_equal(parse(3, (const char *const[]){"replay", "503", "{}"}, &r), -1);
    assert_int_equal(parse(3, (const char *const[]){"replay", "", "{}"}, &r), -1);
    assert_int_equal(parse(3, (const char *const[]){"replay", "202", ""}, &r), -1);
    assert_int_equal(r.state, GW_IDEM_ERROR);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_key_valid, test_hash_same_request, test_hash_other_request,
                       test_parse_states, test_parse_malformed);
}
