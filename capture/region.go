package capture

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

// Region says which part of the machine's screen is the ultrasound image and
// which parts carry patient data. Masks are filled black first (in source
// pixels), then the frame is cropped, so nothing downstream — detector,
// overlay, encoder, recorder — ever sees the masked pixels.
//
// Masks fail closed: a frame they do not fit is blanked whole, with a
// message burned in, rather than passed with patient data uncovered. A
// mask in pixels fits a frame only if it lies inside it and the frame has
// the size the masks were drawn for (Size; when zero, the first frame's
// size, remembered by Lock across reconnects and restarts). A mask given
// in percent scales with any frame.
type Region struct {
	Crop  image.Rectangle // empty: the whole frame
	Masks []Mask
	// Size is the frame size pixel masks were drawn for; zero: learn it
	// from the first frame.
	Size image.Point
	// Lock remembers the learned size; share one between the runs of a
	// session so a device back at another resolution is caught. Nil: a
	// fresh lock per Apply chain.
	Lock *SizeLock
}

// Mask is one PHI rectangle, in pixels or in percent of the frame.
type Mask struct {
	Rect     image.Rectangle // pixels, or hundredths of a percent when Relative
	Relative bool
}

// SizeLock remembers the frame size pixel masks were drawn for.
type SizeLock struct {
	mu   sync.Mutex
	size image.Point
}

// check records size on first use and reports whether it matches.
func (l *SizeLock) check(size image.Point) (want image.Point, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.size == (image.Point{}) {
		l.size = size
	}
	return l.size, l.size == size
}

// IsZero reports whether the region changes nothing.
func (r Region) IsZero() bool { return r.Crop.Empty() && len(r.Masks) == 0 }

// ParseRect reads "x,y,w,h" in pixels.
func ParseRect(s string) (image.Rectangle, error) {
	m, err := ParseMask(s)
	if err != nil {
		return image.Rectangle{}, err
	}
	if m.Relative {
		return image.Rectangle{}, fmt.Errorf("rectangle %q: want pixels, not percent", s)
	}
	return m.Rect, nil
}

// ParseMask reads "x,y,w,h" in pixels, or "x%,y%,w%,h%" in percent of the
// frame (all four the same kind), e.g. "0%,0%,100%,8%" for a header bar.
func ParseMask(s string) (Mask, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 4 {
		return Mask{}, fmt.Errorf("rectangle %q: want x,y,w,h", s)
	}
	var n [4]int
	pct := 0
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if v, ok := strings.CutSuffix(p, "%"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || math.IsNaN(f) || f < 0 || f > 100 {
				return Mask{}, fmt.Errorf("rectangle %q: %q is not a percentage", s, p)
			}
			n[i] = int(math.Round(f * 100))
			pct++
			continue
		}
		v, err := strconv.Atoi(p)
		if err != nil {
			return Mask{}, fmt.Errorf("rectangle %q: %w", s, err)
		}
		n[i] = v
	}
	if pct != 0 && pct != 4 {
		return Mask{}, fmt.Errorf("rectangle %q: give all four in pixels or all four in percent", s)
	}
	if n[2] <= 0 || n[3] <= 0 || n[0] < 0 || n[1] < 0 {
		return Mask{}, fmt.Errorf("rectangle %q: negative origin or empty size", s)
	}
	if pct == 4 && (n[0]+n[2] > 10000 || n[1]+n[3] > 10000) {
		return Mask{}, fmt.Errorf("rectangle %q: reaches past 100%%", s)
	}
	return Mask{Rect: image.Rect(n[0], n[1], n[0]+n[2], n[1]+n[3]), Relative: pct == 4}, nil
}

// in returns the mask in pixels of a frame of size.
func (m Mask) in(size image.Point) image.Rectangle {
	if !m.Relative {
		return m.Rect
	}
	// Outward rounding: a relative mask covers at least its share.
	sc := func(v, n int, up bool) int {
		if up {
			return (v*n + 9999) / 10000
		}
		return v * n / 10000
	}
	return image.Rect(sc(m.Rect.Min.X, size.X, false), sc(m.Rect.Min.Y, size.Y, false),
		sc(m.Rect.Max.X, size.X, true), sc(m.Rect.Max.Y, size.Y, true))
}

// ErrMasksDoNotFit is why a frame was blanked.
var ErrMasksDoNotFit = errors.New("PHI masks do not fit the frame")

// fit returns the masks in pixels for a frame of size, or why they do not
// fit it.
func (r Region) fit(size image.Point, lock *SizeLock) ([]image.Rectangle, error) {
	bounds := image.Rectangle{Max: size}
	out := make([]image.Rectangle, 0, len(r.Masks))
	pixels := false
	for _, m := range r.Masks {
		px := m.in(size)
		if !px.In(bounds) {
			return nil, fmt.Errorf("%w: mask %v lies outside the %dx%d frame", ErrMasksDoNotFit, px, size.X, size.Y)
		}
		pixels = pixels || !m.Relative
		out = append(out, px)
	}
	if pixels {
		want := r.Size
		if want == (image.Point{}) && lock != nil {
			want, _ = lock.check(size)
		}
		if want != (image.Point{}) && want != size {
			return nil, fmt.Errorf("%w: pixel masks were drawn for %dx%d, the frame is %dx%d", ErrMasksDoNotFit, want.X, want.Y, size.X, size.Y)
		}
	}
	return out, nil
}

