// Package shape measures a lesion from its outline the way a sonographer
// does with the machine's calipers: the long axis (the greatest diameter)
// and the short axis (the greatest width perpendicular to it), whether it
// is taller than wide (anteroposterior against transverse extent, the image
// rows being depth), and how irregular its margin is (solidity: its area
// over its convex hull's). Outlines are polygons in source pixels.
package shape

import (
	"math"
	"sort"
)

// Point is a position in source pixels (x right, y down = deeper).
type Point struct{ X, Y float64 }

// Caliper is one measured axis: its two ends and its length in pixels.
type Caliper struct {
	A, B   Point
	Pixels float64
}

// Measures are an outline's calipers and shape.
type Measures struct {
	Long, Short Caliper
	// Width and Depth are the outline's transverse (x) and
	// anteroposterior (y) extents, in pixels.
	Width, Depth float64
	// TallerThanWide: depth greater than width (ACR TI-RADS' shape
	// feature, with the probe's depth along the image rows).
	TallerThanWide bool
	// Solidity is area / convex hull area: 1 for a convex outline, lower
	// the more lobulated or irregular the margin.
	Solidity float64
	Area     float64
}

// Measure returns the measures of outline; ok is false for fewer than 3
// points or no area.
func Measure(outline []Point) (Measures, bool) {
	if len(outline) < 3 {
		return Measures{}, false
	}
	hull := Hull(outline)
	area := math.Abs(polygonArea(outline))
	hullArea := math.Abs(polygonArea(hull))
	if area <= 0 || hullArea <= 0 {
		return Measures{}, false
	}
	var m Measures
	m.Area = area
	m.Solidity = math.Min(1, area/hullArea)
	// The greatest diameter is between two hull vertices.
	for i := range hull {
		for j := i + 1; j < len(hull); j++ {
			if d := dist(hull[i], hull[j]); d > m.Long.Pixels {
				m.Long = Caliper{A: hull[i], B: hull[j], Pixels: d}
			}
		}
	}
	m.Short = shortAxis(hull, m.Long)
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, p := range outline {
		minX, maxX = math.Min(minX, p.X), math.Max(maxX, p.X)
		minY, maxY = math.Min(minY, p.Y), math.Max(maxY, p.Y)
	}
	m.Width, m.Depth = maxX-minX, maxY-minY
	m.TallerThanWide = m.Depth > m.Width
	return m, true
}

// shortAxis is the widest chord perpendicular to the long axis: for each
// position along the long axis, where a perpendicular line crosses the
// hull, the longest such crossing.
func shortAxis(hull []Point, long Caliper) Caliper {
	ux, uy := (long.B.X-long.A.X)/long.Pixels, (long.B.Y-long.A.Y)/long.Pixels
	// In the long axis' frame: s along it, t across it.
	type st struct{ s, t float64 }
	pts := make([]st, len(hull))
	for i, p := range hull {
		dx, dy := p.X-long.A.X, p.Y-long.A.Y
		pts[i] = st{dx*ux + dy*uy, -dx*uy + dy*ux}
	}
	var best Caliper
	const steps = 64
	for k := 1; k < steps; k++ {
		s := long.Pixels * float64(k) / steps
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := range pts {
			a, b := pts[i], pts[(i+1)%len(pts)]
			if (a.s-s)*(b.s-s) > 0 || a.s == b.s {
				continue
			}
			t := a.t + (b.t-a.t)*(s-a.s)/(b.s-a.s)
			lo, hi = math.Min(lo, t), math.Max(hi, t)
		}
		if hi > lo && hi-lo > best.Pixels {
			at := func(t float64) Point {
				return Point{long.A.X + s*ux - t*uy, long.A.Y + s*uy + t*ux}
			}
			best = Caliper{A: at(lo), B: at(hi), Pixels: hi - lo}
		}
	}
	return best
}

// Hull is the convex hull of pts, counter-clockwise in image coordinates
// (Andrew's monotone chain).
func Hull(pts []Point) []Point {
	p := append([]Point(nil), pts...)
	sort.Slice(p, func(i, j int) bool { return p[i].X < p[j].X || (p[i].X == p[j].X && p[i].Y < p[j].Y) })
	if len(p) < 3 {
		return p
	}
	cross := func(o, a, b Point) float64 { return (a.X-o.X)*(b.Y-o.Y) - (a.Y-o.Y)*(b.X-o.X) }
	var h []Point
	for _, q := range p {
		for len(h) >= 2 && cross(h[len(h)-2], h[len(h)-1], q) <= 0 {
			h = h[:len(h)-1]
		}
		h = append(h, q)
	}
	lower := len(h) + 1
	for i := len(p) - 2; i >= 0; i-- {
		q := p[i]
		for len(h) >= lower && cross(h[len(h)-2], h[len(h)-1], q) <= 0 {
			h = h[:len(h)-1]
		}
		h = append(h, q)
	}
	return h[:len(h)-1]
}

func polygonArea(p []Point) float64 {
	var a float64
	for i := range p {
		j := (i + 1) % len(p)
		a += p[i].X*p[j].Y - p[j].X*p[i].Y
	}
	return a / 2
}

func dist(a, b Point) float64 { return math.Hypot(a.X-b.X, a.Y-b.Y) }
