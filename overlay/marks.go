package overlay

import (
	"fmt"
	"image"
	"image/color"
	"math"

	"gocv.io/x/gocv"
)

// Mark is a consultation mark (docs/streaming.md, "DataChannel consult")
// in source pixels, drawn into a key frame the way the pages draw it.
type Mark struct {
	Shape  string // arrow, circle, caliper, freehand
	Points [][2]float64
	Role   string // whose: the colour
}

// The pages' colours (ui/static/marks.js): the expert's blue, the
// sonographer's magenta, anyone else's yellow.
var markColors = map[string]color.RGBA{
	"expert":      {R: 0x4d, G: 0xb8, B: 0xff},
	"sonographer": {R: 0xff, G: 0x5c, B: 0xd6},
}

func markColor(role string) color.RGBA {
	if c, ok := markColors[role]; ok {
		return c
	}
	return color.RGBA{R: 0xff, G: 0xd8, B: 0x4d}
}

// DrawMarks draws marks into img: each with a dark outline under it, so
// it reads over bright tissue, as on the pages.
func DrawMarks(img *gocv.Mat, marks []Mark) {
	k := strokeScale(*img)
	thick := max(2, int(math.Round(2.5*k)))
	for _, m := range marks {
		if len(m.Points) < 2 {
			continue
		}
		c := markColor(m.Role)
		drawMark(img, m, color.RGBA{R: 11, G: 15, B: 20}, thick+2*int(math.Round(k)), k)
		drawMark(img, m, c, thick, k)
	}
}

func drawMark(img *gocv.Mat, m Mark, c color.RGBA, thick int, k float64) {
	pt := func(p [2]float64) image.Point { return image.Pt(int(math.Round(p[0])), int(math.Round(p[1]))) }
	a, b := pt(m.Points[0]), pt(m.Points[1])
	switch m.Shape {
	case "arrow":
		gocv.ArrowedLine(img, a, b, c, thick)
	case "circle":
		r := int(math.Round(math.Hypot(m.Points[1][0]-m.Points[0][0], m.Points[1][1]-m.Points[0][1])))
		gocv.Circle(img, a, r, c, thick)
	case "caliper":
		gocv.Line(img, a, b, c, thick)
		// End ticks across the line, like the machine's own calipers.
		dx, dy := float64(b.X-a.X), float64(b.Y-a.Y)
		n := math.Hypot(dx, dy)
		if n == 0 {
			return
		}
		tx, ty := -dy/n*6*k, dx/n*6*k
		for _, p := range []image.Point{a, b} {
			gocv.Line(img, image.Pt(p.X-int(tx), p.Y-int(ty)), image.Pt(p.X+int(tx), p.Y+int(ty)), c, thick)
		}
		mid := image.Pt((a.X+b.X)/2+int(8*k), (a.Y+b.Y)/2-int(8*k))
		gocv.PutText(img, fmt.Sprintf("%.0f px", n), mid, gocv.FontHersheySimplex, 0.5*k, c, max(1, thick/2))
	default: // freehand
		pts := make([]image.Point, len(m.Points))
		for i, p := range m.Points {
			pts[i] = pt(p)
		}
		pv := gocv.NewPointsVectorFromPoints([][]image.Point{pts})
		gocv.Polylines(img, pv, false, c, thick)
		pv.Close()
	}
}
