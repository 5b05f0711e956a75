package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sonolive/internal/testnet"
	"sonolive/pipeline"
)

var binary string

// TestMain builds the real binary once; the tests run it as a user would.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sonolive-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "sonolive")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// dataDir is the shared data set: required in CI, skipped on a laptop
// without it.
func dataDir(t *testing.T) string {
	t.Helper()
	d := os.Getenv("SONOLIVE_DATA")
	if d == "" {
		d = filepath.Join("..", "..", "..", "shared", "data")
	}
	if _, err := os.Stat(filepath.Join(d, "clips")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("shared data missing at %s (set SONOLIVE_DATA): %v", d, err)
		}
		t.Skipf("shared data missing at %s", d)
	}
	return d
}

func sonolive(t *testing.T, timeout time.Duration, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func readReport(t *testing.T, path string) pipeline.Report {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r pipeline.Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// The embedded default: phantom and shipped model, offline, with every
// output. The model must find the phantom's lesions.
func TestRunPhantomDefault(t *testing.T) {
	dir := t.TempDir()
	rep := filepath.Join(dir, "r.json")
	_, stderr, err := sonolive(t, 5*time.Minute, "run", "--source", "phantom://?seed=1&lesions=2", "--frames", "300",
		"--report", rep, "--out", filepath.Join(dir, "a.mp4"), "--metadata", filepath.Join(dir, "m.jsonl"), "--log-level", "warn")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	r := readReport(t, rep)
	if r.Frames != 300 || r.Inferences == 0 || r.Phantom == nil {
		t.Fatalf("report %+v", r)
	}
	for _, stage := range pipeline.Stages {
		if _, ok := r.LatencyMS[stage]; !ok {
			t.Errorf("latency_ms lacks %s", stage)
		}
	}
	// Under the default budget a loaded machine misses deadlines and shows
	// tracker boxes instead, which lag a moving lesion; TestPhantomRecallPerPreset
	// holds the model's own figure. Here: useful boxes while the machine
	// keeps up, and carried boxes when it does not.
	switch {
	case r.MissRate < 0.05 && (r.Phantom.Recall < 0.75 || r.Phantom.Precision < 0.8):
		t.Errorf("default budget, %.1f%% misses: phantom precision %.3f recall %.3f (%+v)", 100*r.MissRate, r.Phantom.Precision, r.Phantom.Recall, r.Phantom)
	case r.MissRate >= 0.05 && r.Detections.Stale == 0:
		t.Errorf("%.1f%% deadline misses but no tracker boxes carried: %+v", 100*r.MissRate, r.Detections)
	}
	t.Logf("default budget: phantom precision %.3f recall %.3f; %d deadline misses; infer p50 %.2f ms; total p99 %.2f ms",
		r.Phantom.Precision, r.Phantom.Recall, r.DeadlineMisses, r.LatencyMS["infer"].P50, r.LatencyMS["total"].P99)
	lines := bytes.Count(must(os.ReadFile(filepath.Join(dir, "m.jsonl"))), []byte("\n"))
	if lines != 300 {
		t.Errorf("metadata has %d lines", lines)
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", filepath.Join(dir, "a.mp4")).Output()
	if err != nil || strings.TrimSpace(string(probe)) != "300" {
		t.Errorf("ffprobe: %q %v", probe, err)
	}
}

// Both exam presets' shipped models must find the phantom's lesions (the
// live demo shows real detections whichever preset a session picks). A
// budget no machine misses makes every frame carry its own inference, so
// the figure is the model's, not the machine's load.
func TestPhantomRecallPerPreset(t *testing.T) {
	for _, preset := range []string{"breast", "thyroid"} {
		t.Run(preset, func(t *testing.T) {
			rep := filepath.Join(t.TempDir(), "r.json")
			_, stderr, err := sonolive(t, 5*time.Minute, "run", "--preset", preset, "--source", "phantom://?seed=1&lesions=2",
				"--frames", "300", "--budget", "30s", "--report", rep, "--log-level", "warn")
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			r := readReport(t, rep)
			if r.Phantom == nil || r.DeadlineMisses != 0 || r.Inferences != 300 || !strings.Contains(r.Model, preset) {
				t.Fatalf("report %+v", r)
			}
			if r.Phantom.Recall < 0.95 || r.Phantom.Precision < 0.95 {
				t.Errorf("phantom precision %.3f recall %.3f (%+v)", r.Phantom.Precision, r.Phantom.Recall, r.Phantom)
			}
			t.Logf("%s: phantom precision %.3f recall %.3f", r.Model, r.Phantom.Precision, r.Phantom.Recall)
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Every real clip in the shared data runs end to end without an error.
func TestRunEveryClip(t *testing.T) {
	d := dataDir(t)
	var clips []string
	filepath.Walk(filepath.Join(d, "clips"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && !strings.HasSuffix(p, ".md") && !strings.HasSuffix(p, ".txt") && !strings.HasSuffix(p, ".json") {
			clips = append(clips, p)
		}
		return nil
	})
	if len(clips) < 40 {
		t.Fatalf("found %d clips under %s", len(clips), d)
	}
	for _, c := range clips {
		t.Run(filepath.Base(c), func(t *testing.T) {
			rep := filepath.Join(t.TempDir(), "r.json")
			_, stderr, err := sonolive(t, 3*time.Minute, "run", "--source", c, "--report", rep, "--log-level", "warn")
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			r := readReport(t, rep)
			if r.Frames < 20 || r.Error != "" || r.Inferences == 0 {
				t.Fatalf("report %+v", r)
			}
		})
	}
}

// Bad sources fail fast with one clear line on stderr and exit status 1.
func TestRunBadSources(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "broken.mp4")
	os.WriteFile(corrupt, bytes.Repeat([]byte{0, 0, 0, 1, 0x67}, 4000), 0o644)
	badModel := filepath.Join(dir, "model.onnx")
	os.WriteFile(badModel, []byte("this is not onnx"), 0o644)
	ln := testnet.BlackHole(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"corrupt file", []string{"--source", corrupt}, "no decodable frames"},
		{"missing file", []string{"--source", filepath.Join(dir, "gone.avi")}, "not found"},
		{"missing device", []string{"--source", "/dev/video93"}, "not found"},
		{"unreachable rtsp", []string{"--source", "rtsp://" + ln.Addr().String() + "/probe", "--open-timeout", "2s"}, "timed out after 2s"},
		{"bad spec", []string{"--source", "gopher://x"}, "bad source spec"},
		{"wrong model file", []string{"--source", "phantom://", "--frames", "5", "--model", badModel}, "unusable model"},
		{"missing model file", []string{"--source", "phantom://", "--frames", "5", "--model", filepath.Join(dir, "none.onnx")}, "no such file"},
		{"bad flag value", []string{"--budget", "soon"}, "invalid value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, stderr, err := sonolive(t, time.Minute, append([]string{"run", "--log-level", "error"}, tc.args...)...)
			el := time.Since(start)
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() == 0 {
				t.Fatalf("exit %v; stderr %s", err, stderr)
			}
			last := lastLine(stderr)
			if !strings.Contains(last, tc.want) || !strings.HasPrefix(last, "sonolive: ") {
				t.Fatalf("last stderr line %q does not say %q (all: %s)", last, tc.want, stderr)
			}
			if el > 10*time.Second {
				t.Fatalf("took %v", el)
			}
			t.Logf("%s (%v)", last, el.Round(time.Millisecond))
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestHelpListsEveryFlag(t *testing.T) {
	_, stderr, err := sonolive(t, 10*time.Second, "run", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"source", "model", "budget", "frames", "realtime", "out", "report", "metadata", "preset", "threads", "crop", "mask", "open-timeout", "reconnect"} {
		if !strings.Contains(stderr, "-"+f) {
			t.Errorf("--help does not document -%s", f)
		}
	}
}

// eval on frames the phantom command writes: the report carries every
// top-level metric, the interim model finds the phantom's lesions, and the
// segmenter's outlines match the phantom's masks and its calipers theirs.
func TestEvalOnPhantomCOCO(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, err := sonolive(t, time.Minute, "phantom", "--out", dir, "--frames", "60", "--every", "6", "--seeds", "2"); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	rep := filepath.Join(dir, "eval.json")
	stdout, stderr, err := sonolive(t, 2*time.Minute, "eval", "--coco", filepath.Join(dir, "annotations.json"), "--report", rep, "--bootstrap", "200")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var r map[string]any
	if err := json.Unmarshal(must(os.ReadFile(rep)), &r); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ap50", "ap50_95", "recall", "fp_per_normal_image", "auc", "latency_ms", "per_class"} {
		if _, ok := r[k]; !ok {
			t.Errorf("report lacks %s", k)
		}
	}
	if ap, _ := r["ap50"].(float64); ap < 0.9 {
		t.Errorf("phantom AP@0.5 %.3f < 0.9", ap)
	}
	o, _ := r["outlines"].(map[string]any)
	dice, _ := o["lesion_dice"].(float64)
	long, _ := o["long_axis_median_abs_rel_error"].(float64)
	if found, _ := o["found"].(float64); found < 20 || dice < 0.9 || long <= 0 || long > 0.05 {
		t.Errorf("outlines on the phantom: %v", o)
	}
	if !strings.Contains(stdout, "AP@0.5") || !strings.Contains(stderr, "20/20 images") {
		t.Errorf("no table or progress:\n%s\n%s", stdout, stderr)
	}
}

func TestEvalBadInputs(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"images": [`), 0o644)
	split := filepath.Join(dir, "split.json")
	os.WriteFile(split, []byte(`{"val": ["images/nope.png"]}`), 0o644)
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`{"images": [{"id": 1, "file_name": "images/x.png"}], "annotations": [], "categories": []}`), 0o644)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--coco", bad}, "coco"},
		{[]string{"--coco", good, "--split", split}, "not in the data set"},
		{[]string{"--coco", good}, "cannot read image"},
		{[]string{}, "--coco is required"},
	}
	for _, tc := range tests {
		_, stderr, err := sonolive(t, time.Minute, append([]string{"eval"}, tc.args...)...)
		if err == nil || !strings.Contains(lastLine(stderr), tc.want) {
			t.Errorf("eval %v: err %v, stderr %q, want %q", tc.args, err, lastLine(stderr), tc.want)
		}
	}
}
