package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"

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
		{"verdict", `{"type":"verdict","track_id":3,"verdict":"agree","category":"BI-RADS 4a","note":"irregular margin"}`, true},
		{"verdict on track 0", `{"type":"verdict","track_id":0,"verdict":"unsure"}`, true},
		{"verdict without a track", `{"type":"verdict","verdict":"agree"}`, false},
		{"verdict of another word", `{"type":"verdict","track_id":3,"verdict":"maybe"}`, false},
		{"unknown category", `{"type":"verdict","track_id":3,"verdict":"agree","category":"BI-RADS 6"}`, false},
		{"capture", `{"type":"capture","rtp_ts":0}`, true},
		{"capture without the frame", `{"type":"capture"}`, false},
		{"voice open", `{"type":"voice","mic":"open"}`, true},
		{"voice push to talk, pressed", `{"type":"voice","mic":"talking"}`, true},
		{"voice of another state", `{"type":"voice","mic":"loud"}`, false},
		{"voice without a state", `{"type":"voice"}`, false},
		{"note too long", `{"type":"verdict","track_id":3,"verdict":"agree","note":"` + strings.Repeat("x", 281) + `"}`, false},
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
	m, err = parseConsult([]byte("{\"type\":\"verdict\",\"track_id\":1,\"verdict\":\"disagree\",\"note\":\" cyst\\u0007\\n \"}"), 640, 480)
	if err != nil || m.Note != "cyst" {
		t.Fatalf("note not cleaned: %q %v", m.Note, err)
	}
}

