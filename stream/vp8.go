package stream

import (
	"fmt"
	"image"
	"sync/atomic"

	"gocv.io/x/gocv"

	"sonolive/stream/internal/vpx"
)

// VP8Config sets the VP8 fallback layer.
type VP8Config struct {
	// Disabled refuses browsers without H.264 (with a message naming the
	// fix) instead of encoding VP8 for them.
	Disabled bool
	// MaxHeight scales the fallback down to at most this many rows
	// (default 480): VP8 costs several times x264's ultrafast preset per
	// pixel, and the fallback runs beside the H.264 encode on the same
	// cores. BENCHMARKS.md has the measured cost per size.
	MaxHeight int
	// Bitrate in bits per second (default 1.2 Mbit/s).
	Bitrate int
	// Speed is libvpx's cpu-used, -16..16 (default -8: WebRTC's
	// desktop choice is -6, its mobile one -12).
	Speed int
}

func (c *VP8Config) defaults() {
	if c.MaxHeight <= 0 {
		c.MaxHeight = 480
	}
	if c.Bitrate <= 0 {
		c.Bitrate = 1_200_000
	}
	if c.Speed == 0 {
		c.Speed = -8
	}
}

// vp8Encoder turns BGR frames into VP8 frames at the fallback's size. It
// is rebuilt when the source's size changes. Not safe for concurrent
// Encode calls; ForceKeyframe may be called from anywhere.
type vp8Encoder struct {
	cfg      VP8Config
	fps      float64
	enc      *vpx.Encoder
	srcW     int
	srcH     int
	w, h     int
	small    gocv.Mat
	yuv      gocv.Mat
	forceKey atomic.Bool
}

func newVP8Encoder(cfg VP8Config, fps float64) *vp8Encoder {
	cfg.defaults()
	if fps <= 0 {
		fps = 30
	}
	return &vp8Encoder{cfg: cfg, fps: fps, small: gocv.NewMat(), yuv: gocv.NewMat()}
}

// fallbackSize scales w×h down to at most maxH rows, keeping the aspect
// and even sides.
func fallbackSize(w, h, maxH int) (int, int) {
	if h <= maxH {
		return w &^ 1, h &^ 1
	}
	return (w*maxH/h + 1) &^ 1, maxH &^ 1
}

func (e *vp8Encoder) ForceKeyframe() { e.forceKey.Store(true) }

// Encode compresses one BGR frame.
func (e *vp8Encoder) Encode(img gocv.Mat) ([]byte, bool, error) {
	if img.Empty() || img.Type() != gocv.MatTypeCV8UC3 {
		return nil, false, fmt.Errorf("%w: want a BGR 8-bit image, got type %v", ErrEncode, img.Type())
	}
	if e.enc == nil || img.Cols() != e.srcW || img.Rows() != e.srcH {
		w, h := fallbackSize(img.Cols(), img.Rows(), e.cfg.MaxHeight)
		if e.enc != nil {
			e.enc.Close()
			e.enc = nil
		}
		enc, err := vpx.New(vpx.Config{Width: w, Height: h, Bitrate: e.cfg.Bitrate, FPS: int(e.fps + 0.5), Speed: e.cfg.Speed})
		if err != nil {
			return nil, false, fmt.Errorf("%w: %w", ErrEncode, err)
		}
		e.enc, e.srcW, e.srcH, e.w, e.h = enc, img.Cols(), img.Rows(), w, h
	}
	src := img
	if e.w != img.Cols() || e.h != img.Rows() {
		gocv.Resize(img, &e.small, image.Pt(e.w, e.h), 0, 0, gocv.InterpolationArea)
		src = e.small
	}
	gocv.CvtColor(src, &e.yuv, gocv.ColorBGRToYUVI420)
	planes, err := e.yuv.DataPtrUint8()
	if err != nil {
		return nil, false, fmt.Errorf("%w: I420 conversion: %v", ErrEncode, err)
	}
	au, key, err := e.enc.Encode(planes, e.forceKey.Swap(false))
	if err != nil {
		// A lost frame breaks every one after it until a keyframe.
		e.forceKey.Store(true)
		return nil, false, fmt.Errorf("%w: %w", ErrEncode, err)
	}
	return au, key, nil
}

// Size is the encoded size (0×0 before the first frame).
func (e *vp8Encoder) Size() (int, int) { return e.w, e.h }

// Close frees the encoder.
func (e *vp8Encoder) Close() error {
	if e.enc != nil {
		e.enc.Close()
		e.enc = nil
	}
	e.small.Close()
	return e.yuv.Close()
}
