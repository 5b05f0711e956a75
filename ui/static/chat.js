// chat.js: who is in the session and a text chat for when audio fails,
// on the consult channel (docs/streaming.md). Text is only ever set as
// textContent. No module state.

const MAX_LINES = 100;

const who = (p) => {
  if (!p) return 'someone';
  const role = p.role === 'sonographer' ? 'Sonographer' : p.role === 'expert' ? 'Expert' : p.role || 'Viewer';
  return p.name ? `${p.name} (${role.toLowerCase()})` : role;
};

// What a person's microphone state reads as, next to their name.
const MIC_TEXT = { open: 'mic on', ptt: 'push to talk', talking: 'talking', muted: 'muted', none: 'no mic' };

// ChatPanel fills the "In this session" card: people (from the server's
// presence messages) with their microphones and who speaks now, and the
// chat log.
export class ChatPanel {
  constructor({ people, log, form, input, send, selfId }) {
    Object.assign(this, { people, log, form, input, send, selfId });
    this.stats = { people: 0, received: 0, sent: 0, speaking: [] };
    this.speaking = new Set();
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      if (this.send({ type: 'chat', text })) {
        this.append({ name: 'You', role: '' }, text, true);
        this.stats.sent++;
        input.value = '';
      }
    });
  }

  // receive takes presence and chat messages; false for other types.
  receive(msg) {
    if (msg.type === 'presence' && Array.isArray(msg.people)) {
      this.people.replaceChildren(...msg.people.map((p) => {
        const li = document.createElement('li');
        li.dataset.role = p.role || '';
        li.dataset.viewer = String(p.viewer || '');
        li.dataset.mic = MIC_TEXT[p.mic] ? p.mic : 'none';
        const name = document.createElement('span');
        name.textContent = who(p) + (p.viewer === this.selfId() ? ' — you' : '');
        const mic = document.createElement('small');
        mic.className = 'mic-state';
        mic.textContent = MIC_TEXT[p.mic] || MIC_TEXT.none;
        li.append(name, mic);
        return li;
      }));
      this.stats.people = msg.people.length;
      this.markSpeaking();
      return true;
    }
    if (msg.type === 'speaking' && Array.isArray(msg.speaking)) {
      this.speaking = new Set(msg.speaking.map(String));
      this.stats.speaking = [...this.speaking];
      this.markSpeaking();
      return true;
    }
    if (msg.type === 'chat' && typeof msg.text === 'string') {
      this.append(msg.from, msg.text, false);
      this.stats.received++;
      return true;
    }
    return false;
  }

  // markSpeaking lights the people whose voice carries speech now.
  markSpeaking() {
    for (const li of this.people.children) {
      li.classList.toggle('speaking', this.speaking.has(li.dataset.viewer));
    }
  }

  append(from, text, mine) {
    const line = document.createElement('p');
    line.className = mine ? 'mine' : '';
    const b = document.createElement('b');
    b.textContent = mine ? 'You' : who(from);
    line.append(b, document.createTextNode(` ${text}`));
    this.log.append(line);
    while (this.log.childElementCount > MAX_LINES) this.log.firstElementChild.remove();
    this.log.scrollTop = this.log.scrollHeight;
  }
}
