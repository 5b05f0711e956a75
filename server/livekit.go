package server

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"time"

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
	tok, err := s.livekit.Viewer(room, fmt.Sprintf("%s-%s-%x", c.Role, c.ID, rnd), string(c.Role), ttl)
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
