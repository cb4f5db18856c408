// Browser test of the dashboard against a real stack: Debian's Chromium driven by
// playwright-core (never a downloaded browser).
//
//   sign up -> generate a key (shown once, gone after closing) -> submit a job with it
//   (the Python SDK of this checkout, else plain HTTP) -> watch the job reach succeeded
//   on its page (live event stream) -> cancel a queued job from its page -> see the
//   first one cost money on Billing -> overview, workers, artifacts -> upload, list,
//   download and delete files (files-steps.mjs) -> the gateway-down and not-served
//   states -> session expiry back to sign-in -> revoke the key, which the gateway then
//   refuses.
//
// Environment:
//   NF_DASHBOARD_URL   the dashboard (default http://127.0.0.1:3000)
//   NF_TEST_API_URL    the gateway the SDK talks to (default http://127.0.0.1:8000)
//   NF_SCREENSHOT_DIR  where the page screenshots go (default tests/out; the README's
//                      come from NF_SCREENSHOT_DIR=../docs/screenshots)
//   NF_CHROMIUM        the browser (default /usr/bin/chromium)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { filesSteps } from './files-steps.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const BASE = (process.env.NF_DASHBOARD_URL || 'http://127.0.0.1:3000').replace(/\/+$/, '');
const API = (process.env.NF_TEST_API_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
const SHOTS = path.resolve(process.env.NF_SCREENSHOT_DIR || path.join(here, 'out'));
const CHROMIUM = process.env.NF_CHROMIUM || '/usr/bin/chromium';
const KEY_RE = /^nexa_[A-Za-z0-9_-]{43}[0-9A-Za-z]{6}$/;

let context;
let page;
let userDataDir;
const external = []; // requests that left this machine's dashboard: must stay empty
const pageErrors = []; // uncaught exceptions in the page

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no browser at ${CHROMIUM} (apt-get install chromium)`);
  mkdirSync(SHOTS, { recursive: true });
  userDataDir = mkdtempSync(path.join(tmpdir(), 'nf-dash-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1366, height: 900 },
    deviceScaleFactor: 1,
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(BASE) && !u.startsWith('data:') && !u.startsWith('blob:')) external.push(u);
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
});

after(async () => {
  await context?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

async function shot(name, opts = {}) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), animations: 'disabled', ...opts });
}

/** Reloads until `check` passes (pages poll too; this just makes the wait explicit). */
async function eventually(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms: ${last}`);
    await page.waitForTimeout(1000);
  }
}

