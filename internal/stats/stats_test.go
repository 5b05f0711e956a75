package stats

import (
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	tests := []struct {
		name string
		ms   []int
		want Percentiles
	}{
		{"empty", nil, Percentiles{}},
		{"one", []int{5}, Percentiles{5, 5, 5, 5, 5, 1}},
		// Nearest rank over 1..100: p50 is the 50th value, p99 the 99th.
		{"1..100", seq(100), Percentiles{50, 90, 95, 99, 100, 100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Samples
			for _, v := range tc.ms {
				s.Add(time.Duration(v) * time.Millisecond)
			}
			if got := s.Percentiles(); got != tc.want {
				t.Fatalf("got %+v want %+v", got, tc.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = n - i // unsorted on purpose
	}
	return out
}

func TestWindow(t *testing.T) {
	w := NewWindow(4)
	if p := w.Percentiles(); p.N != 0 {
		t.Fatalf("empty window: %+v", p)
	}
	for _, v := range []float64{100, 100, 1, 2, 3, 4} {
		w.Add(v)
	}
	p := w.Percentiles()
	if p.N != 4 || p.Max != 4 || p.P50 != 2 {
		t.Fatalf("window kept the wrong values: %+v", p)
	}
}

// A capped Samples keeps at most Cap values, and they stay a fair sample
// of everything seen: the median of 1..100000 through a 2000-value
// reservoir is near 50000.
func TestSamplesCap(t *testing.T) {
	s := Samples{Cap: 2000}
	for _, v := range seq(100000) {
		s.Add(time.Duration(v) * time.Millisecond)
	}
	p := s.Percentiles()
	if len(s.v) != 2000 || p.N != 100000 {
		t.Fatalf("kept %d, N %d", len(s.v), p.N)
	}
	if p.P50 < 45000 || p.P50 > 55000 || p.P99 < 97000 {
		t.Fatalf("percentiles %+v", p)
	}
}
