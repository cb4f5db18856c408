// The dashboard's one API client: typed calls to the gateway's public API
// (proto/openapi.yaml), made same-origin through /api/* so the nf_session cookie
// authenticates them. No call ever sends an API key: the browser holds a session only.

export const JOB_TYPES = ['generate', 'audit', 'distill', 'train', 'evaluate', 'deploy'] as const;
export type JobType = (typeof JOB_TYPES)[number];

export const JOB_STATUSES = [
  'queued',
  'assigned',
  'running',
  'succeeded',
  'failed',
  'cancel_requested',
  'cancelled',
  'dead_lettered',
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const TERMINAL_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'cancelled', 'dead_lettered'];
export const isTerminal = (s: JobStatus) => TERMINAL_STATUSES.includes(s);

export const METERS = ['gpu_ms', 'input_tokens', 'output_tokens', 'storage_byte_hours'] as const;
export type Meter = (typeof METERS)[number];

export interface User {
  user_id: string;
  email: string;
  created_at: string;
}
export interface Session {
  user_id: string;
  email: string;
  session_token: string;
  expires_at: string;
}
export interface Me extends User {
  auth_method: 'api_key' | 'session';
  key_id: string | null;
}

export interface ApiKey {
  key_id: string;
  prefix: string;
  name: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
  status: 'active' | 'expired' | 'revoked';
  rate_limit_per_minute: number | null;
  burst: number | null;
}
export interface ApiKeyCreated {
  key_id: string;
  api_key: string;
  prefix: string;
  name: string;
  created_at: string;
  expires_at: string | null;
  rate_limit_per_minute: number | null;
  burst: number | null;
}

export interface Artifact {
  artifact_id: string;
  job_id?: string;
  name: string;
  kind: string;
  uri: string;
  bytes: number;
  sha256: string | null;
  created_at?: string;
}
/** What an uploaded file is for (POST /api/files `purpose`). */
export const FILE_PURPOSES = ['dataset', 'model', 'other'] as const;
export type FilePurpose = (typeof FILE_PURPOSES)[number];

/** An uploaded file (GET/POST /api/files): an artifact with a place in the caller's s3:// namespace. */
export interface FileObject {
  id: string;
  object: 'file';
  /** artifact://<id>, what a job parameter names it by */
  uri: string;
  s3_uri: string;
  filename: string;
  purpose: FilePurpose;
  bytes: number;
  sha256: string;
  created_at: string;
}
export interface JobError {
  code: string;
  message: string;
  class: 'user_error' | 'worker_lost' | 'preempted' | 'timeout' | 'infra';
}
export interface Job {
  job_id: string;
  job_type: JobType;
  status: JobStatus;
  params: Record<string, unknown>;
  metadata: Record<string, string>;
  priority: number;
  attempt: number;
  max_attempts: number;
  timeout_seconds: number;
  gpu_type: string | null;
  gpu_count: number;
  labels: Record<string, string>;
  worker_id: string | null;
  progress: number;
  result: Record<string, unknown> | null;
  error: JobError | null;
  artifacts: Artifact[];
  cost_usd: string;
  /** true once the job ended and billing priced all of its usage: cost_usd stays */
  cost_final: boolean;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  finished_at: string | null;
}
export interface Page<T> {
  data: T[];
  has_more: boolean;
  next_cursor: string | null;
}
export interface JobEvent {
  event_id: string;
  type: string;
  attempt: number;
  time: string;
  data: Record<string, unknown>;
  cursor: string;
}
export interface JobEventList extends Page<JobEvent> {
  job_status: JobStatus;
}

export interface Worker {
  worker_id: string;
  hostname: string | null; // null: host names are shown to operators only
  status: 'idle' | 'busy' | 'draining' | 'lost';
  gpu_type?: string | null;
  gpu_count?: number;
  job_types?: string[];
  labels?: Record<string, string>;
  current_jobs?: string[];
  last_heartbeat_at?: string | null;
  version?: string;
}

