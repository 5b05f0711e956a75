package capture

import (
	"image"
	"strings"
	"testing"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

func grayFrame(w, h int) *frame.Frame {
	m := gocv.NewMatWithSize(h, w, gocv.MatTypeCV8UC3)
	m.SetTo(gocv.NewScalar(128, 128, 128, 0))
	return &frame.Frame{Image: m}
}

// sumIn is the pixel sum inside r.
func sumIn(f *frame.Frame, r image.Rectangle) float64 {
	v := f.Image.Region(r)
	defer v.Close()
	s := v.Sum()
	return s.Val1 + s.Val2 + s.Val3
}

// PHI masks fail closed: what they do not fit is blanked, never passed.
func TestMasksFailClosed(t *testing.T) {
	header := Mask{Rect: image.Rect(0, 0, 640, 40)}
	lock := &SizeLock{}
	for _, tc := range []struct {
		name    string
		region  Region
		w, h    int
		blanked bool
		black   image.Rectangle // must be black when not blanked
	}{
		{"fits", Region{Masks: []Mask{header}}, 640, 480, false, image.Rect(0, 0, 640, 40)},
		{"partly outside", Region{Masks: []Mask{{Rect: image.Rect(600, 0, 700, 40)}}}, 640, 480, true, image.Rectangle{}},
		{"wholly outside", Region{Masks: []Mask{{Rect: image.Rect(700, 0, 800, 40)}}}, 640, 480, true, image.Rectangle{}},
		{"other size than drawn for", Region{Masks: []Mask{header}, Size: image.Pt(1280, 720)}, 640, 480, true, image.Rectangle{}},
		{"learned size, first frame", Region{Masks: []Mask{header}, Lock: lock}, 640, 480, false, image.Rect(0, 0, 640, 40)},
		{"learned size, device back at 800x600", Region{Masks: []Mask{header}, Lock: lock}, 800, 600, true, image.Rectangle{}},
		{"percent scales: 640x480", Region{Masks: []Mask{mustMask(t, "0%,0%,100%,10%")}}, 640, 480, false, image.Rect(0, 0, 640, 48)},
		{"percent scales: 1920x1080", Region{Masks: []Mask{mustMask(t, "0%,0%,100%,10%")}}, 1920, 1080, false, image.Rect(0, 0, 1920, 108)},
		{"percent rounds outward", Region{Masks: []Mask{mustMask(t, "33.33%,0%,33.34%,33.33%")}}, 101, 101, false, image.Rect(34, 0, 67, 34)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := grayFrame(tc.w, tc.h)
			defer f.Close()
			if err := tc.region.Apply(f); err != nil {
				t.Fatal(err)
			}
			if got := f.Blanked != ""; got != tc.blanked {
				t.Fatalf("blanked %v (%q), want %v", got, f.Blanked, tc.blanked)
			}
			if tc.blanked {
				// Only the burned-in message may remain: nearly all black.
				if mean := sumIn(f, image.Rect(0, 0, tc.w, tc.h)) / float64(tc.w*tc.h*3); mean > 10 {
					t.Fatalf("blanked frame has mean %.1f", mean)
				}
				if !strings.Contains(f.Blanked, "do not fit") {
					t.Fatalf("reason %q", f.Blanked)
				}
				return
			}
			if s := sumIn(f, tc.black); s != 0 {
				t.Fatalf("masked area %v not black", tc.black)
			}
			below := image.Rect(0, tc.black.Max.Y, tc.w, tc.black.Max.Y+1)
			if sumIn(f, below) == 0 {
				t.Fatalf("mask reaches past %v", tc.black)
			}
		})
	}
}

func mustMask(t *testing.T, s string) Mask {
	t.Helper()
	m, err := ParseMask(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseMask(t *testing.T) {
	for _, tc := range []struct {
		in  string
		ok  bool
		rel bool
	}{
		{"0,0,640,40", true, false},
		{"0%,0%,100%,8%", true, true},
		{" 10% , 5%, 20%, 5% ", true, true},
		{"0,0%,100%,8%", false, false}, // mixed
		{"0%,0%,101%,8%", false, false},
		{"50%,0%,60%,8%", false, false}, // reaches past 100%
		{"-1,0,10,10", false, false},
		{"0,0,0,10", false, false},
		{"NaN%,0%,1%,1%", false, false},
		{"1,2,3", false, false},
	} {
		m, err := ParseMask(tc.in)
		if (err == nil) != tc.ok || (err == nil && m.Relative != tc.rel) {
			t.Errorf("ParseMask(%q) = %+v, %v", tc.in, m, err)
		}
	}
}

// A crop moves the ground truth with the picture: boxes, ids and outlines
// stay in step, a lesion left outside goes with its id and outline, and one
// the crop cuts is clipped to it.
func TestCropTruth(t *testing.T) {
	sq := func(x0, y0, x1, y1 float32) []frame.Point {
		return []frame.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
	}
	f := &frame.Frame{
		Truth:         []frame.Box{{X1: 10, Y1: 10, X2: 20, Y2: 20}, {X1: 200, Y1: 10, X2: 220, Y2: 30}, {X1: 90, Y1: 50, X2: 130, Y2: 70}},
		TruthIDs:      []int{1, 2, 3},
		TruthOutlines: [][]frame.Point{sq(10, 10, 20, 20), sq(200, 10, 220, 30), sq(90, 50, 130, 70)},
	}
	cropTruth(f, image.Rect(5, 5, 105, 105))
	if len(f.Truth) != 2 || len(f.TruthIDs) != 2 || len(f.TruthOutlines) != 2 || f.TruthIDs[0] != 1 || f.TruthIDs[1] != 3 {
		t.Fatalf("after the crop: %v %v %v", f.Truth, f.TruthIDs, f.TruthOutlines)
	}
	if f.Truth[1] != (frame.Box{X1: 85, Y1: 45, X2: 100, Y2: 65}) {
		t.Errorf("cut box %v", f.Truth[1])
	}
	if got, want := f.TruthOutlines[1], sq(85, 45, 100, 65); len(got) != 4 || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("cut outline %v, want %v", got, want)
	}
	if f.TruthOutlines[0][0] != (frame.Point{X: 5, Y: 5}) {
		t.Errorf("moved outline %v", f.TruthOutlines[0])
	}
}
