/*
 * list.c: the opaque cursors, the query strings of the list routes and the
 * read-your-writes merge - good input, and every kind of bad input naming its parameter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_crypto.h"
#include "nf_test.h"
#include "sched.h"

#define JOB_A "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"
#define JOB_B "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9N"
#define JOB_C "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9P"
#define JOB_D "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9Q"
#define ART "art_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"

/* ---- cursors -------------------------------------------------------------------------- */

static void test_cursor_roundtrip(void **state)
{
    char cur[SCHED_CURSOR_MAX], pos[NF_ID_MAX];

    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_JOBS, JOB_A, cur, sizeof(cur)), 0);
    assert_null(strchr(cur, '='));   /* unpadded base64url: safe in a query string */
    assert_null(strstr(cur, JOB_A)); /* opaque, not the id in clear */
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, cur, pos, sizeof(pos)), 0);
    assert_string_equal(pos, JOB_A);

    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_EVENTS, "123456", cur, sizeof(cur)), 0);
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_EVENTS, cur, pos, sizeof(pos)), 0);
    assert_string_equal(pos, "123456");

    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_ARTIFACTS, ART, cur, sizeof(cur)), 0);
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_ARTIFACTS, cur, pos, sizeof(pos)), 0);
    assert_string_equal(pos, ART);
}

static void test_cursor_encode_refuses_bad_positions(void **state)
{
    char cur[SCHED_CURSOR_MAX], tiny[8];

    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_JOBS, "job_nope", cur, sizeof(cur)), -1);
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_JOBS, ART, cur, sizeof(cur)), -1);
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_EVENTS, "12a", cur, sizeof(cur)), -1);
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_EVENTS, "0123", cur, sizeof(cur)), -1);
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_EVENTS, "", cur, sizeof(cur)), -1);
    assert_int_equal(sched_cursor_encode('x', JOB_A, cur, sizeof(cur)), -1);
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_JOBS, NULL, cur, sizeof(cur)), -1);
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_JOBS, JOB_A, tiny, sizeof(tiny)), -1);
}

/* b64url of an arbitrary text, for hand-made cursors. */
static void make(const char *plain, char *out, size_t len)
{
    assert_true(nf_crypto_b64url(plain, strlen(plain), out, len) > 0);
}

static void test_cursor_decode_refuses_what_we_did_not_make(void **state)
{
    char cur[SCHED_CURSOR_MAX], pos[NF_ID_MAX] = "untouched", other[SCHED_CURSOR_MAX];

    /* another list's cursor */
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_EVENTS, "7", other, sizeof(other)), 0);
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, other, pos, sizeof(pos)), -1);
    /* not base64url, padding, empty, NULL, too long */
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, "not a cursor", pos, sizeof(pos)), -1);
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, "ajE6==", pos, sizeof(pos)), -1);
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, "", pos, sizeof(pos)), -1);
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, NULL, pos, sizeof(pos)), -1);
    memset(cur, 'A', sizeof(cur) - 1);
    cur[sizeof(cur) - 1] = '\0';
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, cur, pos, sizeof(pos)), -1);
    /* well-formed base64 of the wrong version, a bad id, or a wrong prefix */
    make("j2:" JOB_A, cur, sizeof(cur));
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, cur, pos, sizeof(pos)), -1);
    make("j1:job_nope", cur, sizeof(cur));
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, cur, pos, sizeof(pos)), -1);
    make("j1;" JOB_A, cur, sizeof(cur));
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, cur, pos, sizeof(pos)), -1);
    make("e1:-5", cur, sizeof(cur));
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_EVENTS, cur, pos, sizeof(pos)), -1);
    make("e1:99999999999999999999", cur, sizeof(cur));
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_EVENTS, cur, pos, sizeof(pos)), -1);
    /* a length that is no base64 at all (4n + 1) */
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, "ajE6a", pos, sizeof(pos)), -1);
    /* non-zero leftover bits: a second spelling of the same bytes is refused */
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_EVENTS, "7", cur, sizeof(cur)), 0);
    cur[strlen(cur) - 1] = cur[strlen(cur) - 1] == 'w' ? 'x' : 'w';
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_EVENTS, cur, pos, sizeof(pos)), -1);
    assert_string_equal(pos, "untouched");
    /* an encoded NUL inside */
    assert_true(nf_crypto_b64url("e1:7\0"
                                 "8",
                                 6, cur, sizeof(cur)) > 0);
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_EVENTS, cur, pos, sizeof(pos)), -1);
    /* the position does not fit the caller's buffer */
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_JOBS, JOB_A, cur, sizeof(cur)), 0);
    assert_int_equal(sched_cursor_decode(SCHED_CURSOR_JOBS, cur, pos, 8), -1);
}

