package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"sonolive/audit"
	"sonolive/auth"
	"sonolive/capture"
)

// addSourceResponse is what adding a source returns: the new session's
// sonographer link, as `serve` prints for the configured ones.
type addSourceResponse struct {
	ID      string    `json:"id"`
	URL     string    `json:"url"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// authorizeAdmin checks for an admin token, writing the 401 or 403.
func (s *Server) authorizeAdmin(w http.ResponseWriter, r *http.Request) (auth.Claims, bool) {
	c, err := s.signer.Verify(auth.FromRequest(r))
	if err == nil && (c.Role != auth.Admin || c.Source != auth.AllSources) {
		err = fmt.Errorf("%w: adding and removing sources needs an admin token", auth.ErrForbidden)
	}
	if err != nil {
		auth.Deny(w, err)
		return c, false
	}
	return c, true
}

// addSource starts a session for a source given at run time (a probe's
// laptop, a cart brought in): same fields as a configured source. The
// spec, crop and masks are checked before anything opens; a device that
// is not there yet is retried by the session, as for configured ones.
func (s *Server) addSource(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorizeAdmin(w, r)
	if !ok {
		return
	}
	var src Source
	if !decodeJSON(w, r, &src) {
		return
	}
	if err := src.check(); err != nil {
		http.Error(w, strings.ReplaceAll(err.Error(), src.URL, capture.Redact(src.URL)), http.StatusBadRequest)
		return
	}
	if _, err := s.addSession(src); err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, errSourceExists):
			code = http.StatusConflict
		case errors.Is(err, errShuttingDown):
			code = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), code)
		return
	}
	link, claims, err := s.Link(src.ID, auth.Sonographer, s.cfg.Auth.SonographerTTL)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	tok, _ := url.QueryUnescape(link[strings.Index(link, "token=")+len("token="):])
	s.log.Info("source added", zap.String("source", src.ID), zap.String("url", capture.Redact(src.URL)), zap.String("by", c.ID))
	s.audit.Log(audit.Event{Action: "source_added", Source: src.ID, Role: string(c.Role), TokenID: c.ID, Addr: r.RemoteAddr,
		Detail: map[string]string{"url": capture.Redact(src.URL)}})
	writeJSON(w, http.StatusCreated, addSourceResponse{ID: src.ID, URL: link, Token: tok, Expires: claims.ExpiresAt().UTC()})
}

// removeSource ends a session: its recording is finished, its viewers'
// connections and pages are closed.
func (s *Server) removeSource(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorizeAdmin(w, r)
	if !ok {
		return
	}
	id := r.PathValue("source")
	if !s.removeSession(id) {
		http.Error(w, fmt.Sprintf("%v %q", errUnknownSource, id), http.StatusNotFound)
		return
	}
	s.log.Info("source removed", zap.String("source", id), zap.String("by", c.ID))
	s.audit.Log(audit.Event{Action: "source_removed", Source: id, Role: string(c.Role), TokenID: c.ID, Addr: r.RemoteAddr})
	w.WriteHeader(http.StatusNoContent)
}

// AdminToken issues a token for the source API, valid for ttl.
func (s *Server) AdminToken(ttl time.Duration) (string, auth.Claims, error) {
	return s.access.Issue(auth.Claims{}, auth.Admin, auth.AllSources, ttl, "admin")
}
