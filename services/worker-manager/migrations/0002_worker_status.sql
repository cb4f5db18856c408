-- Worker statuses of the fleet (issue 5): `draining` (no new jobs), `offline` (drained and
-- stopped cleanly), `lost` (missed 3 heartbeats). `online` covers idle and busy; the live
-- status shown by GET /api/workers/ comes from Redis, this column keeps the last known one.
ALTER TABLE wm.workers DROP CONSTRAINT IF EXISTS workers_status_check;
ALTER TABLE wm.workers ADD CONSTRAINT workers_status_check
    CHECK (status IN ('online', 'draining', 'offline', 'lost', 'disabled'));
CREATE INDEX IF NOT EXISTS workers_last_seen_at_idx ON wm.workers (last_seen_at DESC);
