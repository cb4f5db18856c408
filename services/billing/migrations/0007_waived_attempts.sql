-- Attempts that failed through the platform's fault are not charged (issue 15;
-- internals.md "Waived attempts").
--
-- An attempt that ends with error class worker_lost, infra or preempted is waived: its
-- usage stays metered (usage_events, usage_hourly) but is not priced. When the attempt
-- closes, the close moves the quantities it had recorded out of the job's cells
-- (usage_jobs) into usage_waived, in the same statement that sets closed_at; usage that
-- arrives for it after the close is recorded straight into usage_waived. So for compute
-- meters, per user, job type, meter and hour:
--   usage_hourly (metered) = usage_jobs (charged cells) + usage_waived (not charged)

-- How the attempt failed (the first end's error.class; NULL for succeeded / cancelled)
-- and whether that makes it free.
ALTER TABLE billing.attempts ADD COLUMN error_class text;
ALTER TABLE billing.attempts ADD COLUMN waived boolean NOT NULL DEFAULT false;

-- The usage of waived attempts, per attempt, meter and UTC hour (compute meters only).
CREATE TABLE billing.usage_waived (
    job_id   text NOT NULL,
    attempt  integer NOT NULL,
    user_id  text NOT NULL,
    job_type text NOT NULL,
    meter    text NOT NULL,
    hour     timestamptz NOT NULL,
    quantity bigint NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (job_id, attempt, meter, hour)
);
CREATE INDEX usage_waived_user_hour_idx ON billing.usage_waived (user_id, hour);

-- A cell emptied by a waiver (quantity 0) is no line of a bill.
CREATE OR REPLACE VIEW billing.cells AS
    SELECT j.user_id, j.job_type, j.job_id, j.meter, j.hour, j.quantity
    FROM billing.usage_jobs j
    WHERE j.quantity > 0
    UNION ALL
    SELECT h.user_id, h.job_type, NULL, h.meter, h.hour, h.quantity
    FROM billing.usage_hourly h
    WHERE h.meter = 'storage_byte_hours';
