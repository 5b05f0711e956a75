package eval

import (
	"testing"

	"sonolive/frame"
)

func TestRecallByGroup(t *testing.T) {
	img := func(w, h int, truth ...Truth) Image { return Image{Width: w, Height: h, Truth: truth} }
	results := []Result{
		// 200×100: a small benign lesion found, a large malignant one at
		// the edge missed (its box is only a low-score one).
		{Image: img(200, 100, Truth{box(50, 50, 10, 10), "benign"}, Truth{box(0, 20, 80, 60), "malignant"}),
			Detections: []frame.Detection{det(box(50, 50, 10, 10), 0.9), det(box(0, 20, 80, 60), 0.2)}},
		// A medium malignant lesion inside, found.
		{Image: img(100, 100, Truth{box(40, 40, 20, 20), "malignant"}),
			Detections: []frame.Detection{det(box(41, 40, 20, 20), 0.5)}},
		// Unknown image size: by class only.
		{Image: Image{Truth: []Truth{{box(5, 5, 5, 5), "benign"}}}},
	}
	got := RecallByGroup(results, 0.3)
	for k, want := range map[string][2]int{
		"benign": {1, 2}, "malignant": {1, 2},
		"small": {1, 1}, "medium": {1, 1}, "large": {0, 1},
		"benign/small": {1, 1}, "malignant/large": {0, 1}, "malignant/medium": {1, 1},
		"at edge": {0, 1}, "inside": {2, 2},
	} {
		if g := got[k]; g.Found != want[0] || g.Truth != want[1] {
			t.Errorf("%s: %d of %d found, want %d of %d", k, g.Found, g.Truth, want[0], want[1])
		}
	}
	if len(got) != 10 {
		t.Errorf("groups %v", got)
	}
}

func TestLesionTraits(t *testing.T) {
	const w, h = 60, 40
	mask := FillPolygon(rect(5, 5, 25, 25), w, h) // a square: solid
	// An L: a 20×20 square missing its 12×12 top-right corner.
	mask.Fill([]frame.Point{{X: 35, Y: 5}, {X: 43, Y: 5}, {X: 43, Y: 17}, {X: 55, Y: 17}, {X: 55, Y: 25}, {X: 35, Y: 25}})
	img := Gray{W: w, H: h, Pix: make([]uint8, w*h)}
	for i := range img.Pix {
		img.Pix[i] = 200
		if mask.Pix[i] {
			img.Pix[i] = 50
			if i%w >= 30 {
				img.Pix[i] = 180 // the L is nearly isoechoic
			}
		}
	}
	truth := []Truth{{box(5, 5, 20, 20), "benign"}, {box(35, 5, 20, 20), "malignant"}}
	dets := []frame.Detection{det(box(5, 5, 20, 20), 0.8), det(box(35, 5, 20, 20), 0.1)}
	tr := LesionTraits(mask, img, truth, dets, 0.3)
	if len(tr) != 2 {
		t.Fatalf("%d lesions", len(tr))
	}
	sq, l := tr[0], tr[1]
	if sq.Category != "benign" || !sq.Found || sq.Solidity < 0.99 || sq.Contrast != 0.25 {
		t.Errorf("square %+v", sq)
	}
	// The L's hull cuts the missing corner diagonally: 256 of 328 px.
	if l.Category != "malignant" || l.Found || l.Solidity > 0.8 || l.Contrast != 0.9 {
		t.Errorf("L %+v", l)
	}
	got := RecallByGroup([]Result{{Traits: tr}}, 0.3)
	if got["irregular margin"].Truth != 1 || got["malignant/low contrast"].Found != 0 || got["benign/high contrast"].Found != 1 {
		t.Errorf("groups %v", got)
	}
}
