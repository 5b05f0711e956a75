package infer

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Layouts a model's outputs can follow (docs/model-format.md).
const (
	FormatCNet        = "sonolive-cnet/1"
	FormatUltralytics = "ultralytics"
)

// How a sonolive-cnet detection's malignancy is read from the malignancy map
// (metadata key malignancy_pool).
const (
	// PoolCell reads the detection's own (peak) cell: heads trained at the
	// lesion centre.
	PoolCell = "cell"
	// PoolBox averages the logit over the cells whose centres lie inside the
	// detection's box: read-outs fitted on box-averaged features.
	PoolBox = "box"
)

// Metadata is what sonolive reads from a model's ONNX custom metadata.
type Metadata struct {
	Format   string
	Names    []string
	InputH   int
	InputW   int
	Channels int
	Stride   int
	Organ    string
	Version  string
	// Calibrated is true when the malignancy output is a calibrated
	// probability (only then may a risk suggestion be derived from it).
	Calibrated bool
	// MalignancyPool is PoolCell or PoolBox (PoolCell when the model does
	// not say).
	MalignancyPool string
	// OperatingThreshold is the score threshold chosen on validation
	// (metrics.operating_threshold or metrics.best_threshold), 0 if none.
	OperatingThreshold float32
	// Raw holds every key, for reports.
	Raw map[string]string
}

// parseNames accepts a JSON list, a JSON object keyed by index, or the
// Python dict repr Ultralytics writes: {0: 'person', 1: 'bicycle'}.
func parseNames(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal([]byte(s), &list); err == nil {
		return list, nil
	}
	var obj map[string]string
	if err := json.Unmarshal([]byte(s), &obj); err == nil {
		return indexedNames(obj)
	}
	// Python dict: keys are ints, values quoted with ' or ".
	re := regexp.MustCompile(`(\d+)\s*:\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")`)
	matches := re.FindAllStringSubmatch(s, -1)
	if len(matches) == 0 {
		return nil, fmt.Errorf("names %q: not a list or {index: name} map", s)
	}
	obj = map[string]string{}
	for _, m := range matches {
		obj[m[1]] = m[2] + m[3]
	}
	return indexedNames(obj)
}

func indexedNames(obj map[string]string) ([]string, error) {
	keys := make([]int, 0, len(obj))
	for k := range obj {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 {
			return nil, fmt.Errorf("names: key %q is not an index", k)
		}
		keys = append(keys, i)
	}
	sort.Ints(keys)
	names := make([]string, len(keys))
	for i, k := range keys {
		if k != i {
			return nil, fmt.Errorf("names: indices are not 0..%d", len(keys)-1)
		}
		names[i] = obj[strconv.Itoa(k)]
	}
	return names, nil
}

// parseImgsz accepts "320", "[320, 320]" or "[320,256]" (height, width).
func parseImgsz(s string) (h, w int, err error) {
	s = strings.Trim(strings.TrimSpace(s), "[]()")
	parts := strings.Split(s, ",")
	vals := make([]int, 0, 2)
	for _, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v <= 0 {
			return 0, 0, fmt.Errorf("imgsz %q: not a positive size", s)
		}
		vals = append(vals, v)
	}
	switch len(vals) {
	case 1:
		return vals[0], vals[0], nil
	case 2:
		return vals[0], vals[1], nil
	}
	return 0, 0, fmt.Errorf("imgsz %q: want one or two sizes", s)
}

func parseMetadata(raw map[string]string) (Metadata, error) {
	m := Metadata{Raw: raw, Format: raw["format"], Organ: raw["organ"], Version: raw["version"], Calibrated: raw["malignancy"] == "calibrated",
		MalignancyPool: PoolCell}
	switch p := strings.TrimSpace(raw["malignancy_pool"]); p {
	case "", PoolCell:
	case PoolBox:
		m.MalignancyPool = PoolBox
	default:
		// Reading a box model at its peak cell (or the reverse) gives a
		// plausible-looking but wrong figure: refuse rather than guess.
		return m, fmt.Errorf("malignancy_pool %q: want %s or %s", p, PoolCell, PoolBox)
	}
	var err error
	if m.Names, err = parseNames(raw["names"]); err != nil {
		return m, err
	}
	if s, ok := raw["imgsz"]; ok {
		if m.InputH, m.InputW, err = parseImgsz(s); err != nil {
			return m, err
		}
	}
	if s, ok := raw["channels"]; ok {
		if m.Channels, err = strconv.Atoi(strings.TrimSpace(s)); err != nil {
			return m, fmt.Errorf("channels %q: %w", s, err)
		}
	}
	if s, ok := raw["metrics"]; ok {
		var mt map[string]any
		if json.Unmarshal([]byte(s), &mt) == nil {
			for _, k := range []string{"operating_threshold", "best_threshold"} {
				if v, ok := mt[k].(float64); ok && v > 0 && v < 1 {
					m.OperatingThreshold = float32(v)
					break
				}
			}
		}
	}
	if s, ok := raw["stride"]; ok {
		// Ultralytics writes its max stride here; only cnet uses it.
		if m.Stride, err = strconv.Atoi(strings.TrimSpace(s)); err != nil {
			return m, fmt.Errorf("stride %q: %w", s, err)
		}
	}
	return m, nil
}
