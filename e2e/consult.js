#!/usr/bin/env node
// The expert shows something on the image and the sonographer sees it, in
// two Chromium pages (system Chromium, never a downloaded one):
//   (a) the expert draws an arrow with the mouse; on the sonographer's page
//       the arrow's pixels are the expert's colour at the place the same
//       source pixels are shown there (read from a screenshot);
//   (b) the expert moves the pointer across the picture: input-to-drawn
//       latency on the sonographer's page, p50/p95 (one machine, one clock);
//   (c) the sonographer points back and the expert's page draws it;
//   (d) the expert disagrees with an AI finding in "Your read"; the
//       sonographer's page is told and labels the box with it;
//   (e) the expert freezes: both pages hold the same frame (the same RTP
//       timestamp, the same picture from the server, its pixels equal on
//       both screenshots' centre); the sonographer keeps it as a key frame
//       (both pages told, the recording lists it); then unfreezes for both;
//   (f) the sonographer's page lists who is here and shows the expert's
//       chat line;
//   (g) voice both ways: each page's fake microphone is on and the other
//       page lists it; tone bursts sent as each page's voice are heard on
//       the other (an AnalyserNode on the received track): mouth-to-ear
//       p50/p95 from the burst's start in the sender's AudioContext to its
//       onset at the receiver, one machine, one clock; the speaker is
//       shown speaking; a muted expert is silent and listed as muted.
//
//   LIVE_URL, EXPERT_URL, OUT_DIR (default .), CHROMIUM; VOICE_ONLY=1
//   runs (g) alone; VOICES_RECORDED=1: the server records the voices, and
//   both pages must say so.
// One JSON line on stdout, exit 0 (ok) or 1.

'use strict';

const path = require('path');
const fs = require('fs');
const { createRun, sleep, watchConsole } = require('./harness');

const env = process.env;
const OUT_DIR = env.OUT_DIR || '.';
const EXPERT_BLUE = [0x4d, 0xb8, 0xff];

const result = { ok: false, error: null, arrow: null, pointer: null, pointBack: null, verdict: null, freeze: null, capture: null, voice: null };
// The whole run's limit, not a target: on a loaded 2-core machine its
// steps (arrow, pointer, verdict, capture, freeze, chat, voice) take 80–110 s.
const run = createRun({ name: 'consult', limitMs: 140000, result });
const { log, finish, fail } = run;

const decodedOver30 = () => !!window.sonolive && window.sonolive.stats.framesDecoded > 30 && window.sonolive.stats.dcState === 'open';

async function open(browser, url, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  watchConsole(page, name);
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15000 });
  await page.waitForFunction(decodedOver30, null, { timeout: 25000, polling: 100 });
  return page;
}

// geometry returns where source pixel (sx, sy) is on the page, in CSS
// pixels, the way marks.js maps it (contain-fit of the video in the canvas).
async function geometry(page) {
  return page.evaluate(() => {
    const c = document.getElementById('marks');
    const v = document.getElementById('video');
    const b = c.getBoundingClientRect();
    const m = window.sonolive.stats.server;
    const vw = v.videoWidth || m.width;
    const vh = v.videoHeight || m.height;
    const s = Math.min(b.width / vw, b.height / vh);
    return { left: b.left, top: b.top, w: b.width, h: b.height, rx: (b.width - vw * s) / 2, ry: (b.height - vh * s) / 2, rw: vw * s, rh: vh * s, srcW: m.width, srcH: m.height };
  });
}
const at = (g, sx, sy) => [g.left + g.rx + (sx / g.srcW) * g.rw, g.top + g.ry + (sy / g.srcH) * g.rh];

async function tool(page, name) {
  await page.locator(`#tools [data-tool="${name}"]`).click({ timeout: 5000 });
}

