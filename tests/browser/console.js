// console.js -- the operator console in a real browser (Debian's Chromium driven by
// playwright-core), against a running radguard in front of a real PACS. Started by
// crates/radguard/tests/console_browser.rs, which starts radguard (admin listener with an
// operator and a viewer token, scanner-signature rules) and Orthanc and passes:
//
//   RG_URL             http://127.0.0.1:PORT of the admin listener
//   RG_DICOM_PORT      radguard's DICOM port
//   RG_CALLING         an AE title the policy admits; RG_CALLED the called AE title of the route
//                      to the PACS, RG_VAULT_CALLED that of a route to radguard's own vault
//   RG_OPERATOR_TOKEN, RG_OPERATOR_NAME, RG_VIEWER_TOKEN, RG_VIEWER_NAME
//   RG_PYTHON          the venv interpreter (pynetdicom), RG_SENDER tests/browser/paced_store.py
//   RG_FILES           a JSON array of DICOM files (one series) to send
//   RG_WORK            a scratch folder (the sender's go files)
//   RG_ECHOSCU         DCMTK's echoscu
//   RG_SCREENSHOTS     where <view>.png go (docs/screenshots)
//   RG_CHROMIUM        the browser (default /usr/bin/chromium)
//
// Scenario (every wait is bounded; nothing reloads the page after sign-in):
//   1. sign in as the operator (the login view, because /api/v1/me says 401);
//   2. two paced C-STORE associations held open between instances, one relayed to the PACS and
//      one to the vault: their rows appear on the overview; on the same rows (no reload) the
//      relayed one's request count grows (the relay reports its bytes at release: the totals'
//      bytes grow then) and the vault one's bytes grow; both move to "recently ended";
//   3. echoscu with a calling AE title no peer has: the refusal and its reason appear live on
//      the refusals view;
//   4. two scanner-signature alerts (nmap's ECHOSCU -> ANY-SCP, and a MARKER one): the operator
//      acknowledges the first; the server says who acknowledged it;
//   5. the viewer (another browser context) sees the open MARKER alert without an Acknowledge
//      button (the operator's page shows one for it) and without Reload; its forced POST with
//      its own CSRF token gets 403 and the alert stays open;
//   6. every view rendered without error, and screenshotted.
// Exit 0 when everything held; otherwise prints "console.js: FAIL: ..." and exits 1.
'use strict';

const { chromium } = require('playwright-core');
const { execFile, spawn } = require('child_process');
const fs = require('fs');
const path = require('path');

const env = (k, d) => {
  const v = process.env[k] || d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const URL0 = env('RG_URL');
const DICOM_PORT = env('RG_DICOM_PORT');
const CALLING = env('RG_CALLING');
const CALLED = env('RG_CALLED');
const VAULT_CALLED = env('RG_VAULT_CALLED');
const OP = { token: env('RG_OPERATOR_TOKEN'), name: env('RG_OPERATOR_NAME') };
const VIEWER = { token: env('RG_VIEWER_TOKEN'), name: env('RG_VIEWER_NAME') };
const PYTHON = env('RG_PYTHON');
const SENDER = env('RG_SENDER');
const FILES = JSON.parse(env('RG_FILES'));
const WORK = env('RG_WORK');
const ECHOSCU = env('RG_ECHOSCU');
const SHOTS = env('RG_SCREENSHOTS');
const CHROMIUM = env('RG_CHROMIUM', '/usr/bin/chromium');

const WAIT = 30000; // one step under load on 2 busy cores
const VIEWS = ['overview', 'peers', 'alerts', 'refusals', 'audit', 'integrity', 'vault', 'config'];
const WRONG_AE = 'NOT-A-PEER';

const t0 = Date.now();
function log(msg) {
  console.log(`console.js: [+${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}`);
}
function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

// ------------------------------------------------------------------------------ processes

function run(file, args) {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code === undefined ? -1 : err.code) : 0, out: `${stdout}${stderr}` });
    });
  });
}

