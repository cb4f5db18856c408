/*
 * sse.c, the pure part: one job event as a Server-Sent Events message - one line per
 * field, the data on one line whatever the event holds, and nothing for an item that
 * could break the framing.
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

static char *format(const char *json)
{
    cJSON *ev = cJSON_Parse(json);
    char *out;

    assert_non_null(ev);
    out = gw_sse_format(ev);
    cJSON_Delete(ev);
    return out;
}

static void test_message(void **state)
{
    char *out = format("{\"type\":\"forge.job.log\",\"cursor\":\"ZTE6Mg\",\"attempt\":1,"
                       "\"data\":{\"message\":\"two\\nlines\"}}");

    assert_non_null(out);
    assert_string_equal(out, "id: ZTE6Mg\nevent: forge.job.log\ndata: {\"type\":\"forge.job.log\","
                             "\"cursor\":\"ZTE6Mg\",\"attempt\":1,\"data\":{\"message\":"
                             "\"two\\nlines\"}}\n\n");
    /* exactly one blank line, at the end: the message is not split */
    assert_int_equal(strstr(out, "\n\n") - out, (long)strlen(out) - 2);
    free(out);
}

static void test_without_cursor(void **state)
{
    char *out = format("{\"type\":\"forge.job.queued\"}");

    assert_string_equal(out, "event: forge.job.queued\ndata: {\"type\":\"forge.job.queued\"}\n\n");
    free(out);
}

static void test_refused(void **state)
{
    assert_null(format("{\"cursor\":\"x\"}"));            /* no type */
    assert_null(format("{\"type\":\"\"}"));               /* empty type */
    assert_null(format("{\"type\":7}"));                  /* not a string */
    assert_null(format("{\"type\":\"a\\nevent: end\"}")); /* would inject a field */
    assert_null(format("{\"type\":\"a\",\"cursor\":\"x\\r\\ny\"}"));
    assert_null(gw_sse_format(NULL));
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_message, test_without_cursor, test_refused);
}
