// sonolive web UI: code shared by the sonographer's live page (live.html) and
// the expert's consultation page (expert.html). Plain ES module, no build step,
// no dependencies. The page says which one it is with <body data-page="...">.
// recordings.js (library.html, replay.html) imports its exported helpers.
//
// Protocol (docs/streaming.md), in short:
//   - WHEP: POST /whep/{source} with our SDP offer → 201 + SDP answer +
//     Location (DELETEd when we leave). The offer carries the video (recvonly)
//     and a pre-negotiated DataChannel "metadata" (id 0, unordered, no
//     retransmits) on which the server sends one JSON message per frame,
//     keyed by that frame's 90 kHz RTP timestamp (rtp_ts).
//   - WebSocket /ws/{source}?token=T: server "stats" once a second, "overlay"
//     and "viewer" events; we send "g2g" samples and "quality" once a second.
//
// Boxes are drawn from requestVideoFrameCallback, looking up the metadata of
// the exact frame being shown (md.rtpTimestamp), so they stay on the pixels
// they belong to however the DataChannel and the video are delayed. The same
// lookup gives glass-to-glass latency:
//   performance.timeOrigin + md.expectedDisplayTime - meta.capture_unix_ms.
//
// The pointer and marks (marks.js) go over a third channel, "consult"
// (ordered, reliable), which the page opens and the server forwards.

import { MarkLayer } from './marks.js';
import { Verdicts, VerdictPanel } from './verdicts.js';
import { ChatPanel } from './chat.js';
import { ExamPanel } from './exam.js';
import { iceSource } from './ice.js';
import { Voice } from './voice.js';

const META_MAX_AGE_MS = 5000;       // older metadata can no longer match a displayed frame
const G2G_RING_SIZE = 600;          // ~20 s at 30 fps: the window for p50/p95
const G2G_REPORT_MAX = 300;         // protocol limit per "g2g" message
const NO_FRAMES_LOST_MS = 3000;     // no new frame for this long: "source lost"
const ICE_GATHER_TIMEOUT_MS = 2000; // POST the offer with what we have by then
const KEEP_BOXES_MS = 200;          // boxes survive a few frames whose metadata was lost
const ARRIVAL_FALLBACK_MS = 1000;   // no RTP match for this long: draw newest metadata instead
const STATS_STALE_MS = 3500;        // server stats older than this are not trusted for state
const STAGES = ['queue', 'preprocess', 'infer', 'decode', 'wait', 'track', 'overlay', 'encode', 'total'];

export const INVALID_LINK_MSG = 'This link is invalid or has expired — ask the sonographer for a new invite';
export const FORBIDDEN_LINK_MSG = 'This link does not give access to this page — ask the sonographer for a new invite';

// Live, test-visible state (playwright reads window.sonolive.stats).
const stats = {
  page: '',
  source: '',
  state: 'connecting',      // connecting | live | lost | stopped | error
  pcState: 'new',           // RTCPeerConnection.connectionState (or "reconnecting")
  wsOpen: false,
  dcState: 'none',          // the metadata DataChannel's readyState
  viewerId: null,           // last path segment of the WHEP Location
  framesDecoded: 0,         // getStats inbound-rtp video framesDecoded
  framesRendered: 0,        // requestVideoFrameCallback calls
  metadataReceived: 0,      // DataChannel messages
  metadataInvalid: 0,       // of which not JSON or without rtp_ts
  verdictsReceived: 0,      // verdicts from the others in the session
  frozen: null,             // {ts, by, loaded, width} while a freeze holds a frame
  captures: [],             // key frames kept in this session: {n, recording, t, by}
  captureFailed: null,      // why the last capture asked for here was not kept
  matchedFrames: 0,         // frames whose metadata was found by RTP timestamp
  boxesDrawn: 0,            // total boxes drawn client-side
  syncMode: 'rtp',          // rtp | arrival (fallback when no frame matches)
  lastDetections: [],       // detections of the frame on screen
  g2g: { p50: null, p95: null, n: 0 },
  burnIn: null,             // as last reported by the server over the WebSocket
  ai: null,
  lastError: null,
  wsMessages: 0,
  quality: null,            // last getStats summary
  server: null,             // last WebSocket "stats" message
};
window.sonolive = { stats };   // boot adds the page's Session as .session

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- location

// parseLocation reads /live/{source} or /expert/{source} and ?token=.
export function parseLocation(loc = window.location) {
  const parts = loc.pathname.split('/').filter(Boolean);
  return {
    page: parts[0] || '',
    source: parts[1] ? decodeURIComponent(parts[1]) : '',
    token: new URLSearchParams(loc.search).get('token') || '',
  };
}

// tokenPayload decodes the (unverified) payload of an invite token, only to
// show its role and expiry; the server is the one that checks it.
export function tokenPayload(token) {
  try {
    let b64 = token.split('.')[0].replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- HTTP

const authHeader = (token) => ({ Authorization: `Bearer ${token}` });

// httpError turns a non-2xx response into an Error carrying the status and
// the server's one-line plain-text reason.
export async function httpError(res) {
  let text = '';
  try { text = (await res.text()).trim().split('\n')[0].slice(0, 200); } catch { /* no body */ }
  const err = new Error(text || `HTTP ${res.status}`);
  err.status = res.status;
  return err;
}

// Statuses after which retrying cannot help: the link itself is bad.
const isFatalStatus = (s) => s === 401 || s === 403 || s === 404;

async function apiJSON(token, method, path, body) {
  const headers = authHeader(token);
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await httpError(res);
  return res.json();
}

// deleteResource leaves a WHEP session; keepalive lets it outlive the page.
function deleteResource(url, token) {
  fetch(url, { method: 'DELETE', headers: authHeader(token), keepalive: true }).catch(() => {});
}

// backoffMs: 0.5 s, 1 s, 2 s … capped at 10 s, ±25 % so viewers don't stampede.
const backoffMs = (failures) =>
  Math.min(10000, 500 * 2 ** Math.min(failures, 5)) * (0.75 + Math.random() / 2);

// ---------------------------------------------------------------- WHEP

function waitIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

// WhepClient plays /whep/{source}: one RTCPeerConnection at a time, rebuilt
// with backoff when it fails; 401/403/404 stop it for good (onFatal).
class WhepClient {
  constructor({ url, token, iceServers, onPeer, onTrack, onMessage, onConsult, onState, onFatal, onResource }) {
    Object.assign(this, { url, token, iceServers, onPeer, onTrack, onMessage, onConsult, onState, onFatal, onResource });
    this.pc = null;
    this.consult = null;
    this.resource = null;
    this.gen = 0;            // bumps on every (re)connect: late callbacks of old attempts are ignored
    this.failures = 0;
    this.stopped = true;
    this.timers = {};
  }

  start() {
    this.stopped = false;
    this.failures = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.teardown();
  }

  async connect() {
    this.teardown();
    const gen = ++this.gen;
    let iceServers = [];
    try {
      if (this.iceServers) iceServers = await this.iceServers();
    } catch (err) {
      stats.lastError = `ICE servers: ${err.message}`; // direct paths still work
    }
    if (gen !== this.gen || this.stopped) return;
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    this.onState('connecting');

    pc.addTransceiver('video', { direction: 'recvonly' });
    // The voices' audio sections.
    if (this.onPeer) this.onPeer(pc);
    // Created before createOffer so the offer has an m=application section;
    // the server opens the same pre-negotiated channel (id 0) on its side.
    const dc = pc.createDataChannel('metadata', { negotiated: true, id: 0, ordered: false, maxRetransmits: 0 });
    // The protocol says text messages; accept binary ones too (e.g. a pion
    // server using Send instead of SendText), decoded as UTF-8.
    dc.binaryType = 'arraybuffer';
    const utf8 = new TextDecoder();
    dc.onmessage = (ev) => {
      if (gen !== this.gen) return;
      this.onMessage(typeof ev.data === 'string' ? ev.data : utf8.decode(ev.data));
    };
    // Ordered and reliable: pointer, marks and what the session's people
    // send each other; the server forwards it to the others.
    const consult = pc.createDataChannel('consult');
    this.consult = consult;
    consult.onmessage = (ev) => {
      if (gen !== this.gen || typeof ev.data !== 'string') return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this.onConsult(msg);
    };
    const dcState = () => { if (gen === this.gen) stats.dcState = dc.readyState; };
    dc.onopen = dcState;
    dc.onclose = dcState;
    dcState();
    pc.ontrack = (ev) => {
      if (gen === this.gen) this.onTrack(ev);
    };
    pc.onconnectionstatechange = () => { if (gen === this.gen) this.onPcState(pc.connectionState); };

    try {
      await pc.setLocalDescription(await pc.createOffer());
      // Non-trickle: send the offer with its candidates (the server's answer is complete too).
      await waitIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
      if (gen !== this.gen) return;
      const res = await fetch(this.url, {
        method: 'POST',
        headers: { ...authHeader(this.token), 'Content-Type': 'application/sdp' },
        body: pc.localDescription.sdp,
        cache: 'no-store',
      });
      if (!res.ok) throw await httpError(res);
      const location = res.headers.get('Location');
      const resource = location ? new URL(location, new URL(this.url, window.location.href)).href : null;
      const answer = await res.text();
      if (gen !== this.gen) {          // superseded while waiting: leave at once
        if (resource) deleteResource(resource, this.token);
        return;
      }
      this.resource = resource;
      this.onResource(resource);
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (err) {
      if (gen !== this.gen || this.stopped) return;
      // 400: the server refused this browser's offer (no codec it can
      // send); the same browser would only offer the same again.
      if (isFatalStatus(err.status) || err.status === 400) {
        this.stop();
        this.onFatal(err);
        return;
      }
      this.retry(err);
    }
  }

  // sendConsult sends one consult message; false when the channel is not open.
  sendConsult(msg) {
    if (!this.consult || this.consult.readyState !== 'open') return false;
    this.consult.send(JSON.stringify(msg));
    return true;
  }

  onPcState(state) {
    clearTimeout(this.timers.disconnected);
    this.onState(state);
    if (state === 'connected') {
      // Only a connection that stays up resets the backoff.
      clearTimeout(this.timers.stable);
      this.timers.stable = setTimeout(() => { this.failures = 0; }, 5000);
    } else if (state === 'disconnected') {
      // ICE often recovers from a short network blip on its own.
      this.timers.disconnected = setTimeout(() => this.retry(new Error('connection lost')), 3000);
    } else if (state === 'failed') {
      this.retry(new Error('connection failed'));
    }
  }

  retry(err) {
    if (this.stopped) return;
    stats.lastError = err.message;
    this.teardown();
    this.onState('reconnecting');
    const delay = backoffMs(this.failures++);
    this.timers.retry = setTimeout(() => { if (!this.stopped) this.connect(); }, delay);
  }

  // reconnect is used when frames stop while the connection claims to be fine.
  reconnect(reason) {
    if (!this.stopped) this.retry(new Error(reason));
  }

  teardown() {
    this.gen++;
    for (const t of Object.values(this.timers)) clearTimeout(t);
    this.timers = {};
    if (this.resource) deleteResource(this.resource, this.token);
    this.resource = null;
    if (this.pc) this.pc.close();
    this.pc = null;
    this.consult = null;
  }
}

// ---------------------------------------------------------------- WebSocket

// SocketClient keeps /ws/{source} open, reconnecting with backoff.
class SocketClient {
  constructor({ url, onMessage, onOpen, onClose }) {
    Object.assign(this, { url, onMessage, onOpen, onClose });
    this.ws = null;
    this.failures = 0;
    this.stopped = true;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => { opened = true; this.failures = 0; this.onOpen(); };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg && typeof msg === 'object') this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onClose(opened);
      if (!this.stopped) this.timer = setTimeout(() => this.open(), backoffMs(this.failures++));
    };
  }

  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'bye');
  }
}