export interface BillingLine {
  meter: Meter;
  quantity: number;
  base_unit: 'ms' | 'token' | 'byte-hour';
  unit: string;
  unit_size: number;
  rate: string;
  cost_usd: string;
  cost_micros: number;
  effective_from: string;
}
export interface BillingSummary {
  user_id: string;
  period_start: string;
  period_end: string;
  currency: 'USD';
  meters: BillingLine[];
  job_types: { job_type: JobType | 'files'; lines: BillingLine[]; total_usd: string; total_micros: number }[];
  total_usd: string;
  total_micros: number;
}
export interface UsagePoint {
  start: string;
  meter: Meter;
  quantity: number;
  cost_usd: string;
  cost_micros: number;
}
export interface UsageSeries {
  user_id: string;
  bucket: 'hour' | 'day';
  period_start: string;
  period_end: string;
  meter: Meter | null;
  job_type: JobType | null;
  points: UsagePoint[];
}
export interface Budget {
  user_id: string;
  monthly_limit_usd: string | null;
  monthly_limit_micros: number | null;
  spent_usd: string;
  spent_micros: number;
  remaining_usd: string | null;
  percent_used: number | null;
  over_budget: boolean;
  period_start: string;
  alerts_sent: number[];
  updated_at: string | null;
}

export interface Readiness {
  status: 'ready' | 'unready';
  checks: Record<string, string>;
}

/** A failed call: the gateway's JSON error, or one this module makes up for the transport. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly method: string,
    readonly path: string,
    readonly param?: string,
    readonly requestId?: string,
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The gateway (or the dashboard server in front of it) could not be reached. */
  get unreachable(): boolean {
    return this.status === 0 || this.code === 'gateway_unreachable';
  }

  /** No (valid) session: signed out, expired, or revoked. */
  get unauthenticated(): boolean {
    return this.status === 401 || this.status === 403;
  }

  /** The gateway does not serve this route (yet). */
  get notServed(): boolean {
    return this.status === 405 || this.status === 501 || (this.status === 404 && this.message === 'no such resource');
  }
}

type Unauthorized = (err: ApiError) => void;
const unauthorizedListeners = new Set<Unauthorized>();

/** Called whenever an authenticated call is refused: the session is gone. */
export function onUnauthorized(fn: Unauthorized): () => void {
  unauthorizedListeners.add(fn);
  return () => {
    unauthorizedListeners.delete(fn);
  };
}

type Query = Record<string, string | number | undefined | null>;

interface RequestOptions {
  query?: Query;
  body?: unknown;
  signal?: AbortSignal;
  /** Sign-in and sign-up answer 401/403 for bad input, not for an expired session. */
  anonymous?: boolean;
  /** Error statuses whose JSON body is an answer rather than an error (readiness: 503). */
  answers?: number[];
}

function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  }
  const s = qs.toString();
  return s ? `${path}?${s}` : path;
}

/**
 * The ApiError for a refused call, from the gateway's JSON error body
 * ({"error": {"code", "message", "param", "request_id"}}) when there is one, else from the
 * status line and the first bytes of the body. `header` reads the answer's headers.
 */
export function apiErrorFrom(
  method: string,
  path: string,
  status: number,
  statusText: string,
  text: string,
  header: (name: string) => string | null,
): ApiError {
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  const e = (data as { error?: { code?: string; message?: string; param?: string; request_id?: string } } | undefined)
    ?.error;
  const retry = Number(header('Retry-After'));
  return new ApiError(
    status,
    e?.code ?? `http_${status}`,
    e?.message ?? (text.slice(0, 200) || statusText || `HTTP ${status}`),
    method,
    path,
    e?.param ?? undefined,
    e?.request_id ?? header('X-Request-Id') ?? undefined,
    Number.isFinite(retry) && retry > 0 ? retry : undefined,
  );
}

