package eval

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Bootstrap95 is the 95% percentile bootstrap interval of metric over
// images resampled with replacement (n rounds, fixed seed: reproducible).
func Bootstrap95(results []Result, n int, metric func([]Result) float64) [2]float64 {
	if len(results) == 0 || n <= 0 {
		return [2]float64{math.NaN(), math.NaN()}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]float64, 0, n)
	sample := make([]Result, len(results))
	for i := 0; i < n; i++ {
		for j := range sample {
			sample[j] = results[rng.IntN(len(results))]
		}
		if v := metric(sample); !math.IsNaN(v) {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		return [2]float64{math.NaN(), math.NaN()}
	}
	sort.Float64s(vals)
	at := func(p float64) float64 { return vals[min(len(vals)-1, int(p*float64(len(vals))))] }
	return [2]float64{at(0.025), at(0.975)}
}
