package infer

import (
	"fmt"
	"image"

	ort "github.com/yalue/onnxruntime_go"
	"gocv.io/x/gocv"
)

// FormatOrgan is the organ classifier's layout (docs/model-format.md): the
// whole frame, grayscale, squashed to S x S in [0, 1]; out, one probability
// per organ name (softmax).
const FormatOrgan = "sonolive-organ/1"

// OrganClassifier says which organ a frame shows (train/organ.py): the
// wrong-preset guard's eyes. Not safe for concurrent use.
type OrganClassifier struct {
	names    []string
	size     int
	version  string
	session  *ort.AdvancedSession
	input    *ort.Tensor[float32]
	output   *ort.Tensor[float32]
	squashed gocv.Mat // the frame squashed, BGR
	small    gocv.Mat // and gray: the input
}

// OpenOrganClassifier loads an organ classifier from a file.
func OpenOrganClassifier(path string, opts Options) (*OrganClassifier, error) {
	return openFile("organ classifier", path, func(b []byte) (*OrganClassifier, error) { return NewOrganClassifier(b, opts) })
}

// NewOrganClassifier loads an organ classifier from its bytes.
func NewOrganClassifier(data []byte, opts Options) (*OrganClassifier, error) {
	opts = opts.withDefaults()
	raw, side, err := squareModel(data, opts, FormatOrgan)
	if err != nil {
		return nil, err
	}
	names, err := parseNames(raw["names"])
	if err != nil || len(names) < 2 {
		return nil, fmt.Errorf("%w: names %q: want two or more organs", ErrBadModel, raw["names"])
	}
	c := &OrganClassifier{names: names, size: side, version: raw["version"], squashed: gocv.NewMat(), small: gocv.NewMat()}
	if c.input, err = ort.NewEmptyTensor[float32](ort.NewShape(1, 1, int64(c.size), int64(c.size))); err == nil {
		c.output, err = ort.NewEmptyTensor[float32](ort.NewShape(1, int64(len(names))))
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("organ classifier tensors: %w", err)
	}
	so, err := sessionOptions(opts.Threads)
	if err != nil {
		c.Close()
		return nil, err
	}
	defer so.Destroy()
	c.session, err = ort.NewAdvancedSessionWithONNXData(data, []string{"image"}, []string{"probs"}, []ort.Value{c.input}, []ort.Value{c.output}, so)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: organ classifier session: %w", ErrBadModel, err)
	}
	return c, nil
}

// Names are the organs, in the order of Classify's probabilities.
func (c *OrganClassifier) Names() []string { return c.names }

// Size is the side of the square the frame is squashed to.
func (c *OrganClassifier) Size() int { return c.size }

// Version is the classifier's model version.
func (c *OrganClassifier) Version() string { return c.version }

// Classify returns each organ's probability for a frame (8-bit BGR or
// gray, any size; squashed to Size x Size, area-averaged as in training).
// A caller on the video path can shrink the frame to Size x Size itself
// (gocv.Resize with InterpolationArea: 1.6 ms for a 720p frame on one of
// this project's 2-core machines' cores, BenchmarkOrganShrink720p) and
// classify that copy on another goroutine (0.5 ms, BenchmarkOrganClassify).
func (c *OrganClassifier) Classify(img gocv.Mat) ([]float32, error) {
	sz := image.Pt(c.size, c.size)
	switch {
	case img.Empty():
		return nil, fmt.Errorf("organ classifier: empty frame")
	case img.Type() == gocv.MatTypeCV8UC3:
		if err := gocv.Resize(img, &c.squashed, sz, 0, 0, gocv.InterpolationArea); err != nil {
			return nil, err
		}
		gocv.CvtColor(c.squashed, &c.small, gocv.ColorBGRToGray)
	case img.Type() == gocv.MatTypeCV8UC1:
		if err := gocv.Resize(img, &c.small, sz, 0, 0, gocv.InterpolationArea); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("organ classifier: want an 8-bit BGR or gray frame, got type %v", img.Type())
	}
	pix, err := c.small.DataPtrUint8()
	if err != nil {
		return nil, err
	}
	in := c.input.GetData()
	step := c.small.Step()
	for y := 0; y < c.size; y++ {
		for x := 0; x < c.size; x++ {
			in[y*c.size+x] = float32(pix[y*step+x]) / 255
		}
	}
	if err := c.session.Run(); err != nil {
		return nil, fmt.Errorf("organ classifier: %w", err)
	}
	return append([]float32(nil), c.output.GetData()...), nil
}

// Close frees the session.
func (c *OrganClassifier) Close() error {
	c.squashed.Close()
	c.small.Close()
	if c.input != nil {
		c.input.Destroy()
	}
	if c.output != nil {
		c.output.Destroy()
	}
	if c.session != nil {
		return c.session.Destroy()
	}
	return nil
}
