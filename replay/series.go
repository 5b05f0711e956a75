package replay

import (
	"errors"
	"image"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/zap"

	"sonolive/stream"
)

// Series records one live session as a run of parts, each an ordinary
// recording: a new part starts when the current one reaches MaxPart, or
// when the frame size changes (one MP4 track has one size). The switch
// happens at a keyframe, so every frame lands in exactly one part and a
// part's index, memory and loss on a crash stay bounded however long the
// session runs. Series is the relay tap; it never blocks the relay: new
// parts are opened and old ones finished on their own goroutines.
type Series struct {
	lib     *Library
	cfg     RecorderConfig
	maxPart time.Duration
	log     *zap.Logger
	onEnd   func(Meta, error) // a part finished

	// relay goroutine state
	size      image.Point   // of the frames the current part takes
	lastTS    uint32        // RTP time of the last frame
	clock     time.Duration // media time since the series started
	partStart time.Duration // clock at the current part's first frame
	keyAsked  bool          // a keyframe was asked for the boundary

	mu       sync.Mutex
	part     int // the newest part's number
	cur      *Recorder
	next     *Recorder // opened, waiting for a keyframe to take over
	closed   bool
	opening  atomic.Bool
	finished sync.WaitGroup // parts being finished
}

// SeriesConfig sets up a series.
type SeriesConfig struct {
	Recorder RecorderConfig
	// MaxPart is the longest part (default 1 h).
	MaxPart time.Duration
	// OnPartEnd hears about every finished part (not the last, which
	// Close returns). It must not block for long.
	OnPartEnd func(Meta, error)
}

// NewSeries opens the first part.
func (l *Library) NewSeries(cfg SeriesConfig) (*Series, error) {
	if cfg.MaxPart <= 0 {
		cfg.MaxPart = time.Hour
	}
	log := cfg.Recorder.Logger
	if log == nil {
		log = l.log
	}
	s := &Series{lib: l, cfg: cfg.Recorder, maxPart: cfg.MaxPart, log: log, onEnd: cfg.OnPartEnd, part: 1}
	s.cfg.Part = 1
	rec, err := l.NewRecorder(s.cfg)
	if err != nil {
		return nil, err
	}
	s.cur = rec
	return s, nil
}

// ID is the id of the part being recorded.
func (s *Series) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.ID()
}

// Dropped counts what the current part lost to a slow disk.
func (s *Series) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Dropped()
}

// Err says why the current part stopped writing ("" while it writes).
func (s *Series) Err() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Err()
}

// Event records a session event in the current part.
func (s *Series) Event(name string, data map[string]string) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	cur.Event(name, data)
}

// WriteVoice records a packet of someone's voice in the current part
// (Recorder.WriteVoice).
func (s *Series) WriteVoice(from, role, name string, pkt *rtp.Packet, at time.Time) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	cur.WriteVoice(from, role, name, pkt, at)
}

// SaveCapture keeps a key frame in the current part (Recorder.SaveCapture).
func (s *Series) SaveCapture(c Capture, picture, annotated []byte) (Capture, error) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	return cur.SaveCapture(c, picture, annotated)
}

// WriteFrame is the relay tap.
func (s *Series) WriteFrame(f *stream.EncodedFrame) {
	size := image.Pt(f.Image.Cols(), f.Image.Rows())
	// Media time (the RTP clock), not the wall: an offline run reads a
	// file faster than real time, and its parts are cut by video length.
	if s.size == (image.Point{}) {
		s.size = size
	} else if d := int32(f.RTPTime - s.lastTS); d > 0 {
		s.clock += time.Duration(d) * time.Second / 90000
	}
	s.lastTS = f.RTPTime
	resized := size != s.size
	age := s.clock - s.partStart
	// The next part is opened a little ahead of the boundary, so it is
	// ready when the boundary's keyframe comes; a resize cannot be seen
	// coming, and loses the frames until the new part is open.
	if resized || age >= s.maxPart-s.lead() {
		s.openNext()
	}
	due := resized || age >= s.maxPart
	if due && !s.keyAsked && s.cfg.RequestKeyframe != nil {
		s.cfg.RequestKeyframe()
		s.keyAsked = true
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.next != nil && f.Key && due {
		old := s.cur
		s.cur, s.next = s.next, nil
		s.size, s.partStart = size, s.clock
		s.keyAsked = false
		resized = false
		s.finished.Add(1)
		go s.finish(old)
	}
	cur := s.cur
	s.mu.Unlock()
	if resized {
		return // the current part cannot take it; the next starts at a keyframe
	}
	cur.WriteFrame(f)
}

// openNext opens the next part on its own goroutine (creating it syncs
// the disk), once.
func (s *Series) openNext() {
	if !s.opening.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	if s.closed || s.next != nil {
		s.mu.Unlock()
		s.opening.Store(false)
		return
	}
	cfg := s.cfg
	cfg.Part = s.part + 1
	cfg.Previous = s.cur.ID()
	s.finished.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.finished.Done()
		rec, err := s.lib.NewRecorder(cfg)
		if err != nil {
			s.log.Error("next recording part not started; the current one goes on", zap.Error(err))
			s.opening.Store(false)
			return
		}
		s.mu.Lock()
		closed := s.closed
		if !closed {
			s.next, s.part = rec, cfg.Part
		}
		s.mu.Unlock()
		if closed {
			rec.Close() // nothing recorded: it removes itself
			return
		}
		s.opening.Store(false)
		if s.cfg.RequestKeyframe != nil {
			s.cfg.RequestKeyframe() // a resize is waiting for it
		}
	}()
}

// lead is how long before the boundary the next part is opened.
func (s *Series) lead() time.Duration { return min(s.maxPart/4, 5*time.Second) }

func (s *Series) finish(r *Recorder) {
	defer s.finished.Done()
	m, err := r.Close()
	if errors.Is(err, ErrNotFound) {
		return
	}
	s.log.Info("recording part finished", zap.String("recording", m.ID), zap.Int("part", m.Part), zap.Float64("duration_s", m.DurationS))
	if s.onEnd != nil {
		s.onEnd(m, err)
	}
}

// Close finishes the current part (and any being finished) and returns
// the last part's description.
func (s *Series) Close() (Meta, error) {
	s.mu.Lock()
	s.closed = true
	cur, next := s.cur, s.next
	s.next = nil
	s.mu.Unlock()
	if next != nil {
		next.Close() // never started: removes itself
	}
	m, err := cur.Close()
	s.finished.Wait()
	return m, err
}
