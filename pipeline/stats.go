package pipeline

import "sonolive/internal/stats"

// Percentiles summarise one stage's latency in milliseconds.
type Percentiles = stats.Percentiles

func round3(x float64) float64 { return stats.Round3(x) }

// ewma is an exponentially weighted moving average for the HUD.
type ewma struct {
	v   float64
	set bool
}

// inverse is 1/v, or 0 before the first value.
func (e *ewma) inverse() float64 {
	if !e.set || e.v <= 0 {
		return 0
	}
	return 1 / e.v
}

func (e *ewma) add(x, alpha float64) {
	if !e.set {
		e.v, e.set = x, true
		return
	}
	e.v += alpha * (x - e.v)
}
