-- The model catalogue (DESIGN §15): the accounts' own models. Base models are the
-- operator's (NF_SCHEDULER_MODELS_FILE), never rows here.

-- A job's models, resolved by the gateway at submit: {"<param>": {id, kind, architecture,
-- parameters, source, stand_in, artifact_id, ...}} for every model param that named one.
ALTER TABLE sched.jobs ADD COLUMN models jsonb NOT NULL DEFAULT '{}';

CREATE TABLE sched.models (
    model_id     text PRIMARY KEY,                 -- mdl_<ULID>
    user_id      text NOT NULL,
    name         text NOT NULL CHECK (name ~ '^[a-z0-9._-]{1,64}$'),
    kind         text NOT NULL CHECK (kind IN ('fine_tuned', 'uploaded')),
    base_model   text,                             -- the model_id the train started from
    architecture text,
    parameters   bigint CHECK (parameters >= 0),
    stand_in     boolean NOT NULL DEFAULT false,
    artifact_id  text NOT NULL,                    -- its weights (sched.artifacts)
    job_id       text,                             -- the train job that made it
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
-- A name means one live model per account.
CREATE UNIQUE INDEX models_name_idx ON sched.models (user_id, name) WHERE deleted_at IS NULL;
