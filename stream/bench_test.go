package stream

import (
	"context"
	"fmt"
	"image"
	"testing"
	"time"

	"github.com/pion/rtp"
	"gocv.io/x/gocv"

	"sonolive/capture"
	"sonolive/frame"
	"sonolive/overlay"
)

func benchFrames(b *testing.B, w, h, n int) []*frame.Frame {
	b.Helper()
	src := capture.NewPhantom(capture.PhantomConfig{Seed: 1, Width: w, Height: h})
	var out []*frame.Frame
	for i := 0; i < n; i++ {
		f, err := src.Next(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, f)
	}
	b.Cleanup(func() {
		for _, f := range out {
			f.Close()
		}
	})
	return out
}

// BenchmarkEncode720p is the once-per-frame cost: BGR→I420 and x264.
func BenchmarkEncode720p(b *testing.B) {
	frames := benchFrames(b, 1280, 720, 30)
	enc := NewEncoder(EncoderConfig{Bitrate: 2_500_000, FPS: 30})
	defer enc.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := enc.Encode(frames[i%len(frames)].Image); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeLayers sets the extra layers' cost beside the H.264
// encode they run with, on the same 720p frames in one run: H.264 at 720p
// (always running), the small H.264 layer for poor links (scaled to 360
// rows, as the layer does), and VP8 scaled to 360, 480 and 720 rows
// (scaling included), at the speed the relay uses.
func BenchmarkEncodeLayers(b *testing.B) {
	frames := benchFrames(b, 1280, 720, 30)
	h264 := func(bitrate, rows int) func(b *testing.B) {
		return func(b *testing.B) {
			enc := NewEncoder(EncoderConfig{Bitrate: bitrate, FPS: 30})
			defer enc.Close()
			small := gocv.NewMat()
			defer small.Close()
			var bytes int
			for i := 0; i < b.N; i++ {
				img := frames[i%len(frames)].Image
				if rows < img.Rows() {
					w, h := fallbackSize(img.Cols(), img.Rows(), rows)
					gocv.Resize(img, &small, image.Pt(w, h), 0, 0, gocv.InterpolationArea)
					img = small
				}
				au, _, err := enc.Encode(img)
				if err != nil {
					b.Fatal(err)
				}
				bytes += len(au)
			}
			b.ReportMetric(float64(bytes*8*30)/float64(b.N)/1000, "kbit/s@30fps")
		}
	}
	b.Run("h264-720", h264(2_500_000, 720))
	b.Run("h264-small-360", h264(600_000, 360))
	for _, rows := range []int{360, 480, 720} {
		b.Run(fmt.Sprintf("vp8-%d", rows), func(b *testing.B) {
			enc := newVP8Encoder(VP8Config{MaxHeight: rows}, 30)
			defer enc.Close()
			var bytes int
			for i := 0; i < b.N; i++ {
				au, _, err := enc.Encode(frames[i%len(frames)].Image)
				if err != nil {
					b.Fatal(err)
				}
				bytes += len(au)
			}
			b.ReportMetric(float64(bytes*8*30)/float64(b.N)/1000, "kbit/s@30fps")
		})
	}
}

// BenchmarkFanOut measures Relay.Write (encode once, packetise once, queue
// to every viewer) with 1 and 50 viewers whose send loops copy and "send"
// every packet: the difference is the per-viewer cost on the frame path.
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("viewers=%d", n), func(b *testing.B) {
			frames := benchFrames(b, 1280, 720, 30)
			api, closeAPI, _ := NewAPI(APIConfig{})
			defer closeAPI()
			r, _ := New(Config{Source: "bench", API: api, ViewerQueue: 64})
			defer r.enc.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := 0; i < n; i++ {
				v := &Viewer{relay: r, id: fmt.Sprint(i), q: make(chan *sample, 64), ctx: ctx}
				noop := func(*rtp.Packet) error { return nil }
				v.write.Store(&noop)
				v.wg.Add(1)
				go v.sendLoop()
				r.viewers[v.id] = v
			}
			t0 := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f := frames[i%len(frames)]
				f.Captured = t0.Add(time.Duration(i) * time.Second / 30)
				meta := overlay.NewMetadata(f)
				r.Write(f, &meta)
			}
			b.StopTimer()
			var dropped uint64
			for _, v := range r.viewers {
				dropped += v.dropped.Load()
			}
			b.ReportMetric(float64(dropped)/float64(b.N*n), "drops/frame-viewer")
		})
	}
}
