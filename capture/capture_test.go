package capture

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/frame"
	"sonolive/internal/testnet"
)

// writeClip writes n frames of a moving square with OpenCV's writer.
func writeClip(t *testing.T, path string, n int) {
	t.Helper()
	w, err := gocv.VideoWriterFile(path, "mp4v", 30, 160, 120, true)
	if err != nil || !w.IsOpened() {
		t.Fatalf("video writer: %v", err)
	}
	img := gocv.NewMatWithSize(120, 160, gocv.MatTypeCV8UC3)
	defer img.Close()
	for i := 0; i < n; i++ {
		img.SetTo(gocv.NewScalar(30, 30, 30, 0))
		gocv.Rectangle(&img, image.Rect(10+i, 40, 40+i, 70), color.RGBA{200, 200, 200, 0}, -1)
		if err := w.Write(img); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
}

func drain(t *testing.T, src Source, limit int) (n int, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last uint64
	for n < limit {
		f, err := src.Next(ctx)
		if err != nil {
			return n, err
		}
		if f.Seq != last+1 {
			t.Fatalf("seq %d after %d", f.Seq, last)
		}
		last = f.Seq
		if f.Image.Channels() != 3 || f.Image.Empty() {
			t.Fatalf("frame %d is not BGR", f.Seq)
		}
		f.Close()
		n++
	}
	return n, nil
}

func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	clip := filepath.Join(dir, "clip.mp4")
	writeClip(t, clip, 30)
	odd := filepath.Join(dir, "scan?2.mp4")
	writeClip(t, odd, 30)
	tests := []struct {
		name    string
		spec    string
		opts    Options
		limit   int
		want    int
		wantEOF bool
	}{
		{"plays to the end", clip, Options{}, 100, 30, true},
		{"frames limit", clip, Options{Frames: 10}, 100, 10, true},
		{"loops", "file://" + clip + "?loop=1", Options{}, 75, 75, false},
		{"a plain path takes a query too", clip + "?loop=1&frames=40", Options{}, 100, 40, true},
		{"an existing name with ? is taken whole", odd, Options{}, 100, 30, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := Open(context.Background(), tc.spec, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			n, err := drain(t, src, tc.limit)
			if n != tc.want || (tc.wantEOF && !errors.Is(err, io.EOF)) {
				t.Fatalf("got %d frames, err %v; want %d", n, err, tc.want)
			}
		})
	}
}

// A looping file that is rewritten while it plays is a lost source (the
// session reopens it) rather than a replay of FFmpeg's stale buffers.
func TestLoopingFileChangedIsLost(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	writeClip(t, clip, 10)
	src, err := Open(context.Background(), clip+"?loop=1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if n, err := drain(t, src, 15); n != 15 {
		t.Fatalf("an unchanged file stopped looping after %d frames: %v", n, err)
	}
	writeClip(t, clip, 40)
	n := 0
	for ; n < 100; n++ {
		f, err2 := src.Next(context.Background())
		if err2 != nil {
			err = err2
			break
		}
		f.Close()
	}
	if !errors.Is(err, ErrDisconnected) || n > 10 {
		t.Fatalf("after the rewrite: %d frames, err %v; want ErrDisconnected within one pass", n, err)
	}
}

