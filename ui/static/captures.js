// captures.js: a recording's key frames on the replay page — the frames the
// people in the session chose to keep ("Capture" on the live pages), each
// as streamed and annotated (findings and marks drawn), with its time; a
// tap seeks the replay there. GET /api/recordings/{id}/captures.json and
// capture-NNN[-annotated].jpg (docs/recording.md). No module state.

const pad = (n) => String(n).padStart(3, '0');

// pictureURL is a capture's picture, with the token for <img>/<a>.
export function pictureURL(recPath, c, annotated, token) {
  return `${recPath}/capture-${pad(c.n)}${annotated ? '-annotated' : ''}.jpg?token=${encodeURIComponent(token)}`;
}

const byWho = (c) => c.name || (c.by === 'sonographer' ? 'sonographer' : c.by === 'expert' ? 'expert' : c.by || '');

// renderCaptures fills list (an <ol>) with one entry per capture; onSeek(t)
// is called when one is chosen. Returns the number shown.
export function renderCaptures(list, captures, { recPath, token, fmtTime, onSeek }) {
  list.replaceChildren();
  for (const c of captures) {
    if (!Number.isInteger(c.n) || c.n < 1) continue;
    const li = document.createElement('li');
    li.dataset.n = String(c.n);
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'capture';
    b.title = 'Show this moment in the replay';
    const img = document.createElement('img');
    img.alt = `Key frame ${c.n}`;
    img.loading = 'lazy';
    img.decoding = 'async';
    img.src = pictureURL(recPath, c, true, token);
    const cap = document.createElement('span');
    cap.className = 'capture-label';
    const findings = Array.isArray(c.detections) ? c.detections.length : 0;
    const marks = Array.isArray(c.marks) ? c.marks.length : 0;
    cap.textContent = [`${c.n} · ${fmtTime(Number(c.t) || 0, 1)}`, byWho(c),
      findings ? `${findings} finding${findings > 1 ? 's' : ''}` : '', marks ? `${marks} mark${marks > 1 ? 's' : ''}` : '']
      .filter(Boolean).join(' · ');
    b.append(img, cap);
    b.addEventListener('click', () => onSeek(Number(c.t) || 0));
    const links = document.createElement('span');
    links.className = 'capture-links';
    for (const [annotated, text] of [[false, c.clean ? 'clean' : 'as streamed'], [true, 'annotated']]) {
      const a = document.createElement('a');
      a.href = pictureURL(recPath, c, annotated, token);
      a.target = '_blank';
      a.rel = 'noopener';
      a.textContent = text;
      links.append(a);
    }
    li.append(b, links);
    list.append(li);
  }
  if (!list.children.length) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = 'No key frames kept in this session';
    list.append(li);
  }
  return list.querySelectorAll('li[data-n]').length;
}
