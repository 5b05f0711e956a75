// sonolive web UI: the recordings library (library.html) and the teaching
// replay (replay.html). Plain ES module, no build step; the box drawing, token
// and location helpers come from app.js so both look like the live pages.
// The page says which one it is with <body data-page="library"|"replay">.
//
// API (docs/recording.md): GET /api/recordings, GET/DELETE /api/recordings/{id},
// GET /api/recordings/{id}/{video.mp4,timeline.jsonl,thumb.jpg,captures.json}; the token goes
// as "Authorization: Bearer T", or as ?token=T where the browser fetches by
// itself (<img>, <video>).
//
// Replay sync: timeline.jsonl has one line per video frame, with `t` on the
// video's own clock. On every presented frame (requestVideoFrameCallback) the
// page takes metadata.mediaTime and draws the entry with the largest
// t <= mediaTime + 0.001 (the 1 ms absorbs t's rounding to milliseconds).

import { MarkLayer } from './marks.js';
import { Verdicts } from './verdicts.js';
import { renderCaptures } from './captures.js';
import { loadCases, examKeyImages } from './cases.js';
import {
  parseLocation, tokenPayload, httpError, BoxPainter, contentRect, fmtPct, detectionSize,
  INVALID_LINK_MSG, FORBIDDEN_LINK_MSG,
  toast, setPill,
} from './app.js';

const LIBRARY_REFRESH_MS = 10000;   // while a recording is still being written
const RECORDING_POLL_MS = 5000;     // replay page of a recording not finished yet
const T_EPSILON_S = 0.001;          // t is rounded to the millisecond
const MAX_ENTRY_GAP_S = 0.5;        // an entry older than this is not the frame on screen
const SEEK_FALLBACK_MS = 200;       // 'seeked' without a frame callback: draw from currentTime
const SEEK_TIMEOUT_MS = 8000;
const SPEEDS = [0.25, 0.5, 1, 1.5, 2];

const $ = (id) => document.getElementById(id);

window.sonolive = window.sonolive || {};

// ---------------------------------------------------------------- helpers

function setText(el, text) {
  if (typeof el === 'string') el = $(el);
  text = String(text);
  if (el && el.textContent !== text) el.textContent = text;
}

