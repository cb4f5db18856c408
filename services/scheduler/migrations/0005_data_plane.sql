-- The data plane (DESIGN §12): job inputs resolved at submit, uploaded files in the
-- artifact registry, object keys in the store.

-- The inputs the gateway resolved before the 202: [{param, uri, object_key, name, bytes}].
-- Dispatched with the job; the worker fetches each into the job's private directory.
ALTER TABLE sched.jobs ADD COLUMN inputs jsonb NOT NULL DEFAULT '[]';

-- Files are artifacts too: an upload has no job.
ALTER TABLE sched.artifacts ALTER COLUMN job_id DROP NOT NULL;
ALTER TABLE sched.artifacts
    ADD COLUMN object_key text,                  -- key in the platform bucket
    ADD COLUMN source     text NOT NULL DEFAULT 'job' CHECK (source IN ('job', 'upload')),
    ADD COLUMN purpose    text CHECK (purpose IN ('dataset', 'model', 'other')),
    ADD COLUMN filename   text,
    ADD COLUMN s3_uri     text,                  -- the user's s3://bucket/key of an upload
    ADD COLUMN deleted_at timestamptz;           -- metered up to here, then gone
ALTER TABLE sched.artifacts ADD CONSTRAINT artifacts_upload_shape
    CHECK (source = 'job' OR (job_id IS NULL AND object_key IS NOT NULL AND purpose IS NOT NULL
                              AND s3_uri IS NOT NULL));
-- One live file per s3:// name and account: a new upload to the name replaces the old.
CREATE UNIQUE INDEX artifacts_s3_uri_idx ON sched.artifacts (user_id, s3_uri)
    WHERE s3_uri IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX artifacts_files_idx ON sched.artifacts (user_id, artifact_id DESC)
    WHERE source = 'upload' AND deleted_at IS NULL;
