#pragma once
#include <stdbool.h>
/*
 * nf_jobs: the six job types (DESIGN §1), listed once for every service. A type's index is
 * its place in nf_job_types; sets of types are bit masks over it (bit i = nf_job_types[i]),
 * and per-type tables (metrics, params, queues) follow the same order.
 */

#define NF_NJOB_TYPES 6

/* "generate", "audit", "distill", "train", "evaluate", "deploy". */
extern const char *const nf_job_types[NF_NJOB_TYPES];

/* The dispatch topics forge.jobs.<type> in the same order, NULL-terminated (a consumer's
 * topic list, nf_svc_desc.consume). */
extern const char *const nf_job_topics[NF_NJOB_TYPES + 1];

/* Index of name in nf_job_types; -1 when unknown or NULL (case matters). */
int nf_job_type_index(const char *name);

/* A training/eval metric's name in a forge.job.metric point (the worker checks handler
 * lines with it, the scheduler the events): 1..NF_METRIC_NAME_MAX of [A-Za-z0-9_./-],
 * the first alphanumeric ("valid_loss", "arc_easy/acc"; no spaces, quotes or controls). */
#define NF_METRIC_NAME_MAX 64
bool nf_metric_name_valid(const char *s);