/* ---- query strings -------------------------------------------------------------------- */

static void test_query_decode(void **state)
{
    char *out = NULL;

    assert_int_equal(sched_query_decode("a+b%5Bc%5d%2F", 13, &out), 0);
    assert_string_equal(out, "a b[c]/");
    free(out);
    assert_int_equal(sched_query_decode("abc", 2, &out), 0); /* only len bytes */
    assert_string_equal(out, "ab");
    free(out);
    assert_int_equal(sched_query_decode("", 0, &out), 0);
    assert_string_equal(out, "");
    free(out);
    out = NULL;
    assert_int_equal(sched_query_decode("%", 1, &out), -1);
    assert_int_equal(sched_query_decode("%4", 2, &out), -1);
    assert_int_equal(sched_query_decode("%zz", 3, &out), -1);
    assert_int_equal(sched_query_decode("a%00b", 5, &out), -1); /* no NUL smuggling */
    assert_int_equal(sched_query_decode("%41%", 4, &out), -1);
    assert_null(out);
}

static void parse_ok(enum sched_list_kind kind, const char *query, struct sched_list_query *q)
{
    struct nf_json_err err = {{0}, {0}};

    if (sched_list_parse(kind, query, q, &err) != 0)
        fail_msg("%s: %s: %s", query, err.param, err.msg);
}

/* The query fails, naming param; the message mentions `words`. */
static void parse_bad(enum sched_list_kind kind, const char *query, const char *param,
                      const char *words)
{
    struct sched_list_query q;
    struct nf_json_err err = {{0}, {0}};

    memset(&q, 0x5a, sizeof(q));
    q.metadata = NULL;
    if (sched_list_parse(kind, query, &q, &err) == 0) {
        sched_list_query_clear(&q);
        fail_msg("%s: accepted", query);
    }
    if (strcmp(err.param, param) != 0)
        fail_msg("%s: param %s, wanted %s (%s)", query, err.param, param, err.msg);
    if (!strstr(err.msg, words))
        fail_msg("%s: message '%s' lacks '%s'", query, err.msg, words);
    assert_int_equal(q.limit, 0x5a5a5a5a); /* untouched */
}

static void test_list_defaults(void **state)
{
    struct sched_list_query q;

    parse_ok(SCHED_LIST_JOBS, NULL, &q);
    assert_int_equal(q.limit, SCHED_LIST_DEFAULT_LIMIT);
    assert_string_equal(q.after, "");
    assert_int_equal(q.statuses, 0);
    assert_int_equal(q.types, 0);
    assert_null(q.metadata);
    parse_ok(SCHED_LIST_JOBS, "", &q);
    assert_int_equal(q.limit, SCHED_LIST_DEFAULT_LIMIT);
    parse_ok(SCHED_LIST_JOBS, "&&", &q); /* empty pairs are nothing */
    assert_int_equal(q.limit, SCHED_LIST_DEFAULT_LIMIT);
}

