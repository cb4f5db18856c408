/*
 * The job state machine (state.c) against an independent, explicit table of every legal
 * transition. Every (status, event type, attempt relation) not in the table must be
 * ignored, echoed or recorded exactly as the table's side lists say.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <string.h>

#include "nf_test.h"
#include "sched.h"

/* Attempt relations of the event to the job (the job is at attempt CUR). */
enum rel { SAME, NEXT, OLDER, NEWER2, NREL };
#define CUR 2
#define MAXA 3

static int rel_attempt(enum rel r)
{
    switch (r) {
    case SAME:
        return CUR;
    case NEXT:
        return CUR + 1;
    case OLDER:
        return CUR - 1;
    default:
        return CUR + 2;
    }
}

#define QU SCHED_QUEUED
#define AS SCHED_ASSIGNED
#define RU SCHED_RUNNING
#define CR SCHED_CANCEL_REQUESTED
#define SU SCHED_SUCCEEDED
#define FA SCHED_FAILED
#define CA SCHED_CANCELLED
#define DL SCHED_DEAD_LETTERED

#define IN(s) (1u << (s))
#define ACTIVE (IN(QU) | IN(AS) | IN(RU)) /* queued, assigned or running */
#define STAY (-1)                         /* the status does not change */

/* A legal, state-changing (or progress) transition for a non-failure event, from each
 * status of a set. */
struct legal {
    unsigned from; /* IN(status) bits */
    enum sched_evtype ev;
    enum rel rel;
    int to; /* an enum sched_status, or STAY */
    int attempt;
};

static const struct legal legal[] = {
    {IN(QU), SCHED_EV_ASSIGNED, SAME, AS, CUR},
    {IN(QU) | IN(AS), SCHED_EV_RUNNING, SAME, RU, CUR},
    {IN(AS) | IN(RU) | IN(CR), SCHED_EV_PROGRESS, SAME, STAY, CUR},
    {ACTIVE | IN(CR), SCHED_EV_SUCCEEDED, SAME, SU, CUR},
    {ACTIVE, SCHED_EV_CANCEL_REQUESTED, SAME, CR, CUR},
    {ACTIVE, SCHED_EV_CANCEL_REQUESTED, OLDER, CR, CUR},
    {ACTIVE | IN(CR), SCHED_EV_CANCELLED, SAME, CA, CUR},
    {ACTIVE | IN(CR), SCHED_EV_DEAD_LETTERED, SAME, DL, CUR},
    {ACTIVE, SCHED_EV_QUEUED, NEXT, QU, CUR + 1},
    {ACTIVE, SCHED_EV_RETRYING, NEXT, QU, CUR + 1},
};

/* Statuses (same attempt) in which an event is our own echo. */
static bool is_echo(enum sched_status s, enum sched_evtype ev, enum rel r)
{
    if (r != SAME)
        return false;
    return (s == QU && (ev == SCHED_EV_QUEUED || ev == SCHED_EV_RETRYING)) ||
           (s == DL && ev == SCHED_EV_DEAD_LETTERED);
}

/* Whether the table allows ev at relation r in status s; *to and *attempt get the result. */
static bool find_legal(enum sched_status s, enum sched_evtype ev, enum rel r, enum sched_status *to,
                       int *attempt)
{
    size_t i;

    for (i = 0; i < sizeof(legal) / sizeof(legal[0]); i++) {
        if ((legal[i].from & IN(s)) && legal[i].ev == ev && legal[i].rel == r) {
            *to = legal[i].to == STAY ? s : (enum sched_status)legal[i].to;
            *attempt = legal[i].attempt;
            return true;
        }
    }
    return false;
}

static void decide(enum sched_status s, enum sched_evtype ev, int ev_attempt,
                   enum sched_fail_class cls, int attempt, int max_attempts,
                   struct sched_decision *d)
{
    struct sched_job_state cur = {s, attempt, max_attempts};

