package vpx

import (
	"errors"
	"testing"
)

func TestEncoder(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"odd width", Config{Width: 63, Height: 48}},
		{"too small", Config{Width: 8, Height: 8}},
	} {
		if _, err := New(tc.cfg); !errors.Is(err, ErrEncode) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	e, err := New(Config{Width: 64, Height: 48, Bitrate: 200_000, FPS: 30, Speed: -8})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	img := make([]byte, 64*48*3/2)
	var keys []int
	for i := 0; i < 12; i++ {
		for j := range img[:64*48] {
			img[j] = byte(i*7 + j%64)
		}
		f, key, err := e.Encode(img, i == 8)
		if err != nil || len(f) == 0 {
			t.Fatalf("frame %d: %d bytes, %v", i, len(f), err)
		}
		if key {
			keys = append(keys, i)
		}
	}
	if len(keys) != 2 || keys[0] != 0 || keys[1] != 8 {
		t.Fatalf("keyframes at %v, want [0 8]", keys)
	}
	if _, _, err := e.Encode(img[:100], false); !errors.Is(err, ErrEncode) {
		t.Fatalf("short image: %v", err)
	}
	e.Close()
	if _, _, err := e.Encode(img, false); !errors.Is(err, ErrEncode) {
		t.Fatalf("after Close: %v", err)
	}
}
