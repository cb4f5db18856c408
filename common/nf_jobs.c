/*
 * nf_jobs: the one list of job types and their dispatch topics.
 */
#include "nf_jobs.h"

#include <stddef.h>
#include <string.h>

#include "nf_kafka.h"
#include "nf_str.h"

const char *const nf_job_types[NF_NJOB_TYPES] = {
    "generate", "audit", "distill", "train", "evaluate", "deploy",
};

const char *const nf_job_topics[NF_NJOB_TYPES + 1] = {
    NF_TOPIC_JOBS_GENERATE,
    NF_TOPIC_JOBS_AUDIT,
    NF_TOPIC_JOBS_DISTILL,
    NF_TOPIC_JOBS_TRAIN,
    NF_TOPIC_JOBS_EVALUATE,
    NF_TOPIC_JOBS_DEPLOY,
    NULL,
};

int nf_job_type_index(const char *name)
{
    return nf_str_index(nf_job_types, NF_NJOB_TYPES, name);
}

bool nf_metric_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > NF_METRIC_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '/' && c != '-')))
            return false;
    }
    return true;
}
