package eval

import (
	"math"
	"sort"

	"sonolive/frame"
)

// Lesion groups for recall: why are lesions missed? By class, by size (the
// lesion's longer side over the image's: small under a tenth, as a 32 px
// lesion at a 320 px input; large over three tenths), by the two together,
// and by whether the lesion touches the image's edge.
const (
	smallSide = 0.1
	largeSide = 0.3
	// edgeMargin is how close to the image's border, in pixels, a lesion
	// counts as touching it.
	edgeMargin = 2
)

// GroupRecall is the recall of one group of lesions at the operating
// threshold (IoU ≥ 0.5).
type GroupRecall struct {
	Truth  int     `json:"truth_boxes"`
	Found  int     `json:"found"`
	Recall float64 `json:"recall"`
}

// sizeGroup is small, medium or large; "" when the image size is unknown.
func sizeGroup(b frame.Box, w, h int) string {
	if w <= 0 || h <= 0 {
		return ""
	}
	r := math.Max(float64(b.W()), float64(b.H())) / float64(max(w, h))
	switch {
	case r < smallSide:
		return "small"
	case r < largeSide:
		return "medium"
	default:
		return "large"
	}
}

func atEdge(b frame.Box, w, h int) bool {
	return w > 0 && h > 0 && (b.X1 <= edgeMargin || b.Y1 <= edgeMargin || b.X2 >= float32(w-edgeMargin) || b.Y2 >= float32(h-edgeMargin))
}

// foundTruth says which of r's truth boxes a detection at or above thr
// matches (IoU ≥ 0.5, highest score first).
func foundTruth(r Result, thr float64) []bool {
	dets := make([]frame.Detection, 0, len(r.Detections))
	for _, d := range r.Detections {
		if float64(d.Score) >= thr {
			dets = append(dets, d)
		}
	}
	sort.SliceStable(dets, func(a, b int) bool { return dets[a].Score > dets[b].Score })
	used := make([]bool, len(r.Image.Truth))
	for _, d := range dets {
		best, bi := 0.5, -1
		for i, t := range r.Image.Truth {
			if !used[i] {
				if iou := float64(d.Box.IoU(t.Box)); iou >= best {
					best, bi = iou, i
				}
			}
		}
		if bi >= 0 {
			used[bi] = true
		}
	}
	return used
}

// RecallByGroup is the recall at the operating threshold of each group of
// lesions: "benign", "small", "benign/small", "at edge", "inside", … and,
// where expert masks gave the lesions' traits, "irregular margin", "low
// contrast", "malignant/irregular margin", …
func RecallByGroup(results []Result, thr float64) map[string]GroupRecall {
	out := map[string]GroupRecall{}
	add := func(k string, found bool) {
		g := out[k]
		g.Truth++
		if found {
			g.Found++
		}
		g.Recall = float64(g.Found) / float64(g.Truth)
		out[k] = g
	}
	for _, r := range results {
		found := foundTruth(r, thr)
		w, h := r.Image.Width, r.Image.Height
		for i, t := range r.Image.Truth {
			size := sizeGroup(t.Box, w, h)
			if t.Category != "" {
				add(t.Category, found[i])
			}
			if size != "" {
				add(size, found[i])
				if t.Category != "" {
					add(t.Category+"/"+size, found[i])
				}
				if atEdge(t.Box, w, h) {
					add("at edge", found[i])
				} else {
					add("inside", found[i])
				}
			}
		}
		for _, t := range r.Traits {
			for _, g := range traitGroups(t) {
				add(g, t.Found)
			}
		}
	}
	return out
}