// ---------------------------------------------------------------- glass-to-glass

// G2G keeps the last G2G_RING_SIZE samples for p50/p95 and queues new ones
// for the once-a-second report to the server.
class G2G {
  constructor() {
    this.ring = [];
    this.next = 0;
    this.pending = [];
    this.total = 0;
  }

  add(ms) {
    if (!Number.isFinite(ms)) return;
    ms = Math.round(ms * 10) / 10;
    if (this.ring.length < G2G_RING_SIZE) this.ring.push(ms);
    else this.ring[this.next] = ms;
    this.next = (this.next + 1) % G2G_RING_SIZE;
    this.pending.push(ms);
    if (this.pending.length > G2G_REPORT_MAX) this.pending.shift(); // WS down: keep the newest
    this.total++;
  }

  takePending() {
    const out = this.pending;
    this.pending = [];
    return out;
  }

  summary() {
    const n = this.ring.length;
    if (!n) return { p50: null, p95: null, n: 0 };
    const s = [...this.ring].sort((a, b) => a - b);
    const q = (p) => s[Math.min(n - 1, Math.floor(p * n))];
    return { p50: q(0.5), p95: q(0.95), n };
  }
}

// ---------------------------------------------------------------- frame sync

// FrameSync matches displayed frames to their metadata by RTP timestamp.
// onFrame({meta, displayAtMs, late}) is called for every displayed frame
// (meta null when none matched) and again, late:true, when the metadata of a
// recently displayed frame arrives after it (only its latency is then useful).
class FrameSync {
  constructor(video, onFrame) {
    this.video = video;
    this.onFrame = onFrame;
    this.meta = new Map();    // rtp_ts → {msg, at}; insertion order = arrival order
    this.newest = null;       // newest {msg, at}, for the arrival-order fallback
    this.unmatched = [];      // recent frames shown without metadata: [{ts, displayAtMs}]
    this.lastMatchAt = 0;
  }

  add(msg) {
    const ts = Number(msg.rtp_ts) >>> 0;  // RTP timestamps are uint32 (wrap as the browser does)
    const now = performance.now();
    const entry = { msg, at: now };
    this.meta.set(ts, entry);
    this.newest = entry;
    for (const [k, e] of this.meta) {     // oldest first: stop at the first fresh one
      if (now - e.at <= META_MAX_AGE_MS) break;
      this.meta.delete(k);
    }
    const i = this.unmatched.findIndex((f) => f.ts === ts);
    if (i >= 0) {
      const [frame] = this.unmatched.splice(i, 1);
      this.onFrame({ meta: msg, displayAtMs: frame.displayAtMs, late: true });
    }
  }

  start() {
    if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
      this.video.requestVideoFrameCallback(this.tick);
    } else {
      // No per-frame callback (old browsers): draw the newest metadata, no latency.
      stats.syncMode = 'arrival';
      const loop = () => {
        requestAnimationFrame(loop);
        if (this.newest) this.onFrame({ meta: this.newest.msg, displayAtMs: NaN, late: false, fresh: false });
      };
      requestAnimationFrame(loop);
    }
  }

  tick = (now, md) => {
    // Re-arm first, so that an exception below cannot stop the loop.
    this.video.requestVideoFrameCallback(this.tick);
    const displayAtMs = performance.timeOrigin + md.expectedDisplayTime;
    const ts = md.rtpTimestamp === undefined ? undefined : md.rtpTimestamp >>> 0;
    const entry = ts === undefined ? undefined : this.meta.get(ts);
    if (entry) {
      this.lastMatchAt = now;
      stats.syncMode = 'rtp';
      this.onFrame({ meta: entry.msg, displayAtMs, late: false, matched: true });
      return;
    }
    if (ts !== undefined) {
      this.unmatched.push({ ts, displayAtMs });
      if (this.unmatched.length > 30) this.unmatched.shift();
    }
    // Metadata flows but never matches (e.g. a relay that rewrites timestamps):
    // show the newest findings rather than none, unsynced.
    const n = this.newest;
    if (now - this.lastMatchAt > ARRIVAL_FALLBACK_MS && n && performance.now() - n.at < 500) {
      stats.syncMode = 'arrival';
      this.onFrame({ meta: n.msg, displayAtMs: NaN, late: false, matched: false });
      return;
    }
    this.onFrame({ meta: null, displayAtMs, late: false, matched: false });
  };
}

// ---------------------------------------------------------------- drawing

// contentRect is where object-fit: contain puts a vw×vh video inside an
// ew×eh element (letterboxed or pillarboxed).
export function contentRect(ew, eh, vw, vh) {
  if (!vw || !vh) return { x: 0, y: 0, w: ew, h: eh };
  const s = Math.min(ew / vw, eh / vh);
  const w = vw * s;
  const h = vh * s;
  return { x: (ew - w) / 2, y: (eh - h) / 2, w, h };
}

export function boxLabel(d) {
  let label = `${d.class ?? 'class ' + d.class_id} ${Number(d.score).toFixed(2)} #${d.track_id}`;
  const c = d.calipers;
  if (c && typeof c.long_mm === 'number' && typeof c.short_mm === 'number') label += ` ${c.long_mm.toFixed(1)}×${c.short_mm.toFixed(1)} mm`;
  else if (Array.isArray(d.size_mm)) label += ` ${Math.round(d.size_mm[0])}×${Math.round(d.size_mm[1])} mm`;
  if (typeof d.malignancy === 'number') label += ` M ${Math.round(d.malignancy * 100)}%`;
  return label;
}

