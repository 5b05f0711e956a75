// marks.js: the pointer and the marks the people in a session show each
// other on the image (docs/streaming.md, "DataChannel consult"). Points
// travel in source pixels with the RTP timestamp of the frame they were
// drawn on; each page maps them onto its own canvas, so a mark lands on the
// same anatomy whatever the window size, the letterboxing or the codec's
// scale. No module state: one MarkLayer per page.

const POINTER_FADE_MS = 2000;   // a pointer not moved for this long fades out
const MARK_TTL_MS = 20000;      // marks fade out after this (or are cleared)
const MARK_FADE_MS = 2000;
const MAX_FREEHAND = 512;       // the server's bound on a stroke
const SHAPES = ['arrow', 'circle', 'caliper', 'freehand'];

const COLORS = { expert: '#4db8ff', sonographer: '#ff5cd6' };
const colorOf = (role) => COLORS[role] || '#ffd84d';

// MarkLayer owns the marks canvas laid over the video: it turns the user's
// pointer input into consult messages (when a tool is on) and draws what
// everyone sent.
export class MarkLayer {
  // opts: rectOf(ew, eh, vw, vh) → displayed picture rect (contentRect);
  // frameSize() → {w, h} in source pixels; frameTs() → RTP timestamp of the
  // frame on screen; send(obj) → bool; role: this page's role; now() → the
  // clock marks age by, in ms (default performance.now; a replay passes
  // media time, so a paused replay holds its marks).
  constructor(canvas, video, opts) {
    Object.assign(this, { canvas, video, opts });
    this.now = opts.now || (() => performance.now());
    this.g = canvas.getContext('2d');
    this.tool = null;
    this.pointers = new Map();   // sender id → {x, y, role, at}
    this.marks = new Map();      // `${sender}/${id}` → {shape, points, role, at}
    this.draft = null;           // the shape being drawn here
    this.nextId = 1;
    this.lastPointerSent = 0;
    this.stats = { received: 0, drawnLatencyMs: [], sent: 0 };
    this.pendingLatency = [];    // arrived, not yet drawn: [{at}]
    for (const ev of ['pointerdown', 'pointermove', 'pointerup', 'pointercancel']) {
      canvas.addEventListener(ev, (e) => this.onInput(e));
    }
    const loop = () => { requestAnimationFrame(loop); this.draw(this.now()); };
    requestAnimationFrame(loop);
  }

  // setTool turns input on ('pointer' or a shape) or off (null): with no
  // tool the canvas lets clicks through to the video controls.
  setTool(tool) {
    this.tool = tool;
    this.canvas.classList.toggle('drawing', !!tool);
  }

  // hold keeps the marks drawn on frame ts (a freeze) from fading while
  // it lasts; release(ts) removes them with the freeze: they belong to
  // that frame, not to the live picture that resumes.
  hold(ts) { this.holdTs = ts; }

  release(ts) {
    this.holdTs = undefined;
    for (const [k, m] of this.marks) if (m.ts === ts) this.marks.delete(k);
  }

  clearMine() {
    for (const k of [...this.marks.keys()]) if (k.startsWith('self/')) this.marks.delete(k);
    this.opts.send({ type: 'clear' });
  }

  // receive takes a forwarded consult message; at (on the layer's clock)
  // is when it happened, for a replay.
  receive(msg, at) {
    if (!msg || !msg.from || typeof msg.from.viewer !== 'string') return;
    const who = msg.from.viewer;
    const role = msg.from.role;
    if (at === undefined) {
      at = this.now();
      this.stats.received++;
      // Input to drawing when the sender stamped its input (same clock on
      // one machine), else server forward to drawing.
      const t0 = typeof msg.sent_at === 'number' ? msg.sent_at : msg.at;
      if (typeof t0 === 'number') this.pendingLatency.push(t0);
    }
    if (msg.type === 'pointer') {
      this.pointers.set(who, { x: msg.x, y: msg.y, role, at });
    } else if (msg.type === 'mark' && SHAPES.includes(msg.shape) && Array.isArray(msg.points)) {
      this.marks.set(`${who}/${msg.id}`, { shape: msg.shape, points: msg.points, role, at, ts: msg.rtp_ts });
    } else if (msg.type === 'clear') {
      for (const k of [...this.marks.keys()]) {
        if (k.startsWith(`${who}/`) && (!msg.id || k === `${who}/${msg.id}`)) this.marks.delete(k);
      }
      this.pointers.delete(who);
    }
  }

