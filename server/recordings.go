package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"sonolive/auth"
	"sonolive/replay"
)

// recordingAccess checks the token against the recording's source and, for
// write access, the role. It writes the 4xx itself.
func (s *Server) recordingAccess(w http.ResponseWriter, r *http.Request, roles ...auth.Role) (string, auth.Claims, bool) {
	if s.lib == nil {
		http.Error(w, "recording is off on this server", http.StatusNotFound)
		return "", auth.Claims{}, false
	}
	return s.idAccess(w, r, replay.Source, replay.ErrNotFound, roles...)
}

// idAccess checks the token against the source a path's {id} names
// (sourceOf gives "" for an id that is not one: notFound, 404), and the
// role; it writes the 4xx itself.
func (s *Server) idAccess(w http.ResponseWriter, r *http.Request, sourceOf func(string) string, notFound error, roles ...auth.Role) (string, auth.Claims, bool) {
	id := r.PathValue("id")
	src := sourceOf(id)
	if src == "" {
		http.Error(w, notFound.Error(), http.StatusNotFound)
		return "", auth.Claims{}, false
	}
	c, err := s.signer.Check(r, src, roles...)
	if err != nil {
		auth.Deny(w, err)
		return "", c, false
	}
	return id, c, true
}

// Who may do what. A live-view invite (expert) does not open the archive:
// the library has its own roles, granted explicitly.
var (
	liveRoles    = []auth.Role{auth.Sonographer, auth.Expert}
	libraryRoles = []auth.Role{auth.Sonographer, auth.Teacher, auth.Student}
	curatorRoles = []auth.Role{auth.Sonographer, auth.Teacher}
)

// listRecordings lists the token's source's recordings, newest first.
func (s *Server) listRecordings(w http.ResponseWriter, r *http.Request) {
	c, err := s.signer.Verify(auth.FromRequest(r))
	if err == nil && !slices.Contains(libraryRoles, c.Role) {
		err = fmt.Errorf("%w: role %s may not open the library", auth.ErrForbidden, c.Role)
	}
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
	id, c, ok := s.recordingAccess(w, r, libraryRoles...)
	if !ok {
		return
	}
	m, err := s.lib.Get(id)
	if err != nil {
		recordingError(w, err)
		return
	}
	s.audit.Log(auditEvent(r, c, "recording_viewed", "recording", id))
	writeJSON(w, http.StatusOK, m)
}

// recordingFile serves video.mp4 (with range requests, for seeking),
// timeline.jsonl, thumb.jpg and the key frames' pictures
// (capture-NNN.jpg, capture-NNN-annotated.jpg). A transfer is bound to its token: it stops
// when the token expires or is revoked.
func (s *Server) recordingFile(w http.ResponseWriter, r *http.Request) {
	id, c, ok := s.recordingAccess(w, r, libraryRoles...)
	if !ok {
		return
	}
	switch r.PathValue("file") {
	case "labels.json":
		s.recordingLabels(w, id)
		return
	case "captures.json":
		cs, err := s.lib.Captures(id)
		if err != nil {
			recordingError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, cs)
		return
	}
	p, err := s.lib.File(id, r.PathValue("file"))
	if err != nil {
		recordingError(w, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	bind, err := s.access.Bind(c, connDownload, id, r.RemoteAddr, func(error) { cancel() })
	if err != nil {
		auth.Deny(w, err)
		return
	}
	defer bind.Release()
	// The server's write timeout is for short replies; a video may take
	// longer, but never past the token's life.
	http.NewResponseController(w).SetWriteDeadline(c.ExpiresAt())
	if filepath.Ext(p) == ".jsonl" {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	if r.PathValue("file") == "video.mp4" && r.Header.Get("Range") == "" {
		s.audit.Log(auditEvent(r, c, "recording_downloaded", "recording", id))
	}
	w.Header().Set("Cache-Control", "private, max-age=60")
	http.ServeFile(&boundWriter{ResponseWriter: w, ctx: ctx}, r, p)
}

// boundWriter fails writes once its context ends, which stops a transfer
// in progress (http.ServeFile copies until a write fails).
type boundWriter struct {
	http.ResponseWriter
	ctx context.Context
}

func (b *boundWriter) Write(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	return b.ResponseWriter.Write(p)
}

func (s *Server) deleteRecording(w http.ResponseWriter, r *http.Request) {
	id, c, ok := s.recordingAccess(w, r, curatorRoles...)
	if !ok {
		return
	}
	if err := s.lib.Delete(id); err != nil {
		recordingError(w, err)
		return
	}
	s.log.Info("recording deleted", zap.String("recording", id), zap.String("token_id", c.ID))
	s.audit.Log(auditEvent(r, c, "recording_deleted", "recording", id))
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
		// A recording whose finish failed (a full disk) is finished here
		// once there is room again.
		if err := s.lib.Recover(); err != nil {
			s.log.Error("recovering recordings", zap.Error(err))
		}
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

// recordingLabels serves the experts' verdicts of a recording as a COCO
// data set (replay.Labels), made from its timeline on request.
func (s *Server) recordingLabels(w http.ResponseWriter, id string) {
	p, err := s.lib.File(id, "timeline.jsonl")
	if err != nil {
		recordingError(w, err)
		return
	}
	meta, err := s.lib.Get(id)
	if err != nil {
		recordingError(w, err)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		recordingError(w, err)
		return
	}
	defer f.Close()
	set, err := replay.Labels(f, meta)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`-labels.json"`)
	writeJSON(w, http.StatusOK, set)
}
