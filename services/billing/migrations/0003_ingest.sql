-- Batch ingest with lease checks, per-job costs and budget alerts (the billing issue).

-- Who ran which attempt: one row per forge.job.assigned event seen on forge.jobs.events.
-- A usage event that names a worker is recorded only when this row says that worker
-- leased that attempt of that user's job.
CREATE TABLE billing.leases (
    job_id    text NOT NULL,
    attempt   integer NOT NULL CHECK (attempt >= 1),
    worker_id text NOT NULL,
    user_id   text NOT NULL,
    seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);

-- Usage whose lease has not been seen yet (the assigned event is on another topic and
-- may be consumed later). The sweeper records or refuses each one once its lease shows
-- up, and refuses it after NF_BILLING_LEASE_WAIT_S without one.
CREATE TABLE billing.usage_pending (
    event_id     text PRIMARY KEY,
    user_id      text NOT NULL,
    job_id       text NOT NULL,
    job_type     text NOT NULL,
    attempt      integer NOT NULL,
    worker_id    text NOT NULL,
    meter        text NOT NULL,
    quantity     bigint NOT NULL CHECK (quantity > 0),
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_pending_lease_idx ON billing.usage_pending (job_id, attempt);
CREATE INDEX usage_pending_age_idx ON billing.usage_pending (parked_at);

-- Usage refused because the emitting worker did not lease the job (never billed).
CREATE TABLE billing.usage_refused (
    event_id   text PRIMARY KEY,
    user_id    text NOT NULL,
    job_id     text NOT NULL,
    attempt    integer,
    worker_id  text,
    meter      text NOT NULL,
    quantity   bigint NOT NULL,
    reason     text NOT NULL,            -- not_leased | lease_timeout
    refused_at timestamptz NOT NULL DEFAULT now()
);

-- Per-job hourly rollup of the compute meters (storage is billed to the user, not the
-- job): a job's cost_usd is read from here without scanning its events.
CREATE TABLE billing.usage_jobs (
    job_id   text NOT NULL,
    user_id  text NOT NULL,
    meter    text NOT NULL,
    hour     timestamptz NOT NULL,
    quantity bigint NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (job_id, meter, hour)
);
INSERT INTO billing.usage_jobs (job_id, user_id, meter, hour, quantity)
SELECT job_id, min(user_id), meter, date_trunc('hour', window_start, 'UTC'), sum(quantity)
FROM billing.usage_events
WHERE meter <> 'storage_byte_hours'
GROUP BY job_id, meter, date_trunc('hour', window_start, 'UTC');

-- Budget alerts sent: each threshold at most once per user and calendar month (UTC).
CREATE TABLE billing.budget_alerts (
    user_id   text NOT NULL,
    month     date NOT NULL,             -- first day of the month
    threshold integer NOT NULL CHECK (threshold IN (50, 80, 100)),
    sent_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, month, threshold)
);
