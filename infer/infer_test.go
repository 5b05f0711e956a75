package infer

import (
	"image"
	"image/color"
	"math"
	"testing"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

func near(a, b frame.Box, tol float32) bool {
	d := func(x, y float32) bool { return float32(math.Abs(float64(x-y))) <= tol }
	return d(a.X1, b.X1) && d(a.Y1, b.Y1) && d(a.X2, b.X2) && d(a.Y2, b.Y2)
}

func openTestModel(t *testing.T, name string) *Model {
	t.Helper()
	m, err := OpenModel("testdata/"+name, Options{Threshold: 0.25})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func blank(w, h int) gocv.Mat {
	return gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, 40, 40, 0), h, w, gocv.MatTypeCV8UC3)
}

// The constant models' outputs are spelled out in train/export_testmodels.py;
// the expected boxes below are worked out by hand from them.
func TestDecodeKnownOutputs(t *testing.T) {
	type want struct {
		box   frame.Box
		class string
		score float32
		malig float32
	}
	tests := []struct {
		model string
		w, h  int
		want  []want
	}{
		{"own_const.onnx", 64, 64, []want{
			// cell (2,3): centre (28,20), ltrb (10,6,14,8); (2,4) is not a 3x3 peak.
			{frame.Box{X1: 18, Y1: 14, X2: 42, Y2: 28}, "benign", 0.9, 0.8},
			// cell (5,5): centre (44,44) ± 4; (7,0)=0.2 is under the threshold.
			{frame.Box{X1: 40, Y1: 40, X2: 48, Y2: 48}, "malignant", 0.6, 0.3},
		}},
		{"own_const.onnx", 128, 64, []want{
			// 128x64 letterboxed into 64x64: scale 0.5, 16 px pad on top.
			{frame.Box{X1: 36, Y1: 0, X2: 84, Y2: 24}, "benign", 0.9, 0.8},
			{frame.Box{X1: 80, Y1: 48, X2: 96, Y2: 64}, "malignant", 0.6, 0.3},
		}},
		{"yolo_const.onnx", 64, 64, []want{
			// candidate 1 overlaps candidate 0 at IoU 0.90 and is suppressed;
			// candidate 3 scores 0.2 < 0.25.
			{frame.Box{X1: 22, Y1: 27, X2: 42, Y2: 37}, "benign", 0.9, -1},
			{frame.Box{X1: 6, Y1: 6, X2: 14, Y2: 14}, "malignant", 0.7, -1},
		}},
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
				t.Fatalf("got %d detections %+v, want %d", len(res.Detections), res.Detections, len(tc.want))
			}
			for i, w := range tc.want {
				d := res.Detections[i]
				if !near(d.Box, w.box, 1e-3) || d.Class != w.class || math.Abs(float64(d.Score-w.score)) > 1e-6 || math.Abs(float64(d.Malignancy-w.malig)) > 1e-6 {
					t.Errorf("detection %d = %+v, want %+v", i, d, w)
				}
			}
		})
	}
}

func TestModelMetadata(t *testing.T) {
	m := openTestModel(t, "own_const.onnx")
	md := m.Metadata()
	if md.Format != FormatCNet || md.InputW != 64 || md.Channels != 1 || md.Stride != 8 || !md.Calibrated || len(md.Names) != 2 {
		t.Fatalf("metadata %+v", md)
	}
	y := openTestModel(t, "yolo_const.onnx").Metadata()
	if y.Format != FormatUltralytics || y.Channels != 3 || y.Names[1] != "malignant" {
		t.Fatalf("yolo metadata %+v", y)
	}
}

