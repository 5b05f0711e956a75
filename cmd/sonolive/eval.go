package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"gocv.io/x/gocv"

	"sonolive/eval"
	"sonolive/infer"
	"sonolive/internal/stats"
)

// evalReport is `sonolive eval --report`'s JSON. NaN metrics (no positives,
// no normal images) are null.
type evalReport struct {
	Model        string                 `json:"model"`
	COCO         string                 `json:"coco"`
	Split        string                 `json:"split,omitempty"`
	Images       int                    `json:"images"`
	TruthBoxes   int                    `json:"truth_boxes"`
	AP50         *float64               `json:"ap50"`
	AP50CI       [2]*float64            `json:"ap50_ci95"`
	AP5095       *float64               `json:"ap50_95"`
	Threshold    float64                `json:"threshold"`
	Recall       float64                `json:"recall"`
	RecallCI     [2]*float64            `json:"recall_ci95"`
	Precision    float64                `json:"precision"`
	FPNormal     *float64               `json:"fp_per_normal_image"`
	NormalImages int                    `json:"normal_images"`
	AUC          *float64               `json:"auc"`
	AUCCI        [2]*float64            `json:"auc_ci95"`
	AUCCounts    map[string]int         `json:"auc_counts"`
	PerClass     map[string]classReport `json:"per_class"`
	// RecallBy is the recall at the operating threshold by the lesion's
	// class, size (small, medium, large: its longer side under a tenth,
	// up to three tenths, or over three tenths of the image's), both, and
	// whether it touches the image's edge.
	RecallBy  map[string]eval.GroupRecall `json:"recall_by"`
	LatencyMS stats.Percentiles           `json:"latency_ms"`
	Threads   int                         `json:"threads"`
	// Outlines is present when the images have expert masks and a
	// segmenter (or a segmenting detector) outlined the lesions.
	Outlines *outlineReport `json:"outlines,omitempty"`
}

func num(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	v := math.Round(x*1e4) / 1e4
	return &v
}

func evalCmd(args []string) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sonolive eval --coco annotations.json [--images-root DIR] [--split FILE] [--model PATH | --preset NAME] [--report r.json]

Measures a detector through the live pipeline's own preprocessing, ONNX
session and decoding: COCO AP@0.5 and AP@[.5:.95] (class-agnostic and per
ground-truth class), recall and precision at the operating threshold, false
boxes per normal (lesion-free) image, per-image malignancy AUC where labels
allow, recall at the operating threshold by lesion class, size and edge
contact, and inference latency. Where the images have expert masks
(mask_file), recall is also given by the lesions' margin (solidity under
0.9: irregular) and contrast with the tissue around them (within a factor
0.7 either way: low), and the outlines of the boxes shown at the operating
threshold (a segmenting detector's own, else the segmenter's: --segmenter,
default the embedded one) are scored: Dice and IoU per lesion and per
image, the calipers' long and short axes against those measured on the
mask, and taller-than-wide agreement. 95% intervals are image bootstraps.

