package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/auth"
	"sonolive/internal/whepclient"
	"sonolive/replay"
)

// nextCapture waits for v's next capture reply.
func nextCapture(t *testing.T, ctx context.Context, v *whepclient.Session) captureReply {
	t.Helper()
	for {
		select {
		case b := <-v.Consult():
			var r captureReply
			if json.Unmarshal(b, &r) == nil && strings.HasPrefix(r.Type, "capture") {
				return r
			}
		case <-ctx.Done():
			t.Fatal("no capture reply")
		}
	}
}

// frameOnScreen is the newest frame v has metadata for.
func frameOnScreen(t *testing.T, ctx context.Context, v *whepclient.Session) (ts uint32, w, h int) {
	t.Helper()
	var meta struct {
		RTPTS  uint32 `json:"rtp_ts"`
		Width  int    `json:"width"`
		Height int    `json:"height"`
	}
	for meta.Width == 0 {
		if ctx.Err() != nil {
			t.Fatal("no metadata")
		}
		time.Sleep(50 * time.Millisecond)
		json.Unmarshal(v.LastMetadata(), &meta)
	}
	return meta.RTPTS, meta.Width, meta.Height
}

// The expert draws an arrow and captures the frame on screen: both pages
// are told, the recording lists the key frame with its findings and the
// arrow, the picture is the frame as streamed and the annotated copy has
// the arrow in the expert's blue where it was drawn; the library's roles
// read them, an expert's live-view invite does not.
func TestCaptureKeepsKeyFrame(t *testing.T) {
	cfg := Default()
	cfg.Record.Dir = t.TempDir()
	cfg.Record.BetweenExams = true // recording mechanics, not exams
	cfg.Audit.Path = ""
	srv, base, _ := runServerWith(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sonoTok, expertTok := token(t, srv, auth.Sonographer, time.Hour), token(t, srv, auth.Expert, time.Hour)
	sono, expert := consultViewer(t, ctx, base, sonoTok), consultViewer(t, ctx, base, expertTok)
	ts, w, h := frameOnScreen(t, ctx, expert)
	send := func(msg string) {
		t.Helper()
		if err := expert.SendConsult(ctx, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	// A horizontal arrow across the middle; its shaft's midpoint is
	// checked in the pictures.
	y := h / 2
	send(fmt.Sprintf(`{"type":"mark","id":"a1","shape":"arrow","points":[[%d,%d],[%d,%d]],"rtp_ts":%d}`, w/4, y, 3*w/4, y, ts))
	nextConsult(t, ctx, sono, func(m consultMsg) bool { return m.Type == "mark" })
	send(fmt.Sprintf(`{"type":"capture","rtp_ts":%d}`, ts))
	rs, re := nextCapture(t, ctx, sono), nextCapture(t, ctx, expert)
	if rs.From == nil || re.From == nil || *rs.From != *re.From {
		t.Fatalf("capture from %+v and %+v", rs.From, re.From)
	}
	re.From = rs.From
	t.Logf("captured: %+v", rs)
	if rs.Type != "captured" || re != rs || rs.N != 1 || rs.Marks != 1 || rs.RTPTS != ts || rs.From.Role != "expert" || rs.Recording == "" {
		t.Fatalf("capture of %d: sonographer got %+v, expert %+v", ts, rs, re)
	}

	prefix := base + "/api/recordings/" + rs.Recording + "/"
	code, body := do(t, "GET", prefix+"captures.json", "", sonoTok, "")
	var list []replay.Capture
	if code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 {
		t.Fatalf("captures.json: %d %s", code, body)
	}
	c := list[0]
	if c.N != 1 || c.RTPTime != ts || c.Width != w || c.Height != h || c.By != "expert" || len(c.Marks) != 1 || !c.Clean || c.T < 0 {
		t.Fatalf("capture listed as %+v", c)
	}
	if code, _ := do(t, "GET", prefix+"captures.json", "", expertTok, ""); code != http.StatusForbidden {
		t.Fatalf("an expert's invite read the captures: %d", code)
	}
	picture := func(name string) gocv.Mat {
		t.Helper()
		code, body := do(t, "GET", prefix+name, "", sonoTok, "")
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", name, code, body)
		}
		img, err := gocv.IMDecode([]byte(body), gocv.IMReadColor)
		if err != nil || img.Cols() != w || img.Rows() != h {
			t.Fatalf("%s: %dx%d (%v), frame %dx%d", name, img.Cols(), img.Rows(), err, w, h)
		}
		t.Cleanup(func() { img.Close() })
		return img
	}
	clean, annotated := picture("capture-001.jpg"), picture("capture-001-annotated.jpg")
	blue := func(img gocv.Mat, x, y int) bool {
		p := img.GetVecbAt(y, x) // B, G, R
		return int(p[0]) > int(p[2])+80 && p[0] > 180
	}
	if !blue(annotated, w/2, y) || blue(clean, w/2, y) {
		t.Fatalf("arrow at (%d, %d): annotated %v, clean %v", w/2, y, annotated.GetVecbAt(y, w/2), clean.GetVecbAt(y, w/2))
	}

	// Cleared, the arrow is no longer on the next key frame.
	send(`{"type":"clear","id":"a1"}`)
	nextConsult(t, ctx, sono, func(m consultMsg) bool { return m.Type == "clear" })
	send(fmt.Sprintf(`{"type":"capture","rtp_ts":%d}`, ts))
	if r := nextCapture(t, ctx, expert); r.Type != "captured" || r.N != 2 || r.Marks != 0 {
		t.Fatalf("second capture: %+v", r)
	}
	if code, body := do(t, "GET", base+"/api/recordings/"+rs.Recording, "", sonoTok, ""); code != http.StatusOK || !strings.Contains(body, `"captures": 2`) && !strings.Contains(body, `"captures":2`) {
		t.Fatalf("recording: %d %s", code, body)
	}

	// During a freeze the frozen picture is kept, whatever frame the
	// sender names (its stream may have moved on past what is kept).
	now, _, _ := frameOnScreen(t, ctx, expert)
	send(fmt.Sprintf(`{"type":"freeze","rtp_ts":%d}`, now))
	frozen := nextConsult(t, ctx, expert, func(m consultMsg) bool { return m.Type == "freeze" })
	send(fmt.Sprintf(`{"type":"capture","rtp_ts":%d}`, now+123456))
	if r := nextCapture(t, ctx, expert); r.Type != "captured" || r.N != 3 || r.RTPTS != frozen.RTPTS {
		t.Fatalf("capture during the freeze of %d: %+v", frozen.RTPTS, r)
	}
}

// Without a recording or an exam there is nowhere to keep a key frame: the
// sender is told why, and nobody else hears of it.
func TestCaptureWithoutRecording(t *testing.T) {
	srv, base, ctx := consultServer(t)
	sono := consultViewer(t, ctx, base, token(t, srv, auth.Sonographer, time.Hour))
	ts, _, _ := frameOnScreen(t, ctx, sono)
	if err := sono.SendConsult(ctx, []byte(fmt.Sprintf(`{"type":"capture","rtp_ts":%d}`, ts))); err != nil {
		t.Fatal(err)
	}
	if r := nextCapture(t, ctx, sono); r.Type != "capture_failed" || !strings.Contains(r.Reason, "start an exam") {
		t.Fatalf("capture with recording off: %+v", r)
	}
}
