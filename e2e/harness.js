'use strict';
// harness.js: what the browser scripts here share. Each script prints one
// JSON result line on stdout and exits 0 (ok) or 1; logs go to stderr; the
// whole run has a time limit; the browser is Debian's Chromium, never a
// downloaded one.

const { chromium } = require('playwright-core');

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  // A fake microphone, granted without a prompt: the pages' voice.
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', '--autoplay-policy=no-user-gesture-required',
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// createRun returns the run's log, finish and fail, bound to result.
function createRun({ name, limitMs, result }) {
  const run = { browser: null, finished: false, result };
  run.log = (...args) => console.error(`[${name}]`, ...args);

  // finish prints the one result line, closes the browser (bounded) and exits.
  run.finish = async (code) => {
    if (run.finished) return;
    run.finished = true;
    if (run.browser) await Promise.race([run.browser.close().catch(() => {}), sleep(5000)]);
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(code);
  };

  run.fail = (message) => {
    result.ok = false;
    // Playwright errors carry a multi-line, coloured call log: keep the first line.
    const clean = String(message).replace(/\u001b\[[0-9;]*m/g, '').split('\n')[0];
    result.error = result.error || clean;
    return run.finish(1);
  };

  run.launch = async () => {
    run.browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: 20000,
    });
    run.log(`chromium ${run.browser.version()}`);
    return run.browser;
  };

  // start runs main under the time limit; any escape fails the run.
  run.start = (main) => {
    const msg = (err) => (err && err.message ? err.message : String(err));
    setTimeout(() => run.fail(`run exceeded ${limitMs} ms`), limitMs).unref();
    process.on('unhandledRejection', (err) => run.fail(msg(err)));
    main().catch((err) => run.fail(msg(err)));
  };
  return run;
}

// watchConsole forwards browser console errors and page exceptions to
// stderr, tagged.
function watchConsole(page, name) {
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.error(`[${name}] console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => console.error(`[${name}] page error: ${err.message}`));
}

module.exports = { CHROMIUM_ARGS, createRun, sleep, watchConsole };
