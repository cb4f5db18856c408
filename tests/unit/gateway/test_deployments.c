/*
 * deployments.c, the pure parts: deployment ids, the public object (never the endpoint's
 * address), the endpoint URL, the usage comment of a stream split anywhere, the usage
 * of a JSON answer and the usage events (stable ids, billing's shape).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_json.h"
#include "nf_test.h"

static void test_id(void **state)
{
    (void)state;
    assert_true(gw_dep_id_valid("dep-0123456789ab"));
    assert_false(gw_dep_id_valid(NULL));
    assert_false(gw_dep_id_valid("dep-0123456789AB"));
    assert_false(gw_dep_id_valid("dep-0123456789a"));
    assert_false(gw_dep_id_valid("dep-0123456789abc"));
    assert_false(gw_dep_id_valid("dop-0123456789ab"));
    assert_false(gw_dep_id_valid("dep-../../../etc"));
}

static void test_public(void **state)
{
    cJSON *rec =
        cJSON_Parse("{\"id\":\"dep-0123456789ab\",\"object\":\"deployment\","
                    "\"model\":\"llama-3-8b\",\"status\":\"ready\",\"region\":\"us-east-1\","
                    "\"replicas\":1,\"job_id\":\"job_1\",\"base_url\":\"/api/deployments/"
                    "dep-0123456789ab/v1\",\"created_at\":\"2026-12-07T21:00:00.000Z\","
                    "\"stopped_at\":null,\"failure\":null,\"endpoint_url\":"
                    "\"http://127.0.0.1:4000\",\"worker_id\":\"wrk_1\",\"user_id\":\"usr_1\"}");
    cJSON *pub;

    (void)state;
    assert_non_null(rec);
    pub = gw_dep_public(rec);
    assert_string_equal(nf_json_str(pub, "id"), "dep-0123456789ab");
    assert_string_equal(nf_json_str(pub, "object"), "deployment");
    assert_string_equal(nf_json_str(pub, "base_url"), "/api/deployments/dep-0123456789ab/v1");
    assert_int_equal(nf_json_int(pub, "replicas", 0), 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(pub, "stopped_at")));
    assert_null(cJSON_GetObjectItemCaseSensitive(pub, "endpoint_url"));
    assert_null(cJSON_GetObjectItemCaseSensitive(pub, "worker_id"));
    assert_null(cJSON_GetObjectItemCaseSensitive(pub, "user_id"));
    cJSON_Delete(pub);
    cJSON_Delete(rec);
}

static void test_endpoint(void **state)
{
    char host[GW_DEP_HOST_MAX + 1];
    int port = 0;

    (void)state;
    assert_int_equal(gw_dep_endpoint("http://127.0.0.1:4100", host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 4100);
    assert_int_equal(gw_dep_endpoint("http://worker-3.local:65535/", host, &port), 0);
    assert_string_equal(host, "worker-3.local");
    assert_int_equal(port, 65535);
    assert_int_equal(gw_dep_endpoint(NULL, host, &port), -1);
    assert_int_equal(gw_dep_endpoint("https://127.0.0.1:4100", host, &port), -1);
    assert_int_equal(gw_dep_endpoint("http://127.0.0.1", host, &port), -1);
    assert_int_equal(gw_dep_endpoint("http://127.0.0.1:0", host, &port), -1);
    assert_int_equal(gw_dep_endpoint("http://127.0.0.1:65536", host, &port), -1);
    assert_int_equal(gw_dep_endpoint("http://127.0.0.1:41x", host, &port), -1);
    assert_int_equal(gw_dep_endpoint("http://127.0.0.1:4100/v1", host, &port), -1);
    assert_int_equal(gw_dep_endpoint("http://u@h:4100", host, &port), -1);
    assert_int_equal(gw_dep_endpoint("http://:4100", host, &port), -1);
}

static const char stream[] =
    "data: {\"choices\":[{\"text\":\" a\"}]}\n\n"
    "data: {\"choices\":[{\"text\":\" : usage {\\\"prompt_tokens\\\": 99}\"}]}\n\n"
    ": usage {\"prompt_tokens\": 7, \"completion_tokens\": 12}\n\n"
    "data: [DONE]\n\n";

static void test_sse_usage(void **state)
{
    struct gw_sse_usage u;
    size_t n = strlen(stream);
    char big[600];

    (void)state;
    /* every split point gives the same counts */
    for (size_t cut = 0; cut <= n; cut++) {
        gw_sse_usage_init(&u);
        gw_sse_usage_feed(&u, stream, cut);
        gw_sse_usage_feed(&u, stream + cut, n - cut);
        assert_true(gw_sse_usage_found(&u));
        assert_int_equal(u.prompt, 7);
        assert_int_equal(u.completion, 12);
    }
    /* byte by byte, CRLF lines */
    gw_sse_usage_init(&u);
    for (const char *c = ": usage {\"prompt_tokens\":1,\"completion_tokens\":2}\r\n"; *c; c++)
        gw_sse_usage_feed(&u, c, 1);
    assert_true(gw_sse_usage_found(&u) && u.prompt == 1 && u.completion == 2);
    /* none, a broken one, one hidden in a line too long to be it */
    gw_sse_usage_init(&u);
    gw_sse_usage_feed(&u, "data: [DONE]\n\n: usage {nope}\n", 30);
    assert_false(gw_sse_usage_found(&u));
    memset(big, 'x', sizeof(big));
    gw_sse_usage_init(&u);
    gw_sse_usage_feed(&u, big, sizeof(big));
    gw_sse_usage_feed(&u, ": usage {\"prompt_tokens\":1,\"completion_tokens\":2}\n", 51);
    assert_false(gw_sse_usage_found(&u));
}

