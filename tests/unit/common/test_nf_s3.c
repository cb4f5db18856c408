/*
 * nf_s3's pure parts: configuration checks, key validation and encoding, URLs, answer
 * header parsing, the bounded XML readers (errors, list pages, single fields with
 * entities), outcome and retry classification, CompleteMultipartUpload bodies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "nf_s3.h"
#include "nf_s3_internal.h"
#include "nf_test.h"

static const struct nf_s3_conf good = {.endpoint = "http://127.0.0.1:9000",
                                       .access_key = "ak",
                                       .secret_key = "sk",
                                       .bucket = "nexa-forge"};

static void test_conf_check(void **state)
{
    char err[128];
    assert_true(nf_s3_conf_check(&good, err, sizeof(err)));
    struct nf_s3_conf c = good;
    c.endpoint = "https://s3.example.com/";
    assert_true(nf_s3_conf_check(&c, err, sizeof(err)));

    static const struct {
        const char *endpoint, *bucket, *field;
        size_t part;
    } bad[] = {
        {"ftp://x", "nexa-forge", "endpoint", 0},
        {"http://", "nexa-forge", "endpoint", 0},
        {"http://h:1/path", "nexa-forge", "endpoint", 0},
        {"http://user@h", "nexa-forge", "endpoint", 0},
        {"http://h", "ab", "bucket", 0},
        {"http://h", "Upper", "bucket", 0},
        {"http://h", "-dash", "bucket", 0},
        {"http://h", "under_score", "bucket", 0},
        {"http://h", "nexa-forge", "part_size", 1024},
        {"http://h", "nexa-forge", "part_size", (size_t)NF_S3_PART_MAX + 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = good;
        c.endpoint = bad[i].endpoint;
        c.bucket = bad[i].bucket;
        c.part_size = bad[i].part;
        err[0] = '\0';
        assert_false(nf_s3_conf_check(&c, err, sizeof(err)));
        assert_non_null(strstr(err, bad[i].field));
    }
    c = good;
    c.secret_key = "";
    assert_false(nf_s3_conf_check(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "secret_key"));
    assert_false(nf_s3_conf_check(NULL, err, sizeof(err)));
    c = good;
    c.timeout_ms = -1;
    assert_false(nf_s3_conf_check(&c, NULL, 0)); /* no err buffer is fine */
}

static void test_cfg_defaults(void **state)
{
    struct s3_cfg c;
    struct nf_s3_conf conf = good;
    conf.endpoint = "http://h:1/";
    assert_true(s3_cfg_init(&c, &conf, NULL, 0));
    assert_string_equal(c.endpoint, "http://h:1");
    assert_string_equal(c.region, "us-east-1");
    assert_string_equal(c.sigv4, "aws:amz:us-east-1:s3");
    assert_int_equal(c.timeout_ms, 30000);
    assert_int_equal(c.part_size, NF_S3_PART_DEFAULT);
    char *url = s3_url(&c, "a b/c+d~é", NULL);
    assert_string_equal(url, "http://h:1/nexa-forge/a%20b/c%2Bd~%C3%A9");
    free(url);
    url = s3_url(&c, NULL, "list-type=2&prefix=");
    assert_string_equal(url, "http://h:1/nexa-forge?list-type=2&prefix=");
    free(url);
    s3_cfg_clear(&c);
    conf.region = "eu-west-3";
    conf.part_size = NF_S3_PART_MIN;
    assert_true(s3_cfg_init(&c, &conf, NULL, 0));
    assert_string_equal(c.sigv4, "aws:amz:eu-west-3:s3");
    assert_int_equal(c.part_size, NF_S3_PART_MIN);
    s3_cfg_clear(&c);
}

