package eval

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sonolive/frame"
)

func rect(x0, y0, x1, y1 float32) []frame.Point {
	return []frame.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
}

func TestFillPolygon(t *testing.T) {
	for _, tc := range []struct {
		name string
		pts  []frame.Point
		want int
	}{
		// Pixel centres 2.5..5.5 in both axes: 4×4.
		{"square on pixel corners", rect(2, 2, 6, 6), 16},
		// Edges through pixel centres: x 2.5 is in, 6.5 is out.
		{"square through centres", rect(2.5, 2.5, 6.5, 6.5), 16},
		// Right triangle with legs 8: centres (i+½, j+½) strictly under
		// the hypotenuse, i + j < 7 (those on it are out): 1+2+…+7.
		{"triangle", []frame.Point{{X: 0, Y: 0}, {X: 8, Y: 0}, {X: 0, Y: 8}}, 28},
		{"clipped by the image", rect(-5, -5, 3, 3), 9},
		{"degenerate", []frame.Point{{X: 1, Y: 1}, {X: 5, Y: 5}}, 0},
		{"non-finite vertex", []frame.Point{{X: 1, Y: 1}, {X: float32(math.Inf(1)), Y: 1}, {X: 1, Y: 5}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FillPolygon(tc.pts, 10, 10).Count(); got != tc.want {
				t.Errorf("%d pixels, want %d", got, tc.want)
			}
		})
	}
}

func TestRegionsAndOverlap(t *testing.T) {
	m := FillPolygon(rect(0, 0, 10, 10), 40, 20) // 100 px
	m.Fill(rect(20, 5, 28, 13))                  // 64 px
	m.Fill(rect(35, 0, 37, 2))                   // 4 px: too small
	// A diagonal neighbour joins a region (8-connectivity).
	m.Pix[10*40+10] = true
	rs := m.Regions(MinRegion)
	if len(rs) != 2 {
		t.Fatalf("%d regions, want 2", len(rs))
	}
	if len(rs[0].Pix) != 101 || rs[0].Box != (frame.Box{X2: 11, Y2: 11}) {
		t.Errorf("first region %d px box %v", len(rs[0].Pix), rs[0].Box)
	}
	if len(rs[1].Pix) != 64 || rs[1].Box != (frame.Box{X1: 20, Y1: 5, X2: 28, Y2: 13}) {
		t.Errorf("second region %d px box %v", len(rs[1].Pix), rs[1].Box)
	}
	// Half of the second region: Dice 2·32/(64+32), IoU 32/64.
	half := FillPolygon(rect(20, 5, 24, 13), 40, 20)
	d, iou := RegionOverlap(rs[1], half)
	if math.Abs(d-2.0/3) > 1e-9 || math.Abs(iou-0.5) > 1e-9 {
		t.Errorf("Dice %v IoU %v, want 2/3 and 1/2", d, iou)
	}
	if d, iou := Overlap(NewMask(3, 3), NewMask(3, 3)); d != 1 || iou != 1 {
		t.Errorf("empty masks: Dice %v IoU %v, want 1 1", d, iou)
	}
}

func TestRegionOutlineCalipers(t *testing.T) {
	// A 30×10 bar: long axis its diagonal through the outer corners, short
	// axis across it.
	m := FillPolygon(rect(5, 5, 35, 15), 50, 30)
	r := m.Regions(1)[0]
	got := ScoreMasks(m, []frame.Detection{{Box: r.Box, Score: 0.9, Outline: rect(5, 5, 35, 15)}})
	l := got.Lesions[0]
	if !l.Found || !l.PredOK || l.Dice != 1 || got.Dice != 1 {
		t.Fatalf("lesion %+v, image Dice %v", l, got.Dice)
	}
	if want := math.Hypot(30, 10); math.Abs(l.Truth.Long.Pixels-want) > 1e-9 || math.Abs(l.Pred.Long.Pixels-want) > 1e-9 {
		t.Errorf("long axis truth %v pred %v, want %v", l.Truth.Long.Pixels, l.Pred.Long.Pixels, want)
	}
	if l.Truth.TallerThanWide || l.Truth.Width != 30 || l.Truth.Depth != 10 {
		t.Errorf("truth shape %+v", l.Truth)
	}
}

