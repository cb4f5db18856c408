/*
 * budget.c: USD amounts, the PUT body, the over-budget rule, the alert thresholds (exact
 * at their boundaries), the alert ids and the two events billing produces.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <limits.h>
#include <string.h>

#include "bill.h"
#include "nf_json.h"
#include "nf_test.h"

static long long usd(const char *s)
{
    long long v = -42;

    if (bill_usd_parse(s, &v) != 0)
        fail_msg("'%s' refused", s);
    return v;
}

static void test_usd_parse(void **state)
{
    long long v = -42;

    assert_int_equal(usd("0"), 0);
    assert_int_equal(usd("12"), 12000000);
    assert_int_equal(usd("12.5"), 12500000);
    assert_int_equal(usd("0.000001"), 1);
    assert_int_equal(usd("100.10"), 100100000);
    assert_int_equal(usd("1000000000"), BILL_MAX_BUDGET_MICROS);
    assert_int_equal(usd("0999.999999"), 999999999);
    /* refused, *micros untouched */
    assert_int_equal(bill_usd_parse("1000000000.000001", &v), -1);
    assert_int_equal(bill_usd_parse("99999999999999999999999", &v), -1);
    assert_int_equal(bill_usd_parse("0.0000001", &v), -1); /* 7 decimals */
    assert_int_equal(bill_usd_parse("-1", &v), -1);
    assert_int_equal(bill_usd_parse("+1", &v), -1);
    assert_int_equal(bill_usd_parse("1e3", &v), -1);
    assert_int_equal(bill_usd_parse("1.", &v), -1);
    assert_int_equal(bill_usd_parse(".5", &v), -1);
    assert_int_equal(bill_usd_parse("1,5", &v), -1);
    assert_int_equal(bill_usd_parse(" 1", &v), -1);
    assert_int_equal(bill_usd_parse("", &v), -1);
    assert_int_equal(bill_usd_parse(NULL, &v), -1);
    assert_int_equal(v, -42);
}

/* Parses body text; returns the parse result with has/micros/param filled. */
static int budget(const char *text, bool *has, long long *micros, char param[128])
{
    struct nf_json_err err = {{0}, {0}};
    cJSON *body = cJSON_Parse(text);
    int rc;

    *has = false;
    *micros = -42;
    rc = bill_budget_parse(body, has, micros, &err);
    strcpy(param, err.param);
    if (rc < 0)
        assert_true(err.msg[0] != '\0');
    cJSON_Delete(body);
    return rc;
}

static void test_budget_parse(void **state)
{
    char param[128];
    long long m;
    bool has;

    assert_int_equal(budget("{\"monthly_limit_usd\":\"50.00\"}", &has, &m, param), 0);
    assert_true(has);
    assert_int_equal(m, 50000000);
    assert_int_equal(budget("{\"monthly_limit_usd\":12.345}", &has, &m, param), 0);
    assert_int_equal(m, 12345000);
    assert_int_equal(budget("{\"monthly_limit_usd\":0.1}", &has, &m, param), 0);
    assert_int_equal(m, 100000); /* 0.1 is not exact in binary, but 6 decimals are */
    assert_int_equal(budget("{\"monthly_limit_usd\":0}", &has, &m, param), 0);
    assert_true(has);
    assert_int_equal(m, 0);
    assert_int_equal(budget("{\"monthly_limit_usd\":null}", &has, &m, param), 0);
    assert_false(has);
    /* bad values name the parameter */
    assert_int_equal(budget("{\"monthly_limit_usd\":-1}", &has, &m, param), -1);
    assert_string_equal(param, "monthly_limit_usd");
    assert_int_equal(budget("{\"monthly_limit_usd\":\"-1\"}", &has, &m, param), -1);
    assert_int_equal(budget("{\"monthly_limit_usd\":1.0000001}", &has, &m, param), -1);
    assert_int_equal(budget("{\"monthly_limit_usd\":1e10}", &has, &m, param), -1);
    assert_int_equal(budget("{\"monthly_limit_usd\":\"lots\"}", &has, &m, param), -1);
    assert_int_equal(budget("{\"monthly_limit_usd\":true}", &has, &m, param), -1);
    assert_int_equal(budget("{\"monthly_limit_usd\":[5]}", &has, &m, param), -1);
    assert_string_equal(param, "monthly_limit_usd");
    assert_int_equal(budget("{}", &has, &m, param), -1);
    assert_string_equal(param, "monthly_limit_usd");
    assert_int_equal(budget("{\"monthly_limit_usd\":5,\"currency\":\"EUR\"}", &has, &m, param), -1);
    assert_string_equal(param, "currency");
    assert_int_equal(budget("[1]", &has, &m, param), -1);
    assert_int_equal(m, -42); /* untouched on failure */
}

