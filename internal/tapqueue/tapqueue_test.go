package tapqueue

import (
	"testing"

	"sonolive/stream"
)

func TestQueueDropsToTheNextKeyframe(t *testing.T) {
	asked := 0
	q := New(2, func() { asked++ })
	key, delta := &stream.EncodedFrame{Key: true}, &stream.EncodedFrame{}
	q.WriteFrame(key) // closed: not taken
	if len(q.Frames()) != 0 {
		t.Fatal("a closed queue took a frame")
	}
	q.Open()
	q.WriteFrame(delta) // before the first keyframe: dropped
	q.WriteFrame(key)
	q.WriteFrame(delta)
	q.WriteFrame(delta) // full: dropped, skip to the next keyframe, ask for one
	q.WriteFrame(delta) // skipped
	if len(q.Frames()) != 2 || q.Dropped() != 3 || asked != 2 {
		t.Fatalf("queued %d, dropped %d, keyframes asked %d", len(q.Frames()), q.Dropped(), asked)
	}
	<-q.Frames()
	q.WriteFrame(key)
	if len(q.Frames()) != 2 || q.Dropped() != 3 {
		t.Fatalf("after a keyframe: queued %d, dropped %d", len(q.Frames()), q.Dropped())
	}
	q.Open() // a new connection: stale frames go
	if len(q.Frames()) != 0 {
		t.Fatal("frames kept across connections")
	}
}
