// ice.js: the STUN/TURN servers a page hands its RTCPeerConnection,
// fetched with the page's token (GET /api/sources/{source}/ice: TURN
// credentials minted for its link) once, and again after half an hour,
// long before they expire. No module state: each page keeps its own source.

// iceSource returns an async function giving the servers for ctx's source.
export function iceSource(ctx) {
  let cached = null;
  let at = 0;
  return async () => {
    if (cached && Date.now() - at < 30 * 60 * 1000) return cached;
    const res = await fetch(`/api/sources/${encodeURIComponent(ctx.source)}/ice`, {
      headers: { Authorization: `Bearer ${ctx.token}` }, cache: 'no-store',
    });
    if (!res.ok) throw new Error(`ICE servers: HTTP ${res.status}`);
    const body = await res.json();
    cached = (body.ice_servers || []).map((s) => {
      const out = { urls: s.urls };
      if (s.username) { out.username = s.username; out.credential = s.credential; }
      return out;
    });
    at = Date.now();
    return cached;
  };
}