static void test_over(void **state)
{
    assert_false(bill_budget_over(1000000, -1)); /* no budget: never over */
    assert_true(bill_budget_over(0, 0));         /* a zero budget stops everything */
    assert_false(bill_budget_over(99, 100));
    assert_true(bill_budget_over(100, 100));
    assert_true(bill_budget_over(101, 100));
}

static void test_thresholds(void **state)
{
    const long long limit = 10000000; /* $10 */

    assert_int_equal(bill_alert_pcts[0], 50);
    assert_int_equal(bill_alert_pcts[1], 80);
    assert_int_equal(bill_alert_pcts[2], 100);
    assert_int_equal(bill_budget_crossed(0, limit), 0);
    assert_int_equal(bill_budget_crossed(4999999, limit), 0);
    assert_int_equal(bill_budget_crossed(5000000, limit), 1); /* exactly 50 % */
    assert_int_equal(bill_budget_crossed(7999999, limit), 1);
    assert_int_equal(bill_budget_crossed(8000000, limit), 3);
    assert_int_equal(bill_budget_crossed(9999999, limit), 3);
    assert_int_equal(bill_budget_crossed(10000000, limit), 7);
    assert_int_equal(bill_budget_crossed(LLONG_MAX, limit), 7); /* no overflow */
    /* odd limits: 50 % of 3 micro-USD is 1.5 -> reached at 2, not at 1 */
    assert_int_equal(bill_budget_crossed(1, 3), 0);
    assert_int_equal(bill_budget_crossed(2, 3), 1);
    assert_int_equal(bill_budget_crossed(3, 3), 7);
    /* no budget, a zero budget, nothing spent: no alerts */
    assert_int_equal(bill_budget_crossed(500, -1), 0);
    assert_int_equal(bill_budget_crossed(500, 0), 0);
    assert_int_equal(bill_budget_crossed(0, 1), 0);
    assert_int_equal(bill_budget_crossed(-5, 1), 0);
    assert_int_equal(bill_budget_crossed(BILL_MAX_BUDGET_MICROS, BILL_MAX_BUDGET_MICROS), 7);

    assert_int_equal(bill_budget_percent(0, limit), 0);
    assert_int_equal(bill_budget_percent(7999999, limit), 79);
    assert_int_equal(bill_budget_percent(10000000, limit), 100);
    assert_int_equal(bill_budget_percent(LLONG_MAX, 1), 999);
    assert_int_equal(bill_budget_percent(5, 0), -1);
    assert_int_equal(bill_budget_percent(5, -1), -1);
}

static void test_alert_id_and_event(void **state)
{
    const int64_t nov = 1793491200000LL, dec = 1796083200000LL; /* 2026-11-01, 2026-12-01 */
    char a[40], b[40], c[40], d[40];
    cJSON *ev, *data;

    bill_alert_id("usr_1", nov, 80, a);
    bill_alert_id("usr_1", nov, 80, b);
    bill_alert_id("usr_1", dec, 80, c);
    bill_alert_id("usr_1", nov, 100, d);
    assert_string_equal(a, b); /* deterministic: a re-send has the same id */
    assert_string_not_equal(a, c);
    assert_string_not_equal(a, d);
    assert_int_equal(strlen(a), 36);
    assert_memory_equal(a, "alr_", 4);

    ev = bill_alert_event("usr_1", nov, 80, 10000000, 8500000);
    assert_string_equal(nf_json_str(ev, "type"), "forge.billing.budget_alert");
    assert_string_equal(nf_json_str(ev, "id"), a);
    assert_string_equal(nf_json_str(ev, "subject"), "usr_1");
    assert_string_equal(nf_json_str(ev, "source"), "nf-billing");
    data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    assert_int_equal(nf_json_int(data, "threshold_percent", 0), 80);
    assert_string_equal(nf_json_str(data, "month"), "2026-11");
    assert_string_equal(nf_json_str(data, "period_start"), "2026-11-01T00:00:00.000Z");
    assert_string_equal(nf_json_str(data, "monthly_limit_usd"), "10.000000");
    assert_string_equal(nf_json_str(data, "spent_usd"), "8.500000");
    assert_int_equal(nf_json_int(data, "percent_used", 0), 85);
    cJSON_Delete(ev);

    ev = bill_cost_event("job_1", "usr_1", 2537020, 2);
    assert_string_equal(nf_json_str(ev, "type"), "forge.billing.job_cost");
    assert_string_equal(nf_json_str(ev, "subject"), "job_1");
    data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    assert_int_equal(nf_json_int(data, "cost_micros", 0), 2537020);
    assert_string_equal(nf_json_str(data, "cost_usd"), "2.537020");
    assert_string_equal(nf_json_str(data, "user_id"), "usr_1");
    assert_int_equal(nf_json_int(data, "attempts_closed", -1), 2);
    cJSON_Delete(ev);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_usd_parse, test_budget_parse, test_over, test_thresholds,
                       test_alert_id_and_event);
}