// detectionSize is a detection's size as the findings table shows it,
// compact for the side panel's narrow column (the header says mm): the
// calipers on its outline (long × short axis; ↕ taller than wide), else
// the box's extent; px when the pixel size is unknown. title is the same
// in words.
export function detectionSize(d) {
  const c = d.calipers;
  if (c && typeof c.long_mm === 'number' && typeof c.short_mm === 'number') {
    return {
      text: `${c.long_mm.toFixed(1)}×${c.short_mm.toFixed(1)}${c.taller_than_wide ? ' ↕' : ''}`,
      title: `long × short axis in mm (calipers on the AI outline)${c.taller_than_wide ? ', taller than wide' : ''}`,
    };
  }
  if (c && typeof c.long_px === 'number' && typeof c.short_px === 'number') {
    return { text: `${Math.round(c.long_px)}×${Math.round(c.short_px)} px`, title: 'long × short axis in pixels: the pixel size is unknown' };
  }
  if (Array.isArray(d.size_mm)) {
    return { text: `${Math.round(d.size_mm[0])}×${Math.round(d.size_mm[1])} box`, title: "width × depth in mm of the detector's box" };
  }
  return { text: '—', title: 'not measured' };
}

const COLOR_FRESH = '#39d98a';
const COLOR_STALE = '#ffb020';

// BoxPainter draws detections on the canvas laid over the <video>.
export class BoxPainter {
  // labelSuffix(d) is added to a box's label (the expert's verdict).
  constructor(canvas, video, labelSuffix = () => '') {
    this.canvas = canvas;
    this.video = video;
    this.labelSuffix = labelSuffix;
    this.g = canvas.getContext('2d');
    this.hasContent = false;
    this.lastMeta = null;
    new ResizeObserver(() => { if (this.hasContent) this.draw(this.lastMeta); }).observe(canvas);
  }

  fit() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;   // also clears the canvas
      this.canvas.height = h;
    }
    return dpr;
  }

  clear() {
    this.g.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.hasContent = false;
  }

  // draw returns the number of boxes drawn.
  draw(meta) {
    const dpr = this.fit();
    this.clear();
    this.lastMeta = meta;
    const dets = (meta && meta.detections) || [];
    if (!dets.length || !meta.width || !meta.height) return 0;
    const g = this.g;
    // The displayed picture's rectangle, then source pixels → canvas pixels.
    const r = contentRect(this.canvas.width, this.canvas.height,
      this.video.videoWidth || meta.width, this.video.videoHeight || meta.height);
    const sx = r.w / meta.width;
    const sy = r.h / meta.height;
    g.save();
    g.beginPath();
    g.rect(r.x, r.y, r.w, r.h);
    g.clip();
    g.font = `600 ${Math.round(13 * dpr)}px system-ui, sans-serif`;
    g.textBaseline = 'top';
    for (const d of dets) {
      if (!Array.isArray(d.box) || d.box.length < 4) continue;
      const [bx, by, bw, bh] = d.box;
      const x = r.x + bx * sx;
      const y = r.y + by * sy;
      const w = bw * sx;
      const h = bh * sy;
      const stale = d.stale_age > 0;
      const color = stale ? COLOR_STALE : COLOR_FRESH;
      g.strokeStyle = color;
      g.lineWidth = 2 * dpr;
      g.setLineDash(stale ? [6 * dpr, 4 * dpr] : []);
      if (Array.isArray(d.outline) && d.outline.length >= 3) {
        // The outline says where the lesion is; the box only frames it.
        this.outline(d, r, sx, sy, dpr);
        g.lineWidth = dpr;
        g.setLineDash([4 * dpr, 4 * dpr]);
      }
      g.strokeRect(x, y, w, h);
      this.label(boxLabel(d) + this.labelSuffix(d), x, y, color, dpr, r);
    }
    g.restore();
    this.hasContent = true;
    return dets.length;
  }

  // outline draws a lesion's boundary and its calipers (the long and the
  // short axis, with cross marks at their ends, like the machine's own).
  outline(d, r, sx, sy, dpr) {
    const g = this.g;
    const px = (p) => [r.x + p[0] * sx, r.y + p[1] * sy];
    g.beginPath();
    d.outline.forEach((p, i) => { const [x, y] = px(p); if (i) g.lineTo(x, y); else g.moveTo(x, y); });
    g.closePath();
    g.stroke();
    const c = d.calipers;
    if (!c) return;
    g.save();
    g.strokeStyle = '#ffffff';
    g.lineWidth = dpr;
    g.setLineDash([]);
    const arm = 4 * dpr;
    for (const a of [c.long, c.short]) {
      if (!Array.isArray(a) || a.length < 4) continue;
      const [x1, y1] = px([a[0], a[1]]);
      const [x2, y2] = px([a[2], a[3]]);
      g.beginPath();
      g.moveTo(x1, y1); g.lineTo(x2, y2);
      for (const [ex, ey] of [[x1, y1], [x2, y2]]) {
        g.moveTo(ex - arm, ey); g.lineTo(ex + arm, ey);
        g.moveTo(ex, ey - arm); g.lineTo(ex, ey + arm);
      }
      g.stroke();
    }
    g.restore();
  }

  // label: dark text on the box colour, above the box, or inside it at the top edge.
  label(text, x, y, color, dpr, r) {
    const g = this.g;
    const pad = 3 * dpr;
    const th = Math.round(13 * dpr) + 2 * pad;
    const tw = g.measureText(text).width + 2 * pad;
    let ly = y - th;
    if (ly < r.y) ly = y;
    let lx = Math.min(x, r.x + r.w - tw);
    lx = Math.max(lx, r.x);
    g.setLineDash([]);
    g.fillStyle = color;
    g.fillRect(lx, ly, tw, th);
    g.fillStyle = '#0b0f14';
    g.fillText(text, lx + pad, ly + pad + dpr);
  }
}

// ---------------------------------------------------------------- formatting

const fmtMs = (v) => (v == null || !Number.isFinite(v) ? '—' : v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : String(Math.round(v)));
const fmtNum = (v, digits = 0) => (v == null || !Number.isFinite(v) ? '—' : v.toFixed(digits));
export const fmtPct = (v) => (typeof v === 'number' ? `${Math.round(v * 100)}%` : '—');

function setText(el, text) {
  if (typeof el === 'string') el = $(el);
  if (el && el.textContent !== text) el.textContent = text;
}

function fmtClock(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function fmtDuration(ms) {
  if (ms <= 0) return 'expired';
  const min = Math.round(ms / 60000);
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  const m = min % 60;
  return m ? `${h} h ${m} min` : `${h} h`;
}

// parseExpiry accepts unix seconds, unix milliseconds or an RFC 3339 string.
export function parseExpiry(v) {
  if (typeof v === 'number' && Number.isFinite(v)) return new Date(v < 1e12 ? v * 1000 : v);
  if (typeof v === 'string' && v.trim() !== '') {
    const n = Number(v);
    if (Number.isFinite(n)) return parseExpiry(n);
    const t = Date.parse(v);
    if (!Number.isNaN(t)) return new Date(t);
  }
  return null;
}

let toastTimer = null;
export function toast(text, ms = 4000) {
  const el = $('toast');
  if (!el) return;
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, ms);
}

// ---------------------------------------------------------------- fatal errors

function showFatal(status, reason, page) {
  stats.state = 'error';
  stats.lastError = status ? `${status} ${reason}` : reason;
  let title;
  if (status === 401 && /revoked/.test(reason || '')) title = 'This link was revoked by the sonographer — ask for a new invite';
  else if (status === 401 && /expired/.test(reason || '')) title = 'This link has expired — ask the sonographer for a new invite';
  else if (status === 401) title = INVALID_LINK_MSG;
  else if (status === 403) title = FORBIDDEN_LINK_MSG;
  else if (status === 404) title = 'Unknown source — check the link';
  else if (status === 400 && /codec/.test(reason || '')) title = 'This browser cannot play the video';
  else title = `Cannot start: ${reason}`;
  let hint = reason && title !== `Cannot start: ${reason}` ? `Server said: ${reason}` : '';
  if (page === 'live' && (status === 401 || status === 403)) {
    hint += (hint ? '. ' : '') + 'Sonographer: open the link sonolive printed when it started.';
  }
  setText('fatal-title', title);
  setText('fatal-reason', hint);
  const fatal = $('fatal');
  if (fatal) fatal.hidden = false;
  const main = $('main');
  if (main) main.hidden = true;
  setPill('state-pill', 'error', 'error');
  for (const id of ['ai-pill', 'viewers-pill', 'rec-pill']) { const el = $(id); if (el) el.hidden = true; }
  document.title = `sonolive — ${status === 401 ? 'link invalid or expired' : 'error'}`;
}

