// Server side only: the relay for request bodies too large to hold - uploads to
// POST /api/files, GiBs - with backpressure end to end:
//
//   browser --multipart body--> next (req.body) --pipe, node:http--> gateway
//
// The browser's bytes are read only as fast as the gateway takes them, so this server
// holds a few chunks at a time whatever the size of the file. Node's fetch does not do
// that for a streamed request body: with a gateway slower than the browser it reads the
// whole body into memory (a 1.5 GiB upload to a receiver taking 200 MiB/s grew the process
// by 1.5 GB; through node:http's pipe() it stayed within 40 MB). Request headers pass as
// in lib/proxy.ts, plus Content-Length, so the gateway can refuse a file over its cap
// (413) before it stores a byte.
//
// The body waits for the gateway's "100 Continue" (Expect: 100-continue, which evhttp
// answers), at most CONTINUE_WAIT_MS: a refusal on the headers alone (413 by
// Content-Length, 401, 404) then comes back before a byte of the file is sent. When the
// gateway answers while the body is still going (422 for a bad uri after reading the
// first fields), nothing more goes upstream, and the answer goes back with Connection:
// close, so the browser's connection ends after it instead of waiting on a body nobody
// reads; the browser reads the answer when its upload stops. A browser that goes away
// mid-upload (req.signal) ends the upstream request: the gateway sees a short body and
// drops the upload.
import http, { type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { gatewayUrl, REQUEST_HEADERS, UNREACHABLE_HEADERS, unreachableBody } from './proxy';

// Not passed back: hop-by-hop headers, and the length (the answer is streamed on).
const DROP_RESPONSE_HEADERS = new Set([
  'connection',
  'content-length',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

// How long the body waits for "100 Continue" before it is sent anyway (curl waits 1 s).
const CONTINUE_WAIT_MS = 1_000;

// Bodies larger than this, chunked ones, or multipart ones of any size take this relay.
const STREAM_OVER = 1 << 20;

/** Whether a request's body is streamed on (relayUpload) rather than read whole (relay). */
export function streamsBody(req: Request): boolean {
  if (req.method === 'GET' || req.method === 'HEAD' || !req.body) return false;
  if ((req.headers.get('content-type') ?? '').toLowerCase().startsWith('multipart/form-data')) return true;
  const length = req.headers.get('content-length');
  if (length === null) return req.headers.has('transfer-encoding'); // chunked: no length known
  return Number(length) > STREAM_OVER;
}

export function relayUpload(req: Request, upstreamPath: string): Promise<Response> {
  return new Promise<Response>((resolve) => {
    const target = new URL(gatewayUrl() + upstreamPath + new URL(req.url).search);
    const headers: OutgoingHttpHeaders = {};
    for (const name of [...REQUEST_HEADERS, 'content-length']) {
      const v = req.headers.get(name);
      if (v !== null) headers[name] = v;
    }
    const body = req.body ? Readable.fromWeb(req.body as NodeReadableStream<Uint8Array>) : null;
    if (body) headers.expect = '100-continue';
    let started = false; // the body is being sent
    let sent = false; // the whole body went upstream
    let answered = false;
    let waitContinue: ReturnType<typeof setTimeout> | undefined;
    const upstream = (target.protocol === 'https:' ? https : http).request(
      target,
      { method: req.method, headers },
      (answer) => {
        answered = true;
        clearTimeout(waitContinue);
        const out = new Headers();
        for (const [k, v] of Object.entries(answer.headers)) {
          if (v === undefined || DROP_RESPONSE_HEADERS.has(k)) continue;
          for (const one of Array.isArray(v) ? v : [v]) out.append(k, one);
        }
        if (body && !sent) {
          // An early answer: the rest of the body is not wanted.
          if (started) body.unpipe(upstream);
          out.set('connection', 'close');
          answer.on('end', () => upstream.destroy());
        }
        const status = answer.statusCode ?? 502;
        const empty = req.method === 'HEAD' || status === 204 || status === 304;
        if (empty) answer.resume();
        resolve(
          new Response(empty ? null : (Readable.toWeb(answer) as ReadableStream<Uint8Array>), {
            status,
            statusText: answer.statusMessage,
            headers: out,
          }),
        );
      },
    );
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(waitContinue);
      // After the answer (the gateway closed once it had refused the body): nothing to add.
      if (answered) return;
      if (started && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        // It was there, and cut the upload off without an answer this server could read
        // (one that closes at once after refusing a body mid-way).
        resolve(
          Response.json(
            {
              error: {
                code: 'upload_interrupted',
                message:
                  'The gateway closed the connection before the upload was complete, without an answer. ' +
                  'It may have refused the file; try again, and check its size and destination.',
                request_id: '',
              },
            },
            // the rest of the browser's body is not read: end its connection after this
            { status: 502, headers: { 'Cache-Control': 'no-store', Connection: 'close' } },
          ),
        );
        return;
      }
      resolve(
        Response.json(unreachableBody(), {
          status: 502,
          headers: body && !sent ? { ...UNREACHABLE_HEADERS, Connection: 'close' } : UNREACHABLE_HEADERS,
        }),
      );
    });
    req.signal.addEventListener('abort', () => upstream.destroy(), { once: true });
    if (!body) {
      upstream.end();
      return;
    }
    const start = () => {
      clearTimeout(waitContinue);
      if (started || answered || upstream.destroyed) return;
      started = true;
      body.on('end', () => {
        sent = true;
      });
      body.on('error', () => upstream.destroy());
      body.pipe(upstream);
    };
    upstream.on('continue', start);
    upstream.flushHeaders();
    waitContinue = setTimeout(start, CONTINUE_WAIT_MS);
  });
}
