package ingest

import (
	"context"
	"sort"
	"strconv"
	"testing"
	"time"

	"sonolive/capture"
)

// encodeScaled encodes the shared clip at width×height, as a publisher's
// browser would send a shared window of that size.
func encodeScaled(b *testing.B, codec string, width, height int) [][]byte {
	b.Helper()
	return accessUnits(b, codec, encodeClip(b, codec, 60, "-g", "60", "-vf", "scale="+strconv.Itoa(width)+":"+strconv.Itoa(height), "-b:v", "4M"))
}

// BenchmarkDecode is what decoding a publisher's stream costs per frame
// (GStreamer: avdec_h264 or vp8dec, then conversion to BGR), the clip
// looped from its keyframe.
func BenchmarkDecode(b *testing.B) {
	for _, codec := range []string{"H264", "VP8"} {
		for _, size := range [][2]int{{1280, 720}, {1920, 1080}} {
			b.Run(codec+"-"+strconv.Itoa(size[1])+"p", func(b *testing.B) {
				aus := encodeScaled(b, codec, size[0], size[1])
				p := &Publisher{id: "bench", aus: make(chan accessUnit, queueLen), done: make(chan struct{})}
				p.codec.Store(codec)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go func() {
					for i := 0; ; i++ {
						select {
						case p.aus <- accessUnit{data: aus[i%len(aus)], key: i%len(aus) == 0}:
						case <-ctx.Done():
							return
						}
					}
				}()
				src, err := decode(ctx, p, capture.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer src.Close()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					f, err := src.Next(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if f.Image.Cols() != size[0] {
						b.Fatalf("decoded %dx%d", f.Image.Cols(), f.Image.Rows())
					}
					f.Close()
				}
			})
		}
	}
}

// BenchmarkDecodeLatency is the time from writing a frame to the decoder
// to the frame coming out, on a 30 fps H.264 stream (reported as p50-ms
// and p95-ms; ns/op is one frame interval).
func BenchmarkDecodeLatency(b *testing.B) {
	aus := encodeScaled(b, "H264", 1280, 720)
	p := &Publisher{id: "bench", aus: make(chan accessUnit, queueLen), done: make(chan struct{})}
	p.codec.Store("H264")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan time.Time, 4096)
	go func() {
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; i++ {
			sent <- time.Now()
			p.aus <- accessUnit{data: aus[i%len(aus)]}
			<-tick.C
		}
	}()
	src, err := decode(ctx, p, capture.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	var lat []float64
	b.ResetTimer()
	for i := 0; i < b.N+10; i++ {
		f, err := src.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		at := <-sent
		// Skip the start: the first frame waited for the decoder to open.
		if i >= 10 {
			lat = append(lat, float64(f.Captured.Sub(at).Microseconds())/1000)
		}
		f.Close()
	}
	sort.Float64s(lat)
	b.ReportMetric(lat[len(lat)/2], "p50-ms")
	b.ReportMetric(lat[len(lat)*95/100], "p95-ms")
}