// showOrganWarning shows the wrong-preset guard's warning (server
// organ/guard.go): the frames look like another organ than the preset's,
// so the running model's boxes may be wrong.
function showOrganWarning(st) {
  const el = $('organ-warning');
  if (!el) return;
  const on = !!(st && st.mismatch);
  if (on) {
    const pct = Math.round((st.p || 0) * 100);
    const text = `This looks like a ${st.mismatch} scan, not a ${st.preset} scan (${pct}%): the ${st.preset} model's boxes may be wrong — check the exam preset`;
    if (el.textContent !== text) el.textContent = text;
  }
  el.hidden = !on;
  stats.organMismatch = on ? st.mismatch : null;
}

export function setPill(id, kind, text) {
  const el = $(id);
  if (!el) return;
  if (el.dataset.kind !== kind) el.dataset.kind = kind;
  setText(el, text);
}

// ---------------------------------------------------------------- session

// Session wires WHEP, the WebSocket, frame sync, drawing and the status
// display; the page-specific code plugs in through hooks.
class Session {
  constructor(ctx, hooks) {
    this.ctx = ctx;
    this.hooks = hooks;
    this.video = $('video');
    this.painter = new BoxPainter($('overlay'), this.video, (d) => this.verdicts.suffix(d.track_id));
    this.verdicts = new Verdicts((msg) => this.whep.sendConsult(msg));
    this.g2g = new G2G();
    this.fatal = false;
    this.frozen = null;        // {ts, meta, by} while everyone holds a frame
    this.whepState = 'new';
    this.lastFrameAt = 0;      // performance.now() of the last displayed frame
    this.lastDrawnAt = 0;
    this.currentMeta = null;   // metadata of the frame on screen
    this.server = null;        // last "stats" message
    this.serverAt = 0;
    this.prevQuality = null;
    this.prevPc = null;
    this.overlayMode = () => 'auto';   // pages replace it: auto | on | off

    const src = encodeURIComponent(ctx.source);
    this.sync = new FrameSync(this.video, (f) => this.onFrame(f));
    this.marks = new MarkLayer($('marks'), this.video, {
      rectOf: contentRect,
      frameSize: () => {
        const m = this.currentMeta || (this.server && { width: this.server.width, height: this.server.height });
        return m && m.width && m.height ? { w: m.width, h: m.height } : null;
      },
      frameTs: () => (this.frozen ? this.frozen.ts : this.currentMeta ? this.currentMeta.rtp_ts : undefined),
      send: (msg) => this.whep.sendConsult(msg),
      role: ctx.page === 'live' ? 'sonographer' : 'expert',
    });
    stats.marks = this.marks.stats;
    this.chat = $('chat-form') ? new ChatPanel({
      people: $('people'), log: $('chat-log'), form: $('chat-form'), input: $('chat-input'),
      send: (msg) => this.whep.sendConsult(msg), selfId: () => stats.viewerId,
    }) : null;
    if (this.chat) stats.chat = this.chat.stats;
    this.voice = $('mic-btn') ? new Voice({
      els: { mic: $('mic-btn'), ptt: $('ptt'), hear: $('hear-btn'), status: $('voice-status'), recorded: $('voices-pill') },
      send: (msg) => this.whep.sendConsult(msg),
    }) : null;
    if (this.voice) stats.voice = this.voice.stats;
    this.whep = new WhepClient({
      url: `/whep/${src}`,
      token: ctx.token,
      iceServers: iceSource(ctx),
      onPeer: (pc) => { if (this.voice) this.voice.prepare(pc); },
      onTrack: (ev) => {
        if (this.voice && this.voice.onTrack(ev)) return;
        if (ev.track.kind === 'video') this.attach(ev.streams[0] || new MediaStream([ev.track]));
      },
      onMessage: (data) => this.onMetadata(data),
      onConsult: (msg) => this.onConsult(msg),
      onState: (s) => { this.whepState = s; stats.pcState = s; },
      onFatal: (err) => this.die(err),
      onResource: (url) => { stats.viewerId = url ? url.split('/').filter(Boolean).pop() : null; },
    });
    const wsProto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.ws = new SocketClient({
      url: `${wsProto}//${window.location.host}/ws/${src}?token=${encodeURIComponent(ctx.token)}`,
      onMessage: (msg) => this.onSocketMessage(msg),
      onOpen: () => { stats.wsOpen = true; },
      onClose: (wasOpen) => {
        stats.wsOpen = false;
        // A WebSocket can't tell us its HTTP status: ask the API whether the link died.
        if (!wasOpen) this.checkAccess().catch(() => {});
      },
    });

    this.video.addEventListener('resize', () => this.setAspect(this.video.videoWidth, this.video.videoHeight));
  }

  start() {
    this.whep.start();
    this.ws.start();
    this.sync.start();
    if (this.voice) this.voice.start();
    this.uiTimer = setInterval(() => this.refresh(), 250);
    this.reportTimer = setInterval(() => this.report(), 1000);
    window.addEventListener('pagehide', () => this.suspend());
    window.addEventListener('pageshow', (ev) => { if (ev.persisted && !this.fatal) this.resume(); });
  }

  // suspend leaves the WHEP session (DELETE) when the page goes away or into the bfcache.
  suspend() {
    this.whep.stop();
    this.ws.stop();
  }

  resume() {
    this.whep.start();
    this.ws.start();
  }

  die(err) {
    if (this.fatal) return;
    this.fatal = true;
    this.suspend();
    if (this.voice) this.voice.stop();
    clearInterval(this.uiTimer);
    clearInterval(this.reportTimer);
    showFatal(err.status, err.message, this.ctx.page);
  }

  // checkAccess asks GET /api/sources whether the token is still good; it
  // returns this source's entry (or undefined) and ends the session on 401/403/404.
  async checkAccess() {
    let list;
    try {
      list = await apiJSON(this.ctx.token, 'GET', '/api/sources');
    } catch (err) {
      if (isFatalStatus(err.status)) this.die(err);
      throw err;
    }
    if (!Array.isArray(list)) return undefined;
    const entry = list.find((s) => s && s.id === this.ctx.source);
    if (!entry) {
      const err = new Error(`no source "${this.ctx.source}"`);
      err.status = 404;
      this.die(err);
    }
    return entry;
  }

  attach(stream) {
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    const play = this.video.play();
    if (play) {
      play.then(() => { const b = $('play-btn'); if (b) b.hidden = true; })
        .catch(() => { const b = $('play-btn'); if (b) b.hidden = false; });
    }
  }

  setAspect(w, h) {
    if (!w || !h) return;
    const wrap = $('video-wrap');
    wrap.style.setProperty('--ar', `${w} / ${h}`);
    wrap.style.setProperty('--ar-num', String(w / h));
  }

  onMetadata(data) {
    stats.metadataReceived++;
    let msg;
    try { msg = JSON.parse(data); } catch { stats.metadataInvalid++; return; }
    if (!msg || typeof msg !== 'object' || msg.rtp_ts === undefined) { stats.metadataInvalid++; return; }
    if (!this.video.videoWidth) this.setAspect(msg.width, msg.height);
    this.sync.add(msg);
  }

  // onConsult takes what the others in the session sent.
  onConsult(msg) {
    if (msg && msg.type === 'freeze') { this.freeze(msg); return; }
    if (msg && msg.type === 'unfreeze') { this.unfreeze(msg); return; }
    if (msg && (msg.type === 'captured' || msg.type === 'capture_failed')) { this.captured(msg); return; }
    if (this.voice) this.voice.receive(msg, stats.viewerId);
    if (this.chat && this.chat.receive(msg)) {
      if (msg.type === 'chat' && this.hooks.onChat) this.hooks.onChat(msg);
      return;
    }
    if (this.verdicts.receive(msg)) {
      stats.verdictsReceived++;
      this.redraw();
      if (this.hooks.onVerdict) this.hooks.onVerdict(msg);
      return;
    }
    this.marks.receive(msg);
  }

  // toggleFreeze asks everyone to hold the frame on screen here, or to
  // go live again.
  toggleFreeze() {
    if (this.frozen) return this.whep.sendConsult({ type: 'unfreeze' });
    const meta = this.currentMeta;
    if (!meta) { toast('No frame to freeze yet'); return false; }
    return this.whep.sendConsult({ type: 'freeze', rtp_ts: meta.rtp_ts });
  }

