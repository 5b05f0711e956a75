package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"sonolive/auth"
	"sonolive/ice"
	"sonolive/internal/testpeer"
	"sonolive/internal/whepclient"
)

// With the embedded TURN server on, a viewer that may use nothing but
// relays (UDP, or TCP alone) still gets the stream and its metadata, with
// the credentials the page's ICE call minted for its link; a forged
// credential gets no relay.
func TestEmbeddedTURNRelayOnly(t *testing.T) {
	cfg := Default()
	cfg.Record.Enabled = false
	cfg.Audit.Path = ""
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?width=320&height=240&fps=15"}}
	cfg.WebRTC.TURN = ice.TURNConfig{Listen: "127.0.0.1:0", PublicIP: "127.0.0.1"}
	srv, base := runServer(t, cfg)
	tok := token(t, srv, auth.Expert, time.Hour)
	code, body := do(t, "GET", base+"/api/sources/phantom/ice", "", tok, "")
	var got struct {
		ICEServers []ice.Server `json:"ice_servers"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || len(got.ICEServers) != 1 || len(got.ICEServers[0].URLs) != 2 {
		t.Fatalf("ice: %d %s", code, body)
	}
	s := got.ICEServers[0]
	for _, tc := range []struct {
		name      string
		transport string
		password  string
		ok        bool
	}{
		{"udp", "udp", s.Credential, true},
		{"tcp", "tcp", s.Credential, true},
		{"forged", "udp", "AAAA" + s.Credential[4:], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var urls []string
			for _, u := range s.URLs {
				if strings.HasSuffix(u, "transport="+tc.transport) {
					urls = append(urls, u)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			v, err := whepclient.Dial(ctx, base+"/whep/phantom", whepclient.Options{Token: tok, RelayOnly: true,
				ICEServers: []webrtc.ICEServer{{URLs: urls, Username: s.Username, Credential: tc.password}}})
			if err != nil {
				if tc.ok {
					t.Fatal(err)
				}
				return
			}
			defer v.Close(context.Background())
			deadline := time.Now().Add(8 * time.Second)
			for time.Now().Before(deadline) && (v.Stats().Frames < 30 || v.Stats().Metadata < 30) {
				time.Sleep(100 * time.Millisecond)
			}
			st := v.Stats()
			local, _, _ := v.Path()
			t.Logf("TURN %s: %d frames, %d metadata, first keyframe after %v", tc.transport, st.Frames, st.Metadata, st.FirstKeyframe.Round(time.Millisecond))
			if tc.ok && (st.Frames < 30 || st.Metadata < 30 || local != "relay") {
				t.Errorf("through TURN %s: %d frames, %d metadata, local candidate %q", tc.transport, st.Frames, st.Metadata, local)
			}
			if !tc.ok && st.Frames > 0 {
				t.Errorf("a forged credential got %d frames", st.Frames)
			}
		})
	}
}

// A real TURN server: Debian's coturn with use-auth-secret. sonolive mints
// each link's credentials from the shared secret; a viewer that may use
// only relays, reaching coturn over TCP, gets the stream and metadata, and
// so does the box's own side (its peer is given the same server).
func TestCoturnRelayOnly(t *testing.T) {
	turn := testpeer.StartCoturn(t)
	cfg := Default()
	cfg.Record.Enabled = false
	cfg.Audit.Path = ""
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?width=320&height=240&fps=15"}}
	cfg.WebRTC.ICEServers = []ice.Server{{URLs: []string{fmt.Sprintf("turn:127.0.0.1:%d?transport=tcp", turn.Port)}, SecretFile: turn.SecretFile}}
	srv, base := runServer(t, cfg)
	tok := token(t, srv, auth.Expert, time.Hour)
	var got struct {
		ICEServers []ice.Server `json:"ice_servers"`
	}
	code, body := do(t, "GET", base+"/api/sources/phantom/ice", "", tok, "")
	if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || len(got.ICEServers) != 1 || got.ICEServers[0].Credential == "" {
		t.Fatalf("ice: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := whepclient.Dial(ctx, base+"/whep/phantom", whepclient.Options{Token: tok, RelayOnly: true, ICEServers: ice.WebRTC(got.ICEServers)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && (v.Stats().Frames < 30 || v.Stats().Metadata < 30) {
		time.Sleep(100 * time.Millisecond)
	}
	st := v.Stats()
	local, remote, _ := v.Path()
	// The same viewer direct, for the time to the first keyframe.
	d, err := whepclient.Dial(ctx, base+"/whep/phantom", whepclient.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	for ctx.Err() == nil && d.Stats().Frames < 30 {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("through coturn: %d frames, %d metadata, candidates %s/%s, first keyframe after %v (direct: %v)",
		st.Frames, st.Metadata, local, remote, st.FirstKeyframe.Round(time.Millisecond), d.Stats().FirstKeyframe.Round(time.Millisecond))
	if st.Frames < 30 || st.Metadata < 30 || local != "relay" {
		t.Errorf("through coturn over TCP: %d frames, %d metadata, local candidate %q", st.Frames, st.Metadata, local)
	}
}
