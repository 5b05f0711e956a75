// chat.js: who is in the session and a text chat for when audio fails,
// on the consult channel (docs/streaming.md). Text is only ever set as
// textContent. No module state.

const MAX_LINES = 100;

const who = (p) => {
  if (!p) return 'someone';
  const role = p.role === 'sonographer' ? 'Sonographer' : p.role === 'expert' ? 'Expert' : p.role || 'Viewer';
  return p.name ? `${p.name} (${role.toLowerCase()})` : role;
};

// ChatPanel fills the "In this session" card: people (from the server's
// presence messages) and the chat log.
export class ChatPanel {
  constructor({ people, log, form, input, send, selfId }) {
    Object.assign(this, { people, log, form, input, send, selfId });
    this.stats = { people: 0, received: 0, sent: 0 };
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
        li.textContent = who(p) + (p.viewer === this.selfId() ? ' — you' : '');
        return li;
      }));
      this.stats.people = msg.people.length;
      return true;
    }
    if (msg.type === 'chat' && typeof msg.text === 'string') {
      this.append(msg.from, msg.text, false);
      this.stats.received++;
      return true;
    }
    return false;
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
