package overlay

import (
	"encoding/json"
	"fmt"
	"image"
	"math"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

func testFrame() *frame.Frame {
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(90, 90, 90, 0), 480, 640, gocv.MatTypeCV8UC3)
	return &frame.Frame{
		Seq: 7, Source: "test", Captured: time.Date(2026, 11, 23, 10, 0, 0, 500_000_000, time.UTC), Image: img,
		Detections: []frame.Detection{
			{Box: frame.Box{X1: 100, Y1: 120, X2: 200, Y2: 220}, Class: "lesion", Score: 0.91, TrackID: 3, Malignancy: 0.25},
			{Box: frame.Box{X1: 400, Y1: 300, X2: 460, Y2: 350}, Class: "lesion", Score: 0.5, TrackID: 4, StaleAge: 3, Malignancy: -1},
		},
		Timings: frame.Timings{Infer: 6500 * time.Microsecond, Total: 9 * time.Millisecond},
	}
}

// pixel returns the colour at x,y as RGB (the Mat holds BGR).
func pixel(m gocv.Mat, x, y int) [3]uint8 {
	v := m.GetVecbAt(y, x)
	return [3]uint8{v[2], v[1], v[0]}
}

func TestDraw(t *testing.T) {
	f := testFrame()
	defer f.Close()
	st := DefaultStyle()
	NewDrawer(st).Draw(f, HUD{FPS: 30, InferMS: 6.5, TotalMS: 9, AIStatus: "ok", ShowTiming: true})
	// Fresh box: solid edge in the fresh colour.
	if got := pixel(f.Image, 150, 220); got != [3]uint8{st.Fresh.R, st.Fresh.G, st.Fresh.B} {
		t.Errorf("fresh box edge pixel %v", got)
	}
	// Stale box: dashed in the stale colour, so some edge pixels keep the
	// background.
	stale, bg := 0, 0
	for x := 401; x < 459; x++ {
		switch pixel(f.Image, x, 350) {
		case [3]uint8{st.Stale.R, st.Stale.G, st.Stale.B}:
			stale++
		case [3]uint8{90, 90, 90}:
			bg++
		}
	}
	if stale == 0 || bg == 0 {
		t.Errorf("stale edge: %d stale pixels, %d background", stale, bg)
	}
	// Inside the boxes nothing is drawn: the clinician must see the lesion.
	if got := pixel(f.Image, 150, 170); got != [3]uint8{90, 90, 90} {
		t.Errorf("box interior changed: %v", got)
	}
	// HUD shaded in the top-right corner.
	if got := pixel(f.Image, 636, 8); got[0] >= 90 {
		t.Errorf("HUD not shaded: %v", got)
	}
}

func TestLabelText(t *testing.T) {
	f := testFrame()
	defer f.Close()
	if got := labelText(f.Detections[0], frame.Geometry{}); got != "lesion 0.91 #3 M25%" {
		t.Errorf("fresh label %q", got)
	}
	if got := labelText(f.Detections[1], frame.Geometry{}); !strings.HasSuffix(got, "stale 3f") || strings.Contains(got, "M") {
		t.Errorf("stale label %q", got)
	}
}

func TestMetadataJSON(t *testing.T) {
	f := testFrame()
	defer f.Close()
	f.Truth = []frame.Box{{X1: 1, Y1: 2, X2: 11, Y2: 22}}
	b, err := json.Marshal(NewMetadata(f))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	dets := m["detections"].([]any)
	d0, d1 := dets[0].(map[string]any), dets[1].(map[string]any)
	checks := []struct {
		name string
		ok   bool
	}{
		{"schema", m["schema"] == float64(SchemaVersion)},
		{"seq", m["seq"] == float64(7)},
		{"capture_unix_ms", m["capture_unix_ms"] == float64(time.Date(2026, 11, 23, 10, 0, 0, 500_000_000, time.UTC).UnixMilli())},
		{"size", m["width"] == float64(640) && m["height"] == float64(480)},
		{"box is x,y,w,h", d0["box"].([]any)[2] == float64(100)},
		{"malignancy present", d0["malignancy"] == 0.25},
		{"malignancy omitted", d1["malignancy"] == nil},
		{"stale age", d1["stale_age"] == float64(3)},
		{"timings", m["timings_ms"].(map[string]any)["infer"] == 6.5},
		{"truth", m["truth"].([]any)[0].([]any)[3] == float64(20)},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s wrong in %s", c.name, b)
		}
	}
}