// pixelsNear reads a screenshot back through the page's own image decoder
// and counts, in a (2r+1)² square around (x, y), the pixels near rgb.
async function pixelsNear(page, png, x, y, r, rgb) {
  return page.evaluate(async ({ b64, x, y, r, rgb }) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(Math.round(x - r), Math.round(y - r), 2 * r + 1, 2 * r + 1).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i + 1] - rgb[1]) < 40 && Math.abs(d[i + 2] - rgb[2]) < 40) n++;
    }
    return n;
  }, { b64: png.toString('base64'), x, y, r, rgb });
}

const pct = (a, p) => {
  if (!a.length) return null;
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};

// toneSource makes the page's voice a 1 kHz tone it can switch on and
// off, in place of its microphone.
const toneSource = (page) => page.evaluate(() => {
  const ac = new AudioContext();
  const osc = ac.createOscillator();
  osc.frequency.value = 1000;
  const gain = ac.createGain();
  gain.gain.value = 0;
  const dest = ac.createMediaStreamDestination();
  osc.connect(gain).connect(dest);
  osc.start();
  window.__tone = { set: (on) => gain.gain.setValueAtTime(on ? 0.8 : 0, ac.currentTime) };
  window.sonolive.voice.useTrack(dest.stream.getAudioTracks()[0]);
  return ac.state;
});

// ear watches a stream on page (the page's own microphone, or the voice of
// viewer `from` on the slot the server names for it): onsets of sound after
// 300 ms of quiet, in wall-clock ms, and the loudest RMS.
const listen = (page, from) => page.evaluate((from) => {
  const v = window.sonolive.voice;
  let stream;
  if (from === 'self') {
    stream = new MediaStream([v.track]);
  } else {
    const el = document.querySelector(`audio[data-slot="${v.slotOf(from)}"]`);
    if (v.slotOf(from) < 0 || !el || !el.srcObject) return `no slot for ${from}: ${JSON.stringify(v.slots)}`;
    stream = el.srcObject;
  }
  const ac = new AudioContext();
  const an = ac.createAnalyser();
  an.fftSize = 512;
  ac.createMediaStreamSource(stream).connect(an);
  const buf = new Float32Array(an.fftSize);
  const ear = { onsets: [], quietSince: performance.now(), loud: false, maxRms: 0, ac };
  ear.timer = setInterval(() => {
    an.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const rms = Math.sqrt(sum / buf.length);
    ear.maxRms = Math.max(ear.maxRms, rms);
    const now = performance.now();
    if (rms > 0.05) {
      if (!ear.loud && now - ear.quietSince > 300) ear.onsets.push(performance.timeOrigin + now);
      ear.loud = true;
    } else {
      if (ear.loud) ear.quietSince = now;
      ear.loud = false;
    }
  }, 2);
  (window.__ears = window.__ears || {})[from] = ear;
  return ac.state;
}, from);

const stopListening = (page, from) => page.evaluate((from) => {
  const e = window.__ears[from];
  clearInterval(e.timer);
  e.ac.close();
  return { onsets: e.onsets, maxRms: Math.round(e.maxRms * 1000) / 1000 };
}, from);

// pair matches each onset at the mouth with the first at the ear after it.
function pair(mouth, ear) {
  const lat = [];
  for (const b of mouth.onsets) {
    const o = ear.onsets.find((t) => t >= b && t < b + 800);
    if (o !== undefined) lat.push(Math.round(o - b));
  }
  return { beeps: mouth.onsets.length, heard: lat.length, earOnsets: ear.onsets.length, p50: pct(lat, 0.5), p95: pct(lat, 0.95), max: pct(lat, 1) };
}

// loudness is the loudest RMS of the voice of `from` heard on page over ms.
async function loudness(page, from, ms) {
  await listen(page, from);
  await sleep(ms);
  return (await stopListening(page, from)).maxRms;
}

// until listens to the voice of `from` on page in 250 ms windows until
// ok(loudest RMS) holds, for at most 5 s; it returns the ms it took.
async function until(page, from, ok) {
  const t0 = Date.now();
  while (Date.now() - t0 < 5000) {
    if (ok(await loudness(page, from, 250))) return Date.now() - t0;
  }
  return null;
}

