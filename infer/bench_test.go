package infer

import (
	"image"
	"image/color"
	"os"
	"testing"

	"gocv.io/x/gocv"

	"sonolive/capture"
	"sonolive/frame"
	"sonolive/models"
)

// benchModel is the shipped default model: latency is what the live path
// pays. SONOLIVE_BENCH_MODEL overrides it.
func benchModel(b *testing.B) *Model {
	path := os.Getenv("SONOLIVE_BENCH_MODEL")
	if path == "" {
		path = "../models/phantom-interim.onnx"
	}
	m, err := OpenModel(path, Options{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func phantomFrame(b *testing.B) *frame.Frame {
	p := capture.NewPhantom(capture.DefaultPhantom())
	b.Cleanup(func() { p.Close() })
	f := p.Render(30)
	b.Cleanup(func() { f.Close() })
	return f
}

func BenchmarkPreprocess640x480(b *testing.B) {
	f := phantomFrame(b)
	pre := newPreprocessor(320, 320, 1, 0)
	defer pre.Close()
	buf := make([]float32, 320*320)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := pre.Fill(f.Image, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInferPath and BenchmarkInferBareORT run on the same tensor: the
// ratio is what our preprocessing, decoding, NMS and mapping add to ORT.
func BenchmarkInferPath(b *testing.B) {
	m := benchModel(b)
	f := phantomFrame(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Detect(f.Image); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInferBareORT(b *testing.B) {
	m := benchModel(b)
	f := phantomFrame(b)
	if _, err := m.Detect(f.Image); err != nil { // fill the input tensor once
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := m.RunRaw(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeNMS(b *testing.B) {
	const g, stride = 40, 8
	heat := make([]float32, g*g)
	boxes := make([]float32, 4*g*g)
	// A busy frame: a peak every few cells.
	for i := 0; i < g*g; i += 7 {
		heat[i] = 0.35 + float32(i%13)/30
		for k := 0; k < 4; k++ {
			boxes[k*g*g+i] = 12
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := decodeCNet(heat, boxes, nil, 1, g, g, stride, 0.3, []string{"lesion"}, false)
		NMS(d, 0.5, false)
	}
}

func BenchmarkTracker(b *testing.B) {
	tr := NewTracker(TrackerConfig{})
	dets := []frame.Detection{det(100), det(300), det(500)}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.Update(uint64(i+1), dets)
		tr.Output(uint64(i + 1))
	}
}

// BenchmarkSegmenterOutline is one lesion's outline with the embedded
// segmenter on a 720p frame: crop, ORT on one thread, trace.
func BenchmarkSegmenterOutline(b *testing.B) {
	data, ok := models.Segmenter()
	if !ok {
		b.Skip("no embedded segmenter")
	}
	seg, err := NewSegmenter(data, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer seg.Close()
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(90, 90, 90, 0), 720, 1280, gocv.MatTypeCV8UC3)
	defer img.Close()
	gocv.Circle(&img, image.Pt(640, 360), 40, color.RGBA{30, 30, 30, 0}, -1)
	box := frame.Box{X1: 590, Y1: 310, X2: 690, Y2: 410}
	b.ResetTimer()
	for range b.N {
		if _, err := seg.Outline(img, box); err != nil {
			b.Fatal(err)
		}
	}
}

// The organ guard's two costs: what the video path pays once a second
// (area-shrinking a 720p frame to the classifier's input), and the
// classification on the guard's own goroutine.
func BenchmarkOrganShrink720p(b *testing.B) {
	cfg := capture.DefaultPhantom()
	cfg.Width, cfg.Height = 1280, 720
	p := capture.NewPhantom(cfg)
	defer p.Close()
	f := p.Render(30)
	defer f.Close()
	small := gocv.NewMat()
	defer small.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := gocv.Resize(f.Image, &small, image.Pt(96, 96), 0, 0, gocv.InterpolationArea); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOrganClassify(b *testing.B) {
	data, ok := models.Organ()
	if !ok {
		b.Fatal("no embedded organ classifier")
	}
	c, err := NewOrganClassifier(data, Options{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	f := phantomFrame(b)
	small := gocv.NewMat()
	defer small.Close()
	if err := gocv.Resize(f.Image, &small, image.Pt(c.Size(), c.Size()), 0, 0, gocv.InterpolationArea); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Classify(small); err != nil {
			b.Fatal(err)
		}
	}
}
