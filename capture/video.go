package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/frame"
)

// OpenCV 4.5.3+ property ids that gocv does not name.
const (
	propOpenTimeoutMsec gocv.VideoCaptureProperties = 53
	propReadTimeoutMsec gocv.VideoCaptureProperties = 54
)

// maxBadReads is how many failed or empty reads in a row mean a live source
// has gone, not just hiccuped.
const maxBadReads = 10

// cvSource reads frames through OpenCV's VideoCapture: what the device,
// stream, GStreamer and file kinds open.
type cvSource struct {
	cap      *gocv.VideoCapture
	info     Info
	opts     Options
	file     bool
	path     string
	stamp    fileStamp // the file as opened, to see it replaced before a loop
	pending  *gocv.Mat // first frame, read while opening to prove the source decodes
	seq      uint64
	pace     pacer
	played   int // frames delivered in this pass over a file
	counters Counters
	log      *zap.Logger
}

// openCapture runs open on another goroutine so a hung open (a black-holed
// RTSP server, a wedged driver) returns ErrTimeout to the caller on time.
// The abandoned capture is closed whenever the open finally returns.
func openCapture(ctx context.Context, what string, timeout time.Duration, open func() (*gocv.VideoCapture, error)) (*gocv.VideoCapture, error) {
	type result struct {
		vc  *gocv.VideoCapture
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		vc, err := open()
		done <- result{vc, err}
	}()
	// The backstop fires a little after OpenCV's own timeout, which
	// returns cleanly when the backend honours it.
	t := time.NewTimer(timeout + timeout/4 + 100*time.Millisecond)
	defer t.Stop()
	select {
	case r := <-done:
		if r.err != nil || r.vc == nil || !r.vc.IsOpened() {
			if r.vc != nil {
				r.vc.Close()
			}
			// OpenCV says only "Error opening file"; whether it gave up at
			// its own timeout is what the user needs to know.
			if time.Since(start) >= timeout*9/10 {
				return nil, fmt.Errorf("open %s: %w after %v", what, ErrTimeout, timeout)
			}
			return nil, fmt.Errorf("open %s: %w", what, ErrUnreadable)
		}
		return r.vc, nil
	case <-t.C:
	case <-ctx.Done():
	}
	go func() {
		if r := <-done; r.vc != nil {
			r.vc.Close()
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("open %s: %w after %v", what, ErrTimeout, timeout)
}

func newCVSource(ctx context.Context, vc *gocv.VideoCapture, id string, opts Options, file bool) (*cvSource, error) {
	s := &cvSource{cap: vc, opts: opts, file: file, log: opts.Logger.With(zap.String("source", id))}
	fps := vc.Get(gocv.VideoCaptureFPS)
	if fps <= 0 || fps > 240 {
		fps = 30
	}
	if opts.FPS > 0 && file {
		fps = opts.FPS
	}
	s.info = Info{ID: id, FPS: fps, Live: !file || opts.Realtime}
	// Prove the source decodes before calling it open: a corrupt file or a
	// device that returns nothing is an open error, not a silent stall.
	first, err := s.readFrame(ctx)
	if err != nil {
		vc.Close()
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	s.pending = first
	return s, nil
}

// Info implements Source.
func (s *cvSource) Info() Info { return s.info }

// Stats returns the source's counters.
func (s *cvSource) Stats() Stats { return s.counters.snapshot() }

// Close implements Source.
func (s *cvSource) Close() error {
	if s.pending != nil {
		s.pending.Close()
		s.pending = nil
	}
	return s.cap.Close()
}

// Next implements Source.
func (s *cvSource) Next(ctx context.Context) (*frame.Frame, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.opts.Frames > 0 && s.seq >= uint64(s.opts.Frames) {
		return nil, io.EOF
	}
	var img *gocv.Mat
	if s.pending != nil {
		img, s.pending = s.pending, nil
	} else {
		m, err := s.readFrame(ctx)
		if errors.Is(err, io.EOF) && s.file && s.opts.Loop && s.played > 0 {
			if err = s.rewind(); err == nil {
				m, err = s.readFrame(ctx)
			}
		}
		if err != nil {
			return nil, err
		}
		img = m
	}
	if s.file && s.opts.Realtime {
		if err := s.pace.wait(ctx, frameTime(s.seq, s.info.FPS)); err != nil {
			img.Close()
			return nil, err
		}
	}
	s.seq++
	s.played++
	s.counters.Frames.Add(1)
	return &frame.Frame{Seq: s.seq, Source: s.info.ID, Captured: time.Now(), Image: *img}, nil
}

// readFrame returns the next good frame as BGR. Empty or malformed frames
// are counted and skipped; too many in a row mean the end of a file or a
// lost live source.
func (s *cvSource) readFrame(ctx context.Context) (*gocv.Mat, error) {
	m := gocv.NewMat()
	for bad := 0; bad < maxBadReads; {
		if err := ctx.Err(); err != nil {
			m.Close()
			return nil, err
		}
		ok := s.cap.Read(&m)
		if !ok {
			if s.file {
				m.Close()
				if s.played == 0 && s.seq == 0 {
					return nil, ErrUnreadable
				}
				return nil, io.EOF
			}
			bad++
			s.counters.Corrupt.Add(1)
			continue
		}
		if m.Empty() || m.Rows() < 16 || m.Cols() < 16 || m.Type()&0x7 != 0 {
			bad++
			s.counters.Corrupt.Add(1)
			s.log.Warn("skipping unusable frame", zap.Uint64("seq", s.seq+1), zap.Int("rows", m.Rows()), zap.Int("cols", m.Cols()))
			continue
		}
		switch m.Channels() {
		case 3:
			return &m, nil
		case 1:
			gocv.CvtColor(m, &m, gocv.ColorGrayToBGR)
			return &m, nil
		case 4:
			gocv.CvtColor(m, &m, gocv.ColorBGRAToBGR)
			return &m, nil
		}
		bad++
		s.counters.Corrupt.Add(1)
	}
	m.Close()
	if s.file {
		if s.seq == 0 {
			return nil, ErrUnreadable
		}
		return nil, io.EOF
	}
	return nil, fmt.Errorf("%s: %w: %d bad reads in a row", s.info.ID, ErrDisconnected, maxBadReads)
}
