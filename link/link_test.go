package link

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// boxHandler answers with what the box sees, and echoes lines on an
// upgraded connection (as a WebSocket would be).
func boxHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/who", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s %s", name, r.RemoteAddr, r.Host, r.Header.Get(ClientAddrHeader))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(strings.ToUpper(line))
			brw.Flush()
		}
	})
	return mux
}

func startHub(t *testing.T, cfg HubConfig) (*Hub, *httptest.Server) {
	h := NewHub(cfg)
	ts := httptest.NewTLSServer(h)
	t.Cleanup(func() { h.Close(); ts.Close() })
	return h, ts
}

func startBox(t *testing.T, ts *httptest.Server, name, token string) *Box {
	tc := &tls.Config{RootCAs: ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "example.com"}
	b, err := NewBox(BoxConfig{Hub: ts.URL, Name: name, Token: token, TLS: tc,
		Server: func() *http.Server { return &http.Server{Handler: boxHandler(name)} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

func waitState(t *testing.T, b *Box, state string) BoxStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := b.Stats()
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("link state %+v, want %s", st, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, ts *httptest.Server, host, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", ts.URL+path, nil)
	req.Host = host
	req.Header.Set(ClientAddrHeader, "6.6.6.6:666") // forged: the hub overwrites it
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestHubRoutesExpertsToLinkedBoxes(t *testing.T) {
	h, ts := startHub(t, HubConfig{Tokens: map[string]string{"clinic1": "tok1", "clinic2": "tok2"}, Domain: "hub.test", Default: "clinic1"})
	startBox(t, ts, "clinic1", "tok1")
	b2 := startBox(t, ts, "clinic2", "tok2")
	waitState(t, b2, "up")
	for deadline := time.Now().Add(5 * time.Second); len(h.Linked()) < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	for _, tc := range []struct {
		host, want string
	}{
		{"clinic2.hub.test", "clinic2"},
		{"CLINIC2.hub.test.:443", "clinic2"},
		{"clinic1.hub.test", "clinic1"},
		{"10.0.0.1", "clinic1"}, // the default box
		{"a.b.hub.test", "clinic1"},
	} {
		code, body := get(t, ts, tc.host, "/who")
		f := strings.Fields(body)
		if code != 200 || len(f) != 3 || f[0] != tc.want || strings.HasPrefix(f[1], "6.6.6.6") || !strings.HasPrefix(f[1], "127.0.0.1:") {
			t.Errorf("%s: %d %q, want box %s seeing the expert's own address", tc.host, code, body, tc.want)
		}
	}
	// Upgraded connections (the pages' WebSocket) pass both ways.
	conn, err := tls.Dial("tcp", ts.Listener.Addr().String(), ts.Client().Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /echo HTTP/1.1\r\nHost: clinic2.hub.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the hub: %v %v", resp, err)
	}
	for _, line := range []string{"freeze\n", "mark 1 2\n"} {
		fmt.Fprint(conn, line)
		got, err := br.ReadString('\n')
		if err != nil || got != strings.ToUpper(line) {
			t.Fatalf("echo %q: %q %v", line, got, err)
		}
	}
}

func TestHubRefusesWrongTokenAndUnlinkedBox(t *testing.T) {
	_, ts := startHub(t, HubConfig{Tokens: map[string]string{"clinic1": "tok1"}, Default: "clinic1"})
	for _, tc := range []struct{ name, token string }{{"clinic1", "tok2"}, {"clinic9", "tok1"}} {
		b := startBox(t, ts, tc.name, tc.token)
		if st := waitState(t, b, "retrying"); !strings.Contains(st.LastError, ErrUnauthorized.Error()) || st.Connects != 0 {
			t.Errorf("%s/%s: %+v", tc.name, tc.token, st)
		}
	}
	if code, _ := get(t, ts, "x", "/who"); code != http.StatusBadGateway {
		t.Errorf("no box linked: %d, want 502", code)
	}
}

// When the hub drops the link (a restart, a firewall timing the
// connection out), the box redials and experts reach it again.
func TestBoxRedialsADroppedLink(t *testing.T) {
	h, ts := startHub(t, HubConfig{Tokens: map[string]string{"clinic1": "tok1"}, Default: "clinic1"})
	b := startBox(t, ts, "clinic1", "tok1")
	waitState(t, b, "up")
	h.Close()
	deadline := time.Now().Add(10 * time.Second)
	for b.Stats().Connects < 2 || len(h.Linked()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not relinked: %+v", b.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := get(t, ts, "x", "/who"); code != 200 || !strings.HasPrefix(body, "clinic1 ") {
		t.Fatalf("after the relink: %d %q", code, body)
	}
}

func TestNewBoxChecksItsConfig(t *testing.T) {
	srv := func() *http.Server { return &http.Server{} }
	for _, cfg := range []BoxConfig{
		{Hub: "ftp://hub", Name: "a", Token: "t", Server: srv},
		{Hub: "https://", Name: "a", Token: "t", Server: srv},
		{Hub: "https://hub", Token: "t", Server: srv},
		{Hub: "https://hub", Name: "a", Server: srv},
		{Hub: "https://hub", Name: "a", Token: "t"},
	} {
		if _, err := NewBox(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}
