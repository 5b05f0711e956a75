package eval

import (
	"math"

	"sonolive/frame"
	"sonolive/shape"
)

// Gray is an 8-bit grayscale image, row-major.
type Gray struct {
	W, H int
	Pix  []uint8
}

// Traits are what an expert mask says about a lesion that its box cannot,
// for finding out which lesions the detector misses.
type Traits struct {
	Box      frame.Box
	Category string
	// Solidity is the lesion's area over its convex hull's: low for
	// lobulated, angular or spiculated margins.
	Solidity float64
	// Contrast is the lesion's mean brightness over that of the tissue
	// around it (its box grown by a quarter, outside the mask): near 1 an
	// isoechoic lesion, low an anechoic one, above 1 a hyperechoic one; 0
	// when the surroundings are unknown (all black, or none in the image).
	Contrast float64
	// Found: a detection at the operating threshold matches its box
	// (IoU ≥ 0.5).
	Found bool
}

// Thresholds of the trait groups: an irregular margin below this
// solidity; low contrast when the lesion's brightness is within this
// factor of its surroundings', either way.
const (
	irregularSolidity = 0.9
	lowContrast       = 0.7
)

// LesionTraits measures the traits of each lesion of mask (components ≥
// MinRegion pixels) on img, with its category from the truth box it
// overlaps most and whether dets at thr find it.
func LesionTraits(mask Mask, img Gray, truth []Truth, dets []frame.Detection, thr float64) []Traits {
	if mask.W != img.W || mask.H != img.H || len(img.Pix) < img.W*img.H {
		return nil
	}
	regions := mask.Regions(MinRegion)
	out := make([]Traits, len(regions))
	inMask := func(i int) bool { return mask.Pix[i] }
	for k, r := range regions {
		t := Traits{Box: r.Box}
		if m, ok := shape.Measure(r.Outline(mask.W)); ok && m.Area > 0 {
			t.Solidity = math.Min(1, float64(len(r.Pix))/m.Area)
		}
		in := 0.0
		for _, i := range r.Pix {
			in += float64(img.Pix[i])
		}
		in /= float64(len(r.Pix))
		gw, gh := r.Box.W()/4, r.Box.H()/4
		x0, y0 := max(0, int(r.Box.X1-gw)), max(0, int(r.Box.Y1-gh))
		x1, y1 := min(img.W, int(math.Ceil(float64(r.Box.X2+gw)))), min(img.H, int(math.Ceil(float64(r.Box.Y2+gh))))
		ring, n := 0.0, 0
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				if i := y*img.W + x; !inMask(i) {
					ring += float64(img.Pix[i])
					n++
				}
			}
		}
		if n > 0 && ring > 0 {
			t.Contrast = in / (ring / float64(n))
		}
		best := 0.0
		for _, tr := range truth {
			if iou := float64(tr.Box.IoU(r.Box)); iou > best {
				best, t.Category = iou, tr.Category
			}
		}
		out[k] = t
	}
	boxes := make([]Truth, len(out))
	for i, t := range out {
		boxes[i] = Truth{Box: t.Box}
	}
	for i, f := range foundTruth(Result{Image: Image{Truth: boxes}, Detections: dets}, thr) {
		out[i].Found = f
	}
	return out
}

// traitGroups are the groups a lesion's traits put it in.
func traitGroups(t Traits) []string {
	margin := "smooth margin"
	if t.Solidity < irregularSolidity {
		margin = "irregular margin"
	}
	g := []string{margin}
	if t.Category != "" {
		g = append(g, t.Category+"/"+margin)
	}
	if t.Contrast > 0 {
		contrast := "high contrast"
		if math.Abs(math.Log(t.Contrast)) < math.Log(1/lowContrast) {
			contrast = "low contrast"
		}
		g = append(g, contrast)
		if t.Category != "" {
			g = append(g, t.Category+"/"+contrast)
		}
	}
	return g
}
