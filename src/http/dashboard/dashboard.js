// The dashboard page: a location's contacts from POST /graphql, and a live sync badge fed by
// the `syncStatus` subscription over graphql-transport-ws (spoken by hand below: no library, no
// build step, nothing fetched from elsewhere).
'use strict';

(() => {
  const PAGE_SIZE = 25;
  const SEARCH_DEBOUNCE_MS = 300;
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
      tasks { completed }
      conversations { unreadCount }
      opportunities { status monetaryValue }
    }
  }
}`;
  const LOCATIONS_QUERY = 'query DashboardLocations { locations { id name } }';
  const JOB_FIELDS = 'id state joined startedAt finishedAt error stages { name state fetched total }';
  const REFRESH_MUTATION = `mutation DashboardRefresh($loc: ID!) { refreshLocation(locationId: $loc) { ${JOB_FIELDS} } }`;
  const SYNC_SUBSCRIPTION = `subscription DashboardSync($loc: ID!) {
  syncStatus(locationId: $loc) { job { ${JOB_FIELDS} } freshness { syncedAt ageSeconds stale syncing } }
}`;

  const $ = (id) => document.getElementById(id);
  const numbers = new Intl.NumberFormat('en-US');
  const money = new Intl.NumberFormat('en-US', { minimumFractionDigits: 0, maximumFractionDigits: 2 });

  const state = {
    key: localStorage.getItem(KEY_STORAGE),
    locations: [],
    location: null,
    // The `after` cursor of every page from the first to the current one: Next pushes the
    // page's endCursor, Previous pops.
    cursors: [null],
    query: '',
    loadSeq: 0,
    job: null,
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

  /** What went wrong, in plain words. */
  function explain(error) {
    const locationName = () => {
      const l = state.locations.find((x) => x.id === state.location);
      if (l) return `“${l.name || l.id}”`;
      return state.location ? `the location “${state.location}”` : 'this location';
    };
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

  function showAlert(error) {
    $('alert-text').textContent = explain(error);
    const keyProblem = ['UNAUTHENTICATED', 'NOT_FOUND', 'FORBIDDEN'].includes(error.code);
    $('alert-key').hidden = !keyProblem;
    $('alert').hidden = false;
  }

  function clearAlert() {
    $('alert').hidden = true;
  }

  // ---------------------------------------------------------------------------------------
  // The API key

  function showKeyView(message) {
    $('key-view').hidden = false;
    $('main-view').hidden = true;
    $('sync-badge').hidden = true;
    $('refresh').hidden = true;
    $('change-key').hidden = true;
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
  // Locations and contacts

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
      showAlert(new ApiError(
        'This key can read no location the gateway has cached yet. Sync one first (ghl-gateway sync --location ID), or use a key for another location.',
        'BAD_USER_INPUT',
      ));
      renderTable([]);
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
    const saved = localStorage.getItem(LOCATION_STORAGE);
    const known = (id) => locations.some((l) => l.id === id);
    selectLocation(linked || (known(saved) ? saved : locations[0].id));
  }

  function selectLocation(id) {
    state.location = id;
    $('location').value = id;
    localStorage.setItem(LOCATION_STORAGE, id);
    state.cursors = [null];
    state.job = null;
    state.freshness = null;
    $('refresh-status').textContent = '';
    renderBadge();
    loadContacts();
    live.watch(id);
  }

  async function loadContacts() {
    const seq = ++state.loadSeq;
    const table = $('contacts');
    table.setAttribute('aria-busy', 'true');
    const variables = {
      loc: state.location,
      first: PAGE_SIZE,
      after: state.cursors[state.cursors.length - 1],
      filter: state.query ? { query: state.query } : null,
    };
    try {
      const data = await graphql(CONTACTS_QUERY, variables);
      if (seq !== state.loadSeq) return; // a newer load superseded this one
      clearAlert();
      const page = data.contacts;
      renderTable(page.nodes);
      renderPager(page);
      if (!state.job || !['QUEUED', 'RUNNING'].includes(state.job.state)) {
        setFreshness(page.freshness);
      }
      renderBadge();
    } catch (error) {
      if (seq !== state.loadSeq) return;
      if (error.code === 'UNAUTHENTICATED') {
        live.stop();
        showKeyView(explain(error));
        return;
      }
      showAlert(error);
    } finally {
      if (seq === state.loadSeq) table.removeAttribute('aria-busy');
    }
  }

  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function renderTable(contacts) {
    const rows = contacts.map((c) => {
      const tr = document.createElement('tr');
      tr.dataset.id = c.id;
      const openTasks = c.tasks.filter((t) => !t.completed).length;
      const unread = c.conversations.reduce((sum, v) => sum + (v.unreadCount || 0), 0);
      const openValue = c.opportunities
        .filter((o) => o.status === 'OPEN')
        .reduce((sum, o) => sum + (o.monetaryValue || 0), 0);
      const tags = document.createElement('td');
      for (const tag of c.tags) {
        const span = document.createElement('span');
        span.className = 'tag';
        span.textContent = tag;
        tags.append(span);
      }
      tr.append(
        cell(c.name || '(no name)', 'name'),
        cell(c.email || '—', c.email ? '' : 'muted'),
        cell(c.phone || '—', c.phone ? '' : 'muted'),
        tags,
        cell(numbers.format(openTasks), 'num'),
        cell(numbers.format(unread), 'num'),
        cell(openValue ? money.format(openValue) : '—', 'num'),
        cell(c.assignedTo ? (c.assignedTo.name || '(unnamed user)') : 'Unassigned', c.assignedTo ? '' : 'muted'),
      );
      return tr;
    });
    $('contacts').tBodies[0].replaceChildren(...rows);
    $('empty').hidden = contacts.length > 0;
  }

  function renderPager(page) {
    const index = state.cursors.length - 1;
    const from = index * PAGE_SIZE + 1;
    const to = index * PAGE_SIZE + page.nodes.length;
    const total = numbers.format(page.totalCount);
    const noun = page.totalCount === 1 ? 'contact' : 'contacts';
    $('page-info').textContent = page.nodes.length
      ? `Page ${index + 1} · ${numbers.format(from)}–${numbers.format(to)} of ${total} ${noun}`
      : `${total} ${noun}`;
    $('prev').disabled = index === 0;
    $('next').disabled = !page.pageInfo.hasNextPage;
    state.endCursor = page.pageInfo.endCursor;
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
    const job = state.job;
    let view;
    let text;
    if (job && (job.state === 'QUEUED' || job.state === 'RUNNING')) {
      view = 'running';
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
      $('refresh-status').textContent = 'Sync finished; contacts reloaded.';
      loadContacts();
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
      showAlert(error);
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------
  // graphql-transport-ws, by hand: connection_init (with the key) -> connection_ack ->
  // subscribe -> next* -> complete; ping/pong; reconnect with capped, jittered backoff.

  const live = {
    ws: null,
    acked: false,
    location: null,
    subscription: 0,
    first: true,
    attempt: 0,
    timer: null,
    note: '',

    watch(locationId) {
      this.location = locationId;
      if (this.ws && this.ws.readyState === WebSocket.OPEN && this.acked) {
        this.send({ id: String(this.subscription), type: 'complete' });
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
      this.subscription += 1;
      this.first = true;
      this.send({
        id: String(this.subscription),
        type: 'subscribe',
        payload: { query: SYNC_SUBSCRIPTION, variables: { loc: this.location } },
      });
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
        const current = msg.id === String(this.subscription);
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
      if (code === 'UNAUTHENTICATED' || code === 'NOT_FOUND' || code === 'FORBIDDEN') {
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
    $('search').addEventListener('input', (e) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        const query = e.target.value.trim();
        if (query === state.query) return;
        state.query = query;
        state.cursors = [null];
        loadContacts();
      }, SEARCH_DEBOUNCE_MS);
    });
    $('next').addEventListener('click', () => {
      if (!state.endCursor) return;
      state.cursors.push(state.endCursor);
      loadContacts();
    });
    $('prev').addEventListener('click', () => {
      if (state.cursors.length > 1) state.cursors.pop();
      loadContacts();
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