// With a pixel size the metadata gives it, with each box's size in mm and
// the ultrasound region; the label gives the size too. Without one,
// neither appears.
func TestMetadataGeometry(t *testing.T) {
	f := testFrame()
	defer f.Close()
	if m := NewMetadata(f); m.Geometry != nil || m.Detections[0].SizeMM != nil {
		t.Fatalf("geometry without a source's spacing: %+v", m)
	}
	f.Geometry = frame.Geometry{SpacingMM: [2]float64{0.1, 0.2}, Region: image.Rect(10, 20, 630, 470)}
	m := NewMetadata(f)
	w, h := float64(f.Detections[0].Box.W()), float64(f.Detections[0].Box.H())
	if m.Geometry == nil || m.Geometry.SpacingMM != [2]float64{0.1, 0.2} || *m.Geometry.Region != (BoxMeta{10, 20, 620, 450}) {
		t.Fatalf("geometry %+v", m.Geometry)
	}
	if got := *m.Detections[0].SizeMM; math.Abs(got[0]-w*0.1) > 0.05 || math.Abs(got[1]-h*0.2) > 0.05 {
		t.Fatalf("size_mm %v for a %vx%v box", got, w, h)
	}
	if g := m.Geometry.Frame(); g != f.Geometry {
		t.Fatalf("round trip %+v", g)
	}
	if got := labelText(f.Detections[0], f.Geometry); !strings.Contains(got, fmt.Sprintf(" %.0fx%.0fmm", w*0.1, h*0.2)) {
		t.Fatalf("label %q", got)
	}
}

func BenchmarkDraw(b *testing.B) {
	f := testFrame()
	defer f.Close()
	clean := f.Image.Clone()
	defer clean.Close()
	d := NewDrawer(DefaultStyle())
	hud := HUD{FPS: 30, InferMS: 6.5, TotalMS: 9, AIStatus: "ok", ShowTiming: true}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clean.CopyTo(&f.Image)
		d.Draw(f, hud)
	}
}

// A segmenting model's outline: in the metadata with its calipers (in mm
// with the pixel size), and drawn with them into the frame.
func TestOutlineAndCalipers(t *testing.T) {
	f := testFrame()
	defer f.Image.Close()
	// An ellipse 80 px wide and 40 deep centred at (150, 170).
	var outline []frame.Point
	for i := range 48 {
		th := 2 * math.Pi * float64(i) / 48
		outline = append(outline, frame.Point{X: float32(150 + 40*math.Cos(th)), Y: float32(170 + 20*math.Sin(th))})
	}
	f.Detections[0].Box = frame.Box{X1: 110, Y1: 150, X2: 190, Y2: 190}
	f.Detections[0].Outline = outline
	f.Geometry = frame.Geometry{SpacingMM: [2]float64{0.1, 0.1}}
	m := NewMetadata(f)
	d := m.Detections[0]
	c := d.Calipers
	if len(d.Outline) != 48 || c == nil || c.LongMM == nil {
		t.Fatalf("detection %+v", d)
	}
	if math.Abs(*c.LongMM-8) > 0.1 || math.Abs(*c.ShortMM-4) > 0.15 || c.TallerThanWide || c.Solidity < 0.98 {
		t.Errorf("calipers %+v (long %.2f mm, short %.2f mm), want 8 × 4 mm, wider than tall, convex", c, *c.LongMM, *c.ShortMM)
	}
	if m.Detections[1].Outline != nil || m.Detections[1].Calipers != nil {
		t.Errorf("a box without outline got %+v", m.Detections[1])
	}
	b, _ := json.Marshal(m)
	if !strings.Contains(string(b), `"outline":[[190,170]`) || !strings.Contains(string(b), `"long_mm":8`) {
		t.Errorf("JSON: %s", b)
	}
	// Back from the metadata, for drawing a frame's findings later.
	if back := Detections(m.Detections); len(back[0].Outline) != 48 || back[0].Outline[0] != (frame.Point{X: 190, Y: 170}) {
		t.Errorf("outline back from the metadata: %v", back[0].Outline)
	}
	NewDrawer(DefaultStyle()).Draw(f, HUD{})
	// The outline's rightmost point and the long caliper's end mark.
	if p := pixel(f.Image, 190, 170); p == [3]uint8{90, 90, 90} {
		t.Errorf("nothing drawn on the outline at (190, 170)")
	}
	if got := labelText(f.Detections[0], f.Geometry); !strings.Contains(got, "8.0x4.0mm") {
		t.Errorf("label %q: want the calipers in mm", got)
	}
	// The phantom's truth: a 30×10 px bar measures its own calipers.
	f.Truth = []frame.Box{{X1: 10, Y1: 20, X2: 40, Y2: 30}}
	f.TruthOutlines = [][]frame.Point{{{X: 10, Y: 20}, {X: 40, Y: 20}, {X: 40, Y: 30}, {X: 10, Y: 30}}}
	tc := NewMetadata(f).TruthCalipers
	if len(tc) != 1 || tc[0] == nil || math.Abs(*tc[0].LongMM-math.Hypot(3, 1)) > 0.05 || tc[0].TallerThanWide {
		t.Errorf("truth calipers %+v", tc)
	}
}
