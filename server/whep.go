package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"sonolive/auth"
	"sonolive/ice"
	"sonolive/stream"
)

// maxSDP bounds an offer; real ones are a few KB.
const maxSDP = 64 << 10

// readBody reads a request body of the given media type, writing the 4xx
// itself when it is the wrong type or too large.
func readBody(w http.ResponseWriter, r *http.Request, mediaType string, limit int64) ([]byte, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != mediaType {
		http.Error(w, fmt.Sprintf("Content-Type must be %s", mediaType), http.StatusUnsupportedMediaType)
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, fmt.Sprintf("body larger than %d bytes", limit), http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		}
		return nil, false
	}
	return b, true
}

// whepOffer is WHEP's POST: an SDP offer in, a viewer and its answer out.
func (s *Server) whepOffer(w http.ResponseWriter, r *http.Request) {
	ses, claims, ok := s.authorize(w, r, liveRoles...)
	if !ok {
		return
	}
	offer, ok := readBody(w, r, "application/sdp", maxSDP)
	if !ok {
		return
	}
	// Refuse a link at its limit before negotiating, which costs the
	// server a peer connection and ICE gathering.
	if err := s.access.Check(claims, connWHEP); err != nil {
		auth.Deny(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	v, answer, err := ses.relay.AddViewer(ctx, string(offer), string(claims.Role))
	if err == nil {
		// The viewer lives as long as its token: it is closed at expiry
		// or revocation, and counts against the token's limit.
		if berr := ses.bindViewer(claims, v.ID(), r.RemoteAddr); berr != nil {
			ses.relay.RemoveViewer(v.ID(), "refused: "+berr.Error())
			auth.Deny(w, berr)
			return
		}
		s.audit.Log(auditEvent(r, claims, "viewer_joined", "viewer", v.ID()))
	}
	switch {
	case errors.Is(err, stream.ErrBadOffer):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case errors.Is(err, stream.ErrFull), errors.Is(err, stream.ErrClosed):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	case err != nil:
		s.log.Error("whep offer", zap.String("source", ses.id), zap.Error(err))
		http.Error(w, "could not set up the connection", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/"+url.PathEscape(ses.id)+"/"+v.ID())
	w.Header().Set("ETag", `"`+v.ID()+`"`)
	// WHEP (RFC 9725 §4.6): the ICE servers a client may use for an ICE
	// restart, with credentials minted for this link.
	for _, l := range ice.LinkHeaders(s.ice.For(claims.ID)) {
		w.Header().Add("Link", l)
	}
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

// viewerFor authenticates a WHEP resource request and finds its viewer.
// Only the token that created the viewer, or the sonographer, may change
// or end it: viewer ids are not secret (metrics, session events).
func (s *Server) viewerFor(w http.ResponseWriter, r *http.Request) (*Session, *stream.Viewer, bool) {
	ses, claims, ok := s.authorize(w, r, liveRoles...)
	if !ok {
		return nil, nil, false
	}
	v, ok := ses.relay.Viewer(r.PathValue("id"))
	if !ok {
		http.Error(w, stream.ErrNoViewer.Error(), http.StatusNotFound)
		return nil, nil, false
	}
	if owner, ok := ses.viewerOwner(v.ID()); claims.Role != auth.Sonographer && (!ok || owner != claims.ID) {
		auth.Deny(w, fmt.Errorf("%w: this viewer belongs to another link", auth.ErrForbidden))
		return nil, nil, false
	}
	return ses, v, true
}

// whepPatch applies trickled ICE candidates (RFC 8840 fragments).
func (s *Server) whepPatch(w http.ResponseWriter, r *http.Request) {
	_, v, ok := s.viewerFor(w, r)
	if !ok {
		return
	}
	frag, ok := readBody(w, r, "application/trickle-ice-sdpfrag", maxSDP)
	if !ok {
		return
	}
	if err := v.AddCandidates(string(frag)); errors.Is(err, stream.ErrTooManyCandidates) {
		http.Error(w, err.Error(), http.StatusTooManyRequests)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// whepDelete ends a viewer's session.
func (s *Server) whepDelete(w http.ResponseWriter, r *http.Request) {
	ses, v, ok := s.viewerFor(w, r)
	if !ok {
		return
	}
	if err := ses.relay.RemoveViewer(v.ID(), "left (DELETE)"); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// iceServers: GET /api/sources/{source}/ice, the STUN/TURN servers a page
// gives its peer connection before it makes its offer, TURN credentials
// minted for its link (named by the link's id in the TURN server's logs).
func (s *Server) iceServers(w http.ResponseWriter, r *http.Request) {
	_, c, ok := s.authorize(w, r, auth.Sonographer, auth.Expert, auth.Publisher)
	if !ok {
		return
	}
	servers := s.ice.For(c.ID)
	if servers == nil {
		servers = []ice.Server{}
	}
	w.Header().Set("Cache-Control", "private, no-store")
	writeJSON(w, http.StatusOK, map[string]any{"ice_servers": servers})
}
