'use client';
// One job: status, progress, cost, params, result, the live timeline (SSE), logs,
// artifacts, and cancel. The job object is re-read whenever the stream reports a change.
import Link from 'next/link';
import { useParams } from 'next/navigation';
import { useCallback, useState } from 'react';
import { Modal } from '@/components/Modal';
import { Card, Empty, ErrorState, InlineError, Json, Loading, PageHeader, ProgressBar, StatusBadge } from '@/components/ui';
import { api, isTerminal, type Job, type JobEvent } from '@/lib/api';
import { fmtBytes, fmtDuration, fmtPercent, fmtTime, fmtUsd } from '@/lib/format';
import { useApi } from '@/lib/useApi';
import { useJobEvents, type StreamState } from '@/lib/useJobEvents';

const STREAM_LABEL: Record<StreamState, string> = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  ended: 'complete',
  failed: 'not connected',
};

export default function JobPage() {
  const { id } = useParams<{ id: string }>();
  const jobId = decodeURIComponent(id);
  const [cancelled, setCancelled] = useState<Job | undefined>(undefined);
  const job = useApi((s) => api.getJob(jobId, s), [jobId], { refreshMs: 5_000 });
  const reload = job.reload;
  const onEvent = useCallback(
    (e: JobEvent) => {
      if (e.type !== 'forge.job.log') reload();
    },
    [reload],
  );
  const stream = useJobEvents(jobId, onEvent);
  const [confirm, setConfirm] = useState(false);
  const [busy, setBusy] = useState(false);
  const [cancelError, setCancelError] = useState<unknown>(undefined);

  const j = job.data ?? cancelled;
  if (!j) {
    return (
      <>
        <PageHeader title="Job" />
        {job.error ? (
          <ErrorState error={job.error} what="the job" notFound={`No job ${jobId} in your account`} onRetry={job.reload} />
        ) : (
          <Loading what="Loading the job" />
        )}
      </>
    );
  }

  const doCancel = async () => {
    setBusy(true);
    setCancelError(undefined);
    try {
      setCancelled(await api.cancelJob(j.job_id));
      setConfirm(false);
      job.reload();
    } catch (e) {
      setCancelError(e);
    } finally {
      setBusy(false);
    }
  };

  const logs = stream.events.filter((e) => e.type === 'forge.job.log');
  const timeline = collapseProgress(stream.events.filter((e) => e.type !== 'forge.job.log'));
  const lastProgress = [...stream.events].reverse().find((e) => e.type === 'forge.job.progress');
  const liveProgress =
    !isTerminal(j.status) && typeof lastProgress?.data.progress === 'number'
      ? Math.max(j.progress, lastProgress.data.progress as number)
      : j.progress;
  const canCancel = !isTerminal(j.status) && j.status !== 'cancel_requested';

  return (
    <>
      <PageHeader title={`${j.job_type} job`}>
        <StatusBadge status={j.status} />
        {canCancel ? (
          <button type="button" className="btn btn-danger" onClick={() => setConfirm(true)}>
            Cancel job
          </button>
        ) : null}
      </PageHeader>
      <p className="mono muted" data-testid="job-id">
        {j.job_id}
      </p>
      {job.error ? <ErrorState error={job.error} what="the latest state of this job" onRetry={job.reload} /> : null}

      <div className="grid-4">
        <Card title="Status">
          <p className="big" data-testid="job-status">
            {j.status.replace('_', ' ')}
          </p>
          <ProgressBar value={liveProgress} label="job progress" />
          <p className="muted small">{fmtPercent(liveProgress)} done</p>
        </Card>
        <Card title="Cost">
          <p className="big mono" data-testid="job-cost">
            {fmtUsd(j.cost_usd)}
          </p>
          <p className="muted small">
            {j.cost_final ? 'compute, final' : 'compute, updated while it runs'}
          </p>
        </Card>
        <Card title="Timing">
          <dl className="kv">
            <dt>Created</dt>
            <dd>{fmtTime(j.created_at)}</dd>
            <dt>Started</dt>
            <dd>{fmtTime(j.started_at)}</dd>
            <dt>Finished</dt>
            <dd>{fmtTime(j.finished_at)}</dd>
            <dt>Run time</dt>
            <dd>{fmtDuration(j.started_at, j.finished_at)}</dd>
          </dl>
        </Card>
        <Card title="Placement">
          <dl className="kv">
            <dt>Attempt</dt>
            <dd>
              {j.attempt} of {j.max_attempts}
            </dd>
            <dt>Worker</dt>
            <dd className="mono">{j.worker_id ?? '—'}</dd>
            <dt>GPU</dt>
            <dd>
              {j.gpu_count} × {j.gpu_type ?? 'any'}
            </dd>
            <dt>Priority</dt>
            <dd>{j.priority}</dd>
          </dl>
        </Card>
      </div>

      {j.error ? (
        <div className="state state-error" role="alert">
          <strong>
            {j.error.code} ({j.error.class.replace('_', ' ')})
          </strong>
          <div>{j.error.message}</div>
        </div>
      ) : null}

      <div className="grid-2">
        <Card title="Timeline">
          <p className="muted small" aria-live="polite">
            Event stream: <span data-testid="stream-state">{STREAM_LABEL[stream.state]}</span>
          </p>
          {stream.error ? <ErrorState error={stream.error} what="the job's events" onRetry={stream.retry} /> : null}
          {timeline.length ? (
            <ol className="timeline" data-testid="timeline">
              {timeline.map(({ ev, count }) => (
                <li key={ev.event_id} className={`tl-${ev.type.replace('forge.job.', '')}`}>
                  <time dateTime={ev.time}>{fmtTime(ev.time)}</time>
                  <span className="tl-type">{ev.type.replace('forge.job.', '').replace('_', ' ')}</span>
                  <span className="muted small">{describe(ev, count)}</span>
                </li>
              ))}
            </ol>
          ) : stream.state === 'connecting' ? (
            <Loading what="Connecting to the event stream" />
          ) : (
            <p className="muted">No events yet</p>
          )}
        </Card>
        <Card title="Logs">
          {logs.length ? (
            <pre className="logs" data-testid="logs">
              {logs.map((e) => `${e.time.slice(11, 23)}  ${String(e.data.message ?? '')}`).join('\n')}
            </pre>
          ) : (
            <p className="muted">No log lines{isTerminal(j.status) ? '' : ' yet'}</p>
          )}
        </Card>
      </div>

      <Card title="Artifacts">
        {j.artifacts.length ? (
          <div className="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Kind</th>
                  <th scope="col" className="num">
                    Size
                  </th>
                  <th scope="col">SHA-256</th>
                  <th scope="col">
                    <span className="sr-only">Download</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {j.artifacts.map((a) => (
                  <tr key={a.artifact_id}>
                    <td>{a.name}</td>
                    <td>{a.kind}</td>
                    <td className="num">{fmtBytes(a.bytes)}</td>
                    <td className="mono small" title={a.sha256 ?? ''}>
                      {a.sha256 ? `${a.sha256.slice(0, 16)}…` : '—'}
                    </td>
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
        ) : (
          <p className="muted">{isTerminal(j.status) ? 'This job produced no artifacts.' : 'None yet'}</p>
        )}
      </Card>

      <div className="grid-2">
        <Card title="Parameters">
          <Json value={j.params} />
          {Object.keys(j.metadata).length ? (
            <>
              <h3>Metadata</h3>
              <Json value={j.metadata} />
            </>
          ) : null}
          {Object.keys(j.labels).length ? (
            <>
              <h3>Labels</h3>
              <Json value={j.labels} />
            </>
          ) : null}
        </Card>
        <Card title="Result">{j.result ? <Json value={j.result} /> : <Empty title="No result yet" />}</Card>
      </div>
      <p>
        <Link href="/jobs">← All jobs</Link>
      </p>

      <Modal open={confirm} title="Cancel this job?" onClose={() => setConfirm(false)}>
        <p>
          {j.status === 'queued'
            ? 'The job leaves the queue and is cancelled at once.'
            : 'Its worker is told on its next heartbeat and stops the handler; the job then becomes cancelled.'}
        </p>
        <InlineError error={cancelError} />
        <div className="modal-actions">
          <button type="button" className="btn" onClick={() => setConfirm(false)} autoFocus>
            Keep running
          </button>
          <button type="button" className="btn btn-danger" onClick={doCancel} disabled={busy}>
            {busy ? 'Cancelling…' : 'Cancel job'}
          </button>
        </div>
      </Modal>
    </>
  );
}

/** Runs of progress events become one line (the latest) with a count. */
function collapseProgress(events: JobEvent[]): { ev: JobEvent; count: number }[] {
  const out: { ev: JobEvent; count: number }[] = [];
  for (const ev of events) {
    const last = out[out.length - 1];
    if (last && ev.type === 'forge.job.progress' && last.ev.type === 'forge.job.progress') {
      out[out.length - 1] = { ev, count: last.count + 1 };
    } else {
      out.push({ ev, count: 1 });
    }
  }
  return out;
}

function describe(ev: JobEvent, count: number): string {
  const d = ev.data;
  const parts: string[] = [];
  if (ev.attempt > 1) parts.push(`attempt ${ev.attempt}`);
  if (typeof d.worker_id === 'string') parts.push(`on ${d.worker_id}`);
  if (typeof d.progress === 'number') parts.push(`${Math.round(d.progress * 100)}%${count > 1 ? ` (${count} updates)` : ''}`);
  const err = d.error as { code?: string; message?: string } | undefined;
  if (err?.code) parts.push(`${err.code}: ${err.message ?? ''}`);
  if (typeof d.retry_in_ms === 'number') parts.push(`retry in ${(d.retry_in_ms / 1000).toFixed(1)} s`);
  if (Array.isArray(d.artifacts) && d.artifacts.length) parts.push(`${d.artifacts.length} artifact(s)`);
  return parts.join(' · ');
}