  // showTimeline shows a recording's consult events ([{t, msg}] sorted by
  // t, seconds of media time) as they stood at media time mt.
  showTimeline(events, mt) {
    this.marks.clear();
    this.pointers.clear();
    const from = mt - MARK_TTL_MS / 1000;
    for (const e of events) {
      if (e.t > mt) break;
      if (e.t >= from) this.receive(e.msg, e.t * 1000);
    }
  }

  // toSource maps a pointer event to source pixels, or null outside the picture.
  toSource(e) {
    const size = this.opts.frameSize();
    if (!size || !size.w || !size.h) return null;
    const b = this.canvas.getBoundingClientRect();
    const r = this.opts.rectOf(b.width, b.height, this.video.videoWidth || size.w, this.video.videoHeight || size.h);
    const x = ((e.clientX - b.left - r.x) / r.w) * size.w;
    const y = ((e.clientY - b.top - r.y) / r.h) * size.h;
    if (!(x >= 0 && y >= 0 && x <= size.w && y <= size.h)) return null;
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  onInput(e) {
    if (!this.tool) return;
    e.preventDefault();
    const p = this.toSource(e);
    if (e.type === 'pointerdown') this.canvas.setPointerCapture(e.pointerId);
    if (this.tool === 'pointer') {
      // Touch and pen point while pressed; a mouse points while it moves over the picture.
      const pressed = e.buttons > 0 || e.type === 'pointerdown';
      if (!p || (e.pointerType !== 'mouse' && !pressed) || e.type === 'pointerup') return;
      const now = this.now();
      if (now - this.lastPointerSent < 16 && e.type === 'pointermove') return; // ~60 a second
      this.lastPointerSent = now;
      this.pointers.set('self', { x: p[0], y: p[1], role: this.opts.role, at: now });
      this.send({ type: 'pointer', x: p[0], y: p[1], rtp_ts: this.opts.frameTs(), sent_at: Math.round(performance.timeOrigin + e.timeStamp) });
      return;
    }
    if (e.type === 'pointerdown' && p) {
      this.draft = { shape: this.tool, points: [p, p], role: this.opts.role, at: this.now() };
    } else if (e.type === 'pointermove' && this.draft && p) {
      if (this.draft.shape === 'freehand') {
        if (this.draft.points.length < MAX_FREEHAND) this.draft.points.push(p);
      } else {
        this.draft.points[1] = p;
      }
    } else if ((e.type === 'pointerup' || e.type === 'pointercancel') && this.draft) {
      const d = this.draft;
      this.draft = null;
      if (e.type === 'pointercancel') return;
      if (d.shape === 'freehand' && d.points.length > 2) d.points.shift(); // the doubled first point
      const id = `m${this.nextId++}`;
      d.at = this.now();
      d.ts = this.opts.frameTs();
      this.marks.set(`self/${id}`, d);
      this.send({ type: 'mark', id, shape: d.shape, points: d.points, rtp_ts: this.opts.frameTs(), sent_at: Math.round(performance.timeOrigin + e.timeStamp) });
    }
  }

  send(msg) {
    if (this.opts.send(msg)) this.stats.sent++;
  }

  fit() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    return dpr;
  }

