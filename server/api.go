package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"sonolive/auth"
)

// decodeJSON reads a small JSON body strictly, writing the 4xx itself.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, ok := readBody(w, r, "application/json", 4<<10)
	if !ok {
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return false
	}
	if dec.More() {
		http.Error(w, "bad JSON: trailing data", http.StatusBadRequest)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

type inviteRequest struct {
	Role auth.Role `json:"role"`
	TTLS *int      `json:"ttl_s"`
}

type inviteResponse struct {
	URL     string    `json:"url"`
	Token   string    `json:"token"`
	Role    auth.Role `json:"role"`
	Expires time.Time `json:"expires"`
}

// createInvite lets the sonographer hand an expert an expiring link.
func (s *Server) createInvite(w http.ResponseWriter, r *http.Request) {
	ses, c, ok := s.authorize(w, r, auth.Sonographer)
	if !ok {
		return
	}
	var req inviteRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Role == "" {
		req.Role = auth.Expert
	}
	if !req.Role.Valid() {
		http.Error(w, fmt.Sprintf("role must be %q or %q", auth.Expert, auth.Sonographer), http.StatusBadRequest)
		return
	}
	ttl := s.cfg.Auth.InviteTTL
	if req.TTLS != nil {
		ttl = time.Duration(*req.TTLS) * time.Second
	}
	if ttl <= 0 || ttl > s.cfg.Auth.MaxInviteTTL {
		http.Error(w, fmt.Sprintf("ttl_s must be between 1 and %d", int(s.cfg.Auth.MaxInviteTTL.Seconds())), http.StatusBadRequest)
		return
	}
	link, claims, err := s.Link(ses.id, req.Role, ttl)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	tok := link[strings.Index(link, "token=")+len("token="):]
	s.log.Info("invite created", zap.String("source", ses.id), zap.String("role", string(req.Role)),
		zap.String("invite_id", claims.ID), zap.String("by", c.ID), zap.Time("expires", claims.ExpiresAt()))
	writeJSON(w, http.StatusCreated, inviteResponse{URL: link, Token: tok, Role: req.Role, Expires: claims.ExpiresAt().UTC()})
}

type overlayRequest struct {
	BurnIn *bool `json:"burn_in"`
}

// setOverlay switches the burned-in overlay for the session.
func (s *Server) setOverlay(w http.ResponseWriter, r *http.Request) {
	ses, _, ok := s.authorize(w, r, auth.Sonographer)
	if !ok {
		return
	}
	var req overlayRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.BurnIn == nil {
		http.Error(w, `bad JSON: want {"burn_in": true|false}`, http.StatusBadRequest)
		return
	}
	ses.SetBurnIn(*req.BurnIn)
	s.log.Info("burn-in switched", zap.String("source", ses.id), zap.Bool("burn_in", *req.BurnIn))
	s.hub.broadcast(ses.id, event{Type: "overlay", BurnIn: req.BurnIn})
	writeJSON(w, http.StatusOK, map[string]bool{"burn_in": *req.BurnIn})
}

type sourceInfo struct {
	ID      string  `json:"id"`
	State   string  `json:"state"`
	Width   int     `json:"width"`
	Height  int     `json:"height"`
	FPS     float64 `json:"fps"`
	BurnIn  bool    `json:"burn_in"`
	Viewers int     `json:"viewers"`
}

// listSources needs any valid token.
func (s *Server) listSources(w http.ResponseWriter, r *http.Request) {
	if _, err := s.signer.Verify(auth.FromRequest(r)); err != nil {
		auth.Deny(w, err)
		return
	}
	out := []sourceInfo{}
	for _, id := range s.order {
		m := s.sessions[id].stats()
		out = append(out, sourceInfo{ID: id, State: m.State, Width: m.Width, Height: m.Height, FPS: m.FPS, BurnIn: m.BurnIn, Viewers: m.Viewers})
	}
	writeJSON(w, http.StatusOK, out)
}

// healthz is 200 while every source delivers frames.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	var bad []string
	for _, id := range s.order {
		ses := s.sessions[id]
		if st := ses.state(ses.relay.Stats()); st != "live" {
			msg, _ := ses.errMsg.Load().(string)
			bad = append(bad, fmt.Sprintf("%s: %s %s", id, st, msg))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(bad) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, strings.Join(bad, "\n")+"\n")
		return
	}
	io.WriteString(w, "ok\n")
}
