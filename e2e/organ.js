#!/usr/bin/env node
// The wrong-preset guard on the sonographer's page in the system Chromium:
// a real breast cine clip under the thyroid preset shows the warning over
// the picture; under the breast preset it never does.
//
//   LIVE_URL  the sonographer's page
//   EXPECT    the organ the warning must name, or "none"
//   SECONDS   how long "none" is watched (default 12)
//   OUT_DIR   where organ-warning.png goes
//
// One JSON line on stdout: the banner's text, when it showed, and the
// guard's state from the server's stats.

'use strict';

const path = require('path');
const { createRun, sleep, watchConsole } = require('./harness');

const env = process.env;
const EXPECT = env.EXPECT || 'none';
const SECONDS = Number(env.SECONDS || 12);
const result = { ok: false, error: null };
const run = createRun({ name: 'organ', limitMs: 90000, result });

run.start(async () => {
  const browser = await run.launch();
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  watchConsole(page, 'organ');
  await page.goto(env.LIVE_URL);
  await page.waitForFunction(() => window.sonolive && window.sonolive.stats.state === 'live', null, { timeout: 30000 });
  const t0 = Date.now();
  const guard = () => page.evaluate(() => {
    const s = window.sonolive.stats.server;
    const el = document.getElementById('organ-warning');
    return { organ: s && s.organ, shown: !el.hidden, text: el.textContent };
  });
  if (EXPECT === 'none') {
    let worst = null;
    while (Date.now() - t0 < SECONDS * 1000) {
      const g = await guard();
      if (g.shown) throw new Error(`warning shown under the right preset: ${JSON.stringify(g)}`);
      worst = g;
      await sleep(250);
    }
    result.guard = worst;
  } else {
    await page.waitForFunction(() => !document.getElementById('organ-warning').hidden, null, { timeout: 40000, polling: 100 });
    result.shownAfterMs = Date.now() - t0;
    result.guard = await guard();
    if (!result.guard.text.includes(EXPECT)) throw new Error(`warning names the wrong organ: ${result.guard.text}`);
    if (env.OUT_DIR) await page.screenshot({ path: path.join(env.OUT_DIR, 'organ-warning.png') });
  }
  result.ok = true;
  return run.finish(0);
});
