'use client';
// Artifacts: everything your jobs stored, newest first, with size and a download link;
// optionally only one job's.
import Link from 'next/link';
import { useState, type FormEvent } from 'react';
import { Empty, ErrorState, Loading, PageHeader } from '@/components/ui';
import { api } from '@/lib/api';
import { fmtAgo, fmtBytes, fmtTime } from '@/lib/format';
import { useApi } from '@/lib/useApi';

const PAGE = 25;

export default function ArtifactsPage() {
  const [jobId, setJobId] = useState('');
  const [filter, setFilter] = useState('');
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const page = cursors.length - 1;
  const cursor = cursors[page];
  const list = useApi((s) => api.listArtifacts({ job_id: filter || undefined, limit: PAGE, cursor }, s), [filter, cursor]);
  const now = Date.now();

  const apply = (e: FormEvent) => {
    e.preventDefault();
    setCursors([null]);
    setFilter(jobId.trim());
  };

  return (
    <>
      <PageHeader title="Artifacts">
        <form className="row" onSubmit={apply}>
          <label className="inline">
            Job{' '}
            <input
              placeholder="job_…"
              value={jobId}
              onChange={(e) => setJobId(e.target.value)}
              size={30}
              className="mono"
              aria-label="Only the artifacts of this job id"
            />
          </label>
          <button type="submit" className="btn">
            Filter
          </button>
          {filter ? (
            <button
              type="button"
              className="btn"
              onClick={() => {
                setJobId('');
                setFilter('');
                setCursors([null]);
              }}
            >
              Clear
            </button>
          ) : null}
        </form>
      </PageHeader>
      {list.data ? (
        list.data.data.length ? (
          <div className="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Kind</th>
                  <th scope="col" className="num">
                    Size
                  </th>
                  <th scope="col">Job</th>
                  <th scope="col">Created</th>
                  <th scope="col">
                    <span className="sr-only">Download</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.data.data.map((a) => (
                  <tr key={a.artifact_id}>
                    <td>
                      {a.name}
                      <div className="mono muted small">{a.artifact_id}</div>
                    </td>
                    <td>{a.kind}</td>
                    <td className="num">{fmtBytes(a.bytes)}</td>
                    <td>
                      {a.job_id ? (
                        <Link href={`/jobs/${a.job_id}`} className="mono small">
                          {a.job_id}
                        </Link>
                      ) : (
                        '—'
                      )}
                    </td>
                    <td title={fmtTime(a.created_at)}>{fmtAgo(a.created_at, now)}</td>
                    <td>
                      <a href={api.artifactContentUrl(a.artifact_id)} download={a.name}>
                        Download
                      </a>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : page > 0 ? (
          <Empty title="No more artifacts" />
        ) : (
          <Empty title={filter ? `No artifacts for ${filter}` : 'No artifacts yet'}>
            Jobs store their outputs (datasets, checkpoints, reports) here when they succeed.
          </Empty>
        )
      ) : list.error ? (
        <ErrorState error={list.error} what="your artifacts" onRetry={list.reload} />
      ) : (
        <Loading what="Loading artifacts" />
      )}
      <div className="pager">
        <button type="button" className="btn" disabled={page === 0} onClick={() => setCursors((c) => c.slice(0, -1))}>
          ← Newer
        </button>
        <span className="muted small">Page {page + 1}</span>
        <button
          type="button"
          className="btn"
          disabled={!list.data?.has_more || !list.data.next_cursor}
          onClick={() => list.data?.next_cursor && setCursors((c) => [...c, list.data!.next_cursor])}
        >
          Older →
        </button>
      </div>
    </>
  );
}