static void test_list_all_filters(void **state)
{
    struct sched_list_query q;
    char cur[SCHED_CURSOR_MAX], query[512];

    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_JOBS, JOB_B, cur, sizeof(cur)), 0);
    snprintf(query, sizeof(query),
             "status=queued%%2Crunning&job_type=generate,deploy&metadata%%5Bteam%%5D=ml+ops"
             "&metadata[run]=7&limit=100&cursor=%s",
             cur);
    parse_ok(SCHED_LIST_JOBS, query, &q);
    assert_int_equal(q.statuses, SCHED_BIT(SCHED_QUEUED) | SCHED_BIT(SCHED_RUNNING));
    assert_int_equal(q.types, (1u << 0) | (1u << 5));
    assert_int_equal(q.limit, 100);
    assert_string_equal(q.after, JOB_B);
    assert_string_equal(nf_json_str(q.metadata, "team"), "ml ops");
    assert_string_equal(nf_json_str(q.metadata, "run"), "7");
    assert_int_equal(cJSON_GetArraySize(q.metadata), 2);
    sched_list_query_clear(&q);
    assert_null(q.metadata);
    sched_list_query_clear(&q); /* twice is fine */
    sched_list_query_clear(NULL);

    parse_ok(SCHED_LIST_JOBS, "limit=1&metadata[k]=", &q); /* an empty value is a value */
    assert_int_equal(q.limit, 1);
    assert_string_equal(nf_json_str(q.metadata, "k"), "");
    sched_list_query_clear(&q);
}

/* A job's metric points: up to 1000 a page, and stream= (the gateway's) is accepted. */
static void test_list_metrics_query(void **state)
{
    struct sched_list_query q;

    parse_ok(SCHED_LIST_METRICS, "limit=1000&stream=false", &q);
    assert_int_equal(q.limit, 1000);
    sched_list_query_clear(&q);
    parse_ok(SCHED_LIST_METRICS, "", &q);
    assert_int_equal(q.limit, SCHED_METRICS_DEFAULT_LIMIT);
    sched_list_query_clear(&q);
    parse_bad(SCHED_LIST_METRICS, "limit=1001", "limit", "between 1 and 1000");
    parse_bad(SCHED_LIST_METRICS, "limit=01000", "limit", "integer");
    parse_bad(SCHED_LIST_METRICS, "stream=yes", "stream", "true or false");
    parse_bad(SCHED_LIST_EVENTS, "stream=true", "stream", "unknown");
}

