/* Unit tests for nf_metrics: registry identity and the exact Prometheus text output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_metrics.h"
#include "nf_test.h"

static int setup(void **state)
{
    struct nf_metrics *m = NULL;

    assert_int_equal(nf_metrics_new(&m), 0);
    assert_non_null(m);
    *state = m;
    return 0;
}

static int teardown(void **state)
{
    nf_metrics_free(*state);
    return 0;
}

/* Renders m and compares with the whole expected text. */
static void expect_render(const struct nf_metrics *m, const char *want)
{
    size_t len = 0;
    char *txt = nf_metrics_render(m, &len);

    assert_non_null(txt);
    assert_int_equal(len, strlen(txt));
    assert_string_equal(txt, want);
    free(txt);
}

/* Number of times needle occurs in hay. */
static int count(const char *hay, const char *needle)
{
    int n = 0;

    while ((hay = strstr(hay, needle)) != NULL) {
        n++;
        hay += strlen(needle);
    }
    return n;
}

static void test_empty(void **state)
{
    expect_render(*state, "");
}

static void test_counter_same_pointer(void **state)
{
    struct nf_metrics *m = *state;
    struct nf_counter *a = nf_metrics_counter(m, "jobs_total", "jobs", "type=\"train\"");
    struct nf_counter *b = nf_metrics_counter(m, "jobs_total", "jobs", "type=\"train\"");
    struct nf_counter *c = nf_metrics_counter(m, "jobs_total", "jobs", "type=\"audit\"");

    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    /* NULL labels and "" are the same unlabelled series. */
    assert_ptr_equal(nf_metrics_counter(m, "plain_total", "p", NULL),
                     nf_metrics_counter(m, "plain_total", "p", ""));
}

static void test_counter_and_gauge_text(void **state)
{
    struct nf_metrics *m = *state;
    struct nf_counter *c;
    struct nf_gauge *g;

    c = nf_metrics_counter(m, "http_requests_total", "HTTP requests",
                           "route=\"/api/jobs\",status=\"202\"");
    nf_metrics_counter_add(c, 3);
    nf_metrics_counter_add(c, 2);
    c = nf_metrics_counter(m, "http_requests_total", "HTTP requests",
                           "route=\"/x\",status=\"404\"");
    nf_metrics_counter_add(c, 1);
    g = nf_metrics_gauge(m, "queue_depth", "jobs waiting\nper type \\ all", NULL);
    nf_metrics_gauge_set(g, 0.25);
    g = nf_metrics_gauge(m, "temp", "t", "x=\"1\"");
    nf_metrics_gauge_set(g, -3);
    expect_render(m, "# HELP http_requests_total HTTP requests\n"
                     "# TYPE http_requests_total counter\n"
                     "http_requests_total{route=\"/api/jobs\",status=\"202\"} 5\n"
                     "http_requests_total{route=\"/x\",status=\"404\"} 1\n"
                     "# HELP queue_depth jobs waiting\\nper type \\\\ all\n"
                     "# TYPE queue_depth gauge\n"
                     "queue_depth 0.25\n"
                     "# HELP temp t\n"
                     "# TYPE temp gauge\n"
                     "temp{x=\"1\"} -3\n");
}

static void test_help_type_once_per_family(void **state)
{
    struct nf_metrics *m = *state;
    char labels[32], *txt;
    int i;

    for (i = 0; i < 5; i++) {
        snprintf(labels, sizeof(labels), "n=\"%d\"", i);
        nf_metrics_counter_add(nf_metrics_counter(m, "many_total", "many", labels), 1);
        nf_metrics_histogram_observe(nf_metrics_histogram(m, "lat_seconds", "lat", labels,
                                                          nf_metrics_latency_bounds,
                                                          nf_metrics_latency_nbounds),
                                     0.2);
    }
    txt = nf_metrics_render(m, NULL);
    assert_int_equal(count(txt, "# HELP many_total "), 1);
    assert_int_equal(count(txt, "# TYPE many_total counter\n"), 1);
    assert_int_equal(count(txt, "# HELP lat_seconds "), 1);
    assert_int_equal(count(txt, "# TYPE lat_seconds histogram\n"), 1);
    assert_int_equal(count(txt, "many_total{"), 5);
    assert_int_equal(count(txt, "lat_seconds_count{"), 5);
    assert_int_equal(count(txt, "lat_seconds_bucket{n=\"3\",le=\"+Inf\"} 1\n"), 1);
    free(txt);
}

