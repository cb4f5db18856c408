/*
 * A job submission body (POST /api/jobs/{type}): JSON as the client sent it, validated
 * for the job type the first byte picks, the way the gateway does before the 202.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "fuzz.h"
#include "gw.h"
#include "nf_jobs.h"
#include "nf_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *type = nf_job_types[data[0] % NF_NJOB_TYPES];
    cJSON *body = nf_json_parse((const char *)data + 1, size - 1);
    if (body == NULL)
        return 0;
    cJSON *out = NULL;
    struct nf_json_err err = {{0}, {0}};
    if (gw_validate_job(type, body, &out, &err) == 0) {
        char *s = nf_json_print(out); /* what is published must print */
        free(s);
    }
    cJSON_Delete(out);
    cJSON_Delete(body);
    return 0;
}