static void test_list_bad_queries(void **state)
{
    char long_key[128], long_val[700], many[1024];
    int i, n = 0;

    parse_bad(SCHED_LIST_JOBS, "limit=0", "limit", "between 1 and 100");
    parse_bad(SCHED_LIST_JOBS, "limit=101", "limit", "between 1 and 100");
    parse_bad(SCHED_LIST_JOBS, "limit=-1", "limit", "integer");
    parse_bad(SCHED_LIST_JOBS, "limit=5x", "limit", "integer");
    parse_bad(SCHED_LIST_JOBS, "limit=0010", "limit", "integer");
    parse_bad(SCHED_LIST_JOBS, "limit=", "limit", "integer");
    parse_bad(SCHED_LIST_JOBS, "limit=99999999999999999999", "limit", "integer");
    parse_bad(SCHED_LIST_JOBS, "limit=2&limit=3", "limit", "more than once");
    parse_bad(SCHED_LIST_JOBS, "cursor=abc", "cursor", "next_cursor");
    parse_bad(SCHED_LIST_JOBS, "cursor=", "cursor", "next_cursor");
    parse_bad(SCHED_LIST_JOBS, "status=sleeping", "status", "queued");
    parse_bad(SCHED_LIST_JOBS, "status=", "status", "queued");
    parse_bad(SCHED_LIST_JOBS, "status=queued,", "status", "queued");
    parse_bad(SCHED_LIST_JOBS, "status=,queued", "status", "queued");
    parse_bad(SCHED_LIST_JOBS, "status=queued,,running", "status", "queued");
    parse_bad(SCHED_LIST_JOBS, "status=QUEUED", "status", "queued");
    parse_bad(SCHED_LIST_JOBS, "job_type=teleport", "job_type", "generate");
    parse_bad(SCHED_LIST_JOBS, "job_type=generate&job_type=audit", "job_type", "more than once");
    parse_bad(SCHED_LIST_JOBS, "metadata[]=x", "metadata[]", "1 to 64");
    parse_bad(SCHED_LIST_JOBS, "metadata[a]b]=x", "metadata[a]b]", "1 to 64");
    parse_bad(SCHED_LIST_JOBS, "metadata[a]=1&metadata[a]=2", "metadata[a]", "more than once");
    parse_bad(SCHED_LIST_JOBS, "metadata=x", "metadata", "unknown query parameter");
    snprintf(long_key, sizeof(long_key), "metadata[%065d]=v", 0);
    long_key[strlen(long_key) - 2] = '\0'; /* the parameter's name */
    snprintf(long_val, sizeof(long_val), "%s=v", long_key);
    parse_bad(SCHED_LIST_JOBS, long_val, long_key, "1 to 64");
    memset(long_val, 'v', sizeof(long_val));
    memcpy(long_val, "metadata[k]=", 12);
    long_val[sizeof(long_val) - 1] = '\0';
    parse_bad(SCHED_LIST_JOBS, long_val, "metadata[k]", "at most 512");
    for (i = 0; i < SCHED_LIST_MAX_META + 1; i++)
        n += snprintf(many + n, sizeof(many) - (size_t)n, "%smetadata[k%d]=v", i ? "&" : "", i);
    parse_bad(SCHED_LIST_JOBS, many, "metadata[k16]", "at most 16");
    parse_bad(SCHED_LIST_JOBS, "user_id=usr_x", "user_id", "unknown query parameter");
    parse_bad(SCHED_LIST_JOBS, "=x", "query", "without a name");
    parse_bad(SCHED_LIST_JOBS, "limit=%zz", "query", "%-escape");
    parse_bad(SCHED_LIST_JOBS, "job_id=" JOB_A, "job_id", "unknown query parameter");
    /* what one list takes another does not */
    parse_bad(SCHED_LIST_EVENTS, "status=queued", "status", "unknown query parameter");
    parse_bad(SCHED_LIST_EVENTS, "metadata[a]=b", "metadata[a]", "unknown query parameter");
    parse_bad(SCHED_LIST_ARTIFACTS, "job_id=nope", "job_id", "job id");
    parse_bad(SCHED_LIST_ARTIFACTS, "job_id=" JOB_A "&job_id=" JOB_B, "job_id", "more than once");
    /* files: purpose and the s3:// name (percent-decoded) */
    parse_bad(SCHED_LIST_FILES, "purpose=weights", "purpose", "dataset, model or other");
    parse_bad(SCHED_LIST_FILES, "s3_uri=file%3A%2F%2F%2Fetc", "s3_uri", "s3:// URI");
    parse_bad(SCHED_LIST_FILES, "s3_uri=s3%3A%2F%2Fb%2Fk&s3_uri=s3%3A%2F%2Fb%2Fk", "s3_uri",
              "more than once");
    parse_bad(SCHED_LIST_ARTIFACTS, "s3_uri=s3%3A%2F%2Fb%2Fk", "s3_uri", "unknown query");
}

static void test_list_files_query(void **state)
{
    struct sched_list_query q;

    parse_ok(SCHED_LIST_FILES, "purpose=model&s3_uri=s3%3A%2F%2Fbucket%2Fa%20b.parquet&limit=1",
             &q);
    assert_string_equal(q.purpose, "model");
    assert_string_equal(q.s3_uri, "s3://bucket/a b.parquet");
    assert_int_equal(q.limit, 1);
    sched_list_query_clear(&q);
}

