// Package overlay draws the AI's findings into the frame — boxes, labels,
// scores, track ids, stale markers and a latency HUD — and describes the
// same findings as time-stamped metadata for viewers that draw their own.
package overlay

import (
	"fmt"
	"image"
	"image/color"
	"math"

	"gocv.io/x/gocv"

	"sonolive/frame"
	"sonolive/shape"
)

// HUD is the status line shown in the corner of the frame.
type HUD struct {
	FPS        float64
	InferMS    float64 // recent inference time
	TotalMS    float64 // recent added latency
	MissRate   float64 // fraction of frames whose inference missed the budget
	AIStatus   string  // "ok", "stale", "unavailable: …"
	ShowTiming bool
}

// Style sets the colours, as true RGB (gocv swaps to BGR itself).
type Style struct {
	Fresh, Stale, Text, Shade color.RGBA
	Scale                     float64
}

// DefaultStyle: green for boxes from this frame's inference, amber for
// boxes carried by the tracker.
func DefaultStyle() Style {
	return Style{
		Fresh: color.RGBA{R: 60, G: 220, B: 60},
		Stale: color.RGBA{R: 255, G: 170, B: 0},
		Text:  color.RGBA{R: 255, G: 255, B: 255},
		Shade: color.RGBA{R: 20, G: 20, B: 20},
		Scale: 0.45,
	}
}

// Drawer draws overlays. It holds no per-frame state.
type Drawer struct {
	style Style
}

// NewDrawer returns a drawer with the given style.
func NewDrawer(s Style) *Drawer { return &Drawer{style: s} }

// Draw burns f's detections and the HUD into f.Image.
func (d *Drawer) Draw(f *frame.Frame, hud HUD) {
	d.DrawFindings(&f.Image, f.Detections, f.Geometry)
	d.hud(&f.Image, hud, strokeScale(f.Image))
}

// strokeScale scales strokes and text with the frame so 320-px clips and
// 1080p captures both stay legible.
func strokeScale(img gocv.Mat) float64 { return math.Max(1, float64(img.Cols())/640) }

// DrawFindings draws boxes and their labels into img, as Draw does,
// without the HUD: for a key frame drawn after the fact. Labels give each
// box's size in millimetres when g knows the pixel size.
func (d *Drawer) DrawFindings(img *gocv.Mat, dets []frame.Detection, g frame.Geometry) {
	k := strokeScale(*img)
	thick := int(math.Round(2 * k))
	for _, det := range dets {
		c := d.style.Fresh
		if det.StaleAge > 0 {
			c = d.style.Stale
		}
		r := image.Rect(int(det.Box.X1), int(det.Box.Y1), int(math.Ceil(float64(det.Box.X2))), int(math.Ceil(float64(det.Box.Y2))))
		if len(det.Outline) >= 3 {
			// The outline says where the lesion is; the box only frames
			// it, thinly.
			drawOutline(img, det, c, thick, k)
			dashedRect(img, r, c, 1)
		} else if det.StaleAge > 0 {
			dashedRect(img, r, c, max(1, thick-1))
		} else {
			gocv.Rectangle(img, r, c, thick)
		}
		d.label(img, r, labelText(det, g), c, k)
	}
}

// drawOutline draws a lesion's outline and its calipers: the long and the
// short axis with cross marks at their ends, like the machine's own.
func drawOutline(img *gocv.Mat, det frame.Detection, c color.RGBA, thick int, k float64) {
	pts := make([]image.Point, len(det.Outline))
	sp := make([]shape.Point, len(det.Outline))
	for i, p := range det.Outline {
		pts[i] = image.Pt(int(math.Round(float64(p.X))), int(math.Round(float64(p.Y))))
		sp[i] = shape.Point{X: float64(p.X), Y: float64(p.Y)}
	}
	pv := gocv.NewPointsVectorFromPoints([][]image.Point{pts})
	defer pv.Close()
	gocv.Polylines(img, pv, true, c, thick)
	m, ok := shape.Measure(sp)
	if !ok {
		return
	}
	cal := color.RGBA{R: 255, G: 255, B: 255, A: 0}
	arm := int(math.Round(4 * k))
	for _, a := range []shape.Caliper{m.Long, m.Short} {
		p, q := image.Pt(int(math.Round(a.A.X)), int(math.Round(a.A.Y))), image.Pt(int(math.Round(a.B.X)), int(math.Round(a.B.Y)))
		gocv.Line(img, p, q, cal, 1)
		for _, e := range []image.Point{p, q} {
			gocv.Line(img, image.Pt(e.X-arm, e.Y), image.Pt(e.X+arm, e.Y), cal, 1)
			gocv.Line(img, image.Pt(e.X, e.Y-arm), image.Pt(e.X, e.Y+arm), cal, 1)
		}
	}
}

