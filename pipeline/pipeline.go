// Package pipeline is the one place where the stages meet: it pulls frames
// from a capture.Source, has the infer.Scheduler attach detections within
// the budget, burns in the overlay, hands each finished frame to the sinks
// and keeps the per-stage statistics. A frame's journey is this file.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"sonolive/capture"
	"sonolive/frame"
	"sonolive/infer"
	"sonolive/internal/queue"
	"sonolive/internal/stats"
	"sonolive/overlay"
)

// Sink receives every finished frame with its metadata, in order, on the
// sink goroutine. It must not keep f.Image after returning.
type Sink interface {
	Write(f *frame.Frame, meta *overlay.Metadata) error
	Close() error
}

// Observer sees each frame after inference and before the overlay is drawn,
// so its pixels are the machine's own, on the pipeline goroutine: it must
// return within a fraction of a frame interval and not keep f.Image (a
// copy it makes is its own).
type Observer interface {
	Observe(f *frame.Frame)
}

// Config wires a pipeline.
type Config struct {
	Source capture.Source
	// Detector may be nil: the video then flows without AI, marked so.
	Detector infer.Detector
	// ModelName goes into the report.
	ModelName string
	// Budget is the longest a frame waits for its own inference (default:
	// one frame interval of the source).
	Budget  time.Duration
	Tracker infer.TrackerConfig
	// Overlay burns boxes and the HUD into the frame.
	Overlay bool
	// HUDTiming adds fps and latency lines to the HUD.
	HUDTiming bool
	Sinks     []Sink
	// Observers see the clean frames (the exam's key image picker).
	Observers []Observer
	// SinkQueue is the sink stage's queue length (default 8).
	SinkQueue int
	// TruthIoU is the IoU at which a shown box matches ground truth
	// (default 0.5).
	TruthIoU      float64
	StatsInterval time.Duration // periodic log line; 0: none
	// LatencySamples caps the samples kept per stage for the percentiles
	// (0: stats' default, for a run's exact report); a server's pipeline
	// runs for days and keeps a small reservoir.
	LatencySamples int
	Logger         *zap.Logger
}

// Pipeline runs one source through the stages.
type Pipeline struct {
	cfg Config
	log *zap.Logger
	// sched is set when Run starts; Snapshot reads it from other
	// goroutines.
	sched   atomic.Pointer[infer.Scheduler]
	overlay atomic.Bool  // burn-in, switchable while running
	status  atomic.Value // string: the AI status of the newest frame

	capQ, sinkQ atomic.Pointer[queue.Queue[*frame.Frame]]

	mu      sync.Mutex // guards stats below, read by Snapshot
	stages  map[string]*stats.Samples
	frames  int
	dets    DetectionCounts
	acc     *Accuracy
	hudDT   ewma // seconds between frames; fps is its inverse
	hudInf  ewma
	hudTot  ewma
	lastAt  time.Time
	maxTrak uint64
}

// Stage names in reports and metrics, in path order.
var Stages = []string{"queue", "preprocess", "infer", "decode", "wait", "track", "overlay", "total"}

