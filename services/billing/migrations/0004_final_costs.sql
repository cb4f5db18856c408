-- Final job costs (the recovery issue, item 6; internals.md "Final costs").

-- How each attempt of a job ended, as billing saw it on forge.jobs.events: one row per
-- (job, attempt), the first succeeded / failed / cancelled event wins. An attempt is
-- closed once billing holds every usage event its worker said it published (usage_events,
-- from the worker's own terminal event), at once when the platform ended it (no count:
-- lost worker, timeout, cancel before it ran), or NF_BILLING_CLOSE_WAIT_S after it ended
-- whatever arrived. Usage for a closed attempt is refused (reason attempt_closed), so a
-- job whose attempts are all closed has a cost that never changes again.
CREATE TABLE billing.attempts (
    job_id       text NOT NULL,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    user_id      text NOT NULL,
    usage_events integer CHECK (usage_events >= 0),  -- NULL: ended by the platform
    ended_at     timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,
    PRIMARY KEY (job_id, attempt)
);
-- The sweep's overdue attempts (ended, not closed after the close wait).
CREATE INDEX attempts_open_idx ON billing.attempts (ended_at) WHERE closed_at IS NULL;

-- Counting an attempt's usage events.
CREATE INDEX usage_events_attempt_idx ON billing.usage_events (job_id, attempt);
CREATE INDEX usage_refused_attempt_idx ON billing.usage_refused (job_id, attempt);