  draw(now) {
    const dpr = this.fit();
    const g = this.g;
    g.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const size = this.opts.frameSize();
    if (!size || !size.w || !size.h) return;
    const r = this.opts.rectOf(this.canvas.width, this.canvas.height,
      this.video.videoWidth || size.w, this.video.videoHeight || size.h);
    const sx = r.w / size.w;
    const sy = r.h / size.h;
    const at = (p) => [r.x + p[0] * sx, r.y + p[1] * sy];
    g.save();
    g.lineCap = 'round';
    g.lineJoin = 'round';
    for (const [k, m] of this.marks) {
      if (this.holdTs !== undefined && m.ts === this.holdTs) m.at = now;
      const age = now - m.at;
      if (age > MARK_TTL_MS) { this.marks.delete(k); continue; }
      g.globalAlpha = Math.min(1, (MARK_TTL_MS - age) / MARK_FADE_MS);
      this.shape(m, at, dpr);
    }
    if (this.draft) { g.globalAlpha = 0.8; this.shape(this.draft, at, dpr); }
    for (const [k, p] of this.pointers) {
      const age = now - p.at;
      if (age > POINTER_FADE_MS) { this.pointers.delete(k); continue; }
      g.globalAlpha = Math.min(1, (POINTER_FADE_MS - age) / 500);
      const [x, y] = at([p.x, p.y]);
      g.fillStyle = colorOf(p.role);
      g.strokeStyle = '#0b0f14';
      g.lineWidth = 2 * dpr;
      g.beginPath();
      g.arc(x, y, 9 * dpr, 0, 2 * Math.PI);
      g.fill();
      g.stroke();
    }
    g.restore();
    // Everything that arrived before this frame is on screen now.
    if (this.pendingLatency.length) {
      const wall = performance.timeOrigin + performance.now();
      for (const sentAt of this.pendingLatency) this.stats.drawnLatencyMs.push(wall - sentAt);
      this.pendingLatency = [];
      if (this.stats.drawnLatencyMs.length > 1000) this.stats.drawnLatencyMs.splice(0, 500);
    }
  }

  shape(m, at, dpr) {
    const g = this.g;
    g.strokeStyle = colorOf(m.role);
    g.fillStyle = g.strokeStyle;
    g.lineWidth = 3 * dpr;
    const pts = m.points.map(at);
    const [a, b] = pts;
    g.beginPath();
    if (m.shape === 'circle') {
      g.arc(a[0], a[1], Math.hypot(b[0] - a[0], b[1] - a[1]), 0, 2 * Math.PI);
      g.stroke();
    } else if (m.shape === 'freehand') {
      g.moveTo(...pts[0]);
      for (const p of pts.slice(1)) g.lineTo(...p);
      g.stroke();
    } else {
      g.moveTo(...a);
      g.lineTo(...b);
      g.stroke();
      const ang = Math.atan2(b[1] - a[1], b[0] - a[0]);
      if (m.shape === 'arrow') {
        const L = 16 * dpr;
        g.beginPath();
        g.moveTo(...b);
        g.lineTo(b[0] - L * Math.cos(ang - 0.45), b[1] - L * Math.sin(ang - 0.45));
        g.lineTo(b[0] - L * Math.cos(ang + 0.45), b[1] - L * Math.sin(ang + 0.45));
        g.closePath();
        g.fill();
      } else {
        // caliper: end ticks and the length in source pixels (no
        // calibration to millimetres is known from a video signal).
        const T = 8 * dpr;
        for (const p of [a, b]) {
          g.beginPath();
          g.moveTo(p[0] - T * Math.sin(ang), p[1] + T * Math.cos(ang));
          g.lineTo(p[0] + T * Math.sin(ang), p[1] - T * Math.cos(ang));
          g.stroke();
        }
        const [p0, p1] = m.points;
        const px = Math.hypot(p1[0] - p0[0], p1[1] - p0[1]);
        g.font = `600 ${Math.round(13 * dpr)}px system-ui, sans-serif`;
        g.fillText(`${Math.round(px)} px`, (a[0] + b[0]) / 2 + 6 * dpr, (a[1] + b[1]) / 2 - 6 * dpr);
      }
    }
  }
}
