#!/usr/bin/env node
// End-to-end check of the sonolive web UI in the system Chromium (never
// downloads a browser). Plain node script, no test runner.
//
//   LIVE_URL    sonographer page with token   (http://host:port/live/phantom?token=…)
//   EXPERT_URL  expert page with token        (http://host:port/expert/phantom?token=…)
//   BAD_URL     expert page with a bad token  (default: EXPERT_URL with a forged token)
//   OUT_DIR     where expert.png and live.png go (default: .)
//   SECONDS     how long to watch the expert page (default 8)
//   CHROMIUM    browser binary (default /usr/bin/chromium)
//
// Steps: (a) live page plays, switch "AI overlay in video" off and see the
// server confirm burn_in:false over the WebSocket; (b) expert page plays and
// draws client-side boxes matched to frames by RTP timestamp, with
// glass-to-glass samples, and the outlines' calipers (the numbers, and the
// line on the canvas) match the phantom's lesions within 10%; (c) screenshots; (e) the sonographer revokes the
// expert's link and the expert page says so; (d) a bad link shows the
// invalid/expired message; one JSON line on stdout, exit 0 (ok) or 1.
// Everything else goes to stderr. The whole run is capped at 90 s.

'use strict';

const fs = require('fs');
const path = require('path');
const { createRun, sleep, watchConsole } = require('./harness');

const RUN_LIMIT_MS = 88000;
const env = process.env;
const LIVE_URL = env.LIVE_URL || '';
const EXPERT_URL = env.EXPERT_URL || '';
const BAD_URL = env.BAD_URL || forgeBadUrl(EXPERT_URL);
const OUT_DIR = env.OUT_DIR || '.';
const SECONDS = Number(env.SECONDS || 8);

const result = { ok: false, error: null, expert: null, live: null, bad: null, revoke: null, calipers: null };
const run = createRun({ name: 'e2e', limitMs: RUN_LIMIT_MS, result });
const { log, finish, fail } = run;
let browser = null;

// forgeBadUrl keeps the URL but swaps the token for one with a wrong signature.
function forgeBadUrl(url) {
  if (!url) return '';
  try {
    const u = new URL(url);
    const tok = u.searchParams.get('token') || 'x';
    u.searchParams.set('token', `${tok.split('.')[0]}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`);
    return u.href;
  } catch {
    return '';
  }
}





// snapshot copies window.sonolive.stats out of the page.
async function snapshot(page) {
  try {
    return await page.evaluate(() => (window.sonolive ? JSON.parse(JSON.stringify(window.sonolive.stats)) : null));
  } catch (err) {
    return { error: `snapshot failed: ${err.message}` };
  }
}

// waitStat waits until predicate (a function run in the page, reading
// window.sonolive.stats) is true; on timeout it throws with the step name and
// the page's state at that moment.
async function waitStat(page, name, predicate, timeout) {
  try {
    await page.waitForFunction(predicate, null, { timeout, polling: 100 });
  } catch (err) {
    const s = await snapshot(page);
    const brief = s && { state: s.state, pcState: s.pcState, framesDecoded: s.framesDecoded, burnIn: s.burnIn, lastError: s.lastError };
    throw new Error(`${name}: not reached in ${timeout} ms (${JSON.stringify(brief)})`);
  }
}

// Predicates, evaluated in the page.
const decodedOver30 = () => !!window.sonolive && window.sonolive.stats.framesDecoded > 30;
const burnInKnown = () => !!window.sonolive && typeof window.sonolive.stats.burnIn === 'boolean';
const burnInOff = () => !!window.sonolive && window.sonolive.stats.burnIn === false;
const burnInOn = () => !!window.sonolive && window.sonolive.stats.burnIn === true;

async function openPage(context, url, name) {
  const page = await context.newPage();
  watchConsole(page, name);
  page.setDefaultTimeout(10000);
  const res = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15000 });
  return { page, status: res ? res.status() : 0 };
}

// (a) the sonographer's page: plays, then burn-in off, confirmed over the WebSocket.
async function stepLive() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const { page, status } = await openPage(context, LIVE_URL, 'live');
  if (status >= 400) throw new Error(`live page: HTTP ${status}`);
  await waitStat(page, 'live: framesDecoded > 30', decodedOver30, 20000);
  await waitStat(page, 'live: burn-in state from the WebSocket', burnInKnown, 5000);
  const toggle = page.locator('#burn-in');
  const initial = await page.evaluate(() => window.sonolive.stats.burnIn);
  // Exercise the switch both ways, each confirmed by the server over the
  // WebSocket, and leave burn-in off so the expert page draws its own boxes.
  if (!(await toggle.isChecked())) {
    await toggle.click({ timeout: 5000 });
    await waitStat(page, 'live: WebSocket reports burn_in true', burnInOn, 5000);
  }
  await toggle.click({ timeout: 5000 });
  await waitStat(page, 'live: WebSocket reports burn_in false', burnInOff, 5000);
  log(`live: burn-in ${initial} -> true -> false`);
  return { page, initialBurnIn: initial };
}