// New checks cfg and returns a pipeline ready to Run.
func New(cfg Config) (*Pipeline, error) {
	if cfg.Source == nil {
		return nil, errors.New("pipeline: no source")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Budget <= 0 {
		fps := cfg.Source.Info().FPS
		if fps <= 0 {
			fps = 30
		}
		cfg.Budget = time.Duration(float64(time.Second) / fps)
	}
	if cfg.SinkQueue <= 0 {
		cfg.SinkQueue = 8
	}
	if cfg.TruthIoU <= 0 {
		cfg.TruthIoU = 0.5
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger.With(zap.String("source", cfg.Source.Info().ID)), stages: map[string]*stats.Samples{}}
	for _, s := range Stages {
		p.stages[s] = &stats.Samples{Cap: cfg.LatencySamples}
	}
	p.overlay.Store(cfg.Overlay)
	return p, nil
}

// SetOverlay switches burning boxes and the HUD into the frames, from the
// next frame on. Viewers that draw their own boxes from the metadata want
// clean pixels; a plain video player wants them burned in.
func (p *Pipeline) SetOverlay(on bool) { p.overlay.Store(on) }

// Overlay reports whether boxes are burned in.
func (p *Pipeline) Overlay() bool { return p.overlay.Load() }

// AIStatus is "ok", "stale" or "unavailable: <why>" for the newest frame.
func (p *Pipeline) AIStatus() string {
	s, _ := p.status.Load().(string)
	return s
}

// Budget is the per-frame inference budget in force (after defaults).
func (p *Pipeline) Budget() time.Duration { return p.cfg.Budget }

// Run processes frames until the source ends or ctx is cancelled, then
// closes the source and sinks and returns the report. A source error ends
// the run and is returned with the report of what was processed.
func (p *Pipeline) Run(ctx context.Context) (Report, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	info := p.cfg.Source.Info()
	release := func(f *frame.Frame) { f.Close() }

	// Capture -> pipeline: a live source must never wait for us, so keep
	// the newest frames and count the rest; an offline source waits.
	capPolicy, sinkPolicy := queue.Block, queue.Block
	if info.Live {
		capPolicy, sinkPolicy = queue.DropOldest, queue.DropNewest
	}
	capQ := queue.New(2, capPolicy, release)
	sinkQ := queue.New(p.cfg.SinkQueue, sinkPolicy, release)
	p.capQ.Store(capQ)
	p.sinkQ.Store(sinkQ)

	if p.cfg.Detector != nil {
		p.sched.Store(infer.NewScheduler(ctx, p.cfg.Detector, infer.SchedulerConfig{
			Budget: p.cfg.Budget, Tracker: p.cfg.Tracker, Logger: p.log, Observe: p.observe,
		}))
	}

	var srcErr error
	capDone := make(chan struct{})
	go func() {
		defer close(capDone)
		for {
			f, err := p.cfg.Source.Next(ctx)
			if err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					srcErr = err
				}
				return
			}
			capQ.Push(ctx, f)
		}
	}()

	var sinkWG sync.WaitGroup
	sinkWG.Add(1)
	go func() {
		defer sinkWG.Done()
		p.runSinks(sinkQ)
	}()

	drawer := overlay.NewDrawer(overlay.DefaultStyle())
	start := time.Now()
	var ticker <-chan time.Time
	if p.cfg.StatsInterval > 0 {
		t := time.NewTicker(p.cfg.StatsInterval)
		defer t.Stop()
		ticker = t.C
	}
loop:
	for {
		var f *frame.Frame
		select {
		case f = <-capQ.C():
		case <-capDone:
			// Drain what capture queued before it stopped.
			select {
			case f = <-capQ.C():
			default:
				break loop
			}
		case <-ticker:
			p.logStats()
			continue
		case <-ctx.Done():
			break loop
		}
		p.process(ctx, f, drawer)
		sinkQ.Push(ctx, f)
	}
	seconds := time.Since(start).Seconds()
	cancel()
	<-capDone
	capQ.Drain()
	sinkQ.Close()
	sinkWG.Wait()
	if sched := p.sched.Load(); sched != nil {
		sched.Close()
	}
	if err := p.cfg.Source.Close(); err != nil {
		p.log.Warn("closing source", zap.Error(err))
	}
	rep := p.report(seconds, capQ.Dropped(), sinkQ.Dropped())
	if srcErr != nil {
		rep.Error = srcErr.Error()
		return rep, fmt.Errorf("source %s: %w", info.ID, srcErr)
	}
	return rep, nil
}

// process takes one frame through inference and overlay.
func (p *Pipeline) process(ctx context.Context, f *frame.Frame, drawer *overlay.Drawer) {
	f.Timings.Queue = time.Since(f.Captured)
	status := "unavailable: no model"
	if sched := p.sched.Load(); sched != nil {
		sched.Process(ctx, f)
		switch err := sched.LastError(); {
		case err != "":
			status = "unavailable: " + err
		case f.Stale:
			status = "stale"
		default:
			status = "ok"
		}
	}
	p.status.Store(status)
	for _, o := range p.cfg.Observers {
		o.Observe(f)
	}
	t0 := time.Now()
	if p.overlay.Load() {
		drawer.Draw(f, p.hud(status))
		f.Overlaid = true
	}
	f.Timings.Overlay = time.Since(t0)
	f.Timings.Total = time.Since(f.Captured)
	p.record(f)
}

func (p *Pipeline) hud(status string) overlay.HUD {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := overlay.HUD{FPS: p.hudDT.inverse(), InferMS: p.hudInf.v, TotalMS: p.hudTot.v, AIStatus: status, ShowTiming: p.cfg.HUDTiming}
	if sched := p.sched.Load(); sched != nil && p.frames > 0 {
		h.MissRate = float64(sched.Stats().Misses) / float64(p.frames)
	}
	return h
}

// observe records a finished inference, on time or late.
func (p *Pipeline) observe(r infer.Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stages["preprocess"].Add(r.Preprocess)
	p.stages["infer"].Add(r.Infer)
	p.stages["decode"].Add(r.Decode)
	p.hudInf.add(float64(r.Infer)/1e6, 0.1)
}

