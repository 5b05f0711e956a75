// Package eval measures a detector the way the live pipeline runs it: COCO
// ground truth in, the same preprocessing, session and decoding, and
// detection metrics out (AP, recall and false boxes at the operating
// threshold, malignancy AUC, latency).
package eval

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sonolive/frame"
)

// Dataset is the part of a COCO file eval needs.
type Dataset struct {
	Images     []Image
	Categories map[int]string
}

// Image is one COCO image with its boxes.
type Image struct {
	ID       int
	FileName string
	// Label is the image-level label when the data set has one (BUSI:
	// benign, malignant, normal).
	Label string
	// MaskFile is the expert lesion mask, relative like FileName ("": none).
	MaskFile string
	// Width and Height are the image's size in pixels (0: unknown).
	Width, Height int
	Truth         []Truth
}

// Truth is a ground-truth box.
type Truth struct {
	Box      frame.Box
	Category string
}

// LoadCOCO reads a COCO annotations file.
func LoadCOCO(path string) (*Dataset, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("coco: %w", err)
	}
	return ParseCOCO(data, path)
}

// ParseCOCO reads COCO annotations; name is for messages. Image file names
// must stay inside the data set's directory, image ids be unique and boxes
// finite and non-empty.
func ParseCOCO(data []byte, path string) (*Dataset, error) {
	var raw struct {
		Images []struct {
			ID       int    `json:"id"`
			FileName string `json:"file_name"`
			Label    string `json:"label"`
			MaskFile string `json:"mask_file"`
			Width    int    `json:"width"`
			Height   int    `json:"height"`
		} `json:"images"`
		Annotations []struct {
			ImageID    int        `json:"image_id"`
			CategoryID int        `json:"category_id"`
			BBox       [4]float32 `json:"bbox"`
		} `json:"annotations"`
		Categories []struct {
			ID   int    `json:"id"`
			Name string `json:"name"`
		} `json:"categories"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("coco %s: %w", path, err)
	}
	if len(raw.Images) == 0 {
		return nil, fmt.Errorf("coco %s: no images", path)
	}
	ds := &Dataset{Categories: map[int]string{}}
	for _, c := range raw.Categories {
		ds.Categories[c.ID] = c.Name
	}
	idx := map[int]int{}
	for _, im := range raw.Images {
		if _, dup := idx[im.ID]; dup {
			return nil, fmt.Errorf("coco %s: image id %d twice", path, im.ID)
		}
		if im.FileName == "" || !inside(im.FileName) {
			return nil, fmt.Errorf("coco %s: image %d: file name %q must be a path inside the data set", path, im.ID, im.FileName)
		}
		if im.MaskFile != "" && !inside(im.MaskFile) {
			return nil, fmt.Errorf("coco %s: image %d: mask file %q must be a path inside the data set", path, im.ID, im.MaskFile)
		}
		idx[im.ID] = len(ds.Images)
		ds.Images = append(ds.Images, Image{ID: im.ID, FileName: im.FileName, Label: im.Label, MaskFile: im.MaskFile, Width: max(0, im.Width), Height: max(0, im.Height)})
	}
	for _, a := range raw.Annotations {
		i, ok := idx[a.ImageID]
		if !ok {
			return nil, fmt.Errorf("coco %s: annotation for unknown image %d", path, a.ImageID)
		}
		b := a.BBox
		finite := true
		for _, v := range b {
			finite = finite && !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0)
		}
		if !finite || !(b[2] > 0 && b[3] > 0) {
			return nil, fmt.Errorf("coco %s: empty box %v on image %d", path, b, a.ImageID)
		}
		ds.Images[i].Truth = append(ds.Images[i].Truth, Truth{
			Box:      frame.Box{X1: b[0], Y1: b[1], X2: b[0] + b[2], Y2: b[1] + b[3]},
			Category: ds.Categories[a.CategoryID],
		})
	}
	return ds, nil
}

// inside: name is a relative path that stays in the data set's directory.
func inside(name string) bool {
	f := filepath.ToSlash(name)
	return !filepath.IsAbs(name) && f != ".." && !strings.HasPrefix(f, "../") && !strings.Contains(f, "/../") && !strings.HasSuffix(f, "/..")
}

// Split is a committed train/validation split (train/splits/*.json).
type Split struct {
	Source string   `json:"source"`
	Method string   `json:"method"`
	Val    []string `json:"val"`
}

// Restrict keeps only the images whose file names the split lists as
// validation. Every listed name must exist: a stale split is an error.
func (ds *Dataset) Restrict(splitPath string) error {
	data, err := os.ReadFile(splitPath)
	if err != nil {
		return fmt.Errorf("split: %w", err)
	}
	var s Split
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("split %s: %w", splitPath, err)
	}
	want := map[string]bool{}
	for _, v := range s.Val {
		want[v] = true
	}
	kept := ds.Images[:0]
	for _, im := range ds.Images {
		if want[im.FileName] {
			kept = append(kept, im)
			delete(want, im.FileName)
		}
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for k := range want {
			missing = append(missing, k)
		}
		sort.Strings(missing)
		return fmt.Errorf("split %s lists %d images not in the data set (first: %s)", splitPath, len(missing), missing[0])
	}
	ds.Images = kept
	return nil
}