  // capture asks the server to keep the frame on screen here (the frozen
  // one during a freeze) as a key frame of the recording.
  capture() {
    const meta = this.currentMeta;
    if (!meta && !this.frozen) { toast('No frame to capture yet'); return false; }
    return this.whep.sendConsult({ type: 'capture', rtp_ts: this.frozen ? this.frozen.ts : meta.rtp_ts });
  }

  // captured is the server's word on a capture: kept (told to everyone)
  // or not (told to its sender, with why).
  captured(msg) {
    if (msg.type === 'captured') {
      stats.captures.push({ n: msg.n, recording: msg.recording, t: msg.t, by: msg.from && msg.from.role });
    } else {
      stats.captureFailed = msg.reason || 'failed';
    }
    if (this.hooks.onCapture) this.hooks.onCapture(msg);
  }

  // freeze holds the picture the server decoded for everyone, with that
  // frame's boxes; the video goes on underneath.
  freeze(msg) {
    if (typeof msg.still !== 'string' || !msg.still.startsWith('/api/')) return;
    const ts = Number(msg.rtp_ts) >>> 0;
    const entry = this.sync.meta.get(ts);
    this.frozen = { ts, meta: entry ? entry.msg : this.currentMeta, by: msg.from && msg.from.role };
    stats.frozen = { ts, by: this.frozen.by, loaded: false, width: 0 };
    const img = $('still');
    img.onload = () => { if (this.frozen && this.frozen.ts === ts) Object.assign(stats.frozen, { loaded: true, width: img.naturalWidth }); };
    img.src = `${msg.still}&token=${encodeURIComponent(this.ctx.token)}`;
    img.hidden = false;
    this.marks.hold(ts);
    if (this.frozen.meta && this.wantsBoxes(this.frozen.meta)) stats.boxesDrawn += this.painter.draw(this.frozen.meta);
    else this.painter.clear();
    if (this.hooks.onFreeze) this.hooks.onFreeze(this.frozen);
  }

  unfreeze() {
    if (!this.frozen) return;
    const { ts } = this.frozen;
    this.frozen = null;
    stats.frozen = null;
    const img = $('still');
    img.hidden = true;
    img.removeAttribute('src');
    this.marks.release(ts);
    if (this.hooks.onFreeze) this.hooks.onFreeze(null);
  }

  // onFrame runs for every displayed frame (and for late metadata).
  onFrame({ meta, displayAtMs, late, matched }) {
    if (meta && Number.isFinite(displayAtMs) && Number.isFinite(meta.capture_unix_ms)) {
      this.g2g.add(displayAtMs - meta.capture_unix_ms);
    }
    if (late) return; // that frame is gone: its boxes would land on a newer one
    if (this.frozen) { this.lastFrameAt = performance.now(); return; } // the held frame keeps its boxes
    const now = performance.now();
    stats.framesRendered++;
    this.lastFrameAt = now;
    if (matched) stats.matchedFrames++;
    if (!meta) {
      // Metadata lost (unreliable channel): keep the last boxes briefly, then clear.
      if (this.painter.hasContent && now - this.lastDrawnAt > KEEP_BOXES_MS) this.painter.clear();
      if (now - this.lastDrawnAt > KEEP_BOXES_MS) this.currentMeta = null;
      return;
    }
    this.currentMeta = meta;
    stats.lastDetections = Array.isArray(meta.detections) ? meta.detections : [];
    if (this.wantsBoxes(meta)) {
      stats.boxesDrawn += this.painter.draw(meta);
      this.lastDrawnAt = now;
    } else if (this.painter.hasContent) {
      this.painter.clear();
    }
  }

  // wantsBoxes: draw client-side when the pixels don't already carry the boxes,
  // unless the user forced the overlay on or off.
  wantsBoxes(meta) {
    const mode = this.overlayMode();
    if (mode === 'on') return true;
    if (mode === 'off') return false;
    return meta.burned_in === false;
  }

  // redraw applies an overlay-mode change to the frame on screen at once.
  redraw() {
    const meta = this.currentMeta;
    if (meta && this.wantsBoxes(meta)) {
      stats.boxesDrawn += this.painter.draw(meta);
      this.lastDrawnAt = performance.now();
    } else {
      this.painter.clear();
    }
  }

  onSocketMessage(msg) {
    stats.wsMessages++;
    switch (msg.type) {
      case 'stats':
        this.server = msg;
        this.serverAt = performance.now();
        stats.server = msg;
        stats.ai = typeof msg.ai === 'string' ? msg.ai : null;
        if (typeof msg.burn_in === 'boolean') stats.burnIn = msg.burn_in;
        if (msg.width && msg.height && !this.video.videoWidth) this.setAspect(msg.width, msg.height);
        if (this.hooks.onStats) this.hooks.onStats(msg);
        break;
      case 'overlay':
        if (typeof msg.burn_in === 'boolean') stats.burnIn = msg.burn_in;
        if (this.hooks.onOverlay) this.hooks.onOverlay(msg);
        break;
      case 'exam':
        if (this.hooks.onExam) this.hooks.onExam(msg);
        break;
      case 'organ':
        // The guard's warning starts or ends now, not at the next stats.
        if (this.server) this.server.organ = msg.organ;
        break;
      case 'viewer':
        if (this.server && typeof msg.viewers === 'number') this.server.viewers = msg.viewers;
        if (this.hooks.onViewer) this.hooks.onViewer(msg);
        break;
      case 'access': {
        // The server ends this page's link (expiry or revocation) and
        // closes its connections: say so instead of reconnecting.
        const err = new Error(`token ${msg.reason === 'revoked' ? 'revoked' : 'expired'}`);
        err.status = 401;
        this.die(err);
        break;
      }
      default:
        break; // unknown types are for newer pages
    }
  }

  // state derives what the page shows from the peer connection, frames and server stats.
  state() {
    if (this.fatal) return 'error';
    const now = performance.now();
    const server = now - this.serverAt < STATS_STALE_MS ? this.server : null;
    if (server && server.state === 'stopped') return 'stopped';
    if (server && server.state === 'lost') return 'lost';
    if (this.whepState !== 'connected' || !this.lastFrameAt) return 'connecting';
    // Hidden tabs get no frame callbacks: that is not a lost source.
    if (!document.hidden && now - this.lastFrameAt > NO_FRAMES_LOST_MS) return 'lost';
    return 'live';
  }

  // refresh updates the status display (4×/s).
  refresh() {
    const state = this.state();
    const prev = stats.state;
    stats.state = state;
    stats.g2g = this.g2g.summary();

    const labels = {
      connecting: this.whepState === 'reconnecting' ? 'reconnecting…' : 'connecting…',
      live: 'live', lost: 'source lost', stopped: 'stopped', error: 'error',
    };
    setPill('state-pill', state, labels[state]);
    const overlayText = state === 'live' ? '' : labels[state];
    setText('state-overlay', overlayText);
    $('state-overlay').hidden = !overlayText;

    const ai = stats.ai;
    if (!ai) setPill('ai-pill', 'unknown', 'AI —');
    else if (ai === 'ok') setPill('ai-pill', 'ok', 'AI on');
    else if (ai === 'stale') setPill('ai-pill', 'stale', 'AI stale');
    else if (ai.startsWith('unavailable')) setPill('ai-pill', 'unavailable', 'AI unavailable');
    else setPill('ai-pill', 'unknown', `AI ${ai}`);
    const aiPill = $('ai-pill');
    if (aiPill) aiPill.title = ai || '';

    showOrganWarning(this.server && this.server.organ);

    // Recording: shown on every page, failed loudly (a full disk).
    const rec = this.server && this.server.recording;
    const recPill = $('rec-pill');
    if (recPill) {
      recPill.hidden = !rec || rec === 'off';
      if (rec === 'recording') setPill('rec-pill', 'ok', 'REC');
      else if (rec && rec.startsWith('failed')) setPill('rec-pill', 'unavailable', 'REC failed');
      recPill.title = rec || '';
    }

    const viewers = this.server && typeof this.server.viewers === 'number' ? this.server.viewers : null;
    setText('viewers-pill', viewers == null ? '— viewers' : `${viewers} viewer${viewers === 1 ? '' : 's'}`);

    // Frames stopped while the connection looks fine and the source is live:
    // the stream is wedged (e.g. a lost keyframe), start a fresh session.
    if (state === 'lost' && prev === 'lost' && this.server && this.server.state === 'live' &&
        performance.now() - this.lastFrameAt > 4 * NO_FRAMES_LOST_MS) {
      this.lastFrameAt = performance.now();
      this.whep.reconnect('no video frames');
    }
    if (this.hooks.onRefresh) this.hooks.onRefresh(state);
  }