static void test_histogram_text(void **state)
{
    struct nf_metrics *m = *state;
    const double bounds[] = {0.1, 0.5, 2.5};
    struct nf_histogram *h =
        nf_metrics_histogram(m, "req_seconds", "latency", "route=\"/a\"", bounds, 3);

    nf_metrics_histogram_observe(h, 0.05); /* bucket 0.1 */
    nf_metrics_histogram_observe(h, 0.1);  /* le is inclusive: bucket 0.1 */
    nf_metrics_histogram_observe(h, 0.3);  /* bucket 0.5 */
    nf_metrics_histogram_observe(h, 7);    /* +Inf only */
    nf_metrics_histogram_observe(h, NAN);  /* ignored */
    expect_render(m, "# HELP req_seconds latency\n"
                     "# TYPE req_seconds histogram\n"
                     "req_seconds_bucket{route=\"/a\",le=\"0.1\"} 2\n"
                     "req_seconds_bucket{route=\"/a\",le=\"0.5\"} 3\n"
                     "req_seconds_bucket{route=\"/a\",le=\"2.5\"} 3\n"
                     "req_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n"
                     "req_seconds_sum{route=\"/a\"} 7.45\n"
                     "req_seconds_count{route=\"/a\"} 4\n");
}

static void test_histogram_unlabelled(void **state)
{
    struct nf_metrics *m = *state;
    const double bounds[] = {1};
    struct nf_histogram *h = nf_metrics_histogram(m, "h", "h", NULL, bounds, 1);

    nf_metrics_histogram_observe(h, 1);
    expect_render(m, "# HELP h h\n"
                     "# TYPE h histogram\n"
                     "h_bucket{le=\"1\"} 1\n"
                     "h_bucket{le=\"+Inf\"} 1\n"
                     "h_sum 1\n"
                     "h_count 1\n");
}

static void test_latency_bounds(void **state)
{
    size_t i;

    assert_true(nf_metrics_latency_nbounds >= 2);
    assert_true(nf_metrics_latency_bounds[0] == 0.001);
    assert_true(nf_metrics_latency_bounds[nf_metrics_latency_nbounds - 1] == 10);
    for (i = 1; i < nf_metrics_latency_nbounds; i++)
        assert_true(nf_metrics_latency_bounds[i] > nf_metrics_latency_bounds[i - 1]);
}

static void test_misuse_returns_null(void **state)
{
    struct nf_metrics *m = *state;
    const double bad[] = {1, 0.5};
    FILE *devnull = fopen("/dev/null", "w");

    assert_non_null(devnull);
    nf_log_set_output(devnull); /* the refusals are logged */
    assert_non_null(nf_metrics_counter(m, "x_total", "x", NULL));
    /* Same name, other type. */
    assert_null(nf_metrics_gauge(m, "x_total", "x", NULL));
    assert_null(nf_metrics_histogram(m, "x_total", "x", NULL, nf_metrics_latency_bounds,
                                     nf_metrics_latency_nbounds));
    /* Invalid names and bounds. */
    assert_null(nf_metrics_counter(m, "9lives", "x", NULL));
    assert_null(nf_metrics_counter(m, "has-dash", "x", NULL));
    assert_null(nf_metrics_counter(m, "", "x", NULL));
    assert_null(nf_metrics_histogram(m, "h2", "x", NULL, bad, 2));
    nf_log_set_output(NULL);
    fclose(devnull);
    /* The NULL series are harmless to use. */
    nf_metrics_counter_add(NULL, 1);
    nf_metrics_gauge_set(NULL, 1);
    nf_metrics_histogram_observe(NULL, 1);
    expect_render(m, "# HELP x_total x\n# TYPE x_total counter\nx_total 0\n");
}

static void test_large_counter_and_special_gauges(void **state)
{
    struct nf_metrics *m = *state;

    nf_metrics_counter_add(nf_metrics_counter(m, "big_total", "b", NULL), UINT64_MAX);
    nf_metrics_gauge_set(nf_metrics_gauge(m, "g", "g", "k=\"inf\""), INFINITY);
    nf_metrics_gauge_set(nf_metrics_gauge(m, "g", "g", "k=\"ninf\""), -INFINITY);
    nf_metrics_gauge_set(nf_metrics_gauge(m, "g", "g", "k=\"nan\""), NAN);
    nf_metrics_gauge_set(nf_metrics_gauge(m, "g", "g", "k=\"third\""), 1.0 / 3);
    expect_render(m, "# HELP big_total b\n# TYPE big_total counter\n"
                     "big_total 18446744073709551615\n"
                     "# HELP g g\n# TYPE g gauge\n"
                     "g{k=\"inf\"} +Inf\n"
                     "g{k=\"ninf\"} -Inf\n"
                     "g{k=\"nan\"} NaN\n"
                     "g{k=\"third\"} 0.3333333333333333\n");
}

int main(void)
{
    int rc;

    nf_metrics_free(NULL); /* NULL-safe */
    rc = NF_TEST_RUN(setup, teardown, test_empty, test_counter_same_pointer,
                     test_counter_and_gauge_text, test_help_type_once_per_family,
                     test_histogram_text, test_histogram_unlabelled, test_misuse_returns_null,
                     test_large_counter_and_special_gauges);
    rc |= NF_TEST_RUN(NULL, NULL, test_latency_bounds);
    return rc;
}
