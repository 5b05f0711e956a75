#!/usr/bin/env node
// Interop check: a third-party WHEP player plays sonolive's stream in the
// system Chromium (never downloads a browser). Plain node script.
//
// The player is Eyevinn's @eyevinn/webrtc-player (pinned in package.json),
// whose dist/main.js is injected UNMODIFIED into a page on the server's
// origin (its /healthz page, emptied), behind a tiny CommonJS require shim:
// "events" is the real package from node_modules; @eyevinn/csai-manager and
// @eyevinn/whpp-client are stubs that throw if touched (the WHEP adapter
// never uses them). The player's unload() sends the WHEP DELETE; a non-2xx
// DELETE fails the run.
//
//   WHEP_URL  WHEP endpoint   (e.g. http://127.0.0.1:8092/whep/phantom)
//   TOKEN     invite token (expert or sonographer); sent as
//             "Authorization: Bearer <TOKEN>" via the player's authKey
//   OUT_DIR   where whep-eyevinn.png goes (default: .)
//   PAGE_ORIGIN  origin (of the same server) whose /healthz page the player
//             runs in (default: the WHEP_URL's origin, same-origin). Set e.g.
//             http://localhost:8092 against a 127.0.0.1 WHEP_URL to exercise
//             the CORS preflights with a real browser.
//   CHROMIUM  browser binary (default /usr/bin/chromium)
//   FRAMES    decoded frames to wait for (default 60)
//   VERBOSE   1: echo every browser console line to stderr as it happens
//
// stdout: one JSON line, {"ok":true,"client":...,"frames":N,"width":W,"height":H,...}
// or {"ok":false,"error":...}; exit 0 or 1. Everything else goes to stderr.
// The whole run is capped at 60 s and the browser is always closed.

'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');
const { CHROMIUM_ARGS, sleep } = require('./harness');

const CLIENT_PKG = '@eyevinn/webrtc-player';
const RUN_LIMIT_MS = 58000;
const env = process.env;
const WHEP_URL = env.WHEP_URL || '';
const TOKEN = env.TOKEN || '';
const OUT_DIR = env.OUT_DIR || '.';
const PAGE_ORIGIN = env.PAGE_ORIGIN || '';
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';
const MIN_FRAMES = Number(env.FRAMES || 60);
const VERBOSE = env.VERBOSE === '1';

let browser = null;
let finished = false;
const consoleLines = []; // every browser console line, dumped on failure
const whepLog = []; // WHEP HTTP exchanges seen by the page: method, path, status, Location

const log = (...args) => console.error('[whep-eyevinn]', ...args);

async function finish(code, result) {
  if (finished) return;
  finished = true;
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code);
}

