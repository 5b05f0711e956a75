// Package models embeds the shipped detectors so the binary runs its demo
// with no files beside it. The model card is models/README.md.
package models

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

//go:embed *.onnx
var files embed.FS

// Presets maps an exam preset to the embedded model it loads. The breast
// and thyroid models also find the phantom's lesions, so either drives the
// demo; "phantom" is the phantom-only model the latency benchmarks use.
var Presets = map[string]string{
	"breast":  "breast.onnx",
	"thyroid": "thyroid.onnx",
	"phantom": "phantom-interim.onnx",
}

// DefaultPreset is what `sonolive run` loads when no model is given.
const DefaultPreset = "breast"

// Load returns the embedded model for preset.
func Load(preset string) (name string, data []byte, err error) {
	name, ok := Presets[preset]
	if !ok {
		return "", nil, fmt.Errorf("unknown preset %q (have %s)", preset, strings.Join(Names(), ", "))
	}
	data, err = files.ReadFile(name)
	if err != nil {
		return "", nil, fmt.Errorf("preset %s: %w", preset, err)
	}
	return name, data, nil
}

// Names lists the presets.
func Names() []string {
	var n []string
	for k := range Presets {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// SegmenterFile is the embedded lesion segmenter (train/boxseg.py), which
// outlines the lesions in any preset's boxes.
const SegmenterFile = "lesion-seg.onnx"

// Segmenter returns the embedded lesion segmenter; ok is false in a build
// that has none.
func Segmenter() (data []byte, ok bool) {
	data, err := files.ReadFile(SegmenterFile)
	return data, err == nil
}

// OrganFile is the embedded organ classifier (train/organ.py) the
// wrong-preset guard runs.
const OrganFile = "organ.onnx"

// Organ returns the embedded organ classifier; ok is false in a build that
// has none.
func Organ() (data []byte, ok bool) {
	data, err := files.ReadFile(OrganFile)
	return data, err == nil
}
