-- Live training metrics (issue 17 §2): the points a job's handler printed as
-- {"metric": {...}}, published by its worker as forge.job.metric and kept here.
-- One row per event: event_id makes a redelivered event a no-op; seq is the order they
-- were recorded in (the cursor of GET /api/jobs/{job_id}/metrics and of its SSE).
CREATE TABLE IF NOT EXISTS sched.job_metrics (
    seq      bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    job_id   text NOT NULL REFERENCES sched.jobs (job_id),
    attempt  integer NOT NULL CHECK (attempt >= 1),
    step     bigint NOT NULL CHECK (step >= 0),
    epoch    double precision,
    data     jsonb NOT NULL, -- {"<name>": number, ...}: the point's values, step and epoch left out
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS job_metrics_job_seq_idx ON sched.job_metrics (job_id, seq);
