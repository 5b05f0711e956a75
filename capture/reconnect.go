package capture

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"

	"sonolive/frame"
)

// reconnecting keeps a live device or stream going: when it drops, it is
// closed and reopened with exponential backoff until ctx ends. Sequence
// numbers continue across reconnects so downstream never sees them reset.
type reconnecting struct {
	// cur is swapped by Next and read by Stats, from another goroutine.
	mu       sync.Mutex
	cur      Source
	open     func(context.Context) (Source, error)
	info     Info
	seq      uint64
	counters Counters
	log      *zap.Logger
	// backoff bounds; fields so tests can shrink them. The cap is short:
	// a scanner's stream that comes back must show on screen within a
	// couple of seconds, and a refused connection costs nothing.
	minBackoff, maxBackoff time.Duration
}

func newReconnecting(first Source, open func(context.Context) (Source, error), log *zap.Logger) *reconnecting {
	return &reconnecting{cur: first, open: open, info: first.Info(), log: log.With(zap.String("source", first.Info().ID)), minBackoff: 250 * time.Millisecond, maxBackoff: time.Second}
}

func (r *reconnecting) Info() Info { return r.info }

func (r *reconnecting) Stats() Stats {
	s := r.counters.snapshot()
	if st, ok := r.current().(interface{ Stats() Stats }); ok {
		s.Corrupt += st.Stats().Corrupt
	}
	return s
}

func (r *reconnecting) current() Source {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *reconnecting) setCurrent(s Source) {
	r.mu.Lock()
	r.cur = s
	r.mu.Unlock()
}

func (r *reconnecting) Close() error {
	cur := r.current()
	if cur == nil {
		return nil
	}
	return cur.Close()
}

func (r *reconnecting) Next(ctx context.Context) (*frame.Frame, error) {
	backoff := r.minBackoff
	for {
		if cur := r.current(); cur != nil {
			f, err := cur.Next(ctx)
			if err == nil {
				r.seq++
				f.Seq = r.seq
				r.counters.Frames.Add(1)
				return f, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil, err
			}
			r.log.Warn("source lost; reconnecting", zap.Error(err), zap.Uint64("seq", r.seq))
			if st, ok := cur.(interface{ Stats() Stats }); ok {
				r.counters.Corrupt.Add(st.Stats().Corrupt)
			}
			r.setCurrent(nil)
			cur.Close()
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		src, err := r.open(ctx)
		if err != nil {
			r.log.Warn("reconnect failed", zap.Error(err), zap.Duration("backoff", backoff))
			backoff = min(2*backoff, r.maxBackoff)
			continue
		}
		r.counters.Reconnects.Add(1)
		r.log.Info("source reconnected")
		r.setCurrent(src)
		backoff = r.minBackoff
	}
}
