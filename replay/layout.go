package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"sonolive/internal/durable"
)

// Errors callers map to HTTP statuses.
var (
	ErrNotFound  = errors.New("no such recording")
	ErrRecording = errors.New("recording in progress")
)

// Meta describes a recording: meta.json, and the API's recording object.
type Meta struct {
	ID         string    `json:"id"`
	Source     string    `json:"source"`
	Status     string    `json:"status"` // recording, complete, recovered
	Start      time.Time `json:"start"`
	DurationS  float64   `json:"duration_s"`
	Bytes      int64     `json:"bytes"`
	Width      int       `json:"width"`
	Height     int       `json:"height"`
	Frames     int       `json:"frames"`
	Detections int       `json:"detections"`
	Model      string    `json:"model,omitempty"`
	// Part numbers the parts of one live session from 1; Previous is the
	// id of the part before (a long session, or one whose frame size
	// changed, is recorded in parts).
	Part     int    `json:"part,omitempty"`
	Previous string `json:"previous,omitempty"`
	// Exam is the exam the recording belongs to; empty for one made
	// between exams (record.between_exams).
	Exam         string        `json:"exam,omitempty"`
	LesionEvents []LesionEvent `json:"lesion_events"`
	// Captures counts the key frames kept (Library.Captures lists them).
	Captures int `json:"captures"`
	// Voices counts the people whose voices are mixed into the video
	// (record.voices); 0: the video has no sound.
	Voices int `json:"voices,omitempty"`
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

var sourceIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

var idRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[a-z0-9_-]{1,32}-[0-9a-f]{4}$`)

// path returns a file of a recording, refusing ids that are not ours (no
// path tricks reach the disk).
func (l *Library) path(id, file string) (string, error) {
	if !idRE.MatchString(id) {
		return "", ErrNotFound
	}
	return filepath.Join(l.dir, id, file), nil
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
	// A configured id is kept exactly, trailing '-' and all: two sources
	// must never share one id in the library (tokens are per source).
	if sourceIDRE.MatchString(s) {
		return s
	}
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

// writeFileSync writes a library file durably (internal/durable).
func writeFileSync(path string, b []byte) error { return durable.WriteFile(path, b, fileMode) }

// writeSync is writeFileSync for content written by fill.
func writeSync(path string, fill func(io.Writer) error) error {
	return durable.Write(path, fileMode, fill)
}

// appendLineSync appends one line to an index file, durably.
func appendLineSync(path string, line []byte) error { return durable.AppendLine(path, line, fileMode) }

func syncDir(dir string) error { return durable.SyncDir(dir) }

// fileMode is every library file's mode: recordings hold patient images,
// so they are for the service's user (and group) only.
const fileMode = 0o640

// createFile creates (truncating) a library file with fileMode.
func createFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, fileMode)
}

// stagingPrefix names a recording directory while it is being created;
// recovery and listing ignore it.
const stagingPrefix = ".new-"

// progressOnDisk is a recording in progress's length (from the index of
// its finished segments) and size, as far as another process can tell.
func progressOnDisk(dir string) (durationS float64, bytes int64) {
	segs, _ := readSegments(filepath.Join(dir, "segments.jsonl"))
	var ticks uint64
	for _, s := range segs {
		ticks += uint64(s.Duration)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			bytes += fi.Size()
		}
	}
	return math.Round(float64(ticks)/timescale*1e3) / 1e3, bytes
}
