// Drives the monitoring page of a running `ferry serve` in Debian's Chromium (never a
// downloaded browser): finds a failed run in the runs list, reads its time as the page's
// script says it in the browser's zone (and as the server says it without the script), opens
// it, presses Resubmit, follows the new run until it ends, follows the dashboard's count of
// failures, pauses and resumes a flow, searches the runs by file name, and saves screenshots. tests/browser.rs starts the server, makes the failed run
// and checks the result this prints (one JSON line on stdout).
//
// Environment: FERRY_URL, FERRY_USER, FERRY_PASSWORD, FAILED_RUN (its id), SCREENSHOT_DIR,
// CHROMIUM (default /usr/bin/chromium), BROWSER_TZ (the browser's time zone, as TZ),
// PAUSE_FLOW (the flow it pauses and resumes), SEARCH_TEXT (what it searches the runs for).

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
const browserZone = need('BROWSER_TZ');

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
  // the browser's zone comes from its environment, as on an operator's desktop
  env: { ...process.env, TZ: browserZone },
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
  // its start, as the script says it in the browser's zone
  const started = row.locator('[data-testid="run-link"] time');
  result.started = {
    datetime: await started.getAttribute('datetime'),
    title: await started.getAttribute('title'),
    text: (await started.innerText()).trim(),
    zone_label: (await page.locator('[data-testid="time-zone"]').innerText()).trim(),
  };
  await shot(page, 'runs-failed');

  // the same list without the script: the server's UTC title and relative text
  const bare = await context.newPage();
  await bare.route('**/ui/app.js', (r) => r.fulfill({ contentType: 'text/javascript', body: '' }));
  await bare.goto(`${base}/ui/runs`);
  const bareTime = bare.locator(`[data-testid="run-row"][data-run-id="${failed}"] [data-testid="run-link"] time`);
  result.started_without_script = {
    title: await bareTime.getAttribute('title'),
    text: (await bareTime.innerText()).trim(),
    zone_label: (await bare.locator('[data-testid="time-zone"]').innerText()).trim(),
  };
  await bare.close();

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
  result.resubmit_of_label = (await page.locator('dt:has(+ [data-testid="resubmit-of"])').innerText()).trim();

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
  result.took = (await page.locator('[data-testid="took"]').innerText()).trim();
  await shot(page, 'resubmitted-run');
  await page.goto(`${base}/ui/runs/${failed}`);
  result.resubmitted_as_label = (await page.locator('dt:has(+ [data-testid="resubmitted-as"])').innerText()).trim();
  await shot(page, 'failed-run-resubmitted');

  // the list shows both runs
  await page.goto(`${base}/ui/runs`);
  result.runs_listed = await page.locator('[data-testid="run-row"]').count();
  await shot(page, 'runs');

  // the dashboard counts both runs
  response = await page.goto(`${base}/ui`);
  check(response.status() === 200, `GET /ui answered ${response.status()}`);
  result.flows_listed = await page.locator('[data-testid="flow-row"]').count();
  result.child_flows_listed = await page.locator('[data-testid="child-flow-row"]').count();
  await shot(page, 'dashboard');
  // the failures of the last 24 hours, at a glance, lead to the failed run
  const count = page.locator('[data-testid="failures-24h"] [data-testid="failed-24h"]');
  result.failures_glance = await count.evaluateAll((els) => els.map((e) => [e.dataset.flow, e.dataset.count]));
  await Promise.all([page.waitForURL(/\/ui\/runs\?/), count.first().click()]);
  result.failures_link = page.url().slice(base.length);
  result.failures_listed = await page.locator('[data-testid="run-row"]').evaluateAll((els) => els.map((e) => e.dataset.runId));

  // pause the flow with a reason: the dashboard says so, the API agrees, no Run now; then
  // resume it
  const pauseFlow = need('PAUSE_FLOW');
  await page.goto(`${base}/ui`);
  const flowRow = page.locator(`[data-testid="flow-row"][data-flow="${pauseFlow}"]`);
  await flowRow.locator('[data-testid="pause-reason-input"]').fill('DACS maintenance window');
  await Promise.all([page.waitForURL(`${base}/ui`), flowRow.locator('[data-testid="pause"]').click()]);
  result.paused_row = {
    badge: (await flowRow.locator('[data-testid="paused"] .badge').innerText()).trim(),
    reason: (await flowRow.locator('[data-testid="pause-reason"]').innerText()).trim(),
    run_now_buttons: await flowRow.locator('[data-testid="run-now"]').count(),
    class: await flowRow.getAttribute('class'),
  };
  const flowsWhilePaused = await (await context.request.get(`${base}/api/v1/flows`)).json();
  result.paused_api = flowsWhilePaused.flows.find((f) => f.id === pauseFlow);
  const refused = await context.request.post(`${base}/api/v1/flows/${pauseFlow}/runs`);
  result.run_now_while_paused = { status: refused.status(), body: await refused.json() };
  await shot(page, 'dashboard-paused');
  await Promise.all([page.waitForURL(`${base}/ui`), flowRow.locator('[data-testid="resume"]').click()]);
  result.resumed_row = {
    paused: await flowRow.locator('[data-testid="paused"]').count(),
    run_now_buttons: await flowRow.locator('[data-testid="run-now"]').count(),
  };
  const flowsResumed = await (await context.request.get(`${base}/api/v1/flows`)).json();
  result.resumed_api = flowsResumed.flows.find((f) => f.id === pauseFlow);

  // search the runs by a part of the file the resubmit moved, in another case
  await page.goto(`${base}/ui/runs`);
  await page.locator('[data-testid="search"]').fill(need('SEARCH_TEXT'));
  await Promise.all([page.waitForURL(/search=/), page.locator('[data-testid="search"]').press('Enter')]);
  result.search_url = page.url().slice(base.length);
  result.search_found = await page.locator('[data-testid="run-row"]').evaluateAll((els) => els.map((e) => e.dataset.runId));
  result.search_box = await page.locator('[data-testid="search"]').inputValue();
  await shot(page, 'runs-search');

  // a day and two hours later (the browser's clock set forward), the failed run's start
  // reads by the browser's calendar: yesterday, or the day before, in its zone
  await context.clock.setFixedTime(new Date(Date.parse(result.started.datetime) + 26 * 3600 * 1000));
  await page.goto(`${base}/ui/runs`);
  result.started_a_day_later = (await page.locator(`[data-testid="run-row"][data-run-id="${failed}"] [data-testid="run-link"] time`).innerText()).trim();
  console.log(JSON.stringify(result));
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
  console.log(JSON.stringify(result));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
