package stream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"sonolive/capture"
	"sonolive/internal/whepclient"
	"sonolive/overlay"
)

// testRelay is a relay on loopback behind a minimal WHEP endpoint.
type testRelay struct {
	*Relay
	url  string
	done func()
}

func newTestRelay(t *testing.T) *testRelay {
	t.Helper()
	return newTestRelayWith(t, EncoderConfig{Bitrate: 800_000})
}

func newTestRelayWith(t *testing.T, enc EncoderConfig) *testRelay {
	t.Helper()
	api, closeAPI, err := NewAPI(APIConfig{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Source: "test", API: api, Encoder: enc})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.Method {
		case http.MethodPost:
			body, _ := io.ReadAll(req.Body)
			v, answer, err := r.AddViewer(req.Context(), string(body), "expert")
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Location", "/"+v.ID())
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, answer)
		case http.MethodDelete:
			if err := r.RemoveViewer(strings.TrimPrefix(req.URL.Path, "/"), "left"); err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
			}
		}
	}))
	tr := &testRelay{Relay: r, url: srv.URL}
	tr.done = func() {
		srv.Close()
		r.Close()
		closeAPI()
	}
	t.Cleanup(tr.done)
	return tr
}

// feeder writes phantom frames into the relay at 30 fps.
type feeder struct {
	t   *testing.T
	r   *Relay
	src *capture.Phantom
}

func newFeeder(t *testing.T, r *Relay) *feeder {
	return &feeder{t: t, r: r, src: capture.NewPhantom(capture.PhantomConfig{Seed: 3, Width: 320, Height: 240, FPS: 30})}
}

// start runs the feeder until the returned stop, which waits for it; the
// test's cleanup stops it too, before the relay is closed (a Write in
// progress would meet a freed encoder).
func (f *feeder) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(ctx, 0)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	f.t.Cleanup(stop)
	return stop
}

// run writes n frames (0: until ctx ends) paced at 30 fps.
func (f *feeder) run(ctx context.Context, n int) int {
	tick := time.NewTicker(time.Second / 30)
	defer tick.Stop()
	sent := 0
	for n == 0 || sent < n {
		select {
		case <-ctx.Done():
			return sent
		case <-tick.C:
		}
		fr, err := f.src.Next(ctx)
		if err != nil {
			return sent
		}
		fr.Captured = time.Now()
		meta := overlay.NewMetadata(fr)
		if err := f.r.Write(fr, &meta); err != nil {
			f.t.Errorf("write: %v", err)
		}
		fr.Close()
		sent++
	}
	return sent
}

