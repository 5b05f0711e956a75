package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sonolive/auth"
	"sonolive/ice"
	"sonolive/internal/whepclient"
)

// startServer runs a server on loopback with a small phantom and no AI
// (the AI path has its own tests; here the HTTP surface is under test).
func startServer(t *testing.T) (*Server, string) {
	srv, base, _ := startServerIn(t, t.TempDir())
	return srv, base
}

// startServerIn records into dir; stop ends the server (also at cleanup).
func startServerIn(t *testing.T, dir string) (srv *Server, base string, stop func()) {
	t.Helper()
	cfg := Default()
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?seed=2&width=320&height=240"}}
	cfg.Stream.BitrateKbps = 600
	cfg.Record.Dir = dir
	cfg.Record.BetweenExams = true // recording mechanics, not exams
	cfg.Record.Segment = time.Second
	cfg.Audit.Path = filepath.Join(dir, "audit.jsonl")
	srv, base, stop = runServerWith(t, cfg, nil)
	// Wait for the first frames so tests see a live session.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("server not healthy within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return srv, base, stop
}

func token(t *testing.T, s *Server, role auth.Role, ttl time.Duration) string {
	t.Helper()
	link, _, err := s.Link("phantom", role, ttl)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(link)
	return u.Query().Get("token")
}

func do(t *testing.T, method, u, ctype, tok, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b)
}

func TestAccessAndBadInput(t *testing.T) {
	srv, base := startServer(t)
	sono := token(t, srv, auth.Sonographer, time.Hour)
	expert := token(t, srv, auth.Expert, time.Hour)
	expired := token(t, srv, auth.Expert, time.Second)
	other, _ := auth.NewSigner("")
	forged, _, _ := other.Issue(auth.Sonographer, "phantom", time.Hour)
	time.Sleep(1100 * time.Millisecond) // let `expired` expire

	const sdpType, jsonType = "application/sdp", "application/json"
	for _, tc := range []struct {
		name, method, path, ctype, tok, body string
		code                                 int
		msg                                  string
	}{
		{"whep no token", "POST", "/whep/phantom", sdpType, "", "v=0", 401, "missing token"},
		{"whep forged", "POST", "/whep/phantom", sdpType, forged, "v=0", 401, "invalid token"},
		{"whep garbage token", "POST", "/whep/phantom", sdpType, "abc.def", "v=0", 401, "invalid token"},
		{"whep expired", "POST", "/whep/phantom", sdpType, expired, "v=0", 401, "token expired"},
		{"whep unknown source", "POST", "/whep/nope", sdpType, expert, "v=0", 404, "unknown source"},
		{"whep wrong type", "POST", "/whep/phantom", "text/plain", expert, "v=0", 415, "application/sdp"},
		{"whep garbage sdp", "POST", "/whep/phantom", sdpType, expert, "hello", 400, "bad SDP"},
		{"whep too large", "POST", "/whep/phantom", sdpType, expert, strings.Repeat("a", maxSDP+1), 413, "larger"},
		{"patch unknown viewer", "PATCH", "/whep/phantom/v99", "application/trickle-ice-sdpfrag", expert, "a=candidate:1 1 udp 1 127.0.0.1 9 typ host", 404, "no such viewer"},
		{"delete unknown viewer", "DELETE", "/whep/phantom/v99", "", expert, "", 404, "no such viewer"},
		{"invite as expert", "POST", "/api/sources/phantom/invites", jsonType, expert, `{}`, 403, "may not"},
		{"invite bad json", "POST", "/api/sources/phantom/invites", jsonType, sono, `{"role":`, 400, "bad JSON"},
		{"invite unknown field", "POST", "/api/sources/phantom/invites", jsonType, sono, `{"rol":"expert"}`, 400, "unknown field"},
		{"invite bad role", "POST", "/api/sources/phantom/invites", jsonType, sono, `{"role":"admin"}`, 400, "role"},
		{"invite ttl too long", "POST", "/api/sources/phantom/invites", jsonType, sono, `{"ttl_s":999999}`, 400, "ttl_s"},
		{"invite ok", "POST", "/api/sources/phantom/invites", jsonType, sono, `{"role":"expert","ttl_s":600}`, 201, "/expert/phantom?token="},
		{"overlay as expert", "PUT", "/api/sources/phantom/overlay", jsonType, expert, `{"burn_in":false}`, 403, "may not"},
		{"overlay missing field", "PUT", "/api/sources/phantom/overlay", jsonType, sono, `{}`, 400, "burn_in"},
		{"overlay wrong type", "PUT", "/api/sources/phantom/overlay", jsonType, sono, `{"burn_in":"no"}`, 400, "bad JSON"},
		{"sources no token", "GET", "/api/sources", "", "", "", 401, "missing token"},
		{"sources", "GET", "/api/sources", "", expert, "", 200, `"state":"live"`},
		{"ws no token", "GET", "/ws/phantom", "", "", "", 401, "missing token"},
		{"healthz", "GET", "/healthz", "", "", "", 200, "ok"},
		{"metrics", "GET", "/metrics", "", "", "", 200, "sonolive_"},
		{"page", "GET", "/expert/phantom", "", "", "", 200, "<!doctype html>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, base+tc.path, tc.ctype, tc.tok, tc.body)
			if code != tc.code || !strings.Contains(strings.ToLower(body), strings.ToLower(tc.msg)) {
				t.Fatalf("%s %s: %d %q, want %d containing %q", tc.method, tc.path, code, body, tc.code, tc.msg)
			}
		})
	}
}