    assert_int_equal(sched_state_decide(&cur, ev, ev_attempt, cls, d), 0);
}

/* Every combination except failed (tested on its own below) against the table. */
static void test_table_exhaustive(void **state)
{
    struct sched_decision d;
    enum sched_status to;
    int s, ev, r, attempt;
    char where[128];

    for (s = 0; s < SCHED_NSTATUS; s++) {
        for (ev = 0; ev < SCHED_NEVTYPE; ev++) {
            if (ev == SCHED_EV_FAILED)
                continue;
            for (r = 0; r < NREL; r++) {
                snprintf(where, sizeof(where), "%s + %s (rel %d)",
                         sched_status_name((enum sched_status)s),
                         sched_evtype_name((enum sched_evtype)ev), r);
                decide((enum sched_status)s, (enum sched_evtype)ev, rel_attempt((enum rel)r),
                       SCHED_FAIL_NONE, CUR, MAXA, &d);
                if (find_legal((enum sched_status)s, (enum sched_evtype)ev, (enum rel)r, &to,
                               &attempt)) {
                    if (d.outcome != SCHED_OUT_APPLY || d.status != to || d.attempt != attempt)
                        fail_msg("%s: expected apply -> %s/%d, got outcome %d -> %s/%d", where,
                                 sched_status_name(to), attempt, d.outcome,
                                 sched_status_name(d.status), d.attempt);
                    continue;
                }
                if (is_echo((enum sched_status)s, (enum sched_evtype)ev, (enum rel)r)) {
                    if (d.outcome != SCHED_OUT_ECHO)
                        fail_msg("%s: expected echo, got %d", where, d.outcome);
                } else if (ev == SCHED_EV_LOG || ev == SCHED_EV_CHECKPOINT) {
                    if (d.outcome != SCHED_OUT_RECORD)
                        fail_msg("%s: expected record, got %d", where, d.outcome);
                } else if (d.outcome != SCHED_OUT_IGNORE) {
                    fail_msg("%s: expected ignore, got %d", where, d.outcome);
                }
                /* whatever is not applied leaves the job exactly as it was */
                if (d.status != (enum sched_status)s || d.attempt != CUR || d.retry || d.dlq ||
                    d.emit_dead_letter)
                    fail_msg("%s: a non-applied event changed the job", where);
            }
        }
    }
}

static void test_terminal_sticky(void **state)
{
    static const enum sched_status term[] = {SU, FA, CA, DL};
    static const enum sched_fail_class classes[] = {SCHED_FAIL_NONE, SCHED_FAIL_USER_ERROR,
                                                    SCHED_FAIL_INFRA, SCHED_FAIL_TIMEOUT};
    struct sched_decision d;
    size_t t, c;
    int ev, r;

    for (t = 0; t < 4; t++) {
        assert_true(sched_status_terminal(term[t]));
        for (ev = 0; ev < SCHED_NEVTYPE; ev++)
            for (r = 0; r < NREL; r++)
                for (c = 0; c < 4; c++) {
                    decide(term[t], (enum sched_evtype)ev, rel_attempt((enum rel)r), classes[c],
                           CUR, MAXA, &d);
                    assert_int_not_equal(d.outcome, SCHED_OUT_APPLY);
                    assert_int_equal(d.status, term[t]);
                    assert_int_equal(d.attempt, CUR);
                }
    }
    assert_false(sched_status_terminal(QU));
    assert_false(sched_status_terminal(AS));
    assert_false(sched_status_terminal(RU));
    assert_false(sched_status_terminal(CR));
}

/* No rule may name a terminal state as a source. */
static void test_rules_never_leave_terminal(void **state)
{
    unsigned term = SCHED_BIT(SU) | SCHED_BIT(FA) | SCHED_BIT(CA) | SCHED_BIT(DL);
    struct sched_rule r;
    int ev;

    for (ev = 0; ev < SCHED_NEVTYPE; ev++) {
        assert_int_equal(sched_state_rule((enum sched_evtype)ev, &r), 0);
        assert_int_equal(r.from_same & term, 0);
        assert_int_equal(r.from_next & term, 0);
        assert_int_equal(r.from_any & term, 0);
    }
    assert_int_equal(sched_state_rule(SCHED_NEVTYPE, &r), -1);
    assert_int_equal(sched_state_rule((enum sched_evtype) - 1, &r), -1);
}

