package replay

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Errors callers map to HTTP statuses.
var (
	ErrNotFound  = errors.New("no such recording")
	ErrRecording = errors.New("recording in progress")
)

// Meta describes a recording: meta.json, and the API's recording object.
type Meta struct {
	ID           string        `json:"id"`
	Source       string        `json:"source"`
	Status       string        `json:"status"` // recording, complete, recovered
	Start        time.Time     `json:"start"`
	DurationS    float64       `json:"duration_s"`
	Bytes        int64         `json:"bytes"`
	Width        int           `json:"width"`
	Height       int           `json:"height"`
	Frames       int           `json:"frames"`
	Detections   int           `json:"detections"`
	Model        string        `json:"model,omitempty"`
	LesionEvents []LesionEvent `json:"lesion_events"`
}

// LesionEvent is one tracked finding over its life in the recording.
type LesionEvent struct {
	TrackID       uint64   `json:"track_id"`
	Class         string   `json:"class"`
	FirstS        float64  `json:"first_s"`
	LastS         float64  `json:"last_s"`
	MaxScore      float64  `json:"max_score"`
	MaxMalignancy *float64 `json:"max_malignancy,omitempty"`
	Frames        int      `json:"frames"`
}

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

var idRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[a-z0-9_-]{1,32}-[0-9a-f]{4}$`)

// path returns a file of a recording, refusing ids that are not ours (no
// path tricks reach the disk).
func (l *Library) path(id, file string) (string, error) {
	if !idRE.MatchString(id) {
		return "", ErrNotFound
	}
	return filepath.Join(l.dir, id, file), nil
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

// Enforce deletes the oldest finished recordings until none is older
// than maxAge and all together use at most maxBytes (0: no limit).
func (l *Library) Enforce(maxAge time.Duration, maxBytes int64) (removed []string, err error) {
	list, err := l.List()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, m := range list {
		total += m.Bytes
	}
	for i := len(list) - 1; i >= 0; i-- { // oldest first
		m := list[i]
		if m.Status == "recording" {
			continue
		}
		old := maxAge > 0 && time.Since(m.Start) > maxAge
		big := maxBytes > 0 && total > maxBytes
		if !old && !big {
			continue
		}
		if err := l.Delete(m.ID); err != nil {
			return removed, err
		}
		total -= m.Bytes
		removed = append(removed, m.ID)
		l.log.Info("recording removed by retention", zap.String("recording", m.ID), zap.Bool("age", old), zap.Bool("size", big))
	}
	return removed, nil
}

// recoverAll finishes recordings whose process died.
func (l *Library) recoverAll() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() || !idRE.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(l.dir, e.Name())
		m, err := readMeta(filepath.Join(dir, "meta.json"))
		if err == nil && m.Status != "recording" {
			continue
		}
		source, start := m.Source, m.Start
		if err != nil {
			source, start = "", time.Time{}
		}
		rm, err := finish(dir, e.Name(), source, m.Model, start, "recovered", l.log)
		if errors.Is(err, errEmpty) {
			l.log.Warn("unfinished recording had no complete segment; removed", zap.String("recording", e.Name()))
			os.RemoveAll(dir)
			continue
		}
		if err != nil {
			l.log.Error("recovering recording", zap.String("recording", e.Name()), zap.Error(err))
			continue
		}
		l.log.Info("recording recovered", zap.String("recording", rm.ID), zap.Float64("duration_s", rm.DurationS))
	}
	return nil
}

var errEmpty = errors.New("no complete segment")

// finish assembles video.mp4 from init.mp4 and the finished segments,
// cuts the timeline at the video's end, computes the lesion events and
// writes meta.json. It is the end of a recording and of a recovery.
func finish(dir, id, source, model string, start time.Time, status string, log *zap.Logger) (Meta, error) {
	m := Meta{ID: id, Source: source, Status: status, Start: start, Model: model, LesionEvents: []LesionEvent{}}
	tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	for _, t := range tmps {
		os.Remove(t)
	}
	segs, err := readSegments(filepath.Join(dir, "segments.jsonl"))
	if err != nil {
		return m, err
	}
	// Only segments whose file made it to disk count.
	var ok []segmentLine
	for _, s := range segs {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("seg-%05d.m4s", s.N))); err == nil {
			ok = append(ok, s)
		}
	}
	initPath := filepath.Join(dir, "init.mp4")
	// Segments and their index go only after meta.json is final, so an
	// interrupted finish is simply redone.
	if len(ok) == 0 {
		return m, errEmpty
	}
	if err := assemble(dir, initPath, ok); err != nil {
		return m, err
	}
	var dur uint64
	for _, s := range ok {
		dur += uint64(s.Duration)
	}
	m.DurationS = math.Round(float64(dur)/timescale*1e3) / 1e3
	if err := cutTimeline(filepath.Join(dir, "timeline.jsonl"), m.DurationS, &m); err != nil {
		return m, err
	}
	if fi, err := os.Stat(filepath.Join(dir, "video.mp4")); err == nil {
		m.Bytes = fi.Size()
	}
	if w, h, err := videoSize(initPath); err == nil {
		m.Width, m.Height = w, h
	}
	if m.Start.IsZero() {
		if fi, err := os.Stat(dir); err == nil {
			m.Start = fi.ModTime().UTC()
		}
	}
	if err := writeMeta(dir, m); err != nil {
		return m, err
	}
	for _, s := range ok {
		os.Remove(filepath.Join(dir, fmt.Sprintf("seg-%05d.m4s", s.N)))
	}
	os.Remove(filepath.Join(dir, "segments.jsonl"))
	return m, nil
}

// assemble writes video.mp4 = init (with the duration) + sidx + fragments.
func assemble(dir, initPath string, segs []segmentLine) error {
	initB, err := os.ReadFile(initPath)
	if err != nil {
		return fmt.Errorf("init segment: %w", err)
	}
	info, err := parseInit(initB)
	if err != nil {
		return err
	}
	var total uint64
	entries := make([]sidxEntry, len(segs))
	for i, s := range segs {
		entries[i] = sidxEntry{size: uint32(s.Bytes), duration: s.Duration, sap: s.Key}
		total += uint64(s.Duration)
	}
	info.duration = total
	initB, err = initSegment(info)
	if err != nil {
		return err
	}
	return writeSync(filepath.Join(dir, "video.mp4"), func(w io.Writer) error {
		if _, err := w.Write(initB); err != nil {
			return err
		}
		if _, err := w.Write(sidx(entries)); err != nil {
			return err
		}
		for _, s := range segs {
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("seg-%05d.m4s", s.N)))
			if err != nil {
				return err
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
}

func readSegments(path string) ([]segmentLine, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []segmentLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s segmentLine
		if json.Unmarshal(sc.Bytes(), &s) != nil {
			break // a torn last line
		}
		out = append(out, s)
	}
	return out, nil
}

// cutTimeline keeps the entries inside the video, rewrites the file when
// it held more (a crash), and fills m's counts and lesion events.
func cutTimeline(path string, durationS float64, m *Meta) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var kept []byte
	cut := false
	events := map[uint64]*LesionEvent{}
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var e Entry
			if json.Unmarshal(line, &e) != nil || e.T >= durationS+1e-6 {
				cut = true
			} else if e.Event != "" {
				kept = append(kept, line...)
			} else {
				kept = append(kept, line...)
				m.Frames++
				m.Detections += len(e.Detections)
				for _, d := range e.Detections {
					ev, ok := events[d.TrackID]
					if !ok {
						ev = &LesionEvent{TrackID: d.TrackID, Class: d.Class, FirstS: e.T}
						events[d.TrackID] = ev
					}
					ev.LastS = e.T
					ev.Frames++
					ev.MaxScore = max(ev.MaxScore, d.Score)
					if d.Malignancy != nil && (ev.MaxMalignancy == nil || *d.Malignancy > *ev.MaxMalignancy) {
						v := *d.Malignancy
						ev.MaxMalignancy = &v
					}
				}
			}
		} else if len(line) > 0 {
			cut = true // a torn last line
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return err
		}
	}
	f.Close()
	for _, ev := range events {
		m.LesionEvents = append(m.LesionEvents, *ev)
	}
	sort.Slice(m.LesionEvents, func(i, j int) bool { return m.LesionEvents[i].FirstS < m.LesionEvents[j].FirstS })
	if cut {
		return writeFileSync(path, kept)
	}
	return nil
}

func writeMeta(dir string, m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, "meta.json"), append(b, '\n'))
}

func readMeta(path string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// SourceID turns any source name ("file:clip.mp4") into the id form used
// in recording ids and URLs: lower case, [a-z0-9_-], at most 32.
func SourceID(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	out := strings.Trim(string(b), "-")
	if len(out) > 32 {
		out = out[:32]
	}
	if out == "" {
		out = "source"
	}
	return out
}

// Source is the source id encoded in a recording id.
func Source(id string) string {
	if !idRE.MatchString(id) {
		return ""
	}
	rest := id[strings.IndexByte(id, '-')+1:]
	return rest[:strings.LastIndexByte(rest, '-')]
}
