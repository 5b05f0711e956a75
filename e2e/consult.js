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
//       both screenshots' centre); the sonographer unfreezes for both;
//   (f) the sonographer's page lists who is here and shows the expert's
//       chat line.
//
//   LIVE_URL, EXPERT_URL, OUT_DIR (default .), CHROMIUM
// One JSON line on stdout, exit 0 (ok) or 1.

'use strict';

const path = require('path');
const fs = require('fs');
const { createRun, sleep, watchConsole } = require('./harness');

const env = process.env;
const OUT_DIR = env.OUT_DIR || '.';
const EXPERT_BLUE = [0x4d, 0xb8, 0xff];

const result = { ok: false, error: null, arrow: null, pointer: null, pointBack: null, verdict: null, freeze: null };
const run = createRun({ name: 'consult', limitMs: 100000, result });
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

async function main() {
  if (!env.LIVE_URL || !env.EXPERT_URL) return fail('LIVE_URL and EXPERT_URL must be set');
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const browser = await run.launch();
  const live = await open(browser, env.LIVE_URL, 'live');
  const expert = await open(browser, env.EXPERT_URL, 'expert');
  await sleep(500); // both consult channels open

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
  const row = expert.locator('#verdicts tbody tr[data-track]').first();
  await row.waitFor({ state: 'visible', timeout: 15000 });
  const track = Number(await row.getAttribute('data-track'));
  await row.locator('select').selectOption('BI-RADS 3');
  await row.locator('button[data-verdict="disagree"]').click({ timeout: 5000 });
  await live.waitForFunction(() => window.sonolive.stats.verdictsReceived >= 1, null, { timeout: 5000, polling: 50 });
  const toastText = (await live.locator('#toast').textContent()).trim();
  const pressed = await row.locator('button[data-verdict="disagree"]').getAttribute('aria-pressed');
  result.verdict = { track, toast: toastText, pressed };
  await live.screenshot({ path: path.join(OUT_DIR, 'consult-live-verdict.png') });
  await expert.screenshot({ path: path.join(OUT_DIR, 'consult-expert-verdict.png') });
  log(`verdict: ${JSON.stringify(result.verdict)}`);
  if (!/disagree on #\d+ \(BI-RADS 3\)/.test(toastText) || pressed !== 'true') throw new Error(`verdict not shown: ${JSON.stringify(result.verdict)}`);

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