func labelText(det frame.Detection, g frame.Geometry) string {
	s := fmt.Sprintf("%s %.2f #%d", det.Class, det.Score, det.TrackID)
	if c := Calipers(det.Outline, g); len(det.Outline) >= 3 && c != nil && c.LongMM != nil {
		// Calipers on the outline: long x short axis.
		s += fmt.Sprintf(" %.1fx%.1fmm", *c.LongMM, *c.ShortMM)
	} else if w, h, ok := g.SizeMM(det.Box); ok {
		s += fmt.Sprintf(" %.0fx%.0fmm", w, h)
	}
	if det.Malignancy >= 0 {
		s += fmt.Sprintf(" M%.0f%%", 100*det.Malignancy)
	}
	if det.StaleAge > 0 {
		s += fmt.Sprintf(" stale %df", det.StaleAge)
	}
	return s
}

// label puts text on a filled tab above the box (below it at the top edge).
func (d *Drawer) label(img *gocv.Mat, r image.Rectangle, text string, c color.RGBA, k float64) {
	scale := d.style.Scale * k
	sz, base := gocv.GetTextSizeWithBaseline(text, gocv.FontHersheySimplex, scale, 1)
	y := r.Min.Y - 3
	if y-sz.Y-base < 0 {
		y = r.Max.Y + sz.Y + 3
	}
	x := min(max(r.Min.X, 0), max(img.Cols()-sz.X-2, 0))
	gocv.Rectangle(img, image.Rect(x, y-sz.Y-2, x+sz.X+2, y+base-1), c, -1)
	gocv.PutText(img, text, image.Pt(x+1, y-1), gocv.FontHersheySimplex, scale, color.RGBA{}, 1)
}

func (d *Drawer) hud(img *gocv.Mat, h HUD, k float64) {
	lines := []string{"AI: " + h.AIStatus}
	if h.ShowTiming {
		lines = append(lines,
			fmt.Sprintf("%.1f fps  infer %.1f ms", h.FPS, h.InferMS),
			fmt.Sprintf("added %.1f ms  miss %.1f%%", h.TotalMS, 100*h.MissRate))
	}
	scale := d.style.Scale * k
	lineH := int(18 * k)
	w := 0
	for _, l := range lines {
		w = max(w, gocv.GetTextSize(l, gocv.FontHersheySimplex, scale, 1).X)
	}
	x0 := img.Cols() - w - int(10*k)
	y0 := int(4 * k)
	box := image.Rect(x0-4, y0, img.Cols()-2, y0+lineH*len(lines)+4).Intersect(image.Rect(0, 0, img.Cols(), img.Rows()))
	if box.Empty() {
		return
	}
	// Shade the HUD area so it reads over bright tissue.
	roi := img.Region(box)
	shade := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(float64(d.style.Shade.R), float64(d.style.Shade.G), float64(d.style.Shade.B), 0), roi.Rows(), roi.Cols(), roi.Type())
	gocv.AddWeighted(roi, 0.4, shade, 0.6, 0, &roi)
	shade.Close()
	roi.Close()
	for i, l := range lines {
		c := d.style.Text
		if i == 0 && h.AIStatus != "ok" {
			c = d.style.Stale
		}
		gocv.PutText(img, l, image.Pt(x0, y0+lineH*(i+1)-4), gocv.FontHersheySimplex, scale, c, 1)
	}
	// The clinician must never read the overlay as a diagnosis.
	note := "AI assist - not a diagnosis"
	gocv.PutText(img, note, image.Pt(int(6*k), img.Rows()-int(6*k)), gocv.FontHersheySimplex, scale*0.85, d.style.Text, 1)
}

func dashedRect(img *gocv.Mat, r image.Rectangle, c color.RGBA, thick int) {
	const dash, gap = 8, 5
	seg := func(a, b image.Point) {
		dx, dy := b.X-a.X, b.Y-a.Y
		n := int(math.Hypot(float64(dx), float64(dy)))
		for s := 0; s < n; s += dash + gap {
			e := min(s+dash, n)
			p := image.Pt(a.X+dx*s/max(n, 1), a.Y+dy*s/max(n, 1))
			q := image.Pt(a.X+dx*e/max(n, 1), a.Y+dy*e/max(n, 1))
			gocv.Line(img, p, q, c, thick)
		}
	}
	seg(r.Min, image.Pt(r.Max.X, r.Min.Y))
	seg(image.Pt(r.Max.X, r.Min.Y), r.Max)
	seg(r.Max, image.Pt(r.Min.X, r.Max.Y))
	seg(image.Pt(r.Min.X, r.Max.Y), r.Min)
}