// api fetches path with the token as a Bearer header; non-2xx throws an
// Error with .status and the server's one-line reason.
async function api(token, path, { method = 'GET', as = 'json' } = {}) {
  const res = await fetch(path, { method, headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (!res.ok) throw await httpError(res);
  if (as === 'json') return res.json();
  if (as === 'text') return res.text();
  return res;
}

const withToken = (path, token) => `${path}?token=${encodeURIComponent(token)}`;
const recPath = (id) => `/api/recordings/${encodeURIComponent(id)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// fmtTime: seconds as m:ss (or h:mm:ss); digits adds decimals to the seconds.
function fmtTime(s, digits = 0) {
  if (!Number.isFinite(s) || s < 0) return '—';
  const scale = 10 ** digits;
  s = Math.round(s * scale) / scale;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  let sec = (s % 60).toFixed(digits);
  if (sec.length < (digits ? 3 + digits : 2)) sec = `0${sec}`;
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

function fmtBytes(b) {
  if (!Number.isFinite(b) || b < 0) return '—';
  if (b < 1024) return `${b} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = b / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

function fmtStart(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  return d.toLocaleString([], { weekday: 'short', year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

const fmtScore = (v) => (Number.isFinite(v) ? Number(v).toFixed(2) : '—');
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// scoreColor: yellow (low score) → red (high score).
function scoreColor(score) {
  const s = Number.isFinite(score) ? Math.min(1, Math.max(0, score)) : 0;
  return `hsl(${Math.round(55 * (1 - s))} 95% 55%)`;
}

function lesionEvents(meta) {
  const evs = Array.isArray(meta && meta.lesion_events) ? meta.lesion_events.filter((e) => e && Number.isFinite(e.first_s)) : [];
  return evs.sort((a, b) => a.first_s - b.first_s || a.track_id - b.track_id);
}

const eventTitle = (e) =>
  `#${e.track_id} ${e.class ?? 'lesion'} · ${fmtTime(e.first_s, 1)}–${fmtTime(e.last_s, 1)} · max score ${fmtScore(e.max_score)}` +
  (Number.isFinite(e.max_malignancy) ? ` · max malignancy ${fmtPct(e.max_malignancy)}` : '') +
  (Number.isFinite(e.frames) ? ` · ${plural(e.frames, 'frame')}` : '');

// eventSegments fills bar with one segment per lesion event over duration.
function eventSegments(bar, events, duration, cls) {
  bar.replaceChildren();
  if (!(duration > 0)) return [];
  return events.map((e) => {
    const seg = document.createElement('span');
    seg.className = cls;
    const a = Math.min(1, Math.max(0, e.first_s / duration));
    const b = Math.min(1, Math.max(a, (Number.isFinite(e.last_s) ? e.last_s : e.first_s) / duration));
    seg.style.left = `${(a * 100).toFixed(3)}%`;
    seg.style.width = `${((b - a) * 100).toFixed(3)}%`;
    seg.style.background = scoreColor(e.max_score);
    seg.title = eventTitle(e);
    bar.appendChild(seg);
    return seg;
  });
}


// showFatal replaces the page with one clear message (same texts as the live pages).
function showFatal(status, reason, what) {
  let title;
  if (status === 401) title = INVALID_LINK_MSG;
  else if (status === 403) title = FORBIDDEN_LINK_MSG;
  else if (status === 404) title = what === 'replay' ? 'Unknown recording — it may have been deleted' : 'Not found — check the link';
  else title = `Cannot load: ${reason}`;
  const hint = reason && !title.endsWith(reason) ? `Server said: ${reason}` : '';
  setText('fatal-title', title);
  setText('fatal-reason', hint);
  $('fatal').hidden = false;
  $('main').hidden = true;
  for (const el of document.querySelectorAll('.pills')) el.hidden = true;
  document.title = `sonolive — ${status === 401 ? 'link invalid or expired' : 'error'}`;
}

// ---------------------------------------------------------------- library page

function bootLibrary() {
  const ctx = parseLocation();
  const payload = tokenPayload(ctx.token);
  const role = payload && payload.role;
  const canDelete = role === 'sonographer' || role === 'teacher';
  const state = { loaded: false, count: 0, ids: [], refreshes: 0, canDelete, error: null };
  window.sonolive.library = state;
  setText('source-name', ctx.source || '—');
  if (role) {
    setText('role-pill', role);
    $('role-pill').hidden = false;
  }
  if (!ctx.token) return showFatal(401, 'missing token', 'library');
  if (payload && payload.src && ctx.source && payload.src !== ctx.source) {
    return showFatal(403, `this link is for the source "${payload.src}", not "${ctx.source}"`, 'library');
  }

  const grid = $('rec-grid');
  const cards = new Map(); // id → {li, key}
  let timer = null;

  const load = async () => {
    clearTimeout(timer);
    let list;
    try {
      list = await api(ctx.token, '/api/recordings');
    } catch (err) {
      state.error = err.message;
      if (err.status === 401 || err.status === 403 || err.status === 404) return showFatal(err.status, err.message, 'library');
      setText('library-error', `Could not load the recordings: ${err.message} — retrying`);
      setPill('list-pill', 'error', 'offline');
      timer = setTimeout(load, LIBRARY_REFRESH_MS);
      return;
    }
    state.error = null;
    setText('library-error', '');
    if (!Array.isArray(list)) list = [];
    list = list.filter((m) => m && typeof m.id === 'string' && (!ctx.source || !m.source || m.source === ctx.source));
    list.sort((a, b) => (Date.parse(b.start) || 0) - (Date.parse(a.start) || 0));
    // Recordings of an ended exam are shown in its case.
    try {
      const cases = await loadCases({ token: ctx.token, source: ctx.source, role, grid: $('case-grid'), recordings: list, toast });
      state.cases = cases.count;
      $('cases-section').hidden = cases.count === 0;
      list = list.filter((m) => !cases.owned.has(m.id));
    } catch (err) {
      if (err.status !== 404) setText('library-error', `Could not load the cases: ${err.message}`);
    }
    render(list);
    state.loaded = true;
    state.refreshes++;
    if (list.some((m) => m.status === 'recording')) timer = setTimeout(load, LIBRARY_REFRESH_MS);
  };

  const render = (list) => {
    const seen = new Set();
    let prev = null;
    for (const meta of list) {
      seen.add(meta.id);
      const key = JSON.stringify(meta);
      let c = cards.get(meta.id);
      if (!c || c.key !== key) {
        const li = buildCard(meta);
        if (c) c.li.replaceWith(li);
        c = { li, key };
        cards.set(meta.id, c);
      }
      // Keep the list order: newest first.
      const want = prev ? prev.nextSibling : grid.firstChild;
      if (want !== c.li) grid.insertBefore(c.li, want);
      prev = c.li;
    }
    for (const [id, c] of cards) {
      if (!seen.has(id)) { c.li.remove(); cards.delete(id); }
    }
    updateCount();
  };

  const updateCount = () => {
    const n = cards.size;
    state.count = n;
    state.ids = [...grid.children].map((li) => li.dataset.id);
    const cases = state.cases || 0;
    $('library-empty').hidden = n > 0 || cases > 0;
    const recording = [...grid.children].filter((li) => li.dataset.status === 'recording').length;
    setPill('list-pill', recording ? 'live' : 'ok',
      `${cases ? `${plural(cases, 'case')} · ` : ''}${plural(n, cases ? 'other recording' : 'recording')}${recording ? ` · ${recording} in progress` : ''}`);
  };

  const buildCard = (meta) => {
    const li = document.createElement('li');
    li.className = 'rec-card';
    li.dataset.id = meta.id;
    li.dataset.status = meta.status || '';

    const link = document.createElement('a');
    link.className = 'rec-link';
    link.href = withToken(`/replay/${encodeURIComponent(meta.id)}`, ctx.token);
    const dur = Number(meta.duration_s);

    const thumb = document.createElement('div');
    thumb.className = 'rec-thumb';
    const img = document.createElement('img');
    img.alt = '';
    img.loading = 'lazy';
    img.decoding = 'async';
    img.src = withToken(`${recPath(meta.id)}/thumb.jpg`, ctx.token);
    img.addEventListener('error', () => {
      const ph = document.createElement('span');
      ph.className = 'no-thumb';
      ph.textContent = meta.status === 'recording' ? 'recording…' : 'no preview';
      img.replaceWith(ph);
    }, { once: true });
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.dataset.kind = meta.status || 'unknown';
    badge.textContent = meta.status || 'unknown';
    const durEl = document.createElement('span');
    durEl.className = 'rec-dur';
    durEl.textContent = fmtTime(dur);
    thumb.append(img, badge, durEl);

    const body = document.createElement('div');
    body.className = 'rec-body';
    const title = document.createElement('div');
    title.className = 'rec-title';
    title.textContent = fmtStart(meta.start);
    const line1 = document.createElement('div');
    line1.className = 'rec-line muted';
    line1.textContent = [fmtTime(dur), fmtBytes(Number(meta.bytes)),
      Number.isFinite(meta.width) && meta.width ? `${meta.width}×${meta.height}` : null].filter(Boolean).join(' · ');
    const events = lesionEvents(meta);
    const line2 = document.createElement('div');
    line2.className = 'rec-line';
    line2.textContent = `${plural(Number(meta.detections) || 0, 'detection')} · ${plural(events.length, 'lesion event')}` +
      (Number(meta.captures) > 0 ? ` · ${plural(Number(meta.captures), 'key frame')}` : '');
    const bar = document.createElement('div');
    bar.className = 'ev-bar';
    bar.setAttribute('role', 'img');
    bar.setAttribute('aria-label', events.length ? `Lesion events: ${events.map(eventTitle).join('; ')}` : 'No lesion events');
    eventSegments(bar, events, dur, 'ev-seg');
    body.append(title, line1, line2, bar);
    link.append(thumb, body);
    link.title = meta.status === 'recording' ? 'Still recording — playable when it ends' : 'Open the replay';

    const actions = document.createElement('div');
    actions.className = 'rec-actions';
    const idEl = document.createElement('span');
    idEl.className = 'mono';
    idEl.textContent = meta.id;
    idEl.title = meta.id;
    actions.append(idEl);
    if (canDelete) {
      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'btn danger';
      del.textContent = 'Delete';
      del.addEventListener('click', () => remove(meta, li, del));
      actions.append(del);
    }
    li.append(link, actions);
    return li;
  };

  const remove = async (meta, li, btn) => {
    if (!window.confirm(`Delete the recording of ${fmtStart(meta.start)}?\nThis cannot be undone.`)) return;
    btn.disabled = true;
    try {
      await api(ctx.token, recPath(meta.id), { method: 'DELETE', as: 'response' });
    } catch (err) {
      btn.disabled = false;
      if (err.status === 409) {
        toast('This recording is still being written — it can be deleted once it ends.', 5000);
        load();
        return;
      }
      if (err.status === 401) return showFatal(401, err.message, 'library');
      if (err.status === 403) { toast(`Not allowed to delete: ${err.message}`, 5000); return; }
      if (err.status !== 404) { toast(`Could not delete: ${err.message}`, 5000); return; }
      // 404: already gone, drop the card too.
    }
    li.remove();
    cards.delete(meta.id);
    updateCount();
    toast('Recording deleted', 5000);
  };

  load();
  // Back from a replay (bfcache): the list may have changed meanwhile.
  window.addEventListener('pageshow', (ev) => { if (ev.persisted) load(); });
}

// ---------------------------------------------------------------- timeline

// parseTimeline reads timeline.jsonl: one JSON object per line; bad lines
// (e.g. a cut last line) are skipped. Session events (lines with "event":
// a viewer joined, burn-in switched) are kept apart from the frames.
// Returns frame entries sorted by t.
function parseTimeline(text) {
  const entries = [];
  const events = [];
  let bad = 0;
  for (const line of text.split('\n')) {
    const s = line.trim();
    if (!s) continue;
    let e;
    try { e = JSON.parse(s); } catch { bad++; continue; }
    if (!e || !Number.isFinite(e.t)) { bad++; continue; }
    if (e.event) { events.push(e); continue; }
    entries.push(e);
  }
  for (let i = 1; i < entries.length; i++) {
    if (entries[i].t < entries[i - 1].t) { entries.sort((a, b) => a.t - b.t); break; }
  }
  const ts = new Float64Array(entries.length);
  entries.forEach((e, i) => { ts[i] = e.t; });
  // Frame duration: the median step (frame step without a timeline uses 1/30 s).
  const steps = [];
  for (let i = 1; i < Math.min(entries.length, 301); i++) steps.push(ts[i] - ts[i - 1]);
  steps.sort((a, b) => a - b);
  const frameDur = steps.length && steps[steps.length >> 1] > 0 ? steps[steps.length >> 1] : 1 / 30;
  return { entries, events, ts, bad, frameDur };
}

// consultOf picks the consult events (pointer, marks, clears) out of a
// timeline's session events: [{t, msg}] sorted by t.
function consultOf(events) {
  const out = [];
  for (const e of events) {
    if (e.event !== 'consult' || !e.data || typeof e.data.msg !== 'string') continue;
    try { out.push({ t: e.t, msg: JSON.parse(e.data.msg) }); } catch { /* a bad line: skip */ }
  }
  return out.sort((a, b) => a.t - b.t);
}

// lastIndexAtOrBefore: the largest i with ts[i] <= x, or -1.
function lastIndexAtOrBefore(ts, x) {
  let lo = 0;
  let hi = ts.length - 1;
  let ans = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (ts[mid] <= x) { ans = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return ans;
}

const validBox = (d) => d && Array.isArray(d.box) && d.box.length >= 4 && d.box.slice(0, 4).every(Number.isFinite);

// ---------------------------------------------------------------- replay page

function bootReplay() {
  const ctx = parseLocation();
  const id = ctx.source; // /replay/{id}
  const params = new URLSearchParams(window.location.search);
  const video = $('video');
  // The expert's verdicts as they stood at the frame on screen, next to the boxes.
  const verdicts = new Verdicts(() => false);
  const painter = new BoxPainter($('overlay'), video, (d) => verdicts.suffix(d.track_id));

  let meta = null;
  let timeline = null;
  let events = [];
  let showMarks = params.get('marks') !== '0';   // ?marks=0: quiz link for students
  let metadataLoaded = false;
  let mediaTime = null;       // media time of the frame on screen
  let entry = null;           // timeline entry drawn for it
  let drawnBoxes = [];
  let pendingSeek = null;
  // Whether a frame callback came since the last 'seeking': then what it drew
  // (by the frame's own mediaTime) is what is on screen.
  let frameSinceSeeking = false;
  let eventButtons = [];
  let barSegments = [];
  let findingsKey = '';

  const duration = () => (Number.isFinite(video.duration) && video.duration > 0 ? video.duration
    : meta && Number(meta.duration_s) > 0 ? Number(meta.duration_s) : 0);

  // Test-visible state (e2e/replay.js reads it).
  const R = {
    get ready() { return metadataLoaded && !!timeline; },
    get duration() { return duration(); },
    get currentTime() { return video.currentTime; },
    get mediaTime() { return mediaTime; },
    get drawnBoxes() { return drawnBoxes.map((b) => ({ ...b, box: [...b.box] })); },
    get entryT() { return entry ? entry.t : null; },
    get seq() { return entry ? entry.seq : null; },
    get showMarks() { return showMarks; },
    get events() { return events; },
    get paused() { return video.paused; },
    get playbackRate() { return video.playbackRate; },
    get timelineEntries() { return timeline ? timeline.entries.length : 0; },
    get consultEvents() { return consultEvents.length; },
    get consultShown() { return consult.marks.size + consult.pointers.size; },
    get verdicts() { return Object.fromEntries(verdicts.byTrack); },
    id,
    syncMode: 'none',       // rvfc | timeupdate
    framesDrawn: 0,
    seeksSettled: { frame: 0, fallback: 0 }, // how seekTo learnt the frame was shown
    error: null,
  };
  window.sonolive.replay = R;
  window.sonolive.seekTo = (s) => seekTo(s);

  const fail = (status, message) => {
    R.error = status ? `${status} ${message}` : message;
    showFatal(status, message, 'replay');
  };
  const showError = (text) => {
    R.error = text;
    setText('replay-error', text);
  };
  const setOverlay = (text) => {
    setText('state-overlay', text || '');
    $('state-overlay').hidden = !text;
  };

  // ---- drawing

  const srcSize = () => ({
    width: (meta && meta.width) || video.videoWidth,
    height: (meta && meta.height) || video.videoHeight,
  });

  // The expert's and the sonographer's pointer and marks, as they were at
  // the frame on screen (hidden in quiz mode with the boxes).
  let consultEvents = [];
  const consult = new MarkLayer($('marks'), video, {
    rectOf: contentRect,
    frameSize: () => { const { width, height } = srcSize(); return width && height ? { w: width, h: height } : null; },
    frameTs: () => undefined,
    send: () => false,
    role: 'replay',
    now: () => (mediaTime ?? 0) * 1000,
  });

  // renderAt draws the timeline entry of the frame at media time mt.
  const renderAt = (mt) => {
    if (!Number.isFinite(mt)) return;
    mediaTime = mt;
    let e = null;
    if (timeline && timeline.entries.length) {
      const i = lastIndexAtOrBefore(timeline.ts, mt + T_EPSILON_S);
      if (i >= 0 && mt - timeline.ts[i] <= MAX_ENTRY_GAP_S) e = timeline.entries[i];
    }
    entry = e;
    consult.showTimeline(showMarks ? consultEvents : [], mt);
    verdicts.byTrack.clear();
    for (const c of consultEvents) {
      if (c.t > mt) break;
      verdicts.receive(c.msg);
    }
    const dets = e && Array.isArray(e.detections) ? e.detections.filter(validBox) : [];
    const { width, height } = srcSize();
    // Frames recorded with burn-in on carry the boxes in their pixels:
    // drawing them again would double them, and quiz mode cannot hide them.
    const burned = !!(e && e.burned_in);
    setText('marks-state', burned ? 'marks burned into this part of the video' : showMarks ? '' : 'quiz mode');
    if (showMarks && !burned && dets.length && width && height) {
      painter.draw({ width, height, detections: dets });
      drawnBoxes = dets.map((d) => ({
        track_id: d.track_id, box: d.box.slice(0, 4).map(Number), score: d.score,
        outline: Array.isArray(d.outline) ? d.outline.length : 0, calipers: d.calipers || null,
      }));
    } else {
      if (painter.hasContent) painter.clear();
      drawnBoxes = [];
    }
    R.framesDrawn++;
    renderPlayhead(mt);
    renderFindings(e, dets);
  };

  const renderPlayhead = (t) => {
    const d = duration();
    const frac = d > 0 ? Math.min(1, Math.max(0, t / d)) : 0;
    $('tl-playhead').style.left = `${(frac * 100).toFixed(3)}%`;
    const bar = $('tl-bar');
    bar.setAttribute('aria-valuemax', d.toFixed(2));
    bar.setAttribute('aria-valuenow', t.toFixed(2));
    bar.setAttribute('aria-valuetext', `${fmtTime(t, 2)} of ${fmtTime(d, 2)}`);
    setText('time-info', `${fmtTime(t, 2)} / ${fmtTime(d, 2)} · ${video.playbackRate}×`);
    events.forEach((ev, i) => {
      const active = t + T_EPSILON_S >= ev.first_s && t <= (Number.isFinite(ev.last_s) ? ev.last_s : ev.first_s) + 0.05;
      if (eventButtons[i]) eventButtons[i].classList.toggle('active', active);
      if (barSegments[i]) barSegments[i].classList.toggle('active', active);
    });
  };

  const renderFindings = (e, dets) => {
    setText('ph-t', e ? `${e.t.toFixed(3)} s` : timeline && mediaTime != null ? `${mediaTime.toFixed(3)} s (no entry)` : '—');
    setText('ph-seq', e && e.seq != null ? String(e.seq) : '—');
    setText('ph-count', !e ? '—' : showMarks ? String(dets.length) : 'hidden');
    const rows = [...dets].sort((a, b) => a.track_id - b.track_id);
    const key = `${showMarks}|${e ? e.t : 'none'}|` + rows.map((d) => `${d.track_id}:${d.class}:${fmtScore(d.score)}:${detectionSize(d).text}:${fmtPct(d.malignancy)}:${d.stale_age}`).join('|');
    if (key === findingsKey) return;
    findingsKey = key;
    const body = $('findings').tBodies[0];
    body.replaceChildren();
    const note = (text) => {
      const td = body.insertRow().insertCell();
      td.colSpan = 6;
      td.className = 'empty';
      td.textContent = text;
    };
    if (!showMarks) return note('AI marks hidden');
    if (!e) return note(timeline ? 'No timeline entry for this frame' : '—');
    if (!rows.length) return note('No findings on this frame');
    for (const d of rows) {
      const tr = body.insertRow();
      tr.className = d.stale_age > 0 ? 'stale' : 'fresh';
      tr.insertCell().textContent = `#${d.track_id}`;
      tr.insertCell().textContent = d.class ?? String(d.class_id);
      tr.insertCell().textContent = fmtScore(d.score);
      const size = tr.insertCell();
      const sz = detectionSize(d);
      size.className = 'size';
      size.textContent = sz.text;
      size.title = sz.title;
      tr.insertCell().textContent = fmtPct(d.malignancy);
      tr.insertCell().textContent = d.stale_age > 0 ? `${d.stale_age} fr ago` : 'now';
    }
  };

  const redraw = () => renderAt(mediaTime ?? video.currentTime);

  // ---- frame sync

  const snapshot = () => ({
    currentTime: video.currentTime, mediaTime, entryT: entry ? entry.t : null,
    seq: entry ? entry.seq : null, drawnBoxes: R.drawnBoxes, showMarks,
  });

  const settleSeek = () => {
    const p = pendingSeek;
    if (!p) return;
    pendingSeek = null;
    clearTimeout(p.fallback);
    clearTimeout(p.timeout);
    p.resolve(snapshot());
  };

  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
    R.syncMode = 'rvfc';
    const onFrame = (now, md) => {
      video.requestVideoFrameCallback(onFrame); // re-arm first: an exception below cannot stop the loop
      frameSinceSeeking = true;
      renderAt(md.mediaTime);
      // A frame presented once the seek is done is the sought frame (or a
      // later one); so is one presented during the seek whose time is the target's.
      const p = pendingSeek;
      const fd = timeline ? timeline.frameDur : 1 / 30;
      if (p && (!video.seeking || (md.mediaTime <= p.target + T_EPSILON_S && p.target - md.mediaTime < fd - T_EPSILON_S))) {
        R.seeksSettled.frame++;
        settleSeek();
      }
    };
    video.requestVideoFrameCallback(onFrame);
  } else {
    R.syncMode = 'timeupdate';
    video.addEventListener('timeupdate', () => renderAt(video.currentTime));
    const loop = () => {
      if (!video.paused && !video.ended) {
        renderAt(video.currentTime);
        requestAnimationFrame(loop);
      }
    };
    video.addEventListener('play', () => requestAnimationFrame(loop));
  }

  video.addEventListener('seeking', () => { frameSinceSeeking = false; });
  video.addEventListener('seeked', () => {
    const p = pendingSeek;
    if (R.syncMode !== 'rvfc') {
      renderAt(video.currentTime);
      settleSeek();
      return;
    }
    // The frame callback normally settles the seek. If the new frame was
    // presented before 'seeked' (or the seek landed on the frame already on
    // screen), no callback comes while paused: draw what currentTime shows.
    if (p) {
      clearTimeout(p.fallback);
      p.fallback = setTimeout(() => {
        // Playing: the next frame settles it (after a stall, maybe later).
        if (pendingSeek !== p || !video.paused) return;
        if (!frameSinceSeeking) renderAt(video.currentTime);
        R.seeksSettled.fallback++;
        settleSeek();
      }, SEEK_FALLBACK_MS);
    } else if (video.paused) {
      // A seek from the native controls: make sure the playhead display follows.
      setTimeout(() => {
        if (video.paused && !video.seeking && !pendingSeek && !frameSinceSeeking) renderAt(video.currentTime);
      }, SEEK_FALLBACK_MS);
    }
  });

  // seekTo resolves once the frame at `seconds` was presented and drawn, with
  // what was drawn ({currentTime, mediaTime, entryT, seq, drawnBoxes, showMarks}).
  const seekTo = (seconds) => {
    const d = duration();
    let target = Number(seconds);
    if (!Number.isFinite(target)) return Promise.reject(new Error(`seekTo: bad time ${seconds}`));
    target = Math.max(0, d > 0 ? Math.min(target, d) : target);
    return new Promise((resolve, reject) => {
      if (pendingSeek) settleSeek(); // superseded: the earlier caller gets the state as it is
      const p = { resolve, target };
      p.timeout = setTimeout(() => {
        if (pendingSeek !== p) return;
        pendingSeek = null;
        clearTimeout(p.fallback);
        reject(new Error(`seekTo(${target}): no frame within ${SEEK_TIMEOUT_MS} ms`));
      }, SEEK_TIMEOUT_MS);
      pendingSeek = p;
      video.currentTime = target;
    });
  };

  // jumpTo: seek to the frame of timeline time t (t is rounded to ms: aim just
  // after it, well before the next frame).
  const jumpTo = (t) => seekTo(t + Math.min(0.002, (timeline ? timeline.frameDur : 1 / 30) / 4)).catch(() => {});
  // A link may name a moment: /replay/{id}?token=…#t=12.3 (a case's key image).
  const linkT = Number(new URLSearchParams(window.location.hash.slice(1)).get('t'));
  if (Number.isFinite(linkT) && linkT > 0) video.addEventListener('loadedmetadata', () => { video.pause(); jumpTo(linkT); }, { once: true });

  // ---- controls

  const playBtn = $('play-pause');
  const stepBack = $('step-back');
  const stepFwd = $('step-fwd');
  const speed = $('speed');
  const marks = $('show-marks');

  const syncButtons = () => {
    const ok = metadataLoaded;
    playBtn.disabled = !ok;
    setText(playBtn, video.paused || video.ended ? 'Play' : 'Pause');
    stepBack.disabled = !ok || !video.paused;
    stepFwd.disabled = !ok || !video.paused;
  };
  for (const ev of ['play', 'pause', 'ended', 'loadedmetadata', 'emptied']) video.addEventListener(ev, syncButtons);

  const togglePlay = () => {
    if (video.paused || video.ended) video.play().catch((err) => toast(`Cannot play: ${err.message}`, 5000));
    else video.pause();
  };
  playBtn.addEventListener('click', togglePlay);

  const step = (dir) => {
    if (!video.paused || !metadataLoaded) return;
    if (timeline && timeline.entries.length) {
      const cur = mediaTime ?? video.currentTime;
      const i = lastIndexAtOrBefore(timeline.ts, cur + T_EPSILON_S);
      const j = Math.min(timeline.entries.length - 1, Math.max(0, i + dir));
      if (j !== i) { jumpTo(timeline.ts[j]); return; }
    }
    const fd = timeline ? timeline.frameDur : 1 / 30;
    seekTo(Math.max(0, video.currentTime + dir * fd)).catch(() => {});
  };
  stepBack.addEventListener('click', () => step(-1));
  stepFwd.addEventListener('click', () => step(1));

  speed.addEventListener('change', () => {
    const v = Number(speed.value);
    if (v > 0) video.playbackRate = v;
  });
  video.addEventListener('ratechange', () => {
    const v = video.playbackRate;
    if (SPEEDS.includes(v) && Number(speed.value) !== v) speed.value = String(v);
    if (mediaTime != null) renderPlayhead(mediaTime);
  });

  const applyMarks = () => {
    marks.checked = showMarks;
    document.body.classList.toggle('quiz', !showMarks);
    setText('marks-state', showMarks ? '' : 'quiz mode');
    findingsKey = '';
    redraw();
  };
  marks.addEventListener('change', () => {
    showMarks = marks.checked;
    applyMarks();
  });

  const wrap = $('video-wrap');
  const fsBtn = $('fullscreen-btn');
  const canFs = wrap.requestFullscreen || wrap.webkitRequestFullscreen;
  if (!canFs) fsBtn.hidden = true;
  fsBtn.addEventListener('click', () => {
    if (document.fullscreenElement || document.webkitFullscreenElement) {
      (document.exitFullscreen || document.webkitExitFullscreen).call(document);
    } else {
      canFs.call(wrap);
    }
  });

  // Timeline bar: click or drag to seek; arrow keys step 1 s (5 s with Shift).
  const bar = $('tl-bar');
  const seekFromPointer = (ev) => {
    const r = bar.getBoundingClientRect();
    const d = duration();
    if (!(r.width > 0 && d > 0)) return;
    const frac = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
    seekTo(frac * d).catch(() => {});
  };
  bar.addEventListener('pointerdown', (ev) => {
    if (!metadataLoaded) return;
    bar.setPointerCapture(ev.pointerId);
    seekFromPointer(ev);
  });
  bar.addEventListener('pointermove', (ev) => {
    if (bar.hasPointerCapture(ev.pointerId)) seekFromPointer(ev);
  });
  bar.addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight') return;
    ev.preventDefault();
    const delta = (ev.key === 'ArrowLeft' ? -1 : 1) * (ev.shiftKey ? 5 : 1);
    seekTo(video.currentTime + delta).catch(() => {});
  });

  // Page shortcuts: space play/pause, ←/→ one frame when paused.
  document.addEventListener('keydown', (ev) => {
    const tag = ev.target && ev.target.tagName;
    if (ev.altKey || ev.ctrlKey || ev.metaKey || ['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON', 'VIDEO'].includes(tag) || ev.target === bar) return;
    if (ev.key === ' ') { ev.preventDefault(); togglePlay(); }
    else if (ev.key === 'ArrowLeft' && video.paused) { ev.preventDefault(); step(-1); }
    else if (ev.key === 'ArrowRight' && video.paused) { ev.preventDefault(); step(1); }
  });

  // ---- events list

  const renderEvents = () => {
    const list = $('events');
    list.replaceChildren();
    eventButtons = events.map((e) => {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.style.setProperty('--ev-color', scoreColor(e.max_score));
      const track = document.createElement('span');
      track.className = 'ev-track';
      track.textContent = `#${e.track_id} ${e.class ?? 'lesion'}`;
      const time = document.createElement('span');
      time.className = 'ev-time';
      time.textContent = `${fmtTime(e.first_s, 1)}–${fmtTime(Number.isFinite(e.last_s) ? e.last_s : e.first_s, 1)}`;
      const frames = document.createElement('span');
      frames.className = 'ev-time';
      frames.textContent = Number.isFinite(e.frames) ? plural(e.frames, 'frame') : '';
      const scores = document.createElement('span');
      scores.className = 'ev-scores score';
      scores.textContent = `max score ${fmtScore(e.max_score)}` +
        (Number.isFinite(e.max_malignancy) ? ` · max malignancy ${fmtPct(e.max_malignancy)}` : '');
      b.append(track, time, frames, scores);
      b.addEventListener('click', () => {
        video.pause();
        // Land inside the event: ~0.05 s after its first frame, not past a short one.
        const span = (Number.isFinite(e.last_s) ? e.last_s : e.first_s) - e.first_s;
        const off = Math.max(Math.min(0.002, (timeline ? timeline.frameDur : 1 / 30) / 4), Math.min(0.05, span / 2));
        seekTo(e.first_s + off).catch(() => {});
      });
      li.append(b);
      list.append(li);
      return b;
    });
    if (!events.length) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'No lesion events in this recording';
      list.append(li);
    }
    $('events-hint').hidden = !events.length;
    barSegments = eventSegments($('tl-events'), events, duration(), 'tl-seg');
  };

  // ---- loading

  const setAspect = (w, h) => {
    if (!w || !h) return;
    wrap.style.setProperty('--ar', `${w} / ${h}`);
    wrap.style.setProperty('--ar-num', String(w / h));
  };

  const showMeta = (m) => {
    setText('source-name', m.source || '—');
    if (m.source) {
      const link = $('library-link');
      link.href = withToken(`/library/${encodeURIComponent(m.source)}`, ctx.token);
      link.hidden = false;
    }
    setText('rec-start', fmtStart(m.start));
    setText('rec-duration', fmtTime(Number(m.duration_s), 2));
    setText('rec-size', fmtBytes(Number(m.bytes)));
    setText('rec-frames', Number.isFinite(m.frames) ? String(m.frames) : '—');
    setText('rec-detections', Number.isFinite(m.detections) ? String(m.detections) : '—');
    setText('rec-model', m.model || '—');
    setText('rec-status', m.status || '—');
    setText('rec-id', m.id || id);
    const kind = m.status === 'complete' ? 'ok' : m.status === 'recovered' ? 'stale' : m.status === 'recording' ? 'live' : 'unknown';
    setPill('status-pill', kind, m.status || 'unknown');
    document.title = `sonolive — replay ${fmtStart(m.start)}`;
    events = lesionEvents(m);
    // A recording with the people's voices mixed in plays its sound.
    video.muted = !(Number(m.voices) > 0);
    setText('rec-voices', Number(m.voices) > 0 ? plural(Number(m.voices), 'voice') : 'none recorded');
    setAspect(m.width, m.height);
    renderEvents();
  };

  // videoError: a failed load may be an expired link: ask the API why.
  const videoError = async () => {
    const err = video.error;
    try {
      await api(ctx.token, recPath(id));
    } catch (e) {
      if (e.status === 401 || e.status === 403 || e.status === 404) return fail(e.status, e.message);
    }
    const what = err ? ({ 1: 'aborted', 2: 'network error', 3: 'cannot decode', 4: 'not supported or not found' }[err.code] || `error ${err.code}`) : 'error';
    setOverlay(`Cannot play this recording (${what})`);
    showError(`Video: ${what}${err && err.message ? ` — ${err.message}` : ''}`);
  };

  const start = async () => {
    if (!ctx.token) return fail(401, 'missing token');
    if (!id) return fail(404, 'no recording id in the link');
    applyMarks();
    syncButtons();
    try {
      meta = await api(ctx.token, recPath(id));
    } catch (err) {
      if (err.status) return fail(err.status, err.message);
      return fail(0, err.message);
    }
    showMeta(meta);
    // Still being written: video.mp4 is assembled when the recording ends.
    while (meta.status === 'recording') {
      setOverlay('Still recording — the replay opens when the recording ends');
      await sleep(RECORDING_POLL_MS);
      try {
        meta = await api(ctx.token, recPath(id));
        showMeta(meta);
      } catch (err) {
        if (err.status === 401 || err.status === 403 || err.status === 404) return fail(err.status, err.message);
      }
    }
    setOverlay('loading…');

    video.addEventListener('loadedmetadata', () => {
      metadataLoaded = true;
      setAspect(video.videoWidth, video.videoHeight);
      renderEvents(); // the video's own duration may differ slightly from meta's
      syncButtons();
      setOverlay('');
      redraw();
    }, { once: true });
    video.addEventListener('loadeddata', () => { if (mediaTime == null || video.paused) renderAt(video.currentTime); });
    video.addEventListener('error', videoError);
    video.playbackRate = Number(speed.value) || 1;
    video.defaultPlaybackRate = video.playbackRate;
    video.src = withToken(`${recPath(id)}/video.mp4`, ctx.token);

    if (meta && meta.exam) {
      try {
        const onSeek = (t) => { video.pause(); jumpTo(t); };
        const times = await examKeyImages({ token: ctx.token, meta, list: $('exam-keys'), onSeek });
        window.sonolive.examKeys = times;
        $('exam-keys-card').hidden = times.length === 0;
        const step = (dir) => {
          const now = video.currentTime;
          const t = dir > 0 ? times.find((x) => x > now + 0.05) : [...times].reverse().find((x) => x < now - 0.05);
          if (t != null) onSeek(t);
        };
        $('key-prev').addEventListener('click', () => step(-1));
        $('key-next').addEventListener('click', () => step(1));
      } catch (err) {
        showError(`Key images of the exam: ${err.message}`);
      }
    }
    try {
      const captures = await api(ctx.token, `${recPath(id)}/captures.json`);
      window.sonolive.captures = renderCaptures($('captures'), Array.isArray(captures) ? captures : [], {
        recPath: recPath(id), token: ctx.token, fmtTime,
        onSeek: (t) => { video.pause(); seekTo(t).catch(() => {}); },
      });
    } catch (err) {
      showError(`Key frames: ${err.message}`);
    }
    try {
      const text = await api(ctx.token, `${recPath(id)}/timeline.jsonl`, { as: 'text' });
      timeline = parseTimeline(text);
      consultEvents = consultOf(timeline.events);
      if (timeline.bad) showError(`${plural(timeline.bad, 'timeline line')} could not be read`);
      redraw();
    } catch (err) {
      if (err.status === 401 || err.status === 403) return fail(err.status, err.message);
      showError(`No AI timeline: ${err.message}`);
    }
  };

  start();
}

// ---------------------------------------------------------------- entry

const page = document.body.dataset.page;
if (page === 'library') bootLibrary();
else if (page === 'replay') bootReplay();
