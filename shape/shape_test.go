package shape

import (
	"math"
	"testing"
)

func ellipse(cx, cy, a, b float64, n int) []Point {
	p := make([]Point, n)
	for i := range p {
		th := 2 * math.Pi * float64(i) / float64(n)
		p[i] = Point{cx + a*math.Cos(th), cy + b*math.Sin(th)}
	}
	return p
}

func TestMeasure(t *testing.T) {
	// A lobulated outline: an ellipse with a notch cut into its top.
	notched := ellipse(50, 50, 30, 20, 64)
	for i := 40; i <= 56; i++ {
		notched[i].Y = 50 + (notched[i].Y-50)*0.3
	}
	for _, tc := range []struct {
		name              string
		outline           []Point
		long, short       float64
		tallerThanWide    bool
		solidityMin, max_ float64
	}{
		{"wide ellipse 60×40", ellipse(50, 50, 30, 20, 128), 60, 40, false, 0.99, 1},
		{"tall ellipse 20×36", ellipse(10, 10, 10, 18, 128), 36, 20, true, 0.99, 1},
		// A rectangle's greatest diameter is its diagonal; its short axis
		// is not checked.
		{"tall rectangle 10×40", []Point{{0, 0}, {10, 0}, {10, 40}, {0, 40}}, 41.23, -1, true, 0.99, 1},
		{"notched ellipse", notched, 60, -1, false, 0.80, 0.97},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := Measure(tc.outline)
			if !ok {
				t.Fatal("not measured")
			}
			if math.Abs(m.Long.Pixels-tc.long) > tc.long*0.02 {
				t.Errorf("long axis %.2f, want %.2f", m.Long.Pixels, tc.long)
			}
			if tc.short > 0 && math.Abs(m.Short.Pixels-tc.short) > tc.short*0.03 {
				t.Errorf("short axis %.2f, want %.2f", m.Short.Pixels, tc.short)
			}
			// The short axis is perpendicular to the long one.
			lx, ly := m.Long.B.X-m.Long.A.X, m.Long.B.Y-m.Long.A.Y
			sx, sy := m.Short.B.X-m.Short.A.X, m.Short.B.Y-m.Short.A.Y
			if c := (lx*sx + ly*sy) / (m.Long.Pixels * m.Short.Pixels); math.Abs(c) > 1e-6 {
				t.Errorf("axes not perpendicular: cos %.3g", c)
			}
			if m.TallerThanWide != tc.tallerThanWide {
				t.Errorf("taller than wide %v (width %.1f, depth %.1f)", m.TallerThanWide, m.Width, m.Depth)
			}
			if m.Solidity < tc.solidityMin || m.Solidity > tc.max_ {
				t.Errorf("solidity %.3f, want %.2f..%.2f", m.Solidity, tc.solidityMin, tc.max_)
			}
		})
	}
	if _, ok := Measure([]Point{{0, 0}, {1, 1}}); ok {
		t.Error("two points measured")
	}
	if _, ok := Measure([]Point{{0, 0}, {1, 1}, {2, 2}}); ok {
		t.Error("a line measured")
	}
}

func TestRadialRoundTrip(t *testing.T) {
	e := ellipse(40, 30, 20, 10, 256)
	c := Centroid(e)
	if math.Abs(c.X-40) > 1e-6 || math.Abs(c.Y-30) > 1e-6 {
		t.Fatalf("centroid %+v", c)
	}
	r := ToRadial(e, c, 32)
	if len(r) != 32 || math.Abs(r[0]-20) > 0.01 || math.Abs(r[8]-10) > 0.01 {
		t.Fatalf("radial %v", r)
	}
	m, _ := Measure(r.Points(c))
	if math.Abs(m.Long.Pixels-40) > 0.5 || math.Abs(m.Short.Pixels-20) > 0.8 {
		t.Errorf("back from 32 rays: %.2f × %.2f, want 40 × 20", m.Long.Pixels, m.Short.Pixels)
	}
	// Half-way between a circle of 10 and one of 20: 15.
	a, b := ToRadial(ellipse(0, 0, 10, 10, 128), Point{}, 16), ToRadial(ellipse(0, 0, 20, 20, 128), Point{}, 16)
	for _, v := range Blend(a, b, 0.5) {
		if math.Abs(v-15) > 0.1 {
			t.Fatalf("blend %v", v)
		}
	}
	if ToRadial(e, Point{X: 200, Y: 200}, 8) != nil {
		t.Error("a centre outside the outline gave rays")
	}
}
