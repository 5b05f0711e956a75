package server

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"sonolive/infer"
	"sonolive/models"
	"sonolive/organ"
)

// openOrganClassifier loads the wrong-preset guard's classifier that
// ai.organ_guard names; nil when there is none (off, or a build without
// the embedded one).
func (s *Server) openOrganClassifier() (*infer.OrganClassifier, error) {
	ai := s.cfg.AI
	opts := infer.Options{LibPath: ai.ORTLib, Threads: 1}
	switch ai.OrganGuard {
	case "none":
		return nil, nil
	case "":
		data, ok := models.Organ()
		if !ok {
			return nil, nil
		}
		c, err := infer.NewOrganClassifier(data, opts)
		if err != nil {
			return nil, fmt.Errorf("embedded organ classifier: %w", err)
		}
		return c, nil
	default:
		return infer.OpenOrganClassifier(ai.OrganGuard, opts)
	}
}

// startOrganGuard gives a session with a detector its wrong-preset guard.
// The guard is an extra: a classifier that cannot be loaded is logged and
// the session runs without it.
func (ses *Session) startOrganGuard() {
	if ses.models.detector() == nil {
		return
	}
	cls, err := ses.deps.openOrganClassifier()
	if err != nil {
		ses.log.Error("organ guard off: its classifier cannot be loaded", zap.Error(err))
		return
	}
	if cls == nil {
		return
	}
	ses.organCls = cls
	ses.organ = organ.New(organ.Config{
		Classifier: cls,
		Preset:     ses.models.organ,
		OnChange: func(st organ.State) {
			ses.deps.hub.broadcast(ses.id, event{Type: "organ", Organ: &st})
			ses.recordEvent("organ_guard", map[string]string{"preset": st.Preset, "mismatch": st.Mismatch, "p": fmt.Sprint(st.P)})
		},
		Logger: ses.log.Named("organ"),
	})
}

// runOrganGuard classifies until ctx ends, then frees the classifier.
func (ses *Session) runOrganGuard(ctx context.Context) (wait func()) {
	if ses.organ == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ses.organ.Run(ctx)
	}()
	return func() {
		<-done
		ses.organCls.Close()
	}
}