// The paced sender: resolves `lines` as they come; `waitLine(re)` is bounded.
function startSender(called, files, holds, goBase) {
  const args = [SENDER, '--port', DICOM_PORT, '--calling', CALLING, '--called', called, '--go', goBase];
  for (const h of holds) args.push('--hold-after', String(h));
  const child = spawn(PYTHON, args.concat(files), { stdio: ['ignore', 'pipe', 'pipe'] });
  const s = { child, lines: [], err: '', exit: null, waiters: [] };
  let buf = '';
  const wake = () => {
    for (const w of s.waiters.slice()) w();
  };
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      s.lines.push(line);
      log(line);
    }
    wake();
  });
  child.stderr.on('data', (d) => {
    s.err += d;
  });
  child.on('exit', (code) => {
    s.exit = code;
    wake();
  });
  s.waitLine = (re, ms) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`paced_store.py: no line ${re} within ${ms} ms; ` +
      `lines ${JSON.stringify(s.lines)}; stderr ${s.err}`)), ms);
    const w = () => {
      const hit = s.lines.find((l) => re.test(l));
      if (hit || s.exit !== null) {
        clearTimeout(timer);
        s.waiters.splice(s.waiters.indexOf(w), 1);
        if (hit) resolve(hit);
        else reject(new Error(`paced_store.py exited ${s.exit} before ${re}: ${JSON.stringify(s.lines)} ${s.err}`));
      }
    };
    s.waiters.push(w);
    w();
  });
  s.waitExit = (ms) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`paced_store.py did not exit within ${ms} ms`)), ms);
    const w = () => {
      if (s.exit !== null) {
        clearTimeout(timer);
        s.waiters.splice(s.waiters.indexOf(w), 1);
        resolve(s.exit);
      }
    };
    s.waiters.push(w);
    w();
  });
  return s;
}

// ---------------------------------------------------------------------------------- pages

// Fails the run on a script error or a Content-Security-Policy violation in the page.
function watch(page, label, problems) {
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (m.type() === 'error' && /Content Security Policy|Refused to (execute|apply|load|connect)/i.test(t)) {
      problems.push(`${label}: CSP violation: ${t}`);
    }
  });
}

async function signIn(page, who) {
  await page.goto(`${URL0}/`);
  await page.getByTestId('login-form').waitFor({ timeout: WAIT });
  await page.getByTestId('login-token').fill(who.token);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('view-overview').waitFor({ timeout: WAIT });
  const user = await page.getByTestId('session-user').textContent();
  check(user === who.name, `signed in as ${JSON.stringify(user)}, expected ${who.name}`);
  // Dropped by any navigation or reload: its presence at the end proves the page stayed.
  await page.evaluate(() => { window.rgNoReload = 'still here'; });
  await page.waitForSelector('[data-testid="live-status"][data-state="open"]', { timeout: WAIT });
}

async function go(page, view) {
  await page.getByTestId(`nav-${view}`).click();
  await page.getByTestId(`view-${view}`).waitFor({ timeout: WAIT });
}

// Waits for the view's asynchronous content: a table row, an empty-state row, or a card.
async function settled(page, view) {
  const ready = {
    overview: '[data-testid="total-associations"]',
    peers: '[data-testid="peer-row"], [data-testid="peer-empty"]',
    alerts: '[data-testid="alert-row"], [data-testid="alert-empty"]',
    refusals: '[data-testid="refusal-row"], [data-testid="refusal-empty"]',
    audit: '[data-testid="audit-row"], [data-testid="audit-empty"]',
    integrity: '[data-testid="audit-chain-status"]',
    vault: '[data-testid="vault-instances"]',
    config: '[data-testid="config-text"]',
  }[view];
  await page.waitForSelector(`${ready}, [data-testid="view-error"]`, { timeout: WAIT });
  const err = await page.$('[data-testid="view-error"]');
  check(!err, `${view}: ${err && await err.textContent()}`);
}

async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

async function stillSamePage(page, label) {
  const v = await page.evaluate(() => window.rgNoReload);
  check(v === 'still here', `${label}: the page was reloaded`);
}

// ----------------------------------------------------------------------------- scenario

async function scenario(browser, problems) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const ctxOpts = { viewport: { width: 1360, height: 860 }, colorScheme: 'dark', deviceScaleFactor: 1 };
  const opCtx = await browser.newContext(ctxOpts);
  const op = await opCtx.newPage();
  watch(op, 'operator', problems);

  // 1. The login view (tokens are configured, so /api/v1/me is 401 without a session).
  await op.goto(`${URL0}/`);
  await op.getByTestId('login-form').waitFor({ timeout: WAIT });
  await shot(op, 'login');
  await op.getByTestId('login-token').fill('not-a-token');
  await op.getByTestId('login-submit').click();
  await op.waitForSelector('[data-testid="login-error"]:not([hidden])', { timeout: WAIT });
  await signIn(op, OP);
  check(await op.getByTestId('session-role').textContent() === 'operator', 'operator role not shown');
  log('operator signed in; live updates connected');

  // 2. Live associations on the overview.
  await settled(op, 'overview');
  const totalBytes = () => op.evaluate(() => Number(document.querySelector('[data-testid="total-bytes-from-clients"]').dataset.value));
  const bytesBefore = await totalBytes();
  // The chart's newest point (Unix ms; 0 before the first), advanced by the live updates alone.
  const chartNewest = () => op.evaluate(() => Number(document.querySelector('[data-testid="chart"] svg').dataset.newest));
  const newestBefore = await chartNewest();
  const pacsGo = path.join(WORK, 'go-pacs');
  const vaultGo = path.join(WORK, 'go-vault');
  const pacs = startSender(CALLED, FILES, [4, 12], pacsGo);
  const vault = startSender(VAULT_CALLED, FILES, [4, 12], vaultGo);
  await pacs.waitLine(/holding after 4$/, WAIT * 2);
  await vault.waitLine(/holding after 4$/, WAIT * 2);
  const rowSel = '[data-testid="assoc-row"]';
  // A row of this test's calling AE title to `called` whose `field` (a data- attribute or the
  // requests cell) exceeds `above`; returns {id, value}.
  const waitRow = async (called, id, field, above) => (await op.waitForFunction(([sel, called, id, field, above]) => {
    for (const r of document.querySelectorAll(sel)) {
      if (id !== null && r.dataset.id !== id) continue;
      if (!r.textContent.includes(`\u2192 ${called}`)) continue;
      const opCell = r.querySelector('[data-testid="assoc-operation"]');
      if (!opCell || !opCell.textContent.includes('C-STORE')) continue;
      const value = field === 'requests'
        ? Number(r.querySelector('[data-testid="assoc-requests"]').textContent.replace(/,/g, ''))
        : Number(r.dataset[field]);
      if (value > above) return { id: r.dataset.id, value };
    }
    return null;
  }, [rowSel, called, id, field, above], { timeout: WAIT })).jsonValue();
  const p1 = await waitRow(CALLED, null, 'requests', 0);
  const v1 = await waitRow(VAULT_CALLED, null, 'bytes', 0);
  check(p1.id !== v1.id, 'one row for two associations');
  log(`on the overview: association ${p1.id} to ${CALLED} (${p1.value} requests), ${v1.id} to ${VAULT_CALLED} (${v1.value} bytes)`);
  const rowText = await op.locator(`${rowSel}[data-id="${p1.id}"]`).textContent();
  check(rowText.includes(CALLING) && rowText.includes('modality'), `row lacks the peer and AE title: ${rowText}`);
  fs.writeFileSync(`${pacsGo}.1`, 'go');
  fs.writeFileSync(`${vaultGo}.1`, 'go');
  await pacs.waitLine(/holding after 12$/, WAIT * 2);
  await vault.waitLine(/holding after 12$/, WAIT * 2);
  const p2 = await waitRow(CALLED, p1.id, 'requests', p1.value);
  const v2 = await waitRow(VAULT_CALLED, v1.id, 'bytes', v1.value);
  log(`same rows, no reload: association ${p1.id} requests ${p1.value} -> ${p2.value}; ${v1.id} bytes ${v1.value} -> ${v2.value}`);
  await op.waitForFunction(() => {
    const el = document.querySelector('[data-testid="total-running"]');
    return el && Number(el.dataset.value) >= 2;
  }, null, { timeout: WAIT });
  await stillSamePage(op, 'overview');
  await shot(op, 'overview');
  fs.writeFileSync(`${pacsGo}.2`, 'go');
  fs.writeFileSync(`${vaultGo}.2`, 'go');
  for (const [name, sender] of [['pacs', pacs], ['vault', vault]]) {
    const code = await sender.waitExit(WAIT * 2);
    check(code === 0, `paced_store.py (${name}) exited ${code}: ${sender.lines.join(' | ')} ${sender.err}`);
  }
  for (const id of [p1.id, v1.id]) {
    await op.waitForSelector(`[data-testid="ended-row"][data-id="${id}"]`, { timeout: WAIT });
    check(await op.locator(`${rowSel}[data-id="${id}"]`).count() === 0, `association ${id} ended but is still listed as running`);
  }
  // Both series' bytes reach the totals (the relayed one's at its release), by the live totals.
  const minBytes = FILES.reduce((n, f) => n + fs.statSync(f).size, 0);
  await op.waitForFunction(([before, min]) => {
    const el = document.querySelector('[data-testid="total-bytes-from-clients"]');
    return el && Number(el.dataset.value) - before >= min;
  }, [bytesBefore, minBytes], { timeout: WAIT });
  log(`both ended; the totals' bytes from clients grew by at least ${minBytes} (one series) without a reload`);
  // A 5 s point of the series with those bytes reaches the chart without a reload.
  await op.waitForFunction(([before]) => {
    const svg = document.querySelector('[data-testid="chart"] svg');
    return svg && Number(svg.dataset.newest) > before && svg.querySelector('polyline.chart-bytes');
  }, [newestBefore], { timeout: WAIT });
  await stillSamePage(op, 'overview chart');
  log(`the chart's newest point moved from ${newestBefore} to ${await chartNewest()} without a reload`);

  // 3. A refusal, live.
  await go(op, 'refusals');
  await settled(op, 'refusals');
  const before = await op.locator('[data-testid="refusal-row"]').count();
  const echo = await run(ECHOSCU, ['-aet', WRONG_AE, '-aec', CALLED, '127.0.0.1', DICOM_PORT]);
  check(echo.code !== 0, `echoscu as ${WRONG_AE} was accepted: ${echo.out}`);
  const refusal = await op.waitForFunction(([ae]) => {
    for (const r of document.querySelectorAll('[data-testid="refusal-row"]')) {
      const aes = r.querySelector('[data-testid="refusal-aes"]').textContent;
      const why = r.querySelector('[data-testid="refusal-why"]').textContent.trim();
      const codeText = r.querySelector('[data-testid="refusal-code"]').textContent;
      if (aes.includes(ae) && why && why !== '—') return { why, code: codeText, kind: r.dataset.kind };
    }
    return null;
  }, [WRONG_AE], { timeout: WAIT });
  const rf = await refusal.jsonValue();
  check(rf.kind === 'association', `refusal kind ${rf.kind}`);
  check(/A-ASSOCIATE-RJ/.test(rf.code), `refusal code ${rf.code}`);
  check(await op.locator('[data-testid="refusal-row"]').count() > before, 'no new refusal row');
  log(`refusal shown live: ${rf.code}: ${rf.why}`);
  await stillSamePage(op, 'refusals');
  await shot(op, 'refusals');

  // 4. Alerts: nmap's dicom-ping signature and a MARKER signature.
  await go(op, 'alerts');
  await settled(op, 'alerts');
  for (const [calling, called] of [['ECHOSCU', 'ANY-SCP'], ['MARKER', 'ANY-SCP']]) {
    const r = await run(ECHOSCU, ['-aet', calling, '-aec', called, '127.0.0.1', DICOM_PORT]);
    check(r.code !== 0, `echoscu ${calling} -> ${called} was accepted: ${r.out}`);
  }
  const alertRow = (rule) => `[data-testid="alert-row"][data-rule="${rule}"]`;
  await op.waitForSelector(`${alertRow('scanners')} [data-testid="ack-button"]`, { timeout: WAIT });
  await op.waitForSelector(`${alertRow('marker')} [data-testid="ack-button"]`, { timeout: WAIT });
  const scannerId = await op.locator(alertRow('scanners')).first().getAttribute('data-id');
  const markerId = await op.locator(alertRow('marker')).first().getAttribute('data-id');
  const detail = await op.locator(`${alertRow('scanners')} [data-testid="alert-detail"]`).first().textContent();
  check(/ECHOSCU/.test(detail), `scanner alert detail: ${detail}`);
  check(await op.locator(`${alertRow('scanners')} [data-testid="alert-evidence"]`).count() > 0, 'no evidence shown');
  log(`alerts shown live: scanners #${scannerId}, marker #${markerId}`);
  await stillSamePage(op, 'alerts');
  await shot(op, 'alerts');
  await op.locator(`[data-testid="alert-row"][data-id="${scannerId}"] [data-testid="ack-button"]`).click();
  await op.waitForFunction(([id, name]) => {
    const r = document.querySelector(`[data-testid="alert-row"][data-id="${id}"]`);
    if (!r) return false;
    const st = r.querySelector('[data-testid="alert-status"]');
    const by = r.querySelector('[data-testid="alert-acked-by"]');
    return st && st.textContent === 'Acknowledged' && by && by.textContent.includes(name) &&
      !r.querySelector('[data-testid="ack-button"]');
  }, [scannerId, OP.name], { timeout: WAIT });
  const serverAlerts = await op.evaluate(async () => (await fetch('/api/v1/alerts')).json());
  const acked = serverAlerts.find((a) => String(a.id) === String(scannerId));
  check(acked && acked.acknowledged && acked.acknowledged.by === OP.name,
    `the server does not record the acknowledgement: ${JSON.stringify(acked)}`);
  const markerOpen = serverAlerts.find((a) => String(a.id) === String(markerId));
  check(markerOpen && !markerOpen.acknowledged, 'the marker alert was acknowledged too');
  log(`operator acknowledged alert #${scannerId}; the server says by ${acked.acknowledged.by}`);
  await shot(op, 'alerts-acknowledged');

  // 5. The viewer: no Acknowledge, no Reload, a forced POST is refused.
  const viewerCtx = await browser.newContext(ctxOpts);
  const vw = await viewerCtx.newPage();
  watch(vw, 'viewer', problems);
  await signIn(vw, VIEWER);
  check(/viewer/.test(await vw.getByTestId('session-role').textContent()), 'viewer role not shown');
  await go(vw, 'alerts');
  await vw.waitForSelector(`${alertRow('marker')} [data-testid="alert-status"]`, { timeout: WAIT });
  check(await vw.locator(`${alertRow('marker')} [data-testid="alert-status"]`).first().textContent() === 'Open',
    'the marker alert is not open for the viewer');
  check(await vw.locator('[data-testid="ack-button"]').count() === 0, 'the viewer is shown an Acknowledge button');
  // The same alert still offers the button to the operator: its absence above is the role's.
  check(await op.locator(`[data-testid="alert-row"][data-id="${markerId}"] [data-testid="ack-button"]`).count() === 1,
    'the operator lost the Acknowledge button of the open alert');
  await shot(vw, 'alerts-viewer');
  const forced = await vw.evaluate(async (id) => {
    const me = await (await fetch('/api/v1/me')).json();
    const r = await fetch(`/api/v1/alerts/${encodeURIComponent(id)}/ack`, {
      method: 'POST', headers: { 'X-CSRF-Token': me.csrf },
    });
    return { status: r.status, role: me.role };
  }, markerId);
  check(forced.role === 'viewer', `viewer /me says ${forced.role}`);
  check(forced.status === 403, `the viewer's forced acknowledgement got ${forced.status}, not 403`);
  const after = await op.evaluate(async () => (await fetch('/api/v1/alerts')).json());
  const markerAfter = after.find((a) => String(a.id) === String(markerId));
  check(markerAfter && !markerAfter.acknowledged, `the viewer's POST acknowledged the alert: ${JSON.stringify(markerAfter)}`);
  log(`viewer: no Acknowledge button; forced POST -> ${forced.status}; alert #${markerId} still open`);
  await go(vw, 'config');
  await settled(vw, 'config');
  check(await vw.locator('[data-testid="reload-button"]').count() === 0, 'the viewer is shown Reload');
  await stillSamePage(vw, 'viewer');

  // 6. Every view as the operator.
  for (const view of VIEWS) {
    await go(op, view);
    await settled(op, view);
    if (view === 'config') {
      check(await op.locator('[data-testid="reload-button"]').count() === 1, 'the operator has no Reload');
      const text = await op.getByTestId('config-text').textContent();
      check(text.includes('[[admin.token]]') || text.includes('[admin]'), 'the config view does not show the config in force');
    }
    if (view === 'peers') {
      await op.waitForFunction((ae) => [...document.querySelectorAll('[data-testid="peer-row"]')]
        .some((r) => r.textContent.includes(ae)), CALLING, { timeout: WAIT });
    }
    if (view === 'audit') {
      await op.getByTestId('audit-kind').selectOption('association-refused');
      await op.getByTestId('audit-search').click();
      await op.waitForFunction(() => {
        const rows = [...document.querySelectorAll('[data-testid="audit-row"]')];
        return rows.length > 0 && rows.every((r) => r.dataset.kind === 'association-refused');
      }, null, { timeout: WAIT });
    }
    if (!['overview', 'alerts', 'refusals'].includes(view)) await shot(op, view);
  }
  await stillSamePage(op, 'operator');
  await opCtx.close();
  await viewerCtx.close();
}

