package server

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"sonolive/auth"
	"sonolive/internal/whepclient"
)

// Sources added while the server runs get a session of their own (a
// viewer with the returned link watches it), and removing one closes its
// viewers and leaves no goroutine behind. Only an admin token may do
// either, and bad requests are refused by name.
func TestSourcesAtRunTime(t *testing.T) {
	srv, base := startServer(t)
	admin, _, err := srv.AdminToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sono := token(t, srv, auth.Sonographer, time.Hour)
	const body = `{"id":"cart2","url":"phantom://?seed=3&width=160&height=120&fps=15"}`
	for _, tc := range []struct {
		name, method, path, tok, body string
		want                          int
	}{
		{"no token", "POST", "/api/sources", "", body, 401},
		{"sonographer token", "POST", "/api/sources", sono, body, 403},
		{"unknown kind", "POST", "/api/sources", admin, `{"id":"x","url":"nope://a"}`, 400},
		{"bad id", "POST", "/api/sources", admin, `{"id":"X Y","url":"phantom://"}`, 400},
		{"bad crop", "POST", "/api/sources", admin, `{"id":"x","url":"phantom://","crop":"1,2"}`, 400},
		{"unknown field", "POST", "/api/sources", admin, `{"id":"x","url":"phantom://","rtsp":"y"}`, 400},
		{"taken id", "POST", "/api/sources", admin, `{"id":"phantom","url":"phantom://"}`, 409},
		{"remove unknown", "DELETE", "/api/sources/nope", admin, "", 404},
		{"remove as sonographer", "DELETE", "/api/sources/phantom", sono, "", 403},
	} {
		if code, msg := do(t, tc.method, base+tc.path, "application/json", tc.tok, tc.body); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, msg, tc.want)
		}
	}
	// An invite cannot mint an admin.
	if code, _ := do(t, "POST", base+"/api/sources/phantom/invites", "application/json", sono, `{"role":"admin"}`); code != 400 {
		t.Errorf("admin invite: %d", code)
	}

	goroutines := func() int { runtime.GC(); return runtime.NumGoroutine() }
	var before int
	for round := 0; round < 3; round++ {
		code, out := do(t, "POST", base+"/api/sources", "application/json", admin, body)
		if code != http.StatusCreated {
			t.Fatalf("add: %d %s", code, out)
		}
		var added addSourceResponse
		if err := json.Unmarshal([]byte(out), &added); err != nil || added.ID != "cart2" || !strings.Contains(added.URL, "/live/cart2?token=") {
			t.Fatalf("add: %s %v", out, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var v *whepclient.Session
		for v == nil {
			if v, err = whepclient.Dial(ctx, base+"/whep/cart2", whepclient.Options{Token: added.Token}); err != nil {
				if ctx.Err() != nil {
					t.Fatal(err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		for v.Stats().Frames < 5 {
			if ctx.Err() != nil {
				t.Fatalf("no frames from the added source: %+v", v.Stats())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code, _ := do(t, "GET", base+"/api/sources", "", admin, ""); code != 200 {
			t.Fatalf("list as admin: %d", code)
		}
		if code, out := do(t, "DELETE", base+"/api/sources/cart2", "", admin, ""); code != http.StatusNoContent {
			t.Fatalf("remove: %d %s", code, out)
		}
		for v.Stats().State != "closed" && v.Stats().State != "failed" && v.Stats().State != "disconnected" {
			if ctx.Err() != nil {
				t.Fatalf("the viewer of a removed source is still %s", v.Stats().State)
			}
			time.Sleep(100 * time.Millisecond)
		}
		v.Close(context.Background())
		cancel()
		if code, _ := do(t, "POST", base+"/whep/cart2", "application/sdp", added.Token, "v=0"); code != http.StatusNotFound {
			t.Errorf("WHEP on a removed source: %d", code)
		}
		if round == 0 {
			// What the first round leaves (pools, first-use caches) is no
			// leak; what each further round adds would be.
			time.Sleep(time.Second)
			before = goroutines()
		}
	}
	// The configured source is untouched.
	if _, ok := srv.sessions.get("phantom"); !ok {
		t.Fatal("the configured source went away")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := goroutines()
		if after <= before+5 {
			t.Logf("goroutines: %d after the first removal, %d after three add/remove rounds", before, after)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d after the first removal, %d after three rounds", before, after)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
