package infer

import (
	"errors"
	"math"
	"testing"

	"sonolive/frame"
)

// Segmenting models: the masks in train/export_testmodels.py are rectangles
// of mask cells, so the outlines are known exactly: the centres of the
// boundary pixels of the region, cut to the detection's box, in source
// pixels. Resampling the mask bilinearly (as Ultralytics does) takes the
// one pixel at each of the region's own corners (0.625² < 0.5); a corner
// the box cuts stays square.
func TestOutlinesOfKnownMasks(t *testing.T) {
	rect := func(x0, y0, x1, y1 float32) []frame.Point { // pixels x0..x1-1, y0..y1-1
		return []frame.Point{{X: x0 + 0.5, Y: y0 + 0.5}, {X: x1 - 0.5, Y: y0 + 0.5}, {X: x1 - 0.5, Y: y1 - 0.5}, {X: x0 + 0.5, Y: y1 - 0.5}}
	}
	// The box cuts the top and the left; the region's own corner is at
	// the bottom right.
	own := []frame.Point{{X: 18.5, Y: 14.5}, {X: 18.5, Y: 27.5}, {X: 22.5, Y: 27.5}, {X: 23.5, Y: 26.5}, {X: 23.5, Y: 14.5}}
	tests := []struct {
		model string
		w, h  int
		want  [][]frame.Point // per detection, nil: no outline
	}{
		// Ultralytics segmentation: candidate 0's prototype region (x 20..48,
		// y 16..40) lies inside its box; candidate 1's (x 0..16, y 40..64) is
		// cut by its box (x 4..20, y 44..56); candidate 2 scores too low.
		{"yolo_seg_const.onnx", 64, 64, [][]frame.Point{
			{{X: 20.5, Y: 17.5}, {X: 20.5, Y: 38.5}, {X: 21.5, Y: 39.5}, {X: 46.5, Y: 39.5}, {X: 47.5, Y: 38.5}, {X: 47.5, Y: 17.5}, {X: 46.5, Y: 16.5}, {X: 21.5, Y: 16.5}},
			rect(4, 44, 16, 56),
		}},
		// The project's layout with a mask output: the lesion (x 8..24,
		// y 12..28) cut by the first detection's box (x 18..42, y 14..28);
		// nothing in the second's.
		{"own_seg_const.onnx", 64, 64, [][]frame.Point{own, nil}},
		// Letterboxed: 128x64 into 64x64 is scale 0.5 with 16 px on top;
		// what falls in the padding is clipped to the frame.
		{"own_seg_const.onnx", 128, 64, [][]frame.Point{{{X: 37, Y: 0}, {X: 37, Y: 23}, {X: 45, Y: 23}, {X: 47, Y: 21}, {X: 47, Y: 0}}, nil}},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			m := openTestModel(t, tc.model)
			img := blank(tc.w, tc.h)
			defer img.Close()
			res, err := m.Detect(img)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Detections) != len(tc.want) {
				t.Fatalf("%d detections %+v, want %d", len(res.Detections), res.Detections, len(tc.want))
			}
			for i, want := range tc.want {
				got := res.Detections[i].Outline
				if !samePolygon(got, want) {
					t.Errorf("detection %d (%+v): outline %v, want %v", i, res.Detections[i].Box, got, want)
				}
			}
		})
	}
}

// samePolygon: the same vertices, in either direction from any start.
func samePolygon(a, b []frame.Point) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	n := len(a)
	for start := range n {
		for _, dir := range []int{1, n - 1} {
			ok := true
			for k := range n {
				p, q := a[(start+k*dir)%n], b[k]
				if abs32(p.X-q.X) > 1e-4 || abs32(p.Y-q.Y) > 1e-4 {
					ok = false
					break
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// The box segmenter: its constant map is a disc of radius 24 at the centre
// of the 96-pixel crop; the crop around a 40-pixel box is 60 pixels (25 %
// margin a side), so the outline is a circle of radius 15 around the box
// centre, in the frame's pixels, for a detector that does not segment.
func TestSegmenterOutlinesDetections(t *testing.T) {
	seg, err := OpenSegmenter("testdata/boxseg_const.onnx", Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := blank(160, 120)
	defer img.Close()
	pts, err := seg.Outline(img, frame.Box{X1: 40, Y1: 40, X2: 80, Y2: 80})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) < 8 {
		t.Fatalf("outline %v", pts)
	}
	for _, p := range pts {
		if r := math.Hypot(float64(p.X-60), float64(p.Y-60)); math.Abs(r-15) > 1 {
			t.Errorf("outline point %v at %.2f from the centre, want 15", p, r)
		}
	}
	// On a model: every detection gets one; the model closes the segmenter.
	m := openTestModel(t, "own_const.onnx")
	m.UseSegmenter(seg)
	res, err := m.Detect(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range res.Detections {
		if len(d.Outline) < 8 {
			t.Errorf("detection %+v has no outline", d)
		}
	}
	if _, err := OpenSegmenter("testdata/own_const.onnx", Options{}); !errors.Is(err, ErrBadModel) {
		t.Errorf("a detector as segmenter: %v", err)
	}
}
