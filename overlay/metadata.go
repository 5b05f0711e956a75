package overlay

import (
	"image"
	"math"
	"time"

	"sonolive/frame"
	"sonolive/shape"
)

// SchemaVersion identifies the metadata layout (docs/metadata.md).
const SchemaVersion = 1

// Metadata is one frame's findings, as JSON. The schema is documented in
// docs/metadata.md; change both together.
type Metadata struct {
	Schema int    `json:"schema"`
	Seq    uint64 `json:"seq"`
	Source string `json:"source"`
	// CaptureTime is the wall-clock capture time; CaptureUnixMS the same in
	// milliseconds since the epoch, for clients that match frames by time.
	CaptureTime   time.Time `json:"capture_time"`
	CaptureUnixMS float64   `json:"capture_unix_ms"`
	Width         int       `json:"width"`
	Height        int       `json:"height"`
	Stale         bool      `json:"stale"`
	// BurnedIn is true when the boxes are already drawn into the frame's
	// pixels, so a viewer should not draw them again.
	BurnedIn   bool      `json:"burned_in"`
	TimingsMS  TimingsMS `json:"timings_ms"`
	Detections []DetMeta `json:"detections"`
	Truth      []BoxMeta `json:"truth,omitempty"`
	// TruthCalipers are the Truth lesions' own calipers, in the same
	// order, when the source knows their outlines (the phantom).
	TruthCalipers []*CalipersMeta `json:"truth_calipers,omitempty"`
	// Geometry is present when the source knows the pixel size.
	Geometry *GeometryMeta `json:"geometry,omitempty"`
}

// GeometryMeta is the physical size of the frame's pixels, and where the
// ultrasound image lies in it when the source says.
type GeometryMeta struct {
	SpacingMM [2]float64 `json:"spacing_mm"`
	Region    *BoxMeta   `json:"region,omitempty"`
}

// TimingsMS are per-stage durations in milliseconds.
type TimingsMS struct {
	Queue      float64 `json:"queue"`
	Preprocess float64 `json:"preprocess,omitempty"`
	Infer      float64 `json:"infer,omitempty"`
	Decode     float64 `json:"decode,omitempty"`
	Wait       float64 `json:"wait"`
	Track      float64 `json:"track"`
	Overlay    float64 `json:"overlay"`
	Total      float64 `json:"total"`
}

// Frame is the geometry g describes; zero for nil.
func (g *GeometryMeta) Frame() frame.Geometry {
	if g == nil {
		return frame.Geometry{}
	}
	out := frame.Geometry{SpacingMM: g.SpacingMM}
	if r := g.Region; r != nil {
		out.Region = image.Rect(int(r[0]), int(r[1]), int(r[0]+r[2]), int(r[1]+r[3]))
	}
	return out
}

// DetMeta is one detection in source pixels.
type DetMeta struct {
	Box      BoxMeta `json:"box"`
	Class    string  `json:"class"`
	ClassID  int     `json:"class_id"`
	Score    float64 `json:"score"`
	TrackID  uint64  `json:"track_id"`
	StaleAge int     `json:"stale_age"`
	// Malignancy is omitted when the model gives none.
	Malignancy *float64 `json:"malignancy,omitempty"`
	// SizeMM is the box's width and height in millimetres, when the
	// source knows the pixel size.
	SizeMM *[2]float64 `json:"size_mm,omitempty"`
	// Outline is the lesion's boundary, [[x, y], …] in source pixels, when
	// the model segments; Calipers are measured on it.
	Outline  [][2]float64  `json:"outline,omitempty"`
	Calipers *CalipersMeta `json:"calipers,omitempty"`
}

// CalipersMeta are an outline's calipers and shape (package shape): the
// long axis (greatest diameter) and the short axis (widest chord
// perpendicular to it) as [x1, y1, x2, y2] in source pixels, their lengths
// in pixels and, when the source knows the pixel size, in millimetres.
type CalipersMeta struct {
	Long    [4]float64 `json:"long"`
	Short   [4]float64 `json:"short"`
	LongPX  float64    `json:"long_px"`
	ShortPX float64    `json:"short_px"`
	LongMM  *float64   `json:"long_mm,omitempty"`
	ShortMM *float64   `json:"short_mm,omitempty"`
	// TallerThanWide: deeper (image rows) than wide, in millimetres when
	// known (ACR TI-RADS' shape feature).
	TallerThanWide bool `json:"taller_than_wide"`
	// Solidity is area / convex hull area: below ~0.9 the margin is
	// lobulated or irregular.
	Solidity float64 `json:"solidity"`
}