func (p *Pipeline) record(f *frame.Frame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frames++
	t := f.Timings
	p.stages["queue"].Add(t.Queue)
	p.stages["wait"].Add(t.Wait)
	p.stages["track"].Add(t.Track)
	p.stages["overlay"].Add(t.Overlay)
	p.stages["total"].Add(t.Total)
	now := time.Now()
	if !p.lastAt.IsZero() {
		if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
			// Average the interval, not 1/interval: two frames handed
			// over back to back would add thousands of "fps".
			p.hudDT.add(dt, 0.05)
		}
	}
	p.lastAt = now
	p.hudTot.add(float64(t.Total)/1e6, 0.1)
	p.dets.Total += len(f.Detections)
	if len(f.Detections) > 0 {
		p.dets.FramesWithDetection++
	}
	for _, d := range f.Detections {
		if d.StaleAge > 0 {
			p.dets.Stale++
		} else {
			p.dets.Fresh++
		}
		p.maxTrak = max(p.maxTrak, d.TrackID)
	}
	if f.Truth != nil || p.acc != nil {
		if p.acc == nil {
			p.acc = &Accuracy{IoU: p.cfg.TruthIoU}
		}
		p.acc.add(f.Truth, f.Detections)
	}
}

func (p *Pipeline) runSinks(q *queue.Queue[*frame.Frame]) {
	failed := make([]bool, len(p.cfg.Sinks))
	for f := range q.C() {
		meta := overlay.NewMetadata(f)
		for i, s := range p.cfg.Sinks {
			if failed[i] {
				continue
			}
			if err := s.Write(f, &meta); err != nil {
				// One broken sink (a full disk) must not stop the others
				// or the live view.
				failed[i] = true
				p.log.Error("sink failed; disabling it", zap.Int("sink", i), zap.Uint64("seq", f.Seq), zap.Error(err))
			}
		}
		f.Close()
	}
	for _, s := range p.cfg.Sinks {
		if err := s.Close(); err != nil {
			p.log.Error("closing sink", zap.Error(err))
		}
	}
}

func (p *Pipeline) logStats() {
	r := p.Snapshot()
	p.log.Info("pipeline stats",
		zap.Int("frames", r.Frames), zap.Float64("fps", r.FPS),
		zap.Float64("total_p50_ms", r.LatencyMS["total"].P50), zap.Float64("total_p99_ms", r.LatencyMS["total"].P99),
		zap.Float64("infer_p50_ms", r.LatencyMS["infer"].P50),
		zap.Uint64("inferences", r.Inferences), zap.Uint64("deadline_misses", r.DeadlineMisses),
		zap.Uint64("skipped", r.Skipped), zap.Int("detections", r.Detections.Total))
}

// Snapshot is the report so far, for periodic logs and metrics.
func (p *Pipeline) Snapshot() Report {
	var capDropped, sinkDropped uint64
	if q := p.capQ.Load(); q != nil {
		capDropped = q.Dropped()
	}
	if q := p.sinkQ.Load(); q != nil {
		sinkDropped = q.Dropped()
	}
	return p.report(0, capDropped, sinkDropped)
}

func (p *Pipeline) report(seconds float64, capDropped, sinkDropped uint64) Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := Report{
		Source: p.cfg.Source.Info().ID, Model: p.cfg.ModelName,
		BudgetMS: float64(p.cfg.Budget) / 1e6, Frames: p.frames, Seconds: round3(seconds),
		LatencyMS: map[string]Percentiles{}, Detections: p.dets,
		DroppedBy: map[string]uint64{"capture": capDropped, "sink": sinkDropped},
	}
	r.Detections.Tracks = p.maxTrak
	if seconds > 0 {
		r.FPS = round3(float64(p.frames) / seconds)
	} else {
		r.FPS = round3(p.hudDT.inverse())
	}
	for _, s := range Stages {
		r.LatencyMS[s] = p.stages[s].Percentiles()
	}
	if sched := p.sched.Load(); sched != nil {
		st := sched.Stats()
		r.DeadlineMisses, r.Inferences, r.Skipped, r.StaleFrames, r.InferErrors = st.Misses, st.Inferences, st.Skipped, st.Stale, st.Errors
		r.Detections.ShownTracks = st.Tracks
		if p.frames > 0 {
			r.MissRate = round3(float64(st.Misses) / float64(p.frames))
		}
	}
	r.Dropped = capDropped + sinkDropped
	if st, ok := p.cfg.Source.(interface{ Stats() capture.Stats }); ok {
		s := st.Stats()
		r.CorruptFrames, r.Reconnects = s.Corrupt, s.Reconnects
	}
	if p.acc != nil {
		a := *p.acc // the counters; finish reads the shared tracks map without changing it
		a.finish()
		r.Phantom = &a
	}
	return r
}
