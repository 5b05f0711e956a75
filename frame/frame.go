// Package frame holds the types that travel along the video path: a captured
// image with its identity and timestamps, the detections attached to it, and
// the per-stage timings. Every stage package imports this one and no other
// stage package.
package frame

import (
	"image"
	"time"

	"gocv.io/x/gocv"
)

// Frame is one image on its way from a source to the viewers. The Frame owns
// Image: the stage that ends its journey calls Close.
type Frame struct {
	// Seq counts frames from 1 for each source, in capture order.
	Seq uint64
	// Source is the id of the source that produced the frame.
	Source string
	// Captured is when the frame reached sonolive. It comes from time.Now, so
	// it carries both the wall clock (for metadata and glass-to-glass) and
	// the monotonic clock (for latency arithmetic).
	Captured time.Time
	// Image is BGR, 8 bits per channel.
	Image gocv.Mat
	// Truth holds ground-truth lesion boxes in source pixels when the source
	// knows them (the synthetic phantom); nil otherwise.
	Truth []Box
	// TruthIDs name the lesion each Truth box shows, in the same order, so
	// a lesion seen again later is known to be the same one.
	TruthIDs []int
	// TruthOutlines are the Truth lesions' outlines, in the same order:
	// closed polygons in source pixels around each lesion's pixels, traced
	// row by row (its left and right edge in every row), whose calipers
	// are the lesion's own.
	TruthOutlines [][]Point
	// Blanked says why capture blanked the whole frame (its PHI masks did
	// not fit it); empty for a normal frame.
	Blanked string
	// Geometry is what the source knows of the image's physical size:
	// sources that carry it (DICOM, OpenIGTLink) set it; zero otherwise.
	Geometry Geometry

	// Set by the pipeline.

	// Detections are in source pixels, after tracking.
	Detections []Detection
	// Stale is true when the frame's own inference did not finish within the
	// budget, so its detections come from the tracker.
	Stale bool
	// Timings are per-stage durations for this frame.
	Timings Timings
	// Overlaid is true when the boxes and HUD are burned into Image.
	Overlaid bool
}

// Close frees the image.
func (f *Frame) Close() error {
	return f.Image.Close()
}

// Box is an axis-aligned rectangle in pixels: X1,Y1 inclusive top-left,
// X2,Y2 exclusive bottom-right.
type Box struct {
	X1, Y1, X2, Y2 float32
}

// W is the width.
func (b Box) W() float32 { return b.X2 - b.X1 }

// H is the height.
func (b Box) H() float32 { return b.Y2 - b.Y1 }

// Area is W*H, zero for an empty or inverted box.
func (b Box) Area() float32 {
	if b.X2 <= b.X1 || b.Y2 <= b.Y1 {
		return 0
	}
	return b.W() * b.H()
}

// IoU is the intersection over union of two boxes.
func (b Box) IoU(o Box) float32 {
	ix := min(b.X2, o.X2) - max(b.X1, o.X1)
	iy := min(b.Y2, o.Y2) - max(b.Y1, o.Y1)
	if ix <= 0 || iy <= 0 {
		return 0
	}
	inter := ix * iy
	return inter / (b.Area() + o.Area() - inter)
}

// Detection is one finding in a frame.
type Detection struct {
	Box     Box
	ClassID int
	Class   string
	Score   float32
	// Malignancy is the model's calibrated probability that the lesion is
	// malignant, or -1 when the model gives none.
	Malignancy float32
	// TrackID is stable while the tracker follows the same lesion; 0 before
	// tracking.
	TrackID uint64
	// StaleAge is how many frames ago the detector last saw this track; 0
	// means the box comes from this frame's own inference.
	StaleAge int
	// Outline is the lesion's boundary in source pixels, a closed polygon,
	// when the model segments (nil otherwise).
	Outline []Point
}

// Point is a position in source pixels.
type Point struct {
	X, Y float32
}

// Timings are the durations of each stage for one frame.
type Timings struct {
	Queue      time.Duration // capture until the pipeline took the frame
	Preprocess time.Duration // letterbox and tensor fill (when inferred)
	Infer      time.Duration // ORT Run (when inferred)
	Decode     time.Duration // output decoding and NMS (when inferred)
	Wait       time.Duration // time the frame waited for its own result
	Track      time.Duration
	Overlay    time.Duration
	Total      time.Duration // capture until overlay done: the added latency
}

// Geometry places the ultrasound image in the frame and gives its pixel
// size, so findings can be measured in millimetres.
type Geometry struct {
	// SpacingMM is the size of one pixel in millimetres, across (X) then
	// down (Y); zero when unknown.
	SpacingMM [2]float64
	// Region is the ultrasound image area in frame pixels (a DICOM
	// ultrasound region); empty when unknown or the whole frame.
	Region image.Rectangle
}

// Known reports whether the pixel size is known.
func (g Geometry) Known() bool { return g.SpacingMM[0] > 0 && g.SpacingMM[1] > 0 }

// Crop is the geometry of the part c of the frame: the spacing stays, the
// region moves with the crop and is cut to it.
func (g Geometry) Crop(c image.Rectangle) Geometry {
	if !g.Region.Empty() {
		g.Region = g.Region.Intersect(c).Sub(c.Min)
	}
	return g
}

// SizeMM is a box's width and height in millimetres, or false when the
// pixel size is unknown.
func (g Geometry) SizeMM(b Box) (w, h float64, ok bool) {
	if !g.Known() {
		return 0, 0, false
	}
	return float64(b.W()) * g.SpacingMM[0], float64(b.H()) * g.SpacingMM[1], true
}