// sampleCalipers runs in the page: for the frame whose findings the overlay
// canvas holds now, each fresh detection's calipers (mm) beside those of
// the phantom lesion its box matches (IoU ≥ 0.5), and whether the canvas is
// white a quarter of the way along the long caliper it drew (the middle is
// where the short one crosses it).
function sampleCalipers() {
  const ses = window.sonolive && window.sonolive.session;
  const p = ses && ses.painter;
  const m = p && p.lastMeta;
  if (!m || !p.hasContent || !Array.isArray(m.truth) || !Array.isArray(m.truth_calipers)) return null;
  const iou = (a, b) => {
    const ix = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
    const iy = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
    if (ix <= 0 || iy <= 0) return 0;
    return (ix * iy) / (a[2] * a[3] + b[2] * b[3] - ix * iy);
  };
  const cv = p.canvas;
  const vw = p.video.videoWidth || m.width;
  const vh = p.video.videoHeight || m.height;
  const k = Math.min(cv.width / vw, cv.height / vh);
  const rx = (cv.width - vw * k) / 2;
  const ry = (cv.height - vh * k) / 2;
  const sx = (vw * k) / m.width;
  const sy = (vh * k) / m.height;
  const out = [];
  for (const d of m.detections || []) {
    const c = d.calipers;
    if (!c || typeof c.long_mm !== 'number' || d.stale_age > 0) continue;
    let best = -1;
    let bestIoU = 0.5;
    m.truth.forEach((t, i) => { const v = iou(d.box, t); if (v >= bestIoU) { bestIoU = v; best = i; } });
    const tc = best >= 0 ? m.truth_calipers[best] : null;
    if (!tc || typeof tc.long_mm !== 'number') continue;
    const mx = Math.round(rx + (0.75 * c.long[0] + 0.25 * c.long[2]) * sx);
    const my = Math.round(ry + (0.75 * c.long[1] + 0.25 * c.long[3]) * sy);
    const px = p.g.getImageData(mx - 2, my - 2, 5, 5).data;
    let white = false;
    for (let i = 0; i < px.length; i += 4) white = white || (px[i] > 200 && px[i + 1] > 200 && px[i + 2] > 200 && px[i + 3] > 128);
    out.push({ seq: m.seq, track: d.track_id, long: c.long_mm, short: c.short_mm, truthLong: tc.long_mm, truthShort: tc.short_mm, white });
  }
  return out;
}

// caliperSummary: median relative error of the long and short axis against
// the phantom's truth, the share within 10%, and the share drawn.
function caliperSummary(pairs) {
  const med = (v) => { const a = [...v].sort((x, y) => x - y); return a.length ? a[Math.floor(a.length / 2)] : null; };
  const errL = pairs.map((q) => Math.abs(q.long / q.truthLong - 1));
  const errS = pairs.map((q) => Math.abs(q.short / q.truthShort - 1));
  const share = (v) => (v.length ? v.filter((e) => e <= 0.1).length / v.length : null);
  return {
    n: pairs.length,
    longMedianErr: med(errL), shortMedianErr: med(errS),
    longWithin10: share(errL), shortWithin10: share(errS),
    drawn: pairs.length ? pairs.filter((q) => q.white).length / pairs.length : null,
    example: pairs[Math.floor(pairs.length / 2)] || null,
  };
}

// (b) the expert's page: plays, draws boxes in sync, measures glass-to-glass,
// and its outlines' calipers match the phantom's lesions.
async function stepExpert() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const { page, status } = await openPage(context, EXPERT_URL, 'expert');
  if (status >= 400) throw new Error(`expert page: HTTP ${status}`);
  await waitStat(page, 'expert: framesDecoded > 30', decodedOver30, 20000);
  log(`expert: playing, watching ${SECONDS} s`);
  const pairs = [];
  const until = Date.now() + SECONDS * 1000;
  while (Date.now() < until) {
    const got = await page.evaluate(sampleCalipers).catch(() => null);
    if (got) pairs.push(...got);
    await sleep(200);
  }
  result.calipers = caliperSummary(pairs);
  log(`expert: calipers ${JSON.stringify(result.calipers)}`);
  const s = await snapshot(page);
  result.expert = s;
  const problems = [];
  if (!(s && s.matchedFrames > 0)) problems.push('no frame matched its metadata by RTP timestamp (matchedFrames = 0)');
  if (!(s && s.boxesDrawn > 0)) problems.push('no client-side box drawn (boxesDrawn = 0)');
  if (!(s && s.g2g && s.g2g.n >= 30)) problems.push(`too few glass-to-glass samples (g2g.n = ${s && s.g2g && s.g2g.n})`);
  // The bar: calipers within 10% of the phantom's truth in mm
  // (median over the frames sampled; a lesion growing or shrinking as the
  // probe sweeps leads the tracker's smoothing by a frame or two).
  const c = result.calipers;
  if (c.n < 10) problems.push(`too few calipers to check (${c.n})`);
  else {
    if (!(c.longMedianErr <= 0.1 && c.shortMedianErr <= 0.1)) problems.push(`calipers off the phantom's truth: ${JSON.stringify(c)}`);
    if (!(c.drawn >= 0.9)) problems.push(`long caliper not drawn on the canvas in ${Math.round(100 * (1 - c.drawn))}% of samples`);
  }
  if (problems.length) throw new Error(`expert: ${problems.join('; ')}`);
  return page;
}

