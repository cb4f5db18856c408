-- One rounding for every total (the recovery issue, item 6; internals.md "Money").
--
-- Money is priced per cell and every total is a sum of whole cells, so the costs of an
-- account's jobs add up exactly to the summary's lines that cover them, whatever the
-- period (a period is a set of whole hours, hence of whole cells):
--   a compute cell  one job's quantity of one compute meter in one UTC hour (usage_jobs)
--   a storage cell  one account's storage of one job type in one UTC hour (usage_hourly)
-- A cell costs round_half_up(quantity x price_micros / per_units) micro-USD at the price
-- of its hour; a job's cost_usd, a summary line, a job type line, a usage point and a
-- budget's spending each add up the cells they cover. A cell only grows while its job
-- runs, and a job's cells never change once its attempts are closed: a final cost stays.

-- The rule of bill_cost_micros (usage.c) in exact numeric arithmetic: div() truncates,
-- and everything is non-negative, so div(2qp + u, 2u) = floor(qp/u + 1/2).
CREATE FUNCTION billing.cell_cost_micros(quantity numeric, price_micros bigint, per_units bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT div(2 * quantity * price_micros + per_units, 2 * per_units::numeric)::bigint $$;

-- The summary's job type lines read compute cells by job type.
ALTER TABLE billing.usage_jobs ADD COLUMN job_type text;
UPDATE billing.usage_jobs j SET job_type = e.job_type
FROM (SELECT DISTINCT ON (job_id) job_id, job_type FROM billing.usage_events
      ORDER BY job_id, recorded_at) e
WHERE e.job_id = j.job_id;
UPDATE billing.usage_jobs SET job_type = 'generate' WHERE job_type IS NULL; -- never expected
ALTER TABLE billing.usage_jobs ALTER COLUMN job_type SET NOT NULL;
-- Summaries, usage series and budgets read a user's cells by hour.
CREATE INDEX usage_jobs_user_hour_idx ON billing.usage_jobs (user_id, hour);

-- Every cell of every account.
CREATE VIEW billing.cells AS
    SELECT j.user_id, j.job_type, j.job_id, j.meter, j.hour, j.quantity
    FROM billing.usage_jobs j
    UNION ALL
    SELECT h.user_id, h.job_type, NULL, h.meter, h.hour, h.quantity
    FROM billing.usage_hourly h
    WHERE h.meter = 'storage_byte_hours';
