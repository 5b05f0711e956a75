package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"sonolive/auth"
	"sonolive/internal/whepclient"
)

// invite makes an invite as the sonographer's page does.
func invite(t *testing.T, base, sono, body string) (tok, id string) {
	t.Helper()
	code, resp := do(t, "POST", base+"/api/sources/phantom/invites", "application/json", sono, body)
	if code != http.StatusCreated {
		t.Fatalf("invite: %d %s", code, resp)
	}
	var inv struct{ Token, ID string }
	json.Unmarshal([]byte(resp), &inv)
	return inv.Token, inv.ID
}

func dialWS(t *testing.T, base, tok string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(base, "http", "ws", 1)+"/ws/phantom?token="+url.QueryEscape(tok), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func waitFrames(t *testing.T, v *whepclient.Session, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); v.Stats().Frames < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no frames: %+v", v.Stats())
		}
	}
}

// waitGone polls until the relay no longer has viewer id.
func waitGone(t *testing.T, srv *Server, id string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if _, ok := srv.mustSession("phantom").relay.Viewer(id); !ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("viewer %s still connected after %v", id, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Viewer ids are public (metrics, session events): an expert used to end the
// sonographer's own view with DELETE /whep/phantom/{id}. Only the token
// that made a viewer, or the sonographer, may change or end it.
func TestWHEPResourceBelongsToItsToken(t *testing.T) {
	srv, base := startServer(t)
	sono := token(t, srv, auth.Sonographer, time.Hour)
	expert, _ := invite(t, base, sono, `{"role":"expert"}`)
	other, _ := invite(t, base, sono, `{"role":"expert"}`)
	mine := dialViewer(t, base, sono)
	theirs := dialViewer(t, base, expert)
	waitFrames(t, mine, 5)
	frag := "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
	for _, tc := range []struct {
		name, method, res, tok, ctype, body string
		code                                int
	}{
		{"expert deletes the sonographer's viewer", "DELETE", mine.Resource(), expert, "", "", 403},
		{"expert patches the sonographer's viewer", "PATCH", mine.Resource(), expert, "application/trickle-ice-sdpfrag", frag, 403},
		{"another expert deletes this expert's viewer", "DELETE", theirs.Resource(), other, "", "", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, tc.res, tc.ctype, tc.tok, tc.body)
			if code != tc.code {
				t.Fatalf("%d %s, want %d", code, body, tc.code)
			}
		})
	}
	before := mine.Stats().Frames
	waitFrames(t, mine, before+10) // the sonographer's video still flows
	// The sonographer may end any viewer of the source.
	if code, body := do(t, "DELETE", theirs.Resource(), "", sono, ""); code != 200 {
		t.Fatalf("sonographer ends the expert's viewer: %d %s", code, body)
	}
}

// A link with ttl_s 2 used to keep receiving video and stats for as long
// as the tab stayed open. Now its viewer and its socket close at expiry,
// and the page is told why.
func TestExpiredLinkIsDisconnected(t *testing.T) {
	srv, base := startServer(t)
	sono := token(t, srv, auth.Sonographer, time.Hour)
	tok, _ := invite(t, base, sono, `{"role":"expert","ttl_s":2}`)
	v := dialViewer(t, base, tok)
	ws := dialWS(t, base, tok)
	waitFrames(t, v, 5)
	id := path.Base(v.Resource())
	waitGone(t, srv, id, 5*time.Second)
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got map[string]any
	for got == nil || got["type"] != "access" {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("socket closed without saying why: %v", err)
		}
		got = nil
		json.Unmarshal(b, &got)
	}
	if got["reason"] != "expired" {
		t.Fatalf("access event %v", got)
	}
	// Messages already queued may still come; then it closes.
	ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("socket still open 2 s after the access event")
			}
			break
		}
	}
	if code, body := do(t, "POST", base+"/whep/phantom", "application/sdp", tok, "v=0"); code != 401 || !strings.Contains(body, "expired") {
		t.Fatalf("expired link rejoins: %d %s", code, body)
	}
}