// An expert's mark reaches the sonographer's page stamped with who sent
// it and is kept in the recording's timeline; the sender does not get it
// back; a bad message and a flood go no further than the server.
func TestConsultForwarded(t *testing.T) {
	cfg := Default()
	cfg.Record.Dir = t.TempDir()
	cfg.Record.BetweenExams = true // recording mechanics, not exams
	cfg.Audit.Path = ""
	srv, base, stop := runServerWith(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(role auth.Role) *whepclient.Session {
		return consultViewer(t, ctx, base, token(t, srv, role, time.Hour))
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
	for got.Type != "mark" {
		select {
		case b := <-sono.Consult():
			got = consultMsg{}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("the mark never reached the sonographer")
		}
	}
	if got.Type != "mark" || got.ID != "m1" || got.From == nil || got.From.Role != "expert" || strings.Contains(got.From.Viewer, "forged") || got.At == 0 || got.RTPTS != 77 {
		t.Fatalf("forwarded %+v", got)
	}
	for quiet := false; !quiet; {
		select {
		case b := <-expert.Consult():
			var m consultMsg
			if json.Unmarshal(b, &m) == nil && m.Type != "presence" {
				t.Fatalf("the sender got its own message back: %s", b)
			}
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}

	// A verdict reaches the sonographer now and a page that joins later
	// when its consult channel opens.
	send(`{"type":"verdict","track_id":2,"verdict":"disagree","category":"BI-RADS 3"}`)
	wantVerdict := func(v *whepclient.Session, who string) {
		t.Helper()
		for {
			select {
			case b := <-v.Consult():
				var m consultMsg
				if json.Unmarshal(b, &m) == nil && m.Type == "verdict" {
					if m.TrackID == nil || *m.TrackID != 2 || m.Verdict != "disagree" || m.Category != "BI-RADS 3" || m.From.Role != "expert" {
						t.Fatalf("%s got %+v", who, m)
					}
					return
				}
			case <-ctx.Done():
				t.Fatalf("%s never got the verdict", who)
			}
		}
	}
	wantVerdict(sono, "the sonographer")
	wantVerdict(dial(auth.Sonographer), "a page joining later")

	// A flood: far more than the per-viewer rate; the excess is dropped
	// at the server and counted.
	for i := 0; i < 2000; i++ {
		send(`{"type":"pointer","x":5,"y":5}`)
	}
	deadline := time.Now().Add(10 * time.Second)
	var dropped uint64
	for dropped == 0 && time.Now().Before(deadline) {
		for _, vs := range srv.mustSession("phantom").relay.Stats().Viewers {
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
	for _, vs := range srv.mustSession("phantom").relay.Stats().Viewers {
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

// A freeze asked for by the expert on the frame it has on screen: every
// page (the sender too) is told to hold that frame and gets the same
// picture from the server; a page joining meanwhile is told at once;
// unfreeze ends it for all.
func TestFreezeHoldsOneFrame(t *testing.T) {
	srv, base, ctx := consultServer(t)
	sonoTok, expertTok := token(t, srv, auth.Sonographer, time.Hour), token(t, srv, auth.Expert, time.Hour)
	dial := func(tok string) *whepclient.Session { return consultViewer(t, ctx, base, tok) }
	sono, expert := dial(sonoTok), dial(expertTok)
	var meta struct {
		RTPTS         uint32
		Width, Height int
	}
	meta.RTPTS, meta.Width, meta.Height = frameOnScreen(t, ctx, expert)
	next := func(v *whepclient.Session, typ string) consultMsg {
		t.Helper()
		return nextConsult(t, ctx, v, func(m consultMsg) bool { return m.Type == typ })
	}
	if err := expert.SendConsult(ctx, []byte(fmt.Sprintf(`{"type":"freeze","rtp_ts":%d}`, meta.RTPTS))); err != nil {
		t.Fatal(err)
	}
	fs, fe := next(sono, "freeze"), next(expert, "freeze")
	if fs.RTPTS != meta.RTPTS || fe.RTPTS != meta.RTPTS || fs.Still == "" || fs.Still != fe.Still || fs.From.Role != "expert" {
		t.Fatalf("freeze of %d: sonographer got %+v, expert %+v", meta.RTPTS, fs, fe)
	}
	code, body := do(t, "GET", base+fs.Still, "", sonoTok, "")
	if code != http.StatusOK {
		t.Fatalf("still: %d %s", code, body)
	}
	img, err := gocv.IMDecode([]byte(body), gocv.IMReadColor)
	if err != nil || img.Cols() != meta.Width || img.Rows() != meta.Height {
		t.Fatalf("still %dx%d (%v), frame %dx%d", img.Cols(), img.Rows(), err, meta.Width, meta.Height)
	}
	img.Close()
	if code, _ := do(t, "GET", base+fs.Still, "", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("still without a token: %d", code)
	}
	if late := next(dial(expertTok), "freeze"); late.RTPTS != meta.RTPTS {
		t.Fatalf("a page joining during the freeze got %+v", late)
	}
	if err := sono.SendConsult(ctx, []byte(`{"type":"unfreeze"}`)); err != nil {
		t.Fatal(err)
	}
	next(sono, "unfreeze")
	next(expert, "unfreeze")
	if code, _ := do(t, "GET", base+fs.Still, "", sonoTok, ""); code != http.StatusNotFound {
		t.Fatalf("still after unfreeze: %d", code)
	}
}

// Chat reaches the others with the sender's name (the invite's label),
// and every page is told who is connected as people join and leave.
func TestChatAndPresence(t *testing.T) {
	srv, base, ctx := consultServer(t)
	sonoTok := token(t, srv, auth.Sonographer, time.Hour)
	code, body := do(t, "POST", base+"/api/sources/phantom/invites", "application/json", sonoTok, `{"role":"expert","ttl_s":900,"label":"Dr Ada"}`)
	var inv struct{ URL string }
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &inv) != nil {
		t.Fatalf("invite: %d %s", code, body)
	}
	u, _ := url.Parse(inv.URL)
	next := func(v *whepclient.Session, ok func(consultMsg) bool) consultMsg {
		t.Helper()
		return nextConsult(t, ctx, v, ok)
	}
	sono := consultViewer(t, ctx, base, sonoTok)
	expert := consultViewer(t, ctx, base, u.Query().Get("token"))
	withAda := next(sono, func(m consultMsg) bool {
		if m.Type != "presence" || len(m.People) != 2 {
			return false
		}
		for _, p := range m.People {
			if p.Role == "expert" && p.Name == "Dr Ada" {
				return true
			}
		}
		return false
	})
	t.Logf("presence: %+v", withAda.People)
	if err := expert.SendConsult(ctx, []byte(`{"type":"chat","text":"  Please angle towards the nipple\u0000 "}`)); err != nil {
		t.Fatal(err)
	}
	chat := next(sono, func(m consultMsg) bool { return m.Type == "chat" })
	if chat.Text != "Please angle towards the nipple" || chat.From.Name != "Dr Ada" || chat.From.Role != "expert" {
		t.Fatalf("chat %+v from %+v", chat, chat.From)
	}
	expert.Close(context.Background())
	next(sono, func(m consultMsg) bool {
		return m.Type == "presence" && len(m.People) == 1 && m.People[0].Role == "sonographer"
	})
}

// The sonographer's microphone reaches the expert on the audio slot the
// expert's presence names for it; its state (open, muted) and its speech
// are announced to the others.
func TestVoiceReachesTheExpert(t *testing.T) {
	srv, base, ctx := consultServer(t)
	sonoTok := token(t, srv, auth.Sonographer, time.Hour)
	expertTok := token(t, srv, auth.Expert, time.Hour)
	next := func(v *whepclient.Session, ok func(consultMsg) bool) consultMsg {
		t.Helper()
		return nextConsult(t, ctx, v, ok)
	}
	sono := consultViewer(t, ctx, base, sonoTok, 2)
	expert := consultViewer(t, ctx, base, expertTok, 2)
	sonoID := path.Base(sono.Resource())
	next(expert, func(m consultMsg) bool { return m.Type == "presence" && slices.Contains(m.Slots, sonoID) })
	if err := sono.SendConsult(ctx, []byte(`{"type":"voice","mic":"open"}`)); err != nil {
		t.Fatal(err)
	}
	next(expert, func(m consultMsg) bool {
		return m.Type == "presence" && slices.ContainsFunc(m.People, func(p consultFrom) bool { return p.Viewer == sonoID && p.Mic == "open" })
	})
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				sono.SendVoice([]byte{0xfc, 0xff, 0xfe}, 25)
			}
		}
	}()
	next(expert, func(m consultMsg) bool { return m.Type == "speaking" && slices.Contains(m.Speaking, sonoID) })
	time.Sleep(time.Second) // a second of speech
	close(stop)
	next(expert, func(m consultMsg) bool { return m.Type == "speaking" && len(m.Speaking) == 0 })
	n := 0
	for _, k := range expert.Stats().Voice {
		n += k
	}
	if n < 25 {
		t.Errorf("the expert received %d voice packets of a second's speech", n)
	}
	if err := sono.SendConsult(ctx, []byte(`{"type":"voice","mic":"muted"}`)); err != nil {
		t.Fatal(err)
	}
	next(expert, func(m consultMsg) bool {
		return m.Type == "presence" && slices.ContainsFunc(m.People, func(p consultFrom) bool { return p.Viewer == sonoID && p.Mic == "muted" })
	})
}

// consultViewer joins as a page does, with a consult channel (and voice
// slots, when given); the test's cleanup leaves.
func consultViewer(t *testing.T, ctx context.Context, base, tok string, voiceSlots ...int) *whepclient.Session {
	t.Helper()
	opt := whepclient.Options{Token: tok, Consult: true}
	if len(voiceSlots) > 0 {
		opt.VoiceSlots = voiceSlots[0]
	}
	v, err := whepclient.Dial(ctx, base+"/whep/phantom", opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(context.Background()) })
	return v
}

// nextConsult waits for the first consult message to v that ok accepts.
func nextConsult(t *testing.T, ctx context.Context, v *whepclient.Session, ok func(consultMsg) bool) consultMsg {
	t.Helper()
	for {
		select {
		case b := <-v.Consult():
			var m consultMsg
			if json.Unmarshal(b, &m) == nil && ok(m) {
				return m
			}
		case <-ctx.Done():
			t.Fatal("the message never came")
		}
	}
}

// consultServer runs the phantom without recording or audit, with a
// context for the test's waits.
func consultServer(t *testing.T) (*Server, string, context.Context) {
	t.Helper()
	cfg := Default()
	cfg.Record.Enabled = false
	cfg.Audit.Path = ""
	srv, base := runServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return srv, base, ctx
}
