/*
 * nf_jobs: the one list of job types and their dispatch topics.
 */
#include "nf_jobs.h"

#include <stddef.h>

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
