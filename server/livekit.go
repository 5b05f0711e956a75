package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"sonolive/auth"
	"sonolive/sfu"
)

// liveKitJoin hands a viewer what it needs to watch the source through
// LiveKit: the server's URL, the room and a subscribe-only token for this
// link. The token lives at most as long as the link, and 10 minutes: a
// page asks again to rejoin.
func (s *Server) liveKitJoin(w http.ResponseWriter, r *http.Request) {
	ses, c, ok := s.authorize(w, r, auth.Sonographer, auth.Expert, auth.Student)
	if !ok {
		return
	}
	if s.livekit == nil {
		http.Error(w, "this box publishes to no LiveKit server (config: livekit)", http.StatusNotFound)
		return
	}
	ttl := min(time.Until(c.ExpiresAt()), 10*time.Minute)
	if ttl <= 0 {
		auth.Deny(w, auth.ErrExpired)
		return
	}
	room := sfu.RoomFor(ses.id)
	// One identity per join: a class shares one student link. The
	// identity names the link, so the room's list and LiveKit's logs
	// tell whose it is.
	var rnd [4]byte
	rand.Read(rnd[:])
	tok, err := s.livekit.Viewer(room, sfu.ViewerIdentity(string(c.Role), c.ID, fmt.Sprintf("%x", rnd)), string(c.Role), ttl)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	u := s.cfg.LiveKit.ViewerURL
	if u == "" {
		u = s.cfg.LiveKit.URL
	}
	s.audit.Log(auditEvent(r, c, "livekit_token", "", room))
	w.Header().Set("Cache-Control", "private, no-store")
	writeJSON(w, http.StatusOK, map[string]any{"url": u, "room": room, "token": tok, "topic": sfu.MetadataTopic})
}

// liveKitOrigins are what the watch page connects to besides this box:
// the LiveKit server's WebSocket and its HTTP twin (the client checks a
// failed join over HTTP).
func (s *Server) liveKitOrigins() []string {
	if s.livekit == nil {
		return nil
	}
	u := s.cfg.LiveKit.ViewerURL
	if u == "" {
		u = s.cfg.LiveKit.URL
	}
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return nil
	}
	web := map[string]string{"ws": "http", "wss": "https"}[p.Scheme]
	return []string{p.Scheme + "://" + p.Host, web + "://" + p.Host}
}

// evictLiveKit ends, in the source's room, what revoked links joined.
func (s *Server) evictLiveKit(source string, links []string) {
	if s.livekit == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := s.livekit.Evict(ctx, s.cfg.LiveKit.URL, sfu.RoomFor(source), links)
	if err != nil {
		s.log.Warn("removing revoked viewers from the LiveKit room", zap.String("source", source), zap.Int("removed", n), zap.Error(err))
		return
	}
	if n > 0 {
		s.log.Info("revoked viewers removed from the LiveKit room", zap.String("source", source), zap.Int("removed", n))
	}
}
