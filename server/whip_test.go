package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"sonolive/auth"
	"sonolive/capture"
	"sonolive/internal/whepclient"
	"sonolive/stream"
)

// publishPhantom publishes the phantom, encoded by x264, over WHIP to
// endpoint with tok, until ctx ends. It returns the resource URL.
func publishPhantom(ctx context.Context, t *testing.T, endpoint, tok string) (string, *webrtc.PeerConnection) {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	track, _ := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264}, "video", "probe")
	if _, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, _ := pc.CreateOffer(nil)
	gathered := webrtc.GatheringCompletePromise(pc)
	pc.SetLocalDescription(offer)
	<-gathered
	req, _ := http.NewRequest("POST", endpoint, strings.NewReader(pc.LocalDescription().SDP))
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHIP POST: %d %s", resp.StatusCode, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	go func() {
		ph := capture.NewPhantom(capture.PhantomConfig{Seed: 9, Width: 320, Height: 240, FPS: 30, Lesions: 1})
		defer ph.Close()
		enc := stream.NewEncoder(stream.EncoderConfig{Bitrate: 800_000, FPS: 30, KeyframeInterval: 2 * time.Second})
		defer enc.Close()
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for seq := uint64(1); ctx.Err() == nil; seq++ {
			f := ph.Render(seq)
			au, _, err := enc.Encode(f.Image)
			f.Close()
			if err == nil && len(au) > 0 {
				track.WriteSample(media.Sample{Data: au, Duration: time.Second / 30})
			}
			<-tick.C
		}
	}()
	return resp.Header.Get("Location"), pc
}

// A device with a publisher link the admin made publishes a source that
// did not exist: its session starts, a viewer with the sonographer's link
// watches it, the publisher's numbers are in the session's stats; a second
// publisher is refused while the first publishes; after the first stops,
// the session and its viewer stay for the next one.
func TestWHIPPublishCreatesSource(t *testing.T) {
	srv, base := startServer(t)
	admin, _, err := srv.AdminToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	code, out := do(t, "POST", base+"/api/publishers", "application/json", admin, `{"source":"tablet"}`)
	if code != http.StatusCreated {
		t.Fatalf("publisher link: %d %s", code, out)
	}
	var links publisherLinks
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(links.Publisher.URL, "/publish/tablet?token=") {
		t.Fatalf("publisher url %q", links.Publisher.URL)
	}
	// The publisher link opens nothing else, and publishes nowhere else.
	if code, _ := do(t, "POST", base+"/whip/phantom", "application/sdp", links.Publisher.Token, "v=0"); code != http.StatusForbidden {
		t.Errorf("publishing to another source: %d", code)
	}
	if code, _ := do(t, "POST", base+"/api/publishers", "application/json", links.Publisher.Token, `{"source":"x"}`); code != http.StatusForbidden {
		t.Errorf("publisher minting links: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	loc, pc := publishPhantom(ctx, t, base+"/whip/tablet", links.Publisher.Token)
	if !strings.HasPrefix(loc, "/whip/tablet/") {
		t.Fatalf("Location %q", loc)
	}
	var v *whepclient.Session
	for v == nil {
		if v, err = whepclient.Dial(ctx, base+"/whep/tablet", whepclient.Options{Token: links.Sonographer.Token}); err != nil {
			if ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	defer v.Close(context.Background())
	for v.Stats().Frames < 30 {
		if ctx.Err() != nil {
			t.Fatalf("the viewer got %+v", v.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var meta struct{ Width, Height int }
	json.Unmarshal(v.LastMetadata(), &meta)
	if meta.Width != 320 || meta.Height != 240 {
		t.Fatalf("metadata size %dx%d", meta.Width, meta.Height)
	}
	ses, _ := srv.sessions.get("tablet")
	st := ses.stats()
	if st.Publisher == nil || st.Publisher.Codec != "H264" || st.Publisher.Frames < 30 {
		t.Fatalf("publisher stats %+v", st.Publisher)
	}
	// One publisher at a time.
	second, _, _ := srv.access.Issue(auth.Claims{}, auth.Publisher, "tablet", time.Hour, "second")
	if code, msg := do(t, "POST", base+"/whip/tablet", "application/sdp", second, "v=0\r\n"); code != http.StatusConflict {
		t.Errorf("second publisher: %d %s", code, msg)
	}
	if code, msg := do(t, "DELETE", base+loc, "", links.Publisher.Token, ""); code != http.StatusOK {
		t.Fatalf("WHIP DELETE: %d %s", code, msg)
	}
	pc.Close()
	for ses.feed.Publisher() != nil {
		if ctx.Err() != nil {
			t.Fatal("the publisher is still attached")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, ok := srv.sessions.get("tablet"); !ok || v.Stats().State == "closed" {
		t.Fatalf("the session or its viewer went with the publisher: %s", v.Stats().State)
	}
}
