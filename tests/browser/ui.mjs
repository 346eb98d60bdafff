// Drives the monitoring page of a running `ferry serve` in Debian's Chromium (never a
// downloaded browser): finds a failed run in the runs list, opens it, presses Resubmit,
// follows the new run until it ends, and saves screenshots. tests/browser.rs starts the
// server, makes the failed run and checks the result this prints (one JSON line on stdout).
//
// Environment: FERRY_URL, FERRY_USER, FERRY_PASSWORD, FAILED_RUN (its id), SCREENSHOT_DIR,
// CHROMIUM (default /usr/bin/chromium).

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = need('FERRY_URL');
const failed = need('FAILED_RUN');
const shots = need('SCREENSHOT_DIR');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const result = { failed, screenshots: [], external_requests: [], console_errors: [] };
const userDataDir = mkdtempSync(join(tmpdir(), 'ferry-chromium-'));
mkdirSync(shots, { recursive: true });

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  // the machine's network is closed: keep Chromium from calling home at all
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  httpCredentials: { username: need('FERRY_USER'), password: need('FERRY_PASSWORD') },
  viewport: { width: 1280, height: 900 },
});

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  result.screenshots.push(path);
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);
  page.on('request', (r) => {
    if (!r.url().startsWith(base)) result.external_requests.push(r.url());
  });
  page.on('console', (m) => {
    if (m.type() === 'error') result.console_errors.push(`${m.text()} (${m.location().url})`);
  });

  // the runs list shows the failed run, marked
  let response = await page.goto(`${base}/ui/runs`);
  check(response.status() === 200, `GET /ui/runs answered ${response.status()}`);
  const row = page.locator(`[data-testid="run-row"][data-run-id="${failed}"]`);
  check((await row.count()) === 1, `the failed run ${failed} is not in the runs list`);
  check((await row.getAttribute('data-outcome')) === 'failed', 'the run is not shown as failed');
  check((await row.getAttribute('class')).split(' ').includes('bad'), 'the failed row is not marked');
  result.listed_error = (await row.locator('[data-testid="run-error"]').innerText()).trim();
  await shot(page, 'runs-failed');

  // its page shows the error; Resubmit leads to the new run
  await row.locator('[data-testid="run-link"]').click();
  await page.waitForURL(`${base}/ui/runs/${failed}`);
  result.error_message = (await page.locator('[data-testid="run-failure"] [data-testid="error-message"]').innerText()).trim();
  await shot(page, 'failed-run');
  await Promise.all([
    page.waitForURL((url) => url.pathname.startsWith('/ui/runs/') && !url.pathname.endsWith(failed)),
    page.locator('[data-testid="resubmit"]').click(),
  ]);
  result.resubmitted = (await page.locator('[data-testid="run-id"]').innerText()).trim();
  check(result.resubmitted !== failed, 'Resubmit stayed on the failed run');
  result.resubmit_of = (await page.locator('[data-testid="resubmit-of"]').innerText()).trim();

  // reload until the new run has ended
  const deadline = Date.now() + 60000;
  for (;;) {
    try {
      result.outcome = await page.locator('[data-testid="run-summary"]').getAttribute('data-outcome');
    } catch (e) {
      result.outcome = 'running'; // the page was reloading itself
    }
    if (result.outcome !== 'running' || Date.now() > deadline) break;
    await page.waitForTimeout(500);
    await page.reload();
  }
  await shot(page, 'resubmitted-run');

  // the list shows both runs
  await page.goto(`${base}/ui/runs`);
  result.runs_listed = await page.locator('[data-testid="run-row"]').count();
  await shot(page, 'runs');

  // the dashboard counts both runs
  response = await page.goto(`${base}/ui`);
  check(response.status() === 200, `GET /ui answered ${response.status()}`);
  result.flows_listed = await page.locator('[data-testid="flow-row"]').count();
  await shot(page, 'dashboard');
  console.log(JSON.stringify(result));
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
  console.log(JSON.stringify(result));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
