// Package retry runs a connection that ends with an error again and
// again until its context ends: the one loop around the box's outbound
// links (WHIP egress, LiveKit publishing, the hub link).
package retry

import (
	"context"
	"time"
)

// Backoff bounds the wait between tries: Min after a failure, doubling to
// Max; a run that lasted longer than Reset starts again from Min.
type Backoff struct {
	Min, Max, Reset time.Duration
}

// Default waits 1 s, doubling to 30 s, and forgets after a minute up.
var Default = Backoff{Min: time.Second, Max: 30 * time.Second, Reset: time.Minute}

// Loop calls run until ctx ends. After each run that returns while ctx
// lives, failed(err, wait) is told (to count, log, show) and Loop waits.
func Loop(ctx context.Context, b Backoff, run func(context.Context) error, failed func(err error, wait time.Duration)) {
	wait := b.Min
	for ctx.Err() == nil {
		start := time.Now()
		err := run(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > b.Reset {
			wait = b.Min
		}
		failed(err, wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, b.Max)
	}
}
