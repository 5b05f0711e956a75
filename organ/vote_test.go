package organ

import (
	"testing"
)

func TestVote(t *testing.T) {
	names := []string{"breast", "thyroid", "other"}
	breast := []float32{0.9, 0.05, 0.05}
	thyroid := []float32{0.05, 0.9, 0.05}
	unsure := []float32{0.4, 0.4, 0.2}
	other := []float32{0.02, 0.03, 0.95}
	rep := func(p []float32, n int) [][]float32 {
		var out [][]float32
		for range n {
			out = append(out, p)
		}
		return out
	}
	cat := func(parts ...[][]float32) [][]float32 {
		var out [][]float32
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name    string
		preset  string
		samples [][]float32
		want    string
	}{
		{"agrees", "breast", rep(breast, 20), ""},
		{"thyroid under the breast preset", "breast", rep(thyroid, 5), "thyroid"},
		{"not before five samples", "breast", rep(thyroid, 4), ""},
		{"breast under the thyroid preset", "thyroid", rep(breast, 6), "breast"},
		{"other is never a mismatch", "breast", rep(other, 20), ""},
		{"unsure frames do not warn", "breast", rep(unsure, 20), ""},
		{"a preset the classifier does not know", "phantom", rep(thyroid, 20), ""},
		// Four thyroid frames in five among breast ones: mean 0.73.
		{"a passing glimpse", "breast", cat(rep(breast, 6), rep(thyroid, 4)), ""},
		{"breast, then a thyroid", "breast", cat(rep(breast, 6), rep(thyroid, 5)), "thyroid"},
		// Warned, then the probe goes back to the breast: the mean of the
		// last five falls below 0.5 at the third breast frame.
		{"clears", "breast", cat(rep(thyroid, 8), rep(breast, 3)), ""},
		{"holds while mostly thyroid", "breast", cat(rep(thyroid, 8), rep(breast, 2)), "thyroid"},
		{"a wrong-length sample is ignored", "breast", cat(rep(thyroid, 4), [][]float32{{1, 0}}), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVote(DefaultRule(), names, tc.preset)
			for _, p := range tc.samples {
				v.add(p)
			}
			if v.warned != tc.want {
				seen, p := v.seen()
				t.Errorf("warned %q, want %q (seen %s %.2f after %d)", v.warned, tc.want, seen, p, v.taken)
			}
		})
	}
}
