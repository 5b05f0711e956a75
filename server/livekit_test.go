package server

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	sauth "sonolive/auth"
)

// The LiveKit tokens sonolive mints: for the roles that watch, subscribe
// only, to the source's room, never past the link's own expiry; none for
// a publisher link or a box without LiveKit.
func TestLiveKitTokens(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "lk.secret")
	os.WriteFile(secret, []byte("a-livekit-api-secret-of-some-length-0123\n"), 0o600)
	cfg := Default()
	cfg.Record.Enabled = false
	cfg.Audit.Path = ""
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?width=160&height=120&fps=5"}}
	// Nothing listens there: the publisher retries in the background.
	cfg.LiveKit = LiveKit{URL: "ws://127.0.0.1:9", ViewerURL: "wss://lk.example", APIKey: "key1", APISecretFile: secret}
	srv, base := runServer(t, cfg)
	for _, tc := range []struct {
		role sauth.Role
		ttl  time.Duration
		code int
	}{
		{sauth.Expert, time.Hour, http.StatusOK},
		{sauth.Student, 2 * time.Minute, http.StatusOK},
		{sauth.Sonographer, time.Hour, http.StatusOK},
		{sauth.Publisher, time.Hour, http.StatusForbidden},
	} {
		code, body := do(t, "GET", base+"/api/sources/phantom/livekit", "", token(t, srv, tc.role, tc.ttl), "")
		if code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.role, code, body, tc.code)
			continue
		}
		if code != http.StatusOK {
			continue
		}
		var got struct{ URL, Room, Token string }
		json.Unmarshal([]byte(body), &got)
		v, err := auth.ParseAPIToken(got.Token)
		if err != nil || v.APIKey() != "key1" {
			t.Fatalf("%s: token %q: %v", tc.role, got.Token, err)
		}
		_, grants, err := v.Verify("a-livekit-api-secret-of-some-length-0123")
		if err != nil {
			t.Fatalf("%s: %v", tc.role, err)
		}
		g := grants.Video
		if got.URL != "wss://lk.example" || got.Room != "sonolive-phantom" || g.Room != "sonolive-phantom" || !g.RoomJoin ||
			!g.GetCanSubscribe() || g.GetCanPublish() || g.GetCanPublishData() || !strings.HasPrefix(grants.Identity, string(tc.role)+"-") {
			t.Errorf("%s: %+v grants %+v", tc.role, got, g)
		}
	}
	// Invites to the watch page: for experts and students, with LiveKit.
	sono := token(t, srv, sauth.Sonographer, time.Hour)
	for _, tc := range []struct {
		body string
		code int
		page string
	}{
		{`{"role":"student","via":"livekit"}`, http.StatusCreated, "/watch/phantom?token="},
		{`{"role":"expert","via":"livekit"}`, http.StatusCreated, "/watch/phantom?token="},
		{`{"role":"teacher","via":"livekit"}`, http.StatusBadRequest, ""},
		{`{"role":"expert","via":"carrier-pigeon"}`, http.StatusBadRequest, ""},
	} {
		code, body := do(t, "POST", base+"/api/sources/phantom/invites", "application/json", sono, tc.body)
		if code != tc.code || !strings.Contains(body, tc.page) {
			t.Errorf("invite %s: %d %s", tc.body, code, body)
		}
	}
	cfg.LiveKit = LiveKit{}
	srv2, base2 := runServer(t, cfg)
	if code, _ := do(t, "POST", base2+"/api/sources/phantom/invites", "application/json", token(t, srv2, sauth.Sonographer, time.Hour), `{"role":"expert","via":"livekit"}`); code != http.StatusBadRequest {
		t.Errorf("via livekit without LiveKit: %d, want 400", code)
	}
	if code, _ := do(t, "GET", base2+"/api/sources/phantom/livekit", "", token(t, srv2, sauth.Expert, time.Hour), ""); code != http.StatusNotFound {
		t.Errorf("no LiveKit configured: %d, want 404", code)
	}
}