Flags:
`)
		fs.PrintDefaults()
	}
	var (
		coco     = fs.String("coco", "", "COCO annotations file (required)")
		root     = fs.String("images-root", "", "directory file_name is relative to (default: the annotations file's directory)")
		split    = fs.String("split", "", "evaluate only the validation images listed in this split file (train/splits/*.json)")
		report   = fs.String("report", "", "write the JSON report here ('-' for stdout)")
		boot     = fs.Int("bootstrap", 1000, "bootstrap rounds for the 95% intervals (0: none)")
		opThr    = fs.Float64("op-threshold", 0, "operating threshold for recall and false boxes (0: the model's, else 0.3)")
		logLevel = fs.String("log-level", "warn", "debug, info, warn or error")
		limit    = fs.Int("limit", 0, "evaluate at most this many images (0: all)")
		olBoxes  = fs.String("outline-boxes", "detector", "boxes the segmenter outlines for the mask scores: 'detector' (its own, at the operating threshold) or 'truth' (the masks' lesions: the segmenter alone)")
		mf       modelFlags
	)
	mf.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *coco == "" {
		return fmt.Errorf("eval: --coco is required")
	}
	if _, err := newLogger(*logLevel); err != nil {
		return err
	}
	ds, err := eval.LoadCOCO(*coco)
	if err != nil {
		return err
	}
	if *split != "" {
		if err := ds.Restrict(*split); err != nil {
			return err
		}
	}
	if *limit > 0 && *limit < len(ds.Images) {
		ds.Images = ds.Images[:*limit]
	}
	if *root == "" {
		*root = filepath.Dir(*coco)
	}
	if *olBoxes != "detector" && *olBoxes != "truth" {
		return fmt.Errorf("eval: --outline-boxes must be detector or truth, not %q", *olBoxes)
	}
	// AP needs the whole score range; the operating threshold is applied
	// afterwards, exactly as the live view would. The segmenter runs apart
	// from the detector: on the boxes the live view would show, not on
	// every low-score candidate, and timed on its own.
	mf.threshold = 0.05
	segFlag := mf.segmenter
	mf.segmenter = "none"
	model, name, err := mf.open()
	if err != nil {
		return err
	}
	if model == nil {
		return fmt.Errorf("eval: a model is required")
	}
	defer model.Close()
	withMasks := false
	for _, im := range ds.Images {
		withMasks = withMasks || im.MaskFile != ""
	}
	var seg *infer.Segmenter
	segName := segFlag
	if withMasks && segFlag != "none" {
		mf.segmenter = segFlag
		if seg, err = mf.openSegmenter(infer.Options{LibPath: mf.ortLib, Threads: mf.threads}); err != nil {
			return err
		}
		if seg != nil {
			defer seg.Close()
			if segName == "" {
				segName = "embedded:" + seg.Version()
			}
		}
	}
	thr := *opThr
	if thr <= 0 {
		thr = float64(model.Metadata().OperatingThreshold)
	}
	if thr <= 0 {
		thr = 0.3
	}
	// float32 metadata: keep the report free of float noise.
	thr = math.Round(thr*1e4) / 1e4

	var lat, segLat stats.Samples
	results := make([]eval.Result, 0, len(ds.Images))
	start := time.Now()
	for i, im := range ds.Images {
		img := gocv.IMRead(filepath.Join(*root, im.FileName), gocv.IMReadColor)
		if img.Empty() {
			img.Close()
			return fmt.Errorf("eval: cannot read image %s", filepath.Join(*root, im.FileName))
		}
		res, err := model.Detect(img)
		if err != nil {
			img.Close()
			return fmt.Errorf("eval: %s: %w", im.FileName, err)
		}
		lat.Add(res.Preprocess + res.Infer + res.Decode)
		// The decoded image's size is the truth's frame, whatever the
		// annotations say.
		im.Width, im.Height = img.Cols(), img.Rows()
		r := eval.Result{Image: im, Detections: res.Detections}
		if im.MaskFile != "" {
			err = withMask(&r, img, filepath.Join(*root, im.MaskFile), thr, seg, *olBoxes == "truth", &segLat)
		}
		img.Close()
		if err != nil {
			return fmt.Errorf("eval: %s: %w", im.FileName, err)
		}
		results = append(results, r)
		if n := len(ds.Images); (i+1)%max(1, n/10) == 0 || i+1 == n {
			el := time.Since(start)
			eta := time.Duration(float64(el) / float64(i+1) * float64(n-i-1))
			fmt.Fprintf(os.Stderr, "eval: %d/%d images, %v elapsed, ETA %v\n", i+1, n, el.Round(time.Second), eta.Round(time.Second))
		}
	}

	op := eval.Operating(results, thr)
	pos, neg, skipped := eval.MalignancyScores(results)
	ci := func(f func([]eval.Result) float64) [2]*float64 {
		b := eval.Bootstrap95(results, *boot, f)
		return [2]*float64{num(b[0]), num(b[1])}
	}
	rep := evalReport{
		Model: name, COCO: *coco, Split: *split, Images: len(results), TruthBoxes: op.Truth,
		AP50:      num(eval.AP(results, 0.5, "")),
		AP50CI:    ci(func(r []eval.Result) float64 { return eval.AP(r, 0.5, "") }),
		AP5095:    num(eval.APRange(results, "")),
		Threshold: thr, Recall: stats.Round3(op.Recall), Precision: stats.Round3(op.Precision),
		RecallCI:     ci(func(r []eval.Result) float64 { return eval.Operating(r, thr).Recall }),
		NormalImages: op.NormalImages,
		AUC:          num(eval.AUC(pos, neg)),
		AUCCI: ci(func(r []eval.Result) float64 {
			p, n, _ := eval.MalignancyScores(r)
			return eval.AUC(p, n)
		}),
		AUCCounts: map[string]int{"malignant": len(pos), "benign": len(neg), "no_score": skipped},
		PerClass:  map[string]classReport{},
		RecallBy:  eval.RecallByGroup(results, thr),
		LatencyMS: lat.Percentiles(), Threads: mf.threads,
	}
	if op.NormalImages > 0 {
		rep.FPNormal = num(op.FPPerNormalImg)
	}
	cats := map[string]int{}
	for _, r := range results {
		for _, t := range r.Image.Truth {
			cats[t.Category]++
		}
	}
	for c, n := range cats {
		rep.PerClass[c] = classReport{AP50: num(eval.AP(results, 0.5, c)), AP5095: num(eval.APRange(results, c)), Truth: n}
	}
	if seg == nil {
		segName = "the detector's own"
	}
	for _, r := range results {
		if r.Masks != nil {
			rep.Outlines = outlines(results, *boot, segName, *olBoxes, segLat)
			break
		}
	}
	printEval(rep)
	if *report != "" {
		return writeJSON(*report, rep)
	}
	return nil
}

func printEval(r evalReport) {
	f := func(p *float64) string {
		if p == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.3f", *p)
	}
	ci := func(c [2]*float64) string {
		if c[0] == nil {
			return ""
		}
		return fmt.Sprintf("[%s, %s]", f(c[0]), f(c[1]))
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "model\t%s\n", r.Model)
	fmt.Fprintf(w, "images\t%d (%d boxes, %d normal)\n", r.Images, r.TruthBoxes, r.NormalImages)
	fmt.Fprintf(w, "AP@0.5\t%s\t%s\n", f(r.AP50), ci(r.AP50CI))
	fmt.Fprintf(w, "AP@[.5:.95]\t%s\n", f(r.AP5095))
	fmt.Fprintf(w, "recall @ %.3f\t%.3f\t%s\n", r.Threshold, r.Recall, ci(r.RecallCI))
	fmt.Fprintf(w, "precision @ %.3f\t%.3f\n", r.Threshold, r.Precision)
	fmt.Fprintf(w, "false boxes / normal image\t%s\n", f(r.FPNormal))
	fmt.Fprintf(w, "malignancy AUC\t%s\t%s (malignant %d, benign %d, no score %d)\n", f(r.AUC), ci(r.AUCCI), r.AUCCounts["malignant"], r.AUCCounts["benign"], r.AUCCounts["no_score"])
	names := make([]string, 0, len(r.PerClass))
	for c := range r.PerClass {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		pc := r.PerClass[c]
		fmt.Fprintf(w, "  %s\tAP@0.5 %s\tAP@[.5:.95] %s\t(%d boxes)\n", c, f(pc.AP50), f(pc.AP5095), pc.Truth)
	}
	if len(r.RecallBy) > 0 {
		keys := make([]string, 0, len(r.RecallBy))
		for k := range r.RecallBy {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "recall @ %.3f by lesion\n", r.Threshold)
		for _, k := range keys {
			g := r.RecallBy[k]
			fmt.Fprintf(w, "  %s\t%.3f\t(%d of %d)\n", k, g.Recall, g.Found, g.Truth)
		}
	}
	fmt.Fprintf(w, "latency ms (threads %d)\tp50 %.2f\tp90 %.2f\tp99 %.2f\tmax %.2f\n", r.Threads, r.LatencyMS.P50, r.LatencyMS.P90, r.LatencyMS.P99, r.LatencyMS.Max)
	if o := r.Outlines; o != nil {
		pct := func(p *float64) string {
			if p == nil {
				return "n/a"
			}
			return fmt.Sprintf("%.1f%%", 100**p)
		}
		pctCI := func(c [2]*float64) string {
			if c[0] == nil {
				return ""
			}
			return fmt.Sprintf("[%s, %s]", pct(c[0]), pct(c[1]))
		}
		fmt.Fprintf(w, "outlines\t%s on %s boxes\n", o.Segmenter, o.Boxes)
		fmt.Fprintf(w, "  lesion Dice\t%s\t%s (%d of %d lesions found)\n", f(o.LesionDice), ci(o.LesionDiceCI), o.Found, o.Lesions)
		fmt.Fprintf(w, "  lesion IoU\t%s\t%s\n", f(o.LesionIoU), ci(o.LesionIoUCI))
		fmt.Fprintf(w, "  image Dice\t%s\t%s (%d images)\n", f(o.ImageDice), ci(o.ImageDiceCI), o.Images)
		fmt.Fprintf(w, "  image IoU\t%s\t%s\n", f(o.ImageIoU), ci(o.ImageIoUCI))
		fmt.Fprintf(w, "  long axis error\tmedian |e| %s\t%s mean %s (%d lesions)\n", pct(o.LongAbsErr), pctCI(o.LongAbsErrCI), pct(o.LongBias), o.Measured)
		fmt.Fprintf(w, "  short axis error\tmedian |e| %s\t%s mean %s\n", pct(o.ShortAbsErr), pctCI(o.ShortAbsErrCI), pct(o.ShortBias))
		fmt.Fprintf(w, "  taller-than-wide\tagreement %s\tkappa %s %s (%d taller than wide)\n", pct(o.TTWAgree), f(o.TTWKappa), ci(o.TTWKappaCI), o.TTWTruth)
		fmt.Fprintf(w, "  outline ms per lesion\tp50 %.2f\tp90 %.2f\tp99 %.2f\n", o.OutlineLatencyMS.P50, o.OutlineLatencyMS.P90, o.OutlineLatencyMS.P99)
	}
	w.Flush()
}
