#!/usr/bin/env node
// End-to-end check of the recordings library and the teaching replay in the
// system Chromium (never downloads a browser). Plain node script, no test runner.
//
//   LIBRARY_URL  library page with token  (http://host:port/library/phantom?token=…)
//   REPLAY_URL   replay page with token   (http://host:port/replay/{id}?token=…)
//   OUT_DIR      where library.png and replay-event.png go (default: .)
//   CHROMIUM     browser binary (default /usr/bin/chromium)
//
// Steps: (a) the library lists at least one recording card; (b) the replay
// page loads the video and the timeline; (c) it seeks into the lesion event
// with the most frames (preferring one that starts ≥ 5 s in) and checks that the boxes drawn for the presented frame
// are that frame's timeline boxes (within 1 px, source pixels); (d) "Show AI
// marks" off draws no boxes; (e) 2× speed plays ≥ 2.5 s of video in 2 s.
// One JSON line on stdout, exit 0 (ok) or 1; everything else goes to stderr.
// The whole run is capped at 90 s.

'use strict';

const fs = require('fs');
const path = require('path');
const { createRun, sleep, watchConsole } = require('./harness');

const RUN_LIMIT_MS = 88000;
const env = process.env;
const LIBRARY_URL = env.LIBRARY_URL || '';
const REPLAY_URL = env.REPLAY_URL || '';
const OUT_DIR = env.OUT_DIR || '.';
const BOX_TOLERANCE_PX = 1;
const PLAY_S = 2;
const PLAY_RATE = 2;
const MIN_ADVANCE_S = 2.5;
// The clock must run at least this much faster than wall time once playing
// (1 at normal speed). Measured from the first advance, so a decoder that is
// slow to start after a seek on a loaded machine does not count against it.
const MIN_SPEED_RATIO = 1.5;

const result = { ok: false, error: null, library: null, replay: null };
const run = createRun({ name: 'e2e', limitMs: RUN_LIMIT_MS, result });
const { log, finish, fail } = run;
let browser = null;




async function openPage(url, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  watchConsole(page, name);
  page.setDefaultTimeout(10000);
  const res = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15000 });
  const status = res ? res.status() : 0;
  if (status >= 400) throw new Error(`${name} page: HTTP ${status}`);
  return page;
}

// fatalText: the page's own error message, if it shows one.
async function fatalText(page) {
  return page.evaluate(() => {
    const f = document.getElementById('fatal');
    return f && !f.hidden ? f.innerText.trim().replace(/\s+/g, ' ') : '';
  }).catch(() => '');
}

// replayState copies the test-visible fields of window.sonolive.replay.
async function replayState(page) {
  return page.evaluate(() => {
    const r = window.sonolive && window.sonolive.replay;
    if (!r) return null;
    return {
      ready: r.ready, duration: r.duration, currentTime: r.currentTime, mediaTime: r.mediaTime,
      entryT: r.entryT, seq: r.seq, showMarks: r.showMarks, drawnBoxes: r.drawnBoxes,
      paused: r.paused, playbackRate: r.playbackRate, syncMode: r.syncMode, framesDrawn: r.framesDrawn,
      error: r.error,
    };
  });
}

// (a) the library: at least one recording card.
async function stepLibrary() {
  const page = await openPage(LIBRARY_URL, 'library');
  try {
    await page.waitForFunction(() => {
      const l = window.sonolive && window.sonolive.library;
      return (l && l.loaded) || !document.getElementById('fatal').hidden;
    }, null, { timeout: 15000, polling: 100 });
  } catch {
    throw new Error('library: the list did not load in 15 s');
  }
  const fatal = await fatalText(page);
  if (fatal) throw new Error(`library: ${fatal}`);
  const cards = await page.locator('.rec-card').count();
  const lib = await page.evaluate(() => ({ ...window.sonolive.library }));
  result.library = { cards, ids: lib.ids, canDelete: lib.canDelete };
  if (cards < 1) throw new Error('library: no recording card');
  // Let the thumbnails arrive before the screenshot (bounded).
  await page.waitForFunction(() => [...document.querySelectorAll('.rec-thumb img')].every((i) => i.complete),
    null, { timeout: 5000 }).catch(() => log('library: thumbnails still loading'));
  await page.screenshot({ path: path.join(OUT_DIR, 'library.png'), timeout: 10000 });
  log(`library: ${cards} card(s)`);
  await page.context().close();
}

// entryAt: the timeline entry with the largest t <= t0.
function entryAt(entries, t0) {
  let best = null;
  for (const e of entries) {
    if (e.t <= t0 && (!best || e.t > best.t)) best = e;
  }
  return best;
}

const trackBox = (e, track) => {
  const d = e && (e.detections || []).find((x) => x.track_id === track);
  return d ? d.box : null;
};

