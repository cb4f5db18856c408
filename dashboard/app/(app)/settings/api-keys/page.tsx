'use client';
// Settings -> API keys: generate (name, optional expiry) -> a modal shows the key once,
// with a copy button and a warning; closing it forgets the key. The list shows prefix,
// dates and status; revoking asks for confirmation.
import { useSearchParams } from 'next/navigation';
import { Suspense, useRef, useState, type FormEvent } from 'react';
import { Modal } from '@/components/Modal';
import { Card, Empty, ErrorState, InlineError, Loading, PageHeader, StatusBadge } from '@/components/ui';
import { api, type ApiKey, type ApiKeyCreated } from '@/lib/api';
import { fmtAgo, fmtTime } from '@/lib/format';
import { useApi } from '@/lib/useApi';

const EXPIRY = [
  { days: 0, label: 'Never' },
  { days: 30, label: '30 days' },
  { days: 90, label: '90 days' },
  { days: 365, label: '1 year' },
];

function ApiKeys() {
  const params = useSearchParams();
  const keys = useApi((s) => api.listKeys(s), []);
  const [name, setName] = useState('');
  const [days, setDays] = useState(0);
  const [busy, setBusy] = useState(false);
  const [createError, setCreateError] = useState<unknown>(undefined);
  const [created, setCreated] = useState<ApiKeyCreated | null>(null);
  const [copied, setCopied] = useState<'no' | 'yes' | 'failed'>('no');
  const [revoking, setRevoking] = useState<ApiKey | null>(null);
  const [revokeError, setRevokeError] = useState<unknown>(undefined);
  const secretRef = useRef<HTMLInputElement>(null);
  const now = Date.now();

  const create = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setCreateError(undefined);
    try {
      const k = await api.createKey(name.trim(), days || undefined);
      setCopied('no');
      setCreated(k);
      setName('');
      keys.reload();
    } catch (err) {
      setCreateError(err);
    } finally {
      setBusy(false);
    }
  };

  const copy = async () => {
    if (!created) return;
    try {
      await navigator.clipboard.writeText(created.api_key);
      setCopied('yes');
    } catch {
      // no clipboard permission (e.g. not a secure context): select it for Ctrl+C
      secretRef.current?.select();
      setCopied('failed');
    }
  };

  const revoke = async () => {
    if (!revoking) return;
    setBusy(true);
    setRevokeError(undefined);
    try {
      await api.revokeKey(revoking.key_id);
      setRevoking(null);
      keys.reload();
    } catch (err) {
      setRevokeError(err);
    } finally {
      setBusy(false);
    }
  };

  const list = keys.data?.data ?? [];
  return (
    <>
      <PageHeader title="API keys" />
      {params.get('welcome') ? (
        <p className="notice" role="status">
          Welcome! Generate your first API key below; your programs send it as <code>X-Nexa-Api-Key</code> (or{' '}
          <code>Authorization: Bearer …</code>) to submit jobs.
        </p>
      ) : null}

      <Card title="Generate a new key">
        <form className="row" onSubmit={create}>
          <label className="inline">
            Name{' '}
            <input
              name="key-name"
              required
              maxLength={64}
              placeholder="e.g. laptop"
              value={name}
              onChange={(e) => setName(e.target.value)}
            />
          </label>
          <label className="inline">
            Expires{' '}
            <select value={days} onChange={(e) => setDays(Number(e.target.value))}>
              {EXPIRY.map((x) => (
                <option key={x.days} value={x.days}>
                  {x.label}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" className="btn btn-primary" disabled={busy || !name.trim()}>
            Generate new key
          </button>
        </form>
        <InlineError error={createError} />
      </Card>

      <Card title="Your keys">
        {keys.data ? (
          list.length ? (
            <div className="table-wrap">
              <table data-testid="key-list">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Key</th>
                    <th scope="col">Status</th>
                    <th scope="col">Created</th>
                    <th scope="col">Last used</th>
                    <th scope="col">Expires</th>
                    <th scope="col">
                      <span className="sr-only">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((k) => (
                    <tr key={k.key_id} data-key-id={k.key_id}>
                      <td>{k.name}</td>
                      <td className="mono">{k.prefix}…</td>
                      <td>
                        <StatusBadge status={k.status} />
                      </td>
                      <td title={fmtTime(k.created_at)}>{fmtAgo(k.created_at, now)}</td>
                      <td title={fmtTime(k.last_used_at)}>{fmtAgo(k.last_used_at, now)}</td>
                      <td>{k.expires_at ? fmtTime(k.expires_at) : 'never'}</td>
                      <td>
                        {k.status === 'active' ? (
                          <button
                            type="button"
                            className="btn btn-small btn-danger"
                            onClick={() => {
                              setRevokeError(undefined);
                              setRevoking(k);
                            }}
                            aria-label={`Revoke ${k.name}`}
                          >
                            Revoke
                          </button>
                        ) : null}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : (
            <Empty title="No API keys yet">Generate one above to use the API, the SDK or curl.</Empty>
          )
        ) : keys.error ? (
          <ErrorState error={keys.error} what="your API keys" onRetry={keys.reload} />
        ) : (
          <Loading what="Loading your keys" />
        )}
      </Card>

      <Modal open={created !== null} title="Your new API key" onClose={() => setCreated(null)} labelledBy="new-key-title">
        {created ? (
          <>
            <p className="warning" role="note">
              <strong>Copy it now: this is the only time the key is shown.</strong> Nexa Forge stores only a hash of it;
              if you lose it, revoke it and generate a new one.
            </p>
            <label className="block">
              {created.name}
              <input
                ref={secretRef}
                className="mono secret"
                readOnly
                value={created.api_key}
                data-testid="new-api-key"
                onFocus={(e) => e.currentTarget.select()}
              />
            </label>
            <p className="muted small" aria-live="polite">
              {copied === 'yes'
                ? 'Copied to the clipboard.'
                : copied === 'failed'
                  ? 'Copying is not allowed here: the key is selected, press Ctrl+C.'
                  : `Prefix ${created.prefix} · ${created.expires_at ? `expires ${fmtTime(created.expires_at)}` : 'never expires'}`}
            </p>
            <div className="modal-actions">
              <button type="button" className="btn btn-primary" onClick={copy}>
                {copied === 'yes' ? 'Copied' : 'Copy key'}
              </button>
              <button type="button" className="btn" onClick={() => setCreated(null)}>
                I have saved it, close
              </button>
            </div>
          </>
        ) : null}
      </Modal>

      <Modal open={revoking !== null} title="Revoke this key?" onClose={() => setRevoking(null)} labelledBy="revoke-title">
        {revoking ? (
          <>
            <p>
              <strong>{revoking.name}</strong> (<span className="mono">{revoking.prefix}…</span>) stops working at once,
              everywhere. Programs that use it will get 403. This cannot be undone.
            </p>
            <InlineError error={revokeError} />
            <div className="modal-actions">
              <button type="button" className="btn" onClick={() => setRevoking(null)} autoFocus>
                Keep it
              </button>
              <button type="button" className="btn btn-danger" onClick={revoke} disabled={busy}>
                {busy ? 'Revoking…' : 'Revoke key'}
              </button>
            </div>
          </>
        ) : null}
      </Modal>
    </>
  );
}

export default function ApiKeysPage() {
  return (
    <Suspense fallback={<Loading />}>
      <ApiKeys />
    </Suspense>
  );
}
