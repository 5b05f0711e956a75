package capture

import (
	"context"
	"time"
)

// pacer releases a recorded source's frames on its own clock: each frame
// at the run's start plus the frame's media time, so a file, a DICOM cine
// or the phantom plays at its recorded rate however long each frame took
// to make. A consumer that falls behind gets the late frames at once; the
// pipeline, not the source, decides what to drop.
type pacer struct {
	start time.Time
}

// wait blocks until media time at has come (measured from the first
// call), or ctx ends.
func (p *pacer) wait(ctx context.Context, at time.Duration) error {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	d := time.Until(p.start.Add(at))
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// frameTime is the media time of the frame after n frames at fps.
func frameTime(n uint64, fps float64) time.Duration {
	return time.Duration(float64(n) / fps * float64(time.Second))
}
