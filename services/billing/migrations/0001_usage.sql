-- billing schema: metered usage (DESIGN §8). Quantities are integers in each meter's base
-- unit: gpu_ms, input_tokens, output_tokens, storage_byte_hours.
CREATE SCHEMA IF NOT EXISTS billing;

-- One row per usage event; the envelope id is deterministic (internals.md), so a
-- redelivered or replayed event is refused by the primary key.
CREATE TABLE billing.usage_events (
    event_id     text PRIMARY KEY,
    user_id      text NOT NULL,
    job_id       text NOT NULL,
    job_type     text NOT NULL,
    attempt      integer,
    worker_id    text,
    meter        text NOT NULL
                 CHECK (meter IN ('gpu_ms', 'input_tokens', 'output_tokens',
                                  'storage_byte_hours')),
    quantity     bigint NOT NULL CHECK (quantity > 0),
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL CHECK (window_end >= window_start),
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_job_idx ON billing.usage_events (job_id);
CREATE INDEX usage_events_user_idx ON billing.usage_events (user_id, window_start);

-- Hourly rollup: an event counts in the UTC hour its window starts in.
CREATE TABLE billing.usage_hourly (
    user_id  text NOT NULL,
    job_type text NOT NULL,
    meter    text NOT NULL,
    hour     timestamptz NOT NULL,
    quantity bigint NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (user_id, job_type, meter, hour)
);
CREATE INDEX usage_hourly_user_hour_idx ON billing.usage_hourly (user_id, hour);

-- Monthly spending limits, checked by the scheduler before dispatch (a later issue).
CREATE TABLE billing.budgets (
    user_id              text PRIMARY KEY,
    monthly_limit_micros bigint NOT NULL CHECK (monthly_limit_micros >= 0),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
