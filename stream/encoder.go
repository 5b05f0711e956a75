package stream

import (
	"errors"
	"fmt"
	"image"
	"sync/atomic"
	"time"

	"github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/x264"
	"github.com/pion/mediadevices/pkg/prop"
	"gocv.io/x/gocv"
)

// EncoderConfig sets the H.264 encoder.
type EncoderConfig struct {
	// Bitrate is the target delivered bitrate in bits per second.
	Bitrate int
	// KeyframeInterval is the longest gap between IDR frames; viewers also
	// get one on demand (join, PLI).
	KeyframeInterval time.Duration
	// FPS is the source's frame rate, for the keyframe interval.
	FPS float64
	// Overshoot is how much x264's ABR mode exceeds its target with the
	// zerolatency tune (measured ~1.25 here); the target handed to x264 is
	// Bitrate/Overshoot so the delivered rate lands near Bitrate.
	Overshoot float64
}

func (c *EncoderConfig) defaults() {
	if c.Bitrate <= 0 {
		c.Bitrate = 2_500_000
	}
	if c.KeyframeInterval <= 0 {
		c.KeyframeInterval = 2 * time.Second
	}
	if c.FPS <= 0 {
		c.FPS = 30
	}
	if c.Overshoot <= 0 {
		c.Overshoot = 1.25
	}
}

// ErrEncode wraps encoder failures.
var ErrEncode = errors.New("stream: encode")

// Encoder turns BGR frames into H.264 access units (Annex B), constrained
// baseline so every browser, Safari included, decodes it: x264's ultrafast
// preset uses no CABAC, no B-frames and no 8x8 transform. It is built for
// the first frame's size and rebuilt when the size changes (a reconnected
// device may come back at another resolution). Not safe for concurrent
// Encode calls; ForceKeyframe may be called from anywhere.
type Encoder struct {
	cfg      EncoderConfig
	enc      codec.ReadCloser
	src      *imageReader
	yuv      gocv.Mat
	w, h     int
	forceKey atomic.Bool
}

// NewEncoder returns an encoder; the x264 instance starts with the first
// frame.
func NewEncoder(cfg EncoderConfig) *Encoder {
	cfg.defaults()
	return &Encoder{cfg: cfg, yuv: gocv.NewMat()}
}

// ForceKeyframe makes the next encoded frame an IDR.
func (e *Encoder) ForceKeyframe() { e.forceKey.Store(true) }

// imageReader hands x264 the one image we are encoding now.
type imageReader struct{ img *image.YCbCr }

func (r *imageReader) Read() (image.Image, func(), error) { return r.img, func() {}, nil }

func (e *Encoder) open(w, h int) error {
	e.closeEncoder()
	params, err := x264.NewParams()
	if err != nil {
		return fmt.Errorf("%w: x264 params: %v", ErrEncode, err)
	}
	params.Preset = x264.PresetUltrafast
	params.LogLevel = x264.LogError
	params.BitRate = int(float64(e.cfg.Bitrate) / e.cfg.Overshoot)
	params.KeyFrameInterval = max(1, int(e.cfg.KeyframeInterval.Seconds()*e.cfg.FPS+0.5))
	e.src = &imageReader{img: image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)}
	enc, err := params.BuildVideoEncoder(e.src, prop.Media{Video: prop.Video{Width: w, Height: h, FrameRate: float32(e.cfg.FPS)}})
	if err != nil {
		return fmt.Errorf("%w: x264 %dx%d: %v", ErrEncode, w, h, err)
	}
	e.enc, e.w, e.h = enc, w, h
	return nil
}

// Encode compresses one BGR frame. H.264 with 4:2:0 needs even sizes, so an
// odd last row or column is left out.
func (e *Encoder) Encode(img gocv.Mat) (au []byte, keyframe bool, err error) {
	if img.Empty() || img.Type() != gocv.MatTypeCV8UC3 {
		return nil, false, fmt.Errorf("%w: want a BGR 8-bit image, got type %v", ErrEncode, img.Type())
	}
	w, h := img.Cols()&^1, img.Rows()&^1
	if w < 16 || h < 16 {
		return nil, false, fmt.Errorf("%w: frame %dx%d too small", ErrEncode, img.Cols(), img.Rows())
	}
	if e.enc == nil || w != e.w || h != e.h {
		if err := e.open(w, h); err != nil {
			return nil, false, err
		}
	}
	src := img
	if w != img.Cols() || h != img.Rows() {
		src = img.Region(image.Rect(0, 0, w, h))
		defer src.Close()
	}
	gocv.CvtColor(src, &e.yuv, gocv.ColorBGRToYUVI420)
	planes, err := e.yuv.DataPtrUint8()
	if err != nil || len(planes) < w*h*3/2 {
		return nil, false, fmt.Errorf("%w: I420 conversion: %v", ErrEncode, err)
	}
	y := e.src.img
	copy(y.Y, planes[:w*h])
	copy(y.Cb, planes[w*h:w*h*5/4])
	copy(y.Cr, planes[w*h*5/4:w*h*3/2])
	if e.forceKey.Swap(false) {
		if kc, ok := e.enc.Controller().(codec.KeyFrameController); ok {
			_ = kc.ForceKeyFrame()
		}
	}
	// x264's wrapper already copies the NALs into Go memory.
	au, release, err := e.enc.Read()
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrEncode, err)
	}
	release()
	return au, hasIDR(au), nil
}

func (e *Encoder) closeEncoder() {
	if e.enc != nil {
		e.enc.Close()
		e.enc = nil
	}
}

// Close frees the encoder.
func (e *Encoder) Close() error {
	e.closeEncoder()
	return e.yuv.Close()
}

// hasIDR reports whether an Annex B access unit holds an IDR slice.
func hasIDR(au []byte) bool {
	for i := 0; i+3 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 {
			if au[i+3]&0x1f == 5 {
				return true
			}
			i += 2
		}
	}
	return false
}
