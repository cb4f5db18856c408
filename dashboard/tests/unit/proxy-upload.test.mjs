// Unit tests of lib/proxy-node.ts, the upload relay, against a local HTTP server standing
// in for the gateway: what is streamed, what goes on and comes back, backpressure (a slow
// gateway holds the browser's body back instead of this server buffering it), the early
// answers, and a gateway that is not there.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { after, before, test } from 'node:test';
import { loadTs } from './load-ts.mjs';

const { relayUpload, streamsBody } = await loadTs('lib/proxy-node.ts');

const MiB = 1024 * 1024;
let server;
let handle = (req, res) => res.end();
let onContinue = null; // (req, res) => true when it answered instead of "100 Continue"

before(async () => {
  server = http.createServer((req, res) => handle(req, res));
  server.on('checkContinue', (req, res) => {
    if (onContinue?.(req, res)) return;
    res.writeContinue();
    handle(req, res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  process.env.NF_GATEWAY_URL = `http://127.0.0.1:${server.address().port}`;
});
after(() => server.close());

/** A browser-side body of `size` bytes made on demand; `pulled()` says how much was taken. */
function source(size, chunk = 64 * 1024) {
  let made = 0;
  const stream = new ReadableStream({
    pull(c) {
      if (made >= size) return c.close();
      const n = Math.min(chunk, size - made);
      c.enqueue(new Uint8Array(n).fill(made % 251));
      made += n;
    },
  });
  return { stream, pulled: () => made };
}

function upload(body, size, extra = {}) {
  return new Request('http://dashboard.test/api/files?x=1', {
    method: 'POST',
    body,
    duplex: 'half',
    headers: {
      'content-type': 'multipart/form-data; boundary=b',
      'content-length': String(size),
      cookie: 'nf_session=s1',
      'x-forwarded-for': '10.0.0.1',
      ...extra,
    },
  });
}

test('streamsBody: multipart, large or chunked bodies; not GET, small JSON or no body', () => {
  const req = (method, headers, body = 'x') => new Request('http://d/api/x', { method, headers, body: method === 'GET' ? undefined : body });
  assert.equal(streamsBody(req('POST', { 'content-type': 'multipart/form-data; boundary=x', 'content-length': '10' })), true);
  assert.equal(streamsBody(req('POST', { 'content-type': 'application/json', 'content-length': '100' })), false);
  assert.equal(streamsBody(req('PUT', { 'content-type': 'application/octet-stream', 'content-length': String(2 * MiB) })), true);
  assert.equal(streamsBody(req('POST', { 'transfer-encoding': 'chunked' })), true);
  assert.equal(streamsBody(req('POST', {})), false); // e.g. a POST without a body and without a length
  assert.equal(streamsBody(req('GET', {})), false);
});

test('relayUpload: path, query, headers and body go on; the answer comes back', async () => {
  let got;
  handle = (req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (d) => {
      h.update(d);
      n += d.length;
    });
    req.on('end', () => {
      got = { url: req.url, method: req.method, headers: req.headers, n, sha: h.digest('hex') };
      res.writeHead(201, [
        ['Content-Type', 'application/json'],
        ['X-Request-Id', 'req_up'],
        ['Set-Cookie', 'a=1'],
        ['Set-Cookie', 'b=2'],
      ]);
      res.end('{"id":"art_1"}');
    });
  };
  const size = 3 * MiB + 17;
  const src = source(size);
  const want = createHash('sha256');
  for (let made = 0; made < size; made += 64 * 1024) want.update(new Uint8Array(Math.min(64 * 1024, size - made)).fill(made % 251));
  const res = await relayUpload(upload(src.stream, size), '/api/files');
  assert.equal(res.status, 201);
  assert.equal(await res.text(), '{"id":"art_1"}');
  assert.equal(res.headers.get('x-request-id'), 'req_up');
  assert.deepEqual(res.headers.getSetCookie(), ['a=1', 'b=2']);
  assert.equal(res.headers.get('connection'), null);
  assert.deepEqual([got.method, got.url, got.n, got.sha], ['POST', '/api/files?x=1', size, want.digest('hex')]);
  assert.equal(got.headers['content-length'], String(size));
  assert.equal(got.headers.cookie, 'nf_session=s1');
  assert.equal(got.headers.expect, '100-continue');
  assert.equal(got.headers['x-forwarded-for'], undefined, 'only the listed headers go on');
});

test('relayUpload: a slow gateway holds the body back (backpressure, no buffering here)', async () => {
  let gatewayReq;
  let received = 0;
  handle = (req, res) => {
    gatewayReq = req;
    req.on('data', (d) => {
      received += d.length;
    });
    req.pause(); // not reading, for now
    req.on('end', () => res.end('{}'));
  };
  const size = 256 * MiB;
  const src = source(size);
  const answer = relayUpload(upload(src.stream, size), '/api/files');
  await new Promise((r) => setTimeout(r, 500));
  // what sits in socket buffers and stream queues between the two, not the whole body
  assert.ok(src.pulled() - received < 16 * MiB, `${src.pulled()} bytes taken while the gateway read ${received}`);
  gatewayReq.resume();
  const res = await answer;
  assert.equal(res.status, 200);
  assert.equal(received, size);
});

test('relayUpload: a refusal on the headers comes back before any of the body is sent', async () => {
  let bodyBytes = 0;
  onContinue = (req, res) => {
    req.on('data', (d) => (bodyBytes += d.length));
    res.writeHead(413, { 'Content-Type': 'application/json' });
    res.end('{"error":{"code":"file_too_large","message":"over the cap","param":"file"}}');
    return true;
  };
  const src = source(64 * MiB);
  const res = await relayUpload(upload(src.stream, 64 * MiB), '/api/files');
  onContinue = null;
  assert.equal(res.status, 413);
  assert.equal((await res.json()).error.code, 'file_too_large');
  assert.equal(res.headers.get('connection'), 'close', "the browser's connection ends after the answer");
  assert.equal(bodyBytes, 0);
  assert.ok(src.pulled() <= 64 * 1024, `${src.pulled()} bytes taken from the browser`);
});

test('relayUpload: an answer in the middle of the body (422 after the fields) stops the upload', async () => {
  handle = (req, res) => {
    req.once('data', () => {
      res.writeHead(422, { 'Content-Type': 'application/json' });
      res.end('{"error":{"code":"invalid_uri","message":"bad uri","param":"uri"}}');
      req.resume(); // lingering: reads the rest that is in flight
    });
  };
  const src = source(512 * MiB);
  const res = await relayUpload(upload(src.stream, 512 * MiB), '/api/files');
  assert.equal(res.status, 422);
  assert.equal((await res.json()).error.param, 'uri');
  assert.equal(res.headers.get('connection'), 'close');
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(src.pulled() < 64 * MiB, `${src.pulled()} bytes taken after the answer`);
});

test('relayUpload: a browser that goes away ends the upstream request short', async () => {
  let ended;
  const closed = new Promise((r) => (ended = r));
  let gatewayReq;
  handle = (req) => {
    gatewayReq = req;
    let n = 0;
    req.on('data', (d) => (n += d.length));
    req.pause(); // a slow gateway: the upload is still going when the browser leaves
    req.on('close', () => ended({ complete: req.complete, n }));
  };
  const ctl = new AbortController();
  const src = source(64 * MiB);
  const req = new Request(upload(src.stream, 64 * MiB), { signal: ctl.signal });
  const pending = relayUpload(req, '/api/files');
  await new Promise((r) => setTimeout(r, 100));
  ctl.abort();
  gatewayReq.resume();
  const seen = await closed;
  assert.equal(seen.complete, false);
  assert.ok(seen.n < 64 * MiB);
  void pending;
});

test('relayUpload: no gateway -> 502 gateway_unreachable', async () => {
  const keep = process.env.NF_GATEWAY_URL;
  const dead = http.createServer();
  await new Promise((r) => dead.listen(0, '127.0.0.1', r));
  const port = dead.address().port;
  await new Promise((r) => dead.close(r));
  process.env.NF_GATEWAY_URL = `http://127.0.0.1:${port}`;
  try {
    const res = await relayUpload(upload(source(1000).stream, 1000), '/api/files');
    assert.equal(res.status, 502);
    assert.equal((await res.json()).error.code, 'gateway_unreachable');
  } finally {
    process.env.NF_GATEWAY_URL = keep;
  }
});
