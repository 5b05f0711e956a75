'use strict';
// poorlink.js: an expert on a poor link and the sonographer on a good one,
// each in its own Chromium. The expert's browser runs in a network
// namespace whose only way to the server is the test's impaired wire
// (EXPERT_CHROMIUM wraps Chromium in `ip netns exec`); the sonographer's
// fake microphone is the voice the expert should hear without gaps.
//
// Sampled every 100 ms for SECONDS on both pages (getStats of the page's
// connection): frames decoded per second, the frame size (which layer),
// and on the expert the received voice's concealment — a gap is a run of
// samples where most of what was played was concealed.
//
//   LIVE_URL, EXPERT_URL, EXPERT_CHROMIUM, CHROMIUM, SECONDS (default 40),
//   OUT_DIR (default .)
// One JSON line on stdout, exit 0 (ok) or 1.

const path = require('path');
const { chromium } = require('playwright-core');
const { CHROMIUM_ARGS, createRun, sleep, watchConsole } = require('./harness');

const env = process.env;
const SECONDS = Number(env.SECONDS || 40);
const OUT_DIR = env.OUT_DIR || '.';
const result = { ok: false, error: null, expert: null, sonographer: null };
const run = createRun({ name: 'poorlink', limitMs: (SECONDS + 90) * 1000, result });
const { log, finish, fail } = run;

async function open(browser, url, name) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  watchConsole(page, name);
  await page.goto(url, { waitUntil: 'load', timeout: 30000 });
  return page;
}

// sample reads the page's connection: video and the voices received.
const sample = (page) => page.evaluate(async () => {
  const s = window.sonolive.session;
  const pc = s && s.whep && s.whep.pc;
  const out = { t: performance.now(), frames: 0, width: 0, height: 0, audio: { total: 0, concealed: 0, silent: 0, packets: 0 } };
  if (!pc) return out;
  const report = await pc.getStats();
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    if (r.kind === 'video') {
      out.frames = r.framesDecoded || 0;
      out.width = r.frameWidth || 0;
      out.height = r.frameHeight || 0;
    } else if (r.kind === 'audio' && r.packetsReceived > 0) {
      out.audio.total += r.totalSamplesReceived || 0;
      out.audio.concealed += r.concealedSamples || 0;
      out.audio.silent += r.silentConcealedSamples || 0;
      out.audio.packets += r.packetsReceived;
    }
  });
  return out;
});

// summarise turns samples into frame rates per second and voice gaps.
function summarise(samples, from) {
  const s = samples.filter((x) => x.t >= from);
  const fps = [];
  let j = 0;
  for (let i = 1; i < s.length; i++) {
    while (s[i].t - s[j].t > 1000) j++;
    if (s[i].t - s[j].t >= 900 && (i === s.length - 1 || s[i + 1].t - s[j].t > 1000)) {
      fps.push(((s[i].frames - s[j].frames) * 1000) / (s[i].t - s[j].t));
      j = i;
    }
  }
  const sorted = [...fps].sort((a, b) => a - b);
  let gap = 0;
  let longest = 0;
  let concealed = 0;
  let total = 0;
  for (let i = 1; i < s.length; i++) {
    const dt = s[i].t - s[i - 1].t;
    const dTotal = s[i].audio.total - s[i - 1].audio.total;
    const dConc = s[i].audio.concealed - s[i - 1].audio.concealed;
    total += dTotal;
    concealed += dConc;
    if (dTotal > 0 && dConc > 0.5 * dTotal) {
      gap += dt;
      longest = Math.max(longest, gap);
    } else {
      gap = 0;
    }
  }
  const last = s[s.length - 1] || { width: 0, height: 0 };
  return {
    seconds: fps.length,
    fpsMedian: sorted.length ? Math.round(sorted[Math.floor(sorted.length / 2)] * 10) / 10 : 0,
    fpsMin: sorted.length ? Math.round(sorted[0] * 10) / 10 : 0,
    fpsP10: sorted.length ? Math.round(sorted[Math.floor(sorted.length / 10)] * 10) / 10 : 0,
    size: `${last.width}x${last.height}`,
    voice: { longestGapMs: Math.round(longest), concealedPct: total ? Math.round((1000 * concealed) / total) / 10 : null, packets: last.audio ? last.audio.packets : 0 },
  };
}

async function main() {
  if (!env.LIVE_URL || !env.EXPERT_URL || !env.EXPERT_CHROMIUM) return fail('LIVE_URL, EXPERT_URL and EXPERT_CHROMIUM must be set');
  const mine = await run.launch();
  const theirs = await chromium.launch({ executablePath: env.EXPERT_CHROMIUM, args: CHROMIUM_ARGS, timeout: 30000 });
  const live = await open(mine, env.LIVE_URL, 'live');
  let expert;
  try {
    expert = await open(theirs, env.EXPERT_URL, 'expert');
    await expert.waitForFunction(() => window.sonolive.stats.framesDecoded > 0, null, { timeout: 30000, polling: 200 });
  } catch (err) {
    await theirs.close().catch(() => {});
    throw err;
  }
  const t0 = await expert.evaluate(() => performance.now());
  const ex = [];
  const so = [];
  let smallAt = null;
  const end = Date.now() + SECONDS * 1000;
  while (Date.now() < end) {
    const [a, b] = await Promise.all([sample(expert), sample(live)]);
    ex.push(a);
    so.push(b);
    if (smallAt == null && a.height > 0 && a.height <= 360) smallAt = a.t;
    await sleep(100);
  }
  const pill = (page) => page.evaluate(() => { const p = document.getElementById('link-pill'); return p && !p.hidden ? p.textContent : null; });
  const pills = { expert: await pill(expert), sonographer: await pill(live) };
  await expert.screenshot({ path: path.join(OUT_DIR, 'poorlink-expert.png') });
  await live.screenshot({ path: path.join(OUT_DIR, 'poorlink-live.png') });
  // From the move to the small layer on (the first seconds on 720p are
  // the link being found out), and the whole run.
  const from = smallAt == null ? ex[0].t : smallAt + 2000;
  result.expert = { smallAfterS: smallAt == null ? null : Math.round((smallAt - t0) / 100) / 10, settled: summarise(ex, from), whole: summarise(ex, 0) };
  const liveFrom = so[0].t + (from - ex[0].t);
  result.sonographer = summarise(so, liveFrom);
  result.expert.pill = pills.expert;
  result.sonographer.pill = pills.sonographer;
  log(`expert: ${JSON.stringify(result.expert)}`);
  log(`sonographer: ${JSON.stringify(result.sonographer)}`);
  await theirs.close().catch(() => {});
  result.ok = true;
  return finish(0);
}

run.start(main);
