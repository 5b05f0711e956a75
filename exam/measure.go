package exam

import (
	"image"
	"math"

	"gocv.io/x/gocv"

	"sonolive/frame"
	"sonolive/overlay"
)

// Boundary finds the lesion's own extent around the detector's box, the
// way a sonographer places calipers on its margin rather than on a box:
// the region around the box is smoothed (speckle), split into dark and
// bright by Otsu's threshold (lesions are hypo- or anechoic against the
// tissue), cleaned up, and the dark region holding the box's centre is
// taken. The box is kept when that region does not look like the same
// lesion (IoU with the box under 0.5, or a side more than 15% off the
// box's: an isoechoic lesion, or one run into its own posterior shadow or
// a dark neighbour), so the boundary only corrects the box, never
// replaces it with something else.
func Boundary(img gocv.Mat, b frame.Box) (frame.Box, bool) {
	mw, mh := b.W()*0.3, b.H()*0.3
	r := image.Rect(int(b.X1-mw), int(b.Y1-mh), int(math.Ceil(float64(b.X2+mw))), int(math.Ceil(float64(b.Y2+mh)))).
		Intersect(image.Rect(0, 0, img.Cols(), img.Rows()))
	if r.Dx() < 12 || r.Dy() < 12 {
		return b, false
	}
	roi := img.Region(r)
	defer roi.Close()
	gray, blur, mask := gocv.NewMat(), gocv.NewMat(), gocv.NewMat()
	defer gray.Close()
	defer blur.Close()
	defer mask.Close()
	gocv.CvtColor(roi, &gray, gocv.ColorBGRToGray)
	k := max(3, min(r.Dx(), r.Dy())/12) | 1
	gocv.GaussianBlur(gray, &blur, image.Pt(k, k), 0, 0, gocv.BorderReflect)
	gocv.Threshold(blur, &mask, 0, 255, gocv.ThresholdBinaryInv|gocv.ThresholdOtsu)
	kernel := gocv.GetStructuringElement(gocv.MorphEllipse, image.Pt(k, k))
	defer kernel.Close()
	gocv.MorphologyEx(mask, &mask, gocv.MorphOpen, kernel)
	gocv.MorphologyEx(mask, &mask, gocv.MorphClose, kernel)
	labels, stats, cents := gocv.NewMat(), gocv.NewMat(), gocv.NewMat()
	defer labels.Close()
	defer stats.Close()
	defer cents.Close()
	n := gocv.ConnectedComponentsWithStats(mask, &labels, &stats, &cents)
	cx, cy := int((b.X1+b.X2)/2)-r.Min.X, int((b.Y1+b.Y2)/2)-r.Min.Y
	if n < 2 || cx < 0 || cy < 0 || cx >= labels.Cols() || cy >= labels.Rows() {
		return b, false
	}
	id := int(labels.GetIntAt(cy, cx))
	if id == 0 {
		return b, false // the centre is not dark
	}
	x, y := stats.GetIntAt(id, 0), stats.GetIntAt(id, 1)
	w, h := stats.GetIntAt(id, 2), stats.GetIntAt(id, 3)
	got := frame.Box{X1: float32(int(x) + r.Min.X), Y1: float32(int(y) + r.Min.Y),
		X2: float32(int(x+w) + r.Min.X), Y2: float32(int(y+h) + r.Min.Y)}
	if got.IoU(b) < 0.5 || !near(got.W(), b.W()) || !near(got.H(), b.H()) {
		return b, false
	}
	return got, true
}

// Measure sizes f on img as a sonographer would: with calipers on the
// lesion's outline when the detection has one (Measured "outline": the
// long and short axis, and the outline's extent), else on the lesion's
// boundary found around its box ("boundary"), else on the box ("box"); in
// millimetres when g knows the pixel size (from says where that came
// from). It returns the extent, the box to draw so that its label's size
// is the finding's.
func (f *Finding) Measure(img gocv.Mat, det frame.Detection, g frame.Geometry, from string) frame.Box {
	var mb frame.Box
	if c := outlineCalipers(det.Outline, g); c != nil {
		f.Measured, f.Calipers, mb = "outline", c, extent(det.Outline)
	} else if b, ok := Boundary(img, det.Box); ok {
		f.Measured, mb = "boundary", b
	} else {
		f.Measured, mb = "box", det.Box
	}
	if f.Measured != "box" {
		f.MeasuredBox = &overlay.BoxMeta{round1(float64(mb.X1)), round1(float64(mb.Y1)), round1(float64(mb.W())), round1(float64(mb.H()))}
	}
	if g.Known() {
		w, h, _ := g.SizeMM(mb)
		f.SizeMM = &[2]float64{round1(w), round1(h)}
		f.SpacingMM = &[2]float64{g.SpacingMM[0], g.SpacingMM[1]}
		f.SpacingFrom = from
	}
	return mb
}

// outlineCalipers are the calipers on an outline (nil: none, or no area).
func outlineCalipers(outline []frame.Point, g frame.Geometry) *overlay.CalipersMeta {
	if len(outline) < 3 {
		return nil
	}
	return overlay.Calipers(outline, g)
}

// extent is an outline's bounding box.
func extent(pts []frame.Point) frame.Box {
	b := frame.Box{X1: pts[0].X, Y1: pts[0].Y, X2: pts[0].X, Y2: pts[0].Y}
	for _, p := range pts[1:] {
		b.X1, b.Y1 = min(b.X1, p.X), min(b.Y1, p.Y)
		b.X2, b.Y2 = max(b.X2, p.X), max(b.Y2, p.Y)
	}
	return b
}

// near: a boundary side within 0.87..1.15 of the box's.
func near(got, box float32) bool { return got >= 0.87*box && got <= 1.15*box }
