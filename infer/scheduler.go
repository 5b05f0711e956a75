package infer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/frame"
)

// Detector finds lesions in a BGR frame. The scheduler calls it from one
// goroutine at a time; img is only valid during the call.
type Detector interface {
	Detect(img gocv.Mat) (Result, error)
}

// SchedulerConfig tunes the budget scheduler.
type SchedulerConfig struct {
	// Budget is the longest a frame waits for its own inference.
	Budget  time.Duration
	Tracker TrackerConfig
	Logger  *zap.Logger
	// Observe, when set, receives every finished inference's stage
	// timings, late ones included (for latency statistics).
	Observe func(Result)
}

// SchedulerStats are the scheduler's running totals.
type SchedulerStats struct {
	Inferences uint64 // detector runs finished
	Skipped    uint64 // frames that got no inference because one was running
	Misses     uint64 // frames whose own inference missed the budget
	Errors     uint64 // detector runs that failed
	Stale      uint64 // frames that left with tracker boxes only
	Tracks     uint64 // tracks shown (confirmed by the tracker) so far
}

type job struct {
	seq uint64
	img *gocv.Mat
}

type outcome struct {
	seq uint64
	res Result
	err error
}

// Scheduler puts a detector beside the video path without ever holding it
// up for long: each frame is offered to the detector if it is idle, waits
// for its own result at most Budget, and otherwise leaves with the
// tracker's boxes marked stale. One inference is in flight at a time, so
// the detector always works on a recent frame and never builds a backlog.
type Scheduler struct {
	det     Detector
	cfg     SchedulerConfig
	tracker *Tracker
	jobs    chan job
	results chan outcome
	buf     gocv.Mat // the frame copy the detector reads; ours again once its result is in
	busy    bool
	lastErr atomic.Value // string
	wg      sync.WaitGroup

	inferences, skipped, misses, errors, stale, tracks atomic.Uint64
}

// NewScheduler starts the detector goroutine; it stops when ctx ends or
// Close is called.
func NewScheduler(ctx context.Context, det Detector, cfg SchedulerConfig) *Scheduler {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Budget <= 0 {
		cfg.Budget = 33 * time.Millisecond
	}
	s := &Scheduler{
		det: det, cfg: cfg, tracker: NewTracker(cfg.Tracker),
		jobs: make(chan job, 1), results: make(chan outcome, 1), buf: gocv.NewMat(),
	}
	s.wg.Add(1)
	go s.worker(ctx)
	return s
}

func (s *Scheduler) worker(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case j, ok := <-s.jobs:
			if !ok {
				return
			}
			res, err := s.det.Detect(*j.img)
			// results has room: only one job is ever in flight.
			s.results <- outcome{seq: j.seq, res: res, err: err}
		}
	}
}

// Close stops the detector goroutine and frees the frame copy. An
// inference still running is waited for and counted: a short file read
// faster than real time can end before the first (cold) inference does,
// and its report must not say the model never ran.
func (s *Scheduler) Close() {
	close(s.jobs)
	s.wg.Wait()
	s.collect()
	s.buf.Close()
}

// Process attaches detections to f: fresh ones if f's own inference
// finishes within the budget, the tracker's otherwise. It never blocks
// longer than the budget.
func (s *Scheduler) Process(ctx context.Context, f *frame.Frame) {
	arrived := time.Now()
	s.collect()

	submitted := false
	if !s.busy {
		if err := f.Image.CopyTo(&s.buf); err == nil {
			s.busy, submitted = true, true
			s.jobs <- job{seq: f.Seq, img: &s.buf}
		}
	} else {
		s.skipped.Add(1)
	}

	fresh := false
	if submitted {
		t := time.NewTimer(s.cfg.Budget - time.Since(arrived))
		select {
		case o := <-s.results:
			fresh = s.take(o, f)
		case <-t.C:
			s.misses.Add(1)
		case <-ctx.Done():
		}
		t.Stop()
	}
	f.Timings.Wait = time.Since(arrived)

	t0 := time.Now()
	f.Detections = s.tracker.Output(f.Seq)
	f.Stale = !fresh
	if !fresh {
		s.stale.Add(1)
	}
	f.Timings.Track += time.Since(t0)
}

// collect takes a finished result without waiting, if there is one.
func (s *Scheduler) collect() {
	select {
	case o := <-s.results:
		s.take(o, nil)
	default:
	}
}

// take feeds a finished inference to the tracker. It reports whether the
// result belongs to f (nil when collecting a late result).
func (s *Scheduler) take(o outcome, f *frame.Frame) bool {
	s.busy = false
	if o.err != nil {
		s.errors.Add(1)
		s.lastErr.Store(o.err.Error())
		s.cfg.Logger.Warn("inference failed", zap.Uint64("seq", o.seq), zap.Error(o.err))
		return false
	}
	s.inferences.Add(1)
	s.lastErr.Store("")
	if s.cfg.Observe != nil {
		s.cfg.Observe(o.res)
	}
	t0 := time.Now()
	s.tracker.Update(o.seq, o.res.Detections)
	s.tracks.Store(s.tracker.Confirmed())
	track := time.Since(t0)
	if f == nil || o.seq != f.Seq {
		return false
	}
	f.Timings.Preprocess, f.Timings.Infer, f.Timings.Decode = o.res.Preprocess, o.res.Infer, o.res.Decode
	f.Timings.Track = track
	return true
}

// Stats returns the running totals.
func (s *Scheduler) Stats() SchedulerStats {
	return SchedulerStats{
		Inferences: s.inferences.Load(), Skipped: s.skipped.Load(), Misses: s.misses.Load(),
		Errors: s.errors.Load(), Stale: s.stale.Load(), Tracks: s.tracks.Load(),
	}
}

// LastError is the newest detector error, empty once a run succeeds again:
// the UI's "AI unavailable" state.
func (s *Scheduler) LastError() string {
	v, _ := s.lastErr.Load().(string)
	return v
}
