// Package metrics exposes sonolive's Prometheus metrics: latency
// histograms fed per frame, and counters read from the live sessions at
// scrape time. It owns its registry; nothing here is package-level state.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the registry and the per-frame instruments.
type Metrics struct {
	reg *prometheus.Registry
	// StageLatency is per-stage latency in seconds, labels source, stage.
	StageLatency *prometheus.HistogramVec
	// GlassToGlass is capture → displayed in a browser, as the browsers
	// report it; label source.
	GlassToGlass *prometheus.HistogramVec
}

// latencyBuckets span a fraction of a millisecond (overlay) to a second
// (a stalled viewer).
var latencyBuckets = []float64{.0005, .001, .002, .004, .008, .016, .033, .05, .075, .1, .15, .2, .3, .5, 1}

// New registers the process and Go runtime collectors and the histograms.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		StageLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sonolive", Name: "stage_latency_seconds",
			Help:    "Per-frame latency of each pipeline stage (queue, preprocess, infer, decode, wait, track, overlay, encode, total).",
			Buckets: latencyBuckets,
		}, []string{"source", "stage"}),
		GlassToGlass: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sonolive", Name: "glass_to_glass_seconds",
			Help:    "Capture to display in viewers' browsers, as reported by the pages.",
			Buckets: latencyBuckets,
		}, []string{"source"}),
	}
	m.reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector(),
		m.StageLatency, m.GlassToGlass)
	if _, ok := liveMats(); ok {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "sonolive", Name: "gocv_mats",
			Help: "gocv Mats alive (binaries built with the matprofile tag; a leak only grows).",
		}, func() float64 { n, _ := liveMats(); return float64(n) }))
	}
	return m
}

// ObserveStage records one stage's latency for one frame.
func (m *Metrics) ObserveStage(source, stage string, d time.Duration) {
	m.StageLatency.WithLabelValues(source, stage).Observe(d.Seconds())
}

// Register adds a collector (the sessions' counters).
func (m *Metrics) Register(c prometheus.Collector) error { return m.reg.Register(c) }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Snapshot is one session's counters at scrape time.
type Snapshot struct {
	Source                                      string
	Up                                          bool
	Frames, DeadlineMisses, Inferences, Skipped uint64
	EncodeErrors, StreamBytes                   uint64
	// Dropped counts frames dropped per pipeline stage (capture, sink).
	Dropped    map[string]uint64
	BitrateBPS float64
	Viewers    []Viewer
	// Recording is true while the session records; RecordDropped counts
	// frames the recording lost to a slow disk (this recording).
	Recording     bool
	RecordDropped uint64
}

// Viewer is one viewer's counters.
type Viewer struct {
	ID, Role              string
	Frames, Dropped       uint64
	MetaSent, MetaDropped uint64
}

// SessionCollector turns session snapshots into metrics at scrape time,
// so counters never drift from the pipeline's own.
type SessionCollector struct {
	snapshots func() []Snapshot
	descs     map[string]*prometheus.Desc
}

// NewSessionCollector reads snapshots on every scrape.
func NewSessionCollector(snapshots func() []Snapshot) *SessionCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sonolive_"+name, help, append([]string{"source"}, labels...), nil)
	}
	return &SessionCollector{snapshots: snapshots, descs: map[string]*prometheus.Desc{
		"up":             d("source_up", "1 while frames arrive from the source."),
		"frames":         d("frames_total", "Frames through the pipeline."),
		"misses":         d("deadline_misses_total", "Frames whose own inference missed the budget."),
		"inferences":     d("inferences_total", "Inferences run."),
		"skipped":        d("skipped_inferences_total", "Frames not sent to the detector because one was in flight."),
		"dropped":        d("dropped_frames_total", "Frames dropped by a pipeline stage's queue.", "stage"),
		"encode_errors":  d("encode_errors_total", "Frames the encoder failed on."),
		"bytes":          d("stream_bytes_total", "Encoded H.264 bytes (once, before fan-out)."),
		"bitrate":        d("stream_bitrate_bps", "Encoded bitrate over the last seconds."),
		"viewers":        d("viewers", "Connected viewers."),
		"recording":      d("recording", "1 while the session is being recorded."),
		"rec_dropped":    d("recording_dropped_frames", "Frames the current recording lost to a slow disk."),
		"viewer_frames":  d("viewer_frames_total", "Frames sent to a viewer.", "viewer", "role"),
		"viewer_dropped": d("viewer_dropped_frames_total", "Frames dropped for a slow viewer.", "viewer", "role"),
		"viewer_meta":    d("viewer_metadata_dropped_total", "Metadata messages dropped for a viewer.", "viewer", "role"),
	}}
}

// Describe sends the descriptors.
func (c *SessionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect reads every session once.
func (c *SessionCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(name string, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	for _, s := range c.snapshots() {
		up := 0.0
		if s.Up {
			up = 1
		}
		gauge("up", up, s.Source)
		counter("frames", s.Frames, s.Source)
		counter("misses", s.DeadlineMisses, s.Source)
		counter("inferences", s.Inferences, s.Source)
		counter("skipped", s.Skipped, s.Source)
		for stage, n := range s.Dropped {
			counter("dropped", n, s.Source, stage)
		}
		counter("encode_errors", s.EncodeErrors, s.Source)
		counter("bytes", s.StreamBytes, s.Source)
		gauge("bitrate", s.BitrateBPS, s.Source)
		gauge("viewers", float64(len(s.Viewers)), s.Source)
		rec := 0.0
		if s.Recording {
			rec = 1
		}
		gauge("recording", rec, s.Source)
		gauge("rec_dropped", float64(s.RecordDropped), s.Source)
		for _, v := range s.Viewers {
			counter("viewer_frames", v.Frames, s.Source, v.ID, v.Role)
			counter("viewer_dropped", v.Dropped, s.Source, v.ID, v.Role)
			counter("viewer_meta", v.MetaDropped, s.Source, v.ID, v.Role)
		}
	}
}
