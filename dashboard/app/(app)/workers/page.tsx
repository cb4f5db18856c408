'use client';
// Workers: the fleet as the worker-manager sees it, refreshed every few seconds.
import Link from 'next/link';
import { Empty, ErrorState, Loading, PageHeader, StatusBadge } from '@/components/ui';
import { api } from '@/lib/api';
import { fmtAgo, fmtTime } from '@/lib/format';
import { useApi } from '@/lib/useApi';

export default function WorkersPage() {
  const workers = useApi((s) => api.listWorkers(s), [], { refreshMs: 5_000 });
  const now = Date.now();
  const list = workers.data?.data ?? [];
  const order = { busy: 0, idle: 1, draining: 2, lost: 3 } as const;
  const sorted = [...list].sort((a, b) => (order[a.status] ?? 9) - (order[b.status] ?? 9) || (a.hostname ?? a.worker_id).localeCompare(b.hostname ?? b.worker_id));

  return (
    <>
      <PageHeader title="Workers">
        <button type="button" className="btn" onClick={workers.reload}>
          Refresh
        </button>
      </PageHeader>
      {workers.data ? (
        list.length ? (
          <div className="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">Worker</th>
                  <th scope="col">Host</th>
                  <th scope="col">Status</th>
                  <th scope="col">GPU</th>
                  <th scope="col">Job types</th>
                  <th scope="col">Current jobs</th>
                  <th scope="col">Last heartbeat</th>
                </tr>
              </thead>
              <tbody>
                {sorted.map((w) => (
                  <tr key={w.worker_id}>
                    <td className="mono small">{w.worker_id}</td>
                    <td>
                      {w.hostname ?? <span className="muted">—</span>}
                      {w.version ? <div className="muted small">{w.version}</div> : null}
                      {w.labels && Object.keys(w.labels).length ? (
                        <div className="muted small">
                          {Object.entries(w.labels)
                            .map(([k, v]) => `${k}=${String(v)}`)
                            .join(', ')}
                        </div>
                      ) : null}
                    </td>
                    <td>
                      <StatusBadge status={w.status} />
                    </td>
                    <td>{w.gpu_type ? `${w.gpu_count ?? 1} × ${w.gpu_type}` : `no GPU type · count ${w.gpu_count ?? 0}`}</td>
                    <td className="small">{w.job_types?.join(', ') ?? '—'}</td>
                    <td>
                      {w.current_jobs?.length
                        ? w.current_jobs.map((id) => (
                            <div key={id}>
                              <Link href={`/jobs/${id}`} className="mono small">
                                {id}
                              </Link>
                            </div>
                          ))
                        : '—'}
                    </td>
                    <td title={fmtTime(w.last_heartbeat_at)}>{fmtAgo(w.last_heartbeat_at, now)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : (
          <Empty title="No workers registered">
            Start one with <code>./forge worker</code> (or <code>./forge up</code>, which starts one); it appears here
            after it registers.
          </Empty>
        )
      ) : workers.error ? (
        <ErrorState error={workers.error} what="the fleet" onRetry={workers.reload} />
      ) : (
        <Loading what="Loading the fleet" />
      )}
      {workers.data && workers.error ? (
        <ErrorState error={workers.error} what="the latest fleet state" onRetry={workers.reload} />
      ) : null}
    </>
  );
}
