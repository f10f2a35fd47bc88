// Drives GraphiQL (/graphiql) in Debian's headless Chromium through playwright-core, with every
// request to anywhere but the gateway blocked: the page must load from the gateway alone, take an
// API key in its Headers tab, run a query and show the data, and run a subscription over the
// WebSocket with the same key.
// Usage: node tests/browser/graphiql.mjs BASE_URL API_KEY LOCATION_ID SCREENSHOT_PATH
// (tests/browser.rs starts the simulator and the gateway, syncs, then runs this).
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, key, locationId, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error('usage: node graphiql.mjs BASE_URL API_KEY LOCATION_ID SCREENSHOT_PATH');
  process.exit(2);
}

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const t0 = Date.now();
const log = (message) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${message}`);
function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  log(`ok: ${message}`);
}

const origin = new URL(base).origin;
const profile = mkdtempSync(join(tmpdir(), 'ghl-graphiql-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
  viewport: { width: 1360, height: 900 },
  deviceScaleFactor: 1,
});
context.setDefaultTimeout(20000);

// The outside network is cut: only the gateway answers, everything else is aborted and noted.
const blocked = [];
await context.route('**/*', (route) => {
  const url = route.request().url();
  if (url.startsWith(`${origin}/`) || url.startsWith('data:')) return route.continue();
  blocked.push(url);
  return route.abort('internetdisconnected');
});

const pageErrors = [];
const consoleLines = [];
let failed = false;
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    consoleLines.push(`${message.type()}: ${message.text()}`);
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(message.text())) {
      pageErrors.push(`console: ${message.text()}`);
    }
  });
  const sockets = [];
  page.on('websocket', (socket) => sockets.push(socket.url()));

  // The CodeMirror 5 editor inside a GraphiQL element: its text, or set its text.
  const editor = (selector) => ({
    get: () => page.evaluate((s) => document.querySelector(`${s} .CodeMirror`).CodeMirror.getValue(), selector),
    set: (text) => page.evaluate(([s, t]) => document.querySelector(`${s} .CodeMirror`).CodeMirror.setValue(t), [selector, text]),
  });
  const query = editor('.graphiql-query-editor');
  // The tools pane holds the variables and headers editors; only the open one is not hidden.
  const headers = editor('.graphiql-editor-tool .graphiql-editor:not(.hidden)');
  const result = editor('.graphiql-response');

  // Runs the editor's operation until the result pane shows `marker`. GraphiQL reads the
  // operation's name and type from a parse it redoes a moment after each edit: a click before
  // that runs the new text under the old name or transport ("Unknown operation named",
  // "Subscriptions are not supported on this transport"), so only those answers are retried.
  const run = async (marker) => {
    for (let attempt = 1; ; attempt += 1) {
      await page.evaluate(() => {
        const cm = document.querySelector('.graphiql-response .CodeMirror');
        if (cm) cm.CodeMirror.setValue('');
      });
      await page.locator('.graphiql-execute-button').click();
      await page.waitForFunction(() => {
        const cm = document.querySelector('.graphiql-response .CodeMirror');
        return cm && cm.CodeMirror.getValue().trim() !== '';
      }, null, { timeout: 20000 });
      const text = await result.get();
      if (text.includes(marker)) return;
      const stale = /Unknown operation named|not supported on this transport/.test(text);
      if (!stale || attempt === 5) throw new Error(`the result pane reads ${text}`);
      log(`the click ran the previous parse (${text.replace(/\s+/g, ' ')}); again`);
    }
  };

  // 1. The page loads with the outside blocked, its editors preset.
  await page.goto(`${base}/graphiql`);
  await page.locator('.graphiql-container').waitFor();
  await page.locator('.graphiql-query-editor .CodeMirror').waitFor();
  check(!(await page.locator('#graphiql').textContent()).startsWith('Loading'), 'GraphiQL started (not stuck on "Loading…")');
  await page.locator('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror').waitFor();
  const preset = await headers.get();
  check(/"Authorization": "Bearer </.test(preset), `the Headers tab is preset: ${preset.replace(/\s+/g, ' ')}`);

  // 2. The key in the Headers tab, a query run: the location's contacts.
  await headers.set(JSON.stringify({ Authorization: `Bearer ${key}` }, null, 2));
  await query.set(`query Contacts {\n  contacts(locationId: "${locationId}", first: 3) {\n    totalCount\n    nodes { id firstName email }\n  }\n}\n`);
  await run('"totalCount"');
  const answer = JSON.parse(await result.get());
  check(!answer.errors && answer.data.contacts.totalCount > 0 && answer.data.contacts.nodes.length === 3,
    `the query returns data: ${answer.data && answer.data.contacts.totalCount} contacts, first ${answer.data && answer.data.contacts.nodes[0].firstName}`);

  // 3. A subscription over the WebSocket, authenticated by the same header: its first event.
  await query.set(`subscription Status {\n  syncStatus(locationId: "${locationId}") {\n    locationId\n    job { state }\n  }\n}\n`);
  await run('"syncStatus"');
  const event = JSON.parse(await result.get());
  check(!event.errors && event.data.syncStatus.locationId === locationId,
    `the subscription streams over ${sockets.join(', ')}: job ${event.data.syncStatus.job.state}`);
  check(sockets.length > 0 && sockets.every((s) => s.startsWith(origin.replace(/^http/, 'ws'))), 'the WebSocket is the gateway\'s');
  await page.locator('.graphiql-execute-button').click(); // stops the subscription

  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  log(`screenshot saved to ${screenshot}`);

  check(blocked.length === 0, `nothing was requested from elsewhere${blocked.length ? `: ${blocked.join(', ')}` : ''}`);
  check(pageErrors.length === 0, `no script errors or CSP refusals${pageErrors.length ? `: ${pageErrors.join('; ')}` : ''}`);
} catch (error) {
  failed = true;
  console.error(error && error.stack ? error.stack : error);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join('; ')}`);
  if (blocked.length) console.error(`blocked: ${blocked.join(', ')}`);
  try {
    const text = await context.pages()[0].evaluate(() => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue());
    console.error(`the result pane reads: ${JSON.stringify(text)}`);
  } catch (_) { /* no result pane */ }
  console.error(`console: ${consoleLines.join(' | ')}`);
  try {
    const page = context.pages()[0];
    const failure = screenshot.replace(/\.png$/, '') + '-failure.png';
    await page.screenshot({ path: failure, fullPage: true });
    console.error(`failure screenshot: ${failure}`);
  } catch (_) { /* the browser may be gone */ }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
log(failed ? 'FAILED' : 'passed');
process.exit(failed ? 1 : 0);
