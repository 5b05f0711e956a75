#!/usr/bin/env node
// The watch page through LiveKit in the system Chromium: it joins the
// source's room with the token the box mints, plays the video and draws
// the boxes on the frames they belong to (metadata from LiveKit data
// packets, matched by RTP timestamp under the shift LiveKit applies).
//
//   WATCH_URLS  watch page links, space-separated (one Chromium tab each)
//   OUT_DIR     where watch.png goes
//   SECONDS     how long to watch (default 10)
//
// One JSON line on stdout: per tab, frames shown and matched, boxes drawn.

'use strict';

const path = require('path');
const { createRun, sleep, watchConsole } = require('./harness');

const env = process.env;
const URLS = (env.WATCH_URLS || '').split(/\s+/).filter(Boolean);
const SECONDS = Number(env.SECONDS || 10);
const result = { ok: false, error: null, tabs: [] };
const run = createRun({ name: 'watch', limitMs: 60000 + SECONDS * 1000, result });

run.start(async () => {
  if (!URLS.length) return run.fail('WATCH_URLS is empty');
  const browser = await run.launch();
  const pages = [];
  for (const url of URLS) {
    const page = await browser.newPage({ viewport: { width: 960, height: 640 } });
    watchConsole(page, 'watch');
    await page.goto(url);
    pages.push(page);
  }
  // Playing, with frames shown.
  for (const page of pages) {
    await page.waitForFunction(() => window.sonoliveWatch && window.sonoliveWatch.stats().shown > 10, null, { timeout: 30000 });
  }
  const before = [];
  for (const page of pages) before.push(await page.evaluate(() => window.sonoliveWatch.stats()));
  // Count boxes the painter draws over the window.
  for (const page of pages) {
    await page.evaluate(() => {
      window.boxFrames = 0;
      const c = document.getElementById('overlay');
      const g = c.getContext('2d');
      const orig = g.strokeRect.bind(g);
      g.strokeRect = (...a) => { window.boxFrames++; return orig(...a); };
    });
  }
  await sleep(SECONDS * 1000);
  for (const [i, page] of pages.entries()) {
    const s = await page.evaluate(() => ({ ...window.sonoliveWatch.stats(), boxes: window.boxFrames,
      pill: document.getElementById('sync-pill').textContent, state: document.getElementById('state-pill').textContent }));
    result.tabs.push({ shown: s.shown - before[i].shown, matched: s.matched - before[i].matched, shift: s.shift, boxes: s.boxes, pill: s.pill, state: s.state });
  }
  if (env.OUT_DIR) await pages[pages.length - 1].screenshot({ path: path.join(env.OUT_DIR, 'watch.png') });
  result.ok = true;
  return run.finish(0);
});