  // report samples getStats and sends "g2g" and "quality" (1×/s).
  async report() {
    const samples = this.g2g.takePending();
    if (samples.length && !this.ws.send({ type: 'g2g', samples_ms: samples })) {
      // Not connected: put them back (bounded) for the next report.
      for (const s of samples) this.g2g.pending.push(s);
      this.g2g.pending.splice(0, Math.max(0, this.g2g.pending.length - G2G_REPORT_MAX));
    }
    const pc = this.whep.pc;
    if (!pc) return;
    // Rates come from the previous sample of the same connection only.
    const prev = this.prevPc === pc ? this.prevQuality : null;
    let q;
    try {
      q = await sampleQuality(pc, prev);
    } catch {
      return;
    }
    if (pc !== this.whep.pc) return;
    this.prevPc = pc;
    this.prevQuality = q;
    stats.quality = q;
    stats.framesDecoded = q.framesDecoded;
    if (q.hasInbound) {
      this.ws.send({
        type: 'quality',
        viewer: stats.viewerId || undefined,
        fps: round1(q.fps),
        rtt_ms: round1(q.rttMs),
        jitter_ms: round1(q.jitterMs),
        packets_lost: q.packetsLost,
      });
    }
  }
}

const round1 = (v) => (v == null || !Number.isFinite(v) ? undefined : Math.round(v * 10) / 10);

// pathOf names the way the media takes, from the selected pair's
// candidates: direct (host, STUN), or relayed by TURN over UDP, TCP or
// TLS (either side's relay).
export function pathOf(local, remote) {
  if (!local) return null;
  const relay = [local, remote].find((c) => c && c.candidateType === 'relay');
  if (!relay) return local.protocol === 'tcp' ? 'direct (TCP)' : 'direct';
  const proto = String(relay.relayProtocol || (relay === local ? '' : 'udp')).toLowerCase();
  return proto === 'tls' ? 'TURN TLS' : proto === 'tcp' ? 'TURN TCP' : 'TURN UDP';
}


// sampleQuality summarises pc.getStats(): the inbound video stream and the
// selected ICE candidate pair. prev (the last sample) gives the rates.
async function sampleQuality(pc, prev) {
  const report = await pc.getStats();
  let inbound = null;
  let transport = null;
  const pairs = [];
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.kind === 'video' || s.mediaType === 'video')) inbound = s;
    else if (s.type === 'transport') transport = s;
    else if (s.type === 'candidate-pair') pairs.push(s);
  });
  let pair = transport && transport.selectedCandidatePairId ? report.get(transport.selectedCandidatePairId) : null;
  if (!pair) pair = pairs.find((p) => p.nominated && p.state === 'succeeded') || null;

  const at = performance.now();
  const q = {
    at,
    path: pathOf(pair && report.get(pair.localCandidateId), pair && report.get(pair.remoteCandidateId)),
    hasInbound: !!inbound,
    connectionState: pc.connectionState,
    iceState: pc.iceConnectionState,
    framesDecoded: inbound ? inbound.framesDecoded || 0 : 0,
    framesDropped: inbound ? inbound.framesDropped || 0 : 0,
    packetsLost: inbound ? inbound.packetsLost || 0 : 0,
    packetsReceived: inbound ? inbound.packetsReceived || 0 : 0,
    bytesReceived: inbound ? inbound.bytesReceived || 0 : 0,
    jitterMs: inbound && typeof inbound.jitter === 'number' ? inbound.jitter * 1000 : null,
    rttMs: pair && typeof pair.currentRoundTripTime === 'number' ? pair.currentRoundTripTime * 1000 : null,
    frameWidth: inbound ? inbound.frameWidth : undefined,
    frameHeight: inbound ? inbound.frameHeight : undefined,
    codec: inbound && inbound.codecId && report.get(inbound.codecId) ? report.get(inbound.codecId).mimeType : undefined,
    fps: null,
    kbps: null,
  };
  const dt = prev ? (at - prev.at) / 1000 : 0;
  if (inbound && typeof inbound.framesPerSecond === 'number') q.fps = inbound.framesPerSecond;
  else if (dt > 0) q.fps = Math.max(0, (q.framesDecoded - prev.framesDecoded) / dt);
  if (dt > 0) q.kbps = Math.max(0, ((q.bytesReceived - prev.bytesReceived) * 8) / dt / 1000);
  return q;
}

// ---------------------------------------------------------------- common page setup

// wireTools: one tool at a time, pressed again to put it down.
function wireTools(session) {
  const bar = $('tools');
  if (!bar) return;
  const buttons = [...bar.querySelectorAll('[data-tool]')];
  for (const b of buttons) {
    b.addEventListener('click', () => {
      const on = b.getAttribute('aria-pressed') !== 'true';
      for (const o of buttons) o.setAttribute('aria-pressed', String(on && o === b));
      session.marks.setTool(on ? b.dataset.tool : null);
    });
  }
  const clear = $('clear-marks');
  if (clear) clear.addEventListener('click', () => session.marks.clearMine());
  const freeze = $('freeze-btn');
  if (freeze) {
    freeze.addEventListener('click', () => session.toggleFreeze());
    session.hooks.onFreeze = (f) => {
      freeze.textContent = f ? 'Unfreeze' : 'Freeze';
      freeze.setAttribute('aria-pressed', String(!!f));
      setText('freeze-state', f ? `frozen by ${f.by === 'sonographer' ? 'the sonographer' : 'the expert'} — live goes on underneath` : '');
      if (f) toast(`Frame frozen by ${f.by === 'sonographer' ? 'the sonographer' : 'the expert'}`);
    };
  }
  const capture = $('capture-btn');
  if (capture) {
    capture.addEventListener('click', () => session.capture());
    session.hooks.onCapture = (msg) => {
      if (msg.type !== 'captured') { toast(`Not captured: ${msg.reason}`, 6000); return; }
      const from = msg.from || {};
      const who = from.viewer === stats.viewerId ? 'you' : from.name || (from.role === 'sonographer' ? 'the sonographer' : 'the expert');
      const what = [msg.findings ? `${msg.findings} finding${msg.findings > 1 ? 's' : ''}` : '', msg.marks ? `${msg.marks} mark${msg.marks > 1 ? 's' : ''}` : ''].filter(Boolean).join(', ');
      toast(`Key frame ${msg.n} kept by ${who}${what ? ` (${what})` : ''}`);
      setText('capture-count', `${stats.captures.length} kept`);
    };
  }
}

function wireVideoControls(session) {
  const playBtn = $('play-btn');
  if (playBtn) playBtn.addEventListener('click', () => session.video.play().then(() => { playBtn.hidden = true; }).catch(() => {}));

  const fsBtn = $('fullscreen-btn');
  const wrap = $('video-wrap');
  const canFs = wrap.requestFullscreen || wrap.webkitRequestFullscreen;
  if (!fsBtn) return;
  if (!canFs) { fsBtn.hidden = true; return; }
  // Fullscreen the wrapper, not the <video>, so the boxes and the caption come along.
  fsBtn.addEventListener('click', () => {
    if (document.fullscreenElement || document.webkitFullscreenElement) {
      (document.exitFullscreen || document.webkitExitFullscreen).call(document);
    } else {
      canFs.call(wrap);
    }
  });
}

// preflight validates the link before anything connects, so a bad link gets
// a clear message instead of endless reconnecting. Returns the source entry.
async function preflight(ctx, session) {
  if (!ctx.token) {
    const err = new Error('missing token');
    err.status = 401;
    throw err;
  }
  // The server may serve this page with a 401/403 status: then the link is
  // bad even if the API probe below cannot say why (network trouble).
  const nav = performance.getEntriesByType('navigation')[0];
  const navStatus = nav && (nav.responseStatus === 401 || nav.responseStatus === 403) ? nav.responseStatus : 0;
  let entry;
  try {
    entry = await session.checkAccess(); // throws with the server's reason on 401/403/404
  } catch (err) {
    if (isFatalStatus(err.status)) throw err;
    entry = undefined; // server busy or restarting: the reconnect loops will cope
  }
  if (navStatus) {
    const err = new Error(navStatus === 401 ? 'invalid or expired token' : 'forbidden');
    err.status = navStatus;
    throw err;
  }
  return entry;
}

async function boot(page, setup) {
  const ctx = parseLocation();
  ctx.page = page;
  stats.page = page;
  stats.source = ctx.source;
  setText('source-name', ctx.source || '—');
  const session = new Session(ctx, {});
  window.sonolive.session = session;     // tests read its connection's getStats
  window.sonolive.voice = session.voice; // tests send a tone through it
  wireVideoControls(session);
  wireTools(session);
  let entry;
  try {
    entry = await preflight(ctx, session);
  } catch (err) {
    session.die(err);
    return;
  }
  if (session.fatal) return;
  const payload = tokenPayload(ctx.token);
  if (page === 'live' && payload && payload.role && payload.role !== 'sonographer') {
    const err = new Error(`this is a link for the role "${payload.role}", not the sonographer's page`);
    err.status = 403;
    session.die(err);
    return;
  }
  if (entry && entry.width && entry.height) session.setAspect(entry.width, entry.height);
  setup(session, ctx, entry, payload);
  session.start();
}

