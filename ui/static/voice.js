// voice.js: the session's voices (docs/streaming.md, "Voice"). Each page
// offers VOICE_SLOTS audio sections: the first also sends this page's
// microphone, every one can carry another person's voice, which the
// server forwards and names in its presence messages ("slots"). Audio is
// never required: without a microphone the page still watches and hears.
// No module state.

export const VOICE_SLOTS = 4;

// The browser's own echo cancellation: both ends usually talk over
// loudspeakers (a laptop, a tablet on the cart).
const MIC_CONSTRAINTS = { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
const MODE_KEY = 'sonolive.voice.mode';

// Voice holds the microphone and the audio slots of the page's connection.
// els: mic (the big button), ptt (push-to-talk switch), hear (shown when the
// browser wants a tap before it plays sound), status (a line of text),
// recorded (shown while the voices are recorded).
export class Voice {
  constructor({ els, send, storage = window.localStorage }) {
    Object.assign(this, { els, send, storage });
    this.track = null;          // the microphone, once granted
    this.transceivers = [];     // this connection's audio sections, offer order
    this.players = [];          // <audio> per slot
    this.mode = this.savedMode(); // 'open' | 'ptt'
    this.muted = false;
    this.pressed = false;       // push to talk held
    this.slots = [];            // viewer id per slot (server's presence)
    this.stats = { mic: 'none', micError: null, slots: 0, playing: 0, hearBlocked: false, sent: 0, recorded: false };
    this.wire();
    this.render();
  }

  savedMode() {
    try { return this.storage.getItem(MODE_KEY) === 'ptt' ? 'ptt' : 'open'; } catch { return 'open'; }
  }

  // state is what the page tells the others of its microphone.
  state() {
    if (!this.track) return 'none';
    if (this.muted) return 'muted';
    if (this.mode === 'ptt') return this.pressed ? 'talking' : 'ptt';
    return 'open';
  }

  // start asks for the microphone; a refusal or none leaves the page
  // listening only.
  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.stats.micError = 'this browser gives no microphone here (https needed)';
      this.render();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
      this.useTrack(stream.getAudioTracks()[0]);
    } catch (err) {
      this.stats.micError = err && err.name === 'NotAllowedError' ? 'microphone not allowed' : 'no microphone';
      this.render();
    }
  }

  // useTrack sends track as this page's voice (the microphone, or another
  // source such as a test tone) on the connection, now and after reconnects.
  useTrack(track) {
    if (!track) return;
    if (this.track && this.track !== track) this.track.stop();
    this.track = track;
    track.addEventListener('ended', () => {
      if (this.track !== track) return;
      this.track = null;
      this.stats.micError = 'microphone unplugged';
      this.apply();
    });
    const first = this.transceivers[0];
    if (first) first.sender.replaceTrack(track).catch(() => {});
    this.apply();
  }

  // stop releases the microphone (the page is done).
  stop() {
    if (this.track) this.track.stop();
    this.track = null;
    for (const el of this.players) if (el) el.srcObject = null;
  }

  // prepare adds the audio sections to a new connection, before its offer.
  prepare(pc) {
    this.transceivers = [];
    for (let i = 0; i < VOICE_SLOTS; i++) {
      const t = pc.addTransceiver(i === 0 && this.track ? this.track : 'audio', { direction: i === 0 ? 'sendrecv' : 'recvonly' });
      this.transceivers.push(t);
    }
    this.stats.slots = VOICE_SLOTS;
  }

  // onTrack plays a received voice; true when the track was audio.
  onTrack(ev) {
    if (ev.track.kind !== 'audio') return false;
    const i = this.transceivers.indexOf(ev.transceiver);
    if (i < 0) return true;
    let el = this.players[i];
    if (!el) {
      el = document.createElement('audio');
      el.autoplay = true;
      el.dataset.slot = String(i);
      el.hidden = true;
      document.body.append(el);
      this.players[i] = el;
    }
    el.srcObject = new MediaStream([ev.track]);
    this.play(el);
    return true;
  }

  play(el) {
    const p = el.play();
    if (!p) return;
    p.then(() => { this.stats.playing = this.players.filter((a) => a && !a.paused).length; })
      .catch(() => { this.stats.hearBlocked = true; this.render(); });
  }

  // receive takes the slots and whether voices are recorded from the
  // server's presence; it never consumes a message (the people list wants
  // it too).
  receive(msg, selfId) {
    if (msg.type === 'presence') {
      if (Array.isArray(msg.slots)) this.slots = msg.slots.map(String);
      this.stats.recorded = !!msg.voices_recorded;
      if (this.els.recorded) this.els.recorded.hidden = !msg.voices_recorded;
      const me = Array.isArray(msg.people) ? msg.people.find((p) => p.viewer === selfId) : null;
      // A reconnect starts the server from nothing: say the state again.
      if (me && (me.mic || 'none') !== this.state()) this.announce();
    }
    return false;
  }

  // slotOf is the slot on which viewer id is heard, or -1.
  slotOf(id) { return this.slots.indexOf(id); }

  announce() {
    if (this.send({ type: 'voice', mic: this.state() })) this.stats.sent++;
  }

  // apply sets the microphone track on or off for the state, and tells the others.
  apply() {
    const s = this.state();
    if (this.track) this.track.enabled = s === 'open' || s === 'talking';
    this.stats.mic = s;
    this.announce();
    this.render();
  }

  setMode(mode) {
    this.mode = mode === 'ptt' ? 'ptt' : 'open';
    try { this.storage.setItem(MODE_KEY, this.mode); } catch { /* private mode */ }
    this.pressed = false;
    this.muted = false;
    this.apply();
  }

  talk(on) {
    if (this.mode !== 'ptt' || this.pressed === on) return;
    this.pressed = on;
    this.apply();
  }

  wire() {
    const { mic, ptt, hear } = this.els;
    if (ptt) {
      ptt.checked = this.mode === 'ptt';
      ptt.addEventListener('change', () => this.setMode(ptt.checked ? 'ptt' : 'open'));
    }
    if (mic) {
      mic.addEventListener('click', () => {
        if (!this.track) { this.start(); return; }
        if (this.mode === 'open') { this.muted = !this.muted; this.apply(); }
      });
      // Push to talk: held with a finger, the mouse or the space bar.
      mic.addEventListener('pointerdown', (e) => { if (this.mode === 'ptt') { mic.setPointerCapture(e.pointerId); this.talk(true); } });
      for (const ev of ['pointerup', 'pointercancel', 'lostpointercapture']) mic.addEventListener(ev, () => this.talk(false));
      const typing = (e) => e.target && (e.target.tagName === 'INPUT' || e.target.tagName === 'TEXTAREA' || e.target.tagName === 'SELECT');
      window.addEventListener('keydown', (e) => { if (e.code === 'Space' && this.mode === 'ptt' && !typing(e)) { e.preventDefault(); this.talk(true); } });
      window.addEventListener('keyup', (e) => { if (e.code === 'Space') this.talk(false); });
      window.addEventListener('blur', () => this.talk(false));
    }
    if (hear) {
      hear.addEventListener('click', () => {
        this.stats.hearBlocked = false;
        for (const el of this.players) if (el) this.play(el);
        this.render();
      });
    }
  }

  render() {
    const { mic, hear, status } = this.els;
    const s = this.state();
    if (mic) {
      const text = {
        none: this.stats.micError ? 'No mic' : 'Mic…', open: 'Mic on', muted: 'Muted', ptt: 'Hold to talk', talking: 'Talking…',
      }[s];
      mic.textContent = text;
      mic.dataset.mic = s;
      mic.setAttribute('aria-pressed', String(s === 'open' || s === 'talking'));
      mic.title = s === 'none' ? (this.stats.micError || 'asking for the microphone') : this.mode === 'ptt' ? 'Hold (or hold Space) to talk' : 'Tap to mute';
    }
    if (hear) hear.hidden = !this.stats.hearBlocked;
    if (status) status.textContent = s === 'none' && this.stats.micError ? `${this.stats.micError}: you can still watch and listen` : '';
  }
}
