package main

import (
	"fmt"
	"time"

	"gocv.io/x/gocv"

	"sonolive/eval"
	"sonolive/frame"
	"sonolive/infer"
	"sonolive/internal/stats"
)

// outlineReport scores the lesion outlines against the expert masks: per
// lesion on the lesions found at the operating threshold (or on the truth
// boxes with --outline-boxes truth), per image on all of each mask.
type outlineReport struct {
	Segmenter        string            `json:"segmenter"`
	Boxes            string            `json:"boxes"`
	Images           int               `json:"images"`
	Lesions          int               `json:"lesions"`
	Found            int               `json:"found"`
	LesionDice       *float64          `json:"lesion_dice"`
	LesionDiceCI     [2]*float64       `json:"lesion_dice_ci95"`
	LesionIoU        *float64          `json:"lesion_iou"`
	LesionIoUCI      [2]*float64       `json:"lesion_iou_ci95"`
	ImageDice        *float64          `json:"image_dice"`
	ImageDiceCI      [2]*float64       `json:"image_dice_ci95"`
	ImageIoU         *float64          `json:"image_iou"`
	ImageIoUCI       [2]*float64       `json:"image_iou_ci95"`
	Measured         int               `json:"measured"`
	LongAbsErr       *float64          `json:"long_axis_median_abs_rel_error"`
	LongAbsErrCI     [2]*float64       `json:"long_axis_median_abs_rel_error_ci95"`
	ShortAbsErr      *float64          `json:"short_axis_median_abs_rel_error"`
	ShortAbsErrCI    [2]*float64       `json:"short_axis_median_abs_rel_error_ci95"`
	LongBias         *float64          `json:"long_axis_mean_rel_error"`
	ShortBias        *float64          `json:"short_axis_mean_rel_error"`
	TTWAgree         *float64          `json:"taller_than_wide_agreement"`
	TTWKappa         *float64          `json:"taller_than_wide_kappa"`
	TTWKappaCI       [2]*float64       `json:"taller_than_wide_kappa_ci95"`
	TTWTruth         int               `json:"taller_than_wide_truth"`
	OutlineLatencyMS stats.Percentiles `json:"outline_latency_ms_per_lesion"`
}

type classReport struct {
	AP50   *float64 `json:"ap50"`
	AP5095 *float64 `json:"ap50_95"`
	Truth  int      `json:"truth_boxes"`
}

// withMask reads the image's expert mask and gives r its lesions' traits
// (margin, contrast) and its outlines' scores: the detections at the
// operating threshold (or, truthBoxes, the mask's own lesions) keep the
// outlines a segmenting detector gave them, and the segmenter, when there
// is one, outlines the rest, clipped to the image as the live view's are.
func withMask(r *eval.Result, img gocv.Mat, maskPath string, thr float64, seg *infer.Segmenter, truthBoxes bool, lat *stats.Samples) error {
	mask, err := eval.LoadMask(maskPath, img.Cols(), img.Rows())
	if err != nil {
		return err
	}
	gray := gocv.NewMat()
	defer gray.Close()
	gocv.CvtColor(img, &gray, gocv.ColorBGRToGray)
	pix, err := gray.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("mask: gray image: %w", err)
	}
	if gray.Step() != gray.Cols() {
		return fmt.Errorf("mask: gray image with row padding")
	}
	r.Traits = eval.LesionTraits(mask, eval.Gray{W: gray.Cols(), H: gray.Rows(), Pix: pix}, r.Image.Truth, r.Detections, thr)
	var shown []frame.Detection
	if truthBoxes {
		for _, rg := range mask.Regions(eval.MinRegion) {
			shown = append(shown, frame.Detection{Box: rg.Box, Score: 1})
		}
	} else {
		for _, d := range r.Detections {
			if float64(d.Score) >= thr {
				shown = append(shown, d)
			}
		}
	}
	outlined := false
	for i := range shown {
		if shown[i].Outline != nil || seg == nil {
			outlined = outlined || shown[i].Outline != nil
			continue
		}
		t0 := time.Now()
		pts, err := seg.Outline(img, shown[i].Box)
		if err != nil {
			return fmt.Errorf("outline: %w", err)
		}
		lat.Add(time.Since(t0))
		for k, p := range pts {
			pts[k] = frame.Point{X: min(max(p.X, 0), float32(img.Cols())), Y: min(max(p.Y, 0), float32(img.Rows()))}
		}
		shown[i].Outline, outlined = pts, true
	}
	if seg != nil || outlined {
		m := eval.ScoreMasks(mask, shown)
		r.Masks = &m
	}
	return nil
}

// outlines sums the outline scores up with image-bootstrap intervals.
func outlines(results []eval.Result, boot int, segName, boxes string, lat stats.Samples) *outlineReport {
	s := eval.Segmentation(results)
	ci := func(f func(eval.SegSummary) float64) [2]*float64 {
		b := eval.Bootstrap95(results, boot, func(r []eval.Result) float64 { return f(eval.Segmentation(r)) })
		return [2]*float64{num(b[0]), num(b[1])}
	}
	return &outlineReport{
		Segmenter: segName, Boxes: boxes, Images: s.Images, Lesions: s.Lesions, Found: s.Found,
		LesionDice: num(s.LesionDice), LesionDiceCI: ci(func(s eval.SegSummary) float64 { return s.LesionDice }),
		LesionIoU: num(s.LesionIoU), LesionIoUCI: ci(func(s eval.SegSummary) float64 { return s.LesionIoU }),
		ImageDice: num(s.ImageDice), ImageDiceCI: ci(func(s eval.SegSummary) float64 { return s.ImageDice }),
		ImageIoU: num(s.ImageIoU), ImageIoUCI: ci(func(s eval.SegSummary) float64 { return s.ImageIoU }),
		Measured:   s.Measured,
		LongAbsErr: num(s.LongMedAbsErr), LongAbsErrCI: ci(func(s eval.SegSummary) float64 { return s.LongMedAbsErr }),
		ShortAbsErr: num(s.ShortMedAbsErr), ShortAbsErrCI: ci(func(s eval.SegSummary) float64 { return s.ShortMedAbsErr }),
		LongBias: num(s.LongBias), ShortBias: num(s.ShortBias),
		TTWAgree: num(s.TTWAgree), TTWKappa: num(s.TTWKappa), TTWKappaCI: ci(func(s eval.SegSummary) float64 { return s.TTWKappa }),
		TTWTruth: s.TTWTruth, OutlineLatencyMS: lat.Percentiles(),
	}
}
