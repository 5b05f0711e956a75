package infer

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"strconv"

	ort "github.com/yalue/onnxruntime_go"
	"gocv.io/x/gocv"

	"sonolive/frame"
)

// FormatBoxSeg is the lesion segmenter's layout (docs/model-format.md): one
// grayscale crop in, one lesion probability map of the same size out.
const FormatBoxSeg = "sonolive-boxseg/1"

// Segmenter outlines the lesion in a detection's box: it crops a square
// around the box (its longer side plus a margin on each side), runs a
// sonolive-boxseg/1 model (train/boxseg.py) on it and traces the lesion's
// boundary. Any detector's boxes get outlines this way, without the
// detector segmenting. Not safe for concurrent use: one per Model.
type Segmenter struct {
	size    int
	margin  float64
	version string
	session *ort.AdvancedSession
	input   *ort.Tensor[float32]
	output  *ort.Tensor[float32]
	gray    gocv.Mat
	crop    gocv.Mat
	affine  gocv.Mat
}

// OpenSegmenter loads a segmenter from a file.
func OpenSegmenter(path string, opts Options) (*Segmenter, error) {
	return openFile("segmenter", path, func(b []byte) (*Segmenter, error) { return NewSegmenter(b, opts) })
}

// NewSegmenter loads a segmenter from its bytes.
func NewSegmenter(data []byte, opts Options) (*Segmenter, error) {
	opts = opts.withDefaults()
	raw, side, err := squareModel(data, opts, FormatBoxSeg)
	if err != nil {
		return nil, err
	}
	margin, err := strconv.ParseFloat(raw["margin"], 64)
	if err != nil || margin < 0 || margin > 2 {
		return nil, fmt.Errorf("%w: margin %q", ErrBadModel, raw["margin"])
	}
	s := &Segmenter{size: side, margin: margin, version: raw["version"], gray: gocv.NewMat(), crop: gocv.NewMat(),
		affine: gocv.NewMatWithSize(2, 3, gocv.MatTypeCV64F)}
	shape := ort.NewShape(1, 1, int64(s.size), int64(s.size))
	if s.input, err = ort.NewEmptyTensor[float32](shape); err == nil {
		s.output, err = ort.NewEmptyTensor[float32](shape)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("segmenter tensors: %w", err)
	}
	so, err := sessionOptions(opts.Threads)
	if err != nil {
		s.Close()
		return nil, err
	}
	defer so.Destroy()
	s.session, err = ort.NewAdvancedSessionWithONNXData(data, []string{"image"}, []string{"mask"}, []ort.Value{s.input}, []ort.Value{s.output}, so)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%w: segmenter session: %w", ErrBadModel, err)
	}
	return s, nil
}

// Version is the segmenter's model version.
func (s *Segmenter) Version() string { return s.version }

// Outline returns the lesion's outline in box b of img (BGR), in img's
// pixels; nil when the segmenter finds nothing there.
func (s *Segmenter) Outline(img gocv.Mat, b frame.Box) ([]frame.Point, error) {
	if err := s.toGray(img); err != nil {
		return nil, err
	}
	return s.outline(b)
}

func (s *Segmenter) toGray(img gocv.Mat) error {
	if img.Empty() || img.Type() != gocv.MatTypeCV8UC3 {
		return fmt.Errorf("segmenter: want a BGR 8-bit frame, got type %v", img.Type())
	}
	gocv.CvtColor(img, &s.gray, gocv.ColorBGRToGray)
	return nil
}

// outline segments box b of the gray frame s.gray.
func (s *Segmenter) outline(b frame.Box) ([]frame.Point, error) {
	side := float64(max(b.W(), b.H())) * (1 + 2*s.margin)
	if side < 4 {
		return nil, nil
	}
	x0 := float64(b.X1+b.X2)/2 - side/2
	y0 := float64(b.Y1+b.Y2)/2 - side/2
	k := float64(s.size) / side
	// crop pixel (u, v) ← frame (x0 + u/k, y0 + v/k), as PIL's EXTENT
	// transform in training: pixel centres map to pixel centres.
	s.affine.SetDoubleAt(0, 0, k)
	s.affine.SetDoubleAt(0, 1, 0)
	s.affine.SetDoubleAt(0, 2, -x0*k+0.5*k-0.5)
	s.affine.SetDoubleAt(1, 0, 0)
	s.affine.SetDoubleAt(1, 1, k)
	s.affine.SetDoubleAt(1, 2, -y0*k+0.5*k-0.5)
	if err := gocv.WarpAffineWithParams(s.gray, &s.crop, s.affine, image.Pt(s.size, s.size), gocv.InterpolationLinear, gocv.BorderConstant, color.RGBA{}); err != nil {
		return nil, fmt.Errorf("segmenter: crop: %w", err)
	}
	pix, err := s.crop.DataPtrUint8()
	if err != nil {
		return nil, err
	}
	in := s.input.GetData()
	step := s.crop.Step()
	for y := 0; y < s.size; y++ {
		for x := 0; x < s.size; x++ {
			in[y*s.size+x] = float32(pix[y*step+x]) / 255
		}
	}
	if err := s.session.Run(); err != nil {
		return nil, fmt.Errorf("segmenter: %w", err)
	}
	prob := s.output.GetData()
	n := s.size
	pts := traceMask(func(i, j int) float32 { return prob[i*n+j] }, n, n, 1, 2, frame.Box{X2: float32(n), Y2: float32(n)})
	for i, p := range pts {
		pts[i] = frame.Point{X: float32(x0 + float64(p.X)/k), Y: float32(y0 + float64(p.Y)/k)}
	}
	return pts, nil
}

// outlineAll gives every detection without an outline one, on the frame
// img (BGR).
func (s *Segmenter) outlineAll(img gocv.Mat, dets []frame.Detection) error {
	need := false
	for _, d := range dets {
		need = need || d.Outline == nil
	}
	if !need {
		return nil
	}
	if err := s.toGray(img); err != nil {
		return err
	}
	for i := range dets {
		if dets[i].Outline != nil {
			continue
		}
		pts, err := s.outline(dets[i].Box)
		if err != nil {
			return err
		}
		dets[i].Outline = clip(pts, img.Cols(), img.Rows())
	}
	return nil
}

func clip(pts []frame.Point, w, h int) []frame.Point {
	for i, p := range pts {
		pts[i] = frame.Point{X: float32(math.Max(0, math.Min(float64(w), float64(p.X)))), Y: float32(math.Max(0, math.Min(float64(h), float64(p.Y))))}
	}
	return pts
}

// Close frees the session.
func (s *Segmenter) Close() error {
	s.gray.Close()
	s.crop.Close()
	s.affine.Close()
	if s.input != nil {
		s.input.Destroy()
	}
	if s.output != nil {
		s.output.Destroy()
	}
	if s.session != nil {
		return s.session.Destroy()
	}
	return nil
}
