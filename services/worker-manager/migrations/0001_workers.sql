-- The worker registry: one row per registered agent. Only the SHA-256 of a worker's
-- token is stored (hex); the token itself is shown once, in the registration answer.
CREATE SCHEMA IF NOT EXISTS wm;

CREATE TABLE IF NOT EXISTS wm.workers (
    worker_id     text PRIMARY KEY CHECK (worker_id LIKE 'wrk\_%'),
    token_hash    char(64) NOT NULL,
    hostname      text NOT NULL,
    gpu_type      text,
    gpu_count     integer NOT NULL DEFAULT 0 CHECK (gpu_count BETWEEN 0 AND 16),
    job_types     text[] NOT NULL,
    labels        jsonb NOT NULL DEFAULT '{}'::jsonb,
    version       text NOT NULL DEFAULT '',
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'online'
                  CHECK (status IN ('online', 'offline', 'disabled'))
);

CREATE INDEX IF NOT EXISTS workers_registered_at_idx ON wm.workers (registered_at DESC);
