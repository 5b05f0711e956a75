package infer

import (
	"os"
	"testing"
)

// The training smoke run (make test-train) exports a model; it must load and
// run through exactly the runtime the live pipeline uses, so the Python
// export and the Go decoder cannot drift apart unnoticed.
func TestTrainingSmokeModelRuns(t *testing.T) {
	path := os.Getenv("SONOLIVE_SMOKE_MODEL")
	if path == "" {
		t.Skip("SONOLIVE_SMOKE_MODEL not set (make test sets it after the training smoke run)")
	}
	m, err := OpenModel(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	md := m.Metadata()
	if md.Format != FormatCNet || md.InputW != 320 || md.Channels != 1 || len(md.Names) == 0 {
		t.Fatalf("metadata %+v", md)
	}
	img := blank(640, 480)
	defer img.Close()
	if _, err := m.Detect(img); err != nil {
		t.Fatal(err)
	}
}