// (d) a bad link must say so clearly: the page's own message, so the server
// has to serve the page's HTML for /expert/{source} even when the token is
// bad (with status 401 is fine); the page then finds out from the API.
async function stepBadLink() {
  const context = await browser.newContext({ viewport: { width: 1024, height: 700 } });
  const { page, status } = await openPage(context, BAD_URL, 'bad');
  const uiMessage = page.locator('#fatal-title', { hasText: 'invalid or has expired' });
  try {
    await uiMessage.waitFor({ state: 'visible', timeout: 8000 });
    result.bad = { status, text: (await uiMessage.textContent()).trim() };
    return;
  } catch {
    // fall through to report what the browser shows instead
  }
  const text = ((await page.evaluate(() => (document.body ? document.body.innerText : '')).catch(() => '')) || '').trim();
  result.bad = { status, text: text.slice(0, 200) };
  throw new Error(`bad link: the page does not show the invalid/expired message (HTTP ${status}, body "${text.slice(0, 120)}"); ` +
    'the server must serve expert.html for bad tokens too');
}

// (e) the sonographer's "Active links" lists the expert's invite with its
// connections; Revoke ends the expert's page at once, with the reason.
async function stepRevoke(livePage, expertPage) {
  const row = livePage.locator('#links-list .link-row', { hasText: 'connected' }).first();
  await row.waitFor({ state: 'visible', timeout: 8000 });
  const text = (await row.textContent()).trim();
  const t0 = Date.now();
  await row.locator('button', { hasText: 'Revoke' }).click({ timeout: 5000 });
  const msg = expertPage.locator('#fatal-title', { hasText: 'revoked' });
  await msg.waitFor({ state: 'visible', timeout: 5000 });
  result.revoke = { row: text, shownAfterMs: Date.now() - t0, message: (await msg.textContent()).trim() };
  log(`revoke: "${text}" -> expert page says "${result.revoke.message}" after ${result.revoke.shownAfterMs} ms`);
  await expertPage.screenshot({ path: path.join(OUT_DIR, 'expert-revoked.png'), timeout: 10000 });
  await livePage.screenshot({ path: path.join(OUT_DIR, 'live-after-revoke.png'), timeout: 10000 });
  const s = await snapshot(livePage);
  if (!s || s.state !== 'live') throw new Error(`revoke: the sonographer's page left live (${s && s.state})`);
}

async function main() {
  if (!LIVE_URL || !EXPERT_URL) return fail('LIVE_URL and EXPERT_URL must be set');
  if (!BAD_URL) return fail('BAD_URL must be set (or EXPERT_URL parseable)');
  if (!(SECONDS > 0 && SECONDS <= 60)) return fail('SECONDS must be between 1 and 60');
  fs.mkdirSync(OUT_DIR, { recursive: true });

  browser = await run.launch();

  const live = await stepLive();
  let expertPage;
  try {
    expertPage = await stepExpert();
  } finally {
    result.live = await snapshot(live.page);
  }

  // (c) screenshots: the expert's client-side boxes, and the live page (burn-in off).
  await expertPage.screenshot({ path: path.join(OUT_DIR, 'expert.png'), timeout: 10000 });
  await live.page.screenshot({ path: path.join(OUT_DIR, 'live.png'), timeout: 10000 });
  result.expert = await snapshot(expertPage);
  result.live = await snapshot(live.page);

  await stepRevoke(live.page, expertPage);
  await stepBadLink();

  // Leave the server as we found it.
  if (live.initialBurnIn === true) {
    try {
      await live.page.locator('#burn-in').click({ timeout: 5000 });
      await waitStat(live.page, 'live: burn-in restored', burnInOn, 5000);
    } catch (err) {
      log(`could not restore burn-in: ${err.message}`);
    }
  }

  result.ok = true;
  return finish(0);
}

run.start(main);