// ---------------------------------------------------------------- live page

function setupLive(session, ctx, entry) {
  const src = encodeURIComponent(ctx.source);
  // The recordings of this source, with the same token.
  $('library-link').href = `/library/${src}?token=${encodeURIComponent(ctx.token)}`;

  // "AI overlay in video": burn the boxes into the pixels (server side) or not.
  const toggle = $('burn-in');
  let pending = false;
  const showBurnIn = (on) => {
    if (pending || typeof on !== 'boolean') return;
    toggle.checked = on;
    toggle.disabled = false;
    setText('burn-in-state', on ? 'on' : 'off');
  };
  if (entry && typeof entry.burn_in === 'boolean') showBurnIn(entry.burn_in);
  toggle.addEventListener('change', async () => {
    const want = toggle.checked;
    pending = true;
    toggle.disabled = true;
    try {
      const res = await apiJSON(ctx.token, 'PUT', `/api/sources/${src}/overlay`, { burn_in: want });
      pending = false;
      showBurnIn(typeof res.burn_in === 'boolean' ? res.burn_in : want);
    } catch (err) {
      pending = false;
      toggle.checked = !want;
      toggle.disabled = false;
      stats.lastError = err.message;
      if (err.status === 401) session.die(err);
      else toast(`Could not switch the overlay: ${err.message}`);
    }
  });

  // "Client overlay": force boxes drawn in the browser, whatever burned_in says.
  const client = $('client-overlay');
  session.overlayMode = () => (client.checked ? 'on' : 'auto');
  client.addEventListener('change', () => session.redraw());

  const exam = setupExam(ctx, session, true);
  setupInvite(ctx, session);
  const links = setupLinks(ctx, session);
  const hud = buildStageTable($('stage-table'));

  session.hooks.onStats = (msg) => {
    showBurnIn(msg.burn_in);
    renderHud(msg, hud);
  };
  session.hooks.onOverlay = (msg) => showBurnIn(msg.burn_in);
  session.hooks.onChat = (msg) => {
    const from = msg.from || {};
    toast(`${from.name || (from.role === 'expert' ? 'Expert' : 'Viewer')}: ${msg.text}`, 8000);
  };
  session.hooks.onVerdict = (msg) => {
    const who = msg.from && msg.from.role === 'sonographer' ? 'Sonographer' : 'Expert';
    toast(`${who}: ${session.verdicts.describe(msg.track_id)}`, 6000);
  };
  session.hooks.onViewer = (msg) => {
    const who = msg.role === 'expert' ? 'Expert' : 'Viewer';
    if (msg.event === 'joined') toast(`${who} joined (${msg.viewers} watching)`);
    else if (msg.event === 'left') toast(`${who} left (${msg.viewers} watching)`);
    links.refresh();
  };
  session.hooks.onExam = (msg) => exam.onEvent(msg);
  session.hooks.onRefresh = () => {
    const g = stats.g2g;
    setText('hud-g2g', g.n ? `${fmtMs(g.p50)} / ${fmtMs(g.p95)}` : '—');
    setText('hud-g2g-n', g.n ? `n=${g.n}` : '');
    renderLinkPill(stats.quality);
  };
}

// setupExam runs the exam card: the sonographer's (canRun) or the
// expert's read-only findings.
function setupExam(ctx, session, canRun) {
  const ids = { card: 'exam-card', status: 'exam-status', form: 'exam-form', organ: 'exam-organ', side: 'exam-side',
    label: 'exam-label', accession: 'exam-accession', share: 'exam-share', start: 'exam-start', end: 'exam-end',
    report: 'exam-report', calibrate: 'exam-calibrate', list: 'exam-findings', error: 'exam-error' };
  const els = {};
  for (const [k, id] of Object.entries(ids)) els[k] = $(id);
  const panel = new ExamPanel({
    token: ctx.token, source: ctx.source, els, canRun, toast,
    pickPoints: (n) => pickPoints(session, n),
  });
  panel.load();
  return panel;
}

// pickPoints resolves to n points (source pixels) clicked on the picture.
function pickPoints(session, n) {
  const wrap = $('video-wrap');
  return new Promise((resolve) => {
    const pts = [];
    wrap.classList.add('picking');
    const onDown = (e) => {
      const p = session.marks.toSource(e);
      if (!p) return;
      e.preventDefault();
      e.stopPropagation();
      pts.push(p);
      if (pts.length < n) return;
      wrap.removeEventListener('pointerdown', onDown, true);
      wrap.classList.remove('picking');
      resolve(pts);
    };
    wrap.addEventListener('pointerdown', onDown, true);
  });
}

// setupLinks lists the source's live links (who was invited, what is
// connected with each) and revokes one: its connections close at once.
function setupLinks(ctx, session) {
  const src = encodeURIComponent(ctx.source);
  const list = $('links-list');
  const own = tokenPayload(ctx.token);
  const ownId = own && own.id;
  const render = (grants) => {
    list.replaceChildren();
    const shown = grants.filter((g) => g.id !== ownId && !g.revoked);
    setText('links-empty', shown.length ? '' : 'No other links are live.');
    for (const g of shown) {
      const li = document.createElement('li');
      li.className = 'link-row';
      const who = document.createElement('span');
      const conns = g.connections.length;
      const name = g.label ? `${g.label} (${g.role})` : g.role;
      who.textContent = `${name} · ${conns ? `${conns} connected` : 'not connected'} · until ${fmtClock(new Date(g.expires))}`;
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'btn danger';
      btn.textContent = 'Revoke';
      btn.addEventListener('click', async () => {
        btn.disabled = true;
        const res = await fetch(`/api/sources/${src}/invites/${encodeURIComponent(g.id)}`, {
          method: 'DELETE', headers: authHeader(ctx.token), cache: 'no-store',
        }).catch(() => null);
        if (res && res.ok) toast(`Link revoked: ${g.label || g.role}`);
        else toast(`Could not revoke: ${res ? res.status : 'network error'}`);
        refresh();
      });
      li.append(who, btn);
      list.append(li);
    }
  };
  const refresh = async () => {
    try {
      render(await apiJSON(ctx.token, 'GET', `/api/sources/${src}/invites`));
    } catch (err) {
      if (err.status === 401) session.die(err);
    }
  };
  refresh();
  setInterval(refresh, 5000);
  return { refresh };
}

function setupInvite(ctx, session) {
  const src = encodeURIComponent(ctx.source);
  const btn = $('invite-btn');
  const result = $('invite-result');
  const urlField = $('invite-url');
  const copyBtn = $('invite-copy');
  const shareBtn = $('invite-share');
  let expiresAt = null;

  btn.addEventListener('click', async () => {
    btn.disabled = true;
    setText('invite-error', '');
    try {
      const ttl = Number($('invite-ttl').value) || 3600;
      const role = $('invite-role') ? $('invite-role').value : 'expert';
      const label = $('invite-label') ? $('invite-label').value.trim().slice(0, 64) : '';
      const res = await apiJSON(ctx.token, 'POST', `/api/sources/${src}/invites`, { role, ttl_s: ttl, label });
      urlField.value = new URL(res.url, window.location.origin).href;
      expiresAt = parseExpiry(res.expires) || new Date(Date.now() + ttl * 1000);
      showExpiry();
      result.hidden = false;
      setText('invite-copied', '');
    } catch (err) {
      stats.lastError = err.message;
      if (err.status === 401) session.die(err);
      else setText('invite-error', `Could not create the invite: ${err.message}`);
    } finally {
      btn.disabled = false;
    }
  });

  const showExpiry = () => {
    if (!expiresAt) return;
    setText('invite-expiry', `Expires ${fmtClock(expiresAt)} (${fmtDuration(expiresAt - Date.now())})`);
  };
  setInterval(showExpiry, 30000);

  copyBtn.addEventListener('click', async () => {
    setText('invite-copied', (await copyText(urlField)) ? 'Copied' : 'Select the link and copy it');
  });
  if (navigator.share) {
    shareBtn.hidden = false;
    shareBtn.addEventListener('click', () => {
      navigator.share({ title: 'sonolive consultation', url: urlField.value }).catch(() => {});
    });
  }
  urlField.addEventListener('focus', () => urlField.select());
}