/** Submits a small generate job with the key: through the SDK of this checkout when there is one. */
async function submitJob(apiKey) {
  const sdk = path.join(repo, 'sdk', 'python');
  if (existsSync(path.join(sdk, 'nexa_forge'))) {
    const code = [
      'import json, os',
      'from nexa_forge import NexaForgeClient',
      "c = NexaForgeClient(api_key=os.environ['NEXA_API_KEY'], base_url=os.environ['NEXA_API_URL'])",
      "j = c.generate(domain='dashboard-test', num_samples=25, seed=7)",
      "print(json.dumps({'job_id': j['job_id'], 'status': j['status']}))",
    ].join('\n');
    const r = spawnSync('python3', ['-c', code], {
      env: { ...process.env, PYTHONPATH: sdk, NEXA_API_KEY: apiKey, NEXA_API_URL: API },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 0, `the SDK failed: ${r.stderr}`);
    return { via: 'sdk', ...JSON.parse(r.stdout.trim().split('\n').pop()) };
  }
  const res = await fetch(`${API}/api/jobs/generate`, {
    method: 'POST',
    headers: { 'X-Nexa-Api-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ domain: 'dashboard-test', num_samples: 25, seed: 7 }),
  });
  const body = await res.text();
  assert.equal(res.status, 202, body);
  return { via: 'http', ...JSON.parse(body) };
}

test('the dashboard, end to end in Chromium', { timeout: 420_000 }, async (t) => {
  const email = `dash-${Date.now()}-${process.pid}@example.com`;
  const password = 'correct horse battery staple';
  let apiKey;
  let jobId;
  // The steps build on each other: after a failure the rest are skipped, not piled up.
  let failed = null;
  const step = async (name, fn) => {
    await t.test(name, { skip: failed ? `after the failed step "${failed}"` : false }, async (st) => {
      try {
        await fn(st);
      } catch (e) {
        failed = name;
        mkdirSync(path.join(here, 'out'), { recursive: true });
        await page.screenshot({ path: path.join(here, 'out', 'failure.png'), fullPage: true }).catch(() => {});
        throw e;
      }
    });
  };

  await step('signed out: any page leads to sign-in', async () => {
    await page.goto(`${BASE}/jobs`);
    await page.waitForURL(/\/sign-in\?next=%2Fjobs/);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await shot('sign-in');
  });

  await step('sign up', async () => {
    await page.getByRole('link', { name: 'Create an account' }).click();
    await page.waitForURL(/\/sign-up/);
    await page.getByLabel('E-mail', { exact: true }).fill(email);
    await page.getByLabel('Password', { exact: true }).fill(password);
    await shot('sign-up');
    await page.getByLabel('Password', { exact: true }).fill('short');
    await page.getByRole('button', { name: 'Create account' }).click();
    // the browser's own check (minLength 10) keeps us on the page
    assert.match(page.url(), /\/sign-up/);
    await page.getByLabel('Password', { exact: true }).fill(password);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.waitForURL(/\/settings\/api-keys\?welcome=1/);
    await page.getByText(email).waitFor();
    await page.getByText('No API keys yet').waitFor();
  });

  await step('generate a key: shown once, copied, gone after closing', async () => {
    await page.getByLabel('Name').fill('browser-test');
    await page.getByLabel('Expires').selectOption({ label: '90 days' });
    await page.getByRole('button', { name: 'Generate new key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Your new API key' });
    await dialog.waitFor();
    apiKey = await dialog.getByTestId('new-api-key').inputValue();
    assert.match(apiKey, KEY_RE);
    await dialog.getByText('this is the only time the key is shown').waitFor();
    await dialog.getByRole('button', { name: 'Copy key' }).click();
    await dialog.getByText('Copied to the clipboard.').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), apiKey);
    await shot('api-key-created', { mask: [dialog.getByTestId('new-api-key')], maskColor: '#c9d2e0' });
    await dialog.getByRole('button', { name: 'I have saved it, close' }).click();
    await dialog.waitFor({ state: 'hidden' });
    const row = page.getByTestId('key-list').getByRole('row', { name: /browser-test/ });
    await row.getByText(`${apiKey.slice(0, 12)}…`).waitFor();
    await row.getByText('active').waitFor();
    assert.ok(!(await page.content()).includes(apiKey), 'the key is still in the page after closing the modal');
    await page.reload();
    await row.waitFor();
    assert.ok(!(await page.content()).includes(apiKey), 'the key list shows the secret');
    await shot('api-keys');
  });

  await step('a job submitted with the key runs to succeeded on its page', async (st) => {
    const job = await submitJob(apiKey);
    st.diagnostic(`job ${job.job_id} submitted via ${job.via}`);
    jobId = job.job_id;
    await page.goto(`${BASE}/jobs/${jobId}`);
    await page.getByTestId('job-id').getByText(jobId).waitFor();
    await page.getByTestId('job-status').getByText('succeeded').waitFor({ timeout: 120_000 });
    const timeline = page.getByTestId('timeline');
    await timeline.getByText('succeeded').waitFor();
    await timeline.getByText('running').waitFor();
    await page.getByTestId('stream-state').getByText('complete').waitFor();
    const download = page.getByRole('link', { name: 'Download' }).first();
    await download.waitFor();
    const status = await page.evaluate(async (href) => (await fetch(href)).status, await download.getAttribute('href'));
    assert.equal(status, 200, 'artifact download');
    await shot('job', { fullPage: true });
  });

  await step('a queued job is cancelled from its page', async () => {
    // No worker has this GPU type, so the job waits in the queue until we cancel it.
    const res = await fetch(`${API}/api/jobs/generate`, {
      method: 'POST',
      headers: { 'X-Nexa-Api-Key': apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ domain: 'never-runs', num_samples: 5, gpu_type: 'dashboard-test-gpu' }),
    });
    const body = await res.text();
    assert.equal(res.status, 202, body);
    const parked = JSON.parse(body).job_id;
    await page.goto(`${BASE}/jobs/${parked}`);
    await page.getByTestId('job-status').getByText('queued').waitFor();
    await page.getByRole('button', { name: 'Cancel job' }).click();
    const dialog = page.getByRole('dialog', { name: 'Cancel this job?' });
    await dialog.getByText('leaves the queue').waitFor();
    await dialog.getByRole('button', { name: 'Cancel job' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await page.getByTestId('job-status').getByText('cancelled').waitFor({ timeout: 30_000 });
    await page.getByTestId('stream-state').getByText('complete').waitFor({ timeout: 30_000 });
    assert.equal(await page.getByRole('button', { name: 'Cancel job' }).count(), 0);
  });

  await step('the jobs list shows them and filters', async () => {
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.waitForURL(/\/jobs$/);
    await page.getByRole('link', { name: jobId }).waitFor();
    await shot('jobs');
    await page.getByLabel('Status').selectOption('failed');
    await page.getByText('No jobs match these filters').waitFor();
    await page.getByLabel('Status').selectOption('succeeded');
    await page.getByRole('link', { name: jobId }).waitFor();
  });

  await step('billing shows what it cost', async (st) => {
    await page.goto(`${BASE}/billing`);
    const total = await eventually('a non-zero billing total', 120_000, async () => {
      await page.reload();
      const text = (await page.getByTestId('billing-total').textContent({ timeout: 10_000 })) ?? '';
      assert.match(text, /^\$\d+\.\d{6}$/);
      assert.notEqual(text, '$0.000000');
      return text;
    });
    st.diagnostic(`billing total ${total}`);
    await page.getByTestId('billing-meters').getByText('GPU time').waitFor();
    await page.getByRole('img', { name: 'Cost over time by meter' }).waitFor();
    await shot('billing', { fullPage: true });
    // the job page shows its cost too, once billing reported it
    await page.goto(`${BASE}/jobs/${jobId}`);
    await eventually('the job cost', 60_000, async () => {
      await page.reload();
      const c = (await page.getByTestId('job-cost').textContent({ timeout: 10_000 })) ?? '';
      assert.notEqual(c, '$0.000000');
    });
  });

  await step('overview, workers and artifacts show the live system', async () => {
    await page.goto(`${BASE}/`);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.getByText('ready', { exact: true }).first().waitFor();
    await page.getByTestId('overview-spend').waitFor();
    await page.getByRole('link', { name: jobId }).waitFor();
    await shot('overview');

    await page.getByRole('link', { name: 'Workers', exact: true }).click();
    await page.waitForURL(/\/workers$/);
    await page.getByRole('columnheader', { name: 'Last heartbeat' }).waitFor();
    assert.ok((await page.locator('tbody tr').count()) >= 1, 'no worker listed');
    await shot('workers');

    await page.getByRole('link', { name: 'Artifacts', exact: true }).click();
    await page.waitForURL(/\/artifacts$/);
    await page.getByRole('link', { name: jobId }).first().waitFor();
    await shot('artifacts');
  });

  await filesSteps({ page, step, BASE, shot });

  await step('gateway down and not-served routes get honest error states', async () => {
    await page.route('**/api/workers/**', (r) =>
      r.fulfill({
        status: 502,
        contentType: 'application/json',
        body: JSON.stringify({ error: { code: 'gateway_unreachable', message: 'The Nexa Forge gateway is not reachable.', request_id: '' } }),
      }),
    );
    await page.goto(`${BASE}/workers`);
    await page.getByText('The gateway is not reachable').waitFor();
    await page.getByRole('button', { name: 'Retry' }).waitFor();
    await shot('error-gateway-down');
    await page.unroute('**/api/workers/**');
    await page.route('**/api/workers/**', (r) =>
      r.fulfill({
        status: 404,
        contentType: 'application/json',
        body: JSON.stringify({ error: { code: 'not_found', message: 'no such resource', request_id: 'req_test' } }),
      }),
    );
    await page.getByRole('button', { name: 'Retry' }).click();
    await page.getByText('Not available yet').waitFor();
    await page.unroute('**/api/workers/**');
  });

  await step('an ended session leads back to sign-in and returns to the page', async () => {
    await page.goto(`${BASE}/workers`);
    await page.getByRole('columnheader', { name: 'Last heartbeat' }).waitFor();
    await context.clearCookies(); // the session is gone; the next refresh is refused
    await page.waitForURL(/\/sign-in\?.*expired=1/, { timeout: 20_000 });
    await page.getByText('Your session has ended').waitFor();
    await page.getByLabel('Password', { exact: true }).fill('wrong password, surely');
    await page.getByLabel('E-mail', { exact: true }).fill(email);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').waitFor();
    await page.getByLabel('Password', { exact: true }).fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(/\/workers$/);
  });

  await step('revoke the key: confirmed, then refused by the gateway', async () => {
    await page.getByRole('link', { name: 'Settings · API keys' }).click();
    await page.waitForURL(/\/settings\/api-keys$/);
    await page.getByRole('button', { name: 'Revoke browser-test' }).click();
    const dialog = page.getByRole('dialog', { name: 'Revoke this key?' });
    await dialog.getByRole('button', { name: 'Revoke key' }).click();
    await dialog.waitFor({ state: 'hidden' });
    const row = page.getByTestId('key-list').getByRole('row', { name: /browser-test/ });
    await row.getByText('revoked').waitFor();
    await eventually('the revoked key refused', 5_000, async () => {
      const res = await fetch(`${API}/api/jobs/${jobId}`, { headers: { 'X-Nexa-Api-Key': apiKey } });
      assert.equal(res.status, 403);
    });
  });

  await step('sign out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/sign-in$/);
    await page.goto(`${BASE}/billing`);
    await page.waitForURL(/\/sign-in\?next=%2Fbilling$/);
  });

  assert.deepEqual(external, [], 'the dashboard fetched something from outside');
  assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
});
