// Unit tests of the upload half of lib/api.ts: the multipart form (field order), the
// destination checks, the error body -> ApiError mapping, and uploadFile over a scripted
// XMLHttpRequest (Node has none; the browser test drives the real one in Chromium).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadTs } from './load-ts.mjs';

const { ApiError, apiErrorFrom, buildUploadForm, onUnauthorized, s3UriProblem, uploadFile, uploadTarget, api } =
  await loadTs('lib/api.ts');

test('buildUploadForm: purpose and uri come before the file, which is the File itself', async () => {
  const file = new File(['a,b\n1,2\n'], 'rows.csv', { type: 'text/csv' });
  const form = buildUploadForm(file, file.name, 'dataset', 's3://bucket/data/rows.csv');
  assert.deepEqual([...form.keys()], ['purpose', 'uri', 'file']);
  assert.equal(form.get('purpose'), 'dataset');
  assert.equal(form.get('uri'), 's3://bucket/data/rows.csv');
  const sent = form.get('file');
  assert.equal(sent.name, 'rows.csv');
  assert.equal(sent.size, file.size);
  assert.equal(await sent.text(), 'a,b\n1,2\n');

  const noUri = buildUploadForm(file, 'other-name.csv', 'model');
  assert.deepEqual([...noUri.keys()], ['purpose', 'file']);
  assert.equal(noUri.get('file').name, 'other-name.csv');
  assert.equal(buildUploadForm(file, file.name, 'other', '').has('uri'), false);
});