static void test_failed_by_class(void **state)
{
    static const enum sched_status live[] = {QU, AS, RU};
    struct sched_decision d;
    size_t i;

    for (i = 0; i < 3; i++) {
        /* user_error: terminal failed, never retried */
        decide(live[i], SCHED_EV_FAILED, CUR, SCHED_FAIL_USER_ERROR, CUR, MAXA, &d);
        assert_int_equal(d.outcome, SCHED_OUT_APPLY);
        assert_int_equal(d.status, FA);
        assert_int_equal(d.attempt, CUR);
        assert_false(d.retry);
        assert_false(d.dlq);
        /* no class and an unknown class: treated as not retryable */
        decide(live[i], SCHED_EV_FAILED, CUR, SCHED_FAIL_NONE, CUR, MAXA, &d);
        assert_int_equal(d.status, FA);
        decide(live[i], SCHED_EV_FAILED, CUR, SCHED_FAIL_UNKNOWN, CUR, MAXA, &d);
        assert_int_equal(d.status, FA);
        /* each retryable class with attempts left: queued, attempt + 1, retry */
        decide(live[i], SCHED_EV_FAILED, CUR, SCHED_FAIL_INFRA, CUR, MAXA, &d);
        assert_int_equal(d.status, QU);
        assert_int_equal(d.attempt, CUR + 1);
        assert_true(d.retry);
        assert_false(d.dlq);
        decide(live[i], SCHED_EV_FAILED, CUR, SCHED_FAIL_TIMEOUT, CUR, MAXA, &d);
        assert_true(d.retry);
        decide(live[i], SCHED_EV_FAILED, CUR, SCHED_FAIL_PREEMPTED, CUR, MAXA, &d);
        assert_true(d.retry);
        decide(live[i], SCHED_EV_FAILED, CUR, SCHED_FAIL_WORKER_LOST, CUR, MAXA, &d);
        assert_true(d.retry);
        /* attempts exhausted: dead_lettered, emitted by us, and to the DLQ */
        decide(live[i], SCHED_EV_FAILED, MAXA, SCHED_FAIL_INFRA, MAXA, MAXA, &d);
        assert_int_equal(d.status, DL);
        assert_int_equal(d.attempt, MAXA);
        assert_false(d.retry);
        assert_true(d.emit_dead_letter);
        assert_true(d.dlq);
        /* max_attempts 1: the first retryable failure dead-letters */
        decide(live[i], SCHED_EV_FAILED, 1, SCHED_FAIL_WORKER_LOST, 1, 1, &d);
        assert_int_equal(d.status, DL);
    }
}

static void test_failed_while_cancelling(void **state)
{
    struct sched_decision d;

    decide(CR, SCHED_EV_FAILED, CUR, SCHED_FAIL_INFRA, CUR, MAXA, &d);
    assert_int_equal(d.outcome, SCHED_OUT_APPLY);
    assert_int_equal(d.status, CA); /* never run again a job the user cancelled */
    assert_false(d.retry);
    decide(CR, SCHED_EV_FAILED, CUR, SCHED_FAIL_USER_ERROR, CUR, MAXA, &d);
    assert_int_equal(d.status, FA);
    decide(CR, SCHED_EV_FAILED, CUR, SCHED_FAIL_WORKER_LOST, MAXA, MAXA, &d);
    assert_int_equal(d.outcome, SCHED_OUT_IGNORE); /* older attempt than the job's */
}

