package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sonolive/capture"
	"sonolive/frame"
	"sonolive/overlay"
	"sonolive/stream"
)

// record feeds n phantom frames (30 fps on the frames' own clock, as fast
// as the encoder goes) through a relay into a recorder. The phantom's
// ground truth stands in for detections, one track per lesion.
func record(t *testing.T, lib *Library, n int, closeIt bool) (*Recorder, Meta) {
	return recordWith(t, lib, n, closeIt, nil)
}

// recordWith calls during(i, rec) before frame i.
func recordWith(t *testing.T, lib *Library, n int, closeIt bool, during func(int, *Recorder)) (*Recorder, Meta) {
	t.Helper()
	f := newFeed(t, lib)
	f.during = during
	f.feed(n)
	if !closeIt {
		f.relay.RemoveTap(f.rec)
		return f.rec, Meta{}
	}
	return f.rec, f.close()
}

// feed is a recording in progress that a test adds phantom frames to.
type feed struct {
	t      *testing.T
	relay  *stream.Relay
	rec    *Recorder
	src    capture.Source
	t0     time.Time
	n      int
	during func(int, *Recorder)
}

func newFeed(t *testing.T, lib *Library) *feed {
	t.Helper()
	relay, err := stream.New(stream.Config{Source: "phantom", Encoder: stream.EncoderConfig{Bitrate: 500_000, FPS: 30, KeyframeInterval: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	rec, err := lib.NewRecorder(RecorderConfig{Source: "phantom", Model: "truth", RequestKeyframe: relay.RequestKeyframe})
	if err != nil {
		t.Fatal(err)
	}
	relay.AddTap(rec)
	src := capture.NewPhantom(capture.PhantomConfig{Seed: 5, Width: 320, Height: 240, Lesions: 2})
	return &feed{t: t, relay: relay, rec: rec, src: src, t0: time.Now()}
}

// feed adds n frames (30 fps on the frames' own clock, as fast as the
// encoder goes). The phantom's ground truth stands in for detections,
// one track per lesion.
func (fd *feed) feed(n int) {
	t := fd.t
	t.Helper()
	for end := fd.n + n; fd.n < end; fd.n++ {
		f, err := fd.src.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		f.Captured = fd.t0.Add(time.Duration(fd.n) * time.Second / 30)
		if fd.during != nil {
			fd.during(fd.n, fd.rec)
		}
		for k, b := range f.Truth {
			f.Detections = append(f.Detections, frame.Detection{Box: b, Class: "lesion", Score: 0.8, Malignancy: -1, TrackID: uint64(k + 1)})
		}
		meta := overlay.NewMetadata(f)
		fd.relay.Write(f, &meta)
		f.Close()
		// The writer goroutine keeps up with a real source; let it here.
		for len(fd.rec.q) > 30 {
			time.Sleep(time.Millisecond)
		}
	}
}

func (fd *feed) close() Meta {
	fd.t.Helper()
	fd.relay.RemoveTap(fd.rec)
	m, err := fd.rec.Close()
	if err != nil {
		fd.t.Fatal(err)
	}
	return m
}

// ffprobe returns the video's duration and frame count; it fails the test
// if ffprobe rejects the file.
func ffprobe(t *testing.T, path string) (float64, int) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames,codec_name,width,height:format=duration", "-of", "default=nw=1", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, out)
	}
	var dur float64
	var frames int
	for _, l := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "duration":
			dur, _ = strconv.ParseFloat(v, 64)
		case "nb_read_frames":
			frames, _ = strconv.Atoi(v)
		case "codec_name":
			if v != "h264" {
				t.Fatalf("codec %s", v)
			}
		}
	}
	return dur, frames
}

func timelineLen(t *testing.T, path string) (n int, last float64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("timeline line %d: %v", n+1, err)
		}
		n++
		last = e.T
	}
	return n, last
}

