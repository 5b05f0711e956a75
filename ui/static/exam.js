// exam.js: the exam card — Start exam (organ, breast side, the patient's
// label kept on this box), the findings of the exam in progress (key image,
// size, AI score, the expert's verdict, location), End exam and the report.
// The sonographer's page runs it; the expert's page shows the findings
// read-only. API: /api/sources/{source}/exams, /api/exams/{id}/…; the
// WebSocket's "exam" events say when to reload. No module state.

import { call, el } from './api.js';

const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

// sizeText is a finding's size for the panel: the long × short axis of the
// calipers on its outline, else its width × depth.
export function sizeText(f) {
  if (!Array.isArray(f.size_mm)) return 'size: calibrate';
  const cal = f.spacing_from === 'calibration' ? ' (cal.)' : '';
  const c = f.calipers;
  if (c && typeof c.long_mm === 'number' && typeof c.short_mm === 'number') {
    return `${c.long_mm.toFixed(1)} × ${c.short_mm.toFixed(1)} mm${c.taller_than_wide ? ', taller than wide' : ''}${cal}`;
  }
  const [w, h] = f.size_mm;
  return `${w.toFixed(1)} × ${h.toFixed(1)} mm${cal}`;
}

// verdictText is the expert's read of a finding, '' for none.
export function verdictText(v) {
  if (!v) return '';
  return [v.verdict, v.category].filter(Boolean).join(' · ') + (v.by ? ` (${v.by})` : '');
}

// ExamPanel drives one exam card. els: {card, status, form, organ, side,
// label, accession, share, start, end, report, calibrate, list, error};
// canRun: the sonographer's controls; pickPoints(n) resolves to n points in
// source pixels clicked on the picture (calibration); toast(text) informs.
export class ExamPanel {
  constructor({ token, source, els, canRun, pickPoints, toast }) {
    this.token = token;
    this.source = source;
    this.els = els;
    this.canRun = canRun;
    this.pickPoints = pickPoints;
    this.toast = toast || (() => {});
    this.exam = null;      // the open exam, with its findings
    this.organs = [];
    this.loading = null;
    this.again = false;
    if (canRun) this.wire();
    else for (const k of ['form', 'end', 'calibrate']) if (els[k]) els[k].hidden = true;
  }

