// Package organ is the wrong-preset guard: it watches what organ the frames
// show and warns when the exam's preset runs the other organ's model (the
// thyroid detector boxes breast masses, and the breast one thyroid
// nodules). A small classifier (infer.OrganClassifier) looks at about one
// frame a second, off the video path; a vote over the last few seconds
// decides.
package organ

import (
	"context"
	"image"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/frame"
)

// Other is the class for frames of no organ the guard has a preset for
// (the phantom, a lung, a probe in the air): never a reason to warn.
const Other = "other"

// Classifier is what the guard needs of infer.OrganClassifier.
type Classifier interface {
	Names() []string
	Size() int
	Classify(img gocv.Mat) ([]float32, error)
}

// Config wires a Guard.
type Config struct {
	Classifier Classifier
	// Preset is the organ the running model is for (the exam's preset);
	// read at every sample, so a new exam's preset takes effect at once.
	Preset func() string
	// Every is the time between samples (default 1 s).
	Every time.Duration
	// Rule decides (default DefaultRule()).
	Rule Rule
	// OnChange is called, on the guard's goroutine, when a warning starts
	// or ends.
	OnChange func(State)
	Logger   *zap.Logger
}

// State is the guard's view, for the pages and the logs.
type State struct {
	Preset string `json:"preset"`
	// Seen is the organ most likely over the last samples, with its mean
	// probability P.
	Seen string  `json:"seen,omitempty"`
	P    float64 `json:"p"`
	// Mismatch names the organ the frames look like when it is not the
	// preset's ("" when they agree, or the guard cannot tell).
	Mismatch string `json:"mismatch,omitempty"`
	Samples  int    `json:"samples"`
	// Dropped counts frames not classified because the classifier was
	// still busy with the previous one.
	Dropped uint64 `json:"dropped,omitempty"`
	Errors  uint64 `json:"errors,omitempty"`
}

// Guard is a pipeline observer: Observe shrinks a frame now and then and
// hands it to Run, which classifies and votes.
type Guard struct {
	cfg  Config
	log  *zap.Logger
	size image.Point
	in   chan gocv.Mat
	last atomic.Int64 // unix nanos of the last sample taken

	dropped, errors atomic.Uint64
	classified      atomic.Uint64

	mu    sync.Mutex
	vote  *vote
	state State
}

// New returns a guard; Run must run for it to classify.
func New(cfg Config) *Guard {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Rule.Window <= 0 {
		cfg.Rule = DefaultRule()
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	n := cfg.Classifier.Size()
	g := &Guard{cfg: cfg, log: cfg.Logger, size: image.Pt(n, n), in: make(chan gocv.Mat, 1)}
	g.last.Store(math.MinInt64) // nothing sampled yet
	return g
}

// Observe implements pipeline.Observer. On the video path: at most once
// per Every it area-shrinks the frame to the classifier's input size
// (1.6 ms at 720p, once a second: 0.05 ms a frame at 30 fps) and hands
// that copy over; when the
// classifier is still busy the copy is dropped and counted.
func (g *Guard) Observe(f *frame.Frame) {
	now := f.Captured.UnixNano()
	if f.Captured.IsZero() {
		now = time.Now().UnixNano()
	}
	// A clock that went back (a looping file's, a restarted source's)
	// samples at once rather than waiting for its old time.
	if last := g.last.Load(); last != math.MinInt64 && now >= last && now-last < int64(g.cfg.Every) {
		return
	}
	if f.Image.Empty() || f.Blanked != "" {
		return
	}
	g.last.Store(now)
	small := gocv.NewMat()
	if err := gocv.Resize(f.Image, &small, g.size, 0, 0, gocv.InterpolationArea); err != nil {
		small.Close()
		g.errors.Add(1)
		return
	}
	select {
	case g.in <- small:
	default:
		small.Close()
		g.dropped.Add(1)
	}
}

// Run classifies what Observe hands over until ctx ends.
func (g *Guard) Run(ctx context.Context) {
	defer func() {
		for {
			select {
			case m := <-g.in:
				m.Close()
			default:
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-g.in:
			p, err := g.cfg.Classifier.Classify(m)
			m.Close()
			if err != nil {
				if g.errors.Add(1) == 1 {
					g.log.Warn("organ guard: classifying a frame", zap.Error(err))
				}
				continue
			}
			g.add(p)
			g.classified.Add(1)
		}
	}
}

func (g *Guard) add(p []float32) {
	preset := ""
	if g.cfg.Preset != nil {
		preset = g.cfg.Preset()
	}
	g.mu.Lock()
	if g.vote == nil || g.vote.preset != preset {
		// A new preset (a new exam) starts a new vote: the frames before
		// it were judged against another model.
		g.vote = newVote(g.cfg.Rule, g.cfg.Classifier.Names(), preset)
	}
	before := g.state.Mismatch
	g.vote.add(p)
	seen, mean := g.vote.seen()
	g.state = State{Preset: preset, Seen: seen, P: round3(mean), Mismatch: g.vote.warned, Samples: g.vote.taken}
	st := g.state
	g.mu.Unlock()
	if st.Mismatch != before {
		if st.Mismatch != "" {
			g.log.Warn("organ guard: the frames look like another organ than the preset's",
				zap.String("preset", preset), zap.String("seen", st.Mismatch), zap.Float64("p", st.P))
		} else {
			g.log.Info("organ guard: the frames agree with the preset again", zap.String("preset", preset))
		}
		if g.cfg.OnChange != nil {
			g.cfg.OnChange(g.State())
		}
	}
}

// State is the guard's latest view.
func (g *Guard) State() State {
	g.mu.Lock()
	st := g.state
	g.mu.Unlock()
	st.Dropped, st.Errors = g.dropped.Load(), g.errors.Load()
	return st
}

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }
