// Radguard operator console: a single-page app over the JSON API under /api/v1/ (hash routes,
// live updates by server-sent events). No framework, no build step.
//
// Everything shown comes from the network and much of it from untrusted peers (AE titles,
// implementation versions, refusal reasons): it is only ever put into the page as text nodes or
// attribute values, never as HTML, so a hostile AE title cannot script the console (stored XSS).
'use strict';

(function () {
  const VIEWS = ['overview', 'peers', 'alerts', 'refusals', 'audit', 'integrity', 'vault', 'config'];
  const TITLES = {
    overview: 'Overview', peers: 'Peers', alerts: 'Alerts', refusals: 'Refusals',
    audit: 'Audit trail', integrity: 'Integrity', vault: 'Vault', config: 'Configuration',
  };
  const AUDIT_KINDS = [
    'association-requested', 'association-accepted', 'association-refused',
    'association-released', 'association-aborted', 'context-rejected', 'dimse-request',
    'dimse-refused', 'dimse-response', 'instance-stored', 'security-alert', 'transfer-begun',
    'instances-transferred', 'application-start', 'application-stopping', 'application-stop',
    'events-lost', 'audit-started', 'audit-stopped',
  ];
  const ENDED_KEPT = 20;
  // The server's series step (radguard-web model.rs SERIES_STEP_MS).
  const SERIES_STEP_MS = 5000;
  const SERIES_POINTS = 120;
  const LIST_KEPT = 500;

  const state = {
    me: null,
    view: null,
    assocs: new Map(), // id -> Assoc (running)
    ended: [], // recently ended associations, newest first
    totals: null,
    series: [],
    overviewMeta: null,
    alerts: null,
    refusals: null,
    events: null,
    liveRefusals: [], // refusals received by SSE, newest first (merged into every fetch)
    live: 'connecting',
    renderToken: 0,
  };

  // ------------------------------------------------------------------------------ DOM helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'testid') el.setAttribute('data-testid', v);
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else if (c instanceof Node) el.appendChild(c);
      else el.appendChild(document.createTextNode(String(c)));
    }
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const c of children) {
      if (c instanceof Node) el.appendChild(c);
      else if (c !== null && c !== undefined) el.appendChild(document.createTextNode(String(c)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  // Makes `old` look like `fresh` (a tree built by h() or s(), never inserted) while touching only
  // what differs: a changed text or attribute is set, a different element replaces the old one.
  // The live overview is redrawn this way so that a second's progress costs the browser a few
  // changed cells to lay out and paint, not a rebuilt table (the browser may share the gateway's
  // cores). Listeners are not carried over: only for views without any. Returns the node now in
  // the page.
  function morph(old, fresh) {
    if (old.nodeType !== fresh.nodeType || old.nodeName !== fresh.nodeName) {
      old.replaceWith(fresh);
      return fresh;
    }
    if (old.nodeType !== Node.ELEMENT_NODE) {
      if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
      return old;
    }
    for (const a of [...old.attributes]) if (!fresh.hasAttribute(a.name)) old.removeAttribute(a.name);
    for (const a of fresh.attributes) if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
    morphChildren(old, fresh);
    return old;
  }

  // morph() of the children only, by position: `old` keeps its own attributes.
  function morphChildren(old, fresh) {
    const kids = [...fresh.childNodes];
    kids.forEach((f, i) => {
      const o = old.childNodes[i];
      if (o) morph(o, f);
      else old.appendChild(f);
    });
    while (old.childNodes.length > kids.length) old.removeChild(old.lastChild);
  }

  // Makes `parent`'s children the elements `fresh`, in that order: a child with the same
  // data-id as a fresh one is kept and morphed (a row that moved is moved, not rebuilt); the rest
  // are inserted or removed.
  function syncChildren(parent, fresh) {
    const keyed = new Map();
    for (const c of [...parent.children]) {
      if (c.dataset.id) keyed.set(c.dataset.id, c);
      else c.remove();
    }
    let cursor = parent.firstElementChild;
    for (const f of fresh) {
      const old = f.dataset.id ? keyed.get(f.dataset.id) : undefined;
      let node = f;
      if (old) {
        keyed.delete(f.dataset.id);
        node = old === f ? old : morph(old, f);
      }
      if (node === cursor) cursor = cursor.nextElementSibling;
      else parent.insertBefore(node, cursor);
    }
    for (const rest of keyed.values()) rest.remove();
  }

  const main = () => document.getElementById('main');

  // ------------------------------------------------------------------------------- formatting

  function pad(n, w) {
    return String(n).padStart(w || 2, '0');
  }

  function fmtTime(ms) {
    if (ms === null || ms === undefined || ms === '') return '—';
    const d = new Date(Number(ms));
    if (Number.isNaN(d.getTime())) return String(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtClock(ms) {
    const d = new Date(Number(ms));
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function fmtAgo(ms) {
    if (ms === null || ms === undefined) return '—';
    return fmtSecs(Math.max(0, Math.round((Date.now() - Number(ms)) / 1000)));
  }

  function fmtSecs(secs) {
    if (secs < 60) return `${secs} s`;
    if (secs < 3600) return `${Math.floor(secs / 60)} min ${secs % 60} s`;
    if (secs < 86400) return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
    return `${Math.floor(secs / 86400)} d ${Math.floor((secs % 86400) / 3600)} h`;
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return '—';
    n = Number(n);
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
  }

  function fmtRate(bps) {
    if (bps === null || bps === undefined) return '—';
    return `${fmtBytes(bps)}/s`;
  }

  const NUM = new Intl.NumberFormat('en');
  function fmtNum(n) {
    if (n === null || n === undefined) return '—';
    return NUM.format(Number(n));
  }

  function text(v) {
    if (v === null || v === undefined || v === '') return '—';
    if (Array.isArray(v)) return v.length ? v.map(text).join(', ') : '—';
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  // A badge always says its state in words; the colour only repeats it.
  function badge(kind, label, testid) {
    return h('span', { class: `badge badge-${kind}`, testid }, label);
  }

  // A JSON value as a definition list (nested objects indented), for evidence and checkpoints.
  function describe(v) {
    if (v === null || v === undefined) return h('span', { class: 'muted' }, '—');
    if (typeof v !== 'object') return h('span', null, String(v));
    if (Array.isArray(v)) {
      if (v.every((x) => x === null || typeof x !== 'object')) return h('span', null, text(v));
      return h('ol', { class: 'kv-list' }, v.map((x) => h('li', null, describe(x))));
    }
    const dl = h('dl', { class: 'kv' });
    for (const [k, x] of Object.entries(v)) {
      dl.appendChild(h('dt', null, k.replace(/_/g, ' ')));
      // Unix milliseconds under a time-like key read as a local time.
      const when = typeof x === 'number' && x > 1e12 && /(time|_ms|^at$|_at$|signed|since|until|seen)/.test(k);
      dl.appendChild(h('dd', null, when ? h('span', { title: String(x) }, fmtTime(x)) : describe(x)));
    }
    return dl;
  }

  // -------------------------------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = { Accept: 'application/json' };
    const init = { method: opts.method || 'GET', headers, credentials: 'same-origin', cache: 'no-store' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    // Every state change carries the session's CSRF token (the server also checks Origin).
    if (init.method !== 'GET' && state.me && state.me.csrf) headers['X-CSRF-Token'] = state.me.csrf;
    const res = await fetch(path, init);
    if (res.status === 401 && !opts.allow401) {
      showLogin('Your session has ended. Sign in again.');
      throw new ApiError(401, 'not signed in');
    }
    if (!res.ok) {
      let msg = `${res.status} ${res.statusText}`;
      try {
        const j = await res.json();
        if (j && j.error) msg = `${res.status}: ${j.error}`;
      } catch (e) { /* not JSON */ }
      throw new ApiError(res.status, msg);
    }
    if (res.status === 204) return null;
    const type = res.headers.get('Content-Type') || '';
    return type.includes('json') ? res.json() : res.text();
  }

  const isOperator = () => !!(state.me && state.me.role === 'operator');

  // ---------------------------------------------------------------------------------- session

  async function boot() {
    document.getElementById('logout').addEventListener('click', logout);
    window.addEventListener('hashchange', route);
    let res;
    try {
      res = await fetch('/api/v1/me', { credentials: 'same-origin', cache: 'no-store' });
    } catch (e) {
      renderFatal(`The gateway's admin listener cannot be reached (${e.message}).`);
      return;
    }
    if (res.status === 401) {
      showLogin();
      return;
    }
    if (!res.ok) {
      renderFatal(`GET /api/v1/me answered ${res.status}.`);
      return;
    }
    startSession(await res.json());
  }

  function startSession(me) {
    state.me = me;
    document.body.classList.add('signed-in');
    document.getElementById('nav').hidden = false;
    document.getElementById('session').hidden = false;
    document.getElementById('user').textContent = me.user || '';
    const role = document.getElementById('role');
    role.textContent = me.role === 'operator' ? 'operator' : 'viewer (read only)';
    role.className = `role role-${me.role}`;
    document.getElementById('logout').hidden = me.user === 'local';
    connectEvents();
    loadAlertCount();
    if (!location.hash || !VIEWS.includes(location.hash.replace(/^#\/?/, ''))) {
      location.replace('#/overview');
    }
    route();
  }

  function showLogin(message) {
    if (state.events) {
      state.events.close();
      state.events = null;
    }
    state.me = null;
    state.view = 'login';
    document.body.classList.remove('signed-in');
    document.getElementById('nav').hidden = true;
    document.getElementById('session').hidden = true;
    const m = main();
    clear(m);
    const err = h('p', { class: 'error', testid: 'login-error', role: 'alert', hidden: !message }, message || '');
    const input = h('input', {
      type: 'password', id: 'token', name: 'token', autocomplete: 'current-password',
      required: true, spellcheck: 'false', testid: 'login-token',
    });
    const form = h('form', { class: 'login', testid: 'login-form' },
      h('h1', null, 'Sign in'),
      h('p', { class: 'muted' }, 'Paste the API token the gateway\'s administrator gave you.'),
      h('label', { for: 'token' }, 'Token'),
      input,
      h('button', { type: 'submit', class: 'primary', testid: 'login-submit' }, 'Sign in'),
      err);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.hidden = true;
      try {
        const res = await fetch('/api/v1/login', {
          method: 'POST', credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ token: input.value }),
        });
        if (!res.ok) {
          let msg = res.status === 401 ? 'That token was not accepted.' : `Sign-in failed (${res.status}).`;
          try {
            const j = await res.json();
            if (j && j.error && res.status !== 401) msg = j.error;
          } catch (e) { /* not JSON */ }
          throw new Error(msg);
        }
        input.value = '';
        const me = await api('/api/v1/me');
        startSession(me);
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
      }
    });
    m.appendChild(form);
    input.focus();
  }

  async function logout() {
    try {
      await api('/api/v1/logout', { method: 'POST' });
    } catch (e) { /* signed out anyway */ }
    showLogin('Signed out.');
  }

  function renderFatal(msg) {
    const m = main();
    clear(m);
    m.appendChild(h('p', { class: 'error', role: 'alert', testid: 'fatal' }, msg));
  }

  // ------------------------------------------------------------------------------ live events

  function setLive(st) {
    state.live = st;
    const el = document.getElementById('live');
    el.dataset.state = st;
    el.textContent = { open: 'live', connecting: 'connecting…', down: 'disconnected' }[st] || st;
    el.title = st === 'open' ? 'Receiving live updates' : 'Live updates interrupted; retrying';
  }

  function connectEvents() {
    if (state.events) state.events.close();
    setLive('connecting');
    // Same origin: the session cookie goes with the request.
    const es = new EventSource('/api/v1/events');
    state.events = es;
    let interrupted = false;
    es.addEventListener('open', () => {
      setLive('open');
      if (interrupted) resyncOverview();
      interrupted = false;
    });
    es.addEventListener('error', () => {
      interrupted = true;
      setLive('down');
      // EventSource retries on its own; find out whether the session is gone.
      fetch('/api/v1/me', { credentials: 'same-origin', cache: 'no-store' }).then((r) => {
        if (r.status === 401 && state.me) showLogin('Your session has ended. Sign in again.');
      }).catch(() => {});
    });
    const on = (name, fn) => es.addEventListener(name, (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      fn(data);
    });
    on('association', (a) => {
      state.assocs.set(String(a.id), a);
      if (state.view === 'overview') paintSoon('tables');
    });
    on('association-ended', (d) => {
      const key = String(d.id);
      const a = state.assocs.get(key);
      state.assocs.delete(key);
      if (a) {
        state.ended.unshift(Object.assign({}, a, { ended: Date.now() }));
        state.ended.length = Math.min(state.ended.length, ENDED_KEPT);
      }
      if (state.view === 'overview') paintSoon('tables');
    });
    on('refusal', (r) => {
      state.liveRefusals.unshift(r);
      state.liveRefusals.length = Math.min(state.liveRefusals.length, LIST_KEPT);
      if (state.refusals) {
        state.refusals.unshift(r);
        state.refusals.length = Math.min(state.refusals.length, LIST_KEPT);
      }
      if (state.view === 'refusals') renderRefusalRows();
    });
    on('alert', (a) => {
      if (state.alerts) {
        const i = state.alerts.findIndex((x) => String(x.id) === String(a.id));
        if (i >= 0) state.alerts[i] = a;
        else state.alerts.unshift(a);
      } else {
        state.alerts = [a];
      }
      updateAlertCount();
      if (state.view === 'alerts') renderAlertRows();
    });
    // The totals each second they change, a closed point of the series every 5 s: the overview
    // never polls while it is open.
    on('totals', (t) => {
      state.totals = t;
      if (state.view === 'overview') paintSoon('totals');
    });
    on('point', (p) => {
      const last = state.series[state.series.length - 1];
      if (last && Number(last.t) >= Number(p.t)) return; // already in a fetched series
      state.series.push(p);
      while (state.series.length > SERIES_POINTS) state.series.shift();
      if (state.view === 'overview') paintSoon('chart');
    });
  }

  // Everything the live updates change on the overview is drawn together, at most once a second,
  // however many updates arrive (each running association reports once a second, the totals
  // once a second): one layout and one paint of the few cells that changed. The page must cost
  // the gateway's host next to nothing while it watches (the browser may share its cores).
  const dirty = new Set();
  let paintTimer = null;
  let paintedAt = 0;
  function paintSoon(part) {
    dirty.add(part);
    if (paintTimer) return;
    paintTimer = setTimeout(() => {
      paintTimer = null;
      paintedAt = Date.now();
      if (state.view !== 'overview') {
        dirty.clear();
        return;
      }
      if (dirty.has('tables')) renderAssocTables();
      else if (dirty.has('totals')) renderTotals();
      if (dirty.has('chart')) renderChart();
      dirty.clear();
    }, Math.max(0, paintedAt + 1000 - Date.now()));
  }

  // After the event stream was interrupted, what it missed: the overview again from the server.
  function resyncOverview() {
    api('/api/v1/overview').then((o) => {
      state.totals = o.totals;
      state.series = o.series || [];
      state.assocs = new Map((o.associations || []).map((a) => [String(a.id), a]));
      if (state.view === 'overview') {
        paintSoon('tables');
        paintSoon('chart');
      }
    }).catch(() => {});
  }

  async function loadAlertCount() {
    try {
      state.alerts = await api('/api/v1/alerts');
      updateAlertCount();
    } catch (e) { /* shown on the alerts view */ }
  }

  function updateAlertCount() {
    const el = document.getElementById('nav-alert-count');
    const open = (state.alerts || []).filter((a) => !a.acknowledged).length;
    el.hidden = open === 0;
    el.textContent = String(open);
    el.title = `${open} unacknowledged alert${open === 1 ? '' : 's'}`;
  }

  // ----------------------------------------------------------------------------------- router

  function route() {
    if (!state.me) return;
    let view = location.hash.replace(/^#\/?/, '').split('?')[0];
    if (!VIEWS.includes(view)) view = 'overview';
    state.view = view;
    state.renderToken += 1;
    document.title = `${TITLES[view]} · Radguard`;
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const m = main();
    clear(m);
    const section = h('section', { class: `view view-${view}`, testid: `view-${view}` });
    m.appendChild(section);
    RENDER[view](section, state.renderToken).catch((e) => {
      if (e instanceof ApiError && e.status === 401) return;
      section.appendChild(h('p', { class: 'error', role: 'alert', testid: 'view-error' }, `Could not load: ${e.message}`));
    });
  }

  // Is the view that started an asynchronous render still the one shown?
  const current = (token) => token === state.renderToken;

  function heading(title, sub) {
    return h('header', { class: 'view-head' }, h('h1', null, title), sub ? h('p', { class: 'muted' }, sub) : null);
  }

  function table(testid, columns, bodyTestid) {
    const tbody = h('tbody', { testid: bodyTestid });
    const t = h('table', { class: 'grid', testid },
      h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.cls }, c.label)))),
      tbody);
    return { table: t, tbody };
  }

  function emptyRow(tbody, cols, msg, testid) {
    tbody.appendChild(emptyRowEl(cols, msg, testid));
  }

  function emptyRowEl(cols, msg, testid) {
    return h('tr', { class: 'empty', testid, 'data-id': testid }, h('td', { colspan: cols }, msg));
  }

  // --------------------------------------------------------------------------------- overview

  const ASSOC_COLS = [
    { label: 'Peer' }, { label: 'AE titles' }, { label: 'Route' }, { label: 'Operation' },
    { label: 'Requests', cls: 'num' }, { label: 'From client', cls: 'num' },
    { label: 'From upstream', cls: 'num' }, { label: 'Rate', cls: 'num' }, { label: 'Duration', cls: 'num' },
  ];

  async function renderOverview(sec, token) {
    const o = await api('/api/v1/overview');
    if (!current(token)) return;
    state.overviewMeta = { version: o.version, started: o.started };
    state.totals = o.totals;
    state.series = o.series || [];
    state.assocs = new Map((o.associations || []).map((a) => [String(a.id), a]));
    sec.appendChild(heading('Overview', null));
    sec.appendChild(h('p', { class: 'muted meta', testid: 'gateway-meta' },
      `Radguard ${o.version || ''} · running since ${fmtTime(o.started)} (${fmtAgo(o.started)})`));
    sec.appendChild(h('div', { class: 'cards', id: 'totals', testid: 'totals' }));
    sec.appendChild(h('div', { class: 'panel chart-panel' },
      h('h2', null, 'Throughput and refusals, last 10 minutes'),
      h('div', { id: 'chart', class: 'chart', testid: 'chart' })));
    const running = table('assoc-table', ASSOC_COLS, 'assoc-rows');
    running.tbody.id = 'assoc-rows';
    sec.appendChild(h('div', { class: 'panel assoc-live' },
      h('h2', null, 'Associations now ', h('span', { class: 'count-pill', id: 'assoc-count', testid: 'assoc-count' }, '0')),
      h('div', { class: 'scroll' }, running.table)));
    const ended = table('ended-table', ASSOC_COLS, 'ended-rows');
    ended.tbody.id = 'ended-rows';
    sec.appendChild(h('div', { class: 'panel' },
      h('h2', null, 'Recently ended (since this page opened; values as last reported while running)'),
      h('div', { class: 'scroll' }, ended.table)));
    renderTotals();
    renderChart();
    renderAssocTables();
  }

  function renderTotals() {
    const el = document.getElementById('totals');
    if (!el || !state.totals) return;
    const t = state.totals;
    const cards = h('div');
    const card = (testid, label, value, display, tone) => h('div', { class: `card${tone ? ` card-${tone}` : ''}` },
      h('div', { class: 'card-label' }, label),
      h('div', { class: 'card-value', testid, 'data-value': value === undefined ? '' : value }, display));
    cards.appendChild(card('total-running', 'Running now', state.assocs.size, fmtNum(state.assocs.size)));
    cards.appendChild(card('total-associations', 'Associations', t.associations, fmtNum(t.associations)));
    cards.appendChild(card('total-refused-associations', 'Refused associations', t.refused_associations,
      fmtNum(t.refused_associations), t.refused_associations > 0 ? 'warn' : null));
    cards.appendChild(card('total-refused-requests', 'Refused requests', t.refused_requests,
      fmtNum(t.refused_requests), t.refused_requests > 0 ? 'warn' : null));
    cards.appendChild(card('total-bytes-from-clients', 'Bytes from clients', t.bytes_from_clients, fmtBytes(t.bytes_from_clients)));
    cards.appendChild(card('total-bytes-from-upstreams', 'Bytes from upstreams', t.bytes_from_upstreams, fmtBytes(t.bytes_from_upstreams)));
    cards.appendChild(card('total-alerts', 'Alerts', t.alerts, fmtNum(t.alerts), t.alerts > 0 ? 'alert' : null));
    syncChildren(el, [...cards.children].map((c, i) => {
      c.dataset.id = String(i);
      return c;
    }));
  }

  // Bytes per 5 s as a line (left axis), refusals per 5 s as bars (right axis).
  function renderChart() {
    const el = document.getElementById('chart');
    if (!el) return;
    const holder = h('div');
    const pts = state.series || [];
    const W = 900, H = 180, L = 64, R = 40, T = 12, B = 26;
    const newest = pts.length ? Number(pts[pts.length - 1].t) : 0;
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg', 'data-newest': newest });
    svg.appendChild(s('title', null, 'Bytes relayed and refusals per 5 seconds'));
    if (pts.length === 0) {
      svg.appendChild(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No data yet'));
      holder.appendChild(svg);
      morphChildren(el, holder);
      return;
    }
    const maxB = Math.max(1024, ...pts.map((p) => Number(p.bytes) || 0));
    const maxR = Math.max(1, ...pts.map((p) => Number(p.refusals) || 0));
    // Always the 10 minutes up to the newest point (120 points of 5 s), however long the gateway
    // has run: anchored to the data, not the clock, so the same series draws the same chart.
    const t1 = Number(pts[pts.length - 1].t) + SERIES_STEP_MS;
    const t0 = t1 - 600000;
    const x = (t) => L + ((Number(t) - t0) / (t1 - t0)) * (W - L - R);
    const yB = (b) => T + (1 - (Number(b) || 0) / maxB) * (H - T - B);
    const yR = (r) => T + (1 - (Number(r) || 0) / maxR) * (H - T - B);
    for (let i = 0; i <= 4; i += 1) {
      const y = T + (i / 4) * (H - T - B);
      svg.appendChild(s('line', { x1: L, x2: W - R, y1: y, y2: y, class: 'chart-grid' }));
      svg.appendChild(s('text', { x: L - 6, y: y + 4, 'text-anchor': 'end', class: 'chart-axis' }, fmtBytes(Math.round(maxB * (1 - i / 4)))));
    }
    svg.appendChild(s('text', { x: W - R + 6, y: T + 4, class: 'chart-axis chart-axis-refusals' }, String(maxR)));
    svg.appendChild(s('text', { x: W - R + 6, y: H - B + 4, class: 'chart-axis chart-axis-refusals' }, '0'));
    const barW = Math.max(2, ((W - L - R) / 120) * 0.6);
    for (const p of pts) {
      if (!(Number(p.refusals) > 0) || Number(p.t) < t0) continue;
      const y = yR(p.refusals);
      svg.appendChild(s('rect', { x: x(p.t) - barW / 2, y, width: barW, height: H - B - y, class: 'chart-refusals' },
        s('title', null, `${fmtClock(p.t)}: ${p.refusals} refused`)));
    }
    const shown = pts.filter((p) => Number(p.t) >= t0);
    const line = shown.map((p) => `${x(p.t).toFixed(1)},${yB(p.bytes).toFixed(1)}`).join(' ');
    const first = shown.length ? x(shown[0].t) : x(t0);
    const last = shown.length ? x(shown[shown.length - 1].t) : x(t1);
    svg.appendChild(s('polyline', { points: `${first},${H - B} ${line} ${last},${H - B}`, class: 'chart-area' }));
    svg.appendChild(s('polyline', { points: line, class: 'chart-bytes' }));
    const ticks = 5;
    for (let i = 0; i <= ticks; i += 1) {
      const t = t0 + ((t1 - t0) * i) / ticks;
      svg.appendChild(s('text', { x: x(t), y: H - 6, 'text-anchor': 'middle', class: 'chart-axis' }, fmtClock(t)));
    }
    holder.appendChild(svg);
    holder.appendChild(h('p', { class: 'legend' },
      h('span', { class: 'legend-bytes' }, 'bytes relayed / 5 s'), ' ',
      h('span', { class: 'legend-refusals' }, 'refusals / 5 s')));
    morphChildren(el, holder);
  }


  function assocRow(a, ended) {
    const bytes = (Number(a.bytes_from_client) || 0) + (Number(a.bytes_from_upstream) || 0);
    return h('tr', { testid: ended ? 'ended-row' : 'assoc-row', 'data-id': a.id, 'data-bytes': bytes },
      h('td', null, h('div', { class: 'strong' }, text(a.peer)), h('div', { class: 'sub mono' }, text(a.source))),
      h('td', { class: 'mono' }, `${text(a.calling_ae)} → ${text(a.called_ae)}`),
      h('td', null, text(a.route)),
      h('td', { class: 'mono', testid: 'assoc-operation' }, text(a.operation)),
      h('td', { class: 'num', testid: 'assoc-requests' }, fmtNum(a.requests)),
      h('td', { class: 'num', testid: 'assoc-bytes-from-client', 'data-value': a.bytes_from_client }, fmtBytes(a.bytes_from_client)),
      h('td', { class: 'num', testid: 'assoc-bytes-from-upstream', 'data-value': a.bytes_from_upstream }, fmtBytes(a.bytes_from_upstream)),
      h('td', { class: 'num', testid: 'assoc-rate', 'data-value': a.rate_bps }, ended ? 'ended' : fmtRate(a.rate_bps)),
      // An ended row does not change: how long it ran, as seen from this page.
      h('td', { class: 'num' }, ended
        ? fmtSecs(Math.max(0, Math.round((Number(a.ended) - Number(a.started)) / 1000)))
        : fmtAgo(a.started)));
  }

  // An ended row never changes: built once.
  const endedRows = new WeakMap();
  function endedRow(a) {
    let row = endedRows.get(a);
    if (!row) {
      row = assocRow(a, true);
      endedRows.set(a, row);
    }
    return row;
  }

  function renderAssocTables() {
    const run = document.getElementById('assoc-rows');
    if (!run) return;
    const list = [...state.assocs.values()].sort((a, b) => Number(a.started) - Number(b.started));
    syncChildren(run, list.length === 0
      ? [emptyRowEl(ASSOC_COLS.length, 'No association is running.', 'assoc-empty')]
      : list.map((a) => assocRow(a, false)));
    const count = document.getElementById('assoc-count');
    if (count && count.textContent !== String(list.length)) count.textContent = String(list.length);
    const end = document.getElementById('ended-rows');
    if (end) {
      syncChildren(end, state.ended.length === 0
        ? [emptyRowEl(ASSOC_COLS.length, 'None yet.', 'ended-empty')]
        : state.ended.map(endedRow));
    }
    renderTotals();
  }

  // ------------------------------------------------------------------------------------ peers

  async function renderPeers(sec, token) {
    const [peers, blocks] = await Promise.all([api('/api/v1/peers'), api('/api/v1/blocks')]);
    if (!current(token)) return;
    sec.appendChild(heading('Peers', 'Every configured peer and every source seen since the gateway started.'));
    const cols = [{ label: 'Peer' }, { label: 'Addresses' }, { label: 'AE titles' }, { label: 'Certificate' },
      { label: 'Implementation' }, { label: 'Last seen' }, { label: 'Policy allows' }, { label: 'Status' }];
    const { table: t, tbody } = table('peer-table', cols, 'peer-rows');
    if (!peers.length) emptyRow(tbody, cols.length, 'No peer configured or seen.', 'peer-empty');
    for (const p of peers) {
      // Blocked (block list), admitted by the policy, or a source the policy does not know.
      const status = h('td', null, p.blocked ? badge('bad', 'Blocked', 'peer-status')
        : p.configured === false ? badge('warn', 'Not admitted', 'peer-status')
          : badge('ok', 'Allowed', 'peer-status'));
      if (p.blocked && p.block) {
        status.appendChild(h('div', { class: 'sub' }, text(p.block.reason || p.block.action || '')));
        if (p.block.until) status.appendChild(h('div', { class: 'sub' }, `until ${text(p.block.until)}`));
        if (isOperator() && p.block.id !== undefined) status.appendChild(unblockButton(p.block.id));
      }
      tbody.appendChild(h('tr', { testid: 'peer-row', 'data-name': p.name, class: p.blocked ? 'row-bad' : null },
        h('td', null, h('div', { class: 'strong nowrap' }, text(p.name)),
          p.configured === false ? h('div', { class: 'sub' }, 'not in the policy') : null),
        h('td', { class: 'mono' }, text(p.addresses)),
        h('td', { class: 'mono' }, text(p.ae_titles)),
        h('td', { class: 'wrap' }, text(p.certificate)),
        h('td', null, h('div', null, text(p.implementation_version)),
          p.implementation_class_uid ? h('div', { class: 'sub mono' }, p.implementation_class_uid) : null),
        h('td', null, p.last_seen ? h('span', { title: fmtTime(p.last_seen) }, `${fmtAgo(p.last_seen)} ago`) : 'never'),
        h('td', { class: 'wrap' }, text(p.allows)),
        status));
    }
    sec.appendChild(h('div', { class: 'panel' }, h('div', { class: 'scroll' }, t)));

    const bcols = [{ label: 'Id', cls: 'num' }, { label: 'Subject' }, { label: 'Action' }, { label: 'Rule' },
      { label: 'Since' }, { label: 'Until' }, { label: 'Reason' }, { label: '' }];
    const b = table('block-table', bcols, 'block-rows');
    if (!blocks.length) emptyRow(b.tbody, bcols.length, 'The block list is empty.', 'block-empty');
    for (const e of blocks) {
      b.tbody.appendChild(h('tr', { testid: 'block-row', 'data-id': e.id },
        h('td', { class: 'num' }, text(e.id)),
        h('td', { class: 'mono' }, text(e.subject)),
        h('td', null, text(e.action)),
        h('td', null, text(e.rule)),
        h('td', null, text(e.since)),
        h('td', null, `${text(e.until)}${e.remaining_secs !== undefined ? ` (${e.remaining_secs} s left)` : ''}`),
        h('td', { class: 'wrap' }, text(e.reason), e.removed ? h('div', { class: 'sub' }, `removed by ${text(e.removed.by)}`) : null),
        h('td', null, isOperator() && !e.removed ? unblockButton(e.id) : null)));
    }
    sec.appendChild(h('div', { class: 'panel' }, h('h2', null, 'Block list'), h('div', { class: 'scroll' }, b.table)));
  }

  function unblockButton(id) {
    const btn = h('button', { type: 'button', class: 'secondary', testid: 'unblock-button', 'data-id': id }, 'Unblock');
    btn.addEventListener('click', async () => {
      if (!window.confirm(`Remove block ${id}? The peer can connect again at once.`)) return;
      btn.disabled = true;
      try {
        await api(`/api/v1/blocks/${encodeURIComponent(id)}`, { method: 'DELETE' });
        route();
      } catch (e) {
        btn.disabled = false;
        btn.after(h('div', { class: 'error', role: 'alert' }, e.message));
      }
    });
    return btn;
  }

  // ----------------------------------------------------------------------------------- alerts

  async function renderAlerts(sec, token) {
    const alerts = await api('/api/v1/alerts');
    if (!current(token)) return;
    // An alert that arrived by SSE while the request was in flight is kept.
    const ids = new Set(alerts.map((a) => String(a.id)));
    const newer = (state.alerts || []).filter((a) => !ids.has(String(a.id)));
    state.alerts = newer.concat(alerts).sort((a, b) => Number(b.time) - Number(a.time));
    updateAlertCount();
    sec.appendChild(heading('Alerts', isOperator()
      ? 'Detections and other security alerts, newest first. Acknowledge an alert once it is handled.'
      : 'Detections and other security alerts, newest first. Your role can read them; an operator acknowledges them.'));
    sec.appendChild(h('div', { id: 'alert-list', class: 'alert-list', testid: 'alert-list' }));
    renderAlertRows();
  }

  function renderAlertRows() {
    const list = document.getElementById('alert-list');
    if (!list) return;
    clear(list);
    const alerts = state.alerts || [];
    if (!alerts.length) {
      list.appendChild(h('p', { class: 'panel muted', testid: 'alert-empty' }, 'No alert. Detections appear here as they happen.'));
      return;
    }
    for (const a of alerts) list.appendChild(alertCard(a));
  }

  function alertCard(a) {
    const acked = !!a.acknowledged;
    const status = acked
      ? badge('ok', 'Acknowledged', 'alert-status')
      : badge('alert', 'Open', 'alert-status');
    const actions = h('div', { class: 'alert-actions' });
    if (acked) {
      actions.appendChild(h('span', { class: 'sub', testid: 'alert-acked-by' },
        `by ${text(a.acknowledged.by)} at ${fmtTime(a.acknowledged.time)}`));
    } else if (isOperator()) {
      const btn = h('button', { type: 'button', class: 'primary', testid: 'ack-button', 'data-id': a.id }, 'Acknowledge');
      btn.addEventListener('click', () => acknowledge(a, btn));
      actions.appendChild(btn);
    }
    return h('article', { class: `panel alert-card ${acked ? 'is-acked' : 'is-open'}`, testid: 'alert-row', 'data-id': a.id, 'data-rule': a.rule },
      h('div', { class: 'alert-head' },
        status,
        h('span', { class: 'alert-rule strong' }, text(a.rule)),
        a.rule_kind && a.rule_kind !== a.rule ? h('span', { class: 'tag' }, text(a.rule_kind)) : null,
        a.response ? h('span', { class: 'tag tag-response', testid: 'alert-response' }, `response: ${text(a.response)}`) : null,
        h('span', { class: 'alert-time muted', title: fmtTime(a.time) }, fmtTime(a.time)),
        actions),
      h('p', { class: 'alert-detail', testid: 'alert-detail' }, text(a.detail)),
      h('dl', { class: 'kv kv-inline' },
        h('dt', null, 'source'), h('dd', { class: 'mono' }, text(a.source)),
        h('dt', null, 'peer'), h('dd', null, text(a.peer)),
        h('dt', null, 'AE titles'), h('dd', { class: 'mono' }, `${text(a.calling_ae)} → ${text(a.called_ae)}`)),
      a.evidence ? h('details', { class: 'evidence', testid: 'alert-evidence', open: true },
        h('summary', null, 'Evidence'), describe(a.evidence)) : null);
  }

  async function acknowledge(a, btn) {
    btn.disabled = true;
    btn.textContent = 'Acknowledging…';
    try {
      await api(`/api/v1/alerts/${encodeURIComponent(a.id)}/ack`, { method: 'POST' });
      a.acknowledged = { by: state.me.user, time: Date.now() };
      // The server's record (who, when) replaces the local guess.
      try {
        state.alerts = await api('/api/v1/alerts');
      } catch (e) { /* keep the local state */ }
      updateAlertCount();
      if (state.view === 'alerts') renderAlertRows();
    } catch (e) {
      btn.disabled = false;
      btn.textContent = 'Acknowledge';
      btn.after(h('div', { class: 'error', role: 'alert', testid: 'ack-error' }, e.message));
    }
  }

  // --------------------------------------------------------------------------------- refusals

  const REFUSAL_COLS = [{ label: 'Time' }, { label: 'Kind' }, { label: 'Source' }, { label: 'AE titles' },
    { label: 'Peer' }, { label: 'Code' }, { label: 'Why' }];

  async function renderRefusals(sec, token) {
    const refusals = await api('/api/v1/refusals');
    if (!current(token)) return;
    // A refusal that arrived by SSE while the request was in flight is kept.
    const key = (r) => `${r.time}|${r.kind}|${r.source}|${r.code}|${r.why}`;
    const have = new Set(refusals.map(key));
    const merged = refusals.concat(state.liveRefusals.filter((r) => !have.has(key(r))));
    state.refusals = merged.sort((a, b) => Number(b.time) - Number(a.time)).slice(0, LIST_KEPT);
    sec.appendChild(heading('Refusals', 'Associations and requests the policy refused, newest first, with the reason. No patient data is kept here.'));
    const { table: t, tbody } = table('refusal-table', REFUSAL_COLS, 'refusal-rows');
    tbody.id = 'refusal-rows';
    sec.appendChild(h('div', { class: 'panel' }, h('div', { class: 'scroll' }, t)));
    renderRefusalRows();
  }

  function renderRefusalRows() {
    const tbody = document.getElementById('refusal-rows');
    if (!tbody) return;
    clear(tbody);
    const list = state.refusals || [];
    if (!list.length) emptyRow(tbody, REFUSAL_COLS.length, 'Nothing refused.', 'refusal-empty');
    for (const r of list) {
      tbody.appendChild(h('tr', { testid: 'refusal-row', 'data-kind': r.kind },
        h('td', { class: 'nowrap' }, fmtTime(r.time)),
        h('td', null, r.kind === 'association' ? badge('warn', 'association', 'refusal-kind') : badge('info', 'request', 'refusal-kind')),
        h('td', { class: 'mono' }, text(r.source)),
        h('td', { class: 'mono', testid: 'refusal-aes' }, `${text(r.calling_ae)} → ${text(r.called_ae)}`),
        h('td', null, text(r.peer)),
        h('td', { class: 'mono nowrap', testid: 'refusal-code' }, text(r.code)),
        h('td', { class: 'wrap', testid: 'refusal-why' }, text(r.why))));
    }
  }

  // ------------------------------------------------------------------------------------ audit

  async function renderAudit(sec, token) {
    sec.appendChild(heading('Audit trail', 'Search the tamper-evident trail. Each search is itself recorded (DICOM PS3.15 A.5 Audit Log Used).'));
    const since = h('input', { type: 'datetime-local', id: 'audit-since', name: 'since', step: 1, testid: 'audit-since' });
    const kind = h('select', { id: 'audit-kind', name: 'kind', testid: 'audit-kind' },
      h('option', { value: '' }, 'any kind'), AUDIT_KINDS.map((k) => h('option', { value: k }, k)));
    const limit = h('input', { type: 'number', id: 'audit-limit', name: 'limit', min: 1, max: 1000, value: 100, testid: 'audit-limit' });
    const form = h('form', { class: 'panel search', testid: 'audit-form' },
      h('div', { class: 'field' }, h('label', { for: 'audit-since' }, 'Since'), since),
      h('div', { class: 'field' }, h('label', { for: 'audit-kind' }, 'Kind'), kind),
      h('div', { class: 'field' }, h('label', { for: 'audit-limit' }, 'At most'), limit),
      h('button', { type: 'submit', class: 'primary', testid: 'audit-search' }, 'Search'));
    const results = h('div', { id: 'audit-results', testid: 'audit-results' });
    sec.appendChild(form);
    sec.appendChild(results);
    const search = async () => {
      const q = new URLSearchParams();
      if (since.value) q.set('since', String(new Date(since.value).getTime()));
      if (kind.value) q.set('kind', kind.value);
      if (limit.value) q.set('limit', limit.value);
      clear(results);
      results.appendChild(h('p', { class: 'muted' }, 'Searching…'));
      try {
        const res = await api(`/api/v1/audit?${q}`);
        if (!current(token)) return;
        renderAuditRecords(results, (res && res.records) || []);
      } catch (e) {
        if (!current(token)) return;
        clear(results);
        results.appendChild(h('p', { class: 'error', role: 'alert' }, `Search failed: ${e.message}`));
      }
    };
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      search();
    });
    await search();
  }

  function auditDetail(ev) {
    if (!ev || typeof ev !== 'object') return text(ev);
    const parts = [];
    for (const [k, v] of Object.entries(ev)) {
      if (k === 'kind' || v === null || v === undefined) continue;
      parts.push(`${k.replace(/_/g, ' ')}: ${typeof v === 'object' ? JSON.stringify(v) : v}`);
    }
    return parts.join(' · ');
  }

  function renderAuditRecords(el, records) {
    clear(el);
    const cols = [{ label: 'Time' }, { label: 'Record' }, { label: 'Kind' }, { label: 'Peer' }, { label: 'Detail' }];
    const { table: t, tbody } = table('audit-table', cols, 'audit-rows');
    if (!records.length) emptyRow(tbody, cols.length, 'No record matches.', 'audit-empty');
    // The server answers newest first.
    for (const r0 of records) {
      // A record may come as the stored JSON text, parsed, or wrapped ({record} / {entry}).
      let r = r0 && typeof r0 === 'object' && (r0.record || r0.entry) ? (r0.record || r0.entry) : r0;
      if (typeof r === 'string') {
        try { r = JSON.parse(r); } catch (e) { r = { event: { kind: '?', text: String(r) } }; }
      }
      const ev = r.event || {};
      const p = r.peer || {};
      const peer = [p.name, p.address].filter(Boolean).join(' · ');
      const aes = p.calling_ae || p.called_ae ? `${text(p.calling_ae)} → ${text(p.called_ae)}` : '';
      tbody.appendChild(h('tr', { testid: 'audit-row', 'data-kind': ev.kind || r.kind },
        h('td', { class: 'nowrap' }, fmtTime(r.time_ms !== undefined ? r.time_ms : r.time)),
        h('td', { class: 'mono nowrap' }, r.node ? `${r.node}#${text(r.seq)}` : text(r.seq)),
        h('td', { class: 'mono' }, text(ev.kind || r.kind)),
        h('td', null, peer || '—', aes ? h('div', { class: 'sub mono' }, aes) : null),
        h('td', { class: 'wrap' }, auditDetail(ev))));
    }
    el.appendChild(h('p', { class: 'muted', testid: 'audit-count' }, `${records.length} record${records.length === 1 ? '' : 's'}`));
    el.appendChild(h('div', { class: 'panel' }, h('div', { class: 'scroll' }, t)));
  }

  // -------------------------------------------------------------------------------- integrity

  async function renderIntegrity(sec, token) {
    const i = await api('/api/v1/integrity');
    if (!current(token)) return;
    sec.appendChild(heading('Integrity', 'The instance ledger and the audit trail\'s hash chain.'));
    const ledger = i.ledger || {};
    const audit = i.audit || {};
    sec.appendChild(h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', { class: 'card-label' }, 'Ledger entries'),
        h('div', { class: 'card-value', testid: 'ledger-entries', 'data-value': ledger.entries }, fmtNum(ledger.entries))),
      h('div', { class: 'card' }, h('div', { class: 'card-label' }, 'Audit records'),
        h('div', { class: 'card-value', testid: 'audit-records', 'data-value': audit.records }, fmtNum(audit.records))),
      h('div', { class: `card ${audit.ok ? 'card-ok' : 'card-alert'}` }, h('div', { class: 'card-label' }, 'Audit chain'),
        h('div', { class: 'card-value', testid: 'audit-chain-status', 'data-ok': audit.ok ? 'true' : 'false' },
          audit.ok ? 'Verified' : 'NOT verified'))));
    sec.appendChild(h('div', { class: 'panel' }, h('h2', null, 'Last signed ledger checkpoint'),
      h('div', { testid: 'ledger-checkpoint' }, ledger.checkpoint ? describe(ledger.checkpoint) : h('p', { class: 'muted' }, 'No checkpoint yet.'))));
    sec.appendChild(h('div', { class: 'panel' }, h('h2', null, 'Audit chain verified head'),
      h('div', { testid: 'audit-verified-head' }, audit.verified_head ? describe(audit.verified_head) : h('p', { class: 'muted' }, 'Not verified yet.'))));
  }

  // ------------------------------------------------------------------------------------ vault

  async function renderVault(sec, token) {
    const v = await api('/api/v1/vault');
    if (!current(token)) return;
    sec.appendChild(heading('Vault', 'The gateway\'s own encrypted store of instances.'));
    sec.appendChild(h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', { class: 'card-label' }, 'Instances'),
        h('div', { class: 'card-value', testid: 'vault-instances', 'data-value': v.instances }, fmtNum(v.instances))),
      h('div', { class: 'card' }, h('div', { class: 'card-label' }, 'Stored'),
        h('div', { class: 'card-value', testid: 'vault-bytes', 'data-value': v.bytes }, fmtBytes(v.bytes))),
      h('div', { class: 'card' }, h('div', { class: 'card-label' }, 'Free space'),
        h('div', { class: 'card-value', testid: 'vault-free', 'data-value': v.free_bytes }, fmtBytes(v.free_bytes)))));
    const used = Number(v.bytes) || 0, free = Number(v.free_bytes) || 0;
    if (used + free > 0) {
      const pct = (100 * used) / (used + free);
      const bar = h('div', { class: 'meter-fill' });
      bar.style.width = `${Math.max(0.5, pct).toFixed(1)}%`; // CSSOM, allowed by the CSP
      sec.appendChild(h('div', { class: 'panel' }, h('h2', null, 'Vault share of its disk'),
        h('div', { class: 'meter', role: 'meter', 'aria-valuenow': pct.toFixed(1), 'aria-valuemin': 0, 'aria-valuemax': 100 }, bar),
        h('p', { class: 'muted' }, `${pct.toFixed(1)} % of the space available to the vault is used by it.`)));
    }
  }

  // ----------------------------------------------------------------------------------- config

  async function renderConfig(sec, token) {
    const c = await api('/api/v1/config');
    if (!current(token)) return;
    sec.appendChild(heading('Configuration', 'The configuration in force (read only). Edit the file on the host, then reload.'));
    const result = h('p', { class: 'reload-result', testid: 'reload-result', role: 'status', hidden: true });
    const bar = h('div', { class: 'panel config-meta' },
      h('dl', { class: 'kv kv-inline' },
        h('dt', null, 'file'), h('dd', { class: 'mono', testid: 'config-path' }, c.path || 'embedded default'),
        h('dt', null, 'loaded'), h('dd', null, fmtTime(c.loaded))));
    if (isOperator()) {
      const btn = h('button', { type: 'button', class: 'primary', testid: 'reload-button' }, 'Reload configuration');
      btn.addEventListener('click', async () => {
        btn.disabled = true;
        result.hidden = true;
        try {
          const r = await api('/api/v1/reload', { method: 'POST' });
          result.textContent = r && r.ok ? `Reloaded. ${text(r.detail)}` : `Reload refused; the previous configuration stays in force. ${text(r && r.detail)}`;
          result.className = `reload-result ${r && r.ok ? 'ok' : 'error'}`;
          if (r && r.ok) {
            const c2 = await api('/api/v1/config');
            pre.textContent = c2.text || '';
          }
        } catch (e) {
          result.textContent = `Reload failed: ${e.message}`;
          result.className = 'reload-result error';
        }
        result.hidden = false;
        btn.disabled = false;
      });
      bar.appendChild(btn);
    }
    bar.appendChild(result);
    sec.appendChild(bar);
    const pre = h('pre', { class: 'config-text', testid: 'config-text' }, c.text || '');
    sec.appendChild(h('div', { class: 'panel' }, pre));
  }

  const RENDER = {
    overview: renderOverview, peers: renderPeers, alerts: renderAlerts, refusals: renderRefusals,
    audit: renderAudit, integrity: renderIntegrity, vault: renderVault, config: renderConfig,
  };

  // Durations on the overview tick without a server round trip (only while something runs).
  setInterval(() => {
    if (state.view === 'overview' && state.assocs.size > 0) paintSoon('tables');
  }, 5000);

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
}());