static void test_json_usage(void **state)
{
    const char *ok = "{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
                     "\"total_tokens\":7}}";
    long long p = 0, c = 0;

    (void)state;
    assert_int_equal(gw_dep_json_usage(ok, strlen(ok), &p, &c), 0);
    assert_true(p == 3 && c == 4);
    assert_int_equal(gw_dep_json_usage("{}", 2, &p, &c), -1);
    assert_int_equal(gw_dep_json_usage("{\"usage\":{\"prompt_tokens\":3}}", 29, &p, &c), -1);
    assert_int_equal(gw_dep_json_usage("nope", 4, &p, &c), -1);
}

static void test_usage_event(void **state)
{
    struct gw_dep_usage u = {.user_id = "usr_1",
                             .job_id = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M",
                             .dep_id = "dep-0123456789ab",
                             .request_uid = "01JDQ7Z6V1TB6Y4Q4ZKX3R1V9N",
                             .start_ms = 1796000000000LL,
                             .end_ms = 1796000000250LL};
    char a[GW_USAGE_ID_LEN + 1], b[GW_USAGE_ID_LEN + 1];
    cJSON *ev, *data;

    (void)state;
    gw_dep_usage_id(u.dep_id, u.request_uid, "input_tokens", a);
    gw_dep_usage_id(u.dep_id, u.request_uid, "input_tokens", b);
    assert_string_equal(a, b); /* stable: a redelivery has the same id */
    assert_int_equal(strlen(a), GW_USAGE_ID_LEN);
    assert_memory_equal(a, "use_", 4);
    gw_dep_usage_id(u.dep_id, u.request_uid, "output_tokens", b);
    assert_string_not_equal(a, b);
    gw_dep_usage_id(u.dep_id, "01JDQ7Z6V1TB6Y4Q4ZKX3R1V9P", "input_tokens", b);
    assert_string_not_equal(a, b);

    ev = gw_dep_usage_event(&u, "input_tokens", 42);
    gw_dep_usage_id(u.dep_id, u.request_uid, "input_tokens", a);
    assert_string_equal(nf_json_str(ev, "id"), a);
    assert_string_equal(nf_json_str(ev, "type"), "forge.usage.recorded");
    assert_string_equal(nf_json_str(ev, "subject"), "usr_1");
    data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    assert_string_equal(nf_json_str(data, "job_type"), "deploy");
    assert_string_equal(nf_json_str(data, "deployment_id"), "dep-0123456789ab");
    assert_string_equal(nf_json_str(data, "meter"), "input_tokens");
    assert_int_equal(nf_json_int(data, "quantity", 0), 42);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(data, "attempt")));
    assert_null(cJSON_GetObjectItemCaseSensitive(data, "worker_id"));
    assert_non_null(nf_json_str(data, "window_start"));
    cJSON_Delete(ev);
}

