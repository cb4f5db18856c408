'use client';
// Artifacts: upload files (drag and drop or the picker) and list them - s3:// place,
// size, sha256, download, delete - then everything your jobs and uploads stored, newest
// first, with size and a download link; optionally only one job's.
import Link from 'next/link';
import { useState, type FormEvent } from 'react';
import { Modal } from '@/components/Modal';
import { CopyButton, Empty, ErrorState, InlineError, Loading, PageHeader } from '@/components/ui';
import { UploadCard } from '@/components/Upload';
import { api, FILE_PURPOSES, type FileObject, type FilePurpose } from '@/lib/api';
import { fmtAgo, fmtBytes, fmtTime, shortHash } from '@/lib/format';
import { useApi } from '@/lib/useApi';

const PAGE = 25;

function Pager({
  page,
  hasMore,
  onNewer,
  onOlder,
  label,
}: {
  page: number;
  hasMore: boolean;
  onNewer: () => void;
  onOlder: () => void;
  label: string;
}) {
  return (
    <nav className="pager" aria-label={label}>
      <button type="button" className="btn" disabled={page === 0} onClick={onNewer}>
        ← Newer
      </button>
      <span className="muted small">Page {page + 1}</span>
      <button type="button" className="btn" disabled={!hasMore} onClick={onOlder}>
        Older →
      </button>
    </nav>
  );
}

