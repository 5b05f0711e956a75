package server

import (
	"context"
	"errors"
	"testing"

	"gocv.io/x/gocv"

	"sonolive/capture"
	"sonolive/stream"
)

// The frame decoded for a freeze is the one named, not a neighbour: it is
// far closer to that frame's original pixels than to a frame 10 later.
func TestStillsDecodeTheFrameNamed(t *testing.T) {
	s := &stills{dir: t.TempDir()}
	enc := stream.NewEncoder(stream.EncoderConfig{Bitrate: 4_000_000, FPS: 30, KeyframeInterval: 1e9})
	defer enc.Close()
	src := capture.NewPhantom(capture.PhantomConfig{Seed: 4, Width: 320, Height: 240})
	var originals []gocv.Mat
	defer func() {
		for _, m := range originals {
			m.Close()
		}
	}()
	for i := 0; i < 40; i++ {
		f, err := src.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		au, key, err := enc.Encode(f.Image)
		if err != nil {
			t.Fatal(err)
		}
		s.WriteFrame(&stream.EncodedFrame{AU: au, Key: key, RTPTime: uint32(1000 + 3000*i)})
		originals = append(originals, f.Image.Clone())
		f.Close()
	}
	const want = 25
	img, err := s.frame(uint32(1000 + 3000*want))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.Cols() != 320 || img.Rows() != 240 {
		t.Fatalf("still %dx%d", img.Cols(), img.Rows())
	}
	diff := func(o gocv.Mat) float64 { return gocv.NormWithMats(img, o, gocv.NormL2) }
	if same, other := diff(originals[want]), diff(originals[want-10]); !(same*2 < other) {
		t.Fatalf("distance to frame %d: %.0f, to frame %d: %.0f", want, same, want-10, other)
	}
	if ts, ok := s.newest(); !ok || ts != uint32(1000+3000*39) {
		t.Fatalf("newest %d %v", ts, ok)
	}
	if _, err := s.frame(7); !errors.Is(err, errNoStill) {
		t.Fatalf("unknown frame: %v", err)
	}
}