// blank fills the whole frame black and says why on it.
func blank(f *frame.Frame, why error) {
	f.Image.SetTo(gocv.NewScalar(0, 0, 0, 0))
	f.Truth, f.TruthIDs, f.TruthOutlines = nil, nil, nil
	msg := "PHI MASKS DO NOT FIT THIS FRAME: VIDEO BLANKED"
	scale := max(0.4, float64(f.Image.Cols())/1400)
	gocv.PutText(&f.Image, msg, image.Pt(f.Image.Cols()/20, f.Image.Rows()/2), gocv.FontHersheySimplex, scale, color.RGBA{255, 255, 255, 0}, max(1, int(scale*2)))
	gocv.PutText(&f.Image, fmt.Sprintf("%dx%d - check the source's masks", f.Image.Cols(), f.Image.Rows()),
		image.Pt(f.Image.Cols()/20, f.Image.Rows()/2+int(40*scale)), gocv.FontHersheySimplex, scale*0.7, color.RGBA{200, 200, 200, 0}, 1)
	f.Blanked = why.Error()
}

// Apply masks and crops f in place. Truth boxes move with the crop. A
// frame the masks do not fit is blanked (f.Blanked says why) and not
// cropped: it passes on, so the video shows the problem.
func (r Region) Apply(f *frame.Frame) error {
	bounds := image.Rect(0, 0, f.Image.Cols(), f.Image.Rows())
	masks, err := r.fit(bounds.Max, r.Lock)
	if err != nil {
		blank(f, err)
		return nil
	}
	for _, m := range masks {
		if m.Empty() {
			continue
		}
		v := f.Image.Region(m) // exactly m: cv::rectangle would take one more row and column
		v.SetTo(gocv.NewScalar(0, 0, 0, 0))
		v.Close()
	}
	if r.Crop.Empty() {
		return nil
	}
	c := r.Crop.Intersect(bounds)
	if c.Empty() {
		return fmt.Errorf("crop %v lies outside the %dx%d frame", r.Crop, bounds.Dx(), bounds.Dy())
	}
	view := f.Image.Region(c)
	cropped := view.Clone()
	view.Close()
	f.Image.Close()
	f.Image = cropped
	cropTruth(f, c)
	f.Geometry = f.Geometry.Crop(c)
	return nil
}

// cropTruth moves the frame's ground truth into crop c: boxes and outlines
// are shifted and clipped to it, and a lesion the crop leaves out is
// dropped with its id and outline, so the three stay in step.
func cropTruth(f *frame.Frame, c image.Rectangle) {
	dx, dy, w, h := float32(c.Min.X), float32(c.Min.Y), float32(c.Dx()), float32(c.Dy())
	ids, outlines := len(f.TruthIDs) == len(f.Truth), len(f.TruthOutlines) == len(f.Truth)
	truth := f.Truth[:0]
	var keptIDs []int
	var keptOutlines [][]frame.Point
	for i, b := range f.Truth {
		b = frame.Box{X1: max(b.X1-dx, 0), Y1: max(b.Y1-dy, 0), X2: min(b.X2-dx, w), Y2: min(b.Y2-dy, h)}
		if b.Area() <= 0 {
			continue
		}
		truth = append(truth, b)
		if ids {
			keptIDs = append(keptIDs, f.TruthIDs[i])
		}
		if outlines {
			o := make([]frame.Point, len(f.TruthOutlines[i]))
			for k, p := range f.TruthOutlines[i] {
				o[k] = frame.Point{X: min(max(p.X-dx, 0), w), Y: min(max(p.Y-dy, 0), h)}
			}
			keptOutlines = append(keptOutlines, o)
		}
	}
	f.Truth, f.TruthIDs, f.TruthOutlines = truth, keptIDs, keptOutlines
}

func withRegion(src Source, r Region, log *zap.Logger) (Source, error) {
	if r.IsZero() {
		return src, nil
	}
	if r.Lock == nil {
		r.Lock = &SizeLock{}
	}
	return &regionSource{Source: src, region: r, log: log}, nil
}

type regionSource struct {
	Source
	region  Region
	log     *zap.Logger
	blanked atomic.Uint64
	lastWhy string // the last reason logged (Next's goroutine only)
}

func (s *regionSource) Next(ctx context.Context) (*frame.Frame, error) {
	f, err := s.Source.Next(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.region.Apply(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("source %s: %w", s.Info().ID, err)
	}
	if f.Blanked != "" {
		s.blanked.Add(1)
		if f.Blanked != s.lastWhy {
			s.log.Error("frames blanked: PHI masks do not fit", zap.String("reason", f.Blanked))
		}
	} else if s.lastWhy != "" {
		s.log.Info("PHI masks fit again; frames pass")
	}
	s.lastWhy = f.Blanked
	return f, nil
}

// Stats forwards to the wrapped source and adds the blanked frames.
func (s *regionSource) Stats() Stats {
	var st Stats
	if w, ok := s.Source.(interface{ Stats() Stats }); ok {
		st = w.Stats()
	}
	st.Blanked = s.blanked.Load()
	return st
}
