// Server side only: relays a browser request to the gateway (NF_GATEWAY_URL, read at run
// time) and streams the answer back, so the dashboard and the API share one origin and
// the gateway's nf_session cookie (HttpOnly, SameSite=Lax) works as set.
//
//   browser --/api/...--> next (this) --same path and query--> gateway
//   gateway unreachable --> 502 {"error": {"code": "gateway_unreachable", ...}}
//
// Server-Sent Events pass through as a stream; the upstream call is aborted when the
// browser goes away (req.signal), so a closed job page ends its gateway stream too.
//
// Request bodies are read whole here (JSON, small). Uploads (/api/files, GiBs) take the
// other relay, lib/proxy-node.ts, which streams them with backpressure.

const DEFAULT_GATEWAY = 'http://127.0.0.1:8000';

// What the browser may send on (everything else, e.g. Host or Connection, stays here).
export const REQUEST_HEADERS = [
  'accept',
  'authorization',
  'content-type',
  'cookie',
  'idempotency-key',
  'last-event-id',
  'user-agent',
  'x-nexa-api-key',
  'x-request-id',
];

// What is not passed back: hop-by-hop headers, and the length/encoding that fetch has
// already undone. Set-Cookie is copied one by one below (a Headers join would merge them).
const DROP_RESPONSE_HEADERS = new Set([
  'connection',
  'content-encoding',
  'content-length',
  'keep-alive',
  'set-cookie',
  'transfer-encoding',
  'upgrade',
]);

/** The 502 answer when the gateway cannot be reached (the dashboard's own error). */
export const UNREACHABLE_HEADERS = { 'Retry-After': '2', 'Cache-Control': 'no-store' };
export function unreachableBody() {
  return {
    error: {
      code: 'gateway_unreachable',
      message: `The Nexa Forge gateway (${gatewayUrl()}) is not reachable. Is the stack up? (./forge up)`,
      request_id: '',
    },
  };
}

export function gatewayUrl(): string {
  return (process.env.NF_GATEWAY_URL || DEFAULT_GATEWAY).replace(/\/+$/, '');
}

export async function relay(req: Request, upstreamPath: string): Promise<Response> {
  const search = new URL(req.url).search;
  const headers = new Headers();
  for (const name of REQUEST_HEADERS) {
    const v = req.headers.get(name);
    if (v !== null) headers.set(name, v);
  }
  let body: ArrayBuffer | undefined;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    body = await req.arrayBuffer();
    if (body.byteLength === 0) body = undefined;
  }
  let upstream: Response;
  try {
    upstream = await fetch(gatewayUrl() + upstreamPath + search, {
      method: req.method,
      headers,
      body,
      redirect: 'manual',
      cache: 'no-store',
      signal: req.signal,
    });
  } catch {
    return Response.json(unreachableBody(), { status: 502, headers: UNREACHABLE_HEADERS });
  }
  const out = new Headers();
  upstream.headers.forEach((v, k) => {
    if (!DROP_RESPONSE_HEADERS.has(k)) out.set(k, v);
  });
  for (const c of upstream.headers.getSetCookie()) out.append('set-cookie', c);
  if ((upstream.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    out.set('Cache-Control', 'no-cache, no-transform');
    out.set('X-Accel-Buffering', 'no');
  }
  return new Response(upstream.body, { status: upstream.status, statusText: upstream.statusText, headers: out });
}