async function request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  const url = withQuery(path, opts.query);
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal: opts.signal,
    });
  } catch (e) {
    if (opts.signal?.aborted) throw e;
    throw new ApiError(0, 'network_error', 'The dashboard server did not answer.', method, path);
  }
  const text = res.status === 204 ? '' : await res.text();
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (!res.ok && !(opts.answers?.includes(res.status) && data && !(data as { error?: unknown }).error)) {
    const err = apiErrorFrom(method, path, res.status, res.statusText, text, (n) => res.headers.get(n));
    if (err.unauthenticated && !opts.anonymous) unauthorizedListeners.forEach((fn) => fn(err));
    throw err;
  }
  return data as T;
}

/**
 * What is wrong with a destination URI typed for an upload, or null when it may be sent.
 * Only the shape is checked here (s3://, a bucket, a key); the gateway applies the full
 * rules and answers 422 naming `uri`, which the page shows as it is.
 */
export function s3UriProblem(uri: string): string | null {
  if (!uri) return null;
  if (!uri.startsWith('s3://')) return 'A destination starts with s3:// (e.g. s3://bucket/data.parquet).';
  // s3://bucket/ alone is a prefix too: each file goes there under its own name
  if (uri.indexOf('/', 's3://'.length) <= 's3://'.length) {
    return 'A destination names a bucket and a key: s3://bucket/key.';
  }
  return null;
}

/**
 * Where one file of an upload goes: the URI as typed, or, when it ends with "/", that
 * prefix plus the file's name (so several files can be dropped under one folder).
 * Undefined (no `uri` field) lets the gateway choose s3://uploads/<id>/<filename>.
 */
export function uploadTarget(uri: string, filename: string): string | undefined {
  const u = uri.trim();
  if (!u) return undefined;
  return u.endsWith('/') ? u + filename : u;
}

/**
 * The multipart body of POST /api/files. The order matters: `purpose` and `uri` come
 * before `file`, so the gateway knows where the bytes go (and can refuse a bad `uri`)
 * before it streams them to the store. The File itself is appended, never its contents:
 * the browser streams it from disk, however large.
 */
export function buildUploadForm(file: Blob, filename: string, purpose: FilePurpose, uri?: string): FormData {
  const form = new FormData();
  form.append('purpose', purpose);
  if (uri) form.append('uri', uri);
  form.append('file', file, filename);
  return form;
}

export interface UploadProgress {
  /** request bytes sent so far (the multipart body, a little more than the file) */
  sent: number;
  /** the whole request body in bytes */
  total: number;
}

/**
 * POST /api/files with XMLHttpRequest: its upload progress events are what Chromium
 * offers for a request body (a streamed fetch body needs HTTP/2). Resolves with the file
 * object (201); rejects with an ApiError from the JSON error body (413 too large, 422 bad
 * uri, ...), an ApiError with status 0 when the connection broke, or an AbortError when
 * `signal` aborted it.
 */
export function uploadFile(
  file: File,
  opts: { purpose: FilePurpose; uri?: string; onProgress?: (p: UploadProgress) => void; signal?: AbortSignal },
): Promise<FileObject> {
  const path = '/api/files';
  return new Promise<FileObject>((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new DOMException('The upload was cancelled.', 'AbortError'));
      return;
    }
    const xhr = new XMLHttpRequest();
    const onAbort = () => xhr.abort();
    const done = () => opts.signal?.removeEventListener('abort', onAbort);
    xhr.open('POST', path);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) =>
      opts.onProgress?.({ sent: e.loaded, total: e.lengthComputable ? e.total : file.size });
    xhr.onload = () => {
      done();
      const text = xhr.responseText ?? '';
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(text) as FileObject);
        } catch {
          const what = 'The gateway answered the upload with something other than JSON.';
          reject(new ApiError(xhr.status, 'bad_response', what, 'POST', path));
        }
        return;
      }
      const err = apiErrorFrom('POST', path, xhr.status, xhr.statusText, text, (n) => xhr.getResponseHeader(n));
      if (err.unauthenticated) unauthorizedListeners.forEach((fn) => fn(err));
      reject(err);
    };
    xhr.onerror = () => {
      done();
      const what = 'The upload was cut off: the dashboard server stopped answering.';
      reject(new ApiError(0, 'network_error', what, 'POST', path));
    };
    xhr.onabort = () => {
      done();
      reject(new DOMException('The upload was cancelled.', 'AbortError'));
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    xhr.send(buildUploadForm(file, file.name, opts.purpose, opts.uri));
  });
}

