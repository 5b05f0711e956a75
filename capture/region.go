package capture

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"strconv"
	"strings"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

// Region says which part of the machine's screen is the ultrasound image and
// which parts carry patient data. Masks are filled black first (in source
// pixels), then the frame is cropped, so nothing downstream — detector,
// overlay, encoder, recorder — ever sees the masked pixels.
type Region struct {
	Crop  image.Rectangle // empty: the whole frame
	Masks []image.Rectangle
}

// IsZero reports whether the region changes nothing.
func (r Region) IsZero() bool { return r.Crop.Empty() && len(r.Masks) == 0 }

// ParseRect reads "x,y,w,h".
func ParseRect(s string) (image.Rectangle, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 4 {
		return image.Rectangle{}, fmt.Errorf("rectangle %q: want x,y,w,h", s)
	}
	var n [4]int
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return image.Rectangle{}, fmt.Errorf("rectangle %q: %w", s, err)
		}
		n[i] = v
	}
	if n[2] <= 0 || n[3] <= 0 || n[0] < 0 || n[1] < 0 {
		return image.Rectangle{}, fmt.Errorf("rectangle %q: negative origin or empty size", s)
	}
	return image.Rect(n[0], n[1], n[0]+n[2], n[1]+n[3]), nil
}

// Apply masks and crops f in place. Truth boxes move with the crop.
func (r Region) Apply(f *frame.Frame) error {
	bounds := image.Rect(0, 0, f.Image.Cols(), f.Image.Rows())
	for _, m := range r.Masks {
		m = m.Intersect(bounds)
		if m.Empty() {
			continue
		}
		gocv.Rectangle(&f.Image, m, color.RGBA{}, -1)
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
	truth := f.Truth[:0]
	for _, b := range f.Truth {
		b = frame.Box{
			X1: max(b.X1-float32(c.Min.X), 0), Y1: max(b.Y1-float32(c.Min.Y), 0),
			X2: min(b.X2-float32(c.Min.X), float32(c.Dx())), Y2: min(b.Y2-float32(c.Min.Y), float32(c.Dy())),
		}
		if b.Area() > 0 {
			truth = append(truth, b)
		}
	}
	f.Truth = truth
	return nil
}

type regionSource struct {
	Source
	region Region
}

func withRegion(src Source, r Region) (Source, error) {
	if r.IsZero() {
		return src, nil
	}
	return &regionSource{Source: src, region: r}, nil
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
	return f, nil
}

// Stats forwards to the wrapped source.
func (s *regionSource) Stats() Stats {
	if st, ok := s.Source.(interface{ Stats() Stats }); ok {
		return st.Stats()
	}
	return Stats{}
}
