'use client';
import Link from 'next/link';
import type { Job } from '@/lib/api';
import { fmtAgo, fmtUsd } from '@/lib/format';
import { ProgressBar, StatusBadge } from './ui';

export function JobTable({ jobs, now }: { jobs: Job[]; now: number }) {
  return (
    <div className="table-wrap">
      <table>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Type</th>
            <th scope="col">Status</th>
            <th scope="col">Progress</th>
            <th scope="col">Created</th>
            <th scope="col" className="num">
              Cost
            </th>
          </tr>
        </thead>
        <tbody>
          {jobs.map((j) => (
            <tr key={j.job_id}>
              <td>
                <Link href={`/jobs/${j.job_id}`} className="mono">
                  {j.job_id}
                </Link>
              </td>
              <td>{j.job_type}</td>
              <td>
                <StatusBadge status={j.status} />
              </td>
              <td className="progress-cell">
                <ProgressBar value={j.progress} label={`${j.job_id} progress`} />
              </td>
              <td title={j.created_at}>{fmtAgo(j.created_at, now)}</td>
              <td className="num mono">{fmtUsd(j.cost_usd)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
