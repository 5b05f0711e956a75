//go:build matprofile

package pipeline

import (
	"context"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/capture"
	"sonolive/infer"
)

// The gocv Mat count must not grow across a long run: every frame, copy and
// scratch Mat is freed, whether it was shown, dropped or carried stale.
func TestNoMatLeak1000Frames(t *testing.T) {
	run := func(frames int) {
		o := newOracle(3 * time.Millisecond)
		ph := capture.NewPhantom(capture.PhantomConfig{Seed: 5, Lesions: 2, Frames: frames, Width: 320, Height: 240, FPS: 30, SweepPeriod: 4 * time.Second, Geometry: "sector", Text: true})
		p, err := New(Config{
			Source: &stamped{Source: ph, o: o}, Detector: o, Budget: 2 * time.Millisecond,
			Tracker: infer.TrackerConfig{MinHits: 1}, Overlay: true, HUDTiming: true,
			Sinks: []Sink{&slowSink{}}, SinkQueue: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	run(5) // warm up anything created once per process
	before := gocv.MatProfile.Count()
	run(1000)
	if after := gocv.MatProfile.Count(); after != before {
		t.Fatalf("live Mats: %d before, %d after 1000 frames", before, after)
	}
}
