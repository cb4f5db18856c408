-- A deployment's GPU time while it serves (the GPU issue, item 6): the worker serving it
-- meters it on the deploy job after the job's attempts are closed, with data.worker_id
-- and no attempt (so it never counts towards an attempt's usage_events nor is refused as
-- attempt_closed). Its lease is any attempt of the job that worker leased; until billing
-- has seen that lease the event waits in usage_pending like any other, with no attempt.
ALTER TABLE billing.usage_pending ALTER COLUMN attempt DROP NOT NULL;
