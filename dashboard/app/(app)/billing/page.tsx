'use client';
// Billing: what usage costs over a period (per meter, per job type), cost over time as a
// stacked bar chart, and the monthly budget.
import { useState, type FormEvent } from 'react';
import { HBars, StackedBars, type StackedPoint } from '@/components/Charts';
import { Card, Empty, ErrorState, InlineError, Loading, PageHeader, ProgressBar } from '@/components/ui';
import { api, METERS, type Budget, type UsageSeries } from '@/lib/api';
import { fmtQuantity, fmtTime, fmtUsd, METER_LABEL } from '@/lib/format';
import { useApi } from '@/lib/useApi';

const METER_COLOR: Record<string, string> = {
  gpu_ms: '#3b6fd8',
  input_tokens: '#1f9d8b',
  output_tokens: '#d88a1f',
  storage_byte_hours: '#8a5cd1',
};

type PeriodKey = '24h' | '7d' | 'month' | '30d' | 'prev';
const PERIODS: { key: PeriodKey; label: string }[] = [
  { key: 'month', label: 'This month' },
  { key: '24h', label: 'Last 24 hours' },
  { key: '7d', label: 'Last 7 days' },
  { key: '30d', label: 'Last 30 days' },
  { key: 'prev', label: 'Last month' },
];

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** The query of a period (undefined start/end = the API's default, this month to date). */
function periodQuery(key: PeriodKey, now: number): { period_start?: string; period_end?: string; bucket: 'hour' | 'day' } {
  const d = new Date(now);
  switch (key) {
    case '24h':
      return { period_start: new Date(Math.floor((now - DAY) / HOUR) * HOUR).toISOString(), bucket: 'hour' };
    case '7d':
      return { period_start: new Date(Math.floor((now - 6 * DAY) / DAY) * DAY).toISOString(), bucket: 'day' };
    case '30d':
      return { period_start: new Date(Math.floor((now - 29 * DAY) / DAY) * DAY).toISOString(), bucket: 'day' };
    case 'prev': {
      const start = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1));
      const end = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));
      return { period_start: start.toISOString(), period_end: end.toISOString(), bucket: 'day' };
    }
    default:
      return { bucket: 'day' };
  }
}

