-- sched schema: the scheduler's source of truth (DESIGN §2, §4).
CREATE SCHEMA IF NOT EXISTS sched;

CREATE TABLE sched.jobs (
    job_id          text PRIMARY KEY,
    user_id         text NOT NULL,
    job_type        text NOT NULL
                    CHECK (job_type IN ('generate', 'audit', 'distill', 'train', 'evaluate',
                                        'deploy')),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'assigned', 'running', 'cancel_requested',
                                      'succeeded', 'failed', 'cancelled', 'dead_lettered')),
    params          jsonb NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}',
    labels          jsonb NOT NULL DEFAULT '{}',
    priority        integer NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    attempt         integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10),
    timeout_seconds integer CHECK (timeout_seconds > 0),
    gpu_type        text,
    gpu_count       integer CHECK (gpu_count >= 0),
    worker_id       text,
    progress        double precision NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    result          jsonb,
    error           jsonb,                      -- {code, message, class}
    cost_micros     bigint NOT NULL DEFAULT 0,  -- integer micro-USD
    version         bigint NOT NULL DEFAULT 1,  -- +1 per update; orders snapshot writes
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
-- GET /api/jobs/ lists a user's jobs newest first (ids are ULIDs: they sort by time).
CREATE INDEX jobs_user_idx ON sched.jobs (user_id, job_id DESC);

-- Every applied or recorded event; event_id makes redelivery a no-op.
CREATE TABLE sched.job_events (
    event_id text PRIMARY KEY,
    job_id   text NOT NULL REFERENCES sched.jobs (job_id),
    type     text NOT NULL,
    attempt  integer NOT NULL,
    data     jsonb NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_job_idx ON sched.job_events (job_id, at, event_id);

-- The artifact registry (DESIGN §7); bytes live in the artifact store.
CREATE TABLE sched.artifacts (
    artifact_id text PRIMARY KEY,
    job_id      text NOT NULL REFERENCES sched.jobs (job_id),
    user_id     text NOT NULL,
    name        text NOT NULL,
    kind        text NOT NULL,
    uri         text NOT NULL,
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    sha256      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX artifacts_job_idx ON sched.artifacts (job_id);
CREATE INDEX artifacts_user_idx ON sched.artifacts (user_id, artifact_id DESC);