// The sonographer sees every live link of the source with what is connected
// on it, and revoking one closes its connections within a second.
func TestRevokeClosesWithinASecond(t *testing.T) {
	srv, base := startServer(t)
	sono := token(t, srv, auth.Sonographer, time.Hour)
	tok, id := invite(t, base, sono, `{"role":"expert","label":"Dr A"}`)
	v := dialViewer(t, base, tok)
	ws := dialWS(t, base, tok)
	waitFrames(t, v, 5)

	code, body := do(t, "GET", base+"/api/sources/phantom/invites", "", sono, "")
	var grants []auth.Grant
	if code != 200 || json.Unmarshal([]byte(body), &grants) != nil {
		t.Fatalf("list: %d %s", code, body)
	}
	var g *auth.Grant
	for i := range grants {
		if grants[i].ID == id {
			g = &grants[i]
		}
	}
	if g == nil || g.Label != "Dr A" || g.Role != auth.Expert || len(g.Connections) != 2 || strings.Contains(body, tok) {
		t.Fatalf("invite list %s", body)
	}
	if code, _ := do(t, "GET", base+"/api/sources/phantom/invites", "", tok, ""); code != 403 {
		t.Fatalf("expert lists invites: %d", code)
	}
	if code, _ := do(t, "DELETE", base+"/api/sources/phantom/invites/"+id, "", tok, ""); code != 403 {
		t.Fatalf("expert revokes: %d", code)
	}
	start := time.Now()
	if code, body := do(t, "DELETE", base+"/api/sources/phantom/invites/"+id, "", sono, ""); code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", code, body)
	}
	took := waitGone(t, srv, path.Base(v.Resource()), time.Second)
	ws.SetReadDeadline(start.Add(time.Second))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			break
		}
		if strings.Contains(string(b), `"type":"access"`) && !strings.Contains(string(b), `"reason":"revoked"`) {
			t.Fatalf("access event %s", b)
		}
	}
	if time.Since(start) > time.Second+100*time.Millisecond {
		t.Fatalf("socket open %v after revoking", time.Since(start))
	}
	t.Logf("viewer closed %v after the revoke", took.Round(time.Millisecond))
	if code, body := do(t, "POST", base+"/whep/phantom", "application/sdp", tok, "v=0"); code != 401 || !strings.Contains(body, "revoked") {
		t.Fatalf("revoked link rejoins: %d %s", code, body)
	}
	if code, _ := do(t, "DELETE", base+"/api/sources/phantom/invites/nope", "", sono, ""); code != 404 {
		t.Fatalf("revoke an unknown link: %d", code)
	}
	var own string
	for _, g := range srv.access.Grants("phantom") {
		if g.Role == auth.Sonographer {
			own = g.ID
		}
	}
	if code, _ := do(t, "DELETE", base+"/api/sources/phantom/invites/"+own, "", sono, ""); code != 400 {
		t.Fatalf("the sonographer revokes its own link: %d", code)
	}
}

// max_viewers used to be checked, then unlocked during negotiation, then
// inserted: parallel offers all passed. Now a place is held while
// negotiating. One link also holds at most auth.max_per_token viewers.
func TestViewerLimitsHoldUnderParallelOffers(t *testing.T) {
	dir := t.TempDir()
	cfg := Default()
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?seed=2&width=160&height=120"}}
	cfg.Record.Enabled = false
	cfg.Audit.Path = dir + "/audit.jsonl"
	cfg.Stream.MaxViewers = 3
	cfg.Auth.MaxPerToken = 2
	srv, base := runServer(t, cfg)
	sono := token(t, srv, auth.Sonographer, time.Hour)
	ctx := context.Background()
	var mu sync.Mutex
	ok, full, perToken := 0, 0, 0
	var wg sync.WaitGroup
	toks := []string{sono}
	for i := 0; i < 3; i++ {
		tk, _ := invite(t, base, sono, `{"role":"expert"}`)
		toks = append(toks, tk)
	}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(tok string) {
			defer wg.Done()
			v, err := whepclient.Dial(ctx, base+"/whep/phantom", whepclient.Options{Token: tok})
			mu.Lock()
			defer mu.Unlock()
			var he *whepclient.HTTPError
			switch {
			case err == nil:
				ok++
				t.Cleanup(func() { v.Close(ctx) })
			case errors.As(err, &he) && he.Code == 503:
				full++
			case errors.As(err, &he) && he.Code == 429 && strings.Contains(he.Body, "too many"):
				perToken++
			default:
				t.Errorf("offer: %v", err)
			}
		}(toks[i%2]) // two links, four offers each
	}
	wg.Wait()
	if n := srv.mustSession("phantom").relay.ViewerCount(); n > 3 || ok > 3 {
		t.Fatalf("%d viewers joined (%d answered) with max_viewers 3", n, ok)
	}
	if ok+full+perToken != 8 || ok == 0 {
		t.Fatalf("joined %d, full %d, per-token %d", ok, full, perToken)
	}
	t.Logf("8 parallel offers on 2 links: %d joined, %d refused (full), %d refused (per link)", ok, full, perToken)
}