static void test_failed_attempt_mismatch(void **state)
{
    struct sched_decision d;
    int r;

    for (r = 0; r < NREL; r++) {
        if (r == SAME)
            continue;
        decide(RU, SCHED_EV_FAILED, rel_attempt((enum rel)r), SCHED_FAIL_INFRA, CUR, MAXA, &d);
        assert_int_equal(d.outcome, SCHED_OUT_IGNORE);
        assert_int_equal(d.status, RU);
        assert_false(d.retry);
    }
}

static void test_dead_lettered_event_goes_to_dlq(void **state)
{
    struct sched_decision d;

    decide(RU, SCHED_EV_DEAD_LETTERED, CUR, SCHED_FAIL_NONE, CUR, MAXA, &d);
    assert_int_equal(d.status, DL);
    assert_true(d.dlq);
    assert_false(d.emit_dead_letter); /* someone else emitted it */
    decide(DL, SCHED_EV_DEAD_LETTERED, CUR, SCHED_FAIL_NONE, CUR, MAXA, &d);
    assert_int_equal(d.outcome, SCHED_OUT_ECHO);
    assert_false(d.dlq);
}

/* A whole life: queued -> assigned -> running -> failed(infra) -> queued(2) -> ... */
static void test_life_with_retry(void **state)
{
    struct sched_job_state j = {QU, 1, 2};
    struct sched_decision d;

    assert_int_equal(sched_state_decide(&j, SCHED_EV_QUEUED, 1, 0, &d), 0);
    assert_int_equal(d.outcome, SCHED_OUT_ECHO);
    sched_state_decide(&j, SCHED_EV_ASSIGNED, 1, 0, &d);
    j.status = d.status;
    sched_state_decide(&j, SCHED_EV_RUNNING, 1, 0, &d);
    j.status = d.status;
    assert_int_equal(j.status, RU);
    sched_state_decide(&j, SCHED_EV_FAILED, 1, SCHED_FAIL_INFRA, &d);
    assert_true(d.retry);
    j.status = d.status;
    j.attempt = d.attempt;
    assert_int_equal(j.attempt, 2);
    /* our own retrying event (new attempt) comes back: echo */
    sched_state_decide(&j, SCHED_EV_RETRYING, 2, 0, &d);
    assert_int_equal(d.outcome, SCHED_OUT_ECHO);
    /* a late event of attempt 1 is stale */
    sched_state_decide(&j, SCHED_EV_SUCCEEDED, 1, 0, &d);
    assert_int_equal(d.outcome, SCHED_OUT_IGNORE);
    sched_state_decide(&j, SCHED_EV_RUNNING, 2, 0, &d);
    j.status = d.status;
    sched_state_decide(&j, SCHED_EV_FAILED, 2, SCHED_FAIL_TIMEOUT, &d);
    assert_int_equal(d.status, DL);
    j.status = d.status;
    /* running after a terminal state: ignored */
    sched_state_decide(&j, SCHED_EV_RUNNING, 2, 0, &d);
    assert_int_equal(d.outcome, SCHED_OUT_IGNORE);
    assert_int_equal(d.status, DL);
}

/*
 * The paths of the job lifecycle issue, as the scheduler's own writers meet the state
 * machine: the reconciler's requeue (the row moves first, its queued event comes back),
 * its timeout failure (class timeout), and a user's cancel racing the worker.
 */
