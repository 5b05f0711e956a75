package server

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"sonolive/auth"
	"sonolive/replay"
)

// recordingAccess checks the token against the recording's source and, for
// write access, the role. It writes the 4xx itself.
func (s *Server) recordingAccess(w http.ResponseWriter, r *http.Request, roles ...auth.Role) (string, bool) {
	if s.lib == nil {
		http.Error(w, "recording is off on this server", http.StatusNotFound)
		return "", false
	}
	id := r.PathValue("id")
	src := replay.Source(id)
	if src == "" {
		http.Error(w, replay.ErrNotFound.Error(), http.StatusNotFound)
		return "", false
	}
	if _, err := s.signer.Check(r, src, roles...); err != nil {
		auth.Deny(w, err)
		return "", false
	}
	return id, true
}

var anyRole = []auth.Role{auth.Sonographer, auth.Expert}

// listRecordings lists the token's source's recordings, newest first.
func (s *Server) listRecordings(w http.ResponseWriter, r *http.Request) {
	c, err := s.signer.Verify(auth.FromRequest(r))
	if err != nil {
		auth.Deny(w, err)
		return
	}
	out := []replay.Meta{}
	if s.lib != nil {
		all, err := s.lib.List()
		if err != nil {
			http.Error(w, "listing recordings failed", http.StatusInternalServerError)
			s.log.Error("listing recordings", zap.Error(err))
			return
		}
		for _, m := range all {
			if m.Source == c.Source {
				out = append(out, m)
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getRecording(w http.ResponseWriter, r *http.Request) {
	id, ok := s.recordingAccess(w, r, anyRole...)
	if !ok {
		return
	}
	m, err := s.lib.Get(id)
	if err != nil {
		recordingError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// recordingFile serves video.mp4 (with range requests, for seeking),
// timeline.jsonl and thumb.jpg.
func (s *Server) recordingFile(w http.ResponseWriter, r *http.Request) {
	id, ok := s.recordingAccess(w, r, anyRole...)
	if !ok {
		return
	}
	p, err := s.lib.File(id, r.PathValue("file"))
	if err != nil {
		recordingError(w, err)
		return
	}
	if filepath.Ext(p) == ".jsonl" {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "private, max-age=60")
	http.ServeFile(w, r, p)
}

func (s *Server) deleteRecording(w http.ResponseWriter, r *http.Request) {
	id, ok := s.recordingAccess(w, r, auth.Sonographer)
	if !ok {
		return
	}
	if err := s.lib.Delete(id); err != nil {
		recordingError(w, err)
		return
	}
	s.log.Info("recording deleted", zap.String("recording", id))
	w.WriteHeader(http.StatusNoContent)
}

func recordingError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, replay.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case errors.Is(err, replay.ErrRecording):
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		http.Error(w, "recording: "+err.Error(), http.StatusInternalServerError)
	}
}

// retain applies the retention limits now and every ten minutes.
func (s *Server) retain(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		if _, err := s.lib.Enforce(s.cfg.Record.MaxAge, int64(s.cfg.Record.MaxGB*1e9)); err != nil {
			s.log.Error("retention", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
