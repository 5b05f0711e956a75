package organ

import (
	"context"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/frame"
	"sonolive/infer"
	"sonolive/internal/testpeer"
	"sonolive/models"
)

// The guard with the shipped classifier on the breast cine clips of the
// patients its training left out (even patient ids), through the Go path:
// OpenCV decoding, the guard's own sampling (one frame a second) and vote.
// Under the breast preset no clip may warn; under the thyroid preset the
// clips it catches, and how fast, go to the model card.
func TestGuardOnHeldOutCineClips(t *testing.T) {
	data, ok := models.Organ()
	if !ok {
		t.Fatal("no embedded organ classifier")
	}
	cls, err := infer.NewOrganClassifier(data, infer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cls.Close()
	all, _ := filepath.Glob(filepath.Join(testpeer.Data(t), "clips", "breast-cine", "*.avi"))
	var clips []string
	for _, c := range all {
		if pid, err := strconv.Atoi(strings.Split(filepath.Base(c), "_")[1]); err == nil && pid%2 == 0 {
			clips = append(clips, c)
		}
	}
	if len(clips) == 0 {
		t.Fatal("no held-out breast cine clips")
	}
	sort.Strings(clips)
	warned, falseWarned, seconds := 0, 0, 0.0
	var first []float64
	for _, c := range clips {
		for _, preset := range []string{"breast", "thyroid"} {
			st, secs, at := guardClip(t, cls, c, preset)
			if preset == "breast" {
				seconds += secs
				if st.Mismatch != "" || at >= 0 {
					falseWarned++
					t.Errorf("%s under the breast preset: warned (%+v)", filepath.Base(c), st)
				}
				continue
			}
			if at >= 0 {
				warned++
				first = append(first, at)
			}
			t.Logf("%s (%.0f s) under the thyroid preset: first warning at %.0f s, last state %+v", filepath.Base(c), secs, at, st)
		}
	}
	sort.Float64s(first)
	med := 0.0
	if len(first) > 0 {
		med = first[len(first)/2]
	}
	t.Logf("held-out clips: %d (%.0f s); breast preset: %d warned; thyroid preset: %d warned, median first warning %.0f s", len(clips), seconds, falseWarned, warned, med)
	// Measured 2026-12-07; the card has the figure. A quarter still
	// fails a classifier that no longer tells breast from thyroid.
	if warned < len(clips)/4 {
		t.Errorf("the thyroid preset on breast clips warned on %d of %d", warned, len(clips))
	}
}

// guardClip plays a clip through a guard under preset at the clip's own
// frame times; it returns the last state, the clip's length and the
// second of the first warning (-1: none).
func guardClip(t *testing.T, cls Classifier, path, preset string) (State, float64, float64) {
	t.Helper()
	vc, err := gocv.VideoCaptureFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	fps := vc.Get(gocv.VideoCaptureFPS)
	if fps <= 0 {
		fps = 30
	}
	firstAt := -1.0
	g := New(Config{Classifier: cls, Preset: func() string { return preset }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	img := gocv.NewMat()
	defer img.Close()
	t0 := time.Unix(0, 0)
	n := 0
	for vc.Read(&img) && !img.Empty() {
		at := time.Duration(float64(n) / fps * float64(time.Second))
		before := g.classified.Load()
		g.Observe(&frame.Frame{Captured: t0.Add(at), Image: img})
		if g.last.Load() == t0.Add(at).UnixNano() {
			// Sampled: wait for its vote, as a real second would.
			for g.classified.Load() == before && g.errors.Load() == 0 && g.dropped.Load() == 0 {
				time.Sleep(100 * time.Microsecond)
			}
			if st := g.State(); st.Mismatch != "" && firstAt < 0 {
				firstAt = at.Seconds()
			}
		}
		n++
	}
	if n == 0 {
		t.Fatalf("%s: no frames", path)
	}
	return g.State(), float64(n) / fps, firstAt
}
