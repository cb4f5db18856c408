/*
 * The budget check's pure part: reading billing's answer to GET /internal/budget and the
 * error a refused job carries. The check itself is a stage of consume_requested.c.
 */
#include "sched.h"

#include <stdio.h>
#include <string.h>

#include "nf_json.h"

int sched_budget_over(const char *body, size_t len)
{
    cJSON *o = body ? nf_json_parse(body, len) : NULL;
    const cJSON *it = o ? cJSON_GetObjectItemCaseSensitive(o, "over_budget") : NULL;
    int rc = cJSON_IsBool(it) ? (cJSON_IsTrue(it) ? 1 : 0) : -1;

    cJSON_Delete(o);
    return rc;
}

cJSON *sched_budget_error(const char *body, size_t len)
{
    cJSON *o = body ? nf_json_parse(body, len) : NULL;
    const char *limit = o ? nf_json_str(o, "monthly_limit_usd") : NULL;
    const char *spent = o ? nf_json_str(o, "spent_usd") : NULL;
    cJSON *err = nf_json_obj();
    char msg[256];

    if (limit && spent && strlen(limit) < 32 && strlen(spent) < 32)
        snprintf(msg, sizeof(msg),
                 "monthly budget exceeded: %s USD spent this month of a %s USD budget; raise it "
                 "with PUT /api/billing/budget",
                 spent, limit);
    else
        snprintf(msg, sizeof(msg),
                 "monthly budget exceeded; raise it with PUT /api/billing/budget");
    nf_json_add_str(err, "code", "budget_exceeded");
    nf_json_add_str(err, "message", msg);
    nf_json_add_str(err, "class", "user_error");
    cJSON_Delete(o);
    return err;
}