func TestRecordTenSeconds(t *testing.T) {
	lib, err := OpenLibrary(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, m := record(t, lib, 300, true)
	if m.Status != "complete" || m.Frames != 300 || m.Width != 320 || m.Height != 240 {
		t.Fatalf("meta: %+v", m)
	}
	if m.DurationS < 9.95 || m.DurationS > 10.05 {
		t.Fatalf("duration %.3f s, want 10", m.DurationS)
	}
	if len(m.LesionEvents) == 0 || m.Detections == 0 {
		t.Fatalf("no lesion events: %+v", m)
	}
	for _, ev := range m.LesionEvents {
		if ev.MaxScore != 0.8 || ev.LastS < ev.FirstS || ev.Frames == 0 {
			t.Fatalf("event %+v", ev)
		}
	}
	video, err := lib.File(m.ID, "video.mp4")
	if err != nil {
		t.Fatal(err)
	}
	dur, frames := ffprobe(t, video)
	if frames != 300 || dur < 9.9 || dur > 10.1 {
		t.Fatalf("ffprobe: %d frames, %.3f s", frames, dur)
	}
	// Every fragment starts with a keyframe, so players can seek into any.
	b, _ := os.ReadFile(video)
	i := bytes.Index(b, []byte("sidx"))
	if i < 0 {
		t.Fatal("no sidx")
	}
	refs := int(binary.BigEndian.Uint16(b[i+4+4+4+4+16+2:]))
	if refs < 5 { // about one per second; how many depends on the encoder's own keyframes too
		t.Fatalf("%d fragments in 10 s", refs)
	}
	for k := 0; k < refs; k++ {
		e := b[i+4+4+4+4+16+4+12*k:]
		if binary.BigEndian.Uint32(e[8:])>>31 != 1 {
			t.Fatalf("fragment %d does not start with a keyframe", k)
		}
	}
	if n, last := timelineLen(t, filepath.Join(lib.Dir(), m.ID, "timeline.jsonl")); n != 300 || last < 9.9 {
		t.Fatalf("timeline: %d entries, last t %.3f", n, last)
	}
	for _, f := range []string{"thumb.jpg", "timeline.jsonl"} {
		if _, err := lib.File(m.ID, f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if segs, _ := filepath.Glob(filepath.Join(lib.Dir(), m.ID, "seg-*")); len(segs) != 0 {
		t.Errorf("segments left after finishing: %v", segs)
	}
	list, err := lib.List()
	if err != nil || len(list) != 1 || list[0].ID != m.ID {
		t.Fatalf("list: %v %v", list, err)
	}
}

// A crash mid-recording: the directory as it is on disk at that moment is
// recovered on the next start, losing at most the fragment in progress.
func TestRecoverAfterCrash(t *testing.T) {
	dir := t.TempDir()
	lib, err := OpenLibrary(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := record(t, lib, 165, false) // 5.5 s; the recorder is never closed
	// Wait until the writer took everything queued (what the OS has).
	for len(rec.q) > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	crashed := t.TempDir()
	if err := os.CopyFS(crashed, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	// A torn segment being written at the crash.
	os.WriteFile(filepath.Join(crashed, rec.ID(), "seg-00099.m4s.tmp"), []byte("torn"), 0o644)

	lib2, err := OpenLibrary(crashed, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := lib2.Get(rec.ID())
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != "recovered" {
		t.Fatalf("status %q", m.Status)
	}
	lost := 165.0/30 - m.DurationS
	t.Logf("recovered %.2f s of 5.50 s; lost %.2f s", m.DurationS, lost)
	if lost < 0 || lost > 2.1 {
		t.Fatalf("lost %.2f s", lost)
	}
	video, _ := lib2.File(m.ID, "video.mp4")
	dur, frames := ffprobe(t, video)
	if frames != m.Frames || dur < m.DurationS-0.05 || dur > m.DurationS+0.05 {
		t.Fatalf("ffprobe %d frames %.3f s; meta %d frames %.3f s", frames, dur, m.Frames, m.DurationS)
	}
	if n, last := timelineLen(t, filepath.Join(crashed, m.ID, "timeline.jsonl")); n != m.Frames || last >= m.DurationS {
		t.Fatalf("timeline not cut: %d entries, last %.3f, video %.3f s", n, last, m.DurationS)
	}
	rec.Close()
}

func TestLibraryRejectsAndRetains(t *testing.T) {
	lib, err := OpenLibrary(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "..", "../../etc", "20261123T170102Z-phantom-zzzz", "x/y"} {
		if _, err := lib.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v", id, err)
		}
		if err := lib.Delete(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete(%q) = %v", id, err)
		}
	}
	if _, err := lib.File("20261123T170102Z-phantom-abcd", "../../secret"); !errors.Is(err, ErrNotFound) {
		t.Errorf("File with a path: %v", err)
	}
	_, a := record(t, lib, 45, true)
	time.Sleep(1100 * time.Millisecond) // ids are per second
	_, b := record(t, lib, 45, true)
	if Source(a.ID) != "phantom" {
		t.Fatalf("Source(%q) = %q", a.ID, Source(a.ID))
	}
	removed, err := lib.Enforce(0, b.Bytes+1)
	if err != nil || len(removed) != 1 || removed[0] != a.ID {
		t.Fatalf("retention removed %v (%v), want the older %s", removed, err, a.ID)
	}
	if _, err := lib.Get(b.ID); err != nil {
		t.Fatalf("newer recording gone: %v", err)
	}
}

// Session events share the timeline but are not frames.
func TestSessionEventsInTimeline(t *testing.T) {
	lib, err := OpenLibrary(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, m := recordWith(t, lib, 60, true, func(i int, r *Recorder) {
		if i == 30 {
			r.Event("viewer_joined", map[string]string{"viewer": "v1", "role": "expert"})
		}
	})
	if m.Frames != 60 {
		t.Fatalf("frames %d, want 60 (events are not frames)", m.Frames)
	}
	b, _ := os.ReadFile(filepath.Join(lib.Dir(), m.ID, "timeline.jsonl"))
	var ev Entry
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e Entry
		json.Unmarshal([]byte(l), &e)
		if e.Event != "" {
			ev = e
		}
	}
	if ev.Event != "viewer_joined" || ev.Data["role"] != "expert" || ev.T < 0.9 || ev.T > 1.1 {
		t.Fatalf("event line: %+v", ev)
	}
}