// Trickle ICE: at most stream.MaxCandidates per viewer, and none for an
// address no peer can have.
func TestTrickleIsBounded(t *testing.T) {
	srv, base := startServer(t)
	sono := token(t, srv, auth.Sonographer, time.Hour)
	v := dialViewer(t, base, sono)
	cand := func(i int, addr string) string {
		return fmt.Sprintf("a=candidate:%d 1 udp 2130706431 %s %d typ host\r\n", i, addr, 40000+i)
	}
	patch := func(frag string) (int, string) {
		return do(t, "PATCH", v.Resource(), "application/trickle-ice-sdpfrag", sono, "a=mid:0\r\n"+frag)
	}
	for _, addr := range []string{"0.0.0.0", "224.0.0.251", "255.255.255.255", "not-an-address"} {
		if code, body := patch(cand(1, addr)); code != 400 {
			t.Fatalf("candidate for %s: %d %s", addr, code, body)
		}
	}
	var many strings.Builder
	for i := 0; i < 40; i++ {
		many.WriteString(cand(i, "192.0.2.1"))
	}
	if code, body := patch(many.String()); code != 429 {
		t.Fatalf("40 candidates in one fragment: %d %s", code, body)
	}
	for i := 0; ; i++ {
		code, body := patch(cand(i, "192.0.2.1"))
		if code == 429 {
			if i < 20 {
				t.Fatalf("refused after %d candidates", i)
			}
			break
		}
		if code != 204 || i > 40 {
			t.Fatalf("candidate %d: %d %s", i, code, body)
		}
	}
}

// runServer runs cfg on loopback until the test ends.
func runServer(t *testing.T, cfg Config) (*Server, string) {
	srv, base, _ := runServerWith(t, cfg, nil)
	return srv, base
}

// runServerWith runs cfg with open's detectors on loopback; stop ends it
// (idempotent; the test's cleanup calls it too) and fails the test if Run
// did.
func runServerWith(t *testing.T, cfg Config, open DetectorOpener) (srv *Server, base string, stop func()) {
	t.Helper()
	var log *zap.Logger
	if os.Getenv("SONOLIVE_TEST_LOG") != "" {
		log, _ = zap.NewDevelopment()
	}
	srv, err := New(cfg, log, open)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return srv, "http://" + ln.Addr().String(), stop
}

// dialViewer joins as a pion WHEP viewer, retrying while the source starts.
func dialViewer(t *testing.T, base, tok string) *whepclient.Session {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := whepclient.Dial(ctx, base+"/whep/phantom", whepclient.Options{Token: tok})
		if err == nil {
			t.Cleanup(func() { v.Close(context.Background()) })
			return v
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Secrets never leave: /healthz without a token says only "not ok", and
// the sonographer's token sees the source's state without its credentials.
// A link for one source lists only that source. Every reply carries the
// security headers.
func TestNothingLeaks(t *testing.T) {
	dir := t.TempDir()
	cfg := Default()
	cfg.Sources = []Source{
		{ID: "phantom", URL: "phantom://?width=160&height=120"},
		{ID: "cart", URL: "rtsp://admin:s3cr3t@127.0.0.1:1/stream?password=hunter2"},
	}
	cfg.Record.Enabled = false
	cfg.Audit.Path = dir + "/audit.jsonl"
	srv, base := runServer(t, cfg)
	var body string
	var code int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, body = do(t, "GET", base+"/healthz", "", "", "")
		if code == 503 || time.Now().After(deadline) {
			break
		}
	}
	if code != 503 || strings.TrimSpace(body) != "not ok" {
		t.Fatalf("healthz without a token: %d %q", code, body)
	}
	link, _, _ := srv.Link("cart", auth.Sonographer, time.Hour)
	u, _ := url.Parse(link)
	cartSono := u.Query().Get("token")
	_, body = do(t, "GET", base+"/healthz", "", cartSono, "")
	if !strings.Contains(body, "cart:") || strings.Contains(body, "s3cr3t") || strings.Contains(body, "hunter2") {
		t.Fatalf("healthz for the sonographer: %q", body)
	}
	_, body = do(t, "GET", base+"/api/sources", "", cartSono, "")
	if strings.Contains(body, "phantom") || !strings.Contains(body, "cart") {
		t.Fatalf("sources for a cart link: %s", body)
	}
	for _, p := range []string{"/live/cart", "/api/sources", "/healthz", "/static/app.js"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if h.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
			h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", p, h)
		}
	}
}

