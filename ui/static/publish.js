// publish.js: the publishing page. A tablet or laptop beside the probe
// shares the probe app's window (or the capture device the cart's video
// goes into) with sonolive over WHIP. Dragging over the preview keeps
// only the ultrasound image: the crop is done here, on a canvas, so the
// patient details beside the image never leave the device. The page
// reconnects by itself when the network drops.

import { iceSource } from './ice.js';

const $ = (id) => document.getElementById(id);

function setText(id, text) {
  const el = typeof id === 'string' ? $(id) : id;
  if (el && el.textContent !== text) el.textContent = text;
}

function setPill(id, kind, text) {
  const el = $(id);
  if (!el) return;
  el.dataset.kind = kind;
  setText(el, text);
}

// reason is the server's one-line plain-text reason for a refusal.
async function reason(res) {
  try { return (await res.text()).trim().split('\n')[0].slice(0, 200); } catch { return `HTTP ${res.status}`; }
}

// contentRect is where a video of vw×vh shows inside an element of ew×eh
// (object-fit: contain).
function contentRect(ew, eh, vw, vh) {
  if (!vw || !vh) return { x: 0, y: 0, w: ew, h: eh };
  const s = Math.min(ew / vw, eh / vh);
  return { x: (ew - vw * s) / 2, y: (eh - vh * s) / 2, w: vw * s, h: vh * s };
}

// preferCodecs puts H.264 (packetization mode 1, constrained baseline
// first) then VP8 at the head of the sender's list: what sonolive decodes.
function preferCodecs(transceiver) {
  const caps = RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities('video');
  if (!caps || !transceiver.setCodecPreferences) return;
  const rank = (c) => {
    const mt = c.mimeType.toLowerCase();
    const fmtp = c.sdpFmtpLine || '';
    if (mt === 'video/h264' && /packetization-mode=1/.test(fmtp)) return /profile-level-id=42e0/.test(fmtp) ? 0 : 1;
    if (mt === 'video/vp8') return 2;
    if (mt === 'video/rtx' || mt === 'video/red' || mt === 'video/ulpfec') return 3;
    return 9;
  };
  const codecs = caps.codecs.filter((c) => rank(c) < 9).sort((a, b) => rank(a) - rank(b));
  if (codecs.length) transceiver.setCodecPreferences(codecs);
}

// Cropper turns the captured track into the one sent: the track itself,
// or the chosen rectangle of it drawn on a canvas.
class Cropper {
  constructor(video) {
    this.video = video;
    this.rect = null; // in video pixels
    this.canvas = document.createElement('canvas');
    this.g = this.canvas.getContext('2d', { alpha: false });
    this.out = null;
    this.decorate = null; // (g, w, h) after each frame: tests mark frames here
    this.running = false;
  }

  // track is what to send for source track t.
  track(t) {
    if (!this.rect) return t;
    const r = this.rect;
    // Even sizes, at most 1920 wide: what every H.264 encoder takes.
    const k = Math.min(1, 1920 / r.w);
    this.canvas.width = Math.max(16, Math.round(r.w * k / 2) * 2);
    this.canvas.height = Math.max(16, Math.round(r.h * k / 2) * 2);
    if (!this.out) this.out = this.canvas.captureStream(30).getVideoTracks()[0];
    if (!this.running) {
      this.running = true;
      const draw = () => {
        if (!this.running) return;
        if (this.rect && this.video.readyState >= 2) {
          const q = this.rect;
          this.g.drawImage(this.video, q.x, q.y, q.w, q.h, 0, 0, this.canvas.width, this.canvas.height);
          if (this.decorate) this.decorate(this.g, this.canvas.width, this.canvas.height);
        }
        if (this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(draw);
        else requestAnimationFrame(draw);
      };
      draw();
    }
    return this.out;
  }

  stop() {
    this.running = false;
    if (this.out) this.out.stop();
    this.out = null;
  }
}

// Sender publishes one track over WHIP and keeps it published.
class Sender {
  constructor(ctx) {
    this.ctx = ctx;
    this.ice = iceSource(ctx);
    this.pc = null;
    this.resource = null;
    this.wanted = false;
    this.backoff = 1000;
    this.retryTimer = null;
    this.statsTimer = null;
    this.last = null;
  }

  async start(track) {
    this.wanted = true;
    this.track = track;
    await this.connect();
  }

  // replace sends another track (a new crop or a new picture) without a
  // new connection when one is up.
  async replace(track) {
    this.track = track;
    const s = this.pc && this.pc.getSenders()[0];
    if (s) await s.replaceTrack(track);
  }

