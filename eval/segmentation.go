package eval

import (
	"math"
	"sort"

	"sonolive/frame"
	"sonolive/shape"
)

// MinRegion is the smallest mask component that counts as a lesion, in
// pixels: the data sets' boxes come from components of at least this size.
const MinRegion = 64

// ImageMasks is one image's outlines scored against its expert mask.
type ImageMasks struct {
	// Dice and IoU of every outline at the operating threshold together
	// against the whole mask: a missed lesion or a false outline on a
	// lesion's image costs here (images without a mask are not scored).
	Dice, IoU float64
	// Lesions are the mask's lesions (components ≥ MinRegion pixels).
	Lesions []LesionMask
}

// LesionMask is one ground-truth lesion and the outline of the detection
// that found it.
type LesionMask struct {
	// Found: a detection at the operating threshold matched the lesion's
	// box (IoU ≥ 0.5, highest score first). The rest is set only then.
	Found bool
	// Dice and IoU of the detection's outline against the lesion (0 when
	// the detection has no outline).
	Dice, IoU float64
	// Truth are the calipers on the lesion's mask, Pred those on the
	// outline (PredOK false: none), measured as the live view measures a
	// fresh detection's, before the tracker smooths it across frames.
	Truth, Pred shape.Measures
	PredOK      bool
}

// ScoreMasks scores dets (those at the operating threshold, with their
// outlines in the mask's pixels) against the expert mask truth.
func ScoreMasks(truth Mask, dets []frame.Detection) ImageMasks {
	var out ImageMasks
	all := NewMask(truth.W, truth.H)
	for _, d := range dets {
		all.Fill(d.Outline)
	}
	out.Dice, out.IoU = Overlap(truth, all)

	regions := truth.Regions(MinRegion)
	order := make([]int, len(dets))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return dets[order[a]].Score > dets[order[b]].Score })
	out.Lesions = make([]LesionMask, len(regions))
	for _, k := range order {
		d := dets[k]
		best, bi := 0.5, -1
		for i, r := range regions {
			if out.Lesions[i].Found {
				continue
			}
			if iou := float64(d.Box.IoU(r.Box)); iou >= best {
				best, bi = iou, i
			}
		}
		if bi < 0 {
			continue
		}
		l := &out.Lesions[bi]
		l.Found = true
		l.Truth, _ = shape.Measure(regions[bi].Outline(truth.W))
		if len(d.Outline) < 3 {
			continue
		}
		l.Dice, l.IoU = RegionOverlap(regions[bi], FillPolygon(d.Outline, truth.W, truth.H))
		pts := make([]shape.Point, len(d.Outline))
		for i, p := range d.Outline {
			pts[i] = shape.Point{X: float64(p.X), Y: float64(p.Y)}
		}
		l.Pred, l.PredOK = shape.Measure(pts)
	}
	return out
}

// SegSummary sums up outlines over a set of images.
type SegSummary struct {
	// Images with an expert mask holding a lesion, and their mean Dice/IoU.
	Images              int
	ImageDice, ImageIoU float64
	// Lesions in those masks, those found at the operating threshold, and
	// the found ones' mean Dice/IoU.
	Lesions, Found        int
	LesionDice, LesionIoU float64
	// Calipers on found lesions with an outline: median absolute relative
	// error of the long and short axes against the mask's, and their mean
	// signed relative error (bias).
	Measured                      int
	LongMedAbsErr, ShortMedAbsErr float64
	LongBias, ShortBias           float64
	// Taller-than-wide on the outline against on the mask: share agreeing,
	// Cohen's kappa, and how many masks are taller than wide.
	TTWAgree, TTWKappa float64
	TTWTruth           int
}

// Segmentation sums up the outlines of the results that were scored
// against a mask (Result.Masks set).
func Segmentation(results []Result) SegSummary {
	var s SegSummary
	var ld, li, id, ii []float64
	var longErr, shortErr []float64
	var tt, tf, ft, ff int
	for _, r := range results {
		m := r.Masks
		if m == nil || len(m.Lesions) == 0 {
			continue
		}
		s.Images++
		id, ii = append(id, m.Dice), append(ii, m.IoU)
		for _, l := range m.Lesions {
			s.Lesions++
			if !l.Found {
				continue
			}
			s.Found++
			ld, li = append(ld, l.Dice), append(li, l.IoU)
			if !l.PredOK || l.Truth.Long.Pixels <= 0 || l.Truth.Short.Pixels <= 0 {
				continue
			}
			s.Measured++
			longErr = append(longErr, (l.Pred.Long.Pixels-l.Truth.Long.Pixels)/l.Truth.Long.Pixels)
			shortErr = append(shortErr, (l.Pred.Short.Pixels-l.Truth.Short.Pixels)/l.Truth.Short.Pixels)
			switch {
			case l.Truth.TallerThanWide && l.Pred.TallerThanWide:
				tt++
			case l.Truth.TallerThanWide:
				tf++
			case l.Pred.TallerThanWide:
				ft++
			default:
				ff++
			}
		}
	}
	s.ImageDice, s.ImageIoU = mean(id), mean(ii)
	s.LesionDice, s.LesionIoU = mean(ld), mean(li)
	s.LongMedAbsErr, s.LongBias = medianAbs(longErr), mean(longErr)
	s.ShortMedAbsErr, s.ShortBias = medianAbs(shortErr), mean(shortErr)
	s.TTWTruth = tt + tf
	s.TTWAgree, s.TTWKappa = kappa(tt, tf, ft, ff)
	return s
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func medianAbs(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	a := make([]float64, len(v))
	for i, x := range v {
		a[i] = math.Abs(x)
	}
	sort.Float64s(a)
	if n := len(a); n%2 == 1 {
		return a[n/2]
	}
	return (a[len(a)/2-1] + a[len(a)/2]) / 2
}

// kappa is the observed agreement and Cohen's kappa of a 2×2 table (rows:
// truth yes/no; columns: prediction yes/no). Kappa is NaN when chance
// agreement is total (one class only on both sides).
func kappa(tt, tf, ft, ff int) (agree, k float64) {
	n := float64(tt + tf + ft + ff)
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	po := float64(tt+ff) / n
	pe := (float64(tt+tf)*float64(tt+ft) + float64(ft+ff)*float64(tf+ff)) / (n * n)
	if pe >= 1 {
		return po, math.NaN()
	}
	return po, (po - pe) / (1 - pe)
}