const enc = encodeURIComponent;

export const api = {
  // accounts and sessions
  register: (email: string, password: string) =>
    request<User>('POST', '/api/auth/register', { body: { email, password }, anonymous: true }),
  login: (email: string, password: string) =>
    request<Session>('POST', '/api/auth/login', { body: { email, password }, anonymous: true }),
  logout: () => request<void>('POST', '/api/auth/logout', { anonymous: true }),
  me: (signal?: AbortSignal) => request<Me>('GET', '/api/auth/me', { signal }),

  // API keys
  listKeys: (signal?: AbortSignal) => request<{ data: ApiKey[] }>('GET', '/api/auth/api-keys', { signal }),
  createKey: (name: string, expiresInDays?: number) =>
    request<ApiKeyCreated>('POST', '/api/auth/api-keys', {
      body: expiresInDays ? { name, expires_in_days: expiresInDays } : { name },
    }),
  revokeKey: (keyId: string) => request<void>('DELETE', `/api/auth/api-keys/${enc(keyId)}`),

  // jobs
  listJobs: (q: { status?: string; job_type?: string; limit?: number; cursor?: string | null }, signal?: AbortSignal) =>
    request<Page<Job>>('GET', '/api/jobs/', { query: q, signal }),
  getJob: (jobId: string, signal?: AbortSignal) => request<Job>('GET', `/api/jobs/${enc(jobId)}`, { signal }),
  cancelJob: (jobId: string) => request<Job>('POST', `/api/jobs/${enc(jobId)}/cancel`),
  jobEvents: (jobId: string, q: { limit?: number; cursor?: string | null } = {}, signal?: AbortSignal) =>
    request<JobEventList>('GET', `/api/jobs/${enc(jobId)}/events`, { query: q, signal }),
  /** The live stream (text/event-stream) of a job's events; EventSource sends the cookie. */
  jobEventsUrl: (jobId: string) => `/api/jobs/${enc(jobId)}/events`,

  // artifacts
  listArtifacts: (q: { job_id?: string; limit?: number; cursor?: string | null }, signal?: AbortSignal) =>
    request<Page<Artifact>>('GET', '/api/artifacts', { query: q, signal }),
  artifactContentUrl: (artifactId: string) => `/api/artifacts/${enc(artifactId)}/content`,

  // files (uploads; they are artifacts too)
  listFiles: (q: { purpose?: FilePurpose | ''; limit?: number; cursor?: string | null }, signal?: AbortSignal) =>
    request<Page<FileObject>>('GET', '/api/files', { query: q, signal }),
  uploadFile,
  deleteFile: (fileId: string) => request<unknown>('DELETE', `/api/files/${enc(fileId)}`),

  // the fleet
  listWorkers: (signal?: AbortSignal) => request<{ data: Worker[] }>('GET', '/api/workers/', { signal }),

  // billing
  billingSummary: (q: { period_start?: string; period_end?: string }, signal?: AbortSignal) =>
    request<BillingSummary>('GET', '/api/billing/summary', { query: q, signal }),
  billingUsage: (
    q: { bucket?: 'hour' | 'day'; meter?: Meter; job_type?: JobType; period_start?: string; period_end?: string },
    signal?: AbortSignal,
  ) => request<UsageSeries>('GET', '/api/billing/usage', { query: q, signal }),
  getBudget: (signal?: AbortSignal) => request<Budget>('GET', '/api/billing/budget', { signal }),
  setBudget: (monthlyLimitUsd: string | null) =>
    request<Budget>('PUT', '/api/billing/budget', { body: { monthly_limit_usd: monthlyLimitUsd } }),

  /** The gateway's GET /readyz, relayed by app/gateway/readyz: 200 ready or 503 unready, both with checks. */
  readiness: (signal?: AbortSignal) =>
    request<Readiness>('GET', '/gateway/readyz', { signal, anonymous: true, answers: [503] }),
};
