// cases.js: exams as teaching cases. On the library page each ended exam
// is one case — its key images, findings, tags, report and recordings
// (GET /api/sources/{source}/exams, /api/exams/{id}); a teacher tags it
// and downloads it de-identified. On the replay page the exam's key images
// are listed at their time in the recording, with previous/next. No module
// state.

import { call, el } from './api.js';

const q = (token) => `token=${encodeURIComponent(token)}`;
const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : '');

// findingTime is a finding's time in a recording that started at start
// (seconds), or null when it is outside it.
export function findingTime(f, start, duration) {
  const t = (Date.parse(f.at) - Date.parse(start)) / 1000;
  if (!Number.isFinite(t) || t < 0 || (Number.isFinite(duration) && duration > 0 && t > duration + 1)) return null;
  return Math.round(t * 1000) / 1000;
}

// loadCases lists the source's ended exams as cases in grid (an <ul>);
// it resolves to the set of recording ids that belong to a case.
export async function loadCases({ token, source, role, grid, recordings, toast }) {
  const list = await call(token, 'GET', `/api/sources/${encodeURIComponent(source)}/exams`);
  const exams = (list.exams || []).filter((e) => e.ended);
  const owned = new Set();
  const recStart = new Map(recordings.map((m) => [m.id, m]));
  grid.replaceChildren();
  for (const e of exams) {
    for (const r of e.recordings || []) owned.add(r);
    let view;
    try { view = await call(token, 'GET', `/api/exams/${e.id}`); } catch { view = { ...e, findings: [] }; }
    grid.append(caseCard(view, { token, role, recStart, toast }));
  }
  return { owned, count: exams.length };
}

function caseCard(e, { token, role, recStart, toast }) {
  const li = el('li', { class: 'case-card', dataset: { id: e.id } });
  const mins = e.ended ? Math.max(1, Math.round((Date.parse(e.ended) - Date.parse(e.started)) / 60000)) : 0;
  const title = `${cap(e.organ)}${e.side ? ` (${e.side})` : ''} · ${new Date(e.started).toLocaleString()} · ${mins} min`;
  const first = (e.recordings || []).find((r) => recStart.has(r));
  const replay = (t) => (first ? `/replay/${encodeURIComponent(first)}?${q(token)}${t != null ? `#t=${t}` : ''}` : null);
  const head = el('div', { class: 'case-head' },
    el('strong', { textContent: title }),
    el('span', { class: 'muted', textContent: `${e.findings.length} finding${e.findings.length === 1 ? '' : 's'} · ${(e.recordings || []).length} recording${(e.recordings || []).length === 1 ? '' : 's'}${e.pacs ? ` · PACS: ${e.pacs.state}` : ''}` }));
  const shots = el('div', { class: 'case-shots' });
  const start = first && recStart.get(first);
  for (const f of e.findings) {
    const t = start ? findingTime(f, start.start, Number(start.duration_s)) : null;
    const img = el('img', { alt: `Finding ${f.n}`, loading: 'lazy', decoding: 'async', src: `/api/exams/${e.id}/findings/${f.n}/annotated.jpg?${q(token)}` });
    const size = Array.isArray(f.size_mm) ? `${f.size_mm[0].toFixed(1)}×${f.size_mm[1].toFixed(1)} mm` : '';
    const href = t != null ? replay(t) : `/api/exams/${e.id}/findings/${f.n}/annotated.jpg?${q(token)}`;
    shots.append(el('a', { href, title: [`finding ${f.n}`, size, f.verdict ? `expert: ${f.verdict.verdict}` : ''].filter(Boolean).join(' · ') }, img));
  }
  const links = el('div', { class: 'case-links' },
    first ? el('a', { class: 'btn', href: replay(null), textContent: 'Replay' }) : null,
    el('a', { class: 'btn', href: `/api/exams/${e.id}/report.html?${q(token)}`, target: '_blank', rel: 'noopener', textContent: 'Report' }));
  const tags = el('div', { class: 'case-tags' }, ...(e.tags || []).map((t) => el('span', { class: 'tag', textContent: t })));
  li.append(head, shots, tags, links);
  if (role === 'teacher' || role === 'sonographer') {
    const edit = el('button', { type: 'button', class: 'btn', textContent: 'Tags…' });
    edit.addEventListener('click', async () => {
      const text = window.prompt('Tags, comma separated (organ, finding type, difficulty: thyroid, finding:cyst, difficulty:easy)', (e.tags || []).join(', '));
      if (text === null) return;
      try {
        const r = await call(token, 'PUT', `/api/exams/${e.id}/tags`, { tags: text.split(',').map((s) => s.trim()).filter(Boolean) });
        tags.replaceChildren(...r.tags.map((t) => el('span', { class: 'tag', textContent: t })));
      } catch (err) { toast(`Tags not saved: ${err.message}`, 5000); }
    });
    const share = el('a', { class: 'btn', href: `/api/exams/${e.id}/teaching.zip?${q(token)}`, textContent: 'De-identified download',
      title: 'The case without the patient\'s label, the burned-in header masked: for teaching outside the clinic' });
    links.append(edit, share);
  }
  return li;
}

// examKeyImages lists the key images of the recording's exam in list (an
// <ol>) at their time in the recording; onSeek(t) jumps there. Returns the
// times, for previous/next.
export async function examKeyImages({ token, meta, list, onSeek }) {
  if (!meta.exam) return [];
  const e = await call(token, 'GET', `/api/exams/${meta.exam}`);
  const times = [];
  list.replaceChildren();
  for (const f of e.findings) {
    const t = findingTime(f, meta.start, Number(meta.duration_s));
    if (t == null) continue;
    times.push(t);
    const b = el('button', { type: 'button', class: 'capture', title: 'Show this key image in the replay' },
      el('img', { alt: `Finding ${f.n}`, loading: 'lazy', decoding: 'async', src: `/api/exams/${e.id}/findings/${f.n}/annotated.jpg?${q(token)}` }),
      el('span', { class: 'capture-label', textContent: `finding ${f.n} · ${t.toFixed(1)} s${Array.isArray(f.size_mm) ? ` · ${f.size_mm[0].toFixed(1)}×${f.size_mm[1].toFixed(1)} mm` : ''}` }));
    b.addEventListener('click', () => onSeek(t));
    list.append(el('li', { dataset: { n: String(f.n), t: String(t) } }, b));
  }
  return times.sort((a, b) => a - b);
}