static void test_keys(void **state)
{
    assert_true(nf_s3_key_valid("tenants/usr_1/files/b/data.parquet"));
    assert_true(nf_s3_key_valid("a..b/.hidden/c."));
    assert_false(nf_s3_key_valid(NULL));
    assert_false(nf_s3_key_valid(""));
    assert_false(nf_s3_key_valid("/abs"));
    assert_false(nf_s3_key_valid("a/../b"));
    assert_false(nf_s3_key_valid("a/./b"));
    assert_false(nf_s3_key_valid(".."));
    assert_false(nf_s3_key_valid("a/."));
    assert_false(nf_s3_key_valid("tab\there"));
    assert_false(nf_s3_key_valid("del\x7f"));
    char *long_key = malloc(NF_S3_KEY_MAX + 2);
    memset(long_key, 'k', NF_S3_KEY_MAX);
    long_key[NF_S3_KEY_MAX] = '\0';
    assert_true(nf_s3_key_valid(long_key));
    long_key[NF_S3_KEY_MAX] = 'k';
    long_key[NF_S3_KEY_MAX + 1] = '\0';
    assert_false(nf_s3_key_valid(long_key));
    free(long_key);

    char *e = nf_s3_encode("a/b c?d=e&f%g+h", true);
    assert_string_equal(e, "a/b%20c%3Fd%3De%26f%25g%2Bh");
    free(e);
    e = nf_s3_encode("a/b-_.~", false);
    assert_string_equal(e, "a%2Fb-_.~");
    free(e);
    e = nf_s3_encode("", false);
    assert_string_equal(e, "");
    free(e);
}

static void feed(struct s3_head *h, const char *line)
{
    s3_head_line(h, line, strlen(line));
}

static void test_head_lines(void **state)
{
    struct s3_head h;
    s3_head_reset(&h);
    feed(&h, "HTTP/1.1 100 Continue\r\n");
    feed(&h, "\r\n");
    assert_false(h.complete); /* a 1xx is not the answer */
    feed(&h, "HTTP/1.1 206 Partial Content\r\n");
    feed(&h, "content-length:  100 \r\n");
    feed(&h, "Content-Range: bytes 100-199/20983865\r\n");
    feed(&h, "ETag: \"abc-5\"\r\n");
    feed(&h, "Content-Type: text/plain\r\n");
    assert_false(h.complete);
    feed(&h, "\r\n");
    assert_true(h.complete);
    assert_int_equal(h.status, 206);
    assert_int_equal(h.length, 100);
    assert_int_equal(h.total, 20983865);
    assert_string_equal(h.etag, "\"abc-5\"");
    assert_string_equal(h.content_type, "text/plain");

    /* a new status line starts over; junk numbers are ignored */
    feed(&h, "HTTP/2 416\r\n");
    feed(&h, "Content-Range: bytes */1234\r\n");
    feed(&h, "Content-Length: -5\r\n");
    feed(&h, "Content-Length: 99999999999999999999\r\n");
    assert_int_equal(h.status, 416);
    assert_int_equal(h.total, 1234);
    assert_int_equal(h.length, -1);
    assert_string_equal(h.etag, "");
    feed(&h, "HTTP/1.1 2x0 Bad\r\n");
    assert_int_equal(h.status, 0);
    feed(&h, "no colon here\r\n");
    feed(&h, "Content-Range: bytes 1-2/\r\n");
    assert_int_equal(h.total, -1);

    /* an over-long value is cut, not overflowed */
    char line[2 * S3_TEXT_MAX];
    memset(line, 'x', sizeof(line) - 1);
    memcpy(line, "ETag: ", 6);
    line[sizeof(line) - 1] = '\0';
    feed(&h, line);
    assert_int_equal(strlen(h.etag), S3_TEXT_MAX - 1);
}