static void test_reconciler_and_cancel_paths(void **state)
{
    struct sched_job_state j = {QU, 1, 3};
    struct sched_decision d;

    /* requeue of a lost dispatch: the row is at attempt 2 already, the read-back queued
     * event of attempt 2 is an echo, a late assigned of attempt 1 is stale */
    j.attempt = 2;
    sched_state_decide(&j, SCHED_EV_QUEUED, 2, 0, &d);
    assert_int_equal(d.outcome, SCHED_OUT_ECHO);
    sched_state_decide(&j, SCHED_EV_ASSIGNED, 1, 0, &d);
    assert_int_equal(d.outcome, SCHED_OUT_IGNORE);
    /* someone else's requeue (attempt + 1) of a queued job applies */
    j.attempt = 1;
    sched_state_decide(&j, SCHED_EV_QUEUED, 2, 0, &d);
    assert_int_equal(d.outcome, SCHED_OUT_APPLY);
    assert_int_equal(d.status, QU);
    assert_int_equal(d.attempt, 2);
    assert_false(d.retry); /* not a failure: no backoff, no retrying event */

    /* the timeout pass: failed {class timeout} of the running attempt is retried ... */
    j = (struct sched_job_state){RU, 1, 3};
    sched_state_decide(&j, SCHED_EV_FAILED, 1, SCHED_FAIL_TIMEOUT, &d);
    assert_true(d.retry);
    assert_int_equal(d.status, QU);
    assert_int_equal(d.attempt, 2);
    /* ... and the same event read twice (the pass produces it again) changes nothing more */
    j.status = d.status;
    j.attempt = d.attempt;
    sched_state_decide(&j, SCHED_EV_FAILED, 1, SCHED_FAIL_TIMEOUT, &d);
    assert_int_equal(d.outcome, SCHED_OUT_IGNORE);
    /* ... dead-lettered on the last attempt, cancelled when it was being cancelled */
    j = (struct sched_job_state){RU, 3, 3};
    sched_state_decide(&j, SCHED_EV_FAILED, 3, SCHED_FAIL_TIMEOUT, &d);
    assert_int_equal(d.status, DL);
    assert_true(d.emit_dead_letter && d.dlq);
    j = (struct sched_job_state){CR, 1, 3};
    sched_state_decide(&j, SCHED_EV_FAILED, 1, SCHED_FAIL_TIMEOUT, &d);
    assert_int_equal(d.status, CA);

    /* cancel of a running job: the worker finishes first, or stops; both settle it */
    j = (struct sched_job_state){CR, 1, 3};
    sched_state_decide(&j, SCHED_EV_SUCCEEDED, 1, 0, &d);
    assert_int_equal(d.status, SU);
    sched_state_decide(&j, SCHED_EV_CANCELLED, 1, 0, &d);
    assert_int_equal(d.status, CA);
    /* progress still counts while cancelling; a second cancel_requested does not apply */
    sched_state_decide(&j, SCHED_EV_PROGRESS, 1, 0, &d);
    assert_int_equal(d.outcome, SCHED_OUT_APPLY);
    assert_int_equal(d.status, CR);
    sched_state_decide(&j, SCHED_EV_CANCEL_REQUESTED, 1, 0, &d);
    assert_int_equal(d.outcome, SCHED_OUT_IGNORE);
    /* once cancelled, the worker's late events are all ignored */
    j.status = CA;
    for (int t = 0; t < SCHED_NEVTYPE; t++) {
        sched_state_decide(&j, (enum sched_evtype)t, 1, SCHED_FAIL_INFRA, &d);
        assert_int_equal(d.status, CA);
        assert_true(d.outcome == SCHED_OUT_IGNORE || d.outcome == SCHED_OUT_RECORD);
    }
}

static void test_names_roundtrip(void **state)
{
    enum sched_status s;
    enum sched_evtype t;
    char ce[64];
    int i;

    for (i = 0; i < SCHED_NSTATUS; i++) {
        assert_int_equal(sched_status_parse(sched_status_name((enum sched_status)i), &s), 0);
        assert_int_equal(s, i);
    }
    for (i = 0; i < SCHED_NEVTYPE; i++) {
        snprintf(ce, sizeof(ce), "forge.job.%s", sched_evtype_name((enum sched_evtype)i));
        assert_int_equal(sched_evtype_parse(ce, &t), 0);
        assert_int_equal(t, i);
    }
    assert_int_equal(sched_status_parse("done", &s), -1);
    assert_int_equal(sched_status_parse(NULL, &s), -1);
    assert_int_equal(sched_evtype_parse("running", &t), -1); /* no prefix */
    assert_int_equal(sched_evtype_parse("forge.job.requested", &t), -1);
    assert_int_equal(sched_evtype_parse("forge.job.", &t), -1);
    assert_int_equal(sched_evtype_parse("forge.usage.recorded", &t), -1);
    assert_int_equal(sched_evtype_parse(NULL, &t), -1);
    assert_string_equal(sched_status_name(SCHED_NSTATUS), "unknown");
    assert_string_equal(sched_evtype_name(SCHED_NEVTYPE), "unknown");
}

