package pipeline

import (
	"math"
	"sort"
	"time"
)

// Percentiles summarise one stage's latency in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	N   int     `json:"n"`
}

// samples keeps every duration of a run for exact percentiles; beyond
// maxSamples it keeps a uniform reservoir, so a day-long run stays bounded.
type samples struct {
	v    []float64
	seen int
	rnd  uint64
}

const maxSamples = 1 << 18

func (s *samples) add(d time.Duration) {
	ms := float64(d) / 1e6
	s.seen++
	if len(s.v) < maxSamples {
		s.v = append(s.v, ms)
		return
	}
	// xorshift: deterministic, no shared rand state.
	s.rnd ^= s.rnd<<13 | 1
	s.rnd ^= s.rnd >> 7
	s.rnd ^= s.rnd << 17
	if i := int(s.rnd % uint64(s.seen)); i < maxSamples {
		s.v[i] = ms
	}
}

func (s *samples) percentiles() Percentiles {
	if len(s.v) == 0 {
		return Percentiles{}
	}
	v := append([]float64(nil), s.v...)
	sort.Float64s(v)
	q := func(p float64) float64 {
		// Nearest-rank: the value below which p of the samples fall.
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return round3(v[max(0, min(i, len(v)-1))])
	}
	return Percentiles{P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: round3(v[len(v)-1]), N: s.seen}
}

func round3(x float64) float64 { return math.Round(x*1e3) / 1e3 }

// ewma is an exponentially weighted moving average for the HUD.
type ewma struct {
	v   float64
	set bool
}

func (e *ewma) add(x, alpha float64) {
	if !e.set {
		e.v, e.set = x, true
		return
	}
	e.v += alpha * (x - e.v)
}