static void test_xml_fields(void **state)
{
    const char *xml = "<?xml version=\"1.0\"?><R><UploadId>u&amp;1&#x2B;&#47;</UploadId>"
                      "<ETag>&quot;d41d8-2&quot;</ETag><Empty></Empty><Open>x</R>";
    char out[64];
    size_t len = strlen(xml);
    assert_true(s3_xml_get(xml, len, "UploadId", out, sizeof(out)));
    assert_string_equal(out, "u&1+/");
    assert_true(s3_xml_get(xml, len, "ETag", out, sizeof(out)));
    assert_string_equal(out, "\"d41d8-2\"");
    assert_true(s3_xml_get(xml, len, "Empty", out, sizeof(out)));
    assert_string_equal(out, "");
    assert_false(s3_xml_get(xml, len, "Open", out, sizeof(out))); /* never closed */
    assert_false(s3_xml_get(xml, len, "Missing", out, sizeof(out)));
    assert_false(s3_xml_get(xml, len, "ETag", out, 5)); /* does not fit */
    /* only the first len bytes count */
    assert_false(s3_xml_get(xml, 30, "UploadId", out, sizeof(out)));

    static const char *const bad[] = {"a&bogus;b",        "a&#;b", "a&#x;b",
                                      "a&#12345678901;b", "a<b",   "a&amp"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(s3_xml_text(bad[i], strlen(bad[i]), out, sizeof(out)));
    assert_true(s3_xml_text("&#233;&#10;", 11, out, sizeof(out)));
    assert_string_equal(out, "? "); /* non-ASCII as '?', control characters as ' ' */
}

static void test_xml_error(void **state)
{
    const char *xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
                      "<Message>The specified key does not exist.</Message><Key>a</Key></Error>";
    char code[S3_CODE_MAX], msg[S3_TEXT_MAX];
    assert_true(s3_xml_error(xml, strlen(xml), code, sizeof(code), msg, sizeof(msg)));
    assert_string_equal(code, "NoSuchKey");
    assert_string_equal(msg, "The specified key does not exist.");
    assert_false(s3_xml_error("<html>502</html>", 16, code, sizeof(code), msg, sizeof(msg)));
    assert_true(s3_xml_error("<Error></Error>", 15, code, sizeof(code), msg, sizeof(msg)));
    assert_string_equal(code, "");

    /* outcomes: an S3 body, no body, a transport error */
    struct s3_head h;
    struct s3_buf b = {.max = S3_ERRBODY_MAX};
    s3_head_reset(&h);
    h.status = 404;
    s3_buf_add(&b, xml, strlen(xml));
    assert_int_equal(s3_outcome(CURLE_OK, "", &h, &b, code, sizeof(code), msg, sizeof(msg)), 404);
    assert_string_equal(code, "NoSuchKey");
    s3_buf_reset(&b);
    assert_int_equal(s3_outcome(CURLE_OK, "", &h, &b, code, sizeof(code), msg, sizeof(msg)), 404);
    assert_string_equal(code, "NotFound");
    assert_string_equal(msg, "s3 answered 404 NotFound");
    h.status = 502;
    s3_buf_add(&b, "<html>bad gateway</html>", 24);
    assert_int_equal(s3_outcome(CURLE_OK, "", &h, &b, code, sizeof(code), msg, sizeof(msg)), 502);
    assert_string_equal(code, "HttpError");
    h.status = 200;
    assert_int_equal(s3_outcome(CURLE_OK, "", &h, &b, code, sizeof(code), msg, sizeof(msg)), 200);
    assert_string_equal(code, "");
    assert_int_equal(s3_outcome(CURLE_COULDNT_CONNECT, "Failed to connect", &h, &b, code,
                                sizeof(code), msg, sizeof(msg)),
                     0);
    assert_string_equal(msg, "Failed to connect");
    assert_int_equal(
        s3_outcome(CURLE_OPERATION_TIMEDOUT, "", &h, &b, code, sizeof(code), msg, sizeof(msg)), 0);
    assert_true(msg[0] != '\0');

    /* a bounded buffer keeps max bytes and counts the rest */
    struct s3_buf small = {.max = 4};
    s3_buf_add(&small, "abcdef", 6);
    assert_int_equal(small.len, 4);
    assert_int_equal(small.dropped, 2);
    assert_string_equal(small.data, "abcd");
    s3_buf_free(&small);
    s3_buf_free(&b);
}

static void test_list_page(void **state)
{
    const char *page = "<ListBucketResult><Name>b</Name><IsTruncated>true</IsTruncated>"
                       "<Contents><Key>a</Key><Size>10</Size></Contents>"
                       "<Contents><Key>b&amp;c</Key><Size>0</Size></Contents>"
                       "<Contents><Key>d</Key><ETag>x</ETag><Size>2040</Size></Contents>"
                       "<NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>";
    long long objects = 1, bytes = 5; /* added to */
    bool truncated = false;
    char token[S3_TOKEN_MAX];
    assert_int_equal(
        s3_list_page(page, strlen(page), &objects, &bytes, &truncated, token, sizeof(token)), 0);
    assert_int_equal(objects, 4);
    assert_int_equal(bytes, 2055);
    assert_true(truncated);
    assert_string_equal(token, "tok/+=");

    const char *last = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
    objects = bytes = 0;
    assert_int_equal(
        s3_list_page(last, strlen(last), &objects, &bytes, &truncated, token, sizeof(token)), 0);
    assert_false(truncated);
    assert_int_equal(objects, 0);
    assert_string_equal(token, "");

    static const char *const bad[] = {
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>", /* no token */
        "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Size>-1</Size>"
        "</Contents></ListBucketResult>",
        "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key></Contents>"
        "</ListBucketResult>",
        "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Size>1234567890123456789"
        "</Size></Contents></ListBucketResult>",
        "<Error><Code>AccessDenied</Code></Error>",
        "<html></html>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(s3_list_page(bad[i], strlen(bad[i]), &objects, &bytes, &truncated, token,
                                      sizeof(token)),
                         -1);
}

