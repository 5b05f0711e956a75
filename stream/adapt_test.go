package stream

import (
	"context"
	"testing"
	"time"
)

// The layer choice over made-up estimates: a dip is not a poor link; a
// poor link moves the viewer down after downHold; the main encode is tried
// again after probeFirst, kept when it holds, and a failed try doubles the
// wait up to probeMax.
func TestRateChoice(t *testing.T) {
	const main = 2_000_000
	type step struct {
		at       time.Duration // since the start
		estimate int
		small    bool // the choice after this step
		changed  bool
	}
	for _, tc := range []struct {
		name  string
		loss  float64 // the packets lost throughout; 0: 5 %
		steps []step
	}{
		{"good link", 0, []step{{0, 2_500_000, false, false}, {10 * time.Second, 1_700_000, false, false}}},
		{"a dip", 0, []step{{0, 1_000_000, false, false}, {500 * time.Millisecond, 1_000_000, false, false}, {750 * time.Millisecond, 2_000_000, false, false}, {2 * time.Second, 1_000_000, false, false}}},
		{"poor link", 0, []step{{0, 1_200_000, false, false}, {time.Second, 1_200_000, true, true}, {20 * time.Second, 1_200_000, true, false}}},
		{"tried again, kept", 0, []step{
			{0, 1_000_000, false, false}, {time.Second, 1_000_000, true, true},
			{30 * time.Second, 5_000_000, true, false}, // not yet: probeFirst from the move down
			{31 * time.Second, 5_000_000, false, true},
			{37 * time.Second, 2_500_000, false, false},
			{38 * time.Second, 1_000_000, false, false}, {39 * time.Second, 1_000_000, true, true},
			{68 * time.Second, 5_000_000, true, false}, {69 * time.Second, 5_000_000, false, true}, // the wait is probeFirst again
		}},
		{"failed tries back off", 0, []step{
			{0, 1_000_000, false, false}, {time.Second, 1_000_000, true, true},
			{31 * time.Second, 3_000_000, false, true},
			{32 * time.Second, 1_000_000, false, false}, {33 * time.Second, 1_000_000, true, true},
			{92 * time.Second, 3_000_000, true, false}, {93 * time.Second, 3_000_000, false, true}, // 60 s
			{94 * time.Second, 1_000_000, false, false}, {95 * time.Second, 1_000_000, true, true},
			{214 * time.Second, 3_000_000, true, false}, {215 * time.Second, 3_000_000, false, true}, // 120 s
			{216 * time.Second, 1_000_000, false, false}, {217 * time.Second, 1_000_000, true, true},
			{376 * time.Second, 3_000_000, true, false}, {377 * time.Second, 3_000_000, false, true}, // 160 s: the most
		}},
		{"slow without loss: a busy machine", 0.001, []step{{0, 1_000_000, false, false}, {2 * time.Second, 1_000_000, false, false}, {3 * time.Second, 1_000_000, false, false}}},
		{"loss on a fast link", 0.03, []step{{0, 5_000_000, false, false}, {2 * time.Second, 5_000_000, false, false}}},
		{"the estimate stays low: no try", 0, []step{
			{0, 500_000, false, false}, {time.Second, 500_000, true, true}, {100 * time.Second, 1_500_000, true, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newRateChoice()
			t0 := time.Unix(1000, 0)
			for i, s := range tc.steps {
				loss := tc.loss
				if loss == 0 {
					loss = 0.05
				}
				small, changed := c.next(t0.Add(s.at), s.estimate, loss, main)
				if small != s.small || changed != s.changed {
					t.Fatalf("step %d (%v, %d bit/s): small %v changed %v, want %v %v", i, s.at, s.estimate, small, changed, s.small, s.changed)
				}
			}
		})
	}
}

func TestRateMeter(t *testing.T) {
	var m rateMeter
	t0 := time.Unix(1000, 0)
	var bytes uint64
	for i := 0; i < rateSamples-1; i++ {
		if _, ok := m.add(t0.Add(time.Duration(i)*adaptTick), bytes); ok {
			t.Fatalf("a rate before a whole window, at sample %d", i)
		}
		bytes += 62_500 // 2 Mbit/s at 4 samples a second
	}
	for i := rateSamples - 1; i < 3*rateSamples; i++ {
		bps, ok := m.add(t0.Add(time.Duration(i)*adaptTick), bytes)
		if !ok || bps != 2_000_000 {
			t.Fatalf("sample %d: %d bit/s (%v), want 2000000", i, bps, ok)
		}
		bytes += 62_500
	}
}

// A viewer moved to the small layer keeps getting frames (from its
// keyframe on) and is counted there; moved back, the small layer stops.
func TestViewerMovesBetweenLayers(t *testing.T) {
	tr := newTestRelay(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	newFeeder(t, tr.Relay).start()
	views := dialAll(t, ctx, tr.url, 2)
	v, ok := tr.Viewer(tr.Stats().Viewers[0].ID)
	if !ok {
		t.Fatal("no viewer")
	}
	framesOf := func(id string) uint64 {
		for _, s := range tr.Stats().Viewers {
			if s.ID == id {
				return s.Frames
			}
		}
		return 0
	}
	waitFrames := func(id string, more uint64) {
		t.Helper()
		want := framesOf(id) + more
		for deadline := time.Now().Add(10 * time.Second); framesOf(id) < want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("viewer %s stuck at %d frames, want %d", id, framesOf(id), want)
			}
		}
	}
	tr.setSmall(v, true)
	waitFrames(v.ID(), 30)
	st := tr.Stats()
	if len(st.Layers) != 1 || st.Layers[0].Codec != "h264-small" || st.Layers[0].Frames == 0 {
		t.Fatalf("layers with a viewer on the small one: %+v", st.Layers)
	}
	for _, s := range st.Viewers {
		want := "main"
		if s.ID == v.ID() {
			want = "h264-small"
		}
		if s.Layer != want {
			t.Errorf("viewer %s on %q, want %q", s.ID, s.Layer, want)
		}
	}
	tr.setSmall(v, false)
	if st := tr.Stats(); len(st.Layers) != 0 {
		t.Fatalf("the small layer runs with nobody on it: %+v", st.Layers)
	}
	waitFrames(v.ID(), 30)
	for i, w := range views {
		if w.Stats().Keyframes < 1 {
			t.Errorf("viewer %d: %+v", i, w.Stats())
		}
	}
	for _, s := range tr.Stats().Viewers {
		t.Logf("viewer %s: layer %s, estimate %d bit/s, %d switches", s.ID, s.Layer, s.EstimateBPS, s.LayerSwitches)
	}
}
