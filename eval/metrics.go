package eval

import (
	"math"
	"sort"

	"sonolive/frame"
)

// Result is one image's ground truth and the detector's output on it (all
// detections down to a low score, so AP sees the whole curve).
type Result struct {
	Image      Image
	Detections []frame.Detection
	// Masks scores the outlines against the image's expert mask, when it
	// has one and outlines were asked for.
	Masks *ImageMasks
	// Traits are the mask's lesions' margins and contrast, when the image
	// has a mask.
	Traits []Traits
}

// IoUs are COCO's thresholds for AP@[.5:.95].
var IoUs = []float64{0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95}

// scored is a detection's place on the precision-recall curve.
type scored struct {
	score float32
	tp    bool
}

// match greedily assigns detections, highest score first, to unmatched
// ground truth at IoU ≥ thr (COCO's rule). Detections matching only truth
// outside the category of interest (cat != "") are ignored, not counted as
// false: a class-agnostic detector is not wrong to find a malignant lesion
// when we grade benign ones.
func match(r Result, thr float64, cat string) (out []scored, nTruth int) {
	dets := append([]frame.Detection(nil), r.Detections...)
	sort.SliceStable(dets, func(a, b int) bool { return dets[a].Score > dets[b].Score })
	used := make([]bool, len(r.Image.Truth))
	for _, t := range r.Image.Truth {
		if cat == "" || t.Category == cat {
			nTruth++
		}
	}
	for _, d := range dets {
		best, bi := thr, -1
		for i, t := range r.Image.Truth {
			if used[i] {
				continue
			}
			if iou := float64(d.Box.IoU(t.Box)); iou >= best {
				best, bi = iou, i
			}
		}
		if bi < 0 {
			out = append(out, scored{d.Score, false})
			continue
		}
		used[bi] = true
		if cat != "" && r.Image.Truth[bi].Category != cat {
			continue
		}
		out = append(out, scored{d.Score, true})
	}
	return out, nTruth
}

// AP is COCO's 101-point interpolated average precision at one IoU
// threshold, over all images; cat limits it to one ground-truth category.
func AP(results []Result, iou float64, cat string) float64 {
	var all []scored
	total := 0
	for _, r := range results {
		s, n := match(r, iou, cat)
		all = append(all, s...)
		total += n
	}
	if total == 0 {
		return math.NaN()
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].score > all[b].score })
	prec := make([]float64, len(all))
	rec := make([]float64, len(all))
	tp := 0
	for i, s := range all {
		if s.tp {
			tp++
		}
		prec[i] = float64(tp) / float64(i+1)
		rec[i] = float64(tp) / float64(total)
	}
	// Precision envelope: the best precision at this recall or beyond.
	for i := len(prec) - 2; i >= 0; i-- {
		prec[i] = math.Max(prec[i], prec[i+1])
	}
	sum := 0.0
	for k := 0; k <= 100; k++ {
		r := float64(k) / 100
		i := sort.SearchFloat64s(rec, r)
		if i < len(prec) {
			sum += prec[i]
		}
	}
	return sum / 101
}

// APRange is AP averaged over IoUs (AP@[.5:.95]).
func APRange(results []Result, cat string) float64 {
	s := 0.0
	for _, t := range IoUs {
		s += AP(results, t, cat)
	}
	return s / float64(len(IoUs))
}

// AtThreshold counts, at an operating score threshold and IoU 0.5: truth
// found, boxes shown, and false boxes on images without any lesion.
type AtThreshold struct {
	Threshold      float64 `json:"threshold"`
	Truth          int     `json:"truth_boxes"`
	Found          int     `json:"found"`
	Shown          int     `json:"shown_boxes"`
	Recall         float64 `json:"recall"`
	Precision      float64 `json:"precision"`
	NormalImages   int     `json:"normal_images"`
	NormalFalse    int     `json:"false_boxes_on_normal_images"`
	FPPerNormalImg float64 `json:"fp_per_normal_image"`
}

// Operating evaluates the detector as the live view would show it.
func Operating(results []Result, thr float64) AtThreshold {
	a := AtThreshold{Threshold: thr}
	for _, r := range results {
		var kept []frame.Detection
		for _, d := range r.Detections {
			if float64(d.Score) >= thr {
				kept = append(kept, d)
			}
		}
		s, n := match(Result{Image: r.Image, Detections: kept}, 0.5, "")
		a.Truth += n
		a.Shown += len(kept)
		for _, x := range s {
			if x.tp {
				a.Found++
			}
		}
		if len(r.Image.Truth) == 0 {
			a.NormalImages++
			a.NormalFalse += len(kept)
		}
	}
	if a.Truth > 0 {
		a.Recall = float64(a.Found) / float64(a.Truth)
	}
	if a.Shown > 0 {
		a.Precision = float64(a.Found) / float64(a.Shown)
	}
	if a.NormalImages > 0 {
		a.FPPerNormalImg = float64(a.NormalFalse) / float64(a.NormalImages)
	}
	return a
}

// AUC is the area under the ROC curve of scores for positives against
// negatives (Mann-Whitney U, ties counted half). NaN without both.
func AUC(pos, neg []float64) float64 {
	if len(pos) == 0 || len(neg) == 0 {
		return math.NaN()
	}
	type v struct {
		s   float64
		pos bool
	}
	all := make([]v, 0, len(pos)+len(neg))
	for _, s := range pos {
		all = append(all, v{s, true})
	}
	for _, s := range neg {
		all = append(all, v{s, false})
	}
	sort.Slice(all, func(a, b int) bool { return all[a].s < all[b].s })
	// Rank sum of positives with average ranks for ties.
	rankSum := 0.0
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].s == all[i].s {
			j++
		}
		avg := float64(i+j+1) / 2 // ranks are 1-based: (i+1 + j)/2
		for k := i; k < j; k++ {
			if all[k].pos {
				rankSum += avg
			}
		}
		i = j
	}
	np, nn := float64(len(pos)), float64(len(neg))
	return (rankSum - np*(np+1)/2) / (np * nn)
}

// MalignancyScores returns, for each image labelled malignant or benign,
// the malignancy of its highest-scoring detection; images where the model
// found nothing or gave no malignancy are counted in skipped.
func MalignancyScores(results []Result) (pos, neg []float64, skipped int) {
	for _, r := range results {
		if r.Image.Label != "malignant" && r.Image.Label != "benign" {
			continue
		}
		best := -1
		for i, d := range r.Detections {
			if best < 0 || d.Score > r.Detections[best].Score {
				best = i
			}
		}
		if best < 0 || r.Detections[best].Malignancy < 0 {
			skipped++
			continue
		}
		m := float64(r.Detections[best].Malignancy)
		if r.Image.Label == "malignant" {
			pos = append(pos, m)
		} else {
			neg = append(neg, m)
		}
	}
	return pos, neg, skipped
}
