'use client';
// The Artifacts page's upload card: a purpose, an optional s3:// destination, and a drop
// zone (or the file picker). Each file is sent on its own, one after another, as
// multipart/form-data to POST /api/files (lib/api.ts uploadFile): the browser streams it
// from disk, so its size is bounded by the gateway's cap, not by this page's memory.
// Every file shows its progress, can be cancelled, and ends stored or with the gateway's
// error (413 too large, 422 bad destination, ...).
import { useEffect, useRef, useState, type DragEvent } from 'react';
import { InlineError, ProgressBar } from './ui';
import { api, ApiError, FILE_PURPOSES, s3UriProblem, uploadTarget, type FileObject, type FilePurpose } from '@/lib/api';
import { fmtBytes, fmtUploadProgress } from '@/lib/format';

type UploadState = 'waiting' | 'sending' | 'storing' | 'stored' | 'failed' | 'cancelled';

interface Upload {
  key: number;
  name: string;
  bytes: number;
  purpose: FilePurpose;
  target?: string;
  sent: number;
  total: number;
  state: UploadState;
  error?: unknown;
  stored?: FileObject;
}

interface Pending {
  file: File;
  purpose: FilePurpose;
  target?: string;
  ctl: AbortController;
}

const STATE_LABEL: Record<UploadState, string> = {
  waiting: 'waiting',
  sending: 'uploading',
  storing: 'storing…',
  stored: 'stored',
  failed: 'failed',
  cancelled: 'cancelled',
};

const ACTIVE: readonly UploadState[] = ['waiting', 'sending', 'storing'];

const hasFiles = (e: globalThis.DragEvent | DragEvent) => Array.from(e.dataTransfer?.types ?? []).includes('Files');

