// Drives the dashboard's views in Debian's headless Chromium through playwright-core, checking
// what the page shows against GraphQL asked directly, and that a change in GHL (the simulator's
// admin API, delivered to the gateway as a signed webhook) reaches the page without a reload.
// Usage: node tests/browser/views.mjs BASE_URL API_KEY LOCATION_ID SIM_BASE_URL SCREENSHOT_DIR
// (tests/browser.rs starts the simulator and the gateway, then runs this).
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, key, locationId, simBase, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: node views.mjs BASE_URL API_KEY LOCATION_ID SIM_BASE_URL SCREENSHOT_DIR');
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

/** GraphQL asked directly, with the same key: what the page must agree with. */
async function graphql(query, variables) {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', Authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`GraphQL: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** Every open opportunity of a stage, page after page: count and summed value. */
async function openInStage(stageId) {
  let after = null;
  let count = 0;
  let value = 0;
  let total = null;
  for (;;) {
    const data = await graphql(`query($loc: ID!, $stage: ID!, $after: String) {
      opportunities(locationId: $loc, first: 100, after: $after, filter: { stageId: $stage, status: OPEN }) {
        totalCount pageInfo { hasNextPage endCursor } nodes { monetaryValue }
      }
    }`, { loc: locationId, stage: stageId, after });
    const page = data.opportunities;
    total = page.totalCount;
    count += page.nodes.length;
    value += page.nodes.reduce((sum, o) => sum + (o.monetaryValue || 0), 0);
    if (!page.pageInfo.hasNextPage) break;
    after = page.pageInfo.endCursor;
  }
  if (total !== count) throw new Error(`totalCount ${total} but ${count} nodes`);
  return { count, value };
}

const profile = mkdtempSync(join(tmpdir(), 'ghl-dashboard-views-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
  viewport: { width: 1280, height: 820 },
  deviceScaleFactor: 1,
  reducedMotion: 'reduce',
});
context.setDefaultTimeout(20000);
mkdirSync(shots, { recursive: true });

const pageErrors = [];
let failed = false;
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(message.text())) {
      pageErrors.push(`console: ${message.text()}`);
    }
  });
  const rows = page.locator('#contacts tbody tr');

  // 1. The key, then the first location this key may read, on the contacts view.
  await page.goto(base);
  await page.getByLabel('API key', { exact: true }).fill(key);
  await page.getByLabel('API key', { exact: true }).press('Enter');
  await rows.nth(24).waitFor();
  check(await page.locator('#location').inputValue() === locationId, 'the picker starts on the key\'s location');
  await page.locator('#sync-badge[data-state="synced"]').waitFor();
  await page.screenshot({ path: join(shots, 'dashboard-contacts.png') });

  // 2. A contact's panel: its tasks as GraphQL has them, overdue ones marked.
  const { contacts } = await graphql(`query($loc: ID!) {
    contacts(locationId: $loc, first: 25) { nodes { id name tasks { id } } }
  }`, { loc: locationId });
  const chosen = [...contacts.nodes].sort((a, b) => b.tasks.length - a.tasks.length)[0];
  check(chosen.tasks.length >= 2, `${chosen.name} has ${chosen.tasks.length} tasks`);
  const opener = page.locator(`#contacts button[data-contact="${chosen.id}"]`);
  await opener.focus();
  await page.keyboard.press('Enter');
  const panel = page.locator('#contact-panel');
  await panel.waitFor({ state: 'visible' });
  const taskItems = panel.locator('section[data-section="tasks"] li');
  await taskItems.nth(chosen.tasks.length - 1).waitFor();
  const { contact } = await graphql(`query($id: ID!) {
    contact(id: $id) { name tasks { id title dueDate completed } opportunities { id } conversations { id } }
  }`, { id: chosen.id });
  const shown = await taskItems.evaluateAll((items) => items.map((li) => ({
    id: li.dataset.key,
    title: li.querySelector('.title').textContent,
    completed: li.dataset.completed === 'true',
    overdue: li.dataset.overdue === 'true',
  })));
  check(JSON.stringify(shown.map((t) => t.id)) === JSON.stringify(contact.tasks.map((t) => t.id)),
    `the panel lists the ${contact.tasks.length} tasks of ${contact.name}, in GraphQL's order`);
  const now = Date.now();
  for (const [i, t] of contact.tasks.entries()) {
    const overdue = !t.completed && t.dueDate !== null && Date.parse(t.dueDate) < now;
    if (shown[i].title !== (t.title || '(untitled)') || shown[i].completed !== t.completed || shown[i].overdue !== overdue) {
      throw new Error(`task ${t.id}: shown ${JSON.stringify(shown[i])}, GraphQL ${JSON.stringify(t)}`);
    }
  }
  log(`ok: titles, completion and overdue marks agree (${shown.filter((t) => t.overdue).length} overdue)`);
  check(await panel.locator('section[data-section="opportunities"] li').count() === contact.opportunities.length
    && await panel.locator('section[data-section="conversations"] li').count() === contact.conversations.length,
    'the panel lists the contact\'s opportunities and conversations');
  await page.screenshot({ path: join(shots, 'dashboard-contact.png') });
  await page.keyboard.press('Escape');
  await panel.waitFor({ state: 'hidden' });
  check(await page.evaluate((id) => document.activeElement && document.activeElement.dataset.contact === id, chosen.id),
    'Escape closes the panel and gives the focus back to the contact\'s name');

  // 3. The pipeline view, reached from the keyboard: each column's figures against GraphQL.
  await page.locator('#tab-contacts').focus();
  await page.keyboard.press('ArrowRight');
  check(await page.locator('#tab-pipeline').getAttribute('aria-selected') === 'true', 'ArrowRight selects the Pipeline tab');
  const columns = page.locator('#board .column');
  await columns.first().waitFor();
  const pipelineId = await page.locator('#pipeline').inputValue();
  const board = await columns.evaluateAll((cols) => cols.map((c) => ({
    stage: c.dataset.stage,
    count: Number(c.querySelector('[data-count]').dataset.count),
    value: Number(c.querySelector('[data-value]').dataset.value),
  })));
  const { location } = await graphql(`query($loc: ID!) { location(id: $loc) { pipelines { id stages { id } } } }`, { loc: locationId });
  const stages = location.pipelines.find((p) => p.id === pipelineId).stages;
  check(JSON.stringify(board.map((c) => c.stage)) === JSON.stringify(stages.map((s) => s.id)),
    `one column per stage of the pipeline, in board order (${stages.length})`);
  for (const column of board) {
    const want = await openInStage(column.stage);
    if (want.count !== column.count || Math.abs(want.value - column.value) > 0.005) {
      throw new Error(`stage ${column.stage}: shown ${JSON.stringify(column)}, GraphQL pages say ${JSON.stringify(want)}`);
    }
  }
  log(`ok: column totals agree with the opportunities pages: ${board.map((c) => `${c.count}/${c.value}`).join(', ')}`);
  await page.locator('#chart-svg').waitFor({ state: 'visible' });
  const bars = await page.locator('#chart-svg g.bars rect.bar').evaluateAll((rects) => rects.map((r) => r.getBoundingClientRect().height));
  const tallest = board.reduce((best, c, i) => (c.value > board[best].value ? i : best), 0);
  check(bars.length === stages.length && bars[tallest] === Math.max(...bars) && bars[tallest] > 50,
    `the chart shows a bar per stage, the largest value the tallest (${bars.map(Math.round).join(', ')} px)`);
  await page.screenshot({ path: join(shots, 'dashboard-pipeline.png') });

  // 4. Live: an opportunity moves to another stage in GHL; two columns change, nothing reloads.
  const from = board.find((c) => c.count > 0);
  const to = board.find((c) => c.stage !== from.stage);
  const untouched = board.find((c) => c.stage !== from.stage && c.stage !== to.stage);
  const { opportunities } = await graphql(`query($loc: ID!, $stage: ID!) {
    opportunities(locationId: $loc, first: 1, filter: { stageId: $stage, status: OPEN }) { nodes { id name } }
  }`, { loc: locationId, stage: from.stage });
  const moving = opportunities.nodes[0];
  await page.evaluate((stage) => {
    window.stillTheSamePage = true;
    const column = stage && document.querySelector(`#board .column[data-stage="${stage}"]`);
    if (column) column.markedBeforeTheChange = true;
  }, untouched && untouched.stage);
  const patched = await fetch(`${simBase}/_sim/locations/${locationId}/opportunities/${moving.id}`, {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ pipelineStageId: to.stage }),
  });
  check(patched.ok, `the simulator moved "${moving.name}" from ${from.stage} to ${to.stage} (${patched.status})`);
  await page.waitForFunction(([f, t]) => {
    const count = (stage) => Number(document.querySelector(`#board .column[data-stage="${stage}"] [data-count]`).dataset.count);
    return count(f.stage) === f.count - 1 && count(t.stage) === t.count + 1;
  }, [from, to], { timeout: 30000 });
  log(`ok: the columns now read ${from.count - 1} and ${to.count + 1} open`);
  check(await page.evaluate(() => window.stillTheSamePage === true), 'without a page reload');
  check(await page.locator(`#board .column[data-stage="${to.stage}"].flash`).count() === 1,
    'the changed column is highlighted');
  if (untouched) {
    check(await page.evaluate((stage) => document.querySelector(`#board .column[data-stage="${stage}"]`).markedBeforeTheChange === true, untouched.stage),
      'a column the change did not touch was not redrawn');
  }
  const after = await openInStage(to.stage);
  check(after.count === to.count + 1, 'GraphQL agrees with the new count');

  // 5. What is due: the three lists' counts against GraphQL with the same local days.
  await page.locator('#tab-due').click();
  await page.locator('#due-today li').first().waitFor();
  const midnight = (days) => {
    const d = new Date();
    d.setHours(0, 0, 0, 0);
    d.setDate(d.getDate() + days);
    return d.toISOString();
  };
  const due = await graphql(`query($loc: ID!, $today: DateTime!, $tomorrow: DateTime!, $weekEnd: DateTime!) {
    overdue: tasks(locationId: $loc, filter: { completed: false, dueBefore: $today }) { totalCount }
    today: tasks(locationId: $loc, filter: { completed: false, dueAfter: $today, dueBefore: $tomorrow }) { totalCount nodes { title } }
    week: tasks(locationId: $loc, filter: { completed: false, dueAfter: $tomorrow, dueBefore: $weekEnd }) { totalCount }
  }`, { loc: locationId, today: midnight(0), tomorrow: midnight(1), weekEnd: midnight(8) });
  for (const [bucket, id] of [['overdue', 'due-overdue'], ['today', 'due-today'], ['week', 'due-week']]) {
    const shownTotal = Number(await page.locator(`#${id} [data-count]`).getAttribute('data-total'));
    check(shownTotal === due[bucket].totalCount, `${bucket}: ${shownTotal} tasks, as GraphQL says`);
  }
  check(due.today.nodes.some((t) => t.title.startsWith('Call back today')), 'the tasks due today are the ones made today');
  await page.screenshot({ path: join(shots, 'dashboard-due.png') });

  // 6. A location this key may not read: the badge says so instead of "loading…".
  await page.goto(`${base}/?location=not-this-keys-location`);
  await page.locator('#sync-badge[data-state="failed"]').waitFor();
  const badge = (await page.locator('#sync-badge').textContent()).trim();
  check(/Refused: this key may not read/.test(badge), `the badge reads "${badge}"`);

  check(pageErrors.length === 0, `no script errors or CSP refusals${pageErrors.length ? `: ${pageErrors.join('; ')}` : ''}`);
} catch (error) {
  failed = true;
  console.error(error && error.stack ? error.stack : error);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join('; ')}`);
  try {
    const page = context.pages()[0];
    await page.screenshot({ path: join(shots, 'views-failure.png'), fullPage: true });
    console.error(`failure screenshot: ${join(shots, 'views-failure.png')}`);
  } catch (_) { /* the browser may be gone */ }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
log(failed ? 'FAILED' : 'passed');
process.exit(failed ? 1 : 0);
