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
  hostname: string;
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
  job_types: { job_type: JobType; lines: BillingLine[]; total_usd: string; total_micros: number }[];
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
    const e = (data as { error?: { code?: string; message?: string; param?: string; request_id?: string } })?.error;
    const retry = Number(res.headers.get('Retry-After'));
    const err = new ApiError(
      res.status,
      e?.code ?? `http_${res.status}`,
      e?.message ?? (text.slice(0, 200) || res.statusText || `HTTP ${res.status}`),
      method,
      path,
      e?.param,
      e?.request_id ?? res.headers.get('X-Request-Id') ?? undefined,
      Number.isFinite(retry) && retry > 0 ? retry : undefined,
    );
    if (err.unauthenticated && !opts.anonymous) unauthorizedListeners.forEach((fn) => fn(err));
    throw err;
  }
  return data as T;
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
