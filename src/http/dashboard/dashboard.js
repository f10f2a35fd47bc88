// The dashboard page, three views of a location over POST /graphql: its contacts (a row opens
// the contact's whole story in a side panel, from one query), its pipeline (stages as columns
// with the count and value of open opportunities, and a bar chart drawn here in SVG), and what
// is due (overdue, today, the next 7 days). A sync badge follows the `syncStatus` subscription,
// and the `changes` subscription keeps every view live: after a change the views it can touch
// are read again, and only the rows, columns and counts whose content differs are redrawn, with
// a quiet highlight. graphql-transport-ws is spoken by hand below: no library, no build step,
// nothing fetched from elsewhere.
'use strict';

(() => {
  const PAGE_SIZE = 25;
  const SEARCH_DEBOUNCE_MS = 300;
  /** Changes come in bursts (a sync writes page after page): one re-read per quiet moment. */
  const CHANGE_DEBOUNCE_MS = 300;
  const FLASH_MS = 2400;
  /** Opportunities read for the board's cards (by value); the columns' figures count them all. */
  const BOARD_CARDS = 200;
  const CARDS_PER_COLUMN = 6;
  const DUE_PAGE = 50;
  const KEY_STORAGE = 'ghl-gateway.apiKey';
  const LOCATION_STORAGE = 'ghl-gateway.location';

  const CONTACTS_QUERY = `query DashboardContacts($loc: ID!, $first: Int, $after: String, $filter: ContactFilter) {
  contacts(locationId: $loc, first: $first, after: $after, filter: $filter) {
    totalCount
    freshness { syncedAt ageSeconds stale syncing }
    pageInfo { hasNextPage endCursor }
    nodes {
      id name email phone tags
      assignedTo { name }
      tasks { id completed }
      conversations { id unreadCount }
      opportunities { id status monetaryValue }
    }
  }
}`;
  const CONTACT_QUERY = `query DashboardContact($id: ID!) {
  contact(id: $id) {
    id name firstName lastName email phone companyName source dateAdded dateUpdated tags
    assignedTo { name email }
    customFields { id name fieldKey dataType value }
    tasks { id title body dueDate completed assignedTo { name } }
    conversations { id type lastMessageBody lastMessageType lastMessageDate unreadCount }
    opportunities { id name status monetaryValue pipeline { id name } stage { id name } assignedTo { name } }
  }
}`;
  const PIPELINES_FIELDS = `pipelines {
      id name
      summary { count monetaryValue }
      stages { id name position summary { count monetaryValue } }
    }`;
  const PIPELINES_QUERY = `query DashboardPipelines($loc: ID!) { location(id: $loc) { id ${PIPELINES_FIELDS} } }`;
  const BOARD_QUERY = `query DashboardBoard($loc: ID!, $pipe: ID!, $first: Int) {
  location(id: $loc) { id ${PIPELINES_FIELDS} }
  opportunities(locationId: $loc, first: $first, filter: { pipelineId: $pipe, status: OPEN },
                orderBy: { field: MONETARY_VALUE, direction: DESC }) {
    totalCount
    nodes { id name monetaryValue stage { id } contact { id name } }
  }
}`;
  const DUE_QUERY = `query DashboardDue($loc: ID!, $today: DateTime!, $tomorrow: DateTime!, $weekEnd: DateTime!, $first: Int) {
  overdue: tasks(locationId: $loc, first: $first, filter: { completed: false, dueBefore: $today },
                 orderBy: { field: DUE_DATE, direction: DESC }) { ...DueTasks }
  today: tasks(locationId: $loc, first: $first, filter: { completed: false, dueAfter: $today, dueBefore: $tomorrow }) { ...DueTasks }
  week: tasks(locationId: $loc, first: $first, filter: { completed: false, dueAfter: $tomorrow, dueBefore: $weekEnd }) { ...DueTasks }
}
fragment DueTasks on TaskConnection { totalCount nodes { id title dueDate assignedTo { name } contact { id name } } }`;
  const LOCATIONS_QUERY = 'query DashboardLocations { locations { id name } }';
  const JOB_FIELDS = 'id state joined startedAt finishedAt error stages { name state fetched total }';
  const REFRESH_MUTATION = `mutation DashboardRefresh($loc: ID!) { refreshLocation(locationId: $loc) { ${JOB_FIELDS} } }`;
  const SYNC_SUBSCRIPTION = `subscription DashboardSync($loc: ID!) {
  syncStatus(locationId: $loc) { job { ${JOB_FIELDS} } freshness { syncedAt ageSeconds stale syncing } }
}`;
  const CHANGES_SUBSCRIPTION = `subscription DashboardChanges($loc: ID!) {
  changes(locationId: $loc) { kind op ids source dataVersion }
}`;

  const $ = (id) => document.getElementById(id);
  const numbers = new Intl.NumberFormat('en-US');
  const money = new Intl.NumberFormat('en-US', { minimumFractionDigits: 0, maximumFractionDigits: 2 });
  const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
  const dayFormat = new Intl.DateTimeFormat('en-US', { weekday: 'short', month: 'short', day: 'numeric' });
  const timeFormat = new Intl.DateTimeFormat('en-US', { hour: '2-digit', minute: '2-digit' });
  const dateTimeFormat = new Intl.DateTimeFormat('en-US', { dateStyle: 'medium', timeStyle: 'short' });

  const state = {
    key: localStorage.getItem(KEY_STORAGE),
    locations: [],
    location: null,
    view: 'contacts',
    // The `after` cursor of every page from the first to the current one: Next pushes the
    // page's endCursor, Previous pops.
    cursors: [null],
    query: '',
    // One sequence per view: a load answers only if no newer load of its view started.
    seq: { contacts: 0, board: 0, due: 0, panel: 0 },
    loaded: { contacts: false, pipeline: false, due: false },
    pipeline: null,
    panel: { id: null, opener: null },
    job: null,
    // Why the key may not read the chosen location, when it may not: shown in the badge.
    refused: null,
    // freshness, with the local clock time at which its ageSeconds was true (server and
    // browser clocks may disagree; ages are counted on the browser's clock from there).
    freshness: null,
    freshnessAt: 0,
  };

  // ---------------------------------------------------------------------------------------
  // GraphQL over HTTP

  class ApiError extends Error {
    constructor(message, code) {
      super(message);
      this.code = code;
    }
  }

  async function graphql(query, variables, key = state.key) {
    let response;
    try {
      response = await fetch('/graphql', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Accept: 'application/json',
          Authorization: `Bearer ${key}`,
        },
        body: JSON.stringify({ query, variables }),
      });
    } catch (_) {
      throw new ApiError('The gateway cannot be reached. Is it running?', 'NETWORK');
    }
    let body;
    try {
      body = await response.json();
    } catch (_) {
      throw new ApiError(`The gateway answered ${response.status} without a GraphQL body.`, 'INTERNAL');
    }
    if (body.errors && body.errors.length) {
      const first = body.errors[0];
      const code = (first.extensions && first.extensions.code)
        || (response.status === 401 ? 'UNAUTHENTICATED' : 'INTERNAL');
      throw new ApiError(first.message, code);
    }
    return body.data;
  }

  function locationName() {
    const l = state.locations.find((x) => x.id === state.location);
    if (l) return `“${l.name || l.id}”`;
    return state.location ? `the location “${state.location}”` : 'this location';
  }

  /** What went wrong, in plain words. */
  function explain(error) {
    switch (error.code) {
      case 'UNAUTHENTICATED':
        return 'This API key was not accepted: it may be mistyped, or revoked. Enter another key.';
      case 'NOT_FOUND':
      case 'FORBIDDEN':
        return `This API key may not read ${locationName()}, or the gateway does not know it. Pick another location or change the key.`;
      case 'RATE_LIMITED':
        return 'Too many requests with this key right now. Wait a few seconds and try again.';
      case 'UPSTREAM_UNAVAILABLE':
        return 'HighLevel could not be reached; the cached data stays as it was.';
      case 'BAD_USER_INPUT':
      case 'NETWORK':
        return error.message;
      default:
        return `Something went wrong in the gateway (${error.message}).`;
    }
  }

  const refusal = (code) => code === 'NOT_FOUND' || code === 'FORBIDDEN';

  function showAlert(error) {
    $('alert-text').textContent = explain(error);
    const keyProblem = ['UNAUTHENTICATED', 'NOT_FOUND', 'FORBIDDEN'].includes(error.code);
    $('alert-key').hidden = !keyProblem;
    $('alert').hidden = false;
  }

  function clearAlert() {
    $('alert').hidden = true;
  }

  /** A load failed: a dead key goes back to the form, a refused location to the badge. */
  function failed(error) {
    if (error.code === 'UNAUTHENTICATED') {
      live.stop();
      showKeyView(explain(error));
      return;
    }
    if (refusal(error.code)) {
      state.refused = `this key may not read ${locationName()}`;
      renderBadge();
    }
    showAlert(error);
  }

  // ---------------------------------------------------------------------------------------
  // Drawing: keyed lists redrawn only where their content changed

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /** A quiet highlight on `node`, which a live change touched. */
  function highlight(node) {
    node.classList.remove('flash');
    // Restart the animation when the same node changes twice in a row.
    void node.getBoundingClientRect();
    node.classList.add('flash');
    clearTimeout(node.flashTimer);
    node.flashTimer = setTimeout(() => node.classList.remove('flash'), FLASH_MS);
  }

  /** Sets a text, highlighting it when it changed and `flash` is on. */
  function setText(node, text, flash) {
    if (node.textContent === text) return;
    node.textContent = text;
    if (flash) highlight(node);
  }

  /**
   * Puts one child per item into `container`, in order. A child whose item has the same key and
   * signature as before is kept as it is; a new or changed one is drawn by `render` (and
   * highlighted when `flash`), and children of items gone are removed.
   */
  function patchChildren(container, items, key, render, flash, signature = (item) => JSON.stringify(item)) {
    const old = new Map();
    for (const child of container.children) old.set(child.dataset.key, child);
    const next = items.map((item) => {
      const k = String(key(item));
      const sig = signature(item);
      const existing = old.get(k);
      if (existing && existing.dataset.sig === sig) return existing;
      const node = render(item);
      node.dataset.key = k;
      node.dataset.sig = sig;
      if (flash) highlight(node);
      return node;
    });
    const unchanged = next.length === container.children.length
      && next.every((node, i) => container.children[i] === node);
    if (!unchanged) container.replaceChildren(...next);
  }

  function openButton(contact, fallback) {
    if (!contact) return el('span', 'muted', fallback || '(no contact)');
    const button = el('button', 'link', contact.name || '(no name)');
    button.type = 'button';
    button.dataset.contact = contact.id;
    button.setAttribute('aria-haspopup', 'dialog');
    return button;
  }

  /** Local midnight `days` from today. */
  function midnight(days) {
    const d = new Date();
    d.setHours(0, 0, 0, 0);
    d.setDate(d.getDate() + days);
    return d;
  }

  /** "overdue 3 days", "due today 14:00", "due Thu, Dec 3": how a due date reads from today. */
  function dueText(iso, completed) {
    if (!iso) return { text: 'no due date', overdue: false };
    const due = new Date(iso);
    const today = midnight(0);
    const days = Math.floor((due - today) / 86400000);
    const overdue = !completed && due < new Date();
    let text;
    if (days === 0) text = `today ${timeFormat.format(due)}`;
    else if (days === 1) text = `tomorrow ${timeFormat.format(due)}`;
    else if (days === -1) text = `yesterday ${timeFormat.format(due)}`;
    else if (days < 0) text = `${dayFormat.format(due)} (${numbers.format(-days)} days ago)`;
    else text = dayFormat.format(due);
    return { text: overdue ? `overdue: due ${text}` : `due ${text}`, overdue };
  }

  // ---------------------------------------------------------------------------------------
  // The API key

  function showKeyView(message) {
    $('key-view').hidden = false;
    $('main-view').hidden = true;
    $('sync-badge').hidden = true;
    $('refresh').hidden = true;
    $('change-key').hidden = true;
    closePanel(false);
    $('key-error').textContent = message || '';
    $('key-cancel').hidden = !state.key || !!message;
    $('key-forget').hidden = !localStorage.getItem(KEY_STORAGE);
    $('key-input').value = '';
    $('key-input').focus();
  }

  async function saveKey(event) {
    event.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) {
      $('key-error').textContent = 'Enter a key first.';
      return;
    }
    $('key-error').textContent = 'Checking the key…';
    try {
      const data = await graphql(LOCATIONS_QUERY, {}, key);
      live.stop(); // its connection_init carried the old key
      state.key = key;
      localStorage.setItem(KEY_STORAGE, key);
      $('key-error').textContent = '';
      start(data.locations);
    } catch (error) {
      $('key-error').textContent = explain(error);
    }
  }

  function forgetKey() {
    localStorage.removeItem(KEY_STORAGE);
    state.key = null;
    live.stop();
    $('refresh').hidden = true;
    $('change-key').hidden = true;
    showKeyView('The stored key was removed from this browser.');
  }

  // ---------------------------------------------------------------------------------------
  // Locations and views

  async function boot() {
    if (!state.key) {
      showKeyView();
      return;
    }
    try {
      const data = await graphql(LOCATIONS_QUERY, {});
      start(data.locations);
    } catch (error) {
      if (error.code === 'UNAUTHENTICATED') {
        showKeyView('The stored API key is no longer accepted (revoked or mistyped). Enter another key.');
      } else {
        $('main-view').hidden = false;
        showAlert(error);
      }
    }
  }

  function start(locations) {
    clearAlert();
    state.locations = locations;
    $('key-view').hidden = true;
    $('main-view').hidden = false;
    $('sync-badge').hidden = false;
    $('change-key').hidden = false;
    const select = $('location');
    select.replaceChildren(...locations.map((l) => {
      const option = document.createElement('option');
      option.value = l.id;
      option.textContent = l.name ? `${l.name} (${l.id})` : l.id;
      return option;
    }));
    if (!locations.length) {
      $('refresh').hidden = true;
      state.refused = 'this key can read no cached location';
      renderBadge();
      showAlert(new ApiError(
        'This key can read no location the gateway has cached yet. Sync one first (ghl-gateway sync --location ID), or use a key for another location.',
        'BAD_USER_INPUT',
      ));
      renderTable([], false);
      return;
    }
    $('refresh').hidden = false;
    // A link may name the location (`/?location=ID`); one this key cannot read still gets
    // selected, so that the page says why it shows nothing.
    const linked = new URLSearchParams(window.location.search).get('location');
    if (linked && !locations.some((l) => l.id === linked)) {
      const option = document.createElement('option');
      option.value = linked;
      option.textContent = `${linked} (not readable with this key)`;
      select.append(option);
    }
    // Otherwise the location chosen last in this browser, if this key may read it; else the
    // first location this key may read.
    const saved = localStorage.getItem(LOCATION_STORAGE);
    const readable = (id) => locations.some((l) => l.id === id);
    selectLocation(linked || (readable(saved) ? saved : locations[0].id));
  }

  function selectLocation(id) {
    state.location = id;
    $('location').value = id;
    if (state.locations.some((l) => l.id === id)) localStorage.setItem(LOCATION_STORAGE, id);
    state.cursors = [null];
    state.job = null;
    state.refused = null;
    state.freshness = null;
    state.pipeline = null;
    state.loaded = { contacts: false, pipeline: false, due: false };
    closePanel(false);
    $('refresh-status').textContent = '';
    renderBadge();
    loadView(state.view, false);
    live.watch(id);
  }

  const VIEWS = ['contacts', 'pipeline', 'due'];

  function selectView(view, focus) {
    state.view = view;
    for (const name of VIEWS) {
      const tab = $(`tab-${name}`);
      const selected = name === view;
      tab.setAttribute('aria-selected', String(selected));
      tab.tabIndex = selected ? 0 : -1;
      $(`view-${name}`).hidden = !selected;
    }
    if (focus) $(`tab-${view}`).focus();
    if (!state.loaded[view] && state.location) loadView(view, false);
  }

  function loadView(view, quiet) {
    if (view === 'contacts') return loadContacts(quiet);
    if (view === 'pipeline') return loadBoard(quiet);
    return loadDue(quiet);
  }

  // ---------------------------------------------------------------------------------------
  // Contacts

  async function loadContacts(quiet) {
    const seq = ++state.seq.contacts;
    const table = $('contacts');
    if (!quiet) table.setAttribute('aria-busy', 'true');
    const variables = {
      loc: state.location,
      first: PAGE_SIZE,
      after: state.cursors[state.cursors.length - 1],
      filter: state.query ? { query: state.query } : null,
    };
    try {
      const data = await graphql(CONTACTS_QUERY, variables);
      if (seq !== state.seq.contacts) return; // a newer load superseded this one
      clearAlert();
      state.refused = null;
      state.loaded.contacts = true;
      const page = data.contacts;
      renderTable(page.nodes, quiet);
      renderPager(page, quiet);
      if (!state.job || !['QUEUED', 'RUNNING'].includes(state.job.state)) {
        setFreshness(page.freshness);
      }
      renderBadge();
    } catch (error) {
      if (seq !== state.seq.contacts) return;
      failed(error);
    } finally {
      if (seq === state.seq.contacts) table.removeAttribute('aria-busy');
    }
  }

  function cell(text, className) {
    const td = el('td', className, text);
    return td;
  }

  /** A contact's row, as the table draws it: what the row shows, nothing more. */
  function rowOf(c) {
    return {
      id: c.id,
      name: c.name || '(no name)',
      email: c.email,
      phone: c.phone,
      tags: c.tags,
      openTasks: c.tasks.filter((t) => !t.completed).length,
      unread: c.conversations.reduce((sum, v) => sum + (v.unreadCount || 0), 0),
      openValue: c.opportunities
        .filter((o) => o.status === 'OPEN')
        .reduce((sum, o) => sum + (o.monetaryValue || 0), 0),
      assignedTo: c.assignedTo ? (c.assignedTo.name || '(unnamed user)') : null,
    };
  }

  function renderRow(r) {
    const tr = el('tr');
    tr.dataset.id = r.id;
    const name = cell(null, 'name');
    name.append(openButton({ id: r.id, name: r.name }));
    const tags = el('td');
    for (const tag of r.tags) tags.append(el('span', 'tag', tag));
    tr.append(
      name,
      cell(r.email || '—', r.email ? '' : 'muted'),
      cell(r.phone || '—', r.phone ? '' : 'muted'),
      tags,
      cell(numbers.format(r.openTasks), 'num'),
      cell(numbers.format(r.unread), 'num'),
      cell(r.openValue ? money.format(r.openValue) : '—', 'num'),
      cell(r.assignedTo || 'Unassigned', r.assignedTo ? '' : 'muted'),
    );
    return tr;
  }

  function renderTable(contacts, flash) {
    patchChildren($('contacts').tBodies[0], contacts.map(rowOf), (r) => r.id, renderRow, flash);
    $('empty').hidden = contacts.length > 0;
  }

  function renderPager(page, flash) {
    const index = state.cursors.length - 1;
    const from = index * PAGE_SIZE + 1;
    const to = index * PAGE_SIZE + page.nodes.length;
    const total = numbers.format(page.totalCount);
    const noun = page.totalCount === 1 ? 'contact' : 'contacts';
    setText($('page-info'), page.nodes.length
      ? `Page ${index + 1} · ${numbers.format(from)}–${numbers.format(to)} of ${total} ${noun}`
      : `${total} ${noun}`, flash);
    $('prev').disabled = index === 0;
    $('next').disabled = !page.pageInfo.hasNextPage;
    state.endCursor = page.pageInfo.endCursor;
  }

  // ---------------------------------------------------------------------------------------
  // A contact's details: one query, drawn in the side panel

  function openPanel(id, opener) {
    state.panel = { id, opener: opener || document.activeElement };
    const panel = $('contact-panel');
    $('panel-title').textContent = 'Contact';
    $('panel-body').replaceChildren(el('p', 'note', 'Loading…'));
    panel.hidden = false;
    panel.focus();
    loadPanel(false);
  }

  function closePanel(restoreFocus = true) {
    const panel = $('contact-panel');
    if (panel.hidden) return;
    panel.hidden = true;
    state.seq.panel += 1;
    const { opener } = state.panel;
    state.panel = { id: null, opener: null };
    if (restoreFocus && opener && document.contains(opener)) opener.focus();
  }

  async function loadPanel(quiet) {
    const id = state.panel.id;
    if (!id) return;
    const seq = ++state.seq.panel;
    try {
      const data = await graphql(CONTACT_QUERY, { id });
      if (seq !== state.seq.panel) return;
      if (!data.contact) {
        $('panel-title').textContent = 'Contact not found';
        $('panel-body').replaceChildren(el('p', 'note', 'This contact is no longer in the cache (deleted in HighLevel?).'));
        return;
      }
      renderPanel(data.contact, quiet);
    } catch (error) {
      if (seq !== state.seq.panel) return;
      $('panel-body').replaceChildren(el('p', 'error', explain(error)));
    }
  }

  /** One section of the panel, created once per open contact, then patched. */
  function section(body, key, title) {
    let node = body.querySelector(`section[data-section="${key}"]`);
    if (!node) {
      node = el('section');
      node.dataset.section = key;
      node.setAttribute('aria-label', title);
      const heading = el('h3', null, title);
      heading.id = `panel-${key}-title`;
      node.append(heading);
      body.append(node);
    }
    return node;
  }

  function listIn(node, empty) {
    let list = node.querySelector('ul');
    if (!list) {
      list = el('ul');
      node.append(list, el('p', 'note', empty));
    }
    return list;
  }

  function showEmpty(list, items) {
    list.nextElementSibling.hidden = items.length > 0;
  }

  function dl(pairs) {
    const list = el('dl');
    for (const [term, value] of pairs) {
      list.append(el('dt', null, term), el('dd', value ? '' : 'muted', value || '—'));
    }
    return list;
  }

  function customValue(value) {
    if (value === null || value === undefined) return '';
    if (Array.isArray(value)) return value.join(', ');
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  function renderPanel(c, flash) {
    const body = $('panel-body');
    if (body.dataset.contact !== c.id) {
      body.replaceChildren();
      body.dataset.contact = c.id;
    } else {
      const loading = body.querySelector(':scope > p.note');
      if (loading) loading.remove();
    }
    setText($('panel-title'), c.name || '(no name)', flash);

    const details = section(body, 'details', 'Details');
    patchChildren(details.querySelector('div') || details.appendChild(el('div')), [{
      id: 'fields',
      email: c.email,
      phone: c.phone,
      company: c.companyName,
      source: c.source,
      assigned: c.assignedTo ? (c.assignedTo.name || c.assignedTo.email) : null,
      added: c.dateAdded,
      updated: c.dateUpdated,
      tags: c.tags,
    }], (x) => x.id, (x) => {
      const wrap = el('div');
      wrap.append(dl([
        ['Email', x.email], ['Phone', x.phone], ['Company', x.company], ['Source', x.source],
        ['Assigned to', x.assigned],
        ['Added', x.added ? dateTimeFormat.format(new Date(x.added)) : null],
        ['Updated', x.updated ? dateTimeFormat.format(new Date(x.updated)) : null],
      ]));
      const tags = el('p', 'tags');
      tags.setAttribute('aria-label', 'Tags');
      if (!x.tags.length) tags.append(el('span', 'muted', 'No tags'));
      for (const tag of x.tags) tags.append(el('span', 'tag', tag));
      wrap.append(tags);
      return wrap;
    }, flash);

    const custom = section(body, 'custom', 'Custom fields');
    const customList = listIn(custom, 'No custom field values.');
    patchChildren(customList, c.customFields, (f) => f.id, (f) => {
      const li = el('li');
      li.append(el('span', 'meta', `${f.name || f.fieldKey || f.id}: `), el('span', null, customValue(f.value)));
      return li;
    }, flash);
    showEmpty(customList, c.customFields);

    const tasks = section(body, 'tasks', 'Tasks');
    const open = c.tasks.filter((t) => !t.completed).length;
    tasks.querySelector('h3').textContent = `Tasks (${open} open, ${c.tasks.length - open} completed)`;
    const taskList = listIn(tasks, 'No tasks.');
    taskList.setAttribute('aria-label', 'Tasks');
    patchChildren(taskList, c.tasks, (t) => t.id, (t) => {
      const li = el('li', t.completed ? 'done' : '');
      const due = dueText(t.dueDate, t.completed);
      li.dataset.completed = String(t.completed);
      li.dataset.overdue = String(due.overdue);
      li.append(el('span', 'title', t.title || '(untitled)'));
      if (t.completed) li.append(el('span', 'pill', 'done'));
      const meta = el('div', 'meta');
      meta.append(el('span', due.overdue ? 'overdue' : '', due.text));
      if (t.assignedTo) meta.append(document.createTextNode(` · ${t.assignedTo.name || 'a user'}`));
      li.append(meta);
      if (t.body) li.append(el('div', 'meta', t.body));
      return li;
    }, flash);
    showEmpty(taskList, c.tasks);

    const convs = section(body, 'conversations', 'Conversations');
    const convList = listIn(convs, 'No conversations.');
    patchChildren(convList, c.conversations, (v) => v.id, (v) => {
      const li = el('li');
      li.append(el('span', 'title', v.lastMessageBody || '(no message)'));
      if (v.unreadCount) li.append(el('span', 'pill unread', `${numbers.format(v.unreadCount)} unread`));
      const kind = (v.lastMessageType || v.type || '').replace(/^TYPE_/, '').toLowerCase();
      const when = v.lastMessageDate ? dateTimeFormat.format(new Date(v.lastMessageDate)) : 'no date';
      li.append(el('div', 'meta', `${kind || 'message'} · ${when}`));
      return li;
    }, flash);
    showEmpty(convList, c.conversations);

    const opps = section(body, 'opportunities', 'Opportunities');
    const oppList = listIn(opps, 'No opportunities.');
    patchChildren(oppList, c.opportunities, (o) => o.id, (o) => {
      const li = el('li');
      li.append(el('span', 'title', o.name || '(unnamed)'));
      const status = (o.status || 'unknown').toLowerCase();
      li.append(el('span', `pill ${status}`, status));
      const where = [o.pipeline && o.pipeline.name, o.stage && o.stage.name].filter(Boolean).join(' › ');
      const value = o.monetaryValue !== null && o.monetaryValue !== undefined ? money.format(o.monetaryValue) : 'no value';
      li.append(el('div', 'meta', `${where || 'no pipeline'} · ${value}`));
      return li;
    }, flash);
    showEmpty(oppList, c.opportunities);
  }

  // ---------------------------------------------------------------------------------------
  // The pipeline: columns and a bar chart

  async function loadBoard(quiet) {
    const seq = ++state.seq.board;
    try {
      if (!state.pipeline) {
        const data = await graphql(PIPELINES_QUERY, { loc: state.location });
        if (seq !== state.seq.board) return;
        const pipelines = data.location ? data.location.pipelines : [];
        if (!data.location) throw new ApiError('not readable', 'NOT_FOUND');
        if (!pipelines.length) {
          state.loaded.pipeline = true;
          renderPipelines([], quiet);
          return;
        }
        state.pipeline = pipelines[0].id;
      }
      const data = await graphql(BOARD_QUERY, { loc: state.location, pipe: state.pipeline, first: BOARD_CARDS });
      if (seq !== state.seq.board) return;
      if (!data.location) throw new ApiError('not readable', 'NOT_FOUND');
      clearAlert();
      state.refused = null;
      state.loaded.pipeline = true;
      renderPipelines(data.location.pipelines, quiet, data.opportunities);
      renderBadge();
    } catch (error) {
      if (seq !== state.seq.board) return;
      failed(error);
    }
  }

  function renderPipelines(pipelines, flash, opportunities) {
    const select = $('pipeline');
    patchChildren(select, pipelines, (p) => p.id, (p) => {
      const option = el('option', null, p.name || p.id);
      option.value = p.id;
      return option;
    }, false, (p) => p.name || p.id);
    $('pipeline-empty').hidden = pipelines.length > 0;
    const pipeline = pipelines.find((p) => p.id === state.pipeline);
    if (!pipeline) {
      $('board').replaceChildren();
      $('chart-svg').setAttribute('hidden', '');
      $('pipeline-total').textContent = '';
      return;
    }
    select.value = pipeline.id;
    const s = pipeline.summary;
    setText($('pipeline-total'),
      `${numbers.format(s.count)} open ${s.count === 1 ? 'opportunity' : 'opportunities'} worth ${money.format(s.monetaryValue)}`,
      flash);
    const stages = [...pipeline.stages].sort((a, b) => a.position - b.position);
    renderChart(pipeline, stages, flash);
    const cards = new Map(stages.map((st) => [st.id, []]));
    for (const o of (opportunities ? opportunities.nodes : [])) {
      const list = o.stage && cards.get(o.stage.id);
      if (list && list.length < CARDS_PER_COLUMN) list.push(o);
    }
    const columns = stages.map((st) => ({
      id: st.id,
      name: st.name || st.id,
      count: st.summary.count,
      value: st.summary.monetaryValue,
      cards: cards.get(st.id).map((o) => ({
        id: o.id, name: o.name, value: o.monetaryValue, contact: o.contact,
      })),
    }));
    patchChildren($('board'), columns, (col) => col.id, renderColumn, flash);
  }

  function renderColumn(col) {
    const column = el('section', 'column');
    column.dataset.stage = col.id;
    const titleId = `stage-${col.id}`;
    column.setAttribute('aria-labelledby', titleId);
    const title = el('h3', null, col.name);
    title.id = titleId;
    const figures = el('p', 'figures');
    const count = el('strong', null, numbers.format(col.count));
    count.dataset.count = String(col.count);
    const value = el('span', null, money.format(col.value));
    value.dataset.value = String(col.value);
    figures.append(count, document.createTextNode(` open · `), value);
    const list = el('ul');
    for (const card of col.cards) {
      const li = el('li', 'card-item');
      li.dataset.opportunity = card.id;
      li.append(el('span', 'value', card.value !== null && card.value !== undefined ? money.format(card.value) : '—'));
      li.append(el('div', null, card.name || '(unnamed)'));
      li.append(openButton(card.contact, 'no contact'));
      list.append(li);
    }
    column.append(title, figures, list);
    if (col.count > col.cards.length) {
      column.append(el('p', 'more', `+ ${numbers.format(col.count - col.cards.length)} more`));
    }
    return column;
  }

  /** An SVG element, in the namespace of the chart's `<svg>` (which the HTML parser gave it). */
  function svg(tag, attributes, text) {
    const node = document.createElementNS($('chart-svg').namespaceURI, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** Open value by stage, one bar per stage, drawn in SVG from the stages' summaries. */
  function renderChart(pipeline, stages, flash) {
    const slot = 120;
    const plot = 160;
    const top = 24;
    const width = Math.max(slot * stages.length, 240);
    const height = top + plot + 44;
    const max = Math.max(1, ...stages.map((st) => st.summary.monetaryValue));
    const root = $('chart-svg');
    // An SVG element has no `hidden` property: the attribute itself.
    root.toggleAttribute('hidden', stages.length === 0);
    root.setAttribute('viewBox', `0 0 ${width} ${height}`);
    const axis = root.querySelector('line.axis');
    for (const [name, value] of Object.entries({ x1: 0, x2: width, y1: top + plot, y2: top + plot, stroke: '#9ca3af' })) {
      axis.setAttribute(name, String(value));
    }
    const described = stages
      .map((st) => `${st.name || st.id}: ${money.format(st.summary.monetaryValue)} in ${numbers.format(st.summary.count)} open`)
      .join('; ');
    $('chart-title').textContent = `Open value by stage of ${pipeline.name || pipeline.id}: ${described}`;
    const bars = stages.map((st, i) => ({
      id: st.id,
      i,
      name: st.name || st.id,
      value: st.summary.monetaryValue,
      h: Math.round((st.summary.monetaryValue / max) * plot),
    }));
    patchChildren(root.querySelector('g.bars'), bars, (b) => b.id, (b) => {
      const g = svg('g');
      const x = b.i * slot + slot * 0.2;
      const w = slot * 0.6;
      g.append(
        svg('rect', { class: 'bar', x, y: top + plot - b.h, width: w, height: Math.max(b.h, 1), rx: 3 }),
        svg('text', { class: 'value-label', x: x + w / 2, y: top + plot - b.h - 6, 'text-anchor': 'middle' }, compact.format(b.value)),
        svg('text', { class: 'bar-label', x: x + w / 2, y: top + plot + 18, 'text-anchor': 'middle' },
          b.name.length > 16 ? `${b.name.slice(0, 15)}…` : b.name),
      );
      return g;
    }, flash);
  }

  // ---------------------------------------------------------------------------------------
  // What is due

  async function loadDue(quiet) {
    const seq = ++state.seq.due;
    const variables = {
      loc: state.location,
      today: midnight(0).toISOString(),
      tomorrow: midnight(1).toISOString(),
      weekEnd: midnight(8).toISOString(),
      first: DUE_PAGE,
    };
    try {
      const data = await graphql(DUE_QUERY, variables);
      if (seq !== state.seq.due) return;
      clearAlert();
      state.refused = null;
      state.loaded.due = true;
      for (const [bucket, id] of [['overdue', 'due-overdue'], ['today', 'due-today'], ['week', 'due-week']]) {
        renderDue($(id), data[bucket], quiet);
      }
      renderBadge();
    } catch (error) {
      if (seq !== state.seq.due) return;
      failed(error);
    }
  }

  function renderDue(sectionNode, page, flash) {
    const count = sectionNode.querySelector('[data-count]');
    count.dataset.total = String(page.totalCount);
    setText(count, `(${numbers.format(page.totalCount)})`, flash);
    const list = sectionNode.querySelector('ul');
    patchChildren(list, page.nodes, (t) => t.id, (t) => {
      const li = el('li');
      li.append(el('div', 'title', t.title || '(untitled)'));
      const meta = el('div', 'when');
      const due = dueText(t.dueDate, false);
      meta.append(document.createTextNode(`${due.text} · `), openButton(t.contact, 'no contact'));
      if (t.assignedTo) meta.append(document.createTextNode(` · ${t.assignedTo.name || 'a user'}`));
      li.append(meta);
      return li;
    }, flash);
    const more = page.totalCount - page.nodes.length;
    const empty = sectionNode.querySelector('[data-empty]');
    empty.hidden = page.totalCount > 0;
    let moreNote = sectionNode.querySelector('.more');
    if (more > 0) {
      if (!moreNote) {
        moreNote = el('p', 'note more');
        sectionNode.append(moreNote);
      }
      moreNote.textContent = `+ ${numbers.format(more)} more`;
    } else if (moreNote) {
      moreNote.remove();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Live changes: re-read what a change can touch, redraw what differs

  const pendingChanges = { kinds: new Set(), ids: new Set(), timer: null };

  function onChange(event) {
    pendingChanges.kinds.add(event.kind);
    for (const id of event.ids) pendingChanges.ids.add(id);
    clearTimeout(pendingChanges.timer);
    pendingChanges.timer = setTimeout(applyChanges, CHANGE_DEBOUNCE_MS);
  }

  function applyChanges() {
    const kinds = pendingChanges.kinds;
    pendingChanges.kinds = new Set();
    pendingChanges.ids = new Set();
    const touches = (...names) => names.some((k) => kinds.has(k));
    if (state.loaded.contacts && touches('CONTACT', 'TASK', 'CONVERSATION', 'OPPORTUNITY', 'USER')) {
      loadContacts(true);
    }
    if (state.loaded.pipeline && touches('OPPORTUNITY', 'PIPELINE', 'CONTACT')) loadBoard(true);
    if (state.loaded.due && touches('TASK', 'CONTACT', 'USER')) loadDue(true);
    if (state.panel.id && touches('CONTACT', 'TASK', 'CONVERSATION', 'OPPORTUNITY', 'PIPELINE', 'USER', 'CUSTOM_FIELD')) {
      loadPanel(true);
    }
  }

  // ---------------------------------------------------------------------------------------
  // The sync badge

  function setFreshness(freshness) {
    if (!freshness) return;
    state.freshness = freshness;
    state.freshnessAt = Date.now();
  }

  function ago(seconds) {
    if (seconds < 45) return 'just now';
    if (seconds < 90) return '1 min ago';
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 5400) return '1 hour ago';
    if (seconds < 86400) return `${Math.round(seconds / 3600)} hours ago`;
    const days = Math.round(seconds / 86400);
    return days === 1 ? '1 day ago' : `${days} days ago`;
  }

  function syncedAgo() {
    const f = state.freshness;
    if (!f || !f.syncedAt) return null;
    let age = f.ageSeconds;
    if (age === null || age === undefined) {
      age = Math.max(0, (state.freshnessAt - Date.parse(f.syncedAt)) / 1000);
    }
    return ago(age + (Date.now() - state.freshnessAt) / 1000);
  }

  /** "contacts 1,000/10,000 · tasks 200 · 3/7 stages done": the two busiest running stages. */
  function progress(job) {
    if (job.state === 'QUEUED' || !job.stages.length) return 'starting';
    const done = job.stages.filter((s) => s.state === 'SUCCEEDED').length;
    const busiest = job.stages
      .filter((s) => s.state === 'RUNNING' && s.fetched > 0)
      .sort((a, b) => (b.total ?? b.fetched) - (a.total ?? a.fetched))
      .slice(0, 2)
      .map((s) => (s.total !== null && s.total !== undefined
        ? `${s.name} ${numbers.format(s.fetched)}/${numbers.format(s.total)}`
        : `${s.name} ${numbers.format(s.fetched)}`));
    return [...busiest, `${done}/${job.stages.length} stages done`].join(' · ');
  }

  /** How far a job is, 0 to 100: each stage counts equally, a running one by fetched/total. */
  function percent(job) {
    if (!job.stages.length) return 0;
    const share = job.stages.map((s) => {
      if (s.state === 'SUCCEEDED') return 1;
      if (s.state !== 'RUNNING') return 0;
      if (s.total) return Math.min(1, s.fetched / s.total);
      return s.fetched > 0 ? 0.5 : 0.1;
    });
    return Math.round((share.reduce((a, b) => a + b, 0) / job.stages.length) * 100);
  }

  /** A sync error in plain words: the engine's message, less its internal prefixes. */
  function plainSyncError(message) {
    if (!message) return 'no reason given';
    if (/credential|token|unauthori[sz]ed|401/i.test(message)) {
      return `HighLevel refused the gateway's credentials for this location (${message})`;
    }
    if (/429|rate.?limit/i.test(message)) return `HighLevel's rate limit was hit (${message})`;
    if (/timed? ?out|timeout|connect|unavailable|5\d\d/i.test(message)) {
      return `HighLevel could not be reached (${message})`;
    }
    return message;
  }

  function renderBadge() {
    const badge = $('sync-badge');
    const bar = $('sync-progress');
    const job = state.job;
    let view;
    let text;
    let running = false;
    if (state.refused) {
      view = 'failed';
      text = `Refused: ${state.refused}`;
    } else if (job && (job.state === 'QUEUED' || job.state === 'RUNNING')) {
      view = 'running';
      running = true;
      text = `Syncing: ${progress(job)}`;
    } else if (job && job.state === 'FAILED') {
      view = 'failed';
      const since = syncedAgo();
      text = `Last sync failed: ${plainSyncError(job.error)}${since ? `. Data from ${since}` : ''}`;
    } else if (state.freshness && state.freshness.syncedAt) {
      view = state.freshness.stale ? 'stale' : 'synced';
      text = `Synced ${syncedAgo()}${state.freshness.stale ? ' (stale)' : ''}`;
    } else if (state.freshness) {
      view = 'never';
      text = 'Never synced';
    } else {
      view = 'unknown';
      text = 'Sync status: loading…';
    }
    if (live.note) text += ` · ${live.note}`;
    badge.dataset.state = view;
    bar.hidden = !running;
    if (running) {
      const value = percent(job);
      bar.value = value;
      bar.setAttribute('aria-valuetext', `${value}% synced`);
    }
    if ($('sync-text').textContent !== text) $('sync-text').textContent = text;
  }

  function onSyncEvent(event, first) {
    const previous = state.job;
    state.job = event.job;
    setFreshness(event.freshness);
    renderBadge();
    const finishedNow = event.job.state === 'SUCCEEDED' && !first
      && !(previous && previous.id === event.job.id && previous.state === 'SUCCEEDED');
    if (finishedNow) {
      $('refresh-status').textContent = 'Sync finished; the views were read again.';
      for (const view of VIEWS) {
        if (state.loaded[view]) loadView(view, true);
      }
      if (state.panel.id) loadPanel(true);
    }
  }

  async function refresh() {
    const button = $('refresh');
    button.disabled = true;
    $('refresh-status').textContent = 'Asking for a sync…';
    try {
      const data = await graphql(REFRESH_MUTATION, { loc: state.location });
      const job = data.refreshLocation;
      $('refresh-status').textContent = job.joined
        ? 'Joined a sync that was already running.'
        : 'Sync started.';
      // The subscription may already have told us more than this answer (it is a snapshot).
      if (!state.job || state.job.id !== job.id) {
        state.job = job;
        renderBadge();
      }
    } catch (error) {
      $('refresh-status').textContent = '';
      failed(error);
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------
  // graphql-transport-ws, by hand: connection_init (with the key) -> connection_ack ->
  // subscribe (sync status and changes) -> next* -> complete; ping/pong; reconnect with
  // capped, jittered backoff.

  const live = {
    ws: null,
    acked: false,
    location: null,
    seq: 0,
    syncId: null,
    changesId: null,
    first: true,
    attempt: 0,
    timer: null,
    note: '',

    watch(locationId) {
      this.location = locationId;
      if (this.ws && this.ws.readyState === WebSocket.OPEN && this.acked) {
        for (const id of [this.syncId, this.changesId]) {
          if (id) this.send({ id, type: 'complete' });
        }
        this.subscribe();
      } else {
        this.connect();
      }
    },

    stop() {
      this.location = null;
      clearTimeout(this.timer);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close(1000, 'bye');
      }
    },

    setNote(note) {
      this.note = note;
      renderBadge();
    },

    send(message) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    },

    subscribe() {
      this.note = '';
      this.seq += 1;
      this.syncId = `sync-${this.seq}`;
      this.changesId = `changes-${this.seq}`;
      this.first = true;
      const variables = { loc: this.location };
      this.send({ id: this.syncId, type: 'subscribe', payload: { query: SYNC_SUBSCRIPTION, variables } });
      this.send({ id: this.changesId, type: 'subscribe', payload: { query: CHANGES_SUBSCRIPTION, variables } });
    },

    connect() {
      clearTimeout(this.timer);
      if (this.ws) {
        const old = this.ws;
        this.ws = null;
        old.close(1000, 'reconnecting');
      }
      if (!state.key || !this.location) return;
      const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
      const ws = new WebSocket(`${scheme}//${window.location.host}/graphql/ws`, 'graphql-transport-ws');
      this.ws = ws;
      this.acked = false;
      ws.onopen = () => {
        this.send({ type: 'connection_init', payload: { Authorization: `Bearer ${state.key}` } });
      };
      ws.onmessage = (message) => {
        if (this.ws !== ws) return;
        let msg;
        try {
          msg = JSON.parse(message.data);
        } catch (_) {
          return;
        }
        const current = msg.id === this.syncId || msg.id === this.changesId;
        switch (msg.type) {
          case 'connection_ack':
            this.acked = true;
            this.attempt = 0;
            this.setNote('');
            this.subscribe();
            break;
          case 'ping':
            this.send({ type: 'pong' });
            break;
          case 'next':
            if (!current) break;
            if (msg.payload.errors && msg.payload.errors.length) {
              this.failed(msg.payload.errors);
            } else if (msg.payload.data && msg.payload.data.syncStatus) {
              const first = this.first;
              this.first = false;
              onSyncEvent(msg.payload.data.syncStatus, first);
            } else if (msg.payload.data && msg.payload.data.changes) {
              onChange(msg.payload.data.changes);
            }
            break;
          case 'error':
            if (current) this.failed(msg.payload);
            break;
          case 'complete':
            break;
          default:
            break;
        }
      };
      ws.onclose = (event) => {
        if (this.ws !== ws) return; // closed on purpose
        this.ws = null;
        if (event.code === 4403) {
          // graphql-transport-ws's Forbidden: this key may not watch (or has too many
          // connections open); retrying with the same key would not help.
          this.setNote('live updates refused for this key (or too many open connections)');
        } else if (!this.acked && event.reason) {
          // The gateway refused connection_init (a bad key, or too many connections).
          this.retry(`live updates refused: ${event.reason}`);
        } else {
          this.retry('live updates lost');
        }
      };
    },

    failed(errors) {
      const first = errors[0] || {};
      const code = (first.extensions && first.extensions.code) || 'INTERNAL';
      const error = new ApiError(first.message || 'subscription failed', code);
      if (code === 'UNAUTHENTICATED' || refusal(code)) {
        if (refusal(code)) state.refused = `this key may not read ${locationName()}`;
        showAlert(error);
        this.setNote('no live updates');
      } else {
        this.retry(`live updates failed: ${explain(error)}`);
      }
    },

    retry(why) {
      clearTimeout(this.timer);
      const delay = Math.min(30000, 1000 * 2 ** this.attempt) * (0.75 + Math.random() / 4);
      this.attempt += 1;
      this.setNote(`${why}; retrying in ${Math.ceil(delay / 1000)} s`);
      this.timer = setTimeout(() => this.connect(), delay);
    },
  };

  // ---------------------------------------------------------------------------------------
  // Wiring

  let searchTimer = null;
  document.addEventListener('DOMContentLoaded', () => {
    $('key-form').addEventListener('submit', saveKey);
    $('key-cancel').addEventListener('click', () => {
      $('key-view').hidden = true;
      $('main-view').hidden = false;
      $('sync-badge').hidden = false;
      $('change-key').hidden = false;
      $('refresh').hidden = !state.location;
    });
    $('key-forget').addEventListener('click', forgetKey);
    $('change-key').addEventListener('click', () => showKeyView());
    $('alert-key').addEventListener('click', () => showKeyView());
    $('refresh').addEventListener('click', refresh);
    $('location').addEventListener('change', (e) => selectLocation(e.target.value));
    $('pipeline').addEventListener('change', (e) => {
      state.pipeline = e.target.value;
      loadBoard(false);
    });
    // Tabs: click, or the arrow keys, Home and End, as the ARIA tabs pattern has it.
    for (const view of VIEWS) $(`tab-${view}`).addEventListener('click', () => selectView(view, false));
    $('views').addEventListener('keydown', (e) => {
      const at = VIEWS.indexOf(state.view);
      const to = {
        ArrowRight: (at + 1) % VIEWS.length,
        ArrowLeft: (at + VIEWS.length - 1) % VIEWS.length,
        Home: 0,
        End: VIEWS.length - 1,
      }[e.key];
      if (to === undefined) return;
      e.preventDefault();
      selectView(VIEWS[to], true);
    });
    // Any contact name, in any view, opens the contact's panel.
    $('main-view').addEventListener('click', (e) => {
      const button = e.target.closest('button[data-contact]');
      if (button) openPanel(button.dataset.contact, button);
    });
    $('panel-close').addEventListener('click', () => closePanel());
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !$('contact-panel').hidden) closePanel();
    });
    $('search').addEventListener('input', (e) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        const query = e.target.value.trim();
        if (query === state.query) return;
        state.query = query;
        state.cursors = [null];
        loadContacts(false);
      }, SEARCH_DEBOUNCE_MS);
    });
    $('next').addEventListener('click', () => {
      if (!state.endCursor) return;
      state.cursors.push(state.endCursor);
      loadContacts(false);
    });
    $('prev').addEventListener('click', () => {
      if (state.cursors.length > 1) state.cursors.pop();
      loadContacts(false);
    });
    // Coming back online or to the tab: reconnect at once rather than at the next backoff.
    window.addEventListener('online', () => {
      if (live.location && !live.ws) live.connect();
    });
    // "synced 2 min ago" ages on its own.
    setInterval(renderBadge, 15000);
    boot();
  });
})();