// wsRead returns the next message of the given type.
func wsRead(t *testing.T, c *websocket.Conn, typ string) map[string]any {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %q: %v", typ, err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("bad message %s: %v", b, err)
		}
		if m["type"] == typ {
			return m
		}
	}
}

func TestSessionEndToEnd(t *testing.T) {
	srv, base := startServer(t)
	sono := token(t, srv, auth.Sonographer, time.Hour)
	ctx := context.Background()

	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(base, "http", "ws", 1)+"/ws/phantom?token="+url.QueryEscape(sono), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if st := wsRead(t, ws, "stats"); st["state"] != "live" {
		t.Fatalf("first stats: %v", st)
	}

	// The sonographer invites an expert; the expert's token plays WHEP.
	code, body := do(t, "POST", base+"/api/sources/phantom/invites", "application/json", sono, `{"role":"expert"}`)
	if code != http.StatusCreated {
		t.Fatalf("invite: %d %s", code, body)
	}
	var inv struct{ URL, Token string }
	json.Unmarshal([]byte(body), &inv)
	viewer, err := whepclient.Dial(ctx, base+"/whep/phantom", whepclient.Options{Token: inv.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer viewer.Close(ctx)
	if ev := wsRead(t, ws, "viewer"); ev["event"] != "joined" || ev["role"] != "expert" {
		t.Fatalf("viewer event: %v", ev)
	}
	deadline := time.Now().Add(10 * time.Second)
	for viewer.Stats().Matched < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("no frames with metadata: %+v", viewer.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Burn-in on (the default is off): the pages hear it and the metadata
	// says so.
	if code, body := do(t, "PUT", base+"/api/sources/phantom/overlay", "application/json", sono, `{"burn_in":true}`); code != 200 {
		t.Fatalf("overlay: %d %s", code, body)
	}
	if ev := wsRead(t, ws, "overlay"); ev["burn_in"] != true {
		t.Fatalf("overlay event: %v", ev)
	}
	// Frames already queued for the viewer still carry the old value.
	var meta struct {
		BurnedIn *bool  `json:"burned_in"`
		RTPTS    uint32 `json:"rtp_ts"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := json.Unmarshal(viewer.LastMetadata(), &meta)
		if err == nil && meta.BurnedIn != nil && *meta.BurnedIn && meta.RTPTS != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metadata 10 s after burn-in on: %s (%v)", viewer.LastMetadata(), err)
		}
	}

	// Glass-to-glass reports reach the HUD; junk does not kill the socket.
	ws.WriteMessage(websocket.TextMessage, []byte(`not json`))
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"g2g","samples_ms":[80,90,100,-5,99999]}`))
	for i := 0; ; i++ {
		st := wsRead(t, ws, "stats")
		g := st["g2g_ms"].(map[string]any)
		if g["n"].(float64) == 3 && g["p50"].(float64) == 90 {
			if st["viewers"].(float64) != 1 || st["burn_in"] != true {
				t.Fatalf("stats: %v", st)
			}
			break
		}
		if i > 3 {
			t.Fatalf("g2g not in stats: %v", st)
		}
	}

	// Leaving with DELETE is announced and frees the viewer.
	if err := viewer.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := wsRead(t, ws, "viewer"); ev["event"] != "left" {
		t.Fatalf("leave event: %v", ev)
	}
	if n := srv.mustSession("phantom").relay.ViewerCount(); n != 0 {
		t.Fatalf("%d viewers after leave", n)
	}
	_, metricsBody := do(t, "GET", base+"/metrics", "", "", "")
	for _, want := range []string{`sonolive_stage_latency_seconds_bucket{source="phantom",stage="encode"`, `sonolive_glass_to_glass_seconds_count{source="phantom"} 3`, `sonolive_recording{source="phantom"} 1`} {
		if !strings.Contains(metricsBody, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	for _, tc := range []struct {
		name, yaml, err string
		check           func(Config) bool
	}{
		{"empty is defaults", "", "", func(c Config) bool {
			return c.Listen == "127.0.0.1:8080" && len(c.Sources) == 1 && !c.Stream.BurnIn && c.Record.Enabled
		}},
		{"durations", "stream:\n  keyframe_interval: 1s\nauth:\n  invite_ttl: 30m\n", "", func(c Config) bool {
			return c.Stream.KeyframeInterval == time.Second && c.Auth.InviteTTL == 30*time.Minute
		}},
		{"two sources", "sources:\n  - {id: a, url: 'phantom://'}\n  - {id: b, url: /dev/video0, preset: thyroid}\n", "", func(c Config) bool {
			return len(c.Sources) == 2 && c.Sources[1].Preset == "thyroid"
		}},
		{"unknown key", "listn: ':1'\n", "not found", nil},
		{"bad id", "sources:\n  - {id: 'A B', url: x}\n", "source id", nil},
		{"dup id", "sources:\n  - {id: a, url: x}\n  - {id: a, url: y}\n", "twice", nil},
		{"short secret", "auth:\n  secret: abc\n", "at least 16", nil},
		{"half tls", "tls:\n  cert: c.pem\n", "both", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(write(tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("err %v, cfg %+v", err, c)
			}
		})
	}
}

// The example file documents every default; it must stay equal to them.
func TestExampleConfigIsTheDefault(t *testing.T) {
	c, err := Load("../sonolive.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Sources[0].Masks, want.Sources[0].Egress = []string{}, []Egress{}
	want.WebRTC.NAT1To1IPs, want.WebRTC.ICEServers = []string{}, []ice.Server{}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("sonolive.example.yaml differs from Default():\n got %+v\nwant %+v", c, want)
	}
}

// With a certificate the server speaks HTTPS, and links say https.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, cert, key)
	cfg := Default()
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?width=160&height=120"}}
	cfg.TLS = TLSConfig{Cert: cert, Key: key}
	cfg.Record.Enabled = false
	cfg.Audit.Path = filepath.Join(dir, "audit.jsonl")
	srv, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetAddr(ln.Addr()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	defer func() { cancel(); <-done }()
	link, _, err := srv.Link("phantom", auth.Expert, time.Minute)
	if err != nil || !strings.HasPrefix(link, "https://localhost:") {
		t.Fatalf("link %q, %v", link, err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get("https://" + ln.Addr().String() + "/expert/phantom")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("status %d, tls %v", resp.StatusCode, resp.TLS != nil)
	}
}

func writeSelfSigned(t *testing.T, certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

func TestRecordingsAPI(t *testing.T) {
	dir := t.TempDir()
	srv, base, stop := startServerIn(t, dir)
	sono := token(t, srv, auth.Sonographer, time.Hour)
	student := token(t, srv, auth.Student, time.Hour)
	list := func(base, tok string) []map[string]any {
		code, body := do(t, "GET", base+"/api/recordings", "", tok, "")
		var out []map[string]any
		if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("list: %d %s", code, body)
		}
		return out
	}
	// Record until the live recording reports 2.5 s.
	var recs []map[string]any
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		recs = list(base, student)
		if len(recs) != 1 || recs[0]["status"] != "recording" {
			t.Fatalf("while live: %v", recs)
		}
		if d, _ := recs[0]["duration_s"].(float64); d >= 2.5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live recording did not reach 2.5 s in 30 s: %v", recs)
		}
	}
	live := recs[0]["id"].(string)
	if code, body := do(t, "DELETE", base+"/api/recordings/"+live, "", sono, ""); code != http.StatusConflict {
		t.Fatalf("delete while recording: %d %s", code, body)
	}
	stop() // ends the session: the recording is finished

	srv2, base2, _ := startServerIn(t, dir)
	sono2 := token(t, srv2, auth.Sonographer, time.Hour)
	expert2 := token(t, srv2, auth.Expert, time.Hour)
	student2 := token(t, srv2, auth.Student, time.Hour)
	teacher2 := token(t, srv2, auth.Teacher, time.Hour)
	var done map[string]any
	for _, m := range list(base2, student2) {
		if m["id"] == live {
			done = m
		}
	}
	if done == nil || done["status"] != "complete" || done["duration_s"].(float64) < 2 || done["width"].(float64) != 320 {
		t.Fatalf("finished recording: %v", done)
	}
	u := base2 + "/api/recordings/" + live
	for _, tc := range []struct {
		name, method, path, tok string
		code                    int
		want                    string
	}{
		{"meta", "GET", "", student2, 200, `"lesion_events"`},
		{"meta from the old server's token", "GET", "", student, 401, "invalid token"},
		{"no token", "GET", "", "", 401, "missing token"},
		{"timeline", "GET", "/timeline.jsonl", student2, 200, `"t":0`},
		{"thumb", "GET", "/thumb.jpg", student2, 200, ""},
		{"other file", "GET", "/meta.json", student2, 404, "no such recording"},
		{"bad id", "GET", "/../../etc/passwd", student2, 404, ""},
		{"a live-view invite does not open the archive", "GET", "", expert2, 403, "may not"},
		{"nor its video", "GET", "/video.mp4", expert2, 403, "may not"},
		{"student cannot delete", "DELETE", "", student2, 403, "may not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, u+tc.path, "", tc.tok, "")
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("%d %.200q, want %d with %q", code, body, tc.code, tc.want)
			}
		})
	}
	for _, bad := range []string{"nope", "20261123T170102Z-phantom-zzzz", "20261123T170102Z-other-abcd"} {
		code, _ := do(t, "GET", base2+"/api/recordings/"+bad, "", student2, "")
		if code != 404 && code != 403 {
			t.Errorf("GET %s: %d", bad, code)
		}
	}
	// Seeking needs range requests.
	if code, body := do(t, "GET", base2+"/api/recordings", "", expert2, ""); code != 403 {
		t.Fatalf("expert lists the archive: %d %s", code, body)
	}
	req, _ := http.NewRequest("GET", u+"/video.mp4?token="+url.QueryEscape(student2), nil)
	req.Header.Set("Range", "bytes=0-99")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || len(b) != 100 || string(b[4:8]) != "ftyp" {
		t.Fatalf("range: %d, %d bytes %q", resp.StatusCode, len(b), b[:8])
	}
	if code, body := do(t, "DELETE", u, "", teacher2, ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	_ = sono2
	if code, _ := do(t, "GET", u, "", student2, ""); code != 404 {
		t.Fatalf("after delete: %d", code)
	}
}

// A library directory that cannot be made turns recording off; the live
// session still runs.
func TestUnwritableLibraryStillServes(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, []byte("x"), 0o600)
	cfg := Default()
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?width=160&height=120"}}
	cfg.Record.Dir = filepath.Join(blocker, "recordings") // under a file: cannot exist
	cfg.Audit.Path = ""
	srv, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if srv.lib != nil {
		t.Fatal("library opened under a file")
	}
	w := httptest.NewRecorder()
	tok, _, _ := srv.signer.Issue(auth.Student, "phantom", time.Minute)
	r := httptest.NewRequest("GET", "/api/recordings", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	srv.Handler().ServeHTTP(w, r)
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != "[]" {
		t.Fatalf("recordings with recording off: %d %s", w.Code, w.Body.String())
	}
	srv.apiClose()
}

// A browser that offers VP8 but no H.264 (Firefox without OpenH264) plays
// the VP8 fallback; where the fallback is off it gets a 400 that names the
// fix, which the pages show instead of retrying.
func TestOfferWithoutH264(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fallback bool
	}{
		{"fallback on: plays VP8", true},
		{"fallback off: 400 naming the fix", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			cfg.Record.Enabled = false
			cfg.Audit.Path = ""
			cfg.Stream.VP8Fallback = tc.fallback
			srv, base := runServer(t, cfg)
			tok := token(t, srv, auth.Expert, time.Hour)
			v, err := whepclient.Dial(context.Background(), base+"/whep/phantom", whepclient.Options{Token: tok, VP8: true})
			if !tc.fallback {
				var he *whepclient.HTTPError
				if !errors.As(err, &he) || he.Code != http.StatusBadRequest || !strings.Contains(he.Body, "OpenH264") {
					t.Fatalf("got %v, want a 400 naming OpenH264", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close(context.Background())
			for deadline := time.Now().Add(20 * time.Second); v.Stats().Keyframes == 0 || v.Stats().Matched < 10; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("VP8 viewer: %+v", v.Stats())
				}
			}
			if l := srv.mustSession("phantom").relay.Stats().Layers; len(l) != 1 || l[0].Codec != "vp8" {
				t.Fatalf("layers %+v", l)
			}
		})
	}
}