export default function ArtifactsPage() {
  // files (uploads)
  const [purpose, setPurpose] = useState<FilePurpose | ''>('');
  const [fileCursors, setFileCursors] = useState<(string | null)[]>([null]);
  const filePage = fileCursors.length - 1;
  const fileCursor = fileCursors[filePage];
  const files = useApi((s) => api.listFiles({ purpose, limit: PAGE, cursor: fileCursor }, s), [purpose, fileCursor]);
  const [deleting, setDeleting] = useState<FileObject | null>(null);
  const [deleteBusy, setDeleteBusy] = useState(false);
  const [deleteError, setDeleteError] = useState<unknown>(undefined);

  // all artifacts
  const [jobId, setJobId] = useState('');
  const [filter, setFilter] = useState('');
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const page = cursors.length - 1;
  const cursor = cursors[page];
  const list = useApi((s) => api.listArtifacts({ job_id: filter || undefined, limit: PAGE, cursor }, s), [filter, cursor]);
  const now = Date.now();

  const reloadAll = () => {
    files.reload();
    list.reload();
  };

  const apply = (e: FormEvent) => {
    e.preventDefault();
    setCursors([null]);
    setFilter(jobId.trim());
  };

  const doDelete = async () => {
    if (!deleting) return;
    setDeleteBusy(true);
    setDeleteError(undefined);
    try {
      await api.deleteFile(deleting.id);
      setDeleting(null);
      reloadAll();
    } catch (err) {
      setDeleteError(err);
    } finally {
      setDeleteBusy(false);
    }
  };

  return (
    <>
      <PageHeader title="Artifacts" />

      <UploadCard onStored={reloadAll} />

      <section className="card" aria-labelledby="files-title">
        <div className="card-head">
          <h2 id="files-title">Files</h2>
          <label className="inline">
            Purpose{' '}
            <select
              value={purpose}
              onChange={(e) => {
                setPurpose(e.target.value as FilePurpose | '');
                setFileCursors([null]);
              }}
              aria-label="Only the files of this purpose"
            >
              <option value="">all</option>
              {FILE_PURPOSES.map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
          </label>
        </div>
        {files.data ? (
          files.data.data.length ? (
            <div className="table-wrap">
              <table data-testid="file-list">
                <thead>
                  <tr>
                    <th scope="col">File</th>
                    <th scope="col">Purpose</th>
                    <th scope="col">Location</th>
                    <th scope="col" className="num">
                      Size
                    </th>
                    <th scope="col">SHA-256</th>
                    <th scope="col">Created</th>
                    <th scope="col">
                      <span className="sr-only">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {files.data.data.map((f) => (
                    <tr key={f.id} data-file-id={f.id}>
                      <td>
                        <span>{f.filename}</span>
                        <div className="mono muted small">{f.id}</div>
                      </td>
                      <td>
                        <span className="badge">{f.purpose}</span>
                      </td>
                      <td className="mono small wrap-anywhere">{f.s3_uri}</td>
                      <td className="num nowrap" title={`${f.bytes.toLocaleString()} bytes`}>
                        {fmtBytes(f.bytes)}
                      </td>
                      <td>
                        <span className="hash">
                          <code title={f.sha256}>{shortHash(f.sha256)}</code>
                          <CopyButton text={f.sha256} label={`Copy the SHA-256 of ${f.filename}`} />
                        </span>
                      </td>
                      <td title={fmtTime(f.created_at)}>{fmtAgo(f.created_at, now)}</td>
                      <td>
                        <span className="row nowrap">
                          <a
                            href={api.artifactContentUrl(f.id)}
                            download={f.filename}
                            aria-label={`Download ${f.filename}`}
                          >
                            Download
                          </a>
                          <button
                            type="button"
                            className="btn btn-small btn-danger"
                            onClick={() => {
                              setDeleteError(undefined);
                              setDeleting(f);
                            }}
                            aria-label={`Delete ${f.filename}`}
                          >
                            Delete
                          </button>
                        </span>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : filePage > 0 ? (
            <Empty title="No more files" />
          ) : (
            <Empty title={purpose ? `No ${purpose} files` : 'No files yet'}>
              Upload datasets and models above; jobs read them by their <code>s3://</code> or <code>artifact://</code> URI.
            </Empty>
          )
        ) : files.error ? (
          <ErrorState error={files.error} what="your files" onRetry={files.reload} />
        ) : (
          <Loading what="Loading files" />
        )}
        <Pager
          label="Pages of files"
          page={filePage}
          hasMore={!!(files.data?.has_more && files.data.next_cursor)}
          onNewer={() => setFileCursors((c) => c.slice(0, -1))}
          onOlder={() => files.data?.next_cursor && setFileCursors((c) => [...c, files.data!.next_cursor])}
        />
      </section>

      <section className="card" aria-labelledby="artifacts-title">
        <div className="card-head">
          <h2 id="artifacts-title">All artifacts</h2>
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
        </div>
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
                          <span className="muted">upload</span>
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
              Jobs store their outputs (datasets, checkpoints, reports) here when they succeed; uploaded files are listed
              here too.
            </Empty>
          )
        ) : list.error ? (
          <ErrorState error={list.error} what="your artifacts" onRetry={list.reload} />
        ) : (
          <Loading what="Loading artifacts" />
        )}
        <Pager
          label="Pages of artifacts"
          page={page}
          hasMore={!!(list.data?.has_more && list.data.next_cursor)}
          onNewer={() => setCursors((c) => c.slice(0, -1))}
          onOlder={() => list.data?.next_cursor && setCursors((c) => [...c, list.data!.next_cursor])}
        />
      </section>

      <Modal
        open={deleting !== null}
        title="Delete this file?"
        onClose={() => setDeleting(null)}
        labelledBy="delete-file-title"
      >
        {deleting ? (
          <>
            <p>
              <strong>{deleting.filename}</strong> ({fmtBytes(deleting.bytes)}) is removed from the store:{' '}
              <span className="mono">{deleting.s3_uri}</span> and <span className="mono">{deleting.uri}</span> stop
              resolving, so jobs that name them are refused. This cannot be undone.
            </p>
            <InlineError error={deleteError} />
            <div className="modal-actions">
              <button type="button" className="btn" onClick={() => setDeleting(null)} autoFocus>
                Keep it
              </button>
              <button type="button" className="btn btn-danger" onClick={doDelete} disabled={deleteBusy}>
                {deleteBusy ? 'Deleting…' : 'Delete file'}
              </button>
            </div>
          </>
        ) : null}
      </Modal>
    </>
  );
}
