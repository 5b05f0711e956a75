package organ

import (
	"context"
	"sync"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

// scripted answers with the probabilities of the frame's colour: the test
// paints breast frames 10 and thyroid frames 200 (what the frames show is
// the classifier's business, tested with the real model in infer).
type scripted struct {
	mu   sync.Mutex
	seen []int
}

func (s *scripted) Names() []string { return []string{"breast", "thyroid", "other"} }
func (s *scripted) Size() int       { return 8 }
func (s *scripted) Classify(m gocv.Mat) ([]float32, error) {
	v := int(m.GetVecbAt(0, 0)[0])
	s.mu.Lock()
	s.seen = append(s.seen, v)
	s.mu.Unlock()
	if v > 100 {
		return []float32{0.05, 0.9, 0.05}, nil
	}
	return []float32{0.9, 0.05, 0.05}, nil
}

func TestGuard(t *testing.T) {
	cls := &scripted{}
	var mu sync.Mutex
	preset := "breast"
	var changes []State
	g := New(Config{Classifier: cls, Preset: func() string { mu.Lock(); defer mu.Unlock(); return preset },
		OnChange: func(s State) { mu.Lock(); changes = append(changes, s); mu.Unlock() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	defer func() { cancel(); <-done }()

	t0 := time.Now()
	// feed plays 30 fps frames of one colour for secs seconds from at,
	// waiting after each sample for the classifier so none is dropped
	// (what dropping does is counted, not the point here).
	feed := func(at time.Duration, secs int, colour float64) {
		img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(colour, colour, colour, 0), 48, 64, gocv.MatTypeCV8UC3)
		defer img.Close()
		for i := range secs * 30 {
			before := g.classified.Load()
			g.Observe(&frame.Frame{Captured: t0.Add(at + time.Duration(i)*time.Second/30), Image: img})
			if i%30 == 0 {
				waitFor(t, func() bool { return g.classified.Load() > before })
			}
		}
	}
	feed(0, 6, 10) // breast under the breast preset
	if st := g.State(); st.Mismatch != "" || st.Seen != "breast" || st.Samples != 6 {
		t.Fatalf("after 6 s of breast: %+v", st)
	}
	feed(6*time.Second, 6, 200) // a thyroid: warned within the window
	st := g.State()
	if st.Mismatch != "thyroid" || st.Preset != "breast" {
		t.Fatalf("after 6 s of thyroid under the breast preset: %+v", st)
	}
	mu.Lock()
	preset = "thyroid" // the sonographer starts a thyroid exam
	mu.Unlock()
	feed(12*time.Second, 2, 200)
	if st := g.State(); st.Mismatch != "" || st.Preset != "thyroid" || st.Samples != 2 {
		t.Fatalf("after switching to the thyroid preset: %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || changes[0].Mismatch != "thyroid" || changes[1].Mismatch != "" {
		t.Errorf("changes: %+v", changes)
	}
	if n := len(cls.snapshot()); n != 14 {
		t.Errorf("%d frames classified in 14 s at one a second", n)
	}
}

func (s *scripted) snapshot() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.seen...)
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
