// verdicts.js: the expert's read of each AI finding — agree, disagree or
// unsure, optionally a BI-RADS (breast) or ACR TI-RADS (thyroid) category
// and a note — sent on the consult channel (docs/streaming.md), shown next
// to the box on every page and in the replay, kept in the recording's
// timeline for export as labels. No module state.

export const CATEGORIES = {
  'BI-RADS (breast)': ['BI-RADS 2', 'BI-RADS 3', 'BI-RADS 4a', 'BI-RADS 4b', 'BI-RADS 4c', 'BI-RADS 5'],
  'ACR TI-RADS (thyroid)': ['TI-RADS TR1', 'TI-RADS TR2', 'TI-RADS TR3', 'TI-RADS TR4', 'TI-RADS TR5'],
};

const MARK = { agree: '✓', disagree: '✗', unsure: '?' };

// Verdicts holds the latest verdict per track.
export class Verdicts {
  // send(msg) → bool puts a verdict on the consult channel.
  constructor(send) {
    this.send = send;
    this.byTrack = new Map(); // track id → {verdict, category, note, role}
    this.onChange = () => {};
  }

  // receive takes a forwarded verdict message; false for other types.
  receive(msg) {
    if (!msg || msg.type !== 'verdict' || !Number.isInteger(msg.track_id) || !MARK[msg.verdict]) return false;
    const role = msg.from && msg.from.role;
    this.byTrack.set(msg.track_id, { verdict: msg.verdict, category: msg.category || '', note: msg.note || '', role });
    this.onChange(msg.track_id);
    return true;
  }

  // give records this page's verdict and sends it.
  give(trackId, verdict, category, note) {
    const msg = { type: 'verdict', track_id: trackId, verdict };
    if (category) msg.category = category;
    if (note) msg.note = note;
    const ok = this.send(msg);
    if (ok) {
      this.byTrack.set(trackId, { verdict, category: category || '', note: note || '', role: 'self' });
      this.onChange(trackId);
    }
    return ok;
  }

  // suffix is what the box label gets: " · ✓ BI-RADS 3 (expert)".
  suffix(trackId) {
    const v = this.byTrack.get(trackId);
    if (!v) return '';
    const who = v.role === 'self' ? 'you' : v.role || 'expert';
    return ` · ${MARK[v.verdict]} ${v.category ? `${v.category} ` : ''}(${who})`;
  }

  // describe says it in words, for a toast or a list.
  describe(trackId) {
    const v = this.byTrack.get(trackId);
    if (!v) return '';
    return `${v.verdict} on #${trackId}${v.category ? ` (${v.category})` : ''}${v.note ? `: “${v.note}”` : ''}`;
  }
}

// VerdictPanel is the expert's list of findings to read: one row per
// track seen, kept in place (a table rebuilt 4 times a second would move
// the buttons under the finger), newest first, at most 12.
export class VerdictPanel {
  constructor(body, verdicts) {
    this.body = body;
    this.verdicts = verdicts;
    this.rows = new Map(); // track id → {tr, seenAt}
    verdicts.onChange = (id) => this.mark(id);
  }

  update(dets, now = performance.now()) {
    for (const d of dets || []) {
      if (!Number.isInteger(d.track_id)) continue;
      let r = this.rows.get(d.track_id);
      if (!r) r = this.add(d);
      r.seenAt = now;
    }
    for (const [id, r] of this.rows) r.tr.classList.toggle('gone', now - r.seenAt > 3000);
    const empty = this.body.querySelector('.empty');
    if (empty && this.rows.size) empty.closest('tr').remove();
  }

  add(d) {
    const tr = document.createElement('tr');
    tr.dataset.track = String(d.track_id);
    const name = document.createElement('td');
    name.textContent = `#${d.track_id} ${d.class ?? ''}`;
    const cell = document.createElement('td');
    const buttons = document.createElement('div');
    buttons.className = 'verdict-buttons';
    const cat = document.createElement('select');
    cat.className = 'verdict-category';
    cat.append(new Option('category…', ''));
    for (const [group, list] of Object.entries(CATEGORIES)) {
      const og = document.createElement('optgroup');
      og.label = group;
      for (const c of list) og.append(new Option(c, c));
      cat.append(og);
    }
    for (const v of ['agree', 'disagree', 'unsure']) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'btn verdict';
      b.dataset.verdict = v;
      b.textContent = `${MARK[v]} ${v}`;
      b.setAttribute('aria-pressed', 'false');
      b.addEventListener('click', () => this.verdicts.give(d.track_id, v, cat.value));
      buttons.append(b);
    }
    cat.addEventListener('change', () => {
      const cur = this.verdicts.byTrack.get(d.track_id);
      if (cur) this.verdicts.give(d.track_id, cur.verdict, cat.value, cur.note);
    });
    cell.append(buttons, cat);
    tr.append(name, cell);
    this.body.prepend(tr);
    const r = { tr, seenAt: 0 };
    this.rows.set(d.track_id, r);
    while (this.rows.size > 12) {
      const oldest = this.rows.keys().next().value;
      this.rows.get(oldest).tr.remove();
      this.rows.delete(oldest);
    }
    this.mark(d.track_id);
    return r;
  }

  // mark shows a track's current verdict on its row.
  mark(id) {
    const r = this.rows.get(id);
    const v = this.verdicts.byTrack.get(id);
    if (!r) return;
    for (const b of r.tr.querySelectorAll('button.verdict')) b.setAttribute('aria-pressed', String(!!v && b.dataset.verdict === v.verdict));
    if (v && v.category) r.tr.querySelector('select').value = v.category;
  }
}
