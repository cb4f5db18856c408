-- The job lifecycle issue: durable retries, the reconciler, cancel and paginated events.

-- A retried job waits in `queued` until this time; the scheduler's retry poller then
-- dispatches the new attempt and clears it (reconciler.c). NULL: not waiting for a retry.
ALTER TABLE sched.jobs ADD COLUMN next_attempt_at timestamptz;
-- When the current attempt was last dispatched by the reconciler or the retry poller
-- (NULL: only by the request consumer, at insert). Queued jobs whose dispatch is older
-- than NF_SCHEDULER_STUCK_S and absent from the worker-manager are dispatched again.
ALTER TABLE sched.jobs ADD COLUMN dispatched_at timestamptz;

CREATE INDEX jobs_retry_due_idx ON sched.jobs (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
-- The reconciler's sweeps over live jobs (stuck queued, timeouts, stuck cancels).
CREATE INDEX jobs_live_idx ON sched.jobs (status, updated_at)
    WHERE status IN ('queued', 'assigned', 'running', 'cancel_requested');
-- The snapshot repair sweep walks recently changed jobs in (updated_at, job_id) order.
CREATE INDEX jobs_updated_idx ON sched.jobs (updated_at, job_id);
-- GET /api/jobs/ filters on metadata with jsonb containment (metadata @> '{"k": "v"}').
CREATE INDEX jobs_metadata_idx ON sched.jobs USING gin (metadata jsonb_path_ops);

-- The order events were recorded in (the order they were applied, per job): the cursor
-- of GET /api/jobs/{job_id}/events. Event times come from many clocks; seq does not.
ALTER TABLE sched.job_events ADD COLUMN seq bigserial;
CREATE INDEX job_events_seq_idx ON sched.job_events (job_id, seq);