static void test_list_cursors_are_per_list(void **state)
{
    struct sched_list_query q;
    char cur[SCHED_CURSOR_MAX], query[256];

    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_EVENTS, "41", cur, sizeof(cur)), 0);
    snprintf(query, sizeof(query), "cursor=%s&limit=2", cur);
    parse_ok(SCHED_LIST_EVENTS, query, &q);
    assert_string_equal(q.after, "41");
    assert_int_equal(q.limit, 2);
    parse_bad(SCHED_LIST_JOBS, query, "cursor", "next_cursor");
    parse_bad(SCHED_LIST_ARTIFACTS, query, "cursor", "next_cursor");

    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_ARTIFACTS, ART, cur, sizeof(cur)), 0);
    snprintf(query, sizeof(query), "job_id=%s&cursor=%s", JOB_A, cur);
    parse_ok(SCHED_LIST_ARTIFACTS, query, &q);
    assert_string_equal(q.after, ART);
    assert_string_equal(q.job_id, JOB_A);
}

static void test_types_array(void **state)
{
    char out[128], tiny[8];

    assert_int_equal(sched_types_array(0, out, sizeof(out)), 0);
    assert_string_equal(out, "{}");
    assert_int_equal(sched_types_array((1u << 1) | (1u << 3), out, sizeof(out)), 0);
    assert_string_equal(out, "{audit,train}");
    assert_int_equal(sched_types_array(0x3f, out, sizeof(out)), 0);
    assert_string_equal(out, "{generate,audit,distill,train,evaluate,deploy}");
    assert_int_equal(sched_types_array(0x3f, tiny, sizeof(tiny)), -1);
    assert_int_equal(sched_types_array(0, tiny, 2), -1);
}

/* ---- the read-your-writes merge --------------------------------------------------------- */

static cJSON *job(const char *id, const char *status, const char *type, const char *meta)
{
    char text[512];

    snprintf(text, sizeof(text),
             "{\"job_id\":\"%s\",\"status\":\"%s\",\"job_type\":\"%s\",\"metadata\":%s}", id,
             status, type, meta);
    return cJSON_Parse(text);
}

static char *doc(const char *id, const char *status, const char *type, const char *meta)
{
    cJSON *o = job(id, status, type, meta);
    char *s = cJSON_PrintUnformatted(o);

    cJSON_Delete(o);
    return s;
}

static void ids_are(const cJSON *arr, const char *const *want, int n)
{
    int i;

    assert_int_equal(cJSON_GetArraySize(arr), n);
    for (i = 0; i < n; i++)
        assert_string_equal(nf_json_str(cJSON_GetArrayItem(arr, i), "job_id"), want[i]);
}

static void test_merge_adds_unrecorded_jobs_in_order(void **state)
{
    struct sched_list_query q;
    cJSON *pg = cJSON_CreateArray();
    char *docs[4];
    bool more = true;
    const char *want[] = {JOB_D, JOB_C, JOB_A};

    parse_ok(SCHED_LIST_JOBS, "limit=5", &q);
    cJSON_AddItemToArray(pg, job(JOB_C, "running", "generate", "{}"));
    cJSON_AddItemToArray(pg, job(JOB_A, "succeeded", "generate", "{}"));
    docs[0] = doc(JOB_D, "queued", "generate", "{}");
    docs[1] = doc(JOB_C, "queued", "generate", "{}"); /* recorded meanwhile: the row wins */
    docs[2] = strdup("not json");
    docs[3] = NULL;
    sched_list_merge(pg, &q, (const char *const *)docs, 4, &more);
    ids_are(pg, want, 3);
    assert_false(more);
    assert_string_equal(nf_json_str(cJSON_GetArrayItem(pg, 1), "status"), "running");
    for (int i = 0; i < 4; i++)
        free(docs[i]);
    cJSON_Delete(pg);

    /* between two rows (the insert Debian's cJSON refuses past index 0) */
    pg = cJSON_CreateArray();
    cJSON_AddItemToArray(pg, job(JOB_D, "running", "generate", "{}"));
    cJSON_AddItemToArray(pg, job(JOB_A, "succeeded", "generate", "{}"));
    docs[0] = doc(JOB_B, "queued", "generate", "{}");
    docs[1] = doc(JOB_C, "queued", "generate", "{}");
    sched_list_merge(pg, &q, (const char *const *)docs, 2, &more);
    ids_are(pg, (const char *const[]){JOB_D, JOB_C, JOB_B, JOB_A}, 4);
    assert_false(more);
    free(docs[0]);
    free(docs[1]);
    cJSON_Delete(pg);
    sched_list_query_clear(&q);
}

