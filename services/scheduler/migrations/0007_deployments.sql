-- Deployments (DESIGN §15): a succeeded deploy job's endpoint, recorded with the job's
-- success (consume_events.c) and reached through the gateway at /api/deployments/{id}/v1.
-- status: ready (serving) -> stopped (DELETE /api/deployments/{id}) or failed (its
-- endpoint is gone: the gateway found it refusing connections); both are final.
CREATE TABLE sched.deployments (
    deployment_id text PRIMARY KEY CHECK (deployment_id ~ '^dep-[0-9a-f]{12}$'),
    user_id       text NOT NULL,
    job_id        text NOT NULL UNIQUE,
    model         text NOT NULL,
    endpoint_url  text NOT NULL,              -- the worker-local base URL, never shown to users
    status        text NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'stopped', 'failed')),
    region        text,
    replicas      int,
    worker_id     text,
    failure       text,                       -- why it failed
    created_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz                 -- when it stopped or failed
);
CREATE INDEX deployments_user_idx ON sched.deployments (user_id, created_at DESC);
