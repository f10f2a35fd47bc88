// Drives the dashboard page in Debian's headless Chromium through playwright-core.
// Usage: node tests/browser/e2e.mjs BASE_URL API_KEY LOCATION_ID SCREENSHOT_PATH
// (tests/browser.rs starts the simulator and the gateway, then runs this). Env NEWCOMER: the
// first name of a contact GHL got after the gateway's last sync.
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, key, locationId, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error('usage: node e2e.mjs BASE_URL API_KEY LOCATION_ID SCREENSHOT_PATH');
  process.exit(2);
}
const newcomer = process.env.NEWCOMER || 'Zebediah';
const PAGE_SIZE = 25;

// This machine has no internet: no background services, nothing fetched at start.
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

const profile = mkdtempSync(join(tmpdir(), 'ghl-dashboard-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
  viewport: { width: 1360, height: 1000 },
  deviceScaleFactor: 1,
});
context.setDefaultTimeout(20000);

const pageErrors = [];
let failed = false;
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    // A refused key shows as a failed 401 in the console: expected. A CSP refusal is not.
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(message.text())) {
      pageErrors.push(`console: ${message.text()}`);
    }
  });
  const rows = page.locator('#contacts tbody tr');
  const badge = page.locator('#sync-badge');

  // 1. A fresh browser has no key: the form asks for one; a wrong key is refused plainly.
  await page.goto(base);
  await page.locator('#key-view').waitFor({ state: 'visible' });
  check(await page.locator('#main-view').isHidden(), 'without a key, only the key form shows');
  await page.getByLabel('API key', { exact: true }).fill('ghl_this-key-does-not-exist');
  await page.getByRole('button', { name: 'Save key' }).click();
  await page.locator('#key-error', { hasText: 'not accepted' }).waitFor();
  check(await page.evaluate(() => localStorage.getItem('ghl-gateway.apiKey')) === null,
    'a refused key says "not accepted" and is not stored');

  // 2. The right key: the contacts table of the location, one page of it.
  await page.getByLabel('API key', { exact: true }).fill(key);
  await page.getByLabel('API key', { exact: true }).press('Enter');
  await page.locator('#main-view').waitFor({ state: 'visible' });
  await rows.nth(PAGE_SIZE - 1).waitFor();
  check(await rows.count() === PAGE_SIZE, `the table shows a page of ${PAGE_SIZE} contacts`);
  check(await page.evaluate(() => localStorage.getItem('ghl-gateway.apiKey')) === key,
    'the accepted key is kept in localStorage');
  check(await page.locator('#location').inputValue() === locationId, 'the location is picked');
  const pageInfo = await page.locator('#page-info').textContent();
  check(/^Page 1 · 1–25 of 30\d contacts$/.test(pageInfo), `page info reads "${pageInfo}"`);
  const headers = await page.locator('#contacts thead th').allTextContents();
  check(headers.join('|') === 'Name|Email|Phone|Tags|Open tasks|Unread|Open value|Assigned to',
    `the columns are ${headers.join(', ')}`);
  const firstRow = await rows.first().locator('td').allTextContents();
  check(firstRow[0].trim().length > 0 && firstRow[1].includes('@'), `a row reads ${firstRow.join(' | ')}`);
  check(!(await page.locator('#contacts tbody').textContent()).includes(newcomer),
    `${newcomer}, who reached GHL after the last sync, is not in the cache yet`);

  // 3. Keyset paging: next, then back to the same first page.
  const firstId = await rows.first().getAttribute('data-id');
  await page.getByRole('button', { name: /Next/ }).click();
  await page.locator('#page-info', { hasText: 'Page 2 · 26–50' }).waitFor();
  const secondId = await rows.first().getAttribute('data-id');
  check(secondId !== firstId, 'Next shows the next 25 contacts');
  await page.getByRole('button', { name: /Previous/ }).click();
  await page.locator('#page-info', { hasText: 'Page 1 · 1–25' }).waitFor();
  check(await rows.first().getAttribute('data-id') === firstId, 'Previous returns to the first page');

  // 4. The badge, fed by the subscription: synced a moment ago.
  await page.locator('#sync-badge[data-state="synced"]').waitFor();
  check(/Synced just now/.test(await badge.textContent()), `the badge reads "${(await badge.textContent()).trim()}"`);

  // 5. Search (debounced): the newcomer is not there yet.
  await page.getByLabel('Search', { exact: true }).fill(newcomer);
  await page.locator('#empty').waitFor({ state: 'visible' });
  check(await rows.count() === 0, `searching "${newcomer}" finds no one before the sync`);

  // 6. Refresh: record every state the badge goes through, then click.
  await page.evaluate(() => {
    const badgeElement = document.getElementById('sync-badge');
    window.badgeStates = [badgeElement.dataset.state];
    window.badgeTexts = [];
    new MutationObserver(() => {
      const state = badgeElement.dataset.state;
      if (window.badgeStates[window.badgeStates.length - 1] !== state) window.badgeStates.push(state);
      const bar = document.getElementById('sync-progress');
      if (state === 'running' && !bar.hidden) window.progressSeen = Math.max(window.progressSeen || 0, bar.value, 1);
      window.badgeTexts.push(badgeElement.textContent.trim());
    }).observe(badgeElement, { attributes: true, childList: true, subtree: true, characterData: true });
  });
  await page.getByRole('button', { name: 'Refresh' }).click();
  await page.locator('#refresh-status', { hasText: /Sync started|Joined a sync/ }).waitFor();
  log(`refresh says "${await page.locator('#refresh-status').textContent()}"`);
  await page.waitForFunction(() => window.badgeStates.includes('running'), null, { timeout: 30000 });
  log('ok: the badge went to running');
  await page.waitForFunction(() => {
    const states = window.badgeStates;
    return states.indexOf('running') >= 0 && states.slice(states.indexOf('running')).includes('synced');
  }, null, { timeout: 60000 });
  const states = await page.evaluate(() => window.badgeStates);
  const texts = await page.evaluate(() => [...new Set(window.badgeTexts)]);
  log(`badge states: ${states.join(' -> ')}`);
  log(`badge texts: ${texts.slice(0, 12).join(' | ')}${texts.length > 12 ? ' | …' : ''}`);
  check(states[states.length - 1] === 'synced', 'then the badge went to synced');
  check(await page.evaluate(() => window.progressSeen > 0), 'while it ran, the badge showed a progress bar');
  check(await page.locator('#sync-progress').isHidden(), 'the progress bar is gone once synced');

  // 7. The finished sync reloaded the table by itself: the newcomer is found now.
  await rows.filter({ hasText: newcomer }).first().waitFor({ timeout: 20000 });
  check(await rows.count() === 1, `after the sync, the table shows ${newcomer} without a page reload`);
  const row = await rows.first().locator('td').allTextContents();
  log(`  ${row.join(' | ')}`);

  // 8. Keyboard: Tab reaches the refresh button, with a visible focus ring.
  await page.locator('body').click({ position: { x: 5, y: 5 } });
  let focused = '';
  for (let i = 0; i < 12 && focused !== 'refresh'; i += 1) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  }
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(focused === 'refresh' && outline !== 'none', `Tab reaches Refresh, outlined (${outline})`);

  // 9. A reload keeps the key: straight to the table, the newcomer first (newest first).
  await page.reload();
  await rows.nth(PAGE_SIZE - 1).waitFor();
  check(await page.locator('#key-view').isHidden(), 'after a reload the stored key is used');
  check((await rows.first().textContent()).includes(newcomer), `${newcomer} heads the table`);
  await page.locator('#sync-badge[data-state="synced"]').waitFor();
  await page.locator('#refresh').focus();
  await page.evaluate(() => document.activeElement.blur());
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  log(`screenshot saved to ${screenshot}`);

  // 10. A location this key may not read (a link to it) is explained, with a way to change key.
  await page.goto(`${base}/?location=not-this-keys-location`);
  await page.locator('#alert', { hasText: 'may not read' }).waitFor();
  check(await page.locator('#alert-key').isVisible(),
    `a forbidden location says "${(await page.locator('#alert-text').textContent()).trim()}" and offers "Change key"`);
  await page.locator('#location').selectOption(locationId);
  await rows.nth(PAGE_SIZE - 1).waitFor();
  check(await page.locator('#alert').isHidden(), 'picking a readable location clears the message');

  check(pageErrors.length === 0, `no script errors or CSP refusals${pageErrors.length ? `: ${pageErrors.join('; ')}` : ''}`);
} catch (error) {
  failed = true;
  console.error(error && error.stack ? error.stack : error);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join('; ')}`);
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
