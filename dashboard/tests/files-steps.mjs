// The Artifacts page's files, as steps of the browser test (dashboard.test.mjs runs them
// after the artifacts step, signed in, against the real stack): upload with the picker to
// an s3:// destination and by drag and drop, list, copy the sha256, download byte-exact,
// replace by uploading to the same destination, the gateway's 422 and 413 shown, delete.
// Not a *.test.mjs file: `node --test tests/` runs it only through dashboard.test.mjs.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** Waits for the upload of `name` in the upload card to end in `state`; returns its element. */
async function uploadEnds(page, name, state, timeout = 60_000) {
  const item = page.getByTestId('upload').filter({ hasText: name }).first();
  await item.and(page.locator(`[data-state="${state}"]`)).waitFor({ timeout });
  return item;
}

/**
 * @param {object} o
 * @param {import('playwright-core').Page} o.page  signed in
 * @param {(name: string, fn: (t: unknown) => Promise<void>) => Promise<void>} o.step
 * @param {string} o.BASE  the dashboard
 * @param {(name: string, opts?: object) => Promise<void>} o.shot
 */
export async function filesSteps({ page, step, BASE, shot }) {
  const tag = `${Date.now().toString(36)}${process.pid}`;
  const bucket = `dash-test-${tag}`;
  const csv = Buffer.from('id,text\n1,hello\n2,world\n');
  const csv2 = Buffer.from('id,text\n1,hello again\n');
  const csvName = `rows-${tag}.csv`;
  const binName = `weights-${tag}.bin`;
  const csvUri = `s3://${bucket}/data/${csvName}`;
  let csvDownload;

  const card = () => page.getByRole('region', { name: 'Upload files' });
  const files = () => page.getByTestId('file-list');
  const fileRow = (name) => files().locator('tr', { has: page.getByText(name, { exact: true }) });

  await step('upload a file with the picker to an s3:// destination: listed with its place, size and hash', async () => {
    await page.goto(`${BASE}/artifacts`);
    await card().waitFor();
    await card().getByLabel('Purpose').selectOption('dataset');
    await card().getByLabel('Destination').fill(csvUri);
    await card().getByLabel('Choose files').setInputFiles({ name: csvName, mimeType: 'text/csv', buffer: csv });
    const item = await uploadEnds(page, csvName, 'stored');
    await item.getByText(csvUri).first().waitFor();
    const row = fileRow(csvName);
    await row.getByText(csvUri).waitFor();
    await row.getByText('dataset').waitFor();
    await row.getByText(`${csv.length} B`).waitFor();
    await row.getByText(`${sha256(csv).slice(0, 12)}…`).waitFor();
    await row.getByRole('button', { name: `Copy the SHA-256 of ${csvName}` }).click();
    await row.getByRole('button', { name: `Copy the SHA-256 of ${csvName}` }).getByText('Copied').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), sha256(csv));
    csvDownload = await row.getByRole('link', { name: `Download ${csvName}` }).getAttribute('href');
    const got = await page.evaluate(async (href) => {
      const r = await fetch(href);
      return { status: r.status, text: await r.text() };
    }, csvDownload);
    assert.deepEqual(got, { status: 200, text: csv.toString() }, 'the download is the uploaded bytes');
    // uploads are artifacts too
    await page.getByRole('region', { name: 'All artifacts' }).getByText(csvName).first().waitFor();
  });

  await step('drag and drop a file: stored under s3://uploads/<id>/<name>', async () => {
    await card().getByLabel('Destination').fill('');
    await card().getByLabel('Purpose').selectOption('model');
    const zone = page.getByTestId('dropzone');
    const dataTransfer = await page.evaluateHandle((name) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(3 * 1024 * 1024).fill(7)], name, { type: 'application/octet-stream' }));
      return dt;
    }, binName);
    await zone.dispatchEvent('dragenter', { dataTransfer });
    await zone.dispatchEvent('dragover', { dataTransfer });
    assert.match((await zone.getAttribute('class')) ?? '', /dropzone-over/, 'the zone shows where to drop');
    await zone.dispatchEvent('drop', { dataTransfer });
    await uploadEnds(page, binName, 'stored');
    const row = fileRow(binName);
    await row.getByText(new RegExp(`^s3://uploads/art_[^/]+/${binName.replace('.', '\\.')}$`)).waitFor();
    await row.getByText('model').waitFor();
    await row.getByText('3.00 MiB').waitFor();
    await row.getByText(`${sha256(Buffer.alloc(3 * 1024 * 1024, 7)).slice(0, 12)}…`).waitFor();
    await shot('artifacts-files', { fullPage: true });
  });

  await step('uploading to the same s3:// destination replaces the file', async () => {
    await card().getByLabel('Purpose').selectOption('dataset');
    await card().getByLabel('Destination').fill(csvUri);
    await card().getByLabel('Choose files').setInputFiles({ name: csvName, mimeType: 'text/csv', buffer: csv2 });
    await page.getByTestId('upload').filter({ hasText: csvName }).nth(1).waitFor(); // the new one is listed first
    await uploadEnds(page, csvName, 'stored');
    const row = fileRow(csvName);
    await row.getByText(`${sha256(csv2).slice(0, 12)}…`).waitFor();
    assert.equal(await files().getByText(csvUri).count(), 1, 'one file at one s3:// URI');
    csvDownload = await row.getByRole('link', { name: `Download ${csvName}` }).getAttribute('href');
    const got = await page.evaluate(async (href) => (await fetch(href)).text(), csvDownload);
    assert.equal(got, csv2.toString());
  });

  await step("upload errors: the page's own check, the gateway's 422 (bad uri) and 413 (too large)", async () => {
    await card().getByLabel('Destination').fill('bucket/no-scheme.csv');
    await card().getByLabel('Choose files').setInputFiles({ name: 'x.csv', mimeType: 'text/csv', buffer: csv });
    await card().getByRole('alert').getByText('A destination starts with s3://').waitFor();

    await card().getByLabel('Destination').fill('s3://Not_A_Bucket/x.csv');
    await card().getByLabel('Choose files').setInputFiles({ name: 'bad-uri.csv', mimeType: 'text/csv', buffer: csv });
    const bad = await uploadEnds(page, 'bad-uri.csv', 'failed');
    const text = (await bad.getByRole('alert').textContent()) ?? '';
    assert.match(text, /uri/i, `the 422 names the uri: ${text}`);

    // A 413 needs a file over the gateway's cap (5 GiB by default): the answer is played
    // here, as the gateway sends it, to check the page shows the gateway's message.
    await page.route('**/api/files', (r) =>
      r.request().method() === 'POST'
        ? r.fulfill({
            status: 413,
            contentType: 'application/json',
            body: JSON.stringify({
              error: { code: 'file_too_large', message: 'the file is larger than the 5 GiB limit', param: 'file', request_id: 'req_test' },
            }),
          })
        : r.fallback(),
    );
    await card().getByLabel('Destination').fill('');
    await card().getByLabel('Choose files').setInputFiles({ name: 'huge.bin', mimeType: 'application/octet-stream', buffer: csv });
    const huge = await uploadEnds(page, 'huge.bin', 'failed');
    await huge.getByText('the file is larger than the 5 GiB limit (file)').waitFor();
    await page.unroute('**/api/files');
    await card().getByRole('button', { name: 'Clear finished' }).click();
    assert.equal(await page.getByTestId('upload').count(), 0);
  });

  await step('delete a file: confirmed, then gone from the list and the store', async () => {
    await fileRow(csvName).getByRole('button', { name: `Delete ${csvName}` }).click();
    const dialog = page.getByRole('dialog', { name: 'Delete this file?' });
    await dialog.getByText(csvUri).waitFor();
    await dialog.getByRole('button', { name: 'Delete file' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await files().getByText(csvUri).waitFor({ state: 'detached' });
    const status = await page.evaluate(async (href) => (await fetch(href)).status, csvDownload);
    assert.equal(status, 404, 'the download of a deleted file');
  });
}