async function main() {
  const problems = [];
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
    timeout: 60000,
  });
  try {
    await scenario(browser, problems);
  } catch (e) {
    // What the pages showed and what the API says, to tell a page bug from a server one.
    for (const ctx of browser.contexts()) {
      for (const page of ctx.pages()) {
        try {
          const seen = await page.evaluate(async () => {
            const main = document.getElementById('main');
            const api = {};
            for (const p of ['/api/v1/me', '/api/v1/associations', '/api/v1/refusals', '/api/v1/alerts']) {
              try {
                const r = await fetch(p);
                api[p] = `${r.status} ${await r.text()}`;
              } catch (err) {
                api[p] = String(err);
              }
            }
            return { hash: location.hash, text: main ? main.innerText : '', api };
          });
          console.log(`console.js: page ${seen.hash}:\n${seen.text}\n${JSON.stringify(seen.api, null, 1)}`);
        } catch (err) {
          console.log(`console.js: (page state unavailable: ${err.message})`);
        }
      }
    }
    throw e;
  } finally {
    await browser.close();
  }
  check(problems.length === 0, problems.join('\n'));
  log('PASS');
}

const deadline = setTimeout(() => {
  console.log('console.js: FAIL: the whole run took over 300 s');
  process.exit(1);
}, 300000);
main().then(() => {
  clearTimeout(deadline);
  process.exit(0);
}, (e) => {
  console.log(`console.js: FAIL: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