// copyText: the async clipboard API needs a secure context (https or
// localhost); on a plain-http LAN fall back to selecting + execCommand.
async function copyText(input) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(input.value);
      return true;
    }
  } catch { /* fall through */ }
  input.focus();
  input.select();
  try { return document.execCommand('copy'); } catch { return false; }
}

function buildStageTable(table) {
  const cells = {};
  const body = table.tBodies[0];
  for (const stage of STAGES) {
    const tr = body.insertRow();
    tr.dataset.stage = stage;
    tr.insertCell().textContent = stage;
    cells[stage] = { tr, p50: tr.insertCell(), p95: tr.insertCell() };
    cells[stage].p50.textContent = '—';
    cells[stage].p95.textContent = '—';
  }
  return cells;
}

function renderHud(msg, cells) {
  const lat = msg.latency_ms || {};
  for (const stage of STAGES) {
    const v = lat[stage] || {};
    setText(cells[stage].p50, fmtMs(v.p50));
    setText(cells[stage].p95, fmtMs(v.p95));
  }
  const budget = msg.budget_ms;
  const total = lat.total || {};
  cells.total.tr.classList.toggle('over', Number.isFinite(budget) && total.p95 > budget);
  setText('hud-fps', fmtNum(msg.fps, 1));
  setText('hud-budget', Number.isFinite(budget) ? `${fmtMs(budget)} ms` : '—');
  setText('hud-misses', fmtNum(msg.deadline_misses));
  setText('hud-skipped', fmtNum(msg.skipped));
  setText('hud-dropped', fmtNum(msg.dropped));
  setText('hud-ai', msg.ai || '—');
  setText('hud-viewers', fmtNum(msg.viewers));
  setText('hud-bitrate', Number.isFinite(msg.bitrate_kbps) ? `${fmtNum(msg.bitrate_kbps)} kbit/s` : '—');
  setText('hud-frames', fmtNum(msg.frames));
  setText('hud-size', msg.width && msg.height ? `${msg.width}×${msg.height}` : '—');
  setText('hud-model', typeof msg.model === 'string' && msg.model ? msg.model : '—');
  // A whip:// source's device: what it sends and what got lost on the way.
  const pub = msg.publisher;
  if ($('hud-publisher-row')) $('hud-publisher-row').hidden = !pub;
  if (pub) {
    const lossPct = pub.packets + pub.lost > 0 ? (100 * pub.lost) / (pub.packets + pub.lost) : 0;
    setText('hud-publisher', `${pub.codec} · ${fmtNum(pub.fps, 1)} fps · ${lossPct.toFixed(1)}% lost · ${fmtNum(pub.dropped)} dropped`);
  }
  const sg = msg.g2g_ms;
  setText('hud-g2g-all', sg && sg.n ? `${fmtMs(sg.p50)} / ${fmtMs(sg.p95)}` : '—');
  $('hud-misses').classList.toggle('warn', msg.deadline_misses > 0);
  $('hud-dropped').classList.toggle('warn', msg.dropped > 0);
  $('hud-ai').dataset.kind = !msg.ai ? 'unknown' : msg.ai === 'ok' ? 'ok' : msg.ai === 'stale' ? 'stale' : 'unavailable';
}

// ---------------------------------------------------------------- expert page

function setupExpert(session, ctx, entry, payload) {
  // Client overlay: automatic (on for frames without burned-in boxes) until
  // the user forces it on or off; "Auto" goes back to automatic.
  const box = $('client-overlay');
  const autoBtn = $('overlay-auto');
  let forced = null; // null | 'on' | 'off'
  session.overlayMode = () => forced || 'auto';
  const showMode = () => {
    const meta = session.currentMeta;
    box.checked = forced ? forced === 'on' : !!(meta && meta.burned_in === false);
    autoBtn.hidden = !forced;
    setText('overlay-mode', forced ? 'forced' : 'auto');
  };
  box.addEventListener('change', () => {
    forced = box.checked ? 'on' : 'off';
    session.redraw();
    showMode();
  });
  autoBtn.addEventListener('click', () => {
    forced = null;
    session.redraw();
    showMode();
  });

  if (payload && payload.exp) {
    const exp = new Date(payload.exp * 1000);
    setText('link-expiry', `${fmtClock(exp)} (${fmtDuration(exp - Date.now())})`);
  }

  const exam = setupExam(ctx, session, false);
  session.hooks.onExam = (msg) => exam.onEvent(msg);
  const findingsBody = $('findings').tBodies[0];
  let lastFindingsKey = '';
  const panel = new VerdictPanel($('verdicts').tBodies[0], session.verdicts);
  session.hooks.onRefresh = () => {
    showMode();
    panel.update(stats.lastDetections);
    const key = renderFindings(findingsBody, stats.lastDetections, lastFindingsKey);
    lastFindingsKey = key;
    const meta = session.currentMeta;
    setText('frame-info', meta ? `frame ${meta.seq}${meta.stale ? ' · AI late, tracked boxes' : ''}${meta.burned_in ? ' · boxes in video' : ''}` : '');
    renderQuality(stats.quality);
    const s = stats.server;
    const total = s && s.latency_ms && s.latency_ms.total;
    setText('q-pipeline', total ? `${fmtMs(total.p50)} / ${fmtMs(total.p95)}` : '—');
  };
}

// renderFindings rebuilds the findings table when its content changed.
function renderFindings(body, dets, prevKey) {
  const rows = [...(dets || [])].sort((a, b) => a.track_id - b.track_id);
  const key = rows.map((d) => `${d.track_id}:${d.class}:${Number(d.score).toFixed(2)}:${fmtPct(d.malignancy)}:${detectionSize(d).text}:${d.stale_age}`).join('|');
  if (key === prevKey) return key;
  body.replaceChildren();
  if (!rows.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = 6;
    td.className = 'empty';
    td.textContent = 'No findings on this frame';
    return key;
  }
  for (const d of rows) {
    const tr = body.insertRow();
    tr.className = d.stale_age > 0 ? 'stale' : 'fresh';
    tr.insertCell().textContent = `#${d.track_id}`;
    tr.insertCell().textContent = d.class ?? String(d.class_id);
    tr.insertCell().textContent = Number(d.score).toFixed(2);
    const size = tr.insertCell();
    const sz = detectionSize(d);
    size.className = 'size';
    size.textContent = sz.text;
    size.title = sz.title;
    tr.insertCell().textContent = fmtPct(d.malignancy);
    tr.insertCell().textContent = d.stale_age > 0 ? `${d.stale_age} fr` : 'now';
  }
  return key;
}

function renderQuality(q) {
  setText('q-state', q ? q.connectionState : stats.pcState);
  setText('q-fps', q ? fmtNum(q.fps, 1) : '—');
  setText('q-lost', q ? fmtNum(q.packetsLost) : '—');
  setText('q-jitter', q && q.jitterMs != null ? `${fmtMs(q.jitterMs)} ms` : '—');
  setText('q-rtt', q && q.rttMs != null ? `${fmtMs(q.rttMs)} ms` : '—');
  setText('q-path', q && q.path ? q.path : '—');
  setText('q-kbps', q && q.kbps != null ? `${fmtNum(q.kbps)} kbit/s` : '—');
  setText('q-frames', q ? `${q.framesDecoded} decoded, ${q.framesDropped} dropped` : '—');
  const g = stats.g2g;
  setText('q-g2g', g.n ? `${fmtMs(g.p50)} / ${fmtMs(g.p95)} ms` : '—');
  setText('q-g2g-n', g.n ? `n=${g.n}` : '');
  const matched = stats.framesRendered ? stats.matchedFrames / stats.framesRendered : null;
  setText('q-sync', matched == null ? '—' : `${Math.round(matched * 100)}% frames matched (${stats.syncMode})`);
  renderLinkPill(q);
}

// renderLinkPill says when the server has moved this page to its small
// layer: the link cannot carry the full stream (docs/streaming.md, "Poor
// links").
function renderLinkPill(q) {
  const path = $('path-pill');
  if (path && q && q.path) {
    path.hidden = false;
    path.textContent = q.path;
    path.dataset.kind = q.path.startsWith('TURN') ? 'stale' : 'ok';
  }
  stats.path = q ? q.path : null;
  const pill = $('link-pill');
  if (pill) {
    const srv = stats.server;
    const small = !!(q && q.frameHeight && srv && srv.height && q.frameHeight < srv.height && /H264/i.test(q.codec || ''));
    pill.hidden = !small;
    if (small) pill.textContent = `Poor link: ${q.frameWidth}×${q.frameHeight}`;
  }
}

// ---------------------------------------------------------------- entry

const page = document.body.dataset.page;
if (page === 'live') boot('live', setupLive);
else if (page === 'expert') boot('expert', setupExpert);
