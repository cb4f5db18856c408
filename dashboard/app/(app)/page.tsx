'use client';
// Overview: system health, jobs by status, this month's spend and budget, fleet size.
// Every card loads on its own, so one unavailable backend does not blank the page.
import Link from 'next/link';
import { JobTable } from '@/components/JobTable';
import { Card, Empty, ErrorState, Loading, PageHeader, StatusBadge } from '@/components/ui';
import { api, JOB_STATUSES } from '@/lib/api';
import { fmtUsd } from '@/lib/format';
import { useApi } from '@/lib/useApi';

const JOB_WINDOW = 100;

export default function OverviewPage() {
  const health = useApi((s) => api.readiness(s), [], { refreshMs: 10_000 });
  const jobs = useApi((s) => api.listJobs({ limit: JOB_WINDOW }, s), [], { refreshMs: 5_000 });
  const summary = useApi((s) => api.billingSummary({}, s), [], { refreshMs: 30_000 });
  const budget = useApi((s) => api.getBudget(s), [], { refreshMs: 30_000 });
  const workers = useApi((s) => api.listWorkers(s), [], { refreshMs: 5_000 });
  const now = Date.now();

  const counts = new Map<string, number>();
  for (const j of jobs.data?.data ?? []) counts.set(j.status, (counts.get(j.status) ?? 0) + 1);
  const fleet = new Map<string, number>();
  for (const w of workers.data?.data ?? []) fleet.set(w.status, (fleet.get(w.status) ?? 0) + 1);

  return (
    <>
      <PageHeader title="Overview" />
      <div className="grid-4">
        <Card title="System health">
          {health.data ? (
            <>
              <p className={`big ${health.data.status === 'ready' ? 'ok' : 'bad'}`}>{health.data.status}</p>
              <ul className="checks">
                {Object.entries(health.data.checks).map(([k, v]) => (
                  <li key={k}>
                    <span>{k}</span> <span className={v === 'ok' ? 'ok' : 'bad'}>{v}</span>
                  </li>
                ))}
              </ul>
            </>
          ) : health.error ? (
            <ErrorState error={health.error} what="the gateway's health" onRetry={health.reload} />
          ) : (
            <Loading />
          )}
        </Card>
        <Card title="Spend this month">
          {summary.data ? (
            <>
              <p className="big mono" data-testid="overview-spend">
                {fmtUsd(summary.data.total_usd)}
              </p>
              {budget.data?.monthly_limit_usd ? (
                <p className="muted small">
                  of a {fmtUsd(budget.data.monthly_limit_usd)} budget ({budget.data.percent_used ?? 0}% used)
                  {budget.data.over_budget ? <strong className="bad"> · over budget</strong> : null}
                </p>
              ) : budget.data ? (
                <p className="muted small">No monthly budget set</p>
              ) : null}
              <Link href="/billing" className="small">
                Billing details →
              </Link>
            </>
          ) : summary.error ? (
            <ErrorState error={summary.error} what="billing" onRetry={summary.reload} />
          ) : (
            <Loading />
          )}
        </Card>
        <Card title="Fleet">
          {workers.data ? (
            <>
              <p className="big">
                {workers.data.data.length} worker{workers.data.data.length === 1 ? '' : 's'}
              </p>
              <p className="muted small">
                {['idle', 'busy', 'draining', 'lost']
                  .filter((s) => fleet.get(s))
                  .map((s) => `${fleet.get(s)} ${s}`)
                  .join(' · ') || 'none registered'}
              </p>
              <Link href="/workers" className="small">
                Workers →
              </Link>
            </>
          ) : workers.error ? (
            <ErrorState error={workers.error} what="the fleet" onRetry={workers.reload} />
          ) : (
            <Loading />
          )}
        </Card>
        <Card title="Jobs by status">
          {jobs.data ? (
            jobs.data.data.length ? (
              <>
                <ul className="checks">
                  {JOB_STATUSES.filter((s) => counts.get(s)).map((s) => (
                    <li key={s}>
                      <Link href={`/jobs?status=${s}`}>
                        <StatusBadge status={s} />
                      </Link>{' '}
                      <span className="mono">{counts.get(s)}</span>
                    </li>
                  ))}
                </ul>
                {jobs.data.has_more ? <p className="muted small">Among your latest {JOB_WINDOW} jobs</p> : null}
              </>
            ) : (
              <p className="muted">No jobs yet</p>
            )
          ) : jobs.error ? (
            <ErrorState error={jobs.error} what="your jobs" onRetry={jobs.reload} />
          ) : (
            <Loading />
          )}
        </Card>
      </div>

      <Card title="Recent jobs">
        {jobs.data ? (
          jobs.data.data.length ? (
            <>
              <JobTable jobs={jobs.data.data.slice(0, 8)} now={now} />
              <Link href="/jobs" className="small">
                All jobs →
              </Link>
            </>
          ) : (
            <Empty title="No jobs yet">
              Create an API key under <Link href="/settings/api-keys">Settings · API keys</Link>, then submit a job
              with the SDK or <code>curl</code>; it shows up here within a second.
            </Empty>
          )
        ) : jobs.error ? (
          <ErrorState error={jobs.error} what="your jobs" onRetry={jobs.reload} />
        ) : (
          <Loading />
        )}
      </Card>
    </>
  );
}