  wire() {
    const { els } = this;
    els.organ.addEventListener('change', () => { els.side.closest('label').hidden = els.organ.value !== 'breast'; });
    els.form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { organ: els.organ.value };
      if (body.organ === 'breast' && els.side.value) body.side = els.side.value;
      if (els.label.value.trim()) body.label = els.label.value.trim();
      if (els.accession.value.trim()) body.accession = els.accession.value.trim();
      if (els.share.checked) body.share = true;
      els.start.disabled = true;
      try {
        await call(this.token, 'POST', `/api/sources/${encodeURIComponent(this.source)}/exams`, body);
        els.label.value = '';
        els.accession.value = '';
        els.share.checked = false;
        this.error('');
        await this.load();
      } catch (err) {
        this.error(`Could not start the exam: ${err.message}`);
      } finally {
        els.start.disabled = false;
      }
    });
    els.end.addEventListener('click', async () => {
      if (!this.exam) return;
      const n = this.exam.findings.length;
      if (!window.confirm(`End the ${this.exam.organ} exam with ${n} finding${n === 1 ? '' : 's'}? The report is written and the recording stops.`)) return;
      els.end.disabled = true;
      try {
        const ended = await call(this.token, 'POST', `/api/exams/${this.exam.id}/end`);
        this.toast(`Exam ended: ${ended.findings.length} finding${ended.findings.length === 1 ? '' : 's'}. The report opens in a new tab.`);
        window.open(this.reportURL(ended.id), '_blank', 'noopener');
        this.lastEnded = ended;
        await this.load();
      } catch (err) {
        this.error(`Could not end the exam: ${err.message}`);
      } finally {
        els.end.disabled = false;
      }
    });
    els.calibrate.addEventListener('click', () => this.calibrate());
  }

  reportURL(id) { return `/api/exams/${id}/report.html?token=${encodeURIComponent(this.token)}`; }

  pictureURL(f, annotated) {
    return `/api/exams/${this.exam.id}/findings/${f.n}/${annotated ? 'annotated' : 'key'}.jpg?token=${encodeURIComponent(this.token)}&v=${encodeURIComponent(f.updated || '')}`;
  }

  error(text) { if (this.els.error) this.els.error.textContent = text; }

  // load reads the source's exams and the open one's findings. Calls that
  // come while one runs are folded into one more.
  async load() {
    if (this.loading) { this.again = true; return this.loading; }
    this.loading = (async () => {
      do {
        this.again = false;
        try {
          const list = await call(this.token, 'GET', `/api/sources/${encodeURIComponent(this.source)}/exams`);
          this.organs = list.organs || this.organs;
          const open = (list.exams || []).find((e) => !e.ended);
          this.exam = open ? await call(this.token, 'GET', `/api/exams/${open.id}`) : null;
          this.error('');
        } catch (err) {
          if (err.status === 404 && /exams are off/.test(err.message)) {
            this.els.card.hidden = true;
            return;
          }
          this.error(`Exams: ${err.message}`);
        }
        this.render();
      } while (this.again);
    })();
    try { await this.loading; } finally { this.loading = null; }
  }

  // onEvent takes a WebSocket "exam" event.
  onEvent(msg) {
    if (msg.change === 'finding_saved' && this.canRun && msg.finding && msg.finding.auto && !this.known(msg.finding.n)) {
      this.toast(`Lesion ${msg.finding.n} captured${Array.isArray(msg.finding.size_mm) ? ` (${sizeText(msg.finding)})` : ''}`);
    }
    this.load();
  }

  known(n) { return !!(this.exam && this.exam.findings.some((f) => f.n === n)); }

  render() {
    const { els } = this;
    els.card.hidden = false;
    const e = this.exam;
    if (this.canRun) {
      if (els.organ.options.length !== this.organs.length) {
        els.organ.replaceChildren(...this.organs.map((o) => el('option', { value: o, textContent: cap(o) })));
        els.side.closest('label').hidden = els.organ.value !== 'breast';
      }
      els.form.hidden = !!e;
      els.end.hidden = !e;
      els.calibrate.hidden = !e;
    }
    els.report.hidden = !e && !this.lastEnded;
    if (e) els.report.href = this.reportURL(e.id);
    else if (this.lastEnded) els.report.href = this.reportURL(this.lastEnded.id);
    els.report.textContent = e ? 'Report so far' : 'Last report';
    if (!e) {
      els.status.textContent = this.canRun ? 'No exam open: nothing is recorded.' : 'No exam open.';
      els.list.replaceChildren();
      return;
    }
    const who = [e.label, e.accession].filter(Boolean).join(' · ');
    const mins = Math.max(0, Math.round((Date.now() - Date.parse(e.started)) / 60000));
    els.status.textContent = `${cap(e.organ)}${e.side ? ` (${e.side})` : ''} exam · ${mins} min · ${e.findings.length} finding${e.findings.length === 1 ? '' : 's'}${who ? ` · ${who}` : ''}`;
    if (e.calibration_mm) els.calibrate.textContent = `Calibrated ${e.calibration_mm.toFixed(3)} mm/px`;
    els.list.replaceChildren(...e.findings.map((f) => this.row(e, f)));
    if (!e.findings.length) els.list.append(el('li', { class: 'empty muted', textContent: 'Lesions the AI follows for a second are kept here; Capture keeps the frame on screen.' }));
  }

  row(e, f) {
    const li = el('li', { class: 'finding', dataset: { n: String(f.n) } });
    const img = el('img', { alt: `Finding ${f.n}`, src: this.pictureURL(f, true), loading: 'lazy', decoding: 'async' });
    zoomOn(img, f);
    const link = el('a', { href: this.pictureURL(f, true), target: '_blank', rel: 'noopener' }, img);
    const risk = e.model_calibrated && typeof f.malignancy === 'number' ? `AI risk ${Math.round(f.malignancy * 100)}%` : 'AI risk: not available';
    const facts = el('div', { class: 'finding-facts' },
      el('strong', { textContent: `#${f.n} ${sizeText(f)}` }),
      el('span', { textContent: f.auto ? `AI score ${Number(f.score).toFixed(2)}` : `captured by ${f.by || 'hand'}${f.score ? ` · AI ${Number(f.score).toFixed(2)}` : ''}` }),
      el('span', { class: 'muted', textContent: risk }),
      el('span', { class: f.verdict ? 'verdict' : 'muted', textContent: f.verdict ? `Expert: ${verdictText(f.verdict)}` : 'Expert: —' }));
    li.append(link, facts);
    if (this.canRun) li.append(this.locationControls(e, f));
    else if (f.location && Object.keys(f.location).length) facts.append(el('span', { textContent: locationText(f.location) }));
    return li;
  }

  locationControls(e, f) {
    const loc = f.location || {};
    const box = el('div', { class: 'finding-controls' });
    const save = async (patch) => {
      try {
        await call(this.token, 'PUT', `/api/exams/${e.id}/findings/${f.n}/location`, { ...loc, ...patch });
      } catch (err) { this.error(`Location not saved: ${err.message}`); }
    };
    const select = (label, values, value, key, parse = (v) => v) => {
      const s = el('select', { 'aria-label': label },
        el('option', { value: '', textContent: label }),
        ...values.map(([v, t]) => el('option', { value: String(v), textContent: t, selected: String(v) === String(value ?? '') })));
      s.addEventListener('change', () => save({ [key]: s.value === '' ? undefined : parse(s.value) }));
      return s;
    };
    if (e.organ === 'breast') {
      box.append(select('Clock', Array.from({ length: 12 }, (_, i) => [i + 1, `${i + 1} o'clock`]), loc.clock, 'clock', Number));
      box.append(select('From nipple', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((c) => [c, `${c} cm`]), loc.nipple_cm, 'nipple_cm', Number));
    } else if (e.organ === 'thyroid') {
      box.append(select('Lobe', [['left', 'Left lobe'], ['right', 'Right lobe'], ['isthmus', 'Isthmus']], loc.lobe, 'lobe'));
      box.append(select('Third', [['upper', 'Upper third'], ['middle', 'Middle third'], ['lower', 'Lower third']], loc.third, 'third'));
    }
    const del = el('button', { type: 'button', class: 'btn danger', textContent: 'Delete' });
    del.addEventListener('click', async () => {
      if (!window.confirm(`Delete finding ${f.n}? Its key image is removed from the exam.`)) return;
      try {
        await call(this.token, 'DELETE', `/api/exams/${e.id}/findings/${f.n}`);
        await this.load();
      } catch (err) { this.error(`Not deleted: ${err.message}`); }
    });
    box.append(del);
    return box;
  }

  // calibrate: two clicks on the machine's depth scale and their distance
  // in mm give the pixel size, for sources that do not say it.
  async calibrate() {
    if (!this.exam || !this.pickPoints) return;
    this.toast('Click two marks of the depth scale', 6000);
    let pts;
    try { pts = await this.pickPoints(2); } catch { return; }
    const mm = Number(window.prompt('Distance between the two marks, in mm', '10'));
    if (!(mm > 0)) return;
    try {
      const r = await call(this.token, 'PUT', `/api/exams/${this.exam.id}/calibration`, { a: pts[0], b: pts[1], distance_mm: mm });
      this.toast(`Calibrated: ${r.calibration_mm.toFixed(3)} mm per pixel`);
      await this.load();
    } catch (err) { this.error(`Calibration: ${err.message}`); }
  }
}

// locationText is a location as one line.
export function locationText(l) {
  return [l.clock ? `${l.clock} o'clock` : '', l.nipple_cm ? `${l.nipple_cm} cm from nipple` : '',
    l.lobe ? (l.lobe === 'isthmus' ? 'isthmus' : `${l.lobe} lobe`) : '', l.third ? `${l.third} third` : '', l.note || '']
    .filter(Boolean).join(', ');
}

// zoomOn shows a small lesion at its own scale in the thumbnail, centred
// (the whole frame would make it a dot); a large one fits whole.
export function zoomOn(img, f, w = 112, h = 84) {
  const b = f.measured_box || f.box;
  if (!Array.isArray(b) || b[2] > w * 0.8 || b[3] > h * 0.8) return;
  const cx = b[0] + b[2] / 2;
  const cy = b[1] + b[3] / 2;
  img.style.objectFit = 'none';
  img.style.objectPosition = `${Math.round(w / 2 - cx)}px ${Math.round(h / 2 - cy)}px`;
}
