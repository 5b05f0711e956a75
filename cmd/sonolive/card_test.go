package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cardMetrics is the machine-readable block of models/README.md: for each
// preset (or entry naming its preset: one per validation set), where its
// validation split lives and the numbers the card states, by their path in
// eval's report ("outlines.lesion_dice").
type cardMetrics map[string]struct {
	Preset  string             `json:"preset"` // default: the entry's name
	COCO    string             `json:"coco"`   // relative to SONOLIVE_DATA
	Split   string             `json:"split"`
	Metrics map[string]float64 `json:"metrics"`
}

// reportValue is the number at a dotted path of a JSON report.
func reportValue(rep map[string]any, path string) (float64, bool) {
	var cur any = rep
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return 0, false
		}
		cur = m[k]
	}
	v, ok := cur.(float64)
	return v, ok
}

func readCard(t *testing.T) cardMetrics {
	t.Helper()
	data := string(must(os.ReadFile("../../models/README.md")))
	const open = "```json sonolive-metrics\n"
	i := strings.Index(data, open)
	if i < 0 {
		t.Fatal("models/README.md has no ```json sonolive-metrics block")
	}
	rest := data[i+len(open):]
	j := strings.Index(rest, "```")
	var m cardMetrics
	if err := json.Unmarshal([]byte(rest[:j]), &m); err != nil {
		t.Fatalf("metrics block: %v", err)
	}
	return m
}

// Every shipped model is re-measured on its committed validation split with
// sonolive eval; the model card must state what it measures, within 0.01.
func TestModelCardMatchesEval(t *testing.T) {
	card := readCard(t)
	if len(card) == 0 {
		t.Fatal("metrics block lists no model")
	}
	d := dataDir(t)
	for name, c := range card {
		preset := c.Preset
		if preset == "" {
			preset = name
		}
		t.Run(name, func(t *testing.T) {
			rep := filepath.Join(t.TempDir(), "eval.json")
			_, stderr, err := sonolive(t, 10*time.Minute, "eval", "--preset", preset, "--coco", filepath.Join(d, c.COCO),
				"--split", filepath.Join("..", "..", c.Split), "--report", rep, "--bootstrap", "0")
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			var got map[string]any
			json.Unmarshal(must(os.ReadFile(rep)), &got)
			for k, want := range c.Metrics {
				v, ok := reportValue(got, k)
				if !ok {
					t.Errorf("%s: eval gives no %s", preset, k)
					continue
				}
				if math.Abs(v-want) > 0.01 {
					t.Errorf("%s: %s measured %.4f, model card says %.4f", preset, k, v, want)
				}
			}
		})
	}
}