test('s3UriProblem: only the shape is checked here; the gateway checks the rest', () => {
  assert.equal(s3UriProblem(''), null);
  assert.equal(s3UriProblem('s3://bucket/key.parquet'), null);
  assert.equal(s3UriProblem('s3://bucket/dir/'), null); // a prefix
  assert.equal(s3UriProblem('s3://Bad_Bucket/x'), null); // the gateway's 422
  assert.match(s3UriProblem('bucket/key'), /starts with s3:\/\//);
  assert.match(s3UriProblem('file:///etc/passwd'), /starts with s3:\/\//);
  assert.match(s3UriProblem('s3://bucket'), /bucket and a key/);
  assert.match(s3UriProblem('s3:///key'), /bucket and a key/);
});

test('uploadTarget: as typed, a prefix plus the name, or none', () => {
  assert.equal(uploadTarget('', 'a.csv'), undefined);
  assert.equal(uploadTarget('   ', 'a.csv'), undefined);
  assert.equal(uploadTarget(' s3://b/x.csv ', 'a.csv'), 's3://b/x.csv');
  assert.equal(uploadTarget('s3://b/dir/', 'a.csv'), 's3://b/dir/a.csv');
});

test('apiErrorFrom: the JSON error body, else the status line', () => {
  const h = (m) => (n) => m[n.toLowerCase()] ?? null;
  const e = apiErrorFrom(
    'POST',
    '/api/files',
    422,
    'Unprocessable Entity',
    JSON.stringify({ error: { code: 'invalid_uri', message: 'bad bucket', param: 'uri', request_id: 'req_1' } }),
    h({}),
  );
  assert.ok(e instanceof ApiError);
  assert.deepEqual([e.status, e.code, e.message, e.param, e.requestId, e.method, e.path], [
    422,
    'invalid_uri',
    'bad bucket',
    'uri',
    'req_1',
    'POST',
    '/api/files',
  ]);
  const big = apiErrorFrom('POST', '/api/files', 413, 'Payload Too Large', '<html>too big</html>', h({ 'x-request-id': 'req_2' }));
  assert.deepEqual([big.code, big.message, big.requestId], ['http_413', '<html>too big</html>', 'req_2']);
  const empty = apiErrorFrom('GET', '/api/files', 503, 'Service Unavailable', '', h({ 'retry-after': '3' }));
  assert.deepEqual([empty.message, empty.retryAfter], ['Service Unavailable', 3]);
});

/** A scripted XMLHttpRequest: records what is sent; the test plays the answer. */
class FakeXhr {
  static last;
  constructor() {
    FakeXhr.last = this;
    this.upload = {};
    this.headers = {};
    this.status = 0;
    this.statusText = '';
    this.responseText = '';
    this.answerHeaders = {};
    this.aborted = false;
  }
  open(method, url) {
    this.method = method;
    this.url = url;
  }
  setRequestHeader(k, v) {
    this.headers[k] = v;
  }
  getResponseHeader(n) {
    return this.answerHeaders[n.toLowerCase()] ?? null;
  }
  send(body) {
    this.body = body;
  }
  abort() {
    this.aborted = true;
    this.onabort?.();
  }
  // the test's side
  progress(loaded, total) {
    this.upload.onprogress?.({ loaded, total, lengthComputable: true });
  }
  answer(status, body, headers = {}) {
    this.status = status;
    this.responseText = typeof body === 'string' ? body : JSON.stringify(body);
    this.answerHeaders = headers;
    this.onload?.();
  }
}
globalThis.XMLHttpRequest = FakeXhr;

const file = new File([new Uint8Array(1000)], 'weights.bin');
const stored = {
  id: 'art_1',
  object: 'file',
  uri: 'artifact://art_1',
  s3_uri: 's3://uploads/art_1/weights.bin',
  filename: 'weights.bin',
  purpose: 'model',
  bytes: 1000,
  sha256: 'ab'.repeat(32),
  created_at: '2026-01-01T00:00:00Z',
};

test('uploadFile: POST /api/files with the form, progress reported, the 201 file object', async () => {
  const seen = [];
  const p = uploadFile(file, { purpose: 'model', uri: 's3://b/w.bin', onProgress: (x) => seen.push(x) });
  const x = FakeXhr.last;
  assert.deepEqual([x.method, x.url, x.headers.Accept], ['POST', '/api/files', 'application/json']);
  assert.deepEqual([...x.body.keys()], ['purpose', 'uri', 'file']);
  assert.equal(x.body.get('file').size, 1000);
  x.progress(500, 1200);
  x.progress(1200, 1200);
  x.answer(201, stored);
  assert.deepEqual(await p, stored);
  assert.deepEqual(seen, [
    { sent: 500, total: 1200 },
    { sent: 1200, total: 1200 },
  ]);
  assert.equal(api.uploadFile, uploadFile);
});

test("uploadFile: the gateway's error body becomes an ApiError (413, 422 naming uri)", async () => {
  const p = uploadFile(file, { purpose: 'model' });
  FakeXhr.last.answer(
    413,
    { error: { code: 'file_too_large', message: 'over the 5 GiB limit', param: 'file', request_id: 'req_9' } },
    { 'x-request-id': 'req_9' },
  );
  await assert.rejects(p, (e) => e instanceof ApiError && e.status === 413 && e.code === 'file_too_large' && e.param === 'file');

  const q = uploadFile(file, { purpose: 'dataset', uri: 's3://Bad/x' });
  FakeXhr.last.answer(422, { error: { code: 'invalid_uri', message: 'bucket must be lowercase', param: 'uri' } });
  await assert.rejects(q, (e) => e.status === 422 && e.param === 'uri' && e.message === 'bucket must be lowercase');
});

test('uploadFile: a 201 that is not JSON, a broken connection, an ended session', async () => {
  const p = uploadFile(file, { purpose: 'model' });
  FakeXhr.last.answer(201, 'not json');
  await assert.rejects(p, (e) => e.code === 'bad_response');

  const q = uploadFile(file, { purpose: 'model' });
  FakeXhr.last.onerror();
  await assert.rejects(q, (e) => e instanceof ApiError && e.status === 0 && e.code === 'network_error');

  const told = [];
  const off = onUnauthorized((e) => told.push(e.status));
  const r = uploadFile(file, { purpose: 'model' });
  FakeXhr.last.answer(401, { error: { code: 'unauthenticated', message: 'no session' } });
  await assert.rejects(r, (e) => e.unauthenticated);
  off();
  assert.deepEqual(told, [401]);
});

test('uploadFile: the signal cancels it (before and during the upload)', async () => {
  const ctl = new AbortController();
  const p = uploadFile(file, { purpose: 'model', signal: ctl.signal });
  const x = FakeXhr.last;
  x.progress(100, 1200);
  ctl.abort();
  assert.equal(x.aborted, true);
  await assert.rejects(p, (e) => e.name === 'AbortError');

  const before = FakeXhr.last;
  await assert.rejects(uploadFile(file, { purpose: 'model', signal: AbortSignal.abort() }), (e) => e.name === 'AbortError');
  assert.equal(FakeXhr.last, before, 'no request for an upload cancelled before it started');
});
