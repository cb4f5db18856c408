'use client';
// Small building blocks shared by the pages: the loading / empty / error states, status
// badges, progress bars, a copy button and a JSON view.
import { useEffect, useState, type ReactNode } from 'react';
import { ApiError, type JobStatus } from '@/lib/api';

export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <header className="page-header">
      <h1>{title}</h1>
      {children ? <div className="page-actions">{children}</div> : null}
    </header>
  );
}

export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <div className="state state-loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> {what}…
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="state state-empty">
      <strong>{title}</strong>
      {children ? <div className="muted">{children}</div> : null}
    </div>
  );
}

/**
 * Says what went wrong in a way a person can act on: the gateway is down, a backend is
 * unavailable, this part of the API is not served yet, the object does not exist, or the
 * gateway's own error message (with its request id for the logs).
 */
export function ErrorState({
  error,
  what,
  onRetry,
  notFound,
}: {
  error: unknown;
  what: string;
  onRetry?: () => void;
  notFound?: string;
}) {
  let title = `Could not load ${what}`;
  let detail: ReactNode = String(error);
  if (error instanceof ApiError) {
    detail = error.message;
    if (error.unreachable) {
      title = 'The gateway is not reachable';
      detail = `${error.message} The page retries when you ask it to.`;
    } else if (error.status === 503) {
      title = `${capitalize(what)} is unavailable right now`;
      detail = `${error.message}${error.retryAfter ? ` (retry in ${error.retryAfter}s)` : ''}`;
    } else if (error.notServed) {
      title = 'Not available yet';
      detail = `This gateway does not serve ${error.method} ${error.path} (HTTP ${error.status}), so there is nothing to show here yet.`;
    } else if (error.status === 404 && notFound) {
      title = notFound;
    } else if (error.unauthenticated) {
      title = 'Your session has ended';
      detail = 'Sign in again to continue.';
    } else {
      detail = `${error.message} (${error.code}, HTTP ${error.status}${error.requestId ? `, request ${error.requestId}` : ''})`;
    }
  }
  return (
    <div className="state state-error" role="alert">
      <strong>{title}</strong>
      <div>{detail}</div>
      {onRetry ? (
        <button type="button" className="btn" onClick={onRetry}>
          Retry
        </button>
      ) : null}
    </div>
  );
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** An error from an action (a form, a button): one line, beside the control. */
export function InlineError({ error }: { error: unknown }) {
  if (!error) return null;
  let text = String(error);
  if (error instanceof ApiError) {
    text = error.unreachable ? 'The gateway is not reachable.' : error.message;
    if (error.param) text += ` (${error.param})`;
  }
  return (
    <p className="inline-error" role="alert">
      {text}
    </p>
  );
}

export function StatusBadge({ status }: { status: JobStatus | string }) {
  return <span className={`badge badge-${status}`}>{status.replace('_', ' ')}</span>;
}

export function ProgressBar({ value, label }: { value: number; label?: string }) {
  const pct = Math.max(0, Math.min(1, value || 0)) * 100;
  return (
    <div
      className="progress"
      role="progressbar"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(pct)}
      aria-label={label ?? 'progress'}
    >
      <div className="progress-fill" style={{ width: `${pct}%` }} />
    </div>
  );
}

export function Json({ value }: { value: unknown }) {
  return <pre className="json">{JSON.stringify(value, null, 2)}</pre>;
}

export function Card({ title, children, className }: { title?: string; children: ReactNode; className?: string }) {
  return (
    <section className={`card ${className ?? ''}`}>
      {title ? <h2>{title}</h2> : null}
      {children}
    </section>
  );
}

/**
 * Copies `text` to the clipboard. Where the page may not write it (no permission, not a
 * secure context), shows the text selected in a field instead, for Ctrl+C.
 */
export function CopyButton({ text, label }: { text: string; label: string }) {
  const [state, setState] = useState<'idle' | 'copied' | 'failed'>('idle');
  useEffect(() => {
    if (state !== 'copied') return;
    const t = setTimeout(() => setState('idle'), 2000);
    return () => clearTimeout(t);
  }, [state]);
  if (state === 'failed') {
    return (
      <input
        className="mono small copy-fallback"
        readOnly
        value={text}
        aria-label={label}
        autoFocus
        onFocus={(e) => e.currentTarget.select()}
        onBlur={() => setState('idle')}
      />
    );
  }
  return (
    <button
      type="button"
      className="btn btn-small"
      aria-label={label}
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
          setState('copied');
        } catch {
          setState('failed');
        }
      }}
    >
      {state === 'copied' ? 'Copied' : 'Copy'}
    </button>
  );
}
