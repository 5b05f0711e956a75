package infer

import (
	"math"
	"testing"

	"sonolive/frame"
	"sonolive/shape"
)

func det(x float32) frame.Detection {
	return frame.Detection{Box: frame.Box{X1: x, Y1: 50, X2: x + 40, Y2: 90}, Score: 0.8, Class: "lesion", Malignancy: -1}
}

func TestTracker(t *testing.T) {
	type step struct {
		seq       uint64
		update    []frame.Detection // nil: no inference on this frame
		wantIDs   []uint64
		wantStale []int
	}
	tests := []struct {
		name      string
		cfg       TrackerConfig
		steps     []step
		confirmed uint64 // tracks ever shown
	}{
		{"confirmed after two hits, id stable while moving", TrackerConfig{MinHits: 2}, []step{
			{1, []frame.Detection{det(100)}, nil, nil},
			{2, []frame.Detection{det(104)}, []uint64{1}, []int{0}},
			{3, []frame.Detection{det(108)}, []uint64{1}, []int{0}},
			{4, nil, []uint64{1}, []int{1}},
			{5, nil, []uint64{1}, []int{2}},
		}, 1},
		{"single-frame blip never shown", TrackerConfig{MinHits: 2}, []step{
			{1, []frame.Detection{det(100)}, nil, nil},
			{2, []frame.Detection{}, nil, nil},
			{3, []frame.Detection{}, nil, nil},
		}, 0},
		{"two lesions keep their own ids", TrackerConfig{MinHits: 1}, []step{
			{1, []frame.Detection{det(10), det(200)}, []uint64{1, 2}, []int{0, 0}},
			{2, []frame.Detection{det(202), det(12)}, []uint64{1, 2}, []int{0, 0}},
		}, 2},
		{"track ends after max misses", TrackerConfig{MinHits: 1, MaxMisses: 2}, []step{
			{1, []frame.Detection{det(10)}, []uint64{1}, []int{0}},
			{2, []frame.Detection{}, []uint64{1}, []int{1}},
			{3, []frame.Detection{}, nil, nil},
		}, 1},
		{"coasting track hidden after max coast", TrackerConfig{MinHits: 1, MaxCoast: 2}, []step{
			{1, []frame.Detection{det(10)}, []uint64{1}, []int{0}},
			{3, nil, []uint64{1}, []int{2}},
			{4, nil, nil, nil},
		}, 1},
		{"late result updates an older frame", TrackerConfig{MinHits: 1}, []step{
			{1, []frame.Detection{det(10)}, []uint64{1}, []int{0}},
			{5, nil, []uint64{1}, []int{4}},
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(tc.cfg)
			for _, s := range tc.steps {
				if s.update != nil {
					tr.Update(s.seq, s.update)
				}
				out := tr.Output(s.seq)
				if len(out) != len(s.wantIDs) {
					t.Fatalf("seq %d: %d tracks shown %+v, want ids %v", s.seq, len(out), out, s.wantIDs)
				}
				for i, d := range out {
					if d.TrackID != s.wantIDs[i] || d.StaleAge != s.wantStale[i] {
						t.Fatalf("seq %d: got id %d age %d, want %d %d", s.seq, d.TrackID, d.StaleAge, s.wantIDs[i], s.wantStale[i])
					}
				}
			}
			if got := tr.Confirmed(); got != tc.confirmed {
				t.Errorf("%d tracks confirmed, want %d", got, tc.confirmed)
			}
		})
	}
}

// Smoothing: a box that moves steadily is followed, and the predicted box
// stays close to the truth when the detector is late.
func TestTrackerFollowsMotion(t *testing.T) {
	tr := NewTracker(TrackerConfig{MinHits: 1})
	for seq := uint64(1); seq <= 10; seq++ {
		tr.Update(seq, []frame.Detection{det(100 + 3*float32(seq))})
	}
	out := tr.Output(12) // two frames later: truth would be at 136
	if len(out) != 1 {
		t.Fatalf("tracks %+v", out)
	}
	want := frame.Box{X1: 136, Y1: 50, X2: 176, Y2: 90}
	if iou := out[0].Box.IoU(want); iou < 0.85 {
		t.Fatalf("predicted %+v, IoU %.2f with %+v", out[0].Box, iou, want)
	}
}

// A segmenting model's outline: smoothed half-way toward each new one (so
// a jittery mask does not flicker), kept on the box while it coasts.
func TestTrackerSmoothsOutlines(t *testing.T) {
	circle := func(d frame.Detection, r float32) frame.Detection {
		cx, cy := (d.Box.X1+d.Box.X2)/2, (d.Box.Y1+d.Box.Y2)/2
		for _, p := range (shape.Radial{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}).Points(shape.Point{}) {
			d.Outline = append(d.Outline, frame.Point{X: cx + r*float32(p.X), Y: cy + r*float32(p.Y)})
		}
		return d
	}
	radius := func(d frame.Detection) float32 {
		cx, cy := (d.Box.X1+d.Box.X2)/2, (d.Box.Y1+d.Box.Y2)/2
		var sum float32
		for _, p := range d.Outline {
			sum += float32(math.Hypot(float64(p.X-cx), float64(p.Y-cy)))
		}
		return sum / float32(len(d.Outline))
	}
	tr := NewTracker(TrackerConfig{MinHits: 1})
	tr.Update(1, []frame.Detection{circle(det(100), 10)})
	tr.Update(2, []frame.Detection{circle(det(100), 16)})
	out := tr.Output(2)
	if len(out) != 1 || len(out[0].Outline) != outlineRays {
		t.Fatalf("output %+v", out)
	}
	// The 12-gon's reach varies with the ray; its mean is near r·0.98.
	if r := radius(out[0]); r < 12.4 || r > 13.2 {
		t.Errorf("smoothed radius %.2f, want about 13 (half-way from 10 to 16)", r)
	}
	// Coasting on a moving track: the outline goes with the box.
	tr.Update(3, []frame.Detection{circle(det(104), 13)})
	out = tr.Output(5)
	cx := (out[0].Box.X1 + out[0].Box.X2) / 2
	var mx float32
	for _, p := range out[0].Outline {
		mx += p.X
	}
	if mx /= float32(len(out[0].Outline)); math.Abs(float64(mx-cx)) > 0.01 || out[0].StaleAge != 2 {
		t.Errorf("coasting outline centred at %.2f, box at %.2f (stale %d)", mx, cx, out[0].StaleAge)
	}
	// A model without masks: no outline.
	tr2 := NewTracker(TrackerConfig{MinHits: 1})
	tr2.Update(1, []frame.Detection{det(100)})
	if o := tr2.Output(1); o[0].Outline != nil {
		t.Errorf("outline from nothing: %v", o[0].Outline)
	}
}
