/*
 * The job state machine of DESIGN §4 as pure functions over small values. Nothing here
 * touches a backend: consume_events.c turns a rule into one conditional SQL statement,
 * and sched_state_decide() is the reference the unit and integration tests hold it to.
 *
 *            +-------------------- cancel_requested -------------------+
 *            |                      |                                  v
 *   queued -> assigned -> running ----> succeeded | failed | cancelled | dead_lettered
 *     ^   \____________/______/   |
 *     |            (retryable failure, attempt < max_attempts: attempt + 1)
 *     +-------------------------------+
 *
 * Terminal states never appear in a rule's from-masks, so nothing leaves them.
 */
#include "sched.h"

#include <stdio.h>
#include <string.h>

#include "nf_str.h"

static const char *const status_names[SCHED_NSTATUS] = {
    "queued",    "assigned", "running",   "cancel_requested",
    "succeeded", "failed",   "cancelled", "dead_lettered",
};

static const char *const evtype_names[SCHED_NEVTYPE] = {
    "queued", "assigned",         "running",   "progress", "log",           "succeeded",
    "failed", "cancel_requested", "cancelled", "retrying", "dead_lettered", "checkpoint",
};

#define Q SCHED_BIT(SCHED_QUEUED)
#define A SCHED_BIT(SCHED_ASSIGNED)
#define R SCHED_BIT(SCHED_RUNNING)
#define C SCHED_BIT(SCHED_CANCEL_REQUESTED)
#define D SCHED_BIT(SCHED_DEAD_LETTERED)
#define NT SCHED_NONTERMINAL

/*
 * The table. Notes on the less obvious rows:
 * - running is accepted from queued too: the worker's running event can reach the topic
 *   before the worker-manager's assigned event (two producers); the late assigned is
 *   then ignored as stale.
 * - queued / retrying with attempt + 1 from a live state is a requeue by someone else
 *   (the worker-manager's reaper); with the same attempt in queued it is our own echo.
 * - cancel_requested is attempt-agnostic: the user cancels the job, not an attempt.
 * - succeeded / failed / cancelled are accepted in cancel_requested: the worker may
 *   finish before it sees the cancel.
 */
static const struct sched_rule rules[SCHED_NEVTYPE] = {
    [SCHED_EV_QUEUED] = {.from_next = Q | A | R, .echo = Q, .has_to = true, .to = SCHED_QUEUED},
    [SCHED_EV_ASSIGNED] = {.from_same = Q, .has_to = true, .to = SCHED_ASSIGNED},
    [SCHED_EV_RUNNING] = {.from_same = Q | A, .has_to = true, .to = SCHED_RUNNING},
    [SCHED_EV_PROGRESS] = {.from_same = A | R | C},
    [SCHED_EV_LOG] = {.record_any = true},
    [SCHED_EV_SUCCEEDED] = {.from_same = NT, .has_to = true, .to = SCHED_SUCCEEDED},
    [SCHED_EV_FAILED] = {.from_same = NT, .failure = true},
    [SCHED_EV_CANCEL_REQUESTED] = {.from_any = Q | A | R,
                                   .has_to = true,
                                   .to = SCHED_CANCEL_REQUESTED},
    [SCHED_EV_CANCELLED] = {.from_same = NT, .has_to = true, .to = SCHED_CANCELLED},
    [SCHED_EV_RETRYING] = {.from_next = Q | A | R, .echo = Q, .has_to = true, .to = SCHED_QUEUED},
    [SCHED_EV_DEAD_LETTERED] = {.from_same = NT,
                                .echo = D,
                                .has_to = true,
                                .to = SCHED_DEAD_LETTERED},
    /* recorded (and its artifact registered) whatever the job's state: the attempt that
     * wrote it may have failed or been superseded since */
    [SCHED_EV_CHECKPOINT] = {.record_any = true},
};

#undef Q
#undef A
#undef R
#undef C
#undef D
#undef NT

const char *sched_status_name(enum sched_status s)
{
    return (unsigned)s < SCHED_NSTATUS ? status_names[s] : "unknown";
}

int sched_status_parse(const char *name, enum sched_status *out)
{
    int i = nf_str_index(status_names, SCHED_NSTATUS, name);

    if (i < 0)
        return -1;
    *out = (enum sched_status)i;
    return 0;
}

bool sched_status_terminal(enum sched_status s)
{
    return s == SCHED_SUCCEEDED || s == SCHED_FAILED || s == SCHED_CANCELLED ||
           s == SCHED_DEAD_LETTERED;
}

const char *sched_evtype_name(enum sched_evtype t)
{
    return (unsigned)t < SCHED_NEVTYPE ? evtype_names[t] : "unknown";
}

int sched_evtype_parse(const char *ce_type, enum sched_evtype *out)
{
    static const char prefix[] = "forge.job.";
    int i;

    if (!ce_type || strncmp(ce_type, prefix, sizeof(prefix) - 1) != 0)
        return -1;
    i = nf_str_index(evtype_names, SCHED_NEVTYPE, ce_type + sizeof(prefix) - 1);
    if (i < 0)
        return -1;
    *out = (enum sched_evtype)i;
    return 0;
}

