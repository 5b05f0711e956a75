package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"gocv.io/x/gocv"

	"sonolive/capture"
	"sonolive/frame"
)

// phantomCmd writes phantom frames as PNG with a COCO annotations.json and
// the lesions' masks, so the training code learns from, and eval scores
// outlines on, exactly what the demo shows.
func phantomCmd(args []string) error {
	fs := flag.NewFlagSet("phantom", flag.ContinueOnError)
	var (
		out    = fs.String("out", "", "output directory (required)")
		n      = fs.Int("frames", 300, "frames per seed")
		every  = fs.Int("every", 3, "keep every Nth frame")
		seeds  = fs.Int("seeds", 4, "phantom seeds 1..N (half linear, half sector)")
		first  = fs.Int("first-seed", 1, "first seed")
		lesion = fs.Int("lesions", 3, "lesions per phantom")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *out == "" {
		return fmt.Errorf("phantom: --out is required")
	}
	for _, d := range []string{"images", "masks"} {
		if err := os.MkdirAll(filepath.Join(*out, d), 0o755); err != nil {
			return fmt.Errorf("phantom: %w", err)
		}
	}
	type img struct {
		ID       int    `json:"id"`
		FileName string `json:"file_name"`
		Width    int    `json:"width"`
		Height   int    `json:"height"`
		MaskFile string `json:"mask_file"`
	}
	type ann struct {
		ID       int        `json:"id"`
		ImageID  int        `json:"image_id"`
		Category int        `json:"category_id"`
		BBox     [4]float32 `json:"bbox"`
		Area     float32    `json:"area"`
		IsCrowd  int        `json:"iscrowd"`
	}
	coco := struct {
		Images      []img            `json:"images"`
		Annotations []ann            `json:"annotations"`
		Categories  []map[string]any `json:"categories"`
	}{Categories: []map[string]any{{"id": 1, "name": "lesion"}}}
	for s := *first; s < *first+*seeds; s++ {
		cfg := capture.DefaultPhantom()
		cfg.Seed = uint64(s)
		cfg.Lesions = *lesion
		if s%2 == 0 {
			cfg.Geometry = "sector"
		}
		p := capture.NewPhantom(cfg)
		for i := 1; i <= *n; i += *every {
			f := p.Render(uint64(i))
			id := len(coco.Images) + 1
			name := fmt.Sprintf("images/phantom_s%d_%05d.png", s, i)
			if !gocv.IMWrite(filepath.Join(*out, name), f.Image) {
				f.Close()
				p.Close()
				return fmt.Errorf("phantom: cannot write %s", name)
			}
			maskName := fmt.Sprintf("masks/phantom_s%d_%05d.png", s, i)
			if err := writeLesionMask(filepath.Join(*out, maskName), p.LesionMap(), f); err != nil {
				f.Close()
				p.Close()
				return err
			}
			coco.Images = append(coco.Images, img{id, name, f.Image.Cols(), f.Image.Rows(), maskName})
			for _, b := range f.Truth {
				coco.Annotations = append(coco.Annotations, ann{len(coco.Annotations) + 1, id, 1, [4]float32{b.X1, b.Y1, b.W(), b.H()}, b.Area(), 0})
			}
			f.Close()
		}
		p.Close()
	}
	data, err := json.Marshal(coco)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %d images, %d boxes to %s\n", len(coco.Images), len(coco.Annotations), *out)
	return os.WriteFile(filepath.Join(*out, "annotations.json"), data, 0o644)
}

// writeLesionMask writes the mask of the frame's ground-truth lesions (those
// with a box) from the phantom's lesion map.
func writeLesionMask(path string, labels []uint8, f *frame.Frame) error {
	on := map[uint8]bool{}
	for _, id := range f.TruthIDs {
		on[uint8(id)] = true
	}
	pix := make([]byte, len(labels))
	for i, l := range labels {
		if on[l] {
			pix[i] = 255
		}
	}
	m, err := gocv.NewMatFromBytes(f.Image.Rows(), f.Image.Cols(), gocv.MatTypeCV8UC1, pix)
	if err != nil {
		return fmt.Errorf("phantom: mask: %w", err)
	}
	defer m.Close()
	if !gocv.IMWrite(path, m) {
		return fmt.Errorf("phantom: cannot write %s", path)
	}
	return nil
}