static void test_fail_classes(void **state)
{
    assert_int_equal(sched_fail_class_parse("user_error"), SCHED_FAIL_USER_ERROR);
    assert_int_equal(sched_fail_class_parse("worker_lost"), SCHED_FAIL_WORKER_LOST);
    assert_int_equal(sched_fail_class_parse("preempted"), SCHED_FAIL_PREEMPTED);
    assert_int_equal(sched_fail_class_parse("timeout"), SCHED_FAIL_TIMEOUT);
    assert_int_equal(sched_fail_class_parse("infra"), SCHED_FAIL_INFRA);
    assert_int_equal(sched_fail_class_parse(NULL), SCHED_FAIL_NONE);
    assert_int_equal(sched_fail_class_parse("INFRA"), SCHED_FAIL_UNKNOWN);
    assert_false(sched_fail_class_retryable(SCHED_FAIL_USER_ERROR));
    assert_false(sched_fail_class_retryable(SCHED_FAIL_NONE));
    assert_false(sched_fail_class_retryable(SCHED_FAIL_UNKNOWN));
    assert_true(sched_fail_class_retryable(SCHED_FAIL_INFRA));
    assert_true(sched_fail_class_retryable(SCHED_FAIL_TIMEOUT));
    assert_true(sched_fail_class_retryable(SCHED_FAIL_PREEMPTED));
    assert_true(sched_fail_class_retryable(SCHED_FAIL_WORKER_LOST));
    assert_string_equal(sched_fail_class_name(SCHED_FAIL_WORKER_LOST), "worker_lost");
}

static void test_status_array(void **state)
{
    char buf[160], tiny[8];

    assert_int_equal(sched_status_array(0, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "{}");
    assert_int_equal(sched_status_array(SCHED_BIT(QU), buf, sizeof(buf)), 0);
    assert_string_equal(buf, "{queued}");
    assert_int_equal(sched_status_array(SCHED_NONTERMINAL, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "{queued,assigned,running,cancel_requested}");
    assert_int_equal(sched_status_array(SCHED_NONTERMINAL, tiny, sizeof(tiny)), -1);
    assert_int_equal(sched_status_array(0, tiny, 2), -1);
}

static void test_backoff(void **state)
{
    assert_int_equal(sched_retry_backoff_ms(1, 60), 2000);
    assert_int_equal(sched_retry_backoff_ms(2, 60), 4000);
    assert_int_equal(sched_retry_backoff_ms(5, 60), 32000);
    assert_int_equal(sched_retry_backoff_ms(6, 60), 60000); /* 64 s capped */
    assert_int_equal(sched_retry_backoff_ms(9, 60), 60000);
    assert_int_equal(sched_retry_backoff_ms(1000, 60), 60000);
    assert_int_equal(sched_retry_backoff_ms(0, 60), 1000);
    assert_int_equal(sched_retry_backoff_ms(-3, 60), 1000);
    assert_int_equal(sched_retry_backoff_ms(3, 5), 5000);
    assert_int_equal(sched_retry_backoff_ms(3, 0), 1000); /* cap at least 1 s */
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_table_exhaustive, test_terminal_sticky,
                       test_rules_never_leave_terminal, test_failed_by_class,
                       test_failed_while_cancelling, test_failed_attempt_mismatch,
                       test_dead_lettered_event_goes_to_dlq, test_life_with_retry,
                       test_reconciler_and_cancel_paths, test_names_roundtrip, test_fail_classes,
                       test_status_array, test_backoff);
}
