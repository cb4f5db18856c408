-- Final job costs (the recovery issue, item 6; internals.md "Final costs").

-- attempts 1..n of the job are closed in billing: no usage is added to them any more
-- (forge.billing.job_cost attempts_closed; the largest value seen is kept).
ALTER TABLE sched.jobs ADD COLUMN cost_attempts_closed integer NOT NULL DEFAULT 0
    CHECK (cost_attempts_closed >= 0);
-- Jobs that ended before billing recorded attempt ends: taken as final.
UPDATE sched.jobs SET cost_attempts_closed = attempt
    WHERE status IN ('succeeded', 'failed', 'cancelled', 'dead_lettered');
-- The job object's cost_final: the job is terminal and billing has closed every attempt
-- it had, so cost_micros never changes again.
ALTER TABLE sched.jobs ADD COLUMN cost_final boolean GENERATED ALWAYS AS (
    status IN ('succeeded', 'failed', 'cancelled', 'dead_lettered')
    AND cost_attempts_closed >= attempt) STORED;
