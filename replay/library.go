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

// Library is a directory of recordings. Several processes may record into
// one; the first to open it owns it (lock.go).
type Library struct {
	dir   string
	log   *zap.Logger
	owner *fileLock // nil: another process owns the library

	mu     sync.Mutex
	active map[string]*Recorder
}

// OpenLibrary opens (creating) dir. The process that gets the library lock
// owns the library: it recovers recordings whose writer died and enforces
// retention. Any other process records beside the owner and touches
// nothing it did not write.
func OpenLibrary(dir string, log *zap.Logger) (*Library, error) {
	if log == nil {
		log = zap.NewNop()
	}
	// Recordings hold patient images: not for other local users.
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	l := &Library{dir: dir, log: log, active: map[string]*Recorder{}}
	lock, err := tryLock(filepath.Join(dir, libraryLock))
	switch {
	case errors.Is(err, ErrLocked):
		log.Info("library owned by another process: recording beside it, no recovery or retention here",
			zap.String("dir", dir), zap.String("owner_pid", holder(filepath.Join(dir, libraryLock))))
		return l, nil
	case err != nil:
		return nil, fmt.Errorf("recordings: %w", err)
	}
	l.owner = lock
	if err := l.recoverAll(); err != nil {
		lock.release()
		return nil, err
	}
	return l, nil
}

// Owner reports whether this process owns the library.
func (l *Library) Owner() bool { return l.owner != nil }

// Close gives up ownership; recordings in progress must be closed first.
func (l *Library) Close() error {
	l.owner.release()
	return nil
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
	// The recording is made under a staging name that recovery ignores,
	// locked, and only then renamed into the library: no other process
	// can see it without its writer lock held.
	staging := filepath.Join(l.dir, stagingPrefix+id)
	dir := filepath.Join(l.dir, id)
	if err := os.Mkdir(staging, 0o750); err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	lock, err := tryLock(filepath.Join(staging, writerLock))
	if err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("recording: %w", err)
	}
	r := &Recorder{cfg: cfg, lib: l, id: id, dir: dir, lock: lock, log: cfg.Logger.With(zap.String("recording", id)), start: start,
		q: make(chan *recFrame, cfg.Queue), done: make(chan struct{})}
	r.firstTS.Store(-1)
	if cfg.Voices {
		r.voiceQ = make(chan voicePacket, voiceQueue)
		r.voiceDone = make(chan struct{})
	}
	fail := func(err error) (*Recorder, error) {
		if r.timeline != nil {
			r.timeline.Close()
		}
		if r.segs != nil {
			r.segs.Close()
		}
		os.RemoveAll(staging)
		lock.release()
		return nil, fmt.Errorf("recording: %w", err)
	}
	if r.timeline, err = createFile(filepath.Join(staging, "timeline.jsonl")); err != nil {
		return fail(err)
	}
	r.tw = bufio.NewWriterSize(r.timeline, 64<<10)
	if r.segs, err = createFile(filepath.Join(staging, "segments.jsonl")); err != nil {
		return fail(err)
	}
	// meta.json with status "recording" marks it unfinished until Close.
	if err := writeMeta(staging, r.base()); err != nil {
		return fail(err)
	}
	if err := os.Rename(staging, dir); err != nil {
		return fail(err)
	}
	if err := syncDir(l.dir); err != nil {
		return fail(err)
	}
	l.mu.Lock()
	l.active[id] = r
	l.mu.Unlock()
	go r.run()
	if r.voiceQ != nil {
		go r.runVoices()
	}
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
	if m.Status != "recording" {
		return m, nil
	}
	// A recording in progress: how far it got, in this process or another.
	l.mu.Lock()
	r, ok := l.active[id]
	l.mu.Unlock()
	if ok {
		m.DurationS, m.Bytes = r.Progress(), r.Bytes()
	} else {
		m.DurationS, m.Bytes = progressOnDisk(filepath.Dir(p))
	}
	m.Captures = countCaptures(filepath.Dir(p))
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
// timeline.jsonl, thumb.jpg or a capture's picture.
func (l *Library) File(id, name string) (string, error) {
	switch {
	case name == "video.mp4", name == "timeline.jsonl", name == "thumb.jpg", captureFile.MatchString(name):
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

// Delete removes a finished recording. A recording whose writer is alive,
// in this process or another, is refused with ErrRecording.
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
	lock, err := tryLock(filepath.Join(p, writerLock))
	if errors.Is(err, ErrLocked) {
		return ErrRecording
	}
	if err != nil {
		return err
	}
	defer lock.release()
	return os.RemoveAll(p)
}
