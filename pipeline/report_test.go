package pipeline

import (
	"testing"

	"sonolive/frame"
)

// Shown tracks split into true ones (matched the truth on some frame) and
// false alarms, also once the running count has settled old tracks.
func TestAccuracyTracks(t *testing.T) {
	lesion := frame.Box{X1: 10, Y1: 10, X2: 50, Y2: 50}
	elsewhere := frame.Box{X1: 200, Y1: 200, X2: 240, Y2: 240}
	a := &Accuracy{IoU: 0.5}
	// Track 1 on the lesion, track 2 a false alarm for 10 frames.
	for range 10 {
		a.add([]frame.Box{lesion}, []frame.Detection{{Box: lesion, TrackID: 1}, {Box: elsewhere, TrackID: 2}})
	}
	// Track 3 sits beside the lesion (IoU < 0.5) while track 1 is gone:
	// never matched, a false alarm too.
	for range 5 {
		a.add([]frame.Box{lesion}, []frame.Detection{{Box: frame.Box{X1: 40, Y1: 40, X2: 80, Y2: 80}, TrackID: 3}})
	}
	r := *a
	r.finish()
	if r.TrueTracks != 1 || r.FalseTracks != 2 || r.Matched != 10 || r.Truth != 15 {
		t.Errorf("got %+v", r)
	}
	// A long run settles tracks as it goes and still counts each once.
	for range 2 * trackLinger {
		a.add(nil, nil)
	}
	if len(a.tracks) != 0 {
		t.Errorf("%d tracks kept after %d frames", len(a.tracks), 2*trackLinger)
	}
	r = *a
	r.finish()
	if r.TrueTracks != 1 || r.FalseTracks != 2 {
		t.Errorf("after settling: %+v", r)
	}
}
