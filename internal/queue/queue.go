// Package queue is the bounded hand-off used on every hot path: a fixed
// capacity and an explicit policy for what happens when it is full, with the
// drops counted.
package queue

import (
	"context"
	"sync/atomic"
)

// Policy says what Push does when the queue is full.
type Policy int

const (
	// DropOldest evicts the oldest item, so the consumer always gets the
	// newest ones and latency cannot build up (live capture).
	DropOldest Policy = iota
	// DropNewest discards the item being pushed (a slow viewer keeps what it
	// has queued and loses what it could not take).
	DropNewest
	// Block waits for room: lossless, for offline processing.
	Block
)

// Queue is a bounded FIFO. Push and Pop may be called from different
// goroutines; Push is meant for one producer.
type Queue[T any] struct {
	ch      chan T
	policy  Policy
	release func(T)
	dropped atomic.Uint64
}

// New returns a queue of the given capacity. release, when not nil, is called
// on every dropped item so it can free resources (e.g. a Mat).
func New[T any](capacity int, policy Policy, release func(T)) *Queue[T] {
	if capacity < 1 {
		capacity = 1
	}
	return &Queue[T]{ch: make(chan T, capacity), policy: policy, release: release}
}

// Push adds v. It returns false when v itself was dropped, or when ctx ended
// while blocking (v is then released too).
func (q *Queue[T]) Push(ctx context.Context, v T) bool {
	switch q.policy {
	case Block:
		select {
		case q.ch <- v:
			return true
		case <-ctx.Done():
			q.drop(v)
			return false
		}
	case DropNewest:
		select {
		case q.ch <- v:
			return true
		default:
			q.drop(v)
			return false
		}
	default:
		for {
			select {
			case q.ch <- v:
				return true
			default:
			}
			select {
			case old := <-q.ch:
				q.drop(old)
			default:
			}
		}
	}
}

func (q *Queue[T]) drop(v T) {
	q.dropped.Add(1)
	if q.release != nil {
		q.release(v)
	}
}

// C is the channel to receive from.
func (q *Queue[T]) C() <-chan T { return q.ch }

// Dropped is how many items the queue has dropped.
func (q *Queue[T]) Dropped() uint64 { return q.dropped.Load() }

// Len is the number of queued items.
func (q *Queue[T]) Len() int { return len(q.ch) }

// Drain releases everything still queued; call it after the producer stopped.
func (q *Queue[T]) Drain() {
	for {
		select {
		case v := <-q.ch:
			if q.release != nil {
				q.release(v)
			}
		default:
			return
		}
	}
}

// Close tells the consumer no more items will come; ranging over C ends
// once the queue is empty. Only the producer calls it, after its last Push.
func (q *Queue[T]) Close() { close(q.ch) }
