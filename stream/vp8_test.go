package stream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/capture"
	"sonolive/internal/whepclient"
)

func TestFallbackSize(t *testing.T) {
	for _, tc := range []struct{ w, h, maxH, wantW, wantH int }{
		{1280, 720, 480, 854, 480},
		{1920, 1080, 480, 854, 480},
		{640, 480, 480, 640, 480},
		{321, 241, 480, 320, 240},
		{800, 600, 360, 480, 360},
	} {
		if w, h := fallbackSize(tc.w, tc.h, tc.maxH); w != tc.wantW || h != tc.wantH {
			t.Errorf("%dx%d at most %d rows: %dx%d, want %dx%d", tc.w, tc.h, tc.maxH, w, h, tc.wantW, tc.wantH)
		}
	}
}

func TestVP8Encoder(t *testing.T) {
	enc := newVP8Encoder(VP8Config{MaxHeight: 240}, 30)
	defer enc.Close()
	src := capture.NewPhantom(capture.PhantomConfig{Seed: 1, Width: 640, Height: 480})
	keys := encodeFrames(t, enc, src, 40, 20, func(i int, au []byte, key bool) {
		// The frame tag's P bit: 0 on keyframes (RFC 6386 9.1).
		if (au[0]&1 == 0) != key {
			t.Fatalf("frame %d: key=%v but frame tag %#x", i, key, au[0])
		}
	})
	if len(keys) != 2 || keys[0] != 0 || keys[1] != 20 {
		t.Fatalf("keyframes at %v, want [0 20]", keys)
	}
	if w, h := enc.Size(); w != 320 || h != 240 {
		t.Fatalf("encoded %dx%d, want 320x240", w, h)
	}
	// Another source size: a new encoder, starting with a keyframe.
	big := gocv.NewMatWithSize(360, 640, gocv.MatTypeCV8UC3)
	defer big.Close()
	if _, key, err := enc.Encode(big); err != nil || !key {
		t.Fatalf("after a size change: key=%v err=%v", key, err)
	}
	gray := gocv.NewMatWithSize(64, 64, gocv.MatTypeCV8UC1)
	defer gray.Close()
	if _, _, err := enc.Encode(gray); !errors.Is(err, ErrEncode) {
		t.Fatalf("gray frame: %v", err)
	}
}

// A browser without H.264 (Firefox before OpenH264) gets the VP8 layer,
// started for it and stopped after it: frames, keyframes and metadata
// keyed to the same RTP timestamps, beside an H.264 viewer that loses
// nothing.
func TestVP8ViewerBesideH264(t *testing.T) {
	tr := newTestRelayWith(t, EncoderConfig{Bitrate: 800_000, KeyframeInterval: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFeeder(t, tr.Relay)
	f.start()
	h264 := dialAll(t, ctx, tr.url, 1)[0]
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()

	vp8, err := whepclient.Dial(ctx, tr.url, whepclient.Options{VP8: true})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for vp8.Stats().Keyframes == 0 || vp8.Stats().Matched < 30 {
		if time.Now().After(deadline) {
			t.Fatalf("VP8 viewer: %+v", vp8.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	rs := tr.Stats()
	if len(rs.Layers) != 1 || rs.Layers[0].Codec != "vp8" || rs.Layers[0].Frames == 0 || rs.Layers[0].Width != 320 {
		t.Fatalf("layers: %+v", rs.Layers)
	}
	codecs := map[string]int{}
	for _, v := range rs.Viewers {
		codecs[v.Codec]++
	}
	if codecs["H264"] != 1 || codecs["VP8"] != 1 {
		t.Fatalf("viewer codecs %v", codecs)
	}
	st := vp8.Stats()
	if st.Matched*10 < st.Frames*9 {
		t.Errorf("VP8 viewer: only %d of %d frames matched their metadata", st.Matched, st.Frames)
	}
	if hs := h264.Stats(); hs.Lost != 0 || hs.Frames == 0 {
		t.Errorf("H.264 viewer beside the VP8 layer: %+v", hs)
	}

	if err := vp8.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := tr.Stats().Layers; len(l) != 0 {
		t.Fatalf("the VP8 layer outlived its last viewer: %+v", l)
	}
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > base+2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines %d, baseline %d", runtime.NumGoroutine(), base)
		}
	}
}

func TestCheckOfferCodec(t *testing.T) {
	vp8Only := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\na=recvonly\r\na=mid:0\r\n"
	both := vp8Only[:len(vp8Only)-len("a=recvonly\r\na=mid:0\r\n")] + "a=rtpmap:102 H264/90000\r\na=recvonly\r\na=mid:0\r\n"
	av1 := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 45\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:45 AV1/90000\r\na=mid:0\r\n"
	for _, tc := range []struct {
		name     string
		offer    string
		allowVP8 bool
		want     string
		wantErr  error
	}{
		{"H.264 preferred", both, true, "video/H264", nil},
		{"VP8 only, fallback on", vp8Only, true, "video/VP8", nil},
		{"VP8 only, fallback off", vp8Only, false, "", ErrNoCodec},
		{"AV1 only", av1, true, "", ErrNoCodec},
		{"H.264 from chrome", chromeOffer, false, "video/H264", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := checkOffer(tc.offer, tc.allowVP8)
			codec := o.codec
			if codec != tc.want || !errors.Is(err, tc.wantErr) || (tc.wantErr != nil && !errors.Is(err, ErrBadOffer)) {
				t.Fatalf("codec %q, err %v; want %q, %v", codec, err, tc.want, tc.wantErr)
			}
		})
	}
}

// A page with its voice slots that does not trickle names its candidates
// in all six bundled sections: each address counts once.
func TestCheckOfferCandidates(t *testing.T) {
	section := func(kind, pt, rtpmap string, mid int, cands []string) string {
		s := fmt.Sprintf("m=%s 9 UDP/TLS/RTP/SAVPF %s\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:%s %s\r\na=mid:%d\r\n", kind, pt, pt, rtpmap, mid)
		for _, c := range cands {
			s += "a=" + c + "\r\n"
		}
		return s
	}
	offer := func(perSection []string) string {
		o := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + section("video", "102", "H264/90000", 0, perSection)
		for i := 1; i <= 5; i++ {
			o += section("audio", "111", "opus/48000/2", i, perSection)
		}
		return o
	}
	cands := func(n int) []string {
		var out []string
		for i := 0; i < n; i++ {
			out = append(out, fmt.Sprintf("candidate:%d 1 udp 2122260223 10.0.%d.2 %d typ host", i, i, 50000+i))
		}
		return out
	}
	if _, err := checkOffer(offer(cands(8)), false); err != nil {
		t.Fatalf("8 candidates in each of 6 sections: %v", err)
	}
	if _, err := checkOffer(offer(cands(MaxCandidates+1)), false); !errors.Is(err, ErrBadOffer) {
		t.Fatalf("%d distinct candidates: %v", MaxCandidates+1, err)
	}
}