func TestBadModels(t *testing.T) {
	tests := []struct{ name, path string }{
		{"wrong input rank", "testdata/bad_rank.onnx"},
		{"not onnx", "letterbox.go"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenModel(tc.path, Options{})
			if err == nil {
				t.Fatal("no error")
			}
			if !errorsIs(err, ErrBadModel) {
				t.Fatalf("error %v is not ErrBadModel", err)
			}
		})
	}
	if _, err := OpenModel("testdata/missing.onnx", Options{}); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestParseNamesAndImgsz(t *testing.T) {
	names := []struct {
		in   string
		want []string
	}{
		{`["lesion"]`, []string{"lesion"}},
		{`{0: 'person', 1: "bi cycle"}`, []string{"person", "bi cycle"}},
		{`{"1": "b", "0": "a"}`, []string{"a", "b"}},
	}
	for _, tc := range names {
		got, err := parseNames(tc.in)
		if err != nil || len(got) != len(tc.want) || got[len(got)-1] != tc.want[len(tc.want)-1] || got[0] != tc.want[0] {
			t.Errorf("parseNames(%q) = %v, %v", tc.in, got, err)
		}
	}
	if _, err := parseNames(`{0: 'a', 2: 'c'}`); err == nil {
		t.Error("gap in indices accepted")
	}
	for in, want := range map[string][2]int{"320": {320, 320}, "[320, 256]": {320, 256}} {
		h, w, err := parseImgsz(in)
		if err != nil || h != want[0] || w != want[1] {
			t.Errorf("parseImgsz(%q) = %d,%d,%v", in, h, w, err)
		}
	}
	if _, _, err := parseImgsz("[0, x]"); err == nil {
		t.Error("bad imgsz accepted")
	}
}

// A bright rectangle drawn in the source must land, after the letterbox and
// the inverse mapping, where it was drawn.
func TestLetterboxRoundTrip(t *testing.T) {
	tests := []struct{ sw, sh, mw, mh int }{
		{640, 480, 320, 320}, {480, 640, 320, 320}, {1280, 720, 320, 320}, {200, 100, 320, 320}, {320, 320, 320, 320}, {577, 311, 320, 256},
	}
	for _, tc := range tests {
		src := image.Rect(tc.sw/4, tc.sh/3, tc.sw/2, tc.sh*2/3)
		img := gocv.NewMatWithSize(tc.sh, tc.sw, gocv.MatTypeCV8UC3)
		img.SetTo(gocv.NewScalar(0, 0, 0, 0))
		gocv.Rectangle(&img, src, color.RGBA{255, 255, 255, 0}, -1)
		pre := newPreprocessor(tc.mw, tc.mh, 1, 0)
		buf := make([]float32, tc.mw*tc.mh)
		lb, err := pre.Fill(img, buf)
		if err != nil {
			t.Fatal(err)
		}
		// Bounding box of bright pixels in the tensor.
		found := frame.Box{X1: 1e9, Y1: 1e9}
		for y := 0; y < tc.mh; y++ {
			for x := 0; x < tc.mw; x++ {
				if buf[y*tc.mw+x] > 0.5 {
					found.X1, found.Y1 = min(found.X1, float32(x)), min(found.Y1, float32(y))
					found.X2, found.Y2 = max(found.X2, float32(x+1)), max(found.Y2, float32(y+1))
				}
			}
		}
		back := lb.ToSource(found)
		want := frame.Box{X1: float32(src.Min.X), Y1: float32(src.Min.Y), X2: float32(src.Max.X), Y2: float32(src.Max.Y)}
		// One model pixel of resampling error, in source pixels; two when
		// enlarging, where bilinear interpolation spreads the edge.
		px := 1.01
		if lb.ScaleX > 1 {
			px = 2.01
		}
		tol := float32(px / min(lb.ScaleX, lb.ScaleY))
		if !near(back, want, tol) {
			t.Errorf("%dx%d -> %dx%d: back %+v want %+v (tol %.2f)", tc.sw, tc.sh, tc.mw, tc.mh, back, want, tol)
		}
		if rt := lb.ToSource(lb.ToModel(want)); !near(rt, want, 1e-3) {
			t.Errorf("exact round trip %+v != %+v", rt, want)
		}
		pre.Close()
		img.Close()
	}
}

