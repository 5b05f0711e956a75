package replay

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"sonolive/overlay"
)

// Captures are the key frames someone in a session chose to keep: each is
// the picture as it was streamed, the same picture with the findings and
// the marks drawn on it, and what was on it, saved into the recording in
// progress. They are listed with the recording and shown in the replay at
// their time. The files are capture-NNN.jpg and capture-NNN-annotated.jpg;
// captures.jsonl indexes them, one line each.

// ErrCaptureClosed: the recording ended before the capture was saved.
var ErrCaptureClosed = errors.New("the recording has ended")

// maxCaptures bounds one recording's captures (a stuck button must not
// fill the disk).
const maxCaptures = 999

// Capture describes one key frame.
type Capture struct {
	// Recording is the recording (part) it was saved into, N its number
	// there from 1.
	Recording string `json:"recording"`
	N         int    `json:"n"`
	// RTPTime names the frame (the stream's RTP timestamp); T is its time
	// in the recording's video, in seconds.
	RTPTime uint32    `json:"rtp_ts"`
	T       float64   `json:"t"`
	At      time.Time `json:"at"`
	// By is the role of who asked for it, Name the invite's label.
	By   string `json:"by"`
	Name string `json:"name,omitempty"`
	// Clean: the picture has no findings burned in (burn-in was off), so
	// capture-NNN.jpg is the image as the machine showed it.
	Clean      bool              `json:"clean"`
	Width      int               `json:"width"`
	Height     int               `json:"height"`
	Detections []overlay.DetMeta `json:"detections"`
	// Marks are the consult marks on the picture when it was kept, as
	// forwarded (docs/streaming.md).
	Marks []json.RawMessage `json:"marks,omitempty"`
}

// captureFile names a capture's pictures.
var captureFile = regexp.MustCompile(`^capture-[0-9]{3}(-annotated)?\.jpg$`)

func capturePicture(n int, annotated bool) string {
	if annotated {
		return fmt.Sprintf("capture-%03d-annotated.jpg", n)
	}
	return fmt.Sprintf("capture-%03d.jpg", n)
}

// SaveCapture writes a key frame into the recording: picture (JPEG, as
// streamed) and annotated (JPEG, findings and marks drawn). It fills in
// N and T and returns c as saved. Pictures reach the disk before the index
// line, so a crash leaves at most unindexed pictures, never a line without
// them.
func (r *Recorder) SaveCapture(c Capture, picture, annotated []byte) (Capture, error) {
	r.closeMu.RLock()
	defer r.closeMu.RUnlock()
	if r.closed {
		return c, ErrCaptureClosed
	}
	r.capMu.Lock()
	defer r.capMu.Unlock()
	if r.captures >= maxCaptures {
		return c, fmt.Errorf("capture: this recording has %d already", maxCaptures)
	}
	c.N = r.captures + 1
	c.Recording = r.id
	if first := r.firstTS.Load(); first >= 0 {
		// The timeline's clock: decode time from the first frame, which
		// follows the RTP clock.
		c.T = math.Max(0, math.Round(float64(int32(c.RTPTime-uint32(first)))/timescale*1e3)/1e3)
	}
	if err := writeFileSync(filepath.Join(r.dir, capturePicture(c.N, false)), picture); err != nil {
		return c, fmt.Errorf("capture: %w", err)
	}
	if err := writeFileSync(filepath.Join(r.dir, capturePicture(c.N, true)), annotated); err != nil {
		return c, fmt.Errorf("capture: %w", err)
	}
	line, err := json.Marshal(c)
	if err != nil {
		return c, err
	}
	if err := appendLineSync(filepath.Join(r.dir, "captures.jsonl"), line); err != nil {
		return c, fmt.Errorf("capture: %w", err)
	}
	r.captures = c.N
	return c, nil
}

// Captures lists a recording's key frames in the order they were taken.
func (l *Library) Captures(id string) ([]Capture, error) {
	p, err := l.path(id, "captures.jsonl")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Dir(p)); err != nil {
		return nil, ErrNotFound
	}
	return readCaptures(p)
}

// readCaptures reads an index, skipping lines that do not parse or whose
// pictures are missing (a torn last line after a crash).
func readCaptures(path string) ([]Capture, error) {
	out := []Capture{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir := filepath.Dir(path)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	seen := map[int]bool{}
	for sc.Scan() {
		var c Capture
		if json.Unmarshal(sc.Bytes(), &c) != nil || c.N <= 0 || c.N > maxCaptures || seen[c.N] || !havePictures(dir, c.N) {
			continue
		}
		seen[c.N] = true
		out = append(out, c)
	}
	return out, sc.Err()
}

func havePictures(dir string, n int) bool {
	for _, a := range []bool{false, true} {
		if fi, err := os.Stat(filepath.Join(dir, capturePicture(n, a))); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// countCaptures is how many captures a recording directory indexes.
func countCaptures(dir string) int {
	cs, _ := readCaptures(filepath.Join(dir, "captures.jsonl"))
	return len(cs)
}
