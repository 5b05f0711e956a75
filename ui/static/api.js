// api.js: the small helpers the page modules share: a JSON call with the
// page's token that turns a non-2xx answer into an Error with its status
// and the server's one-line reason, and a DOM element builder. No state.

// call sends body (JSON, when given) and returns the JSON answer (null
// for 204).
export async function call(token, method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, cache: 'no-store', headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) {
    let text = '';
    try { text = (await res.text()).trim().split('\n')[0].slice(0, 200); } catch { /* no body */ }
    const err = new Error(text || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return res.status === 204 ? null : res.json();
}

// el makes an element: props are properties (class, dataset, or any
// attribute), kids are appended (null and undefined skipped).
export function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  e.append(...kids.filter((k) => k !== null && k !== undefined));
  return e;
}
