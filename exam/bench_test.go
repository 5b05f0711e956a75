package exam

import (
	"testing"
	"time"

	"sonolive/capture"
	"sonolive/frame"
)

// BenchmarkPickerObserve is the picker's cost on the pipeline goroutine
// for a 1280×720 frame with two lesions the detector saw: the quality of
// each (a Laplacian over its box) and, when it improved, a frame copy.
// "improving" copies on every call (the worst case: each frame better than
// the last); "steady" is the usual frame, nothing copied.
func BenchmarkPickerObserve(b *testing.B) {
	cfg := capture.DefaultPhantom()
	cfg.Width, cfg.Height = 1280, 720
	ph := capture.NewPhantom(cfg)
	defer ph.Close()
	f := ph.Render(60)
	defer f.Close()
	dets := []frame.Detection{
		{Box: frame.Box{X1: 400, Y1: 300, X2: 470, Y2: 360}, Score: 0.8, TrackID: 1, Malignancy: -1},
		{Box: frame.Box{X1: 800, Y1: 250, X2: 880, Y2: 330}, Score: 0.7, TrackID: 2, Malignancy: -1},
	}
	for _, bc := range []struct {
		name      string
		improving bool
	}{{"steady", false}, {"improving", true}} {
		b.Run(bc.name, func(b *testing.B) {
			store, err := OpenStore(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			e, _ := store.Create("bench", Start{Organ: "breast"}, Model{}, time.Now())
			p := NewPicker(store, PickerConfig{MinInterval: time.Nanosecond, SaveEvery: time.Hour, EndAfter: time.Hour})
			defer p.Close()
			p.SetExam(e.ID, 0, nil)
			start := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f.Captured = start.Add(time.Duration(i) * 33 * time.Millisecond)
				f.Seq = uint64(i + 1)
				if bc.improving {
					// Every frame the best so far: each track copies it.
					p.mu.Lock()
					for _, t := range p.tracks {
						t.bestQ = 0
					}
					p.mu.Unlock()
				}
				f.Detections = dets
				p.Observe(f)
			}
		})
	}
}
