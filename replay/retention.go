package replay

import (
	"errors"
	"time"

	"go.uber.org/zap"
)

// Enforce deletes the oldest finished recordings until none is older
// than maxAge and all together use at most maxBytes (0: no limit).
// Recordings in progress count towards maxBytes but are never deleted.
// Only the library's owner enforces: two processes applying one limit
// would each count the other's recordings.
func (l *Library) Enforce(maxAge time.Duration, maxBytes int64) (removed []string, err error) {
	if !l.Owner() {
		return nil, nil
	}
	list, err := l.List()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, m := range list {
		total += m.Bytes
	}
	for i := len(list) - 1; i >= 0; i-- { // oldest first
		m := list[i]
		if m.Status == "recording" {
			continue
		}
		old := maxAge > 0 && time.Since(m.Start) > maxAge
		big := maxBytes > 0 && total > maxBytes
		if !old && !big {
			continue
		}
		if err := l.Delete(m.ID); errors.Is(err, ErrRecording) {
			continue // its writer, in another process, is still finishing it
		} else if err != nil {
			return removed, err
		}
		total -= m.Bytes
		removed = append(removed, m.ID)
		l.log.Info("recording removed by retention", zap.String("recording", m.ID), zap.Bool("age", old), zap.Bool("size", big))
	}
	return removed, nil
}