function fail(message) {
  if (finished) return;
  const clean = String(message).replace(/\u001b\[[0-9;]*m/g, '').split('\n')[0];
  if (!VERBOSE && consoleLines.length) {
    console.error('[whep-eyevinn] browser console (last 60 lines):');
    for (const l of consoleLines.slice(-60)) console.error('  ' + l);
  }
  if (whepLog.length) console.error('[whep-eyevinn] WHEP exchanges: ' + JSON.stringify(whepLog));
  return finish(1, { ok: false, error: clean });
}

// clientVersion reads the installed player's version (the pin is exact).
function clientVersion() {
  const pkg = require.resolve(`${CLIENT_PKG}/package.json`);
  return JSON.parse(fs.readFileSync(pkg, 'utf8')).version;
}

// bundle builds the page script: a minimal CommonJS loader, the real "events"
// package, stubs for the two modules the WHEP path never touches, and the
// player's dist/main.js verbatim. Exposes window.EyevinnPlayer.
function bundle() {
  const mainPath = require.resolve(CLIENT_PKG); // dist/main.js via "main"
  const eventsPath = require.resolve('events/', { paths: [path.dirname(mainPath)] }); // trailing slash: the npm package, not node's builtin;
  const main = fs.readFileSync(mainPath, 'utf8');
  const events = fs.readFileSync(eventsPath, 'utf8');
  const stub = (name, exp) =>
    `function (module, exports) { exports.${exp} = function () {` +
    ` throw new Error(${JSON.stringify(name + ' is stubbed in this test: the WHEP path must not use it')}); }; }`;
  // Sources end with "//# sourceMappingURL=..." line comments: keep newlines.
  return `(function () {
  var defs = {}, cache = {};
  function require(name) {
    if (cache[name]) return cache[name].exports;
    if (!defs[name]) throw new Error('shim: no module ' + name);
    var module = { exports: {} };
    cache[name] = module;
    defs[name].call(module.exports, module, module.exports, require);
    return module.exports;
  }
  defs['events'] = function (module, exports, require) {
${events}
};
  defs['@eyevinn/csai-manager'] = ${stub('@eyevinn/csai-manager', 'CSAIManager')};
  defs['@eyevinn/whpp-client'] = ${stub('@eyevinn/whpp-client', 'WHPPClient')};
  defs[${JSON.stringify(CLIENT_PKG)}] = function (module, exports, require) {
${main}
};
  window.EyevinnPlayer = require(${JSON.stringify(CLIENT_PKG)});
})();
`;
}

async function run() {
  if (!WHEP_URL) throw new Error('WHEP_URL is not set');
  if (!TOKEN) throw new Error('TOKEN is not set');
  const whep = new URL(WHEP_URL);
  const version = clientVersion();
  const client = `${CLIENT_PKG}@${version}`;
  const script = bundle();

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  // The player is injected into a page of the server's origin; that page's
  // CSP (script-src 'self', meant for our own pages) would refuse the
  // injected bundle, which on a real deployment lives on its own site.
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 }, bypassCSP: true });
  const page = await context.newPage();

  page.on('console', (msg) => {
    const line = `[${msg.type()}] ${msg.text()}`;
    consoleLines.push(line);
    // the browser's own favicon probe 404s on /healthz pages: not ours to report
    if (msg.type() === 'error' && /\/favicon\.ico$/.test(msg.location().url || '')) return;
    if (msg.type() === 'error') console.error(`[browser] console error: ${msg.text()}`);
    else if (VERBOSE) console.error(`[browser] ${line}`);
  });
  page.on('pageerror', (err) => console.error(`[browser] page error: ${err.message}`));
  page.on('response', (res) => {
    const req = res.request();
    if (!new URL(req.url()).pathname.startsWith('/whep/')) return;
    const h = res.headers();
    whepLog.push({
      method: req.method(),
      path: new URL(req.url()).pathname,
      status: res.status(),
      location: h['location'],
      content_type: h['content-type'],
    });
  });
  page.on('requestfailed', (req) => {
    if (new URL(req.url()).pathname.startsWith('/whep/'))
      whepLog.push({ method: req.method(), path: new URL(req.url()).pathname, failed: req.failure()?.errorText });
  });

  // A page really served by the server (its /healthz, any status), so the
  // page has the server's origin and address space and the player's fetches
  // are same-origin; PAGE_ORIGIN picks another origin of the same server.
  // The text is cleared; the player runs in an otherwise empty document.
  const origin = PAGE_ORIGIN ? new URL(PAGE_ORIGIN).origin : whep.origin;
  await page.goto(`${origin}/healthz`, { timeout: 10000 });
  await page.evaluate(() => {
    document.body.textContent = '';
    document.body.style.cssText = 'margin:0;background:#000';
  });
  await page.addScriptTag({ content: script });
  await page.evaluate(
    ({ url, auth }) => {
      const { WebRTCPlayer } = window.EyevinnPlayer;
      const video = document.createElement('video');
      video.autoplay = true;
      video.muted = true;
      video.playsInline = true;
      video.setAttribute('autoplay', '');
      video.setAttribute('muted', '');
      video.setAttribute('playsinline', '');
      video.style.cssText = 'width:1280px;height:720px;display:block;background:#000';
      document.body.appendChild(video);
      const st = (window.__whep = { events: [], rvfc: 0 });
      const count = () => {
        st.rvfc++;
        video.requestVideoFrameCallback(count);
      };
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(count);
      const player = new WebRTCPlayer({ video, type: 'whep', iceServers: [], debug: true, timeoutThreshold: 10000 });
      for (const ev of ['no-media', 'media-recovered', 'peer-connection-failed', 'initial-connection-failed', 'connect-error'])
        player.on(ev, () => st.events.push(ev));
      window.__player = player;
      window.__video = video;
      // authKey is sent verbatim as the Authorization header.
      player.load(new URL(url), `Bearer ${auth}`);
    },
    { url: whep.href, auth: TOKEN },
  );

  // Wait for MIN_FRAMES decoded frames with a known size; fail fast on the
  // player's terminal events.
  const deadline = Date.now() + 40000;
  let st;
  for (;;) {
    st = await page.evaluate(() => {
      const v = window.__video;
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : { totalVideoFrames: 0 };
      return {
        frames: q.totalVideoFrames,
        rvfc: window.__whep.rvfc,
        width: v.videoWidth,
        height: v.videoHeight,
        events: window.__whep.events,
        pc: window.__player.peer && window.__player.peer.connectionState,
      };
    });
    const frames = Math.max(st.frames, st.rvfc);
    if (frames >= MIN_FRAMES && st.width > 0 && st.height > 0) break;
    const fatal = st.events.find((e) => e === 'initial-connection-failed' || e === 'connect-error');
    if (fatal) {
      const last = whepLog[whepLog.length - 1];
      const http = last ? `, last WHEP request ${last.method} ${last.path} -> ${last.status || last.failed}` : '';
      throw new Error(`player emitted ${fatal} (peer ${st.pc}, ${frames} frames${http})`);
    }
    if (Date.now() > deadline)
      throw new Error(`timed out: ${frames} frames, ${st.width}x${st.height}, peer ${st.pc}, events ${JSON.stringify(st.events)}`);
    await sleep(250);
  }
  const frames = Math.max(st.frames, st.rvfc);
  if (VERBOSE) {
    const sdp = await page.evaluate(() => ({
      offer: window.__player.peer.localDescription && window.__player.peer.localDescription.sdp,
      answer: window.__player.peer.remoteDescription && window.__player.peer.remoteDescription.sdp,
    }));
    log('offer SDP:\n' + sdp.offer);
    log('answer SDP:\n' + sdp.answer);
  }
  log(`playing: ${frames} frames (playbackQuality ${st.frames}, rVFC ${st.rvfc}), ${st.width}x${st.height}, peer ${st.pc}`);

  fs.mkdirSync(OUT_DIR, { recursive: true });
  const shot = path.join(OUT_DIR, 'whep-eyevinn.png');
  await page.screenshot({ path: shot });
  log(`screenshot: ${shot}`);

  // unload() sends the player's DELETE on the WHEP resource, then stops.
  await page.evaluate(async () => {
    await window.__player.unload();
    window.__player.destroy();
  });
  const post = whepLog.find((e) => e.method === 'POST');
  const del = whepLog.find((e) => e.method === 'DELETE');
  if (!del) throw new Error('player unloaded but no DELETE reached the server');
  if (!(del.status >= 200 && del.status < 300)) throw new Error(`DELETE ${del.path} answered ${del.status}`);
  log('WHEP exchanges: ' + JSON.stringify(whepLog));

  return finish(0, {
    ok: true,
    client,
    frames,
    width: st.width,
    height: st.height,
    post: post ? post.status : null,
    delete: del.status,
  });
}

const timer = setTimeout(() => fail(`run exceeded ${RUN_LIMIT_MS / 1000} s`), RUN_LIMIT_MS);
timer.unref();
process.on('unhandledRejection', (e) => fail(e && e.message ? e.message : e));
run().catch((e) => fail(e && e.message ? e.message : e));