// An idle keep-alive connection used to be held forever; a refused request
// ends its connection rather than draining what the client still sends.
func TestIdleAndRefusedConnectionsClose(t *testing.T) {
	dir := t.TempDir()
	cfg := Default()
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?width=160&height=120"}}
	cfg.Record.Enabled = false
	cfg.Audit.Path = dir + "/audit.jsonl"
	cfg.HTTP.IdleTimeout = time.Second
	_, base := runServer(t, cfg)
	addr := strings.TrimPrefix(base, "http://")

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("data on an idle connection")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("idle keep-alive connection still open after 10 s")
	}
	t.Logf("idle connection closed after %v", time.Since(start).Round(time.Millisecond))

	// A large unauthenticated body: the 401 comes at once and the server
	// closes rather than reading on.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "POST /whep/phantom HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 10000000\r\n\r\nv=0\r\n")
	br2 := bufio.NewReader(c2)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err = http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !resp.Close {
		t.Fatalf("refused request: %d, close %v", resp.StatusCode, resp.Close)
	}
}

// Beyond loopback the server speaks HTTPS even with no certificate given:
// it makes one, keeps it (the same fingerprint next start) and links say
// https. Plain HTTP there needs insecure_http; with no certificate
// directory it refuses to start.
func TestTLSByDefaultBeyondLoopback(t *testing.T) {
	dir := t.TempDir()
	newCfg := func() Config {
		cfg := Default()
		cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?width=160&height=120"}}
		cfg.Record.Enabled = false
		cfg.Audit.Path = ""
		cfg.TLS.SelfSignedDir = filepath.Join(dir, "tls")
		return cfg
	}
	wide := &net.TCPAddr{IP: net.IPv4zero, Port: 8443}
	prints := []string{}
	for i := 0; i < 2; i++ {
		srv, err := New(newCfg(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.SetAddr(wide); err != nil {
			t.Fatal(err)
		}
		link, _, _ := srv.Link("phantom", auth.Sonographer, time.Minute)
		if !strings.HasPrefix(link, "https://") || srv.TLSFingerprint() == "" {
			t.Fatalf("beyond loopback: link %s, fingerprint %q", link, srv.TLSFingerprint())
		}
		prints = append(prints, srv.TLSFingerprint())
		srv.apiClose()
	}
	if prints[0] != prints[1] {
		t.Fatalf("the certificate changed between starts: %v", prints)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tls", "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	// It really serves TLS with that certificate.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(newCfg(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	defer func() { cancel(); <-done }()
	port := ln.Addr().(*net.TCPAddr).Port
	var conn *tls.Conn
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		conn, err = tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
	conn.Close()
	if got := strings.ToUpper(hex.EncodeToString(sum[:])); strings.ReplaceAll(prints[0], ":", "") != got {
		t.Fatalf("served %s, printed %s", got, prints[0])
	}

	cfg := newCfg()
	cfg.TLS.InsecureHTTP = true
	srv2, _ := New(cfg, nil, nil)
	if err := srv2.SetAddr(wide); err != nil || srv2.TLSFingerprint() != "" {
		t.Fatalf("insecure_http: %v %q", err, srv2.TLSFingerprint())
	}
	srv2.apiClose()
	cfg = newCfg()
	cfg.TLS.SelfSignedDir = ""
	srv3, _ := New(cfg, nil, nil)
	if err := srv3.SetAddr(wide); !errors.Is(err, ErrPlainHTTP) {
		t.Fatalf("no cert, no dir, not insecure: %v", err)
	}
	srv3.apiClose()
	// Loopback stays plain HTTP: the demo on http://localhost.
	srv4, _ := New(newCfg(), nil, nil)
	if err := srv4.SetAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}); err != nil || srv4.TLSFingerprint() != "" {
		t.Fatalf("loopback: %v %q", err, srv4.TLSFingerprint())
	}
	srv4.apiClose()
}