async function voice(live, expert) {
  const micOn = () => window.sonolive.stats.voice && window.sonolive.stats.voice.mic === 'open';
  await live.waitForFunction(micOn, null, { timeout: 10000, polling: 100 });
  await expert.waitForFunction(micOn, null, { timeout: 10000, polling: 100 });
  const ids = { live: await live.evaluate(() => window.sonolive.stats.viewerId), expert: await expert.evaluate(() => window.sonolive.stats.viewerId) };
  // Each lists the other's microphone as on.
  const listed = ([id, mic]) => !!document.querySelector(`#people li[data-viewer="${id}"][data-mic="${mic}"]`);
  await live.waitForFunction(listed, [ids.expert, 'open'], { timeout: 5000, polling: 100 });
  await expert.waitForFunction(listed, [ids.live, 'open'], { timeout: 5000, polling: 100 });
  // Whether the voices are recorded, every page says so (and only then).
  const pill = () => !document.getElementById('voices-pill').hidden;
  const shown = { live: await live.evaluate(pill), expert: await expert.evaluate(pill) };
  if (shown.live !== !!env.VOICES_RECORDED || shown.expert !== !!env.VOICES_RECORDED) {
    throw new Error(`"Voices recorded" shown ${JSON.stringify(shown)}, recorded: ${!!env.VOICES_RECORDED}`);
  }

  // Mouth to ear, both ways at once: the fake microphones beep twice a
  // second; each beep's onset on the sender's own microphone track (after
  // the browser's echo cancellation) against its onset in the other page.
  await Promise.all([listen(live, 'self'), listen(expert, 'self'), listen(live, ids.expert), listen(expert, ids.live)]);
  await sleep(10000);
  const [mouthL, mouthE, earL, earE] = await Promise.all([
    stopListening(live, 'self'), stopListening(expert, 'self'), stopListening(live, ids.expert), stopListening(expert, ids.live)]);
  const out = { sonographerToExpert: pair(mouthL, earE), expertToSonographer: pair(mouthE, earL) };
  // The light run (VOICE_ONLY) holds the delay: four beeps in five must
  // arrive within 800 ms. Beside the 720p detector and two browsers'
  // decodes on two cores, CI has both delayed beeps past that window
  // (15 of 19) and starved the pages' 2 ms sampling timers so that beeps
  // run together at either end (6 of 13 paired, the heard ones p95 459 ms);
  // that run asks only that the voice gets through both ways as separate
  // beeps, at least half as many as the sender's own track showed.
  for (const [k, r] of Object.entries(out)) {
    const ok = env.VOICE_ONLY ? r.heard >= 0.8 * r.beeps : r.earOnsets >= 0.5 * r.beeps && r.heard >= 1;
    if (r.beeps < 10 || !ok) throw new Error(`voice ${k}: ${r.heard} of ${r.beeps} beeps heard within 800 ms, ${r.earOnsets} at the ear: ${JSON.stringify(r)}`);
  }
  out.server = await live.evaluate(() => window.sonolive.stats.server && window.sonolive.stats.server.voice);

  // A tone in place of the expert's microphone: the sonographer's page
  // shows the expert speaking.
  await toneSource(expert);
  await expert.evaluate(() => window.__tone.set(true));
  const speaking = (id) => !!document.querySelector(`#people li.speaking[data-viewer="${id}"]`);
  await live.waitForFunction(speaking, ids.expert, { timeout: 5000, polling: 50 });
  await live.screenshot({ path: path.join(OUT_DIR, 'consult-live-voice.png') });
  out.speakingShown = true;

  // Muted: listed as muted, and nothing heard once what was on its way
  // has played out (up to a second or more on a loaded machine: the
  // quiet is waited for, then held for a second).
  await expert.locator('#mic-btn').click({ timeout: 5000 });
  await live.waitForFunction(listed, [ids.expert, 'muted'], { timeout: 5000, polling: 50 });
  out.mutedAfterMs = await until(live, ids.expert, (rms) => rms < 0.05);
  out.mutedRms = await loudness(live, ids.expert, 1000);
  await expert.screenshot({ path: path.join(OUT_DIR, 'consult-expert-muted.png') });

  // Push to talk: silent until the button is held, heard while it is.
  await expert.locator('#ptt').check({ timeout: 5000 });
  await live.waitForFunction(listed, [ids.expert, 'ptt'], { timeout: 5000, polling: 50 });
  await until(live, ids.expert, (rms) => rms < 0.05);
  out.pttReleasedRms = await loudness(live, ids.expert, 1000);
  const b = await expert.locator('#mic-btn').boundingBox();
  await expert.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  await expert.mouse.down();
  await live.waitForFunction(listed, [ids.expert, 'talking'], { timeout: 5000, polling: 50 });
  out.pttHeardAfterMs = await until(live, ids.expert, (rms) => rms >= 0.1);
  out.pttHeldRms = await loudness(live, ids.expert, 500);
  await expert.mouse.up();
  await expert.evaluate(() => window.__tone.set(false));
  await expert.locator('#ptt').uncheck({ timeout: 5000 });
  if (out.mutedRms > 0.05 || out.pttReleasedRms > 0.05 || out.pttHeldRms < 0.1) {
    throw new Error(`mute / push to talk: ${JSON.stringify(out)}`);
  }
  return out;
}

