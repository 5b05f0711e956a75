#!/usr/bin/env node
// The pages in Debian's Firefox ESR as shipped, driven by puppeteer-core
// over WebDriver BiDi (never a downloaded browser). Stock Firefox has no
// H.264 for WebRTC until it has fetched its OpenH264 plugin, which a
// clinic network without internet never lets it do: the server must then
// send VP8, and the page must play it with the boxes in sync.
//
//   EXPERT_URL  expert page with token
//   LIVE_URL    sonographer page with token
//   OUT_DIR     where the screenshots go (default: .)
//   FIREFOX     browser binary (default /usr/bin/firefox-esr)
//
// Steps: (a) the expert page at tablet landscape size (1024×768) plays,
// matches frames to metadata by RTP timestamp and draws boxes; the codec
// it received is VP8 when this Firefox offers no H.264; (b) the
// sonographer's page at tablet portrait size (768×1024) plays; screenshots
// of both. One JSON line on stdout, exit 0 (ok) or 1.

'use strict';

const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');
const { createRun, sleep } = require('./harness');

const env = process.env;
const OUT_DIR = env.OUT_DIR || '.';
const FIREFOX = env.FIREFOX || '/usr/bin/firefox-esr';

const result = { ok: false, error: null, firefox: null, h264Offered: null, expert: null, live: null };
const run = createRun({ name: 'firefox', limitMs: 110000, result });
const { log, finish, fail } = run;

async function snapshot(page) {
  return page.evaluate(() => (window.sonolive ? JSON.parse(JSON.stringify(window.sonolive.stats)) : null));
}

async function waitStat(page, name, predicate, timeout) {
  try {
    await page.waitForFunction(predicate, { timeout, polling: 100 });
  } catch {
    const s = await snapshot(page).catch(() => null);
    const brief = s && { state: s.state, pcState: s.pcState, framesDecoded: s.framesDecoded, lastError: s.lastError };
    throw new Error(`${name}: not reached in ${timeout} ms (${JSON.stringify(brief)})`);
  }
}

async function openPage(browser, url, name, viewport) {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  page.on('console', (msg) => { if (msg.type() === 'error') log(`${name} console error: ${msg.text()}`); });
  page.on('pageerror', (err) => log(`${name} page error: ${err.message}`));
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 20000 });
  return page;
}

const decodedOver60 = () => !!window.sonolive && window.sonolive.stats.framesDecoded > 60;

async function main() {
  if (!env.EXPERT_URL || !env.LIVE_URL) return fail('EXPERT_URL and LIVE_URL must be set');
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const browser = await puppeteer.launch({
    browser: 'firefox', executablePath: FIREFOX, headless: true, timeout: 30000,
    extraPrefsFirefox: {
      // Muted video may start without a gesture (the pages mute it).
      'media.autoplay.default': 0,
    },
  });
  run.browser = browser;
  result.firefox = await browser.version();
  log(`firefox ${result.firefox}`);

  const expert = await openPage(browser, env.EXPERT_URL, 'expert', { width: 1024, height: 768 });
  result.h264Offered = await expert.evaluate(() =>
    RTCRtpReceiver.getCapabilities('video').codecs.some((c) => /h264/i.test(c.mimeType)));
  await waitStat(expert, 'expert: framesDecoded > 60', decodedOver60, 30000);
  await sleep(4000);
  const ex = await snapshot(expert);
  result.expert = {
    framesDecoded: ex.framesDecoded, matchedFrames: ex.matchedFrames, boxesDrawn: ex.boxesDrawn,
    codec: ex.quality && ex.quality.codec, fps: ex.quality && ex.quality.fps,
    frameWidth: ex.quality && ex.quality.frameWidth, frameHeight: ex.quality && ex.quality.frameHeight,
    state: ex.state, g2g: ex.g2g,
  };
  await expert.screenshot({ path: path.join(OUT_DIR, 'firefox-expert-1024x768.png') });
  const problems = [];
  if (!(ex.matchedFrames > 0)) problems.push('no frame matched its metadata by RTP timestamp');
  if (!(ex.boxesDrawn > 0)) problems.push('no box drawn');
  const want = result.h264Offered ? /h264/i : /vp8/i;
  if (!want.test(result.expert.codec || '')) problems.push(`received ${result.expert.codec}, want ${want}`);
  if (problems.length) throw new Error(`expert: ${problems.join('; ')}`);
  log(`expert: ${JSON.stringify(result.expert)}`);

  const live = await openPage(browser, env.LIVE_URL, 'live', { width: 768, height: 1024 });
  await waitStat(live, 'live: framesDecoded > 60', decodedOver60, 30000);
  const lv = await snapshot(live);
  result.live = { framesDecoded: lv.framesDecoded, codec: lv.quality && lv.quality.codec, state: lv.state };
  await live.screenshot({ path: path.join(OUT_DIR, 'firefox-live-768x1024.png') });
  result.ok = true;
  return finish(0);
}

run.start(main);