func TestScoreMasks(t *testing.T) {
	truth := FillPolygon(rect(10, 10, 30, 50), 100, 100) // 20×40, taller than wide
	truth.Fill(rect(60, 60, 90, 70))                     // 30×10
	dets := []frame.Detection{
		// Finds the tall lesion with an outline 4 px short at the bottom.
		{Box: frame.Box{X1: 10, Y1: 10, X2: 30, Y2: 48}, Score: 0.9, Outline: rect(10, 10, 30, 46)},
		// A lower-scored duplicate on the same lesion is not matched twice.
		{Box: frame.Box{X1: 10, Y1: 10, X2: 30, Y2: 50}, Score: 0.5, Outline: rect(10, 10, 30, 50)},
		// A false box elsewhere: costs the image Dice only.
		{Box: frame.Box{X1: 70, Y1: 0, X2: 80, Y2: 10}, Score: 0.8, Outline: rect(70, 0, 80, 10)},
	}
	got := ScoreMasks(truth, dets)
	if len(got.Lesions) != 2 {
		t.Fatalf("%d lesions", len(got.Lesions))
	}
	tall, wide := got.Lesions[0], got.Lesions[1]
	if !tall.Found || wide.Found {
		t.Fatalf("found tall %v wide %v", tall.Found, wide.Found)
	}
	// 720 of 800 pixels: Dice 2·720/(800+720).
	if want := 1440.0 / 1520; math.Abs(tall.Dice-want) > 1e-9 {
		t.Errorf("tall Dice %v, want %v", tall.Dice, want)
	}
	// Image: truth 1100; every outline together covers the tall lesion
	// (the duplicate's) and the false box: 800+100, overlap 800.
	if want := 1600.0 / 2000; math.Abs(got.Dice-want) > 1e-9 {
		t.Errorf("image Dice %v, want %v", got.Dice, want)
	}
	s := Segmentation([]Result{{Masks: &got}, {Masks: &ImageMasks{}}, {}})
	if s.Images != 1 || s.Lesions != 2 || s.Found != 1 || s.Measured != 1 {
		t.Fatalf("summary %+v", s)
	}
	// Long axis: the diagonal, of 20×36 against 20×40. Short axis: the
	// widest chord perpendicular to it, through a corner of a w×h
	// rectangle: w·√(w²+h²)/h.
	if want := math.Hypot(20, 36)/math.Hypot(20, 40) - 1; math.Abs(s.LongBias-want) > 1e-9 || math.Abs(s.LongMedAbsErr+want) > 1e-9 {
		t.Errorf("long axis error %v (median |e| %v), want %v", s.LongBias, s.LongMedAbsErr, want)
	}
	short := func(w, h float64) float64 { return w * math.Hypot(w, h) / h }
	if want := short(20, 36)/short(20, 40) - 1; math.Abs(s.ShortBias-want) > 1e-9 {
		t.Errorf("short axis error %v, want %v", s.ShortBias, want)
	}
	if s.TTWAgree != 1 || s.TTWTruth != 1 {
		t.Errorf("taller-than-wide agreement %v of %d", s.TTWAgree, s.TTWTruth)
	}
}

func TestKappa(t *testing.T) {
	for _, tc := range []struct {
		tt, tf, ft, ff int
		agree, kappa   float64
	}{
		{10, 0, 0, 10, 1, 1},
		{5, 5, 5, 5, 0.5, 0},
		// Fleiss' textbook table: 20 yes/yes, 5, 10, 15 no/no.
		{20, 5, 10, 15, 0.7, 0.4},
	} {
		agree, k := kappa(tc.tt, tc.tf, tc.ft, tc.ff)
		if math.Abs(agree-tc.agree) > 1e-9 || math.Abs(k-tc.kappa) > 1e-9 {
			t.Errorf("%v: agreement %v kappa %v, want %v %v", tc, agree, k, tc.agree, tc.kappa)
		}
	}
	if _, k := kappa(0, 0, 0, 7); !math.IsNaN(k) {
		t.Errorf("one class only: kappa %v, want NaN", k)
	}
}

func TestLoadMask(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 4, 3))
	img.SetGray(1, 2, color.Gray{Y: 255})
	img.SetGray(3, 0, color.Gray{Y: 100}) // below mid-grey: off
	path := filepath.Join(t.TempDir(), "m.png")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m, err := LoadMask(path, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	if m.W != 4 || m.H != 3 || m.Count() != 1 || !m.Pix[2*4+1] {
		t.Errorf("mask %+v", m)
	}
	if _, err := LoadMask(path, 40, 30); err == nil || !strings.Contains(err.Error(), "is 4x3, the image 40x30") {
		t.Errorf("a mask of another size: %v", err)
	}
	if _, err := LoadMask(filepath.Join(t.TempDir(), "none.png"), 4, 3); err == nil {
		t.Error("a missing mask loaded")
	}
	os.WriteFile(path, []byte("not a png"), 0o644)
	if _, err := LoadMask(path, 4, 3); err == nil {
		t.Error("a corrupt mask loaded")
	}
}
