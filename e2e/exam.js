'use strict';
// exam.js: a sonographer's exam in Chromium. On the live page: choose the
// thyroid preset, Start exam, scan the phantom for SECONDS while the
// findings panel fills, End exam (confirming), and the report opens in a
// new tab; it is printed to PDF. Then a teacher's library shows the exam
// as one case.
//
// env: CHROMIUM, LIVE_URL, LIBRARY_URL, OUT_DIR, SECONDS

const fs = require('fs');
const path = require('path');
const { createRun, watchConsole, sleep } = require('./harness');

const env = process.env;
const SECONDS = Number(env.SECONDS || 30);
const result = { ok: false, error: null, exam: null, panel: [], report: null, library: null };
const run = createRun({ name: 'exam', limitMs: (SECONDS + 90) * 1000, result });
const { log } = run;

async function main() {
  const browser = await run.launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  watchConsole(page, 'live');
  // End exam asks to confirm; calibration asks the distance (5 mm).
  page.on('dialog', (d) => (d.type() === 'prompt' ? d.accept('5') : d.accept()));
  await page.goto(env.LIVE_URL, { waitUntil: 'domcontentloaded', timeout: 15000 });
  await page.waitForFunction(() => !!window.sonolive && window.sonolive.stats.framesDecoded > 10, null, { timeout: 25000, polling: 100 });
  await page.waitForFunction(() => document.querySelectorAll('#exam-organ option').length > 1, null, { timeout: 10000 });
  const status0 = await page.textContent('#exam-status');
  log(`before: ${status0}`);
  await page.selectOption('#exam-organ', 'thyroid');
  await page.click('#exam-start');
  await page.waitForSelector('#exam-end', { state: 'visible', timeout: 15000 });
  // Calibrate on the phantom's depth scale: ticks at x = width − 10, every
  // 50 px from row 36 (5 mm apart at its 0.1 mm/px). The phantom also says
  // its pixel size, which its sizes keep using; this checks the clicks.
  await page.click('#exam-calibrate');
  const g = await page.evaluate(() => {
    const b = document.getElementById('marks').getBoundingClientRect();
    const m = window.sonolive.stats.server;
    const s = Math.min(b.width / m.width, b.height / m.height);
    return { x: b.left + (b.width - m.width * s) / 2, y: b.top + (b.height - m.height * s) / 2, s, w: m.width };
  });
  for (const row of [86, 136]) await page.mouse.click(g.x + (g.w - 10) * g.s, g.y + row * g.s);
  await page.waitForFunction(() => /Calibrated/.test(document.getElementById('exam-calibrate').textContent), null, { timeout: 10000 });
  result.calibration = await page.textContent('#exam-calibrate');
  log(`calibration: ${result.calibration}`);
  const t0 = Date.now();
  // Scan: note what the panel shows, once a second.
  while (Date.now() - t0 < SECONDS * 1000) {
    await sleep(1000);
    const rows = await page.$$eval('#exam-findings li.finding', (lis) => lis.map((li) => li.querySelector('strong').textContent));
    result.panel.push({ t: Math.round((Date.now() - t0) / 1000), rows });
  }
  result.exam = await page.textContent('#exam-status');
  log(`during: ${result.exam}; panel ${JSON.stringify(result.panel[result.panel.length - 1])}`);
  await page.screenshot({ path: path.join(env.OUT_DIR, 'exam-live.png') });
  const popup = context.waitForEvent('page', { timeout: 30000 });
  await page.click('#exam-end');
  const report = await popup;
  await report.waitForLoadState('load', { timeout: 30000 });
  const text = await report.textContent('body');
  const images = await report.$$eval('img', (imgs) => imgs.filter((i) => i.complete && i.naturalWidth > 0).length);
  const pdf = path.join(env.OUT_DIR, 'exam-report.pdf');
  await report.pdf({ path: pdf, format: 'A4', printBackground: false });
  result.report = { url: report.url().replace(/token=[^&#]+/, 'token=…'), images, pdfBytes: fs.statSync(pdf).size,
    disclaimer: text.includes('not a diagnosis'), thyroid: /Thyroid/.test(text) };
  log(`report: ${JSON.stringify(result.report)}`);
  await page.waitForFunction(() => /No exam open/.test(document.getElementById('exam-status').textContent), null, { timeout: 15000 });

  // The teacher's library: the exam is one case.
  const lib = await context.newPage();
  watchConsole(lib, 'library');
  await lib.goto(env.LIBRARY_URL, { waitUntil: 'domcontentloaded', timeout: 15000 });
  await lib.waitForFunction(() => window.sonolive && window.sonolive.library && window.sonolive.library.loaded, null, { timeout: 20000 });
  result.library = await lib.evaluate(() => ({
    cases: document.querySelectorAll('#case-grid .case-card').length,
    shots: [...document.querySelectorAll('#case-grid .case-card')].map((c) => c.querySelectorAll('.case-shots img').length),
    otherRecordings: document.querySelectorAll('#rec-grid li').length,
  }));
  await lib.screenshot({ path: path.join(env.OUT_DIR, 'exam-library.png'), fullPage: true });
  log(`library: ${JSON.stringify(result.library)}`);
  if (!result.report.disclaimer || result.report.images < 1 || result.library.cases !== 1) {
    throw new Error(`report ${JSON.stringify(result.report)}, library ${JSON.stringify(result.library)}`);
  }
  result.ok = true;
  await run.finish(0);
}

run.start(main);
