package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"sonolive/audit"
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
	// Label names the invite on the sonographer's list ("Dr Mokoena").
	Label string `json:"label"`
	// Via "livekit" links an expert or a student to the watch page,
	// which joins the source's LiveKit room: for audiences larger than
	// the box carries.
	Via string `json:"via"`
}

type inviteResponse struct {
	ID      string    `json:"id"`
	URL     string    `json:"url"`
	Token   string    `json:"token"`
	Role    auth.Role `json:"role"`
	Expires time.Time `json:"expires"`
}

// Kinds of live connection bound to a token.
const (
	connWHEP     = "whep"
	connWS       = "ws"
	connDownload = "download"
	connWHIP     = "whip"
)

// reasonWord is what a page is told when its link ends.
func reasonWord(err error) string {
	if errors.Is(err, auth.ErrRevoked) {
		return "revoked"
	}
	return "expired"
}

// auditEvent is an audit entry for a request made with c.
func auditEvent(r *http.Request, c auth.Claims, action, kind, subject string) audit.Event {
	e := audit.Event{Action: action, Source: c.Source, Role: string(c.Role), TokenID: c.ID, Addr: r.RemoteAddr, Subject: subject}
	if kind != "" {
		e.Detail = map[string]string{"kind": kind}
	}
	return e
}

// linkTTL is a requested link lifetime (ttl_s), def when none is asked
// for; outside 1 s..max it writes the 400.
func linkTTL(w http.ResponseWriter, ttlS *int, def, max time.Duration) (time.Duration, bool) {
	ttl := def
	if ttlS != nil {
		ttl = time.Duration(*ttlS) * time.Second
	}
	if ttl <= 0 || ttl > max {
		http.Error(w, fmt.Sprintf("ttl_s must be between 1 and %d", int(max.Seconds())), http.StatusBadRequest)
		return 0, false
	}
	return ttl, true
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
	if !req.Role.Valid() || req.Role == auth.Admin {
		http.Error(w, fmt.Sprintf("role must be one of %v", auth.Roles), http.StatusBadRequest)
		return
	}
	if len(req.Label) > 64 {
		http.Error(w, "label: at most 64 characters", http.StatusBadRequest)
		return
	}
	page := ""
	switch req.Via {
	case "":
	case "livekit":
		if s.livekit == nil {
			http.Error(w, "via livekit: this box publishes to no LiveKit server (config: livekit)", http.StatusBadRequest)
			return
		}
		if req.Role != auth.Expert && req.Role != auth.Student {
			http.Error(w, "via livekit: for an expert or a student", http.StatusBadRequest)
			return
		}
		page = "watch"
	default:
		http.Error(w, `via: "" or "livekit"`, http.StatusBadRequest)
		return
	}
	ttl, ok := linkTTL(w, req.TTLS, s.cfg.Auth.InviteTTL, s.cfg.Auth.MaxInviteTTL)
	if !ok {
		return
	}
	// An invite never outlives the link that made it (IssueUnder caps it).
	link, claims, err := s.linkUnder(c, ses.id, req.Role, ttl, req.Label, page)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	tok, _ := url.QueryUnescape(link[strings.Index(link, "token=")+len("token="):])
	s.log.Info("invite created", zap.String("source", ses.id), zap.String("role", string(req.Role)),
		zap.String("invite_id", claims.ID), zap.String("by", c.ID), zap.Time("expires", claims.ExpiresAt()))
	s.audit.Log(audit.Event{Action: "invite_issued", Source: ses.id, Role: string(c.Role), TokenID: c.ID, Addr: r.RemoteAddr,
		Subject: claims.ID, Detail: map[string]string{"role": string(req.Role), "expires": claims.ExpiresAt().UTC().Format(time.RFC3339), "label": req.Label}})
	writeJSON(w, http.StatusCreated, inviteResponse{ID: claims.ID, URL: link, Token: tok, Role: req.Role, Expires: claims.ExpiresAt().UTC()})
}