enum sched_fail_class sched_fail_class_parse(const char *cls)
{
    if (!cls)
        return SCHED_FAIL_NONE;
    if (strcmp(cls, "user_error") == 0)
        return SCHED_FAIL_USER_ERROR;
    if (strcmp(cls, "worker_lost") == 0)
        return SCHED_FAIL_WORKER_LOST;
    if (strcmp(cls, "preempted") == 0)
        return SCHED_FAIL_PREEMPTED;
    if (strcmp(cls, "timeout") == 0)
        return SCHED_FAIL_TIMEOUT;
    if (strcmp(cls, "infra") == 0)
        return SCHED_FAIL_INFRA;
    return SCHED_FAIL_UNKNOWN;
}

const char *sched_fail_class_name(enum sched_fail_class c)
{
    switch (c) {
    case SCHED_FAIL_USER_ERROR:
        return "user_error";
    case SCHED_FAIL_WORKER_LOST:
        return "worker_lost";
    case SCHED_FAIL_PREEMPTED:
        return "preempted";
    case SCHED_FAIL_TIMEOUT:
        return "timeout";
    case SCHED_FAIL_INFRA:
        return "infra";
    case SCHED_FAIL_NONE:
        return "none";
    default:
        return "unknown";
    }
}

bool sched_fail_class_retryable(enum sched_fail_class c)
{
    return c == SCHED_FAIL_WORKER_LOST || c == SCHED_FAIL_PREEMPTED || c == SCHED_FAIL_TIMEOUT ||
           c == SCHED_FAIL_INFRA;
}

int sched_state_rule(enum sched_evtype t, struct sched_rule *out)
{
    if ((unsigned)t >= SCHED_NEVTYPE)
        return -1;
    *out = rules[t];
    return 0;
}

int sched_names_array(unsigned mask, const char *const *names, int n, char *out, size_t outlen)
{
    size_t len = 0;
    int i, w;

    if (outlen < 3)
        return -1;
    out[len++] = '{';
    for (i = 0; i < n; i++) {
        if (!(mask & (1u << i)))
            continue;
        w = snprintf(out + len, outlen - len, "%s%s", len > 1 ? "," : "", names[i]);
        if (w < 0 || (size_t)w >= outlen - len)
            return -1;
        len += (size_t)w;
    }
    if (len + 2 > outlen)
        return -1;
    out[len++] = '}';
    out[len] = '\0';
    return 0;
}

int sched_status_array(unsigned mask, char *out, size_t outlen)
{
    return sched_names_array(mask, status_names, SCHED_NSTATUS, out, outlen);
}

int sched_state_decide(const struct sched_job_state *cur, enum sched_evtype t, int ev_attempt,
                       enum sched_fail_class cls, struct sched_decision *out)
{
    struct sched_rule r;
    unsigned bit;
    bool retryable;

    if (sched_state_rule(t, &r) < 0)
        return -1;
    memset(out, 0, sizeof(*out));
    out->outcome = SCHED_OUT_IGNORE;
    out->status = cur->status;
    out->attempt = cur->attempt;
    bit = (unsigned)cur->status < SCHED_NSTATUS ? SCHED_BIT(cur->status) : 0;

    if (ev_attempt == cur->attempt && (r.echo & bit))
        out->outcome = SCHED_OUT_ECHO;
    else if (((r.from_same & bit) && ev_attempt == cur->attempt) ||
             ((r.from_next & bit) && ev_attempt == cur->attempt + 1) ||
             ((r.from_any & bit) && ev_attempt <= cur->attempt))
        out->outcome = SCHED_OUT_APPLY;
    else if (r.record_any)
        out->outcome = SCHED_OUT_RECORD;
    if (out->outcome != SCHED_OUT_APPLY)
        return 0;

    if (r.failure) {
        retryable = sched_fail_class_retryable(cls);
        if (cur->status == SCHED_CANCEL_REQUESTED && retryable) {
            out->status = SCHED_CANCELLED; /* lost while cancelling: do not run it again */
        } else if (!retryable) {
            out->status = SCHED_FAILED;
        } else if (cur->attempt < cur->max_attempts) {
            out->status = SCHED_QUEUED;
            out->attempt = cur->attempt + 1;
            out->retry = true;
        } else {
            out->status = SCHED_DEAD_LETTERED;
            out->emit_dead_letter = true;
            out->dlq = true;
        }
        return 0;
    }
    if (r.has_to)
        out->status = r.to;
    if (ev_attempt > out->attempt)
        out->attempt = ev_attempt;
    if (t == SCHED_EV_DEAD_LETTERED)
        out->dlq = true; /* someone else dead-lettered it: operators still hear of it */
    return 0;
}

int sched_retry_backoff_ms(int attempt, int cap_s)
{
    long long ms;

    if (cap_s < 1)
        cap_s = 1;
    if (attempt < 0)
        attempt = 0;
    if (attempt >= 20)
        return cap_s * 1000;
    ms = (1LL << attempt) * 1000;
    return ms > (long long)cap_s * 1000 ? cap_s * 1000 : (int)ms;
}
