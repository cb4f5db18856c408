'use client';
// Jobs: filter by status and type (kept in the URL), newest first, cursor paging.
import Link from 'next/link';
import { usePathname, useRouter, useSearchParams } from 'next/navigation';
import { Suspense, useState } from 'react';
import { JobTable } from '@/components/JobTable';
import { Empty, ErrorState, Loading, PageHeader } from '@/components/ui';
import { api, JOB_STATUSES, JOB_TYPES } from '@/lib/api';
import { useApi } from '@/lib/useApi';

const PAGE = 20;
const ACTIVE = 'queued,assigned,running,cancel_requested';

function JobsList() {
  const router = useRouter();
  const pathname = usePathname();
  const params = useSearchParams();
  const status = params.get('status') ?? '';
  const jobType = params.get('job_type') ?? '';
  // cursors[i] opens page i; page 0 has none
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const page = cursors.length - 1;
  const cursor = cursors[page];
  const jobs = useApi((s) => api.listJobs({ status, job_type: jobType, limit: PAGE, cursor }, s), [status, jobType, cursor], {
    refreshMs: page === 0 ? 5_000 : undefined,
  });

  const setFilter = (key: string, value: string) => {
    const q = new URLSearchParams(params.toString());
    if (value) q.set(key, value);
    else q.delete(key);
    setCursors([null]);
    router.replace(q.toString() ? `${pathname}?${q}` : pathname);
  };
  const filtered = Boolean(status || jobType);

  return (
    <>
      <PageHeader title="Jobs">
        <label className="inline">
          Status{' '}
          <select value={status} onChange={(e) => setFilter('status', e.target.value)}>
            <option value="">all</option>
            <option value={ACTIVE}>active</option>
            {JOB_STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.replace('_', ' ')}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          Type{' '}
          <select value={jobType} onChange={(e) => setFilter('job_type', e.target.value)}>
            <option value="">all</option>
            {JOB_TYPES.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </label>
        <button type="button" className="btn" onClick={jobs.reload}>
          Refresh
        </button>
      </PageHeader>

      {jobs.data ? (
        jobs.data.data.length ? (
          <JobTable jobs={jobs.data.data} now={Date.now()} />
        ) : page > 0 ? (
          <Empty title="No more jobs" />
        ) : filtered ? (
          <Empty title="No jobs match these filters">
            <Link href="/jobs">Clear the filters</Link>
          </Empty>
        ) : (
          <Empty title="No jobs yet">
            Submit one with an API key from <Link href="/settings/api-keys">Settings · API keys</Link>, e.g.{' '}
            <code>POST /api/jobs/generate</code>.
          </Empty>
        )
      ) : jobs.error ? (
        <ErrorState error={jobs.error} what="your jobs" onRetry={jobs.reload} />
      ) : (
        <Loading what="Loading jobs" />
      )}
      {jobs.data && jobs.error ? <ErrorState error={jobs.error} what="the latest jobs" onRetry={jobs.reload} /> : null}

      <div className="pager">
        <button type="button" className="btn" disabled={page === 0} onClick={() => setCursors((c) => c.slice(0, -1))}>
          ← Newer
        </button>
        <span className="muted small">Page {page + 1}</span>
        <button
          type="button"
          className="btn"
          disabled={!jobs.data?.has_more || !jobs.data.next_cursor}
          onClick={() => jobs.data?.next_cursor && setCursors((c) => [...c, jobs.data!.next_cursor])}
        >
          Older →
        </button>
      </div>
    </>
  );
}

export default function JobsPage() {
  return (
    <Suspense fallback={<Loading />}>
      <JobsList />
    </Suspense>
  );
}
