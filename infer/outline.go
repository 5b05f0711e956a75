package infer

import (
	"image"
	"math"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

// outlineFine is how many outline pixels a detector's mask cell spans per
// side: the mask is resampled this much finer before its boundary is
// traced, so a stride-4 mask gives an outline at one input pixel.
const outlineFine = 4

// maskOutline traces the lesion inside box b (model input pixels) on a
// probability map of mh×mw cells, each cell input pixels wide, read by
// prob(i, j) (row, column). The map is resampled bilinearly (Ultralytics'
// convention: probabilities, not logits), cut to the box and thresholded at
// 0.5; the largest region's boundary, through the centres of its boundary
// pixels, is simplified to within half a pixel and returned in input
// pixels. nil when nothing in the box passes.
func maskOutline(prob func(i, j int) float32, mh, mw int, cell float32, b frame.Box) []frame.Point {
	return traceMask(prob, mh, mw, cell, outlineFine, b)
}

// traceMask is maskOutline resampling fine times per cell.
func traceMask(prob func(i, j int) float32, mh, mw int, cell float32, outlineFine int, b frame.Box) []frame.Point {
	if b.X2 <= b.X1 || b.Y2 <= b.Y1 {
		return nil
	}
	step := cell / float32(outlineFine) // input pixels per fine pixel
	// Fine pixels whose centres lie in the box.
	fx0 := max(0, int(math.Ceil(float64(b.X1/step-0.5))))
	fy0 := max(0, int(math.Ceil(float64(b.Y1/step-0.5))))
	fx1 := min(mw*outlineFine-1, int(math.Floor(float64(b.X2/step-0.5))))
	fy1 := min(mh*outlineFine-1, int(math.Floor(float64(b.Y2/step-0.5))))
	w, h := fx1-fx0+1, fy1-fy0+1
	if w < 2 || h < 2 {
		return nil
	}
	at := func(i, j int) float32 {
		return prob(min(max(i, 0), mh-1), min(max(j, 0), mw-1))
	}
	// One pixel of background around the box, so a region touching the
	// box's edge still gets a closed boundary.
	img := gocv.NewMatWithSize(h+2, w+2, gocv.MatTypeCV8U)
	defer img.Close()
	buf, _ := img.DataPtrUint8()
	any := false
	for y := 0; y < h; y++ {
		// Fine pixel centre → mask coordinates (cell centres at k+0.5).
		my := (float32(fy0+y)+0.5)/float32(outlineFine) - 0.5
		i0 := int(math.Floor(float64(my)))
		wy := my - float32(i0)
		for x := 0; x < w; x++ {
			mx := (float32(fx0+x)+0.5)/float32(outlineFine) - 0.5
			j0 := int(math.Floor(float64(mx)))
			wx := mx - float32(j0)
			p := (1-wy)*((1-wx)*at(i0, j0)+wx*at(i0, j0+1)) + wy*((1-wx)*at(i0+1, j0)+wx*at(i0+1, j0+1))
			if p > 0.5 {
				buf[(y+1)*(w+2)+x+1] = 255
				any = true
			}
		}
	}
	if !any {
		return nil
	}
	contours := gocv.FindContours(img, gocv.RetrievalExternal, gocv.ChainApproxSimple)
	defer contours.Close()
	best, bestArea := -1, 0.0
	for k := 0; k < contours.Size(); k++ {
		if a := gocv.ContourArea(contours.At(k)); best < 0 || a > bestArea {
			best, bestArea = k, a
		}
	}
	if best < 0 {
		return nil
	}
	c := contours.At(best)
	poly := gocv.ApproxPolyDP(c, 0.5, true)
	defer poly.Close()
	pts := poly.ToPoints()
	if len(pts) < 3 {
		pts = c.ToPoints()
	}
	out := make([]frame.Point, len(pts))
	for k, p := range pts {
		out[k] = fineToInput(p, fx0-1, fy0-1, step)
	}
	return out
}

// fineToInput maps a fine pixel (offset by the crop's origin) to the input
// pixel position of its centre.
func fineToInput(p image.Point, ox, oy int, step float32) frame.Point {
	return frame.Point{X: (float32(p.X+ox) + 0.5) * step, Y: (float32(p.Y+oy) + 0.5) * step}
}

// PointToSource maps a point in model input pixels to source pixels,
// clipped to the frame.
func (l Letterbox) PointToSource(p frame.Point) frame.Point {
	x := (float64(p.X) - float64(l.PadX)) / l.ScaleX
	y := (float64(p.Y) - float64(l.PadY)) / l.ScaleY
	return frame.Point{X: float32(math.Max(0, math.Min(float64(l.SrcW), x))), Y: float32(math.Max(0, math.Min(float64(l.SrcH), y)))}
}
