package overlay

import (
	"testing"

	"gocv.io/x/gocv"
)

// Each shape is drawn in its sender's colour where the pages draw it, and
// nowhere far from it.
func TestDrawMarks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mark    Mark
		on      [2]int // a pixel on the mark
		off     [2]int // a pixel well away from it
		b, g, r uint8
	}{
		{"expert arrow", Mark{Shape: "arrow", Points: [][2]float64{{100, 200}, {500, 200}}, Role: "expert"}, [2]int{300, 200}, [2]int{300, 260}, 0xff, 0xb8, 0x4d},
		{"sonographer circle", Mark{Shape: "circle", Points: [][2]float64{{320, 240}, {380, 240}}, Role: "sonographer"}, [2]int{320, 180}, [2]int{320, 240}, 0xd6, 0x5c, 0xff},
		{"caliper", Mark{Shape: "caliper", Points: [][2]float64{{100, 100}, {100, 400}}, Role: "expert"}, [2]int{100, 250}, [2]int{160, 250}, 0xff, 0xb8, 0x4d},
		{"freehand", Mark{Shape: "freehand", Points: [][2]float64{{50, 50}, {150, 50}, {150, 150}}, Role: "teacher"}, [2]int{150, 100}, [2]int{100, 100}, 0x4d, 0xd8, 0xff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := gocv.NewMatWithSize(480, 640, gocv.MatTypeCV8UC3)
			defer img.Close()
			DrawMarks(&img, []Mark{tc.mark})
			p := img.GetVecbAt(tc.on[1], tc.on[0])
			if p[0] != tc.b || p[1] != tc.g || p[2] != tc.r {
				t.Errorf("at %v: BGR %v, want %v", tc.on, p, []uint8{tc.b, tc.g, tc.r})
			}
			if q := img.GetVecbAt(tc.off[1], tc.off[0]); q[0] != 0 || q[1] != 0 || q[2] != 0 {
				t.Errorf("at %v, away from the mark: BGR %v", tc.off, q)
			}
		})
	}
}
