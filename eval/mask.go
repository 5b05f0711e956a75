package eval

import (
	"fmt"
	"image"
	"image/color"
	_ "image/png" // the data sets' masks are PNG
	"io"
	"math"
	"os"
	"sort"

	"sonolive/frame"
	"sonolive/shape"
)

// Mask is a binary image, row-major.
type Mask struct {
	W, H int
	Pix  []bool
}

// NewMask is an empty w×h mask.
func NewMask(w, h int) Mask { return Mask{W: w, H: h, Pix: make([]bool, w*h)} }

// LoadMask reads a lesion mask (any image; set where brighter than
// mid-grey) that must be w×h pixels: the size is checked before the pixels
// are decoded, so a file that claims a huge size costs nothing.
func LoadMask(path string, w, h int) (Mask, error) {
	f, err := os.Open(path)
	if err != nil {
		return Mask{}, fmt.Errorf("mask: %w", err)
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		return Mask{}, fmt.Errorf("mask %s: %w", path, err)
	}
	if cfg.Width != w || cfg.Height != h {
		return Mask{}, fmt.Errorf("mask %s is %dx%d, the image %dx%d", path, cfg.Width, cfg.Height, w, h)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Mask{}, fmt.Errorf("mask %s: %w", path, err)
	}
	img, _, err := image.Decode(f)
	if err != nil {
		return Mask{}, fmt.Errorf("mask %s: %w", path, err)
	}
	b := img.Bounds()
	m := NewMask(b.Dx(), b.Dy())
	if g, ok := img.(*image.Gray); ok {
		for y := 0; y < m.H; y++ {
			row := g.Pix[y*g.Stride:]
			for x := 0; x < m.W; x++ {
				m.Pix[y*m.W+x] = row[x] > 127
			}
		}
		return m, nil
	}
	for y := 0; y < m.H; y++ {
		for x := 0; x < m.W; x++ {
			m.Pix[y*m.W+x] = color.GrayModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.Gray).Y > 127
		}
	}
	return m, nil
}

// Count is the number of set pixels.
func (m Mask) Count() int {
	n := 0
	for _, v := range m.Pix {
		if v {
			n++
		}
	}
	return n
}

// Region is one connected lesion of a mask: its pixels (indices into the
// mask) and bounding box.
type Region struct {
	Pix []int
	Box frame.Box
}

// Regions splits m into its 8-connected regions of at least minArea
// pixels (the data sets' boxes come from the same components), largest
// first.
func (m Mask) Regions(minArea int) []Region {
	seen := make([]bool, len(m.Pix))
	var out []Region
	var stack []int
	for start, on := range m.Pix {
		if !on || seen[start] {
			continue
		}
		var r Region
		seen[start] = true
		stack = append(stack[:0], start)
		x0, y0, x1, y1 := m.W, m.H, -1, -1
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			r.Pix = append(r.Pix, i)
			x, y := i%m.W, i/m.W
			x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					nx, ny := x+dx, y+dy
					if nx < 0 || ny < 0 || nx >= m.W || ny >= m.H {
						continue
					}
					if j := ny*m.W + nx; m.Pix[j] && !seen[j] {
						seen[j] = true
						stack = append(stack, j)
					}
				}
			}
		}
		if len(r.Pix) < minArea {
			continue
		}
		r.Box = frame.Box{X1: float32(x0), Y1: float32(y0), X2: float32(x1 + 1), Y2: float32(y1 + 1)}
		out = append(out, r)
	}
	sort.SliceStable(out, func(a, b int) bool { return len(out[a].Pix) > len(out[b].Pix) })
	return out
}

// FillPolygon rasterises a closed polygon (source pixels, pixel (x, y)
// covering [x, x+1) × [y, y+1)) onto a w×h mask: a pixel is set when its
// centre is inside (even-odd rule), so a polygon along pixel edges covers
// exactly the pixels it encloses.
func FillPolygon(pts []frame.Point, w, h int) Mask {
	m := NewMask(w, h)
	m.Fill(pts)
	return m
}

