package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLoopBacksOffAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var waits []time.Duration
	runs := 0
	Loop(ctx, Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond, Reset: time.Hour}, func(context.Context) error {
		runs++
		if runs == 5 {
			cancel()
		}
		return errors.New("refused")
	}, func(err error, wait time.Duration) {
		waits = append(waits, wait)
	})
	want := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond}
	if runs != 5 || len(waits) != len(want) {
		t.Fatalf("runs %d, waits %v", runs, waits)
	}
	for i := range want {
		if waits[i] != want[i] {
			t.Errorf("waits %v, want %v", waits, want)
		}
	}
}

// A run that stayed up past Reset starts the backoff again.
func TestLoopResetsAfterALongRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var waits []time.Duration
	runs := 0
	Loop(ctx, Backoff{Min: time.Millisecond, Max: time.Second, Reset: 5 * time.Millisecond}, func(context.Context) error {
		runs++
		switch runs {
		case 3:
			time.Sleep(10 * time.Millisecond)
		case 4:
			cancel()
		}
		return nil
	}, func(err error, wait time.Duration) { waits = append(waits, wait) })
	if len(waits) != 3 || waits[2] != time.Millisecond {
		t.Fatalf("waits %v, want the third back at 1ms", waits)
	}
}