// Calipers measures an outline in source pixels with the frame's geometry;
// nil when it has no area.
func Calipers(outline []frame.Point, g frame.Geometry) *CalipersMeta {
	pts := make([]shape.Point, len(outline))
	for i, p := range outline {
		pts[i] = shape.Point{X: float64(p.X), Y: float64(p.Y)}
	}
	m, ok := shape.Measure(pts)
	if !ok {
		return nil
	}
	r1 := func(v float64) float64 { return math.Round(v*10) / 10 }
	seg := func(c shape.Caliper) [4]float64 { return [4]float64{r1(c.A.X), r1(c.A.Y), r1(c.B.X), r1(c.B.Y)} }
	out := &CalipersMeta{Long: seg(m.Long), Short: seg(m.Short), LongPX: r1(m.Long.Pixels), ShortPX: r1(m.Short.Pixels),
		TallerThanWide: m.TallerThanWide, Solidity: math.Round(m.Solidity*1000) / 1000}
	if g.Known() {
		mm := func(c shape.Caliper) *float64 {
			v := r1(math.Hypot((c.B.X-c.A.X)*g.SpacingMM[0], (c.B.Y-c.A.Y)*g.SpacingMM[1]))
			return &v
		}
		out.LongMM, out.ShortMM = mm(m.Long), mm(m.Short)
		out.TallerThanWide = m.Depth*g.SpacingMM[1] > m.Width*g.SpacingMM[0]
	}
	return out
}

// Detections turns metadata back into detections, for drawing a frame's
// findings after the fact.
func Detections(ms []DetMeta) []frame.Detection {
	out := make([]frame.Detection, 0, len(ms))
	for _, m := range ms {
		d := frame.Detection{
			Box:   frame.Box{X1: float32(m.Box[0]), Y1: float32(m.Box[1]), X2: float32(m.Box[0] + m.Box[2]), Y2: float32(m.Box[1] + m.Box[3])},
			Class: m.Class, ClassID: m.ClassID, Score: float32(m.Score), TrackID: m.TrackID, StaleAge: m.StaleAge, Malignancy: -1,
		}
		if m.Malignancy != nil {
			d.Malignancy = float32(*m.Malignancy)
		}
		for _, p := range m.Outline {
			d.Outline = append(d.Outline, frame.Point{X: float32(p[0]), Y: float32(p[1])})
		}
		out = append(out, d)
	}
	return out
}

// BoxMeta is [x, y, w, h] in source pixels, like COCO.
type BoxMeta [4]float64

func boxMeta(b frame.Box) BoxMeta {
	r := func(v float32) float64 { return math.Round(float64(v)*10) / 10 }
	return BoxMeta{r(b.X1), r(b.Y1), r(b.W()), r(b.H())}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// NewMetadata describes f.
func NewMetadata(f *frame.Frame) Metadata {
	m := Metadata{
		Schema: SchemaVersion, Seq: f.Seq, Source: f.Source,
		CaptureTime:   f.Captured.UTC(),
		CaptureUnixMS: float64(f.Captured.UnixMicro()) / 1e3,
		Width:         f.Image.Cols(), Height: f.Image.Rows(),
		Stale: f.Stale, BurnedIn: f.Overlaid,
		TimingsMS: TimingsMS{
			Queue: ms(f.Timings.Queue), Preprocess: ms(f.Timings.Preprocess), Infer: ms(f.Timings.Infer),
			Decode: ms(f.Timings.Decode), Wait: ms(f.Timings.Wait), Track: ms(f.Timings.Track),
			Overlay: ms(f.Timings.Overlay), Total: ms(f.Timings.Total),
		},
		Detections: make([]DetMeta, 0, len(f.Detections)),
	}
	for _, d := range f.Detections {
		dm := DetMeta{Box: boxMeta(d.Box), Class: d.Class, ClassID: d.ClassID, Score: math.Round(float64(d.Score)*1e3) / 1e3, TrackID: d.TrackID, StaleAge: d.StaleAge}
		if d.Malignancy >= 0 {
			v := math.Round(float64(d.Malignancy)*1e3) / 1e3
			dm.Malignancy = &v
		}
		if w, h, ok := f.Geometry.SizeMM(d.Box); ok {
			dm.SizeMM = &[2]float64{math.Round(w*10) / 10, math.Round(h*10) / 10}
		}
		if len(d.Outline) >= 3 {
			dm.Outline = make([][2]float64, len(d.Outline))
			for i, p := range d.Outline {
				dm.Outline[i] = [2]float64{math.Round(float64(p.X)*10) / 10, math.Round(float64(p.Y)*10) / 10}
			}
			dm.Calipers = Calipers(d.Outline, f.Geometry)
		}
		m.Detections = append(m.Detections, dm)
	}
	if g := f.Geometry; g.Known() {
		m.Geometry = &GeometryMeta{SpacingMM: g.SpacingMM}
		if !g.Region.Empty() {
			r := boxMeta(frame.Box{X1: float32(g.Region.Min.X), Y1: float32(g.Region.Min.Y), X2: float32(g.Region.Max.X), Y2: float32(g.Region.Max.Y)})
			m.Geometry.Region = &r
		}
	}
	for _, b := range f.Truth {
		m.Truth = append(m.Truth, boxMeta(b))
	}
	if len(f.TruthOutlines) == len(f.Truth) {
		for _, o := range f.TruthOutlines {
			m.TruthCalipers = append(m.TruthCalipers, Calipers(o, f.Geometry))
		}
	}
	return m
}