// (e) what the expert showed and said during the session is in the
// replay at its time: the mark drawn, the verdict next to the box.
async function stepConsult(page, timelineText) {
  const consult = [];
  for (const line of timelineText.split('\n')) {
    let e;
    try { e = JSON.parse(line); } catch { continue; }
    if (e.event !== 'consult') continue;
    try { consult.push({ t: e.t, msg: JSON.parse(e.data.msg) }); } catch { /* skip */ }
  }
  const mark = consult.find((c) => c.msg.type === 'mark');
  const verdict = consult.find((c) => c.msg.type === 'verdict');
  if (!mark || !verdict) throw new Error(`replay: the timeline holds no mark or no verdict (${consult.length} consult events)`);
  const atMark = await page.evaluate(async (t) => { await window.sonolive.seekTo(t); return window.sonolive.replay.consultShown; }, mark.t + 0.2);
  const before = await page.evaluate(async (t) => { await window.sonolive.seekTo(t); return window.sonolive.replay.verdicts; }, Math.max(0, verdict.t - 0.5));
  const after = await page.evaluate(async (t) => { await window.sonolive.seekTo(t); return window.sonolive.replay.verdicts; }, verdict.t + 0.2);
  const v = after[verdict.msg.track_id];
  result.consult = { events: consult.length, markAt: mark.t, shownAtMark: atMark, verdictAt: verdict.t, verdict: v, before: before[verdict.msg.track_id] || null };
  log(`replay consult: ${JSON.stringify(result.consult)}`);
  await page.screenshot({ path: path.join(OUT_DIR, 'replay-consult.png'), timeout: 10000 });
  if (!(atMark >= 1)) throw new Error(`replay: the expert's mark is not shown at its time (${atMark})`);
  if (!v || v.verdict !== verdict.msg.verdict || v.category !== (verdict.msg.category || '')) throw new Error(`replay: verdict at ${verdict.t} s shows ${JSON.stringify(v)}`);
  if (before[verdict.msg.track_id]) throw new Error('replay: the verdict is shown before it was given');

  // The key frame the expert kept: listed with its annotated picture, and
  // a tap on it shows the replay at its time.
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll('#captures li[data-n] img')];
    return imgs.length >= 1 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  }, null, { timeout: 10000, polling: 100 });
  const caps = await page.evaluate(async () => {
    const token = new URLSearchParams(window.location.search).get('token') || '';
    const id = decodeURIComponent(window.location.pathname.split('/').filter(Boolean)[1] || '');
    const res = await fetch(`/api/recordings/${encodeURIComponent(id)}/captures.json`, { headers: { Authorization: `Bearer ${token}` } });
    return res.json();
  });
  if (caps.length !== 1) throw new Error(`replay: ${caps.length} key frames listed, want the expert's one`);
  await page.locator('#captures li[data-n="1"] button.capture').click({ timeout: 5000 });
  await page.waitForFunction((t) => {
    const v = document.getElementById('video');
    return v.paused && !v.seeking && Math.abs(v.currentTime - t) < 0.1;
  }, caps[0].t, { timeout: 8000, polling: 50 });
  result.consult.keyFrame = { t: caps[0].t, by: caps[0].by, marks: (caps[0].marks || []).length, findings: caps[0].detections.length,
    currentTime: await page.evaluate(() => document.getElementById('video').currentTime) };
  log(`replay key frame: ${JSON.stringify(result.consult.keyFrame)}`);
  await page.screenshot({ path: path.join(OUT_DIR, 'replay-key-frame.png'), timeout: 10000 });
}