static void test_retry_rules(void **state)
{
    assert_true(s3_retryable(0, NULL));
    assert_true(s3_retryable(500, "InternalError"));
    assert_true(s3_retryable(503, "SlowDown"));
    assert_true(s3_retryable(502, NULL));
    assert_true(s3_retryable(504, NULL));
    assert_true(s3_retryable(400, "RequestTimeout"));
    assert_false(s3_retryable(404, "NoSuchKey"));
    assert_false(s3_retryable(403, "SignatureDoesNotMatch"));
    assert_false(s3_retryable(416, "InvalidRange"));
    assert_false(s3_retryable(501, "NotImplemented"));
    assert_int_equal(s3_backoff_ms(1), 200);
    assert_int_equal(s3_backoff_ms(2), 800);
    assert_int_equal(s3_backoff_ms(3), 3200);

    assert_true(s3_range_valid("bytes=0-99"));
    assert_true(s3_range_valid("bytes=100-"));
    assert_true(s3_range_valid("bytes=-500"));
    assert_false(s3_range_valid("bytes="));
    assert_false(s3_range_valid("items=0-1"));
    assert_false(s3_range_valid("bytes=0-1\r\nX-Evil: 1"));
    assert_false(s3_range_valid(NULL));
}

static void test_complete_body(void **state)
{
    char *etags[] = {"\"aa\"", "\"b<&>\""};
    char *body = s3_complete_body(etags, 2);
    assert_string_equal(body, "<CompleteMultipartUpload>"
                              "<Part><PartNumber>1</PartNumber><ETag>&quot;aa&quot;</ETag></Part>"
                              "<Part><PartNumber>2</PartNumber>"
                              "<ETag>&quot;b&lt;&amp;&gt;&quot;</ETag></Part>"
                              "</CompleteMultipartUpload>");
    free(body);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_conf_check, test_cfg_defaults, test_keys, test_head_lines,
                       test_xml_fields, test_xml_error, test_list_page, test_retry_rules,
                       test_complete_body);
}