// dialAll connects n viewers and waits until each has decoded a keyframe.
func dialAll(t *testing.T, ctx context.Context, url string, n int) []*whepclient.Session {
	t.Helper()
	var out []*whepclient.Session
	for i := 0; i < n; i++ {
		s, err := whepclient.Dial(ctx, url, whepclient.Options{})
		if err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
		out = append(out, s)
		t.Cleanup(func() { s.Close(context.Background()) })
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, s := range out {
		for s.Stats().Keyframes == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no keyframe within 15 s: %+v", s.Stats())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

// settle waits until the viewers stop receiving (the queues drained): no
// packet for 300 ms, since one quiet 100 ms window on a loaded machine can
// be a stalled sender rather than an empty queue.
func settle(views []*whepclient.Session) {
	last, quiet := -1, 0
	for i := 0; i < 100 && quiet < 3; i++ {
		time.Sleep(100 * time.Millisecond)
		n := 0
		for _, v := range views {
			n += v.Stats().Packets
		}
		if n == last {
			quiet++
		} else {
			quiet = 0
		}
		last = n
	}
}

func TestFanOutEveryViewerGetsFramesAndMetadata(t *testing.T) {
	// Scheduled keyframes 10 s apart, so a first keyframe within a few
	// seconds can only be the one asked for on join.
	tr := newTestRelayWith(t, EncoderConfig{Bitrate: 800_000, KeyframeInterval: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFeeder(t, tr.Relay)
	stopFeed := f.start()
	views := dialAll(t, ctx, tr.url, 5)
	for i, v := range views {
		// A late joiner starts at once (about 0.3 s idle; 3 s allows for
		// five handshakes at once on a loaded machine): keyframe on join.
		if st := v.Stats(); st.FirstKeyframe > 3*time.Second {
			t.Errorf("viewer %d: first keyframe after %v", i, st.FirstKeyframe)
		}
	}
	stopFeed()
	settle(views)
	for _, v := range views {
		v.Reset()
	}
	const n = 90
	sent := f.run(context.Background(), n)
	settle(views)
	for i, v := range views {
		st := v.Stats()
		if st.Frames < sent*99/100 || st.Matched < sent*99/100 {
			t.Errorf("viewer %d: %d frames, %d with metadata of %d sent (%+v)", i, st.Frames, st.Matched, sent, st)
		}
	}
	rs := tr.Stats()
	if len(rs.Viewers) != 5 || rs.Frames == 0 || rs.Keyframes == 0 {
		t.Fatalf("relay stats: %+v", rs)
	}
	for _, v := range rs.Viewers {
		if v.Dropped != 0 {
			t.Errorf("viewer %s dropped %d frames on loopback", v.ID, v.Dropped)
		}
	}
}

func TestThrottledViewerDoesNotSlowOthers(t *testing.T) {
	tr := newTestRelay(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFeeder(t, tr.Relay)
	stopFeed := f.start()
	views := dialAll(t, ctx, tr.url, 4)
	stopFeed()
	settle(views)

	// Viewer 0's send path now takes 20 ms per packet: a viewer on a
	// link far slower than the stream.
	slowID := tr.Stats().Viewers[0].ID
	for _, vs := range tr.Stats().Viewers {
		if vs.ID < slowID {
			slowID = vs.ID
		}
	}
	v, _ := tr.Viewer(slowID)
	orig := *v.write.Load()
	throttled := func(p *rtp.Packet) error { time.Sleep(20 * time.Millisecond); return orig(p) }
	v.write.Store(&throttled)
	for _, s := range views {
		s.Reset()
	}
	var maxWrite time.Duration
	const n = 90
	sent := 0
	tick := time.NewTicker(time.Second / 30)
	for ; sent < n; sent++ {
		<-tick.C
		fr, _ := f.src.Next(context.Background())
		fr.Captured = time.Now()
		meta := overlay.NewMetadata(fr)
		t0 := time.Now()
		tr.Write(fr, &meta)
		maxWrite = max(maxWrite, time.Since(t0))
		fr.Close()
	}
	tick.Stop()
	settle(views)
	var slow, fast int
	for _, vs := range tr.Stats().Viewers {
		if vs.ID == slowID {
			if vs.Dropped == 0 {
				t.Errorf("throttled viewer dropped nothing: %+v", vs)
			}
			slow = int(vs.Frames)
			continue
		}
		fast++
		if vs.Dropped != 0 {
			t.Errorf("viewer %s dropped %d frames", vs.ID, vs.Dropped)
		}
	}
	good := 0
	for _, s := range views {
		if st := s.Stats(); st.Frames >= sent*99/100 {
			good++
		}
	}
	if good < fast {
		t.Errorf("only %d of %d unthrottled viewers got ≥99%% of %d frames", good, fast, sent)
	}
	t.Logf("throttled viewer sent %d frames; slowest relay.Write %v", slow, maxWrite)
}

func TestLeavingViewerFreesGoroutines(t *testing.T) {
	tr := newTestRelay(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	newFeeder(t, tr.Relay).start()
	// Warm pion's shared goroutines up with one viewer that stays.
	dialAll(t, ctx, tr.url, 1)
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()

	var views []*whepclient.Session
	for i := 0; i < 3; i++ {
		s, err := whepclient.Dial(ctx, tr.url, whepclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, s)
	}
	for tr.ViewerCount() != 4 {
		time.Sleep(10 * time.Millisecond)
	}
	for _, s := range views {
		if err := s.Close(context.Background()); err != nil {
			t.Fatalf("leave: %v", err)
		}
	}
	if n := tr.ViewerCount(); n != 1 {
		t.Fatalf("%d viewers after 3 left", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBadOffers(t *testing.T) {
	tr := newTestRelay(t)
	vp8Only := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\na=recvonly\r\na=mid:0\r\n"
	h264NoICE := strings.Replace(vp8Only, "VP8", "H264", 1)
	for _, tc := range []struct{ name, offer string }{
		{"empty", ""},
		{"garbage", "hello"},
		{"json", `{"type":"offer"}`},
		{"vp8 only", vp8Only},
		{"h264 without ice or dtls", h264NoICE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tr.AddViewer(context.Background(), tc.offer, "expert")
			if !errors.Is(err, ErrBadOffer) {
				t.Fatalf("err = %v, want ErrBadOffer", err)
			}
		})
	}
	if n := tr.ViewerCount(); n != 0 {
		t.Fatalf("%d viewers after bad offers", n)
	}
}
