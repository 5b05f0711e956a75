package infer

import (
	"fmt"
	"image"
	"math"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

// Letterbox records how a source frame was fitted into the model input, so
// boxes can be mapped back to source pixels exactly.
type Letterbox struct {
	SrcW, SrcH     int
	ScaleX, ScaleY float64 // resized size / source size
	PadX, PadY     int     // left and top padding in model pixels
}

// NewLetterbox fits a srcW x srcH frame into dstW x dstH keeping its aspect,
// centred (Ultralytics' convention).
func NewLetterbox(srcW, srcH, dstW, dstH int) Letterbox {
	r := math.Min(float64(dstW)/float64(srcW), float64(dstH)/float64(srcH))
	nw := max(1, min(dstW, int(math.Round(float64(srcW)*r))))
	nh := max(1, min(dstH, int(math.Round(float64(srcH)*r))))
	return Letterbox{
		SrcW: srcW, SrcH: srcH,
		ScaleX: float64(nw) / float64(srcW), ScaleY: float64(nh) / float64(srcH),
		PadX: (dstW - nw) / 2, PadY: (dstH - nh) / 2,
	}
}

// Resized is the size of the image area inside the model input.
func (l Letterbox) Resized() image.Point {
	return image.Pt(int(math.Round(float64(l.SrcW)*l.ScaleX)), int(math.Round(float64(l.SrcH)*l.ScaleY)))
}

// ToSource maps a box in model input pixels to source pixels, clipped to the
// frame.
func (l Letterbox) ToSource(b frame.Box) frame.Box {
	fx := func(x float32) float32 {
		v := (float64(x) - float64(l.PadX)) / l.ScaleX
		return float32(math.Max(0, math.Min(float64(l.SrcW), v)))
	}
	fy := func(y float32) float32 {
		v := (float64(y) - float64(l.PadY)) / l.ScaleY
		return float32(math.Max(0, math.Min(float64(l.SrcH), v)))
	}
	return frame.Box{X1: fx(b.X1), Y1: fy(b.Y1), X2: fx(b.X2), Y2: fy(b.Y2)}
}

// ToModel maps a box in source pixels to model input pixels.
func (l Letterbox) ToModel(b frame.Box) frame.Box {
	return frame.Box{
		X1: float32(float64(b.X1)*l.ScaleX + float64(l.PadX)), Y1: float32(float64(b.Y1)*l.ScaleY + float64(l.PadY)),
		X2: float32(float64(b.X2)*l.ScaleX + float64(l.PadX)), Y2: float32(float64(b.Y2)*l.ScaleY + float64(l.PadY)),
	}
}

// preprocessor turns a BGR frame into the model's NCHW float tensor. It keeps
// its intermediate Mats between calls so steady state allocates nothing.
type preprocessor struct {
	w, h, channels int
	pad            float32
	gray, resized  gocv.Mat
	lut            [256]float32
}

func newPreprocessor(w, h, channels int, pad float32) *preprocessor {
	p := &preprocessor{w: w, h: h, channels: channels, pad: pad, gray: gocv.NewMat(), resized: gocv.NewMat()}
	for i := range p.lut {
		p.lut[i] = float32(i) / 255
	}
	return p
}

func (p *preprocessor) Close() {
	p.gray.Close()
	p.resized.Close()
}

// Fill letterboxes img (BGR, 8-bit) into dst (len channels*h*w).
func (p *preprocessor) Fill(img gocv.Mat, dst []float32) (Letterbox, error) {
	if img.Empty() || img.Channels() != 3 || img.Type() != gocv.MatTypeCV8UC3 {
		return Letterbox{}, fmt.Errorf("preprocess: want a BGR 8-bit frame, got %dx%d type %v", img.Cols(), img.Rows(), img.Type())
	}
	lb := NewLetterbox(img.Cols(), img.Rows(), p.w, p.h)
	sz := lb.Resized()
	src := img
	if p.channels == 1 {
		gocv.CvtColor(img, &p.gray, gocv.ColorBGRToGray)
		src = p.gray
	}
	// INTER_AREA averages speckle when shrinking, as a scanner's scan
	// converter would; INTER_LINEAR when enlarging.
	interp := gocv.InterpolationArea
	if sz.X > img.Cols() {
		interp = gocv.InterpolationLinear
	}
	if err := gocv.Resize(src, &p.resized, sz, 0, 0, interp); err != nil {
		return Letterbox{}, fmt.Errorf("preprocess: resize: %w", err)
	}
	pix, err := p.resized.DataPtrUint8()
	if err != nil {
		return Letterbox{}, fmt.Errorf("preprocess: %w", err)
	}
	plane := p.w * p.h
	for i := range dst {
		dst[i] = p.pad
	}
	step := p.resized.Step()
	if p.channels == 1 {
		for y := 0; y < sz.Y; y++ {
			row := pix[y*step : y*step+sz.X]
			out := dst[(y+lb.PadY)*p.w+lb.PadX:]
			for x, v := range row {
				out[x] = p.lut[v]
			}
		}
		return lb, nil
	}
	// BGR interleaved to RGB planes.
	for y := 0; y < sz.Y; y++ {
		row := pix[y*step : y*step+3*sz.X]
		o := (y+lb.PadY)*p.w + lb.PadX
		r, g, b := dst[o:], dst[plane+o:], dst[2*plane+o:]
		for x := 0; x < sz.X; x++ {
			b[x] = p.lut[row[3*x]]
			g[x] = p.lut[row[3*x+1]]
			r[x] = p.lut[row[3*x+2]]
		}
	}
	return lb, nil
}
