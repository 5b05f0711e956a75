package exam

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"sonolive/capture"
	"sonolive/frame"
	"sonolive/infer"
	"sonolive/models"
	"sonolive/overlay"
	"sonolive/pipeline"
)

// The scenario without the browser: a thyroid exam on the
// phantom, scanned in real time; every lesion shown for a second or more
// gets one key image, measured in mm — calipers on the segmenter's outline:
// long and short axis — within 10% of the phantom's own ground truth on
// that frame, and a restart of the picker (a new pipeline run) keeps what
// was saved.
//
// Seeds 1, 3, 5 and 7 pass (SONOLIVE_PHANTOM_SEED=n runs one by hand); the
// test runs 1 and 7: a lesion cut by the field's edge that comes back
// whole, and an irregular one with a posterior shadow next to a large one.
func TestPickerPhantomExam(t *testing.T) {
	if testing.Short() {
		t.Skip("48 s of real-time scanning")
	}
	seeds := []string{"1", "7"}
	if s := os.Getenv("SONOLIVE_PHANTOM_SEED"); s != "" {
		seeds = []string{s}
	}
	for _, seed := range seeds {
		t.Run("seed"+seed, func(t *testing.T) { pickerPhantomExam(t, seed) })
	}
}

func pickerPhantomExam(t *testing.T, seed string) {
	_, data, err := models.Load("thyroid")
	if err != nil {
		t.Fatal(err)
	}
	model, err := infer.NewModel(data, infer.Options{})
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	defer model.Close()
	segData, ok := models.Segmenter()
	if !ok {
		t.Fatal("no embedded lesion segmenter")
	}
	seg, err := infer.NewSegmenter(segData, infer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	model.UseSegmenter(seg)

	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := store.Create("phantom", Start{Organ: "thyroid"}, Model{Name: "thyroid.onnx", Version: "0.2.0"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := NewPicker(store, PickerConfig{Logger: zaptest.NewLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	defer p.Close()
	p.SetExam(e.ID, 0, nil)

	const seconds = 24
	src, err := capture.Open(ctx, "phantom://?seed="+seed+"&lesions=2&fps=20", capture.Options{Realtime: true, Frames: seconds * 20})
	if err != nil {
		t.Fatal(err)
	}
	shown := map[int]int{} // lesion -> frames with it in view
	pl, err := pipeline.New(pipeline.Config{Source: src, Detector: model, Tracker: infer.TrackerConfig{MinHits: 2},
		Observers: []pipeline.Observer{p, truthCounter(shown)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pl.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	fs, err := store.Findings(e.ID)
	if err != nil {
		t.Fatal(err)
	}
	per := map[int][]Finding{}
	for _, f := range fs {
		t.Logf("finding %d tracks %v box %v score %.2f size %v (%s) %s truth %v", f.N, f.Tracks, f.Box, f.Score, *f.SizeMM, f.Measured, caliperString(f.Calipers), truthString(f.Truth))
		lesion, tb := matchTruth(f)
		if lesion == 0 {
			t.Errorf("finding %d (%v) is on no phantom lesion", f.N, f.Box)
			continue
		}
		per[lesion] = append(per[lesion], f)
		if f.SizeMM == nil || tb.SizeMM == nil {
			t.Errorf("finding %d: no size in mm", f.N)
			continue
		}
		for i := range 2 {
			if got, want := f.SizeMM[i], tb.SizeMM[i]; math.Abs(got-want) > 0.1*want {
				t.Errorf("finding %d: size %v mm, ground truth %v mm (more than 10%% off)", f.N, *f.SizeMM, *tb.SizeMM)
				break
			}
		}
		if f.Measured != "outline" || f.Calipers == nil || f.Calipers.LongMM == nil || tb.Calipers == nil {
			t.Errorf("finding %d: measured on the %s, calipers %s, truth's %s", f.N, f.Measured, caliperString(f.Calipers), caliperString(tb.Calipers))
		} else if l, s := *f.Calipers.LongMM / *tb.Calipers.LongMM, *f.Calipers.ShortMM / *tb.Calipers.ShortMM; math.Abs(l-1) > 0.1 || math.Abs(s-1) > 0.1 {
			t.Errorf("finding %d: calipers %s, ground truth %s (more than 10%% off)", f.N, caliperString(f.Calipers), caliperString(tb.Calipers))
		}
		for _, annotated := range []bool{false, true} {
			path, err := store.Picture(e.ID, f.N, annotated)
			if fi, serr := os.Stat(path); err != nil || serr != nil || fi.Size() < 1000 {
				t.Errorf("finding %d: key image %s: %v %v", f.N, path, err, serr)
			}
		}
	}
	for lesion, frames := range shown {
		if frames < 20 { // under a second in view
			continue
		}
		if n := len(per[lesion]); n != 1 {
			t.Errorf("lesion %d (in view %.1f s): %d key images, want 1", lesion, float64(frames)/20, n)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(store.Dir(), e.ID, "*.tmp")); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}

// matchTruth is the phantom lesion a finding's box is on (IoU at least
// 0.3), 0 for none.
func matchTruth(f Finding) (int, TruthBox) {
	best, bestIoU := TruthBox{}, 0.3
	for _, tb := range f.Truth {
		if v := iou(f.Box, tb.Box); v >= bestIoU {
			best, bestIoU = tb, v
		}
	}
	return best.Lesion, best
}

func iou(a, b [4]float64) float64 {
	ix := math.Min(a[0]+a[2], b[0]+b[2]) - math.Max(a[0], b[0])
	iy := math.Min(a[1]+a[3], b[1]+b[3]) - math.Max(a[1], b[1])
	if ix <= 0 || iy <= 0 {
		return 0
	}
	in := ix * iy
	return in / (a[2]*a[3] + b[2]*b[3] - in)
}

// truthCounter counts the frames each phantom lesion is in view on.
type truthCounter map[int]int

func (c truthCounter) Observe(f *frame.Frame) {
	for _, id := range f.TruthIDs {
		c[id]++
	}
}

func caliperString(c *overlay.CalipersMeta) string {
	if c == nil || c.LongMM == nil {
		return "none"
	}
	return fmt.Sprintf("%.1fx%.1fmm", *c.LongMM, *c.ShortMM)
}

func truthString(ts []TruthBox) string {
	out := ""
	for _, t := range ts {
		out += fmt.Sprintf("lesion %d %v %v mm calipers %s; ", t.Lesion, t.Box, *t.SizeMM, caliperString(t.Calipers))
	}
	return out
}
