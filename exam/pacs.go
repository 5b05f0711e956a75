package exam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"go.uber.org/zap"
)

// PACSState is where sending an exam to the PACS stands; it is kept with
// the exam, so a send interrupted by a restart goes on after it.
type PACSState struct {
	// State: pending (queued or being retried), sent, or failed (the
	// last try failed; it is tried again at Next).
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	Queued    time.Time `json:"queued"`
	Next      time.Time `json:"next,omitempty"`
	Sent      time.Time `json:"sent,omitempty"`
	Instances int       `json:"instances,omitempty"`
}

// PACS is a DICOMweb endpoint that takes STOW-RS.
type PACS struct {
	// URL is the DICOMweb base (Orthanc: http://host:8042/dicom-web).
	URL                string
	Username, Password string
	Client             *http.Client
}

// ErrPACS: the PACS refused or could not be reached.
var ErrPACS = errors.New("PACS")

// Store sends objects in one STOW-RS request (POST {URL}/studies,
// multipart/related of application/dicom). It fails unless the PACS
// stored every instance.
func (p PACS) Store(ctx context.Context, objs []DICOMObject) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, o := range objs {
		part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/dicom"}})
		if err != nil {
			return err
		}
		if _, err := part.Write(o.Data); err != nil {
			return err
		}
	}
	if err := mw.Close(); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(p.URL, "/")+"/studies", &body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPACS, err)
	}
	req.Header.Set("Content-Type", fmt.Sprintf(`multipart/related; type="application/dicom"; boundary=%s`, mw.Boundary()))
	req.Header.Set("Accept", "application/dicom+json")
	if p.Username != "" {
		req.SetBasicAuth(p.Username, p.Password)
	}
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Minute}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPACS, err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	// 202: stored with warnings (attributes coerced); the Failed SOP
	// Sequence says whether any instance was refused.
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("%w: STOW-RS answered %s: %s", ErrPACS, resp.Status, firstLine(reply))
	}
	var ds map[string]struct {
		Value []any `json:"Value"`
	}
	if json.Unmarshal(reply, &ds) == nil {
		if failed := ds["00081198"]; len(failed.Value) > 0 {
			return fmt.Errorf("%w: %d of %d instances refused", ErrPACS, len(failed.Value), len(objs))
		}
	}
	return nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Sender sends queued exams to the PACS, retrying with backoff until
// the PACS takes them: an exam is never dropped, and its state (tries,
// last error, next try) is on the exam for the pages to show.
type Sender struct {
	store *Store
	cfg   SenderConfig
	wake  chan struct{}
}

// SenderConfig wires a sender.
type SenderConfig struct {
	PACS PACS
	// Export makes an exam's DICOM objects (the server adds the cines).
	Export func(id string) ([]DICOMObject, error)
	// OnChange hears about each state change.
	OnChange func(Exam)
	// Backoff is the wait after the 1st, 2nd, ... failure; the last
	// repeats (default 10 s, 30 s, 1 min, 2 min, 5 min).
	Backoff []time.Duration
	Logger  *zap.Logger
}

// NewSender returns a sender; Run it.
func NewSender(store *Store, cfg SenderConfig) *Sender {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if len(cfg.Backoff) == 0 {
		cfg.Backoff = []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute}
	}
	return &Sender{store: store, cfg: cfg, wake: make(chan struct{}, 1)}
}

// Queue marks an exam to be sent (again) and wakes the sender.
func (s *Sender) Queue(id string) (Exam, error) {
	now := time.Now().UTC()
	e, err := s.store.Update(id, false, func(e *Exam) error {
		if e.Open() {
			return fmt.Errorf("%w: end the exam before sending it", ErrBad)
		}
		e.PACS = &PACSState{State: "pending", Queued: now, Next: now}
		return nil
	})
	if err != nil {
		return e, err
	}
	s.notify(e)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return e, nil
}

func (s *Sender) notify(e Exam) {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(e)
	}
}

// Run sends due exams until ctx ends; exams pending at a restart are
// picked up from the store.
func (s *Sender) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
		}
		next := s.sendDue(ctx)
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// sendDue sends every exam whose next try is due and says when to look
// again.
func (s *Sender) sendDue(ctx context.Context) time.Duration {
	all, err := s.store.List()
	if err != nil {
		s.cfg.Logger.Error("PACS: listing exams", zap.Error(err))
		return time.Minute
	}
	wait := time.Hour
	for _, e := range all {
		if ctx.Err() != nil {
			return time.Second
		}
		st := e.PACS
		if st == nil || st.State == "sent" {
			continue
		}
		if d := time.Until(st.Next); d > 0 {
			wait = min(wait, d)
			continue
		}
		if d := s.send(ctx, e.ID); d > 0 {
			wait = min(wait, d)
		}
	}
	return wait
}

// send tries one exam once; it returns the wait before the next try (0
// when sent).
func (s *Sender) send(ctx context.Context, id string) time.Duration {
	var queued time.Time
	if e, err := s.store.Get(id); err == nil && e.PACS != nil {
		queued = e.PACS.Queued
	}
	objs, err := s.cfg.Export(id)
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err = s.cfg.PACS.Store(sctx, objs)
		cancel()
	}
	if ctx.Err() != nil {
		return time.Second // stopping: the exam stays pending
	}
	var wait time.Duration
	e, uerr := s.store.Update(id, false, func(e *Exam) error {
		st := e.PACS
		if st == nil {
			st = &PACSState{}
			e.PACS = st
		}
		if !st.Queued.Equal(queued) {
			return nil // queued again meanwhile: that send goes next
		}
		st.Attempts++
		if err == nil {
			st.State, st.LastError, st.Sent, st.Next, st.Instances = "sent", "", time.Now().UTC(), time.Time{}, len(objs)
			return nil
		}
		wait = s.cfg.Backoff[min(st.Attempts-1, len(s.cfg.Backoff)-1)]
		st.State, st.LastError, st.Next = "failed", err.Error(), time.Now().Add(wait).UTC()
		return nil
	})
	if uerr != nil {
		s.cfg.Logger.Error("PACS: saving the send state", zap.String("exam", id), zap.Error(uerr))
		return time.Minute
	}
	if err != nil {
		s.cfg.Logger.Warn("PACS: send failed; retrying", zap.String("exam", id), zap.Int("attempts", e.PACS.Attempts),
			zap.Duration("retry_in", wait), zap.Error(err))
	} else {
		s.cfg.Logger.Info("PACS: exam sent", zap.String("exam", id), zap.Int("instances", len(objs)), zap.Int("attempts", e.PACS.Attempts))
	}
	s.notify(e)
	return wait
}
