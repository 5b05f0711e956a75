package replay

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Library is a directory of recordings.
type Library struct {
	dir string
	log *zap.Logger

	mu     sync.Mutex
	active map[string]*Recorder
}

// OpenLibrary opens (creating) dir and recovers recordings a crash left
// unfinished.
func OpenLibrary(dir string, log *zap.Logger) (*Library, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	l := &Library{dir: dir, log: log, active: map[string]*Recorder{}}
	if err := l.recoverAll(); err != nil {
		return nil, err
	}
	return l, nil
}

// Dir is the library's directory.
func (l *Library) Dir() string { return l.dir }

// NewRecorder starts a recording; feed it as a relay tap, then Close it.
func (l *Library) NewRecorder(cfg RecorderConfig) (*Recorder, error) {
	if cfg.Segment <= 0 {
		cfg.Segment = time.Second
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 90
	}
	if cfg.Logger == nil {
		cfg.Logger = l.log
	}
	cfg.Source = SourceID(cfg.Source)
	start := time.Now().UTC()
	suffix := make([]byte, 2)
	rand.Read(suffix)
	id := fmt.Sprintf("%s-%s-%s", start.Format("20060102T150405Z"), cfg.Source, hex.EncodeToString(suffix))
	dir := filepath.Join(l.dir, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	r := &Recorder{cfg: cfg, lib: l, id: id, dir: dir, log: cfg.Logger.With(zap.String("recording", id)), start: start,
		q: make(chan *recFrame, cfg.Queue), done: make(chan struct{})}
	var err error
	if r.timeline, err = os.Create(filepath.Join(dir, "timeline.jsonl")); err != nil {
		return nil, err
	}
	r.tw = bufio.NewWriterSize(r.timeline, 64<<10)
	if r.segs, err = os.Create(filepath.Join(dir, "segments.jsonl")); err != nil {
		r.timeline.Close()
		return nil, err
	}
	// meta.json with status "recording" marks it unfinished until Close.
	if err := writeMeta(dir, Meta{ID: id, Source: cfg.Source, Status: "recording", Start: start, Model: cfg.Model, LesionEvents: []LesionEvent{}}); err != nil {
		r.timeline.Close()
		r.segs.Close()
		return nil, err
	}
	l.mu.Lock()
	l.active[id] = r
	l.mu.Unlock()
	go r.run()
	r.log.Info("recording started")
	return r, nil
}

func (l *Library) finished(id string) {
	l.mu.Lock()
	delete(l.active, id)
	l.mu.Unlock()
}

// Get describes one recording.
func (l *Library) Get(id string) (Meta, error) {
	p, err := l.path(id, "meta.json")
	if err != nil {
		return Meta{}, err
	}
	m, err := readMeta(p)
	if errors.Is(err, os.ErrNotExist) {
		return m, ErrNotFound
	}
	if err != nil {
		return m, err
	}
	l.mu.Lock()
	if r, ok := l.active[id]; ok {
		m.DurationS = r.Progress()
	}
	l.mu.Unlock()
	return m, nil
}

// List describes every recording, newest first.
func (l *Library) List() ([]Meta, error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, err
	}
	out := []Meta{}
	for _, e := range ents {
		if !e.IsDir() || !idRE.MatchString(e.Name()) {
			continue
		}
		m, err := l.Get(e.Name())
		if err != nil {
			continue // a directory being created or removed
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.After(out[j].Start) })
	return out, nil
}

// File returns the path of a recording's file for serving: video.mp4,
// timeline.jsonl or thumb.jpg.
func (l *Library) File(id, name string) (string, error) {
	switch name {
	case "video.mp4", "timeline.jsonl", "thumb.jpg":
	default:
		return "", ErrNotFound
	}
	p, err := l.path(id, name)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", ErrNotFound
	}
	return p, nil
}

// Delete removes a finished recording.
func (l *Library) Delete(id string) error {
	p, err := l.path(id, "")
	if err != nil {
		return err
	}
	l.mu.Lock()
	_, active := l.active[id]
	l.mu.Unlock()
	if active {
		return ErrRecording
	}
	if _, err := os.Stat(p); err != nil {
		return ErrNotFound
	}
	return os.RemoveAll(p)
}
