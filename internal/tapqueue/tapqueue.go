// Package tapqueue is the queue between the relay and a sender that
// publishes the encoded frames elsewhere (a WHIP server, a LiveKit room):
// bounded and never blocking the relay. When it is full, frames are
// dropped (counted) until the next keyframe, which it asks for.
package tapqueue

import (
	"sync/atomic"

	"sonolive/stream"
)

// Queue is a relay tap; its sender reads Frames while Open.
type Queue struct {
	frames          chan *stream.EncodedFrame
	requestKeyframe func()
	skipping, live  atomic.Bool
	dropped         atomic.Uint64
}

// New returns a closed queue of size frames.
func New(size int, requestKeyframe func()) *Queue {
	if requestKeyframe == nil {
		requestKeyframe = func() {}
	}
	return &Queue{frames: make(chan *stream.EncodedFrame, size), requestKeyframe: requestKeyframe}
}

// WriteFrame implements stream.Tap; it never blocks. Frames are taken only
// while the queue is open, from a keyframe on.
func (q *Queue) WriteFrame(f *stream.EncodedFrame) {
	if !q.live.Load() {
		return
	}
	if q.skipping.Load() {
		if !f.Key {
			q.dropped.Add(1)
			return
		}
		q.skipping.Store(false)
	}
	select {
	case q.frames <- f:
	default:
		q.dropped.Add(1)
		q.skipping.Store(true)
		q.requestKeyframe()
	}
}

// Open starts taking frames for a new connection: what queued while away
// is dropped, and the first frame taken is a keyframe, asked for now.
func (q *Queue) Open() {
	for len(q.frames) > 0 {
		<-q.frames
	}
	q.skipping.Store(true)
	q.live.Store(true)
	q.requestKeyframe()
}

// Close stops taking frames (the connection is lost).
func (q *Queue) Close() { q.live.Store(false) }

// Frames is what the sender reads.
func (q *Queue) Frames() <-chan *stream.EncodedFrame { return q.frames }

// Dropped counts the frames dropped on a full queue.
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }
