package infer

import (
	"context"
	"errors"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

// fakeDetector takes a fixed time and returns one box at a fixed place.
type fakeDetector struct {
	delay time.Duration
	fail  bool
}

func (d *fakeDetector) Detect(img gocv.Mat) (Result, error) {
	time.Sleep(d.delay)
	if d.fail {
		return Result{}, errors.New("model exploded")
	}
	return Result{Infer: d.delay, Detections: []frame.Detection{{Box: frame.Box{X1: 10, Y1: 10, X2: 30, Y2: 30}, Score: 0.9, Class: "lesion", Malignancy: -1}}}, nil
}

func newFrame(seq uint64) *frame.Frame {
	return &frame.Frame{Seq: seq, Captured: time.Now(), Image: gocv.NewMatWithSize(48, 64, gocv.MatTypeCV8UC3)}
}

// Each case runs frames at a fixed interval through the scheduler and checks
// the budget semantics: a frame never waits much longer than the budget, and
// the counters say what happened.
func TestSchedulerBudget(t *testing.T) {
	tests := []struct {
		name        string
		delay       time.Duration
		budget      time.Duration
		frames      int
		wantFresh   bool // most frames get their own result
		wantMisses  bool
		wantSkipped bool
	}{
		// Margins are an order of magnitude above the tens of ms a loaded
		// CI machine can stall a goroutine: the fast case's budget is half
		// a second, and the slow detector is 30 times its budget, so a
		// scheduler that waited for it would show 300 ms.
		{"fast detector: every frame fresh", 2 * time.Millisecond, 500 * time.Millisecond, 20, true, false, false},
		{"slow detector: misses and skips, never blocks", 300 * time.Millisecond, 10 * time.Millisecond, 20, false, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := NewScheduler(ctx, &fakeDetector{delay: tc.delay}, SchedulerConfig{Budget: tc.budget, Tracker: TrackerConfig{MinHits: 1}})
			defer s.Close()
			fresh := 0
			var worst time.Duration
			for i := 1; i <= tc.frames; i++ {
				f := newFrame(uint64(i))
				s.Process(ctx, f)
				worst = max(worst, f.Timings.Wait)
				if !f.Stale {
					fresh++
					if len(f.Detections) != 1 || f.Detections[0].StaleAge != 0 {
						t.Fatalf("fresh frame %d: detections %+v", i, f.Detections)
					}
				}
				f.Close()
				time.Sleep(5 * time.Millisecond)
			}
			st := s.Stats()
			if worst > tc.budget+100*time.Millisecond {
				t.Errorf("a frame waited %v with budget %v", worst, tc.budget)
			}
			if tc.wantFresh != (fresh > tc.frames/2) {
				t.Errorf("fresh frames %d of %d", fresh, tc.frames)
			}
			if tc.wantMisses != (st.Misses > 0) || tc.wantSkipped != (st.Skipped > 0) {
				t.Errorf("stats %+v", st)
			}
			if st.Stale != uint64(tc.frames-fresh) {
				t.Errorf("stale counter %d, want %d", st.Stale, tc.frames-fresh)
			}
		})
	}
}

// Frames that leave before their result still show the lesion, from the
// tracker, with their stale age.
func TestSchedulerCarriesBoxesWhenLate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewScheduler(ctx, &fakeDetector{delay: 15 * time.Millisecond}, SchedulerConfig{Budget: time.Millisecond, Tracker: TrackerConfig{MinHits: 1}})
	defer s.Close()
	var staleShown int
	for i := 1; i <= 30; i++ {
		f := newFrame(uint64(i))
		s.Process(ctx, f)
		if f.Stale && len(f.Detections) == 1 && f.Detections[0].StaleAge > 0 {
			staleShown++
		}
		f.Close()
		time.Sleep(4 * time.Millisecond)
	}
	if staleShown == 0 {
		t.Fatal("no stale frame carried the tracked box")
	}
	if s.Stats().Misses == 0 {
		t.Fatal("no deadline misses with a 1 ms budget and a 15 ms detector")
	}
}

func TestSchedulerReportsDetectorErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewScheduler(ctx, &fakeDetector{fail: true}, SchedulerConfig{Budget: 20 * time.Millisecond})
	defer s.Close()
	f := newFrame(1)
	s.Process(ctx, f)
	f.Close()
	if s.Stats().Errors != 1 || s.LastError() == "" || !f.Stale {
		t.Fatalf("stats %+v last error %q stale %v", s.Stats(), s.LastError(), f.Stale)
	}
}

// A source that ends while its only inference runs still reports it.
func TestSchedulerCloseCountsInferenceInFlight(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewScheduler(ctx, &fakeDetector{delay: 200 * time.Millisecond}, SchedulerConfig{Budget: time.Millisecond})
	f := newFrame(1)
	s.Process(ctx, f)
	f.Close()
	s.Close()
	if st := s.Stats(); st.Inferences != 1 || st.Misses != 1 {
		t.Fatalf("stats %+v", st)
	}
}