// listInvites shows the sonographer every live link of the source and what
// is connected with each.
func (s *Server) listInvites(w http.ResponseWriter, r *http.Request) {
	ses, _, ok := s.authorize(w, r, auth.Sonographer)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.access.Grants(ses.id))
}

// revokeInvite ends a link: every connection made with it (and with the
// links it made) closes, and it opens nothing any more.
func (s *Server) revokeInvite(w http.ResponseWriter, r *http.Request) {
	ses, c, ok := s.authorize(w, r, auth.Sonographer)
	if !ok {
		return
	}
	id := r.PathValue("id")
	g, known := s.access.Lookup(id)
	if !known || g.Source != ses.id {
		http.Error(w, "no such invite on this source", http.StatusNotFound)
		return
	}
	if id == c.ID {
		http.Error(w, "a link cannot revoke itself", http.StatusBadRequest)
		return
	}
	ids, err := s.access.Revoke(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	s.log.Info("invite revoked", zap.String("source", ses.id), zap.Strings("invite_ids", ids), zap.String("by", c.ID))
	// Off the request: the LiveKit server may be slow or away.
	go s.evictLiveKit(ses.id, ids)
	s.audit.Log(audit.Event{Action: "invite_revoked", Source: ses.id, Role: string(c.Role), TokenID: c.ID, Addr: r.RemoteAddr,
		Subject: id, Detail: map[string]string{"revoked": strings.Join(ids, ",")}})
	w.WriteHeader(http.StatusNoContent)
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

// getStill serves the picture of the freeze in force: every page shows
// this same decoded frame while frozen. ts names it, so a page never shows
// a picture of another freeze.
func (s *Server) getStill(w http.ResponseWriter, r *http.Request) {
	ses, _, ok := s.authorize(w, r, liveRoles...)
	if !ok {
		return
	}
	ts, err := strconv.ParseUint(r.URL.Query().Get("ts"), 10, 32)
	if err != nil {
		http.Error(w, "ts must be the RTP timestamp of the frozen frame", http.StatusBadRequest)
		return
	}
	jpeg, ok := ses.consult.still(uint32(ts))
	if !ok {
		http.Error(w, "no freeze of that frame in force", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Cache-Control", "private, no-store")
	w.Write(jpeg)
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

// listSources lists the token's own source: a link for one source says
// nothing about the others.
func (s *Server) listSources(w http.ResponseWriter, r *http.Request) {
	c, err := s.signer.Verify(auth.FromRequest(r))
	if err != nil {
		auth.Deny(w, err)
		return
	}
	out := []sourceInfo{}
	for _, ses := range s.sessions.list() {
		id := ses.id
		if id != c.Source && c.Role != auth.Admin {
			continue
		}
		m := ses.stats()
		out = append(out, sourceInfo{ID: id, State: m.State, Width: m.Width, Height: m.Height, FPS: m.FPS, BurnIn: m.BurnIn, Viewers: m.Viewers})
	}
	writeJSON(w, http.StatusOK, out)
}

// healthz is 200 while every source delivers frames. Without a token it
// says only "ok" or "not ok": source names and errors (which may carry a
// camera's address) are for a sonographer's token of that source.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	c, authErr := s.signer.Verify(auth.FromRequest(r))
	var bad []string
	for _, ses := range s.sessions.list() {
		id := ses.id
		if st := ses.state(ses.relay.Stats()); st != "live" {
			msg, _ := ses.errMsg.Load().(string)
			if authErr == nil && c.Role == auth.Sonographer && c.Source == id {
				bad = append(bad, fmt.Sprintf("%s: %s %s", id, st, msg))
			} else {
				bad = append(bad, "")
			}
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if len(bad) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ok\n")
		for _, b := range bad {
			if b != "" {
				io.WriteString(w, b+"\n")
			}
		}
		return
	}
	io.WriteString(w, "ok\n")
}
