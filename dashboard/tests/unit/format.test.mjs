// Unit tests of lib/format.ts: sizes, short hashes and upload progress as the pages show them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadTs } from './load-ts.mjs';

const { fmtBytes, shortHash, fmtUploadProgress } = await loadTs('lib/format.ts');

test('fmtBytes: binary units, two digits under 10, one above', () => {
  assert.equal(fmtBytes(null), '—');
  assert.equal(fmtBytes(undefined), '—');
  assert.equal(fmtBytes(0), '0 B');
  assert.equal(fmtBytes(1023), '1023 B');
  assert.equal(fmtBytes(1024), '1.00 KiB');
  assert.equal(fmtBytes(3 * 1024 * 1024), '3.00 MiB');
  assert.equal(fmtBytes(100 * 1024 * 1024), '100.0 MiB');
  assert.equal(fmtBytes(1_572_864_000), '1.46 GiB');
  assert.equal(fmtBytes(5 * 2 ** 30), '5.00 GiB');
  assert.equal(fmtBytes(3 * 2 ** 40), '3.00 TiB');
  assert.equal(fmtBytes(2 ** 50), '1024.0 TiB'); // the largest unit stays
});

test('shortHash: the first 12 hex digits, whole when short, with or without a sha256: prefix', () => {
  const h = 'e2d2bb183778a0d9e6d9a5a4d2c0d8f3b1f4e1f7a0b1c2d3e4f5a6b7c8d9e0f1';
  assert.equal(shortHash(h), 'e2d2bb183778…');
  assert.equal(shortHash(`sha256:${h}`), 'e2d2bb183778…');
  assert.equal(shortHash(h, 8), 'e2d2bb18…');
  assert.equal(shortHash('abc'), 'abc');
  assert.equal(shortHash(null), '—');
  assert.equal(shortHash(''), '—');
});

test('fmtUploadProgress: request bytes scaled to the file, never over 100%', () => {
  const file = 2 ** 30;
  const total = file + 300; // the multipart framing around the file
  assert.equal(fmtUploadProgress(0, total, file), '0 B of 1.00 GiB · 0%');
  assert.equal(fmtUploadProgress(total / 2, total, file), '512.0 MiB of 1.00 GiB · 50%');
  assert.equal(fmtUploadProgress(total, total, file), '1.00 GiB of 1.00 GiB · 100%');
  assert.equal(fmtUploadProgress(total + 10, total, file), '1.00 GiB of 1.00 GiB · 100%');
  assert.equal(fmtUploadProgress(5, 0, 0), '0 B of 0 B · 0%');
});
