// Display helpers: times, sizes, money and meter quantities.

export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}

export function fmtAgo(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return iso;
  const s = Math.round((now - t) / 1000);
  if (s < 0) return 'in the future';
  if (s < 5) return 'just now';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function fmtDuration(fromIso: string | null, toIso: string | null, now = Date.now()): string {
  if (!fromIso) return '—';
  const a = new Date(fromIso).getTime();
  const b = toIso ? new Date(toIso).getTime() : now;
  const ms = Math.max(0, b - a);
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** "0.001234" (the API's exact decimal string) -> "$0.001234"; keeps every digit the API gave. */
export function fmtUsd(s: string | null | undefined): string {
  if (s === null || s === undefined || s === '') return '—';
  return `$${s}`;
}

export const METER_LABEL: Record<string, string> = {
  gpu_ms: 'GPU time',
  input_tokens: 'Input tokens',
  output_tokens: 'Output tokens',
  storage_byte_hours: 'Storage',
};

/** A meter quantity in its base unit, in words a person reads. */
export function fmtQuantity(meter: string, q: number): string {
  switch (meter) {
    case 'gpu_ms':
      return q < 60_000 ? `${(q / 1000).toFixed(1)} GPU-s` : `${(q / 3_600_000).toFixed(4)} GPU-h`;
    case 'input_tokens':
    case 'output_tokens':
      return `${q.toLocaleString()} tokens`;
    case 'storage_byte_hours':
      return `${fmtBytes(q)}·h`;
    default:
      return q.toLocaleString();
  }
}

export function fmtPercent(p: number): string {
  return `${Math.round(p * 100)}%`;
}

export function shortId(id: string | null | undefined, keep = 12): string {
  if (!id) return '—';
  return id.length > keep + 4 ? `${id.slice(0, keep)}…` : id;
}

/** A hex digest (sha256) cut to its first `keep` digits, as git shows commits. */
export function shortHash(h: string | null | undefined, keep = 12): string {
  if (!h) return '—';
  const hex = h.startsWith('sha256:') ? h.slice('sha256:'.length) : h;
  return hex.length > keep ? `${hex.slice(0, keep)}…` : hex;
}

/**
 * How far an upload is: the request bytes sent scaled to the file's size (the multipart
 * framing around it is a few hundred bytes), e.g. "12.0 MiB of 1.00 GiB · 1%".
 */
export function fmtUploadProgress(sent: number, total: number, fileBytes: number): string {
  const frac = total > 0 ? Math.min(1, sent / total) : 0;
  return `${fmtBytes(Math.round(frac * fileBytes))} of ${fmtBytes(fileBytes)} · ${Math.floor(frac * 100)}%`;
}
