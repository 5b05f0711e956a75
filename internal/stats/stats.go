// Package stats keeps latency samples and summarises them as percentiles.
package stats

import (
	"math"
	"sort"
	"time"
)

// Percentiles summarise latencies in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	N   int     `json:"n"`
}

// maxSamples bounds memory: beyond it Samples keeps a uniform reservoir, so a
// day-long run stays bounded.
const maxSamples = 1 << 18

// LiveCap is the Cap for what a long-running server summarises every
// second (a session's stage latencies, its encoder): about 4.5 minutes at
// 30 fps, 64 KB each, a sort of 8192 values per summary.
const LiveCap = 1 << 13

// Samples collects durations for exact percentiles. Not safe for concurrent
// use.
type Samples struct {
	// Cap is the most samples kept (0: 1<<18, about 2.4 h at 30 fps, 2 MB).
	// Beyond it they are a uniform reservoir of all seen. A server summarises
	// its whole uptime every second: a small cap keeps that sort cheap and
	// its memory flat within minutes instead of hours.
	Cap int

	v    []float64
	seen int
	rnd  uint64
}

// Add records one duration.
func (s *Samples) Add(d time.Duration) {
	ms := float64(d) / 1e6
	s.seen++
	limit := s.Cap
	if limit <= 0 {
		limit = maxSamples
	}
	if len(s.v) < limit {
		s.v = append(s.v, ms)
		return
	}
	// xorshift: deterministic, no shared rand state.
	s.rnd ^= s.rnd<<13 | 1
	s.rnd ^= s.rnd >> 7
	s.rnd ^= s.rnd << 17
	if i := int(s.rnd % uint64(s.seen)); i < limit {
		s.v[i] = ms
	}
}

// Percentiles are nearest-rank percentiles of what was added.
func (s *Samples) Percentiles() Percentiles {
	return percentiles(append([]float64(nil), s.v...), s.seen)
}

// percentiles sorts v in place.
func percentiles(v []float64, seen int) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	sort.Float64s(v)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return Round3(v[max(0, min(i, len(v)-1))])
	}
	return Percentiles{P50: q(0.50), P90: q(0.90), P95: q(0.95), P99: q(0.99), Max: Round3(v[len(v)-1]), N: seen}
}

// Window keeps the newest values (milliseconds) for a live view: the HUD
// wants the last seconds, not the whole session. Not safe for concurrent
// use.
type Window struct {
	v    []float64
	next int
	full bool
}

// NewWindow keeps the last n values.
func NewWindow(n int) *Window { return &Window{v: make([]float64, n)} }

// Add records one value in milliseconds.
func (w *Window) Add(ms float64) {
	w.v[w.next] = ms
	w.next++
	if w.next == len(w.v) {
		w.next, w.full = 0, true
	}
}

// Len is the number of values held.
func (w *Window) Len() int {
	if w.full {
		return len(w.v)
	}
	return w.next
}

// Percentiles of the values held.
func (w *Window) Percentiles() Percentiles {
	n := w.Len()
	return percentiles(append([]float64(nil), w.v[:n]...), n)
}

// Round3 rounds to three decimals, for reports.
func Round3(x float64) float64 { return math.Round(x*1e3) / 1e3 }
