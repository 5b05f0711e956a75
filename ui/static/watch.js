// watch.js: the watch page (watch.html): an expert or a student follows a
// live scan through LiveKit, with the AI's boxes drawn on the frames they
// belong to. It only watches: consulting stays on the expert's page.

import { BoxPainter, parseLocation, tokenPayload, setPill } from './app.js';
import { LiveKitView } from './lkview.js';

const $ = (id) => document.getElementById(id);
const KEEP_BOXES_MS = 200;

function fatal(title, reason) {
  $('fatal-title').textContent = title;
  $('fatal-reason').textContent = reason;
  $('fatal').hidden = false;
  $('main').hidden = true;
}

async function main() {
  const ctx = parseLocation();
  const claims = tokenPayload(ctx.token);
  $('source-name').textContent = ctx.source || '—';
  $('role').textContent = claims ? claims.role : '—';
  const video = $('video');
  const painter = new BoxPainter($('overlay'), video);
  let drawnAt = 0;
  const view = new LiveKitView({
    ctx,
    video,
    onMeta: (meta) => {
      const now = performance.now();
      if (meta) {
        painter.draw(meta);
        drawnAt = now;
      } else if (now - drawnAt > KEEP_BOXES_MS) {
        painter.clear();
      }
    },
    onState: (state, detail) => {
      const overlay = $('state-overlay');
      overlay.hidden = state === 'live';
      overlay.textContent = detail || state;
      setPill('state-pill', state === 'live' ? 'ok' : 'stale', state);
    },
  });
  view.sync.onLate = (meta) => { painter.draw(meta); drawnAt = performance.now(); };
  window.sonoliveWatch = view; // for the browser tests: frames shown and matched
  setInterval(() => {
    const s = view.stats();
    $('sync-pill').textContent = s.shown ? `boxes ${Math.round((s.matched / s.shown) * 100)}%` : 'boxes —';
  }, 1000);
  video.addEventListener('pause', () => { $('play-btn').hidden = false; });
  $('play-btn').addEventListener('click', () => { video.play(); $('play-btn').hidden = true; });
  try {
    await view.join();
  } catch (err) {
    fatal(err.status === 401 || err.status === 403 ? 'This link is invalid or has expired' : 'Cannot watch', err.message);
  }
}

main();