async function main() {
  if (!env.LIVE_URL || !env.EXPERT_URL) return fail('LIVE_URL and EXPERT_URL must be set');
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const browser = await run.launch();
  const live = await open(browser, env.LIVE_URL, 'live');
  const expert = await open(browser, env.EXPERT_URL, 'expert');
  await sleep(500); // both consult channels open
  if (env.VOICE_ONLY) {
    result.voice = await voice(live, expert);
    log(`voice: ${JSON.stringify(result.voice)}`);
    result.ok = true;
    return finish(0);
  }

  // (a) an arrow from 30 % to 60 % of the picture, drawn with the mouse.
  const ge = await geometry(expert);
  const A = [ge.srcW * 0.3, ge.srcH * 0.3];
  const B = [ge.srcW * 0.6, ge.srcH * 0.6];
  await tool(expert, 'arrow');
  await expert.mouse.move(...at(ge, ...A));
  await expert.mouse.down();
  await expert.mouse.move(...at(ge, ...B), { steps: 8 });
  await expert.mouse.up();
  await live.waitForFunction(() => window.sonolive.stats.marks.received >= 1, null, { timeout: 5000, polling: 50 });
  await sleep(200);
  const gl = await geometry(live);
  const mid = at(gl, (A[0] + B[0]) / 2, (A[1] + B[1]) / 2);
  const off = at(gl, A[0], B[1]); // a corner of the box the arrow crosses diagonally: no arrow there
  const png = await live.screenshot({ path: path.join(OUT_DIR, 'consult-live-arrow.png') });
  await expert.screenshot({ path: path.join(OUT_DIR, 'consult-expert-arrow.png') });
  const onLine = await pixelsNear(live, png, mid[0], mid[1], 3, EXPERT_BLUE);
  const offLine = await pixelsNear(live, png, off[0], off[1], 3, EXPERT_BLUE);
  result.arrow = { source: { from: A, to: B }, livePx: mid.map(Math.round), blueOnLine: onLine, blueOffLine: offLine };
  log(`arrow: ${JSON.stringify(result.arrow)}`);
  if (onLine < 3 || offLine > 0) throw new Error(`arrow not at its place on the sonographer's page: ${JSON.stringify(result.arrow)}`);
  await tool(expert, 'arrow'); // put it down

  // (b) the pointer moved across the picture, 150 moves at ~30 a second.
  await tool(expert, 'pointer');
  for (let i = 0; i < 150; i++) {
    const f = 0.2 + 0.6 * (i / 150);
    await expert.mouse.move(...at(ge, ge.srcW * f, ge.srcH * (0.5 + 0.2 * Math.sin(i / 10))));
    await sleep(30);
  }
  await sleep(300);
  const lat = await live.evaluate(() => window.sonolive.stats.marks.drawnLatencyMs.slice());
  result.pointer = { samples: lat.length, p50: pct(lat, 0.5), p95: pct(lat, 0.95), max: pct(lat, 1) };
  log(`pointer input → drawn on the sonographer's page: ${JSON.stringify(result.pointer)}`);
  if (lat.length < 50) throw new Error(`only ${lat.length} pointer moves arrived`);

  // (c) the sonographer points back.
  const before = await expert.evaluate(() => window.sonolive.stats.marks.received);
  await tool(live, 'pointer');
  for (let i = 0; i < 20; i++) {
    await live.mouse.move(...at(gl, gl.srcW * (0.4 + i / 100), gl.srcH * 0.4));
    await sleep(30);
  }
  await expert.waitForFunction((n) => window.sonolive.stats.marks.received > n, before, { timeout: 5000, polling: 50 });
  result.pointBack = { received: (await expert.evaluate(() => window.sonolive.stats.marks.received)) - before };
  await expert.screenshot({ path: path.join(OUT_DIR, 'consult-expert-pointer.png') });

  // (d) a verdict from the expert's "Your read" panel.
  // The panel puts each new track's row first: pin the row by its track,
  // or a track born between two steps moves .first() to another row.
  const first = expert.locator('#verdicts tbody tr[data-track]').first();
  await first.waitFor({ state: 'visible', timeout: 15000 });
  const track = Number(await first.getAttribute('data-track'));
  const row = expert.locator(`#verdicts tbody tr[data-track="${track}"]`);
  await row.locator('select').selectOption('BI-RADS 3');
  await row.locator('button[data-verdict="disagree"]').click({ timeout: 5000 });
  await live.waitForFunction(() => window.sonolive.stats.verdictsReceived >= 1, null, { timeout: 5000, polling: 50 });
  const toastText = (await live.locator('#toast').textContent()).trim();
  const pressed = await row.locator('button[data-verdict="disagree"]').getAttribute('aria-pressed');
  result.verdict = { track, toast: toastText, pressed };
  await live.screenshot({ path: path.join(OUT_DIR, 'consult-live-verdict.png') });
  await expert.screenshot({ path: path.join(OUT_DIR, 'consult-expert-verdict.png') });
  log(`verdict: ${JSON.stringify(result.verdict)}`);
  if (!toastText.includes(`disagree on #${track} (BI-RADS 3)`) || pressed !== 'true') throw new Error(`verdict not shown: ${JSON.stringify(result.verdict)}`);

  // (e) freeze and unfreeze.
  await expert.locator('#freeze-btn').click({ timeout: 5000 });
  const held = () => window.sonolive.stats.frozen && window.sonolive.stats.frozen.loaded;
  await expert.waitForFunction(held, null, { timeout: 8000, polling: 50 });
  await live.waitForFunction(held, null, { timeout: 8000, polling: 50 });
  await sleep(1000); // live goes on underneath; the held frame must not change
  const fe = await expert.evaluate(() => ({ ...window.sonolive.stats.frozen, src: document.getElementById('still').src.replace(/&token=.*/, '') }));
  const fl = await live.evaluate(() => ({ ...window.sonolive.stats.frozen, src: document.getElementById('still').src.replace(/&token=.*/, '') }));
  // The held picture's pixels, read back from each page's <img>.
  const stillHash = (page) => page.evaluate(() => {
    const img = document.getElementById('still');
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 97) h = (h * 31 + d[i]) >>> 0;
    return h;
  });
  const he = await stillHash(expert);
  const hl = await stillHash(live);
  await live.screenshot({ path: path.join(OUT_DIR, 'consult-live-frozen.png') });
  await expert.screenshot({ path: path.join(OUT_DIR, 'consult-expert-frozen.png') });
  const liveDecoding = await live.evaluate(() => window.sonolive.stats.framesDecoded);

  // (e') the sonographer keeps the frozen frame as a key frame: both pages
  // are told, and the recording lists it with the frozen frame's
  // timestamp, its pictures served to the sonographer's link.
  await live.locator('#capture-btn').click({ timeout: 5000 });
  const kept = () => window.sonolive.stats.captures.length >= 1;
  await live.waitForFunction(kept, null, { timeout: 8000, polling: 50 });
  await expert.waitForFunction(kept, null, { timeout: 8000, polling: 50 });
  const capLive = await live.evaluate(() => window.sonolive.stats.captures[0]);
  const capExpert = await expert.evaluate(() => window.sonolive.stats.captures[0]);
  const listed = await live.evaluate(async (rec) => {
    const token = new URLSearchParams(location.search).get('token');
    const auth = { headers: { Authorization: `Bearer ${token}` } };
    const list = await (await fetch(`/api/recordings/${rec}/captures.json`, auth)).json();
    const pic = await fetch(`/api/recordings/${rec}/capture-001-annotated.jpg`, auth);
    return { list, annotated: [pic.status, pic.headers.get('content-type'), (await pic.arrayBuffer()).byteLength] };
  }, capLive.recording);
  result.capture = { frozen: { ts: fl.ts, width: fl.width }, live: capLive, expert: capExpert, listed: listed.list.map((c) => ({ n: c.n, rtp_ts: c.rtp_ts, by: c.by, t: c.t, width: c.width, marks: (c.marks || []).length, findings: c.detections.length })), annotated: listed.annotated };
  log(`capture: ${JSON.stringify(result.capture)}`);
  const c0 = listed.list[0];
  if (capExpert.n !== capLive.n || capLive.by !== 'sonographer' || listed.list.length !== 1 || c0.rtp_ts !== fl.ts || c0.width !== fl.width ||
      listed.annotated[0] !== 200 || listed.annotated[1] !== 'image/jpeg') {
    throw new Error(`capture: ${JSON.stringify(result.capture)}`);
  }
  await live.locator('#freeze-btn').click({ timeout: 5000 });
  const released = () => window.sonolive.stats.frozen === null && document.getElementById('still').hidden;
  await live.waitForFunction(released, null, { timeout: 5000, polling: 50 });
  await expert.waitForFunction(released, null, { timeout: 5000, polling: 50 });
  result.freeze = { expert: fe, live: fl, sameStill: fe.src === fl.src, pixelsEqual: he === hl, liveFramesDecodedWhileFrozen: liveDecoding };
  log(`freeze: ${JSON.stringify(result.freeze)}`);
  if (fe.ts !== fl.ts || fe.src !== fl.src || he !== hl || fe.width !== (await live.evaluate(() => window.sonolive.stats.server.width))) {
    throw new Error(`the pages did not hold the same frame: ${JSON.stringify(result.freeze)}`);
  }

  // (f) who is here, and a chat line from the expert.
  await expert.locator('#chat-input').fill('Please angle towards the nipple');
  await expert.locator('#chat-form button').click({ timeout: 5000 });
  const line = live.locator('#chat-log p', { hasText: 'Please angle towards the nipple' });
  await line.waitFor({ state: 'visible', timeout: 5000 });
  const people = await live.locator('#people li').allTextContents();
  result.chat = { line: (await line.textContent()).trim(), people };
  log(`chat: ${JSON.stringify(result.chat)}`);
  if (people.length !== 2 || !people.some((p) => /expert/i.test(p)) || !people.some((p) => /you/.test(p))) {
    throw new Error(`presence on the sonographer's page: ${JSON.stringify(people)}`);
  }
  // (g) voice.
  result.voice = await voice(live, expert);
  log(`voice: ${JSON.stringify(result.voice)}`);

  // Tablet sizes: the expert's landscape, the sonographer's portrait.
  await expert.setViewportSize({ width: 1024, height: 768 });
  await live.setViewportSize({ width: 768, height: 1024 });
  await sleep(500);
  await expert.screenshot({ path: path.join(OUT_DIR, 'chromium-expert-1024x768.png') });
  await live.screenshot({ path: path.join(OUT_DIR, 'chromium-live-768x1024.png') });
  result.ok = true;
  return finish(0);
}

run.start(main);
