package infer

import (
	"math"
	"sort"

	"sonolive/frame"
)

// decodeCNet reads sonolive-cnet/1 outputs (docs/model-format.md): a cell is
// a detection when its heatmap value passes thresh and is the maximum of its
// 3x3 neighbourhood. Boxes are in model input pixels. malig may be nil; with
// boxPool a detection's malignancy is averaged over its box (malignancyInBox),
// else read at its cell.
func decodeCNet(heat, boxes, malig []float32, classes, gh, gw, stride int, thresh float32, names []string, boxPool bool) []frame.Detection {
	var out []frame.Detection
	plane := gh * gw
	for c := 0; c < classes; c++ {
		hm := heat[c*plane : (c+1)*plane]
		for i := 0; i < gh; i++ {
			for j := 0; j < gw; j++ {
				v := hm[i*gw+j]
				if v < thresh || !isPeak(hm, gh, gw, i, j, v) {
					continue
				}
				k := i*gw + j
				cx, cy := (float32(j)+0.5)*float32(stride), (float32(i)+0.5)*float32(stride)
				d := frame.Detection{
					Box: frame.Box{
						X1: cx - boxes[k], Y1: cy - boxes[plane+k],
						X2: cx + boxes[2*plane+k], Y2: cy + boxes[3*plane+k],
					},
					ClassID: c, Class: className(names, c), Score: v, Malignancy: -1,
				}
				switch {
				case malig != nil && boxPool:
					d.Malignancy = malignancyInBox(malig, d.Box, gh, gw, stride, k)
				case malig != nil:
					d.Malignancy = malig[k]
				}
				out = append(out, d)
			}
		}
	}
	return out
}

// malignancyInBox is sigmoid of the mean logit of the cells whose centres lie
// inside b (edges included); the peak cell k when none does. Averaging
// logits, not probabilities, keeps it the linear read-out of the box-mean
// feature the model's head was fitted on.
func malignancyInBox(malig []float32, b frame.Box, gh, gw, stride, k int) float32 {
	s := float32(stride)
	// cell i's centre (i+0.5)*s is in [lo, hi] for i in [ceil(lo/s-0.5), floor(hi/s-0.5)]
	i0, i1 := max(0, int(math.Ceil(float64(b.Y1/s-0.5)))), min(gh-1, int(math.Floor(float64(b.Y2/s-0.5))))
	j0, j1 := max(0, int(math.Ceil(float64(b.X1/s-0.5)))), min(gw-1, int(math.Floor(float64(b.X2/s-0.5))))
	if i0 > i1 || j0 > j1 {
		return malig[k]
	}
	var sum float64
	for i := i0; i <= i1; i++ {
		for j := j0; j <= j1; j++ {
			sum += logit(malig[i*gw+j])
		}
	}
	z := sum / float64((i1-i0+1)*(j1-j0+1))
	return float32(1 / (1 + math.Exp(-z)))
}

// logit inverts the model's sigmoid; clamped so a saturated cell (p = 0 or 1
// in float32) weighs like a very confident one instead of ±Inf.
func logit(p float32) float64 {
	q := min(max(float64(p), 1e-7), 1-1e-7)
	return math.Log(q / (1 - q))
}

func isPeak(hm []float32, gh, gw, i, j int, v float32) bool {
	for di := -1; di <= 1; di++ {
		for dj := -1; dj <= 1; dj++ {
			ii, jj := i+di, j+dj
			if (di == 0 && dj == 0) || ii < 0 || jj < 0 || ii >= gh || jj >= gw {
				continue
			}
			if hm[ii*gw+jj] > v {
				return false
			}
		}
	}
	return true
}

// decodeYOLO reads an Ultralytics detection output [1, 4+nc, n]: per
// candidate cx, cy, w, h then nc class scores.
func decodeYOLO(out []float32, nc, n int, thresh float32, names []string) []frame.Detection {
	dets, _ := decodeYOLOSeg(out, nc, 0, n, thresh, names, nil)
	return dets
}

// decodeYOLOSeg reads an Ultralytics output [1, 4+nc+nm, n]: per
// candidate cx, cy, w, h, nc class scores, then nm mask coefficients (none
// in a detection export); refs gets each detection's candidate index, for
// its coefficients after NMS.
func decodeYOLOSeg(out []float32, nc, nm, n int, thresh float32, names []string, refs []int) ([]frame.Detection, []int) {
	var dets []frame.Detection
	for a := 0; a < n; a++ {
		best, score := -1, thresh
		for c := 0; c < nc; c++ {
			if s := out[(4+c)*n+a]; s >= score {
				best, score = c, s
			}
		}
		if best < 0 {
			continue
		}
		cx, cy, w, h := out[a], out[n+a], out[2*n+a], out[3*n+a]
		dets = append(dets, frame.Detection{
			Box:     frame.Box{X1: cx - w/2, Y1: cy - h/2, X2: cx + w/2, Y2: cy + h/2},
			ClassID: best, Class: className(names, best), Score: score, Malignancy: -1,
		})
		refs = append(refs, a)
	}
	return dets, refs
}

func className(names []string, c int) string {
	if c < len(names) {
		return names[c]
	}
	return "class" + itoa(c)
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}

// NMS keeps the highest-scoring box of every group overlapping by more than
// iou. With perClass, only boxes of the same class suppress each other.
func NMS(dets []frame.Detection, iou float32, perClass bool) []frame.Detection {
	keep := nmsKeep(dets, iou, perClass)
	out := make([]frame.Detection, len(keep))
	for i, k := range keep {
		out[i] = dets[k]
	}
	return out
}

// nmsKeep is NMS as the indices of the kept detections, best first, so a
// decoder can find what else it knows of each (a segmentation's mask
// coefficients).
func nmsKeep(dets []frame.Detection, iou float32, perClass bool) []int {
	order := make([]int, len(dets))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return dets[order[a]].Score > dets[order[b]].Score })
	keep := order[:0]
	for _, i := range order {
		ok := true
		for _, k := range keep {
			if (!perClass || dets[k].ClassID == dets[i].ClassID) && dets[k].Box.IoU(dets[i].Box) > iou {
				ok = false
				break
			}
		}
		if ok {
			keep = append(keep, i)
		}
	}
	return keep
}