func TestNMS(t *testing.T) {
	b := func(x float32) frame.Box { return frame.Box{X1: x, Y1: 0, X2: x + 10, Y2: 10} }
	dets := []frame.Detection{
		{Box: b(0), Score: 0.5, ClassID: 0},
		{Box: b(1), Score: 0.9, ClassID: 0},
		{Box: b(1), Score: 0.8, ClassID: 1},
		{Box: b(30), Score: 0.4, ClassID: 0},
	}
	agn := NMS(append([]frame.Detection(nil), dets...), 0.5, false)
	if len(agn) != 2 || agn[0].Score != 0.9 || agn[1].Score != 0.4 {
		t.Fatalf("class-agnostic NMS: %+v", agn)
	}
	per := NMS(append([]frame.Detection(nil), dets...), 0.5, true)
	if len(per) != 3 {
		t.Fatalf("per-class NMS: %+v", per)
	}
}

// A 4x4 grid at stride 8 (cell centres 4, 12, 20, 28) with one peak at cell
// (1,1), centre (12,12). Malignancy logits are worked out by hand: the cells
// are sigmoid(z) with z = ln 3 (p 0.75) in the left column pair and
// z = -ln 3 (p 0.25) elsewhere.
func TestDecodeMalignancyPool(t *testing.T) {
	const g, stride = 4, 8
	sig := func(z float64) float32 { return float32(1 / (1 + math.Exp(-z))) }
	heat := make([]float32, g*g)
	heat[1*g+1] = 0.9
	malig := make([]float32, g*g)
	for i := 0; i < g; i++ {
		for j := 0; j < g; j++ {
			malig[i*g+j] = sig(-math.Log(3))
			if j < 2 {
				malig[i*g+j] = sig(math.Log(3))
			}
		}
	}
	tests := []struct {
		name    string
		ltrb    [4]float32
		boxPool bool
		want    float32
	}{
		// box (4,4)-(20,20): centres 4, 12, 20 in both axes, so cells i, j in 0..2;
		// columns 0,1 at +ln3, column 2 at -ln3: mean z = ln3/3.
		{"box mean of logits", [4]float32{8, 8, 8, 8}, true, sig(math.Log(3) / 3)},
		{"peak cell", [4]float32{8, 8, 8, 8}, false, 0.75},
		// box (10,10)-(14,14) holds cell centre 12 only: the peak cell.
		{"one cell", [4]float32{2, 2, 2, 2}, true, 0.75},
		// box (9,9)-(11,11) holds no cell centre: falls back to the peak cell.
		{"no cell centre inside", [4]float32{3, 3, -1, -1}, true, 0.75},
		// box (-20,4)-(40,4): clipped to the grid, row 0 only: 2 cells +ln3, 2 cells -ln3.
		{"clipped to the grid", [4]float32{32, 8, 28, -8}, true, 0.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			boxes := make([]float32, 4*g*g)
			for c := 0; c < 4; c++ {
				boxes[c*g*g+1*g+1] = tc.ltrb[c]
			}
			d := decodeCNet(heat, boxes, malig, 1, g, g, stride, 0.5, []string{"lesion"}, tc.boxPool)
			if len(d) != 1 {
				t.Fatalf("got %d detections", len(d))
			}
			if math.Abs(float64(d[0].Malignancy-tc.want)) > 1e-5 {
				t.Errorf("malignancy %v, want %v (box %+v)", d[0].Malignancy, tc.want, d[0].Box)
			}
		})
	}
}

func TestMalignancyPoolMetadata(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{"", PoolCell, false},
		{"cell", PoolCell, false},
		{"box", PoolBox, false},
		{"mean", "", true},
	}
	for _, tc := range tests {
		m, err := parseMetadata(map[string]string{"malignancy_pool": tc.in})
		if (err != nil) != tc.bad || (!tc.bad && m.MalignancyPool != tc.want) {
			t.Errorf("malignancy_pool %q: got %q, %v", tc.in, m.MalignancyPool, err)
		}
	}
}
