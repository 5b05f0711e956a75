package eval

import (
	"math"
	"testing"

	"sonolive/frame"
)

func box(x, y, w, h float32) frame.Box { return frame.Box{X1: x, Y1: y, X2: x + w, Y2: y + h} }
func det(b frame.Box, s float32) frame.Detection {
	return frame.Detection{Box: b, Score: s, Malignancy: -1}
}

// handCase: 3 truth boxes over 2 images, 5 detections.
//
//	score  image  hits                 IoU   TP@0.5  TP@0.95
//	0.9    A      g1 exactly           1.0   yes     yes
//	0.8    A      nothing              -     no      no
//	0.7    B      g3 (one row short)   0.9   yes     no
//	0.6    A      g2 exactly           1.0   yes     yes
//	0.5    B      nothing              -     no      no
//
// IoU 0.5: precision 1, .5, .667, .75, .6 at recall 1/3, 1/3, 2/3, 1, 1;
// envelope 1, .75, .75, .75, .6. Of COCO's 101 recall points, 34 (0..0.33)
// read 1.0, 33 (0.34..0.66) read 0.75 and 34 (0.67..1) read 0.75:
// AP = (34 + 24.75 + 25.5) / 101 = 84.25 / 101.
//
// IoU 0.95: precision 1, .5, .333, .5, .4 at recall 1/3, 1/3, 1/3, 2/3, 2/3;
// envelope 1, .5, .5, .5, .4; 34 points read 1, 33 read 0.5, 34 find no
// recall that high: AP = (34 + 16.5) / 101 = 50.5 / 101.
func handCase() []Result {
	a := Result{Image: Image{FileName: "a", Truth: []Truth{{box(0, 0, 10, 10), "benign"}, {box(20, 20, 10, 10), "malignant"}}},
		Detections: []frame.Detection{det(box(0, 0, 10, 10), 0.9), det(box(100, 100, 10, 10), 0.8), det(box(20, 20, 10, 10), 0.6)}}
	b := Result{Image: Image{FileName: "b", Truth: []Truth{{box(0, 0, 10, 10), "benign"}}},
		Detections: []frame.Detection{det(box(0, 0, 10, 9), 0.7), det(box(50, 50, 5, 5), 0.5)}}
	return []Result{a, b}
}

func TestAPHandComputed(t *testing.T) {
	tests := []struct {
		name string
		iou  float64
		cat  string
		want float64
	}{
		{"IoU 0.5", 0.5, "", 84.25 / 101},
		{"IoU 0.95", 0.95, "", 50.5 / 101},
		// Benign only: g2 (malignant) is out of scope and the 0.6 detection
		// that finds it is ignored: .9 TP, .8 FP, .7 TP, .5 FP over 2 truths.
		// precision 1, .5, .667, .5 at recall .5, .5, 1, 1; envelope 1, .667,
		// .667, .5: 51 points (0..0.5) read 1, 50 read .667.
		{"benign only", 0.5, "benign", (51 + 50*2.0/3) / 101},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := AP(handCase(), tc.iou, tc.cat); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("AP = %.6f, want %.6f", got, tc.want)
			}
		})
	}
	if got := AP([]Result{{Image: Image{}}}, 0.5, ""); !math.IsNaN(got) {
		t.Fatalf("AP without truth = %v, want NaN", got)
	}
}

func TestOperating(t *testing.T) {
	rs := append(handCase(), Result{Image: Image{FileName: "normal"}, Detections: []frame.Detection{det(box(1, 1, 5, 5), 0.65), det(box(30, 30, 5, 5), 0.2)}})
	got := Operating(rs, 0.6)
	// ≥ 0.6: .9 TP, .8 FP, .7 TP, .6 TP, and .65 on the normal image.
	want := AtThreshold{Threshold: 0.6, Truth: 3, Found: 3, Shown: 5, Recall: 1, Precision: 0.6, NormalImages: 1, NormalFalse: 1, FPPerNormalImg: 1}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestAUC(t *testing.T) {
	tests := []struct {
		pos, neg []float64
		want     float64
	}{
		// 9 pairs: .9 and .8 beat all 3 negatives, .4 beats .3 and .1 and
		// ties .4: 8.5 / 9.
		{[]float64{0.9, 0.8, 0.4}, []float64{0.3, 0.4, 0.1}, 8.5 / 9},
		{[]float64{1}, []float64{0}, 1},
		{[]float64{0}, []float64{1}, 0},
		{[]float64{0.5, 0.5}, []float64{0.5}, 0.5},
	}
	for _, tc := range tests {
		if got := AUC(tc.pos, tc.neg); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("AUC(%v, %v) = %v, want %v", tc.pos, tc.neg, got, tc.want)
		}
	}
	if !math.IsNaN(AUC(nil, []float64{1})) {
		t.Error("AUC without positives is not NaN")
	}
}

func TestMalignancyScores(t *testing.T) {
	m := func(s, mal float32) frame.Detection { return frame.Detection{Score: s, Malignancy: mal} }
	rs := []Result{
		{Image: Image{Label: "malignant"}, Detections: []frame.Detection{m(0.4, 0.1), m(0.9, 0.8)}},
		{Image: Image{Label: "benign"}, Detections: []frame.Detection{m(0.7, 0.2)}},
		{Image: Image{Label: "benign"}},
		{Image: Image{Label: "normal"}, Detections: []frame.Detection{m(0.7, 0.9)}},
	}
	pos, neg, skipped := MalignancyScores(rs)
	if len(pos) != 1 || pos[0] != float64(float32(0.8)) || len(neg) != 1 || skipped != 1 {
		t.Fatalf("pos %v neg %v skipped %d", pos, neg, skipped)
	}
}