/** Every bucket of the period, with zeros where the API lists none (it lists only used buckets). */
function toPoints(series: UsageSeries): StackedPoint[] {
  const step = series.bucket === 'hour' ? HOUR : DAY;
  const start = Math.floor(new Date(series.period_start).getTime() / step) * step;
  const end = new Date(series.period_end).getTime();
  const byStart = new Map<number, Record<string, number>>();
  for (const p of series.points) {
    const t = Math.floor(new Date(p.start).getTime() / step) * step;
    const v = byStart.get(t) ?? {};
    v[p.meter] = (v[p.meter] ?? 0) + p.cost_micros;
    byStart.set(t, v);
  }
  const out: StackedPoint[] = [];
  for (let t = start; t < end && out.length < 800; t += step) {
    const d = new Date(t);
    const label =
      series.bucket === 'hour'
        ? `${String(d.getUTCHours()).padStart(2, '0')}:00`
        : d.toLocaleDateString(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
    out.push({ label, values: byStart.get(t) ?? {} });
  }
  return out;
}

export default function BillingPage() {
  const [period, setPeriod] = useState<PeriodKey>('month');
  const [now] = useState(() => Date.now());
  const q = periodQuery(period, now);
  const summary = useApi(
    (s) => api.billingSummary({ period_start: q.period_start, period_end: q.period_end }, s),
    [period],
    { refreshMs: 15_000 },
  );
  const usage = useApi(
    (s) => api.billingUsage({ bucket: q.bucket, period_start: q.period_start, period_end: q.period_end }, s),
    [period],
    { refreshMs: 15_000 },
  );
  const budget = useApi((s) => api.getBudget(s), [], { refreshMs: 30_000 });

  return (
    <>
      <PageHeader title="Billing">
        <label className="inline">
          Period{' '}
          <select value={period} onChange={(e) => setPeriod(e.target.value as PeriodKey)}>
            {PERIODS.map((p) => (
              <option key={p.key} value={p.key}>
                {p.label}
              </option>
            ))}
          </select>
        </label>
      </PageHeader>

      {summary.data ? (
        <>
          <div className="grid-2">
            <Card title="Total">
              <p className="big mono" data-testid="billing-total">
                {fmtUsd(summary.data.total_usd)}
              </p>
              <p className="muted small">
                {fmtTime(summary.data.period_start)} – {fmtTime(summary.data.period_end)}
              </p>
            </Card>
            <BudgetCard budget={budget} />
          </div>
          <Card title="By meter">
            <div className="table-wrap">
              <table data-testid="billing-meters">
                <thead>
                  <tr>
                    <th scope="col">Meter</th>
                    <th scope="col" className="num">
                      Usage
                    </th>
                    <th scope="col" className="num">
                      Rate
                    </th>
                    <th scope="col" className="num">
                      Cost
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {summary.data.meters.length ? (
                    summary.data.meters.map((l) => (
                      <tr key={`${l.meter}-${l.effective_from}`}>
                        <td>{METER_LABEL[l.meter] ?? l.meter}</td>
                        <td className="num">{fmtQuantity(l.meter, l.quantity)}</td>
                        <td className="num mono">
                          {fmtUsd(l.rate)} / {l.unit}
                        </td>
                        <td className="num mono">{fmtUsd(l.cost_usd)}</td>
                      </tr>
                    ))
                  ) : (
                    <tr>
                      <td colSpan={4} className="muted">
                        No usage in this period
                      </td>
                    </tr>
                  )}
                </tbody>
                <tfoot>
                  <tr>
                    <th scope="row" colSpan={3}>
                      Total
                    </th>
                    <td className="num mono">{fmtUsd(summary.data.total_usd)}</td>
                  </tr>
                </tfoot>
              </table>
            </div>
          </Card>
          <Card title="By job type">
            {summary.data.job_types.length ? (
              <HBars
                title="Cost by job type"
                rows={[...summary.data.job_types]
                  .sort((a, b) => b.total_micros - a.total_micros)
                  .map((t) => ({ label: t.job_type, value: t.total_micros, display: fmtUsd(t.total_usd) }))}
              />
            ) : (
              <p className="muted">No job usage in this period</p>
            )}
            <p className="muted small">Storage is billed to your account, not to a job type.</p>
          </Card>
        </>
      ) : summary.error ? (
        <ErrorState error={summary.error} what="the billing summary" onRetry={summary.reload} />
      ) : (
        <Loading what="Loading the billing summary" />
      )}

      <Card title={`Cost over time (${q.bucket === 'hour' ? 'hourly' : 'daily'}, UTC)`}>
        {usage.data ? (
          usage.data.points.length ? (
            <StackedBars
              title="Cost over time by meter"
              points={toPoints(usage.data)}
              format={(m) => fmtUsd((m / 1e6).toFixed(6))}
              formatTick={(m, step) => `$${(m / 1e6).toFixed(Math.max(0, Math.min(6, -Math.floor(Math.log10(step / 1e6)))))}`}
              series={METERS.map((m) => ({ key: m, label: METER_LABEL[m], color: METER_COLOR[m] }))}
            />
          ) : (
            <Empty title="No usage in this period">Costs appear here as your jobs run.</Empty>
          )
        ) : usage.error ? (
          <ErrorState error={usage.error} what="usage over time" onRetry={usage.reload} />
        ) : (
          <Loading what="Loading usage" />
        )}
      </Card>
    </>
  );
}

function BudgetCard({ budget }: { budget: { data?: Budget; error: unknown; reload: () => void } }) {
  const [value, setValue] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const b = budget.data;

  const save = async (limit: string | null) => {
    setBusy(true);
    setError(undefined);
    try {
      await api.setBudget(limit);
      setValue('');
      budget.reload();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (value.trim()) save(value.trim());
  };

  return (
    <Card title="Monthly budget">
      {b ? (
        <>
          {b.monthly_limit_usd ? (
            <>
              <p className="big mono">
                {fmtUsd(b.spent_usd)} <span className="muted small">of {fmtUsd(b.monthly_limit_usd)}</span>
              </p>
              <ProgressBar value={(b.percent_used ?? 0) / 100} label="budget used" />
              <p className={`small ${b.over_budget ? 'bad' : 'muted'}`}>
                {b.over_budget
                  ? 'Over budget: new jobs fail with budget_exceeded until next month or a higher budget.'
                  : `${b.percent_used ?? 0}% used · ${fmtUsd(b.remaining_usd)} left this month`}
              </p>
            </>
          ) : (
            <p className="muted">
              No budget set · {fmtUsd(b.spent_usd)} spent this month. With a budget, new jobs stop being dispatched
              once it is reached.
            </p>
          )}
          <form className="row" onSubmit={submit}>
            <label className="inline">
              Limit (USD){' '}
              <input
                inputMode="decimal"
                pattern="\d+(\.\d{1,6})?"
                placeholder={b.monthly_limit_usd ?? '250.00'}
                value={value}
                onChange={(e) => setValue(e.target.value)}
                size={10}
              />
            </label>
            <button type="submit" className="btn" disabled={busy || !value.trim()}>
              Set budget
            </button>
            {b.monthly_limit_usd ? (
              <button type="button" className="btn" disabled={busy} onClick={() => save(null)}>
                Remove
              </button>
            ) : null}
          </form>
          <InlineError error={error} />
        </>
      ) : budget.error ? (
        <ErrorState error={budget.error} what="the budget" onRetry={budget.reload} />
      ) : (
        <Loading />
      )}
    </Card>
  );
}