static void test_merge_respects_filters_cursor_and_limit(void **state)
{
    struct sched_list_query q;
    cJSON *pg;
    char *docs[3], cur[SCHED_CURSOR_MAX], query[256];
    bool more = false;
    int i;

    /* filters: status, type and metadata must all match */
    parse_ok(SCHED_LIST_JOBS, "status=queued&job_type=generate&metadata[t]=x", &q);
    pg = cJSON_CreateArray();
    docs[0] = doc(JOB_D, "queued", "generate", "{\"t\":\"x\",\"u\":\"y\"}");
    docs[1] = doc(JOB_C, "queued", "audit", "{\"t\":\"x\"}");
    docs[2] = doc(JOB_B, "queued", "generate", "{\"t\":\"z\"}");
    sched_list_merge(pg, &q, (const char *const *)docs, 3, &more);
    ids_are(pg, (const char *const[]){JOB_D}, 1);
    cJSON_Delete(pg);
    sched_list_query_clear(&q);

    /* a cursor: only jobs older than it */
    assert_int_equal(sched_cursor_encode(SCHED_CURSOR_JOBS, JOB_C, cur, sizeof(cur)), 0);
    snprintf(query, sizeof(query), "cursor=%s", cur);
    parse_ok(SCHED_LIST_JOBS, query, &q);
    pg = cJSON_CreateArray();
    free(docs[1]);
    docs[1] = doc(JOB_C, "queued", "generate", "{}");
    sched_list_merge(pg, &q, (const char *const *)docs, 3, &more);
    ids_are(pg, (const char *const[]){JOB_B}, 1);
    cJSON_Delete(pg);
    sched_list_query_clear(&q);

    /* Postgres has more rows than the page: nothing below its last row, has_more kept,
     * and the page trimmed to the limit */
    parse_ok(SCHED_LIST_JOBS, "limit=2", &q);
    pg = cJSON_CreateArray();
    cJSON_AddItemToArray(pg, job(JOB_C, "queued", "generate", "{}"));
    cJSON_AddItemToArray(pg, job(JOB_B, "queued", "generate", "{}"));
    cJSON_AddItemToArray(pg, job(JOB_A, "queued", "generate", "{}")); /* the limit + 1st */
    free(docs[0]);
    free(docs[1]);
    docs[0] = doc(JOB_D, "queued", "generate", "{}");
    docs[1] = doc("job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V90", "queued", "generate", "{}"); /* < A */
    sched_list_merge(pg, &q, (const char *const *)docs, 2, &more);
    ids_are(pg, (const char *const[]){JOB_D, JOB_C}, 2);
    assert_true(more);
    cJSON_Delete(pg);

    /* no extra docs: the Postgres page alone, trimmed */
    pg = cJSON_CreateArray();
    cJSON_AddItemToArray(pg, job(JOB_C, "queued", "generate", "{}"));
    cJSON_AddItemToArray(pg, job(JOB_B, "queued", "generate", "{}"));
    sched_list_merge(pg, &q, NULL, 0, &more);
    ids_are(pg, (const char *const[]){JOB_C, JOB_B}, 2);
    assert_false(more);
    cJSON_Delete(pg);
    sched_list_query_clear(&q);
    for (i = 0; i < 3; i++)
        free(docs[i]);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_cursor_roundtrip, test_cursor_encode_refuses_bad_positions,
                       test_cursor_decode_refuses_what_we_did_not_make, test_query_decode,
                       test_list_defaults, test_list_all_filters, test_list_metrics_query,
                       test_list_bad_queries, test_list_files_query, test_list_cursors_are_per_list,
                       test_types_array, test_merge_adds_unrecorded_jobs_in_order,
                       test_merge_respects_filters_cursor_and_limit);
}