// Fill sets the pixels of m whose centres lie inside the polygon; a
// polygon with a non-finite vertex sets none.
func (m Mask) Fill(pts []frame.Point) {
	if len(pts) < 3 {
		return
	}
	for _, p := range pts {
		if x, y := float64(p.X), float64(p.Y); math.IsNaN(x) || math.IsInf(x, 0) || math.IsNaN(y) || math.IsInf(y, 0) {
			return
		}
	}
	minY, maxY := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		minY, maxY = math.Min(minY, float64(p.Y)), math.Max(maxY, float64(p.Y))
	}
	y0 := max(0, int(math.Floor(minY)))
	y1 := min(m.H-1, int(math.Ceil(maxY)))
	var xs []float64
	for y := y0; y <= y1; y++ {
		yc := float64(y) + 0.5
		xs = xs[:0]
		for i := range pts {
			a, b := pts[i], pts[(i+1)%len(pts)]
			ay, by := float64(a.Y), float64(b.Y)
			if (ay <= yc) == (by <= yc) {
				continue
			}
			xs = append(xs, float64(a.X)+(yc-ay)/(by-ay)*float64(b.X-a.X))
		}
		sort.Float64s(xs)
		for k := 0; k+1 < len(xs); k += 2 {
			// Centres x+0.5 in [xs[k], xs[k+1]).
			from := max(0, int(math.Ceil(xs[k]-0.5)))
			to := min(m.W-1, int(math.Ceil(xs[k+1]-0.5))-1)
			for x := from; x <= to; x++ {
				m.Pix[y*m.W+x] = true
			}
		}
	}
}

// Overlap returns Dice and IoU of two masks of the same size (1 and 1 when
// both are empty; NaN when the sizes differ).
func Overlap(a, b Mask) (dice, iou float64) {
	if a.W != b.W || a.H != b.H {
		return math.NaN(), math.NaN()
	}
	var inter, na, nb int
	for i := range a.Pix {
		if a.Pix[i] {
			na++
			if b.Pix[i] {
				inter++
			}
		}
		if b.Pix[i] {
			nb++
		}
	}
	return ratios(inter, na, nb)
}

// RegionOverlap returns Dice and IoU of region r (of a mask the size of
// pred) against pred.
func RegionOverlap(r Region, pred Mask) (dice, iou float64) {
	inter := 0
	for _, i := range r.Pix {
		if i < len(pred.Pix) && pred.Pix[i] {
			inter++
		}
	}
	return ratios(inter, len(r.Pix), pred.Count())
}

func ratios(inter, na, nb int) (dice, iou float64) {
	if na+nb == 0 {
		return 1, 1
	}
	return 2 * float64(inter) / float64(na+nb), float64(inter) / float64(na+nb-inter)
}

// Outline is a region's convex hull through its pixels' outer corners: the
// calipers of the ground truth are measured on it (shape.Measure measures
// any outline on its hull, so nothing is lost), and so they span the
// lesion's full extent, as calipers on its margin do.
func (r Region) Outline(w int) []shape.Point {
	in := make(map[int]bool, len(r.Pix))
	for _, i := range r.Pix {
		in[i] = true
	}
	var corners []shape.Point
	for _, i := range r.Pix {
		x, y := i%w, i/w
		// Interior pixels add nothing to the hull.
		if x > 0 && x < w-1 && in[i-1] && in[i+1] && in[i-w] && in[i+w] {
			continue
		}
		fx, fy := float64(x), float64(y)
		corners = append(corners, shape.Point{X: fx, Y: fy}, shape.Point{X: fx + 1, Y: fy}, shape.Point{X: fx, Y: fy + 1}, shape.Point{X: fx + 1, Y: fy + 1})
	}
	return shape.Hull(corners)
}
