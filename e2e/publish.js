'use strict';
// publish.js: a tablet's browser publishes a real breast clip through the
// /publish page (Chromium's fake capture device, fed from a y4m of the
// clip padded like an app window), cropped to the ultrasound image by
// dragging over the preview; an expert in a second browser sees it with the
// detector's boxes. Glass-to-glass from the publishing page to the expert's
// screen: a white square flashed in the corner of the picture sent, once a
// second, timed where it is drawn and where the expert's decoded frames
// show it (both browsers on this machine's clock).
//
// env: CHROMIUM, PUBLISH_URL, BASE, SOURCE, SONO_TOKEN, Y4M, OUT_DIR, SECONDS

const path = require('path');
const { chromium } = require('playwright-core');
const { CHROMIUM_ARGS, createRun, sleep, watchConsole } = require('./harness');

const env = process.env;
const SECONDS = Number(env.SECONDS || 15);
const result = { ok: false };
const run = createRun({ name: 'publish', limitMs: 150000, result });
const { log } = run;

const pct = (a, q) => {
  if (!a.length) return null;
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

async function api(method, p, body) {
  const res = await fetch(env.BASE + p, {
    method, body: body && JSON.stringify(body),
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${env.SONO_TOKEN}` },
  });
  return { status: res.status, body: await res.text() };
}

async function publisher() {
  const browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium', timeout: 20000,
    args: [...CHROMIUM_ARGS, `--use-file-for-fake-video-capture=${env.Y4M}`],
  });
  run.browser = browser;
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  watchConsole(page, 'publisher');
  page.setDefaultTimeout(15000);
  await page.goto(env.PUBLISH_URL, { waitUntil: 'domcontentloaded' });
  // The capture device the cart's video goes into.
  await page.waitForFunction(() => document.querySelectorAll('#device option').length > 1);
  const dev = await page.$eval('#device option:nth-child(2)', (o) => o.value);
  await page.selectOption('#device', dev);
  await page.waitForFunction(() => document.getElementById('preview').videoWidth > 0);
  // Drag over the ultrasound image in the middle of the "window".
  const geo = await page.evaluate(() => {
    const v = document.getElementById('preview');
    const b = document.getElementById('crop').getBoundingClientRect();
    return { vw: v.videoWidth, vh: v.videoHeight, left: b.left, top: b.top, w: b.width, h: b.height };
  });
  const s = Math.min(geo.w / geo.vw, geo.h / geo.vh);
  const ox = geo.left + (geo.w - geo.vw * s) / 2;
  const oy = geo.top + (geo.h - geo.vh * s) / 2;
  const img = JSON.parse(env.IMAGE_RECT); // [x, y, w, h] of the image in the window, video pixels
  const at = (x, y) => [ox + x * s, oy + y * s];
  await page.mouse.move(...at(img[0] + 4, img[1] + 4));
  await page.mouse.down();
  await page.mouse.move(...at(img[0] + img[2] - 4, img[1] + img[3] - 4), { steps: 8 });
  await page.mouse.up();
  const crop = await page.evaluate(() => window.sonolive.publish.cropper.rect);
  log(`window ${geo.vw}×${geo.vh}, crop ${JSON.stringify(crop)}`);
  if (!crop || Math.abs(crop.w - (img[2] - 8)) > 8 || Math.abs(crop.h - (img[3] - 8)) > 8) {
    throw new Error(`crop ${JSON.stringify(crop)} is not the dragged image area ${img}`);
  }
  // The flashing square, drawn into the picture sent.
  await page.evaluate(() => {
    const ctx = window.sonolive.publish;
    ctx.flashes = [];
    let on = false;
    ctx.cropper.decorate = (g, w, h) => {
      const now = performance.now();
      const want = now % 1000 < 300;
      if (want && !on) ctx.flashes.push(performance.timeOrigin + now);
      on = want;
      if (on) {
        g.fillStyle = '#fff';
        g.fillRect(0, 0, Math.round(w * 0.15), Math.round(h * 0.15));
      }
    };
  });
  await page.click('#publish-btn');
  await page.waitForFunction(() => window.sonolive.publish.stats.framesSent > 30, null, { timeout: 20000 });
  log(`publishing: ${JSON.stringify(await page.evaluate(() => window.sonolive.publish.stats))}`);
  return page;
}

async function expert() {
  // The source exists once its publisher has published: burn-in off, so
  // the expert's page draws the boxes itself (and they are counted).
  for (let i = 0; ; i++) {
    const r = await api('PUT', `/api/sources/${env.SOURCE}/overlay`, { burn_in: false });
    if (r.status === 200) break;
    if (i > 50) throw new Error(`overlay: ${r.status} ${r.body}`);
    await sleep(200);
  }
  const inv = await api('POST', `/api/sources/${env.SOURCE}/invites`, { role: 'expert', ttl_s: 900 });
  if (inv.status !== 201) throw new Error(`invite: ${inv.status} ${inv.body}`);
  const browser = await chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: 20000 });
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  watchConsole(page, 'expert');
  page.setDefaultTimeout(15000);
  await page.goto(JSON.parse(inv.body).url, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => window.sonolive && window.sonolive.stats.framesDecoded > 30, null, { timeout: 30000, polling: 100 });
  // The corner of each decoded frame, read as it is shown.
  await page.evaluate(() => {
    const v = document.getElementById('video');
    const c = document.createElement('canvas');
    c.width = c.height = 8;
    const g = c.getContext('2d', { willReadFrequently: true });
    const seen = [];
    let on = false;
    const cb = (now, md) => {
      g.drawImage(v, 0, 0, Math.max(1, v.videoWidth * 0.08), Math.max(1, v.videoHeight * 0.08), 0, 0, 8, 8);
      const d = g.getImageData(0, 0, 8, 8).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum += (d[i] + d[i + 1] + d[i + 2]) / 3;
      const mean = sum / 64;
      // The square is white; the tissue under it is never that bright
      // over the whole corner.
      if (mean > 235 && !on) seen.push(performance.timeOrigin + (md.expectedDisplayTime || now));
      if (mean > 235) on = true;
      else if (mean < 215) on = false;
      v.requestVideoFrameCallback(cb);
    };
    v.requestVideoFrameCallback(cb);
    window.__seen = seen;
  });
  return { browser, page };
}

run.start(async () => {
  const pub = await publisher();
  const { browser: expBrowser, page: exp } = await expert();
  try {
    log(`watching ${SECONDS} s`);
    // Flashes from before the expert watched are not counted.
    const since = Date.now() + 500;
    await sleep(SECONDS * 1000);
    const flashes = (await pub.evaluate(() => window.sonolive.publish.flashes)).filter((f) => f > since && f < Date.now() - 1000);
    const seen = await exp.evaluate(() => window.__seen);
    const lat = [];
    for (const f of flashes) {
      const o = seen.find((t) => t >= f && t < f + 900);
      if (o !== undefined) lat.push(Math.round(o - f));
    }
    result.g2g = { flashes: flashes.length, seen: seen.length, n: lat.length, p50: pct(lat, 0.5), p95: pct(lat, 0.95), max: pct(lat, 1) };
    result.publisher = await pub.evaluate(() => window.sonolive.publish.stats);
    result.expert = await exp.evaluate(() => {
      const s = window.sonolive.stats;
      return { framesDecoded: s.framesDecoded, matchedFrames: s.matchedFrames, boxesDrawn: s.boxesDrawn, state: s.state };
    });
    const server = await api('GET', '/api/sources');
    result.server = server.status === 200 ? JSON.parse(server.body) : server.body;
    await pub.screenshot({ path: path.join(env.OUT_DIR, 'publish-page.png') });
    await exp.screenshot({ path: path.join(env.OUT_DIR, 'publish-expert.png') });
    log(`glass-to-glass ${JSON.stringify(result.g2g)}; publisher ${JSON.stringify(result.publisher)}; expert ${JSON.stringify(result.expert)}`);
    const problems = [];
    if (result.g2g.n < Math.max(5, 0.5 * flashes.length)) problems.push(`only ${result.g2g.n} of ${flashes.length} flashes seen on the expert's page (${seen.length} onsets)`);
    if (!(result.expert.matchedFrames > 0)) problems.push('no frame matched its metadata');
    if (!(result.expert.boxesDrawn > 0)) problems.push('no box drawn on the expert page');
    if (problems.length) throw new Error(problems.join('; '));

    // The connection lost (the server drops it, as a network loss would
    // end it): the page connects again by itself and the expert's picture
    // comes back.
    const before = await pub.evaluate(() => window.sonolive.publish.sender.resource);
    const del = await api('DELETE', before);
    if (del.status !== 200) throw new Error(`dropping the publisher: ${del.status} ${del.body}`);
    const t0 = Date.now();
    await pub.waitForFunction((old) => {
      const s = window.sonolive.publish.sender;
      return s.resource && s.resource !== old && s.pc && s.pc.connectionState === 'connected';
    }, before, { timeout: 30000, polling: 100 });
    const decoded = await exp.evaluate(() => window.sonolive.stats.framesDecoded);
    await exp.waitForFunction((n) => window.sonolive.stats.framesDecoded > n + 30, decoded, { timeout: 20000, polling: 100 });
    result.reconnect = { ms: Date.now() - t0 };
    log(`reconnected after ${result.reconnect.ms} ms; the expert's picture is back`);
    result.ok = true;
  } finally {
    await Promise.race([expBrowser.close().catch(() => {}), sleep(5000)]);
  }
  await run.finish(0);
});
