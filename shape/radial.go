package shape

import "math"

// Radial is an outline as its reach along K evenly spaced rays from a
// centre: the form the tracker smooths in, so an outline neither flickers
// from frame to frame nor loses its shape when its box coasts. A lesion is
// near enough star-shaped from its centre; where a ray crosses the outline
// more than once, its farthest crossing stands.
type Radial []float64

// ToRadial samples outline along k rays from c; nil when c is not inside
// it (no ray meets it).
func ToRadial(outline []Point, c Point, k int) Radial {
	if len(outline) < 3 {
		return nil
	}
	r := make(Radial, k)
	for i := range r {
		th := 2 * math.Pi * float64(i) / float64(k)
		dx, dy := math.Cos(th), math.Sin(th)
		best := -1.0
		for j := range outline {
			a, b := outline[j], outline[(j+1)%len(outline)]
			// c + t·(dx,dy) = a + s·(b−a), t ≥ 0, s in [0, 1]
			ex, ey := b.X-a.X, b.Y-a.Y
			den := dx*ey - dy*ex
			if den == 0 {
				continue
			}
			ax, ay := a.X-c.X, a.Y-c.Y
			t := (ax*ey - ay*ex) / den
			s := (ax*dy - ay*dx) / den
			if t >= 0 && s >= 0 && s <= 1 && t > best {
				best = t
			}
		}
		if best < 0 {
			return nil
		}
		r[i] = best
	}
	return r
}

// Points is the outline r describes around c.
func (r Radial) Points(c Point) []Point {
	out := make([]Point, len(r))
	for i, v := range r {
		th := 2 * math.Pi * float64(i) / float64(len(r))
		out[i] = Point{c.X + v*math.Cos(th), c.Y + v*math.Sin(th)}
	}
	return out
}

// Blend moves prev toward cur by alpha (0: prev, 1: cur); cur when the two
// differ in length.
func Blend(prev, cur Radial, alpha float64) Radial {
	if len(prev) != len(cur) {
		return cur
	}
	out := make(Radial, len(cur))
	for i := range cur {
		out[i] = prev[i] + alpha*(cur[i]-prev[i])
	}
	return out
}

// Centroid is the area centroid of a polygon (its vertices' mean when it
// has no area).
func Centroid(p []Point) Point {
	var a, cx, cy float64
	for i := range p {
		j := (i + 1) % len(p)
		cr := p[i].X*p[j].Y - p[j].X*p[i].Y
		a += cr
		cx += (p[i].X + p[j].X) * cr
		cy += (p[i].Y + p[j].Y) * cr
	}
	if a == 0 {
		for _, q := range p {
			cx, cy = cx+q.X, cy+q.Y
		}
		n := float64(max(1, len(p)))
		return Point{cx / n, cy / n}
	}
	return Point{cx / (3 * a), cy / (3 * a)}
}
