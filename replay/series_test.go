package replay

import (
	"context"
	"testing"
	"time"

	"sonolive/capture"
	"sonolive/overlay"
	"sonolive/stream"
)

// feedSeries writes frames of the given sizes (n each, 30 fps on their own
// clock) through a relay into a series.
func feedSeries(t *testing.T, lib *Library, maxPart time.Duration, sizes [][2]int, n int, pace time.Duration) []Meta {
	t.Helper()
	relay, err := stream.New(stream.Config{Source: "phantom", Encoder: stream.EncoderConfig{Bitrate: 500_000, FPS: 30, KeyframeInterval: 4 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	var parts []Meta
	ended := make(chan Meta, 16)
	s, err := lib.NewSeries(SeriesConfig{
		Recorder: RecorderConfig{Source: "phantom", RequestKeyframe: relay.RequestKeyframe},
		MaxPart:  maxPart,
		OnPartEnd: func(m Meta, err error) {
			if err != nil {
				t.Errorf("part %s: %v", m.ID, err)
			}
			ended <- m
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	relay.AddTap(s)
	t0 := time.Now()
	i := 0
	for _, sz := range sizes {
		src := capture.NewPhantom(capture.PhantomConfig{Seed: 5, Width: sz[0], Height: sz[1], Lesions: 1})
		for k := 0; k < n; k++ {
			f, err := src.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			f.Captured = t0.Add(time.Duration(i) * time.Second / 30)
			meta := overlay.NewMetadata(f)
			relay.Write(f, &meta)
			f.Close()
			i++
			time.Sleep(pace)
		}
		src.Close()
	}
	relay.RemoveTap(s)
	last, err := s.Close()
	if err != nil {
		t.Fatal(err)
	}
	close(ended)
	for m := range ended {
		parts = append(parts, m)
	}
	return append(parts, last)
}

// A long session is recorded in parts of at most MaxPart, each a whole
// recording starting at a keyframe, chained by Previous; no frame is in two
// parts and none is lost but the few before a part's first keyframe.
func TestSeriesRotatesByLength(t *testing.T) {
	lib, err := OpenLibrary(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	parts := feedSeries(t, lib, 2*time.Second, [][2]int{{320, 240}}, 150, 33*time.Millisecond) // 5 s at the real pace: the relay spaces forced keyframes in wall time
	if len(parts) != 3 {
		t.Fatalf("%d parts of 5 s at 2 s each: %+v", len(parts), parts)
	}
	total := 0
	for i, m := range parts {
		if m.Part != i+1 || (i > 0 && m.Previous != parts[i-1].ID) {
			t.Fatalf("part %d: %+v", i+1, m)
		}
		if m.DurationS > 2.2 {
			t.Fatalf("part %d lasts %.2f s", m.Part, m.DurationS)
		}
		video, _ := lib.File(m.ID, "video.mp4")
		if _, frames := ffprobe(t, video); frames != m.Frames {
			t.Fatalf("part %d: ffprobe %d frames, meta %d", m.Part, frames, m.Frames)
		}
		total += m.Frames
	}
	if total < 145 || total > 150 {
		t.Fatalf("%d of 150 frames recorded across the parts", total)
	}
}

// A frame size change (a device back at another resolution) starts a new
// part: each part plays at its own size.
func TestSeriesSplitsAtResolutionChange(t *testing.T) {
	lib, err := OpenLibrary(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	parts := feedSeries(t, lib, time.Hour, [][2]int{{320, 240}, {480, 360}}, 60, 33*time.Millisecond) // at the real pace
	if len(parts) != 2 {
		t.Fatalf("%d parts: %+v", len(parts), parts)
	}
	for i, want := range [][2]int{{320, 240}, {480, 360}} {
		m := parts[i]
		if m.Width != want[0] || m.Height != want[1] {
			t.Fatalf("part %d is %dx%d, want %v", m.Part, m.Width, m.Height, want)
		}
		video, _ := lib.File(m.ID, "video.mp4")
		if _, frames := ffprobe(t, video); frames != m.Frames || frames < 50 {
			t.Fatalf("part %d: ffprobe %d frames, meta %d", m.Part, frames, m.Frames)
		}
	}
}