export function UploadCard({ onStored }: { onStored: (f: FileObject) => void }) {
  const [purpose, setPurpose] = useState<FilePurpose>('dataset');
  const [uri, setUri] = useState('');
  const [formError, setFormError] = useState<string | null>(null);
  const [over, setOver] = useState(false);
  const [uploads, setUploads] = useState<Upload[]>([]);
  // Not state: what each upload still needs (its File, where it goes, how to cancel it).
  const pending = useRef(new Map<number, Pending>());
  const queue = useRef<Promise<void>>(Promise.resolve());
  const nextKey = useRef(1);
  const onStoredRef = useRef(onStored);
  onStoredRef.current = onStored;

  // A file dropped beside the zone would make the browser open it and leave the page.
  useEffect(() => {
    const keep = (e: globalThis.DragEvent) => {
      if (hasFiles(e)) e.preventDefault();
    };
    window.addEventListener('dragover', keep);
    window.addEventListener('drop', keep);
    return () => {
      window.removeEventListener('dragover', keep);
      window.removeEventListener('drop', keep);
    };
  }, []);

  // Leaving the page cancels what is still going.
  useEffect(() => {
    const all = pending.current;
    return () => all.forEach((p) => p.ctl.abort());
  }, []);

  const update = (key: number, patch: Partial<Upload>) =>
    setUploads((us) => us.map((u) => (u.key === key ? { ...u, ...patch } : u)));

  const send = async (key: number) => {
    const p = pending.current.get(key);
    if (!p || p.ctl.signal.aborted) {
      pending.current.delete(key);
      return;
    }
    update(key, { state: 'sending' });
    try {
      const stored = await api.uploadFile(p.file, {
        purpose: p.purpose,
        uri: p.target,
        signal: p.ctl.signal,
        onProgress: ({ sent, total }) => update(key, { sent, total, state: sent >= total ? 'storing' : 'sending' }),
      });
      update(key, { state: 'stored', stored });
      onStoredRef.current(stored);
    } catch (e) {
      if (p.ctl.signal.aborted) update(key, { state: 'cancelled' });
      else update(key, { state: 'failed', error: e });
    } finally {
      pending.current.delete(key);
    }
  };

  const start = (list: FileList | File[]) => {
    const chosen = Array.from(list);
    if (!chosen.length) return;
    const dest = uri.trim();
    const problem = s3UriProblem(dest);
    if (problem) {
      setFormError(problem);
      return;
    }
    if (chosen.length > 1 && dest && !dest.endsWith('/')) {
      setFormError(
        'A destination names one object: end it with "/" to put several files under it by name, or add them one at a time.',
      );
      return;
    }
    setFormError(null);
    const added: Upload[] = chosen.map((file) => {
      const key = nextKey.current++;
      const target = uploadTarget(dest, file.name);
      pending.current.set(key, { file, purpose, target, ctl: new AbortController() });
      return { key, name: file.name, bytes: file.size, purpose, target, sent: 0, total: file.size, state: 'waiting' };
    });
    setUploads((us) => [...added.slice().reverse(), ...us]);
    for (const u of added) queue.current = queue.current.then(() => send(u.key));
  };

  const cancel = (key: number) => {
    pending.current.get(key)?.ctl.abort();
    // one still waiting never starts; one being sent ends in its abort handler
    setUploads((us) => us.map((u) => (u.key === key && u.state === 'waiting' ? { ...u, state: 'cancelled' } : u)));
  };

  const onDrop = (e: DragEvent<HTMLDivElement>) => {
    e.preventDefault();
    setOver(false);
    start(e.dataTransfer.files);
  };

  const finished = uploads.some((u) => !ACTIVE.includes(u.state));
  return (
    <section className="card" aria-labelledby="upload-title">
      <h2 id="upload-title">Upload files</h2>
      <div className="row">
        <label className="inline">
          Purpose{' '}
          <select value={purpose} onChange={(e) => setPurpose(e.target.value as FilePurpose)}>
            {FILE_PURPOSES.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          Destination{' '}
          <input
            className="mono"
            size={42}
            placeholder="s3://bucket/key (optional)"
            value={uri}
            onChange={(e) => {
              setUri(e.target.value);
              setFormError(null);
            }}
            spellCheck={false}
            autoComplete="off"
          />
        </label>
      </div>
      <p className="hint">
        Empty: stored at <code>s3://uploads/&lt;id&gt;/&lt;file name&gt;</code>. Ending in <code>/</code>: each file goes under
        it by name. Jobs read a file by its <code>s3://</code> or <code>artifact://</code> URI; uploading to an{' '}
        <code>s3://</code> URI again replaces the file there.
      </p>
      <div
        className={`dropzone${over ? ' dropzone-over' : ''}`}
        data-testid="dropzone"
        onDragEnter={(e) => {
          if (hasFiles(e)) setOver(true);
        }}
        onDragOver={(e) => {
          if (!hasFiles(e)) return;
          e.preventDefault();
          e.dataTransfer.dropEffect = 'copy';
          setOver(true);
        }}
        onDragLeave={(e) => {
          if (!e.currentTarget.contains(e.relatedTarget as Node | null)) setOver(false);
        }}
        onDrop={onDrop}
      >
        <strong>Drop files here</strong>
        <span className="muted">or</span>
        <label className="btn file-pick">
          Choose files
          <input
            type="file"
            multiple
            className="sr-only"
            onChange={(e) => {
              if (e.target.files) start(e.target.files);
              e.target.value = ''; // the same file can be chosen again
            }}
          />
        </label>
        <span className="hint">
          Files are streamed, never read into the page; the gateway&apos;s size cap applies (5 GiB unless set otherwise).
        </span>
      </div>
      {formError ? (
        <p className="inline-error" role="alert">
          {formError}
        </p>
      ) : null}
      {uploads.length ? (
        <>
          <ul className="uploads" aria-label="Uploads">
            {uploads.map((u) => (
              <li key={u.key} className={`upload upload-${u.state}`} data-testid="upload" data-state={u.state}>
                <div className="upload-head">
                  <strong>{u.name}</strong>
                  <span className="muted small">
                    {u.purpose} · {fmtBytes(u.bytes)}
                    {u.target ? (
                      <>
                        {' '}
                        → <span className="mono">{u.target}</span>
                      </>
                    ) : null}
                  </span>
                  <span className={`badge badge-upload-${u.state}`}>{STATE_LABEL[u.state]}</span>
                  {ACTIVE.includes(u.state) ? (
                    <button
                      type="button"
                      className="btn btn-small"
                      onClick={() => cancel(u.key)}
                      aria-label={`Cancel the upload of ${u.name}`}
                    >
                      Cancel
                    </button>
                  ) : null}
                </div>
                {u.state === 'sending' || u.state === 'storing' ? (
                  <>
                    <ProgressBar value={u.total ? u.sent / u.total : 0} label={`Uploading ${u.name}`} />
                    <span className="muted small" aria-live="polite">
                      {u.state === 'storing'
                        ? 'Sent; the gateway is finishing the write to the store…'
                        : fmtUploadProgress(u.sent, u.total, u.bytes)}
                    </span>
                  </>
                ) : null}
                {u.state === 'stored' && u.stored ? (
                  <span className="small">
                    Stored at <span className="mono">{u.stored.s3_uri}</span> as{' '}
                    <span className="mono">{u.stored.uri}</span>
                  </span>
                ) : null}
                {u.state === 'failed' ? (
                  // a broken connection mid-upload is not "the gateway is not reachable"
                  <InlineError
                    error={u.error instanceof ApiError && u.error.status === 0 ? u.error.message : u.error}
                  />
                ) : null}
              </li>
            ))}
          </ul>
          {finished ? (
            <button
              type="button"
              className="btn btn-small"
              onClick={() => setUploads((us) => us.filter((u) => ACTIVE.includes(u.state)))}
            >
              Clear finished
            </button>
          ) : null}
        </>
      ) : null}
    </section>
  );
}