func TestFileSourceRealtimePacing(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	writeClip(t, clip, 30)
	src, err := Open(context.Background(), clip, Options{Realtime: true, Frames: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if !src.Info().Live || src.Info().FPS != 30 {
		t.Fatalf("info %+v", src.Info())
	}
	start := time.Now()
	if n, _ := drain(t, src, 10); n != 10 {
		t.Fatalf("%d frames", n)
	}
	// 10 frames at 30 fps span 9 intervals: 300 ms.
	if el := time.Since(start); el < 280*time.Millisecond {
		t.Fatalf("10 paced frames took %v", el)
	}
}

// Every way a source can be wrong gives a clear, typed error within the
// open timeout.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.mp4")
	os.WriteFile(corrupt, bytes.Repeat([]byte("not a video "), 5000), 0o644)
	empty := filepath.Join(dir, "empty.avi")
	os.WriteFile(empty, nil, 0o644)

	// A server that accepts and never answers: OpenCV would wait 30 s.
	ln := testnet.BlackHole(t)
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedAddr := refused.Addr().String()
	refused.Close()

	tests := []struct {
		name string
		spec string
		want error
	}{
		{"missing file", filepath.Join(dir, "nope.mp4"), ErrNotFound},
		{"corrupt file", corrupt, ErrUnreadable},
		{"empty file", empty, ErrUnreadable},
		{"missing device", "/dev/video97", ErrNotFound},
		{"bad scheme", "ftp://x/y", ErrBadSpec},
		{"bad phantom parameter", "phantom://?lesions=many", ErrBadSpec},
		{"bad phantom geometry", "phantom://?geometry=round", ErrBadSpec},
		{"empty spec", "", ErrBadSpec},
		{"rtsp refused", "rtsp://" + refusedAddr + "/live", ErrUnreadable},
		{"rtsp black hole", "rtsp://" + ln.Addr().String() + "/live", nil},
		{"http black hole", "http://" + ln.Addr().String() + "/live.ts", nil},
	}
	const timeout = 1500 * time.Millisecond
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			src, err := Open(context.Background(), tc.spec, Options{OpenTimeout: timeout, ReadTimeout: timeout})
			el := time.Since(start)
			if err == nil {
				src.Close()
				t.Fatal("opened")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %q is not %q", err, tc.want)
			}
			// A black hole may time out at open or at the first read; both
			// are bounded by the configured timeouts.
			if tc.want == nil && !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrUnreadable) && !errors.Is(err, ErrDisconnected) {
				t.Fatalf("error %q: want a timeout", err)
			}
			if el > 2*timeout+2*time.Second {
				t.Fatalf("took %v with timeout %v", el, timeout)
			}
			if bytes.ContainsRune([]byte(err.Error()), '\n') {
				t.Fatalf("error is not one line: %q", err)
			}
			t.Logf("%v in %v", err, el.Round(time.Millisecond))
		})
	}
}

func TestGStreamerSource(t *testing.T) {
	src, err := Open(context.Background(), "gst:videotestsrc num-buffers=12 ! video/x-raw,width=160,height=120 ! videoconvert ! appsink", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	n, err := drain(t, src, 100)
	if n < 10 || err == nil {
		t.Fatalf("got %d frames, err %v", n, err)
	}
}

// flaky is a live source that drops after a few frames.
type flaky struct {
	frames int
	left   int
}

func (f *flaky) Info() Info   { return Info{ID: "flaky", FPS: 30, Live: true} }
func (f *flaky) Close() error { return nil }
func (f *flaky) Next(ctx context.Context) (*frame.Frame, error) {
	if f.left == 0 {
		return nil, ErrDisconnected
	}
	f.left--
	return &frame.Frame{Seq: uint64(f.frames - f.left), Image: gocv.NewMatWithSize(20, 20, gocv.MatTypeCV8UC3)}, nil
}

func TestReconnect(t *testing.T) {
	opens := 0
	open := func(ctx context.Context) (Source, error) {
		opens++
		if opens%2 == 1 {
			return nil, errors.New("device busy")
		}
		return &flaky{frames: 3, left: 3}, nil
	}
	r := newReconnecting(&flaky{frames: 3, left: 3}, open, zapNop())
	r.minBackoff, r.maxBackoff = time.Millisecond, 4*time.Millisecond
	n, err := drain(t, r, 12)
	if err != nil || n != 12 {
		t.Fatalf("got %d frames, %v", n, err)
	}
	if got := r.Stats().Reconnects; got != 3 {
		t.Fatalf("reconnects %d, want 3", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestRegion(t *testing.T) {
	p := NewPhantom(PhantomConfig{Seed: 3, Lesions: 3})
	defer p.Close()
	f := p.Render(1)
	defer f.Close()
	before := append([]frame.Box(nil), f.Truth...)
	r := Region{Crop: image.Rect(50, 30, 600, 470), Masks: []Mask{{Rect: image.Rect(0, 0, 640, 36)}}}
	if err := r.Apply(f); err != nil {
		t.Fatal(err)
	}
	if f.Image.Cols() != 550 || f.Image.Rows() != 440 {
		t.Fatalf("cropped to %dx%d", f.Image.Cols(), f.Image.Rows())
	}
	// The header (rows 0..35 of the source, 0..5 after the crop) is black.
	hdr := f.Image.Region(image.Rect(0, 0, 550, 6))
	defer hdr.Close()
	if s := hdr.Sum(); s.Val1+s.Val2+s.Val3 != 0 {
		t.Fatalf("masked area not black: %v", s)
	}
	for i, b := range f.Truth {
		if b.X1 != max(before[i].X1-50, 0) || b.Y1 != before[i].Y1-30 {
			t.Fatalf("truth %v did not move with the crop from %v", b, before[i])
		}
	}
	if err := (Region{Crop: image.Rect(700, 0, 800, 10)}).Apply(f); err == nil {
		t.Fatal("crop outside the frame accepted")
	}
	if _, err := ParseRect("1,2,3"); err == nil {
		t.Fatal("bad rect accepted")
	}
}
