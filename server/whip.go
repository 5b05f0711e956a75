package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/zap"

	"sonolive/audit"
	"sonolive/auth"
	"sonolive/ice"
	"sonolive/ingest"
)

// whipPublish is WHIP's POST: a publisher's SDP offer in, its answer out.
// The token must be a publisher's for this source. A source that does not
// exist yet is created (url whip://) for a token the admin issued for it:
// a tablet brought into the room publishes and its session starts.
func (s *Server) whipPublish(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("source")
	c, err := s.signer.Verify(auth.FromRequest(r))
	if err == nil && (c.Role != auth.Publisher || c.Source != id) {
		err = fmt.Errorf("%w: publishing to %q needs a publisher link for it", auth.ErrForbidden, id)
	}
	if err != nil {
		auth.Deny(w, err)
		return
	}
	offer, ok := readBody(w, r, "application/sdp", maxSDP)
	if !ok {
		return
	}
	ses, ok := s.sessions.get(id)
	if !ok {
		if ses, err = s.addSession(Source{ID: id, URL: "whip://"}); err != nil && !errors.Is(err, errSourceExists) {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if ses == nil {
			ses, _ = s.sessions.get(id)
		} else {
			s.log.Info("source added by its publisher", zap.String("source", id), zap.String("by", c.ID))
			s.audit.Log(audit.Event{Action: "source_added", Source: id, Role: string(c.Role), TokenID: c.ID, Addr: r.RemoteAddr,
				Detail: map[string]string{"url": "whip://"}})
		}
	}
	if ses == nil || ses.feed == nil {
		http.Error(w, fmt.Sprintf("source %q is not fed by WHIP (its url is not whip://)", id), http.StatusConflict)
		return
	}
	if old := ses.feed.Publisher(); old != nil {
		if old.Owner != c.ID {
			http.Error(w, ingest.ErrBusy.Error(), http.StatusConflict)
			return
		}
		// The same device coming back before its old connection timed
		// out: the new one replaces it at once.
		old.Close()
	}
	if err := s.access.Check(c, connWHIP); err != nil {
		auth.Deny(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	pid := "p-" + randomHex(4)
	pub, answer, err := ingest.NewPublisher(ctx, s.api.Receiver(), webrtc.Configuration{ICEServers: ice.WebRTC(s.ice.For("sonolive-" + ses.id))}, pid, string(offer), ses.log)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ingest.ErrNoVideo) || ctx.Err() == nil {
			code = http.StatusBadRequest
		}
		http.Error(w, err.Error(), code)
		return
	}
	pub.Owner = c.ID
	if err := ses.feed.Attach(pub); err != nil {
		pub.Close()
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	// The connection lives as long as its link: revoking the link or its
	// expiry ends the publishing within a second.
	b, err := s.access.Bind(c, connWHIP, pid, r.RemoteAddr, func(error) { pub.Close() })
	if err != nil {
		pub.Close()
		auth.Deny(w, err)
		return
	}
	s.audit.Log(auditEvent(r, c, "publisher_joined", "publisher", pid))
	s.hub.broadcast(id, event{Type: "publisher", Status: "publishing"})
	go func() {
		<-pub.Done()
		b.Release()
		st := pub.Stats()
		ses.log.Info("publisher left", zap.String("publisher", pid), zap.Uint64("frames", st.Frames),
			zap.Uint64("lost", st.Lost), zap.Uint64("dropped", st.Dropped))
		s.audit.Log(audit.Event{Action: "publisher_left", Source: id, Role: string(c.Role), TokenID: c.ID, Addr: b.Addr, Subject: pid})
		s.hub.broadcast(id, event{Type: "publisher", Status: "left"})
	}()
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whip/"+url.PathEscape(id)+"/"+pid)
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

// whipUnpublish is WHIP's DELETE: the publisher stops.
func (s *Server) whipUnpublish(w http.ResponseWriter, r *http.Request) {
	ses, c, ok := s.authorize(w, r, auth.Publisher, auth.Sonographer)
	if !ok {
		return
	}
	var pub *ingest.Publisher
	if ses.feed != nil {
		pub = ses.feed.Publisher()
	}
	if pub == nil || pub.ID() != r.PathValue("id") {
		http.Error(w, "no such publisher", http.StatusNotFound)
		return
	}
	pub.Close()
	s.audit.Log(auditEvent(r, c, "publisher_stopped", "publisher", pub.ID()))
	w.WriteHeader(http.StatusOK)
}

// publisherLinks are a new source's two links: the device's, to publish,
// and the sonographer's, to watch once it does.
type publisherLinks struct {
	Publisher   inviteResponse `json:"publisher"`
	Sonographer inviteResponse `json:"sonographer"`
}

// createPublisherLink lets the admin hand a device a link to publish a
// new source (its first WHIP publish creates the session), with the
// sonographer's link to watch it.
func (s *Server) createPublisherLink(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorizeAdmin(w, r)
	if !ok {
		return
	}
	var req struct {
		Source string `json:"source"`
		TTLS   *int   `json:"ttl_s"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	if err := (Source{ID: req.Source, URL: "whip://"}).check(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ttl, ok := linkTTL(w, req.TTLS, s.cfg.Auth.SonographerTTL, s.cfg.Auth.SonographerTTL)
	if !ok {
		return
	}
	s.baseMu.RLock()
	base := s.base
	s.baseMu.RUnlock()
	var out publisherLinks
	for _, l := range []struct {
		role auth.Role
		page string
		into *inviteResponse
	}{{auth.Publisher, "publish", &out.Publisher}, {auth.Sonographer, "live", &out.Sonographer}} {
		tok, claims, err := s.access.Issue(auth.Claims{}, l.role, req.Source, ttl, string(l.role))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		u := base + "/" + l.page + "/" + url.PathEscape(req.Source) + "?token=" + url.QueryEscape(tok)
		*l.into = inviteResponse{ID: claims.ID, URL: u, Token: tok, Role: l.role, Expires: claims.ExpiresAt().UTC()}
		s.audit.Log(audit.Event{Action: "invite_issued", Source: req.Source, Role: string(c.Role), TokenID: c.ID, Addr: r.RemoteAddr,
			Subject: claims.ID, Detail: map[string]string{"role": string(l.role)}})
	}
	writeJSON(w, http.StatusCreated, out)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
