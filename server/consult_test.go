package server

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"sonolive/auth"
	"sonolive/internal/whepclient"
	"sonolive/replay"
)

func TestParseConsult(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		ok        bool
	}{
		{"pointer", `{"type":"pointer","x":10,"y":20,"rtp_ts":9}`, true},
		{"pointer on the edge", `{"type":"pointer","x":640,"y":480}`, true},
		{"pointer outside", `{"type":"pointer","x":641,"y":20}`, false},
		{"pointer without y", `{"type":"pointer","x":1}`, false},
		{"arrow", `{"type":"mark","id":"a-1","shape":"arrow","points":[[1,2],[3,4]]}`, true},
		{"arrow of three points", `{"type":"mark","id":"a","shape":"arrow","points":[[1,2],[3,4],[5,6]]}`, false},
		{"caliper", `{"type":"mark","id":"c","shape":"caliper","points":[[0,0],[640,480]]}`, true},
		{"freehand of one point", `{"type":"mark","id":"f","shape":"freehand","points":[[1,2]]}`, false},
		{"unknown shape", `{"type":"mark","id":"x","shape":"star","points":[[1,2],[3,4]]}`, false},
		{"id with a slash", `{"type":"mark","id":"../x","shape":"arrow","points":[[1,2],[3,4]]}`, false},
		{"clear all", `{"type":"clear"}`, true},
		{"clear one", `{"type":"clear","id":"a-1"}`, true},
		{"unknown type", `{"type":"freeze"}`, false},
		{"not json", `hello`, false},
		{"negative", `{"type":"pointer","x":-1,"y":2}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseConsult([]byte(tc.msg), 640, 480)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadConsult)) {
				t.Fatalf("got %+v, %v; want ok=%v", m, err, tc.ok)
			}
		})
	}
	if _, err := parseConsult([]byte(`{"type":"pointer","x":1,"y":1}`), 0, 0); !errors.Is(err, ErrBadConsult) {
		t.Fatalf("before the first frame: %v", err)
	}
	m, err := parseConsult([]byte(`{"type":"pointer","x":1,"y":1,"from":{"viewer":"v1","role":"sonographer"},"at":5}`), 640, 480)
	if err != nil || m.From != nil || m.At != 0 {
		t.Fatalf("a sender's own from/at kept: %+v %v", m, err)
	}
}

// An expert's mark reaches the sonographer's page stamped with who sent
// it and is kept in the recording's timeline; the sender does not get it
// back; a bad message and a flood go no further than the server.
func TestConsultForwarded(t *testing.T) {
	cfg := Default()
	cfg.Record.Dir = t.TempDir()
	cfg.Audit.Path = ""
	srv, base, stop := runServerWith(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(role auth.Role) *whepclient.Session {
		v, err := whepclient.Dial(ctx, base+"/whep/phantom", whepclient.Options{Token: token(t, srv, role, time.Hour), Consult: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close(context.Background()) })
		return v
	}
	sono, expert := dial(auth.Sonographer), dial(auth.Expert)
	for sono.Stats().Frames == 0 || expert.Stats().Frames == 0 {
		if ctx.Err() != nil {
			t.Fatal("no frames")
		}
		time.Sleep(20 * time.Millisecond)
	}
	send := func(msg string) {
		if err := expert.SendConsult(ctx, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"type":"pointer","x":-5,"y":1}`)
	send(`{"type":"mark","id":"m1","shape":"arrow","points":[[10,20],[100,200]],"rtp_ts":77,"from":{"viewer":"forged","role":"sonographer"}}`)
	var got consultMsg
	select {
	case b := <-sono.Consult():
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the mark never reached the sonographer")
	}
	if got.Type != "mark" || got.ID != "m1" || got.From == nil || got.From.Role != "expert" || strings.Contains(got.From.Viewer, "forged") || got.At == 0 || got.RTPTS != 77 {
		t.Fatalf("forwarded %+v", got)
	}
	select {
	case b := <-expert.Consult():
		t.Fatalf("the sender got its own message back: %s", b)
	case <-time.After(300 * time.Millisecond):
	}

	// A flood: far more than the per-viewer rate; the excess is dropped
	// at the server and counted.
	for i := 0; i < 2000; i++ {
		send(`{"type":"pointer","x":5,"y":5}`)
	}
	deadline := time.Now().Add(10 * time.Second)
	var dropped uint64
	for dropped == 0 && time.Now().Before(deadline) {
		for _, vs := range srv.sessions["phantom"].relay.Stats().Viewers {
			if vs.Role == "expert" {
				dropped = vs.ConsultDropped
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	n := 0
	for quiet := false; !quiet; {
		select {
		case <-sono.Consult():
			n++
		case <-time.After(500 * time.Millisecond):
			quiet = true
		}
	}
	for _, vs := range srv.sessions["phantom"].relay.Stats().Viewers {
		if vs.Role == "expert" {
			dropped = vs.ConsultDropped
		}
	}
	if dropped == 0 || n > 1000 {
		t.Fatalf("flood of 2000: %d forwarded, %d dropped", n, dropped)
	}
	t.Logf("flood of 2000 pointer moves: %d forwarded, %d dropped", n, dropped)

	stop()
	lib, err := replay.OpenLibrary(cfg.Record.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	list, _ := lib.List()
	if len(list) != 1 {
		t.Fatalf("recordings: %+v", list)
	}
	tl, _ := lib.File(list[0].ID, "timeline.jsonl")
	b, err := os.ReadFile(tl)
	if err != nil {
		t.Fatal(err)
	}
	marks, pointers := 0, 0
	for _, line := range strings.Split(string(b), "\n") {
		var e replay.Entry
		if json.Unmarshal([]byte(line), &e) != nil || e.Event != "consult" {
			continue
		}
		var m consultMsg
		if err := json.Unmarshal([]byte(e.Data["msg"]), &m); err != nil {
			t.Fatalf("consult event %q: %v", line, err)
		}
		switch m.Type {
		case "mark":
			marks++
			if m.ID != "m1" || m.From == nil || m.From.Role != "expert" || e.T < 0 {
				t.Errorf("recorded mark %+v at %v", m, e.T)
			}
		case "pointer":
			pointers++
		}
	}
	// The pointer flood was a second or two: at most 10 a second are kept.
	if marks != 1 || pointers < 1 || pointers > 40 {
		t.Fatalf("timeline holds %d marks and %d pointer positions", marks, pointers)
	}
}
