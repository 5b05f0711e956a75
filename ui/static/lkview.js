// lkview.js: watching a source through LiveKit (docs/streaming.md,
// "Through a hub, and through LiveKit"). The box publishes its video and,
// per frame, the metadata message as a data packet on topic "metadata",
// keyed by the frame's RTP timestamp. LiveKit may shift a late joiner's
// timestamps by a constant, so the sync learns the shift: among the
// differences between a shown frame's timestamp and a keyframe message's,
// the one under which the recent frames find their metadata. No module
// state: each page makes its own LiveKitView.

const META_MAX = 300;       // ~10 s of messages at 30 fps
const RECENT_FRAMES = 45;   // frames the shift is judged on
const MIN_AGREE = 0.5;      // share of recent frames a shift must match

// ShiftSync matches shown frames with their metadata through a learnt
// timestamp shift.
export class ShiftSync {
  constructor() {
    this.meta = new Map();   // rtp_ts → message, arrival order
    this.keys = [];          // recent keyframe messages' rtp_ts
    this.recent = [];        // recent shown frames' rtp timestamps
    this.shift = 0;
    this.shown = 0;
    this.matched = 0;
    this.pending = [];       // shown frames whose metadata had not come
    this.onLate = null;      // (msg): metadata for a frame already shown
  }

  add(msg) {
    const ts = Number(msg.rtp_ts) >>> 0;
    this.meta.set(ts, msg);
    if (this.meta.size > META_MAX) this.meta.delete(this.meta.keys().next().value);
    if (msg.keyframe) {
      this.keys.push(ts);
      if (this.keys.length > 6) this.keys.shift();
    }
    // A frame shown just before its metadata came: draw it now, late.
    const i = this.pending.indexOf((ts + this.shift) >>> 0);
    if (i >= 0) {
      this.pending.splice(i, 1);
      this.matched++;
      if (this.onLate) this.onLate(msg);
    }
  }

  // frame returns the metadata of the frame shown with timestamp ts, or
  // null.
  frame(ts) {
    ts >>>= 0;
    this.shown++;
    this.recent.push(ts);
    if (this.recent.length > RECENT_FRAMES) this.recent.shift();
    let m = this.meta.get((ts - this.shift) >>> 0);
    if (!m) {
      this.relearn();
      m = this.meta.get((ts - this.shift) >>> 0);
    }
    if (m) this.matched++;
    else {
      this.pending.push(ts);
      if (this.pending.length > 8) this.pending.shift();
    }
    return m || null;
  }

  score(shift) {
    let n = 0;
    for (const ts of this.recent) if (this.meta.has((ts - shift) >>> 0)) n++;
    return n;
  }

  relearn() {
    let best = this.shift;
    let bestN = this.score(best);
    for (const f of this.recent) {
      for (const k of this.keys) {
        const s = (f - k) >>> 0;
        const n = this.score(s);
        if (n > bestN) { best = s; bestN = n; }
      }
    }
    if (bestN >= this.recent.length * MIN_AGREE) this.shift = best;
  }
}

// LiveKitView joins the room with a token from the box and plays it into
// video, calling onMeta(msg) for each shown frame that has metadata and
// onState(state, detail) as the connection changes.
export class LiveKitView {
  constructor({ ctx, video, onMeta, onState }) {
    this.ctx = ctx;
    this.video = video;
    this.onMeta = onMeta;
    this.onState = onState;
    this.sync = new ShiftSync();
    this.room = null;
  }

  async join() {
    const base = `/api/sources/${encodeURIComponent(this.ctx.source)}/livekit`;
    const res = await fetch(base, { headers: { Authorization: `Bearer ${this.ctx.token}` }, cache: 'no-store' });
    if (!res.ok) {
      const err = new Error((await res.text()).trim().split('\n')[0] || `HTTP ${res.status}`);
      err.status = res.status;
      throw err;
    }
    const j = await res.json();
    let lk;
    try {
      lk = await import('/static/vendor/livekit-client.esm.mjs');
    } catch {
      throw new Error('this box was built without the LiveKit client (make setup)');
    }
    const room = new lk.Room({ adaptiveStream: false, dynacast: false });
    this.room = room;
    room.on(lk.RoomEvent.TrackSubscribed, (track) => {
      if (track.kind !== 'video') return;
      track.attach(this.video);
      this.onState('live');
      this.watchFrames();
    });
    room.on(lk.RoomEvent.DataReceived, (payload, _p, _kind, topic) => {
      if (topic !== j.topic) return;
      try { this.sync.add(JSON.parse(new TextDecoder().decode(payload))); } catch { /* not ours */ }
    });
    room.on(lk.RoomEvent.Reconnecting, () => this.onState('reconnecting'));
    room.on(lk.RoomEvent.Reconnected, () => this.onState('live'));
    room.on(lk.RoomEvent.Disconnected, () => this.onState('disconnected'));
    room.on(lk.RoomEvent.TrackUnsubscribed, () => this.onState('waiting', 'the box is not publishing'));
    await room.connect(j.url, j.token, { autoSubscribe: true });
    if (!room.remoteParticipants.size) this.onState('waiting', 'the box is not publishing yet');
  }

  watchFrames() {
    if (this.watching || !('requestVideoFrameCallback' in HTMLVideoElement.prototype)) return;
    this.watching = true;
    const tick = (_now, md) => {
      this.video.requestVideoFrameCallback(tick);
      if (md.rtpTimestamp === undefined) return;
      this.onMeta(this.sync.frame(md.rtpTimestamp), md);
    };
    this.video.requestVideoFrameCallback(tick);
  }

  stats() {
    return { shown: this.sync.shown, matched: this.sync.matched, shift: this.sync.shift };
  }

  leave() {
    if (this.room) this.room.disconnect();
  }
}