static struct gw_dep_cached entry(const char *id, const char *user, int port)
{
    struct gw_dep_cached e;

    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "%s", id);
    snprintf(e.user_id, sizeof(e.user_id), "%s", user);
    snprintf(e.job_id, sizeof(e.job_id), "job_%s", id);
    snprintf(e.host, sizeof(e.host), "127.0.0.1");
    e.port = port;
    return e;
}

static void test_cache(void **state)
{
    struct gw_dep_cached cache[GW_DEP_CACHE_N], e;
    const struct gw_dep_cached *hit;
    char id[GW_DEP_ID_LEN + 1];

    (void)state;
    memset(cache, 0, sizeof(cache));
    assert_null(gw_dep_cache_find(NULL, "dep-0123456789ab", "usr_1", 1000));
    assert_null(gw_dep_cache_find(cache, "dep-0123456789ab", "usr_1", 1000));
    e = entry("dep-0123456789ab", "usr_1", 4100);
    gw_dep_cache_put(cache, &e, 1000);
    hit = gw_dep_cache_find(cache, "dep-0123456789ab", "usr_1", 1000 + GW_DEP_CACHE_TTL_MS - 1);
    assert_non_null(hit);
    assert_int_equal(hit->port, 4100);
    assert_string_equal(hit->job_id, "job_dep-0123456789ab");
    /* another user never finds it; it expires; a put refreshes the same slot */
    assert_null(gw_dep_cache_find(cache, "dep-0123456789ab", "usr_2", 1001));
    assert_null(gw_dep_cache_find(cache, "dep-0123456789ab", "usr_1", 1000 + GW_DEP_CACHE_TTL_MS));
    e.port = 4200;
    gw_dep_cache_put(cache, &e, 5000);
    assert_int_equal(gw_dep_cache_find(cache, e.id, "usr_1", 5001)->port, 4200);
    /* full: the oldest goes, the rest stay */
    for (int i = 0; i < GW_DEP_CACHE_N; i++) {
        snprintf(id, sizeof(id), "dep-%012x", i + 1);
        e = entry(id, "usr_1", 5000 + i);
        gw_dep_cache_put(cache, &e, 6000 + (uint64_t)i);
    }
    assert_null(gw_dep_cache_find(cache, "dep-0123456789ab", "usr_1", 6100));
    assert_non_null(gw_dep_cache_find(cache, "dep-000000000001", "usr_1", 6100));
    e = entry("dep-0000000000ff", "usr_1", 9);
    gw_dep_cache_put(cache, &e, 6100);
    assert_null(gw_dep_cache_find(cache, "dep-000000000001", "usr_1", 6101));
    assert_non_null(gw_dep_cache_find(cache, "dep-000000000002", "usr_1", 6101));
    /* dropped */
    gw_dep_cache_drop(cache, "dep-000000000002");
    gw_dep_cache_drop(NULL, "dep-000000000002");
    assert_null(gw_dep_cache_find(cache, "dep-000000000002", "usr_1", 6101));
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_id, test_public, test_endpoint, test_sse_usage,
                       test_json_usage, test_usage_event, test_cache);
}
