package stream

import (
	"context"
	"testing"

	"gocv.io/x/gocv"

	"sonolive/capture"
)

func TestEncoder(t *testing.T) {
	enc := NewEncoder(EncoderConfig{Bitrate: 1_000_000, FPS: 30})
	defer enc.Close()
	src := capture.NewPhantom(capture.PhantomConfig{Seed: 1, Width: 321, Height: 241})
	if keys := encodeFrames(t, enc, src, 40, 20, nil); len(keys) != 2 || keys[0] != 0 || keys[1] != 20 {
		t.Fatalf("keyframes at %v, want [0 20]", keys)
	}
	if enc.w != 320 || enc.h != 240 {
		t.Fatalf("odd size not trimmed to even: %dx%d", enc.w, enc.h)
	}

	// A source that comes back at another size gets a new encoder that
	// starts with a keyframe.
	big := gocv.NewMatWithSize(360, 640, gocv.MatTypeCV8UC3)
	defer big.Close()
	if _, key, err := enc.Encode(big); err != nil || !key {
		t.Fatalf("after resize: key=%v err=%v", key, err)
	}

	gray := gocv.NewMatWithSize(240, 320, gocv.MatTypeCV8UC1)
	defer gray.Close()
	tiny := gocv.NewMatWithSize(8, 8, gocv.MatTypeCV8UC3)
	defer tiny.Close()
	empty := gocv.NewMat()
	defer empty.Close()
	for name, m := range map[string]gocv.Mat{"gray": gray, "tiny": tiny, "empty": empty} {
		if _, _, err := enc.Encode(m); err == nil {
			t.Errorf("%s frame encoded without error", name)
		}
	}
}

func TestHasIDR(t *testing.T) {
	for _, tc := range []struct {
		name string
		au   []byte
		want bool
	}{
		{"idr", []byte{0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x65, 9}, true},
		{"p slice", []byte{0, 0, 0, 1, 0x41, 9, 9}, false},
		{"empty", nil, false},
		{"truncated", []byte{0, 0, 1}, false},
	} {
		if got := hasIDR(tc.au); got != tc.want {
			t.Errorf("%s: got %v", tc.name, got)
		}
	}
}

// encodeFrames encodes n phantom frames, forcing a keyframe at frame
// force; check, when set, sees each frame. It returns where the keyframes
// were.
func encodeFrames(t *testing.T, enc frameEncoder, src *capture.Phantom, n, force int, check func(i int, au []byte, key bool)) []int {
	t.Helper()
	var keys []int
	for i := 0; i < n; i++ {
		f, err := src.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if i == force {
			enc.ForceKeyframe()
		}
		au, key, err := enc.Encode(f.Image)
		f.Close()
		if err != nil || len(au) == 0 {
			t.Fatalf("frame %d: %d bytes, %v", i, len(au), err)
		}
		if check != nil {
			check(i, au, key)
		}
		if key {
			keys = append(keys, i)
		}
	}
	return keys
}
