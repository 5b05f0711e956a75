package replay

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzTimelineLines: any timeline (torn, garbled, out of order) is read
// without a panic, and only whole entries inside the video are kept.
func FuzzTimelineLines(f *testing.F) {
	f.Add([]byte(`{"t":0,"seq":1,"capture_unix_ms":1,"stale":false,"burned_in":false}`+"\n"+`{"t":0.033,"seq":2,"detections":[{"track_id":1,"class":"lesion","score":0.9}]}`+"\n"+`{"t":0.06`), 0.05)
	f.Add([]byte(`{"t":1,"event":"viewer_joined","data":{"role":"expert"}}`+"\n"), 2.0)
	f.Add([]byte("\n\n{}\n[1]\n"), 1.0)
	f.Fuzz(func(t *testing.T, data []byte, dur float64) {
		err := scanLines(bytes.NewReader(data), dur, func(line []byte, e *Entry) error {
			if e != nil && (line[len(line)-1] != '\n' || !(e.T < dur+1e-6)) {
				t.Fatalf("kept %q for a %v s video", line, dur)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzSegmentIndex and FuzzInit: the recovery's other readers.
func FuzzSegmentIndex(f *testing.F) {
	f.Add([]byte(`{"n":1,"start_s":0,"duration_s":1,"bytes":100,"frames":30,"duration_ticks":90000,"key":true}` + "\n" + `{"n":2,`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := parseSegments(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzInit(f *testing.F) {
	if b, err := initSegment(trackInfo{sps: []byte{0x67, 0x42, 0xe0, 0x1f, 0xda}, pps: []byte{0x68, 0xce, 0x3c, 0x80}, width: 320, height: 240}); err == nil {
		f.Add(b)
	}
	f.Add([]byte("\x00\x00\x00\x08ftyp"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parseInit(data)
	})
}

// FuzzRecoverDir: a crashed recording's directory with arbitrary files (a
// torn index, a garbled timeline, a broken init segment, a segment of
// noise) is recovered or removed, never a panic, and what is listed
// afterwards is consistent.
func FuzzRecoverDir(f *testing.F) {
	f.Add([]byte(`{"id":"x","status":"recording"}`), []byte(`{"n":1,"duration_ticks":3000,"bytes":4,"key":true}`+"\n"), []byte(`{"t":0}`+"\n"), []byte{}, []byte("moof"))
	f.Fuzz(func(t *testing.T, meta, segs, timeline, init, seg []byte) {
		dir := t.TempDir()
		id := "20261202T010203Z-phantom-abcd"
		rd := filepath.Join(dir, id)
		os.Mkdir(rd, 0o750)
		for name, b := range map[string][]byte{"meta.json": meta, "segments.jsonl": segs, "timeline.jsonl": timeline, "init.mp4": init, "seg-00001.m4s": seg} {
			os.WriteFile(filepath.Join(rd, name), b, 0o640)
		}
		lib, err := OpenLibrary(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer lib.Close()
		m, err := lib.Get(id)
		if errors.Is(err, ErrNotFound) {
			return
		}
		if err != nil {
			return // a meta.json that is not JSON is left for a person
		}
		if m.Frames < 0 || m.DurationS < 0 {
			t.Fatalf("%+v", m)
		}
	})
}