async function stepReplay() {
  const page = await openPage(REPLAY_URL, 'replay');
  try {
    await page.waitForFunction(() => {
      const r = window.sonolive && window.sonolive.replay;
      return (r && r.ready) || !document.getElementById('fatal').hidden;
    }, null, { timeout: 20000, polling: 100 });
  } catch {
    const s = await replayState(page).catch(() => null);
    throw new Error(`replay: not ready in 20 s (${JSON.stringify(s && { error: s.error, duration: s.duration })})`);
  }
  const fatal = await fatalText(page);
  if (fatal) throw new Error(`replay: ${fatal}`);

  // The recording's meta and timeline, fetched here with the page's token.
  const { meta, timelineText } = await page.evaluate(async () => {
    const token = new URLSearchParams(window.location.search).get('token') || '';
    const id = decodeURIComponent(window.location.pathname.split('/').filter(Boolean)[1] || '');
    const base = `/api/recordings/${encodeURIComponent(id)}`;
    const get = async (p) => {
      const res = await fetch(p, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
      if (!res.ok) throw new Error(`GET ${p}: HTTP ${res.status} ${(await res.text()).trim()}`);
      return res.text();
    };
    return { meta: JSON.parse(await get(base)), timelineText: await get(`${base}/timeline.jsonl`) };
  });
  const entries = [];
  let sessionEvents = 0;
  for (const line of timelineText.split('\n')) {
    if (!line.trim()) continue;
    let e;
    try { e = JSON.parse(line); } catch { continue; /* a cut last line */ }
    if (e.event) { sessionEvents++; continue; } // not a frame
    entries.push(e);
  }
  const events = Array.isArray(meta.lesion_events) ? meta.lesion_events : [];
  const rep = { id: meta.id, status: meta.status, duration_s: meta.duration_s, timelineEntries: entries.length, sessionEvents, events: events.length };
  result.replay = rep;
  if (!events.length) throw new Error('replay: the recording has no lesion event (meta.lesion_events is empty)');
  if (!entries.length) throw new Error('replay: timeline.jsonl is empty');
  if (env.CONSULT === '1') await stepConsult(page, timelineText);

  // (c) the lesion event with the most frames among those that start well
  // into the recording (seeking into the middle of the file is the hard
  // case: fragments there may start with a P frame); else any event.
  const later = events.filter((e) => e.first_s >= 5 && (e.frames || 0) >= 10);
  const pool = later.length ? later : events;
  const ev = pool.reduce((a, b) => ((b.frames || 0) > (a.frames || 0) ? b : a));
  let target = ev.first_s + Math.min(0.5, (ev.last_s - ev.first_s) / 2);
  // The track may be missing from a frame inside its event: aim at the
  // nearest frame that has it, so a miss below is the page's fault.
  if (!trackBox(entryAt(entries, target + 0.001), ev.track_id)) {
    const withTrack = entries.filter((e) => e.t >= ev.first_s - 0.001 && e.t <= ev.last_s + 0.001 && trackBox(e, ev.track_id));
    if (!withTrack.length) throw new Error(`replay: the timeline has no box of track ${ev.track_id} within its event`);
    const near = withTrack.reduce((a, b) => (Math.abs(b.t - target) < Math.abs(a.t - target) ? b : a));
    log(`replay: track ${ev.track_id} is not in the frame at ${target.toFixed(3)} s; using ${near.t} s`);
    target = near.t + 0.002;
  }
  rep.event = ev;
  rep.target = Math.round(target * 1000) / 1000;
  await page.evaluate(() => window.sonolive.replay.paused || document.getElementById('video').pause());
  const drawn = await page.evaluate((t) => window.sonolive.seekTo(t), target);
  const after = await replayState(page);
  rep.seek = { entryT: drawn.entryT, mediaTime: drawn.mediaTime, currentTime: drawn.currentTime, seq: drawn.seq, boxes: drawn.drawnBoxes.length };
  if (drawn.entryT == null) throw new Error(`replay: no timeline entry drawn at ${target.toFixed(3)} s`);
  // The drawn entry belongs to the presented frame: at or before it, within a frame or two.
  if (!(drawn.entryT <= drawn.mediaTime + 0.001 + 1e-9)) {
    throw new Error(`replay: drawn entry t=${drawn.entryT} is after the presented frame (mediaTime ${drawn.mediaTime})`);
  }
  if (Math.abs(target - drawn.entryT) > 0.1) {
    throw new Error(`replay: seekTo(${target.toFixed(3)}) drew the entry at t=${drawn.entryT} (mediaTime ${drawn.mediaTime}): out of sync`);
  }
  if (after.entryT !== drawn.entryT) throw new Error(`replay: the frame changed after seekTo (entryT ${drawn.entryT} → ${after.entryT}) though paused`);
  const mine = drawn.drawnBoxes.find((b) => b.track_id === ev.track_id);
  if (!mine) {
    throw new Error(`replay: track ${ev.track_id} not drawn at entryT=${drawn.entryT} (drawn: ${JSON.stringify(drawn.drawnBoxes.map((b) => b.track_id))})`);
  }
  const want = trackBox(entryAt(entries, drawn.entryT), ev.track_id);
  if (!want) throw new Error(`replay: the timeline entry at t<=${drawn.entryT} has no box of track ${ev.track_id}, yet the page drew one`);
  const diff = Math.max(...want.map((v, i) => Math.abs(v - mine.box[i])));
  rep.box = { drawn: mine.box, timeline: want, maxDiffPx: Math.round(diff * 1000) / 1000 };
  if (!(diff <= BOX_TOLERANCE_PX)) {
    throw new Error(`replay: drawn box ${JSON.stringify(mine.box)} differs from the timeline's ${JSON.stringify(want)} by ${diff.toFixed(2)} px`);
  }
  // The recording keeps the lesion's outline and calipers with its box.
  rep.outline = { points: mine.outline, calipers: mine.calipers };
  if (!(mine.outline >= 3 && mine.calipers && mine.calipers.long_px > 0)) {
    throw new Error(`replay: track ${ev.track_id} drawn without its outline and calipers (${JSON.stringify(rep.outline)})`);
  }
  await sleep(500); // let the native controls' seek spinner fade before the screenshot
  await page.screenshot({ path: path.join(OUT_DIR, 'replay-event.png'), timeout: 10000 });
  log(`replay: track ${ev.track_id} drawn at t=${drawn.entryT} (max diff ${diff.toFixed(3)} px)`);

  // (d) "Show AI marks" off: nothing drawn, also on the next frame drawn.
  await page.locator('#show-marks').uncheck({ timeout: 5000 });
  await page.waitForFunction(() => window.sonolive.replay.showMarks === false && window.sonolive.replay.drawnBoxes.length === 0,
    null, { timeout: 3000, polling: 50 }).catch(() => {});
  const off = await page.evaluate(async (t) => {
    const now = { showMarks: window.sonolive.replay.showMarks, boxes: window.sonolive.replay.drawnBoxes.length };
    const next = await window.sonolive.seekTo(t);
    return { now, next: { showMarks: next.showMarks, boxes: next.drawnBoxes.length, entryT: next.entryT } };
  }, target + 1 / 30);
  rep.marksOff = off;
  if (off.now.showMarks !== false) throw new Error('replay: the "Show AI marks" switch did not turn the marks off');
  if (off.now.boxes !== 0 || off.next.boxes !== 0) {
    throw new Error(`replay: boxes still drawn with "Show AI marks" off (${off.now.boxes} now, ${off.next.boxes} on the next frame)`);
  }
  await page.locator('#show-marks').check({ timeout: 5000 });

  // (e) 2× speed: play from a point with enough video left.
  const duration = after.duration;
  const need = PLAY_S * PLAY_RATE + 0.5;
  if (!(duration >= MIN_ADVANCE_S + 0.5)) throw new Error(`replay: the recording (${duration} s) is too short for the speed check`);
  const from = Math.max(0, Math.min(target, duration - need));
  await page.evaluate((t) => window.sonolive.seekTo(t), from);
  await page.locator('#speed').selectOption(String(PLAY_RATE), { timeout: 5000 });
  const t0 = await page.evaluate(() => document.getElementById('video').currentTime);
  await page.locator('#play-pause').click({ timeout: 5000 });
  // Wait for the first advance (up to 10 s), then time the clock.
  const start = await page.waitForFunction((t) => {
    const v = document.getElementById('video');
    return v.currentTime > t + 0.05 ? { ct: v.currentTime, wall: performance.now() } : null;
  }, t0, { timeout: 10000, polling: 20 }).then((h) => h.jsonValue());
  await sleep(PLAY_S * 1000);
  const played = await page.evaluate(() => {
    const v = document.getElementById('video');
    const r = { currentTime: v.currentTime, wall: performance.now(), rate: v.playbackRate, paused: v.paused, ended: v.ended, frames: window.sonolive.replay.framesDrawn };
    v.pause();
    return r;
  });
  const advanced = played.currentTime - t0;
  const ratio = (played.currentTime - start.ct) / ((played.wall - start.wall) / 1000);
  rep.speed = { from: t0, to: played.currentTime, advanced: Math.round(advanced * 1000) / 1000, ratio: Math.round(ratio * 100) / 100, rate: played.rate, ended: played.ended };
  if (played.rate !== PLAY_RATE) throw new Error(`replay: playbackRate is ${played.rate} after choosing ${PLAY_RATE}×`);
  if (!(advanced >= MIN_ADVANCE_S) || !(ratio >= MIN_SPEED_RATIO)) {
    throw new Error(`replay: at ${PLAY_RATE}× the video advanced ${advanced.toFixed(2)} s, ${ratio.toFixed(2)}× wall time once playing (want ≥ ${MIN_ADVANCE_S} s and ≥ ${MIN_SPEED_RATIO}×)`);
  }
  rep.final = await replayState(page);
  delete rep.final.drawnBoxes;
  log(`replay: ${PLAY_RATE}× advanced ${advanced.toFixed(2)} s, ${ratio.toFixed(2)}× wall time once playing`);
}

async function main() {
  if (!LIBRARY_URL || !REPLAY_URL) return fail('LIBRARY_URL and REPLAY_URL must be set');
  fs.mkdirSync(OUT_DIR, { recursive: true });
  browser = await run.launch();
  await stepLibrary();
  await stepReplay();
  result.ok = true;
  return finish(0);
}

run.start(main);