  async connect() {
    clearTimeout(this.retryTimer);
    this.close();
    if (!this.wanted) return;
    const { ctx } = this;
    setPill('state-pill', 'connecting', 'connecting…');
    let iceServers = [];
    try { iceServers = await this.ice(); } catch { /* direct paths still work */ }
    if (!this.wanted || this.pc) return;
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers });
    this.pc = pc;
    preferCodecs(pc.addTransceiver(this.track, { direction: 'sendonly' }));
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const st = pc.connectionState;
      if (st === 'connected') {
        this.backoff = 1000;
        setPill('state-pill', 'live', 'sending');
        setText('status', '');
      } else if (st === 'failed' || st === 'closed' || st === 'disconnected') {
        setPill('state-pill', 'connecting', 'reconnecting…');
        this.retry();
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      // The whole offer at once (WHIP without trickle): gathering on a
      // LAN takes milliseconds; stop waiting after two seconds.
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        const t = setTimeout(resolve, 2000);
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
        });
      });
      const res = await fetch(`/whip/${encodeURIComponent(ctx.source)}`, {
        method: 'POST', body: pc.localDescription.sdp,
        headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${ctx.token}` },
      });
      if (pc !== this.pc) return;
      if (!res.ok) {
        const why = await reason(res);
        if (res.status === 401 || res.status === 403) return this.fatal(why);
        setText('status', res.status === 409 ? `Another device is sending to this source (${why}); trying again…` : `Refused: ${why}; trying again…`);
        return this.retry();
      }
      this.resource = res.headers.get('Location');
      await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
      this.watch();
    } catch (err) {
      if (pc !== this.pc) return;
      setText('status', `Cannot connect: ${err.message}; trying again…`);
      this.retry();
    }
  }

  retry() {
    if (!this.wanted) return;
    clearTimeout(this.retryTimer);
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 8000);
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  fatal(why) {
    this.wanted = false;
    this.close();
    setPill('state-pill', 'error', 'refused');
    setText('fatal-title', 'This link cannot send to this source');
    setText('fatal-reason', `Server said: ${why}. Ask for a new publishing link.`);
    $('fatal').hidden = false;
  }

  // watch shows what is being sent, once a second.
  watch() {
    clearInterval(this.statsTimer);
    const pc = this.pc;
    this.statsTimer = setInterval(async () => {
      if (pc !== this.pc) return;
      const report = await pc.getStats();
      let out = null;
      let lost = 0;
      report.forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') out = s;
        if (s.type === 'remote-inbound-rtp' && s.kind === 'video') lost = s.packetsLost || 0;
      });
      if (!out) return;
      const prev = this.last;
      const kbps = prev ? (8 * (out.bytesSent - prev.bytesSent)) / (out.timestamp - prev.timestamp) : 0;
      this.last = out;
      const st = this.ctx.stats;
      Object.assign(st, {
        fps: out.framesPerSecond || 0, width: out.frameWidth || 0, height: out.frameHeight || 0,
        kbps: Math.round(kbps), framesSent: out.framesSent || 0, packetsLost: lost,
        codec: (report.get(out.codecId) || {}).mimeType || '',
      });
      setText('rate-pill', `${st.width}×${st.height} · ${Math.round(st.fps)} fps · ${st.kbps} kbit/s${lost ? ` · ${lost} lost` : ''}`);
    }, 1000);
  }

  close() {
    clearInterval(this.statsTimer);
    this.last = null;
    if (this.resource) {
      const url = this.resource;
      fetch(url, { method: 'DELETE', headers: { Authorization: `Bearer ${this.ctx.token}` } }).catch(() => {});
      this.resource = null;
    }
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.close();
    }
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.close();
    setPill('state-pill', 'connecting', 'stopped');
  }
}

// setupCrop lets the publisher drag a rectangle over the preview; it
// calls changed() with the rectangle in video pixels, or null.
function setupCrop(ctx, changed) {
  const video = $('preview');
  const canvas = $('crop');
  canvas.classList.add('cropper');
  const g = canvas.getContext('2d');
  let drag = null;
  const toVideo = (ev) => {
    const b = canvas.getBoundingClientRect();
    const r = contentRect(b.width, b.height, video.videoWidth, video.videoHeight);
    const x = ((ev.clientX - b.left - r.x) / r.w) * video.videoWidth;
    const y = ((ev.clientY - b.top - r.y) / r.h) * video.videoHeight;
    return { x: Math.max(0, Math.min(video.videoWidth, x)), y: Math.max(0, Math.min(video.videoHeight, y)) };
  };
  const draw = () => {
    const b = canvas.getBoundingClientRect();
    canvas.width = Math.round(b.width);
    canvas.height = Math.round(b.height);
    g.clearRect(0, 0, canvas.width, canvas.height);
    const q = ctx.cropper.rect;
    if (!q || !video.videoWidth) return;
    const r = contentRect(b.width, b.height, video.videoWidth, video.videoHeight);
    const s = r.w / video.videoWidth;
    g.fillStyle = 'rgba(0,0,0,0.55)';
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.clearRect(r.x + q.x * s, r.y + q.y * s, q.w * s, q.h * s);
    g.strokeStyle = '#39d98a';
    g.lineWidth = 2;
    g.strokeRect(r.x + q.x * s, r.y + q.y * s, q.w * s, q.h * s);
  };
  canvas.addEventListener('pointerdown', (ev) => {
    if (!video.videoWidth) return;
    canvas.setPointerCapture(ev.pointerId);
    drag = toVideo(ev);
  });
  canvas.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const p = toVideo(ev);
    ctx.cropper.rect = { x: Math.min(drag.x, p.x), y: Math.min(drag.y, p.y), w: Math.abs(p.x - drag.x), h: Math.abs(p.y - drag.y) };
    draw();
  });
  canvas.addEventListener('pointerup', () => {
    if (!drag) return;
    drag = null;
    const q = ctx.cropper.rect;
    // A click, not a drag: keep the whole picture.
    if (q && (q.w < 16 || q.h < 16)) ctx.cropper.rect = null;
    if (ctx.cropper.rect) {
      const r = ctx.cropper.rect;
      ctx.cropper.rect = { x: Math.round(r.x), y: Math.round(r.y), w: Math.round(r.w), h: Math.round(r.h) };
    }
    draw();
    changed(ctx.cropper.rect);
  });
  $('crop-clear').addEventListener('click', () => {
    ctx.cropper.rect = null;
    draw();
    changed(null);
  });
  window.addEventListener('resize', draw);
  return draw;
}

async function listDevices() {
  const sel = $('device');
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === 'videoinput');
  const keep = sel.value;
  sel.replaceChildren(new Option('—', ''));
  // Before permission is given the browser names no device: one entry
  // opens the default one, and the list fills in after.
  devices.forEach((d, i) => sel.add(new Option(d.label || `Camera or capture device ${i + 1}`, d.deviceId || 'default')));
  if (keep) sel.value = keep;
}

function boot() {
  const parts = window.location.pathname.split('/').filter(Boolean);
  const ctx = {
    source: parts[1] ? decodeURIComponent(parts[1]) : '',
    token: new URLSearchParams(window.location.search).get('token') || '',
    stats: { fps: 0, width: 0, height: 0, kbps: 0, framesSent: 0, packetsLost: 0, codec: '' },
    track: null,
  };
  setText('source-name', ctx.source);
  document.title = `sonolive — publish ${ctx.source}`;
  const video = $('preview');
  ctx.cropper = new Cropper(video);
  ctx.sender = new Sender(ctx);
  window.sonolive = { publish: ctx };

  const sending = () => ctx.cropper.track(ctx.track);
  const redrawCrop = setupCrop(ctx, async () => {
    $('crop-clear').hidden = !ctx.cropper.rect;
    if (ctx.sender.wanted) await ctx.sender.replace(sending());
  });
  const use = async (track) => {
    if (ctx.track && ctx.track !== track) ctx.track.stop();
    ctx.track = track;
    video.srcObject = new MediaStream([track]);
    video.onloadedmetadata = () => redrawCrop();
    track.onended = () => {
      if (ctx.track !== track) return;
      setText('status', 'The picture stopped (sharing ended or the device was unplugged): choose it again.');
      ctx.sender.stop();
      $('publish-btn').textContent = 'Start sending';
    };
    $('publish-btn').disabled = false;
    setPill('state-pill', 'connecting', ctx.sender.wanted ? 'sending' : 'ready');
    if (ctx.sender.wanted) await ctx.sender.replace(sending());
  };
  $('share-btn').addEventListener('click', async () => {
    try {
      const s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 30 } }, audio: false });
      await use(s.getVideoTracks()[0]);
    } catch (err) {
      setText('status', `No window shared: ${err.message}`);
    }
  });
  $('device').addEventListener('change', async (ev) => {
    if (!ev.target.value) return;
    try {
      const want = { width: { ideal: 1920 }, height: { ideal: 1080 }, frameRate: { ideal: 30 } };
      if (ev.target.value !== 'default') want.deviceId = { exact: ev.target.value };
      const s = await navigator.mediaDevices.getUserMedia({ video: want, audio: false });
      const track = s.getVideoTracks()[0];
      await use(track);
      // Names and ids appear once permission is given: list them again
      // and show the device in use.
      await listDevices();
      const id = track.getSettings().deviceId;
      if (id) $('device').value = id;
    } catch (err) {
      setText('status', `Cannot open the device: ${err.message}`);
    }
  });
  $('publish-btn').addEventListener('click', async () => {
    const btn = $('publish-btn');
    if (ctx.sender.wanted) {
      ctx.sender.stop();
      btn.textContent = 'Start sending';
      return;
    }
    btn.textContent = 'Stop sending';
    await ctx.sender.start(sending());
  });
  window.addEventListener('pagehide', () => ctx.sender.stop());
  if (navigator.mediaDevices) {
    listDevices().catch(() => {});
    navigator.mediaDevices.addEventListener('devicechange', () => listDevices().catch(() => {}));
  } else {
    setText('status', 'This browser cannot capture video here (it needs https:// or localhost).');
  }
}

boot();
