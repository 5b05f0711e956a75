package whepclient

import "testing"

func TestExpectedFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []uint32
		want int
	}{
		{"none", nil, 0},
		{"every frame", []uint32{0, 3000, 6000, 9000}, 4},
		{"two missing", []uint32{0, 3000, 12000, 15000, 18000}, 7},
		{"wraps", []uint32{4294964296, 0, 3000, 6000}, 4},
	} {
		if got := ExpectedFrames(tc.ts); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestIsIDR(t *testing.T) {
	for _, tc := range []struct {
		name string
		pl   []byte
		want bool
	}{
		{"single idr", []byte{0x65, 1}, true},
		{"single p", []byte{0x41, 1}, false},
		{"stap-a sps pps idr", []byte{0x78, 0, 2, 0x67, 1, 0, 2, 0x68, 1, 0, 2, 0x65, 1}, true},
		{"stap-a sps pps", []byte{0x78, 0, 2, 0x67, 1, 0, 2, 0x68, 1}, false},
		{"fu-a idr start", []byte{0x7c, 0x85, 1}, true},
		{"fu-a idr middle", []byte{0x7c, 0x05, 1}, false},
		{"short", []byte{0x7c}, false},
	} {
		if got := IsIDR(tc.pl); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}

func TestIsVP8Key(t *testing.T) {
	for _, tc := range []struct {
		name string
		pl   []byte
		want bool
	}{
		{"key, no extension", []byte{0x10, 0x00, 0x9d}, true},
		{"inter, no extension", []byte{0x10, 0x01, 0x9d}, false},
		{"key, 15-bit picture id", []byte{0x90, 0x80, 0x81, 0x02, 0x00}, true},
		{"inter, 15-bit picture id", []byte{0x90, 0x80, 0x81, 0x02, 0x01}, false},
		{"key, 7-bit picture id", []byte{0x90, 0x80, 0x05, 0x00}, true},
		{"continuation packet", []byte{0x80, 0x80, 0x05, 0x00}, false},
		{"second partition", []byte{0x11, 0x00}, false},
		{"truncated", []byte{0x90, 0x80}, false},
	} {
		if got := isVP8Key(tc.pl); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}
