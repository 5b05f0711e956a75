package replay

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/stream"
)

// Synthetic access units: the recorder only splits NAL units, it never
// decodes them.
var (
	keyAU   = []byte{0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1e, 0xaa, 0, 0, 0, 1, 0x68, 0xce, 0x38, 0x80, 0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00}
	deltaAU = []byte{0, 0, 0, 1, 0x41, 0x9a, 0x02}
)

// What a crash loses is the fragment in progress, so fragments must stay
// near Segment whenever the encoder answers a keyframe request within a
// few frames, however soon: an answer that came one frame before the
// fragment was due used to be ignored, and the fragment then ran on to the
// next keyframe (2 s and more in a live session).
func TestFragmentsStayNearSegment(t *testing.T) {
	const (
		fps    = 30
		frames = 10 * fps
		tick   = 90000 / fps
	)
	for delay := 1; delay <= 4; delay++ {
		t.Run(fmt.Sprintf("keyframe %d frames after the request", delay), func(t *testing.T) {
			lib, err := OpenLibrary(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var asked atomic.Int64 // the frame index at the request, -1: none
			asked.Store(-1)
			var cur atomic.Int64
			rec, err := lib.NewRecorder(RecorderConfig{Source: "synthetic", Block: true, RequestKeyframe: func() {
				if asked.Load() < 0 {
					asked.Store(cur.Load())
				}
			}})
			if err != nil {
				t.Fatal(err)
			}
			img := gocv.NewMat()
			defer img.Close()
			for i := 0; i < frames; i++ {
				cur.Store(int64(i))
				// An encoder with no keyframes of its own: only the first
				// and the requested ones.
				key := i == 0
				if a := asked.Load(); a >= 0 && int64(i)-a >= int64(delay) {
					key = true
					asked.Store(-1)
				}
				au := deltaAU
				if key {
					au = keyAU
				}
				rec.WriteFrame(&stream.EncodedFrame{AU: au, Key: key, RTPTime: uint32(i * tick), Seq: uint64(i), Captured: time.Now(), Image: img})
				// Let the writer take this frame before the encoder codes
				// the next, so the delay is exactly the one under test.
				want := float64(i) / fps
				for deadline := time.Now().Add(5 * time.Second); i > 0 && rec.Progress() < want-1e-3; {
					if time.Now().After(deadline) {
						t.Fatalf("recorder stuck at %.3f s, frame %d", rec.Progress(), i)
					}
					time.Sleep(100 * time.Microsecond)
				}
			}
			segs, err := readSegments(filepath.Join(lib.Dir(), rec.ID(), "segments.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rec.Close(); err != nil {
				t.Fatal(err)
			}
			if len(segs) < 8 {
				t.Fatalf("%d fragments in 10 s: %+v", len(segs), segs)
			}
			for _, s := range segs {
				if !s.Key || s.DurationS > 1+float64(delay)/fps+1e-6 {
					t.Errorf("fragment %d: %.3f s, starts with a keyframe: %v", s.N, s.DurationS, s.Key)
				}
			}
		})
	}
}
