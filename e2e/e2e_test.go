// Package e2e runs sonolive as a user would and watches it in a real
// browser: the real binary (`sonolive serve`, 720p30 phantom, the shipped
// ONNX model) and Debian's headless Chromium driven by playwright-core, or
// its Firefox ESR driven by puppeteer-core over WebDriver BiDi. The browser
// scripts live next to this file (expert.js, firefox.js, whep-eyevinn.js).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"sonolive/internal/testnet"
	"sonolive/internal/testpeer"
	"sonolive/internal/whepclient"
	"sonolive/sfu"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sonolive-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "sonolive")
	if out, err := exec.Command("go", "build", "-o", binary, "../cmd/sonolive").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	// The LiveKit viewers' SDK logs every pion state change otherwise.
	sfu.UseLogger(zap.NewNop())
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// browser finds Chromium and the npm packages: required in CI, skipped on
// a machine without them.
func browser(t *testing.T) string {
	t.Helper()
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	var missing string
	if _, err := os.Stat(chromium); err != nil {
		missing = chromium
	} else if _, err := os.Stat("node_modules/playwright-core"); err != nil {
		missing = "e2e/node_modules/playwright-core (make setup-browser)"
	} else if _, err := exec.LookPath("node"); err != nil {
		missing = "node"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("browser test needs %s", missing)
		}
		t.Skipf("browser test needs %s", missing)
	}
	return chromium
}

// firefox finds Debian's Firefox ESR and puppeteer-core: required in CI,
// skipped on a machine without them.
func firefox(t *testing.T) string {
	t.Helper()
	ff := os.Getenv("FIREFOX")
	if ff == "" {
		ff = "/usr/bin/firefox-esr"
	}
	var missing string
	if _, err := os.Stat(ff); err != nil {
		missing = ff + " (make setup-browser)"
	} else if _, err := os.Stat("node_modules/puppeteer-core"); err != nil {
		missing = "e2e/node_modules/puppeteer-core (make setup-browser)"
	} else if _, err := exec.LookPath("node"); err != nil {
		missing = "node"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("Firefox test needs %s", missing)
		}
		t.Skipf("Firefox test needs %s", missing)
	}
	return ff
}

func outDir(t *testing.T) string {
	if d := os.Getenv("SONOLIVE_E2E_OUT"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// server is a running `sonolive serve`.
type server struct {
	base, liveURL, token string
}

func startServe(t *testing.T, args ...string) server {
	s, _ := startServeStop(t, append([]string{"--record-dir", t.TempDir()}, args...)...)
	return s
}

// startServeStop also returns a stop that ends the server as Ctrl-C does
// (idempotent; cleanup calls it too).
func startServeStop(t *testing.T, args ...string) (server, func()) {
	t.Helper()
	links := filepath.Join(t.TempDir(), "links")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, binary, append([]string{"serve", "--listen", "127.0.0.1:0", "--link-file", links, "--audit", filepath.Join(t.TempDir(), "audit.jsonl"), "--log-level", "warn"}, args...)...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := cmd.Wait(); err != nil && ctx.Err() == nil {
				t.Errorf("serve: %v", err)
			}
			if t.Failed() || os.Getenv("SONOLIVE_E2E_LOGS") != "" {
				t.Logf("server log:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(60 * time.Second)
	var line string
	for {
		if b, err := os.ReadFile(links); err == nil && len(b) > 0 {
			line = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no link file after 60 s; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, live, _ := strings.Cut(line, " ")
	base := live[:strings.Index(live, "/live/")]
	tok := live[strings.Index(live, "token=")+len("token="):]
	s := server{base: base, liveURL: live, token: tok}
	// Healthy means frames are flowing.
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, stop
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not healthy after 60 s; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s server) invite(t *testing.T) string {
	t.Helper()
	return s.inviteRole(t, "expert")
}

// inviteRole is an invite link for role to the phantom source.
func (s server) inviteRole(t *testing.T, role string) string {
	t.Helper()
	var inv struct{ URL string }
	s.post(t, "/api/sources/phantom/invites", `{"role":"`+role+`","ttl_s":900}`, &inv)
	return inv.URL
}

// startExam opens an exam on the phantom source, as the sonographer's
// Start exam does; it returns the exam's id.
func (s server) startExam(t *testing.T, organ string) string {
	t.Helper()
	var e struct{ ID string }
	s.post(t, "/api/sources/phantom/exams", `{"organ":"`+organ+`"}`, &e)
	return e.ID
}

// post sends JSON with the sonographer's token and wants 201 with JSON
// into out.
func (s server) post(t *testing.T, path, body string, out any) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, out) != nil {
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
}

// node runs a browser script and returns its JSON result line.
func node(t *testing.T, script string, timeout time.Duration, env ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res map[string]any
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "{") {
			json.Unmarshal([]byte(line), &res)
		}
	}
	if err != nil || res == nil || res["ok"] != true {
		t.Fatalf("%s: %v\nresult: %v\nstderr:\n%s", script, err, res, stderr.String())
	}
	return res
}

// The expert's page in Chromium: it decodes the stream, draws the boxes
// from the DataChannel in sync with the frames and measures glass-to-glass.
func TestExpertPageInChromium(t *testing.T) {
	chromium := browser(t)
	out := outDir(t)
	s := startServe(t)
	expert := s.invite(t)
	bad := expert[:len(expert)-6] + "AAAAAA"
	res := node(t, "expert.js", 150*time.Second,
		"CHROMIUM="+chromium, "LIVE_URL="+s.liveURL, "EXPERT_URL="+expert, "BAD_URL="+bad,
		"OUT_DIR="+out, "SECONDS=10")
	ex, _ := res["expert"].(map[string]any)
	g2g, _ := ex["g2g"].(map[string]any)
	t.Logf("expert page: framesDecoded=%v matchedFrames=%v boxesDrawn=%v g2g p50=%v p95=%v n=%v; screenshots in %s",
		ex["framesDecoded"], ex["matchedFrames"], ex["boxesDrawn"], g2g["p50"], g2g["p95"], g2g["n"], out)
	if b, err := json.MarshalIndent(res, "", "  "); err == nil {
		os.WriteFile(filepath.Join(out, "expert-result.json"), b, 0o644)
	}
	t.Logf("revoke: %v", res["revoke"])
	t.Logf("calipers on the expert's page against the phantom's truth: %v", res["calipers"])
	// A sanity bound, not the target: a stream that is a second behind is
	// broken. The 150 ms target is measured and reported in BENCHMARKS.md.
	// p95 gets more room: two Chromium 720p decodes share CI's 2 cores
	// with the server, and a stall there is the test's, not the stream's.
	p50, _ := g2g["p50"].(float64)
	p95, _ := g2g["p95"].(float64)
	if p50 <= 0 || p50 > 1000 || p95 > 2000 {
		t.Errorf("glass-to-glass p50 %v ms, p95 %v ms", g2g["p50"], g2g["p95"])
	}
}

// A tablet beside the probe publishes a real breast clip through the
// /publish page in Chromium (the fake capture device fed from the clip,
// padded into an 854×480 "app window"), cropped to the ultrasound image by
// dragging; sonolive runs the detector on it and an expert's page in a
// second Chromium shows the video with boxes; when the connection is
// dropped the page connects again by itself. Publish-to-expert
// glass-to-glass is logged; the target (p95 ≤ 150 ms on loopback) is
// reported in BENCHMARKS.md, the bound here is a sanity one for a loaded
// 2-core machine.
func TestPublishPageInChromium(t *testing.T) {
	chromium := browser(t)
	out := outDir(t)
	clip := testpeer.Clip(t)
	y4m := filepath.Join(t.TempDir(), "window.y4m")
	if b, err := exec.Command("ffmpeg", "-v", "error", "-i", clip, "-t", "12", "-vf", "scale=480:480,pad=854:480:187:0",
		"-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", y4m).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	adminFile := filepath.Join(t.TempDir(), "admin.token")
	// A small configured source beside it, so the machine's cores go to
	// the published one.
	s := startServe(t, "--source", "phantom://?width=320&height=240&fps=5", "--admin-token-file", adminFile)
	admin, err := os.ReadFile(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", s.base+"/api/publishers", strings.NewReader(`{"source":"tablet"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var links struct{ Publisher, Sonographer struct{ URL, Token string } }
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &links) != nil {
		t.Fatalf("publisher links: %d %s", resp.StatusCode, b)
	}
	res := node(t, "publish.js", 170*time.Second, "CHROMIUM="+chromium, "PUBLISH_URL="+links.Publisher.URL, "BASE="+s.base,
		"SOURCE=tablet", "SONO_TOKEN="+links.Sonographer.Token, "Y4M="+y4m, "IMAGE_RECT=[187,0,480,480]", "OUT_DIR="+out)
	g2g, _ := res["g2g"].(map[string]any)
	t.Logf("publish → expert glass-to-glass: %v; publisher: %v; expert: %v; sources: %v; reconnect after the connection was dropped: %v; screenshots in %s",
		g2g, res["publisher"], res["expert"], res["server"], res["reconnect"], out)
	if p95, _ := g2g["p95"].(float64); p95 <= 0 || p95 > 1500 {
		t.Errorf("publish → expert glass-to-glass p95 %v ms", g2g["p95"])
	}
}

// The expert draws and points on the image; the sonographer's page shows
// it at the same place of the picture (checked in a screenshot's pixels),
// and points back; a verdict reaches the sonographer; a freeze holds the
// same frame on both pages; voice goes both ways, the speaker is shown
// speaking and a muted one is silent. Pointer latency (input on one page to
// drawn on the other) and mouth-to-ear are logged; the targets (p95 ≤ 100
// and ≤ 250 ms) are reported in BENCHMARKS.md.
func TestConsultMarksInChromium(t *testing.T) {
	chromium := browser(t)
	out := outDir(t)
	s := startServe(t)
	s.startExam(t, "breast") // key frames belong to an exam and its recording
	res := node(t, "consult.js", 170*time.Second, "CHROMIUM="+chromium, "LIVE_URL="+s.liveURL, "EXPERT_URL="+s.invite(t), "OUT_DIR="+out)
	p, _ := res["pointer"].(map[string]any)
	t.Logf("arrow: %v; pointer input → drawn on the other page: %v; sonographer pointing back: %v; verdict: %v; freeze: %v; capture: %v; chat: %v; voice: %v; screenshots in %s",
		res["arrow"], p, res["pointBack"], res["verdict"], res["freeze"], res["capture"], res["chat"], res["voice"], out)
	// Sanity bounds on a loaded 2-core machine, not the targets.
	if p95, _ := p["p95"].(float64); p95 <= 0 || p95 > 1000 {
		t.Errorf("pointer latency p95 %v ms", p["p95"])
	}
	voice, _ := res["voice"].(map[string]any)
	for _, dir := range []string{"sonographerToExpert", "expertToSonographer"} {
		d, _ := voice[dir].(map[string]any)
		if p95, _ := d["p95"].(float64); p95 <= 0 || p95 > 1500 {
			t.Errorf("voice %s: mouth-to-ear p95 %v ms (%v)", dir, d["p95"], d)
		}
	}
}

// Mouth to ear on a machine that is not saturated: the same two pages and
// voice checks as TestConsultMarksInChromium, on a 640×360 15 fps phantom
// without AI, so the browsers' audio threads are not starved by two 720p
// decodes, the encoder and the detector on two cores (that figure is
// TestConsultMarksInChromium's). Target p95 ≤ 250 ms, in BENCHMARKS.md.
//
// The server records the voices here (--record-voices): both pages say so,
// and the recording's video carries both people's beeps as sound.
func TestVoiceMouthToEarInChromium(t *testing.T) {
	chromium := browser(t)
	out := outDir(t)
	lib := t.TempDir()
	s, stop := startServeStop(t, "--record-dir", lib, "--record-between-exams", "--record-voices", "--source", "phantom://?seed=1&lesions=2&width=640&height=360&fps=15", "--model", "none")
	res := node(t, "consult.js", 120*time.Second, "VOICE_ONLY=1", "VOICES_RECORDED=1", "CHROMIUM="+chromium, "LIVE_URL="+s.liveURL, "EXPERT_URL="+s.invite(t), "OUT_DIR="+out)
	voice, _ := res["voice"].(map[string]any)
	t.Logf("voice: %v", voice)
	for _, dir := range []string{"sonographerToExpert", "expertToSonographer"} {
		d, _ := voice[dir].(map[string]any)
		if p95, _ := d["p95"].(float64); p95 <= 0 || p95 > 1500 {
			t.Errorf("voice %s: mouth-to-ear p95 %v ms (%v)", dir, d["p95"], d)
		}
	}
	stop()
	metas, _ := filepath.Glob(filepath.Join(lib, "*", "meta.json"))
	if len(metas) != 1 {
		t.Fatalf("recordings: %v", metas)
	}
	var meta struct {
		Voices    int     `json:"voices"`
		DurationS float64 `json:"duration_s"`
	}
	b, _ := os.ReadFile(metas[0])
	json.Unmarshal(b, &meta)
	video := filepath.Join(filepath.Dir(metas[0]), "video.mp4")
	vol, err := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-i", video, "-map", "0:a", "-af", "volumedetect", "-f", "null", "-").CombinedOutput()
	level := -200.0
	if m := regexp.MustCompile(`mean_volume: (-?[0-9.]+) dB`).FindSubmatch(vol); m != nil {
		level, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	t.Logf("recording: %d voices, %.1f s, mean volume %.1f dB", meta.Voices, meta.DurationS, level)
	if meta.Voices != 2 || err != nil || level < -40 {
		t.Fatalf("the recording's sound: %d voices, ffmpeg %v:\n%s", meta.Voices, err, vol)
	}
}

// Both pages in Firefox ESR as Debian ships it: without OpenH264 it
// offers no H.264, gets the VP8 fallback, and plays with the boxes in sync
// at tablet sizes.
func TestPagesInFirefox(t *testing.T) {
	ff := firefox(t)
	out := outDir(t)
	s := startServe(t)
	res := node(t, "firefox.js", 150*time.Second, "FIREFOX="+ff, "LIVE_URL="+s.liveURL, "EXPERT_URL="+s.invite(t), "OUT_DIR="+out)
	t.Logf("%s, H.264 offered: %v; expert page: %v; live page: %v; screenshots in %s",
		res["firefox"], res["h264Offered"], res["expert"], res["live"], out)
}

// A WHEP player we did not write (Eyevinn's @eyevinn/webrtc-player, its
// dist bundle unmodified) plays /whep/phantom in Chromium and leaves with
// DELETE.
func TestThirdPartyWHEPPlayer(t *testing.T) {
	chromium := browser(t)
	out := outDir(t)
	s := startServe(t)
	res := node(t, "whep-eyevinn.js", 90*time.Second,
		"CHROMIUM="+chromium, "WHEP_URL="+s.base+"/whep/phantom", "TOKEN="+s.token, "OUT_DIR="+out)
	t.Logf("%v: %v frames at %vx%v, POST %v, DELETE %v", res["client"], res["frames"], res["width"], res["height"], res["post"], res["delete"])
	if res["width"] != 1280.0 || res["height"] != 720.0 {
		t.Errorf("video %vx%v, want 1280x720", res["width"], res["height"])
	}
}

// A 60 s live session is recorded; after it ends the library lists it with
// its length and lesion events, and the replay page in Chromium draws the
// timeline's boxes on the frames they belong to.
func TestReplayInChromium(t *testing.T) {
	chromium := browser(t)
	out := outDir(t)
	lib := t.TempDir()
	s, stop := startServeStop(t, "--record-dir", lib, "--record-between-exams")
	consultDuring(t, s, 60*time.Second)
	stopped := time.Now()
	stop()

	s2, _ := startServeStop(t, "--record-dir", lib, "--record-between-exams")
	req, _ := http.NewRequest("GET", s2.base+"/api/recordings", nil)
	req.Header.Set("Authorization", "Bearer "+s2.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var recs []struct {
		ID           string  `json:"id"`
		Status       string  `json:"status"`
		DurationS    float64 `json:"duration_s"`
		Frames       int     `json:"frames"`
		LesionEvents []struct {
			TrackID uint64  `json:"track_id"`
			FirstS  float64 `json:"first_s"`
			LastS   float64 `json:"last_s"`
		} `json:"lesion_events"`
	}
	json.NewDecoder(resp.Body).Decode(&recs)
	resp.Body.Close()
	var done []int
	for i, r := range recs {
		if r.Status == "complete" {
			done = append(done, i)
		}
	}
	if len(done) != 1 {
		t.Fatalf("want one finished recording, got %+v", recs)
	}
	r := recs[done[0]]
	// The session's length: its first recorded frame to the stop.
	first := firstCapture(t, s2, r.ID)
	want := stopped.Sub(first).Seconds()
	t.Logf("recording %s: %.2f s, %d frames, %d lesion events; session %.2f s (first frame to stop)", r.ID, r.DurationS, r.Frames, len(r.LesionEvents), want)
	if d := r.DurationS - want; d > 1 || d < -1 {
		t.Errorf("duration %.2f s, session %.2f s", r.DurationS, want)
	}
	if len(r.LesionEvents) == 0 {
		t.Fatalf("no lesion events in 60 s of phantom")
	}
	_ = s
	// ffprobe accepts every recorded file, and it holds every frame.
	videos, _ := filepath.Glob(filepath.Join(lib, "*", "video.mp4"))
	for _, v := range videos {
		out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
			"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", v).CombinedOutput()
		if err != nil {
			t.Errorf("ffprobe %s: %v\n%s", v, err, out)
		} else if strings.Contains(v, r.ID) && strings.TrimSpace(string(out)) != strconv.Itoa(r.Frames) {
			t.Errorf("ffprobe: %s frames, timeline %d", out, r.Frames)
		}
	}
	// The expert's verdict comes out as a COCO label on the frame it read.
	lreq, _ := http.NewRequest("GET", s2.base+"/api/recordings/"+r.ID+"/labels.json", nil)
	lreq.Header.Set("Authorization", "Bearer "+s2.token)
	lresp, err := http.DefaultClient.Do(lreq)
	if err != nil {
		t.Fatal(err)
	}
	var labels struct {
		Annotations []struct {
			BBox       [4]float64     `json:"bbox"`
			Attributes map[string]any `json:"attributes"`
		} `json:"annotations"`
	}
	json.NewDecoder(lresp.Body).Decode(&labels)
	lresp.Body.Close()
	if len(labels.Annotations) != 1 || labels.Annotations[0].Attributes["verdict"] != "disagree" || labels.Annotations[0].Attributes["category"] != "BI-RADS 3" {
		tl, _ := os.ReadFile(filepath.Join(lib, r.ID, "timeline.jsonl"))
		var consult []string
		for _, line := range strings.Split(string(tl), "\n") {
			if strings.Contains(line, `"event":"consult"`) {
				consult = append(consult, line)
			}
		}
		t.Fatalf("labels.json: %d %+v; consult events in the timeline: %q", lresp.StatusCode, labels, consult)
	}
	t.Logf("labels.json: %+v", labels.Annotations[0])
	res := node(t, "replay.js", 150*time.Second, "CHROMIUM="+chromium,
		"LIBRARY_URL="+s2.base+"/library/phantom?token="+s2.token,
		"REPLAY_URL="+s2.base+"/replay/"+r.ID+"?token="+s2.token, "OUT_DIR="+out, "CONSULT=1")
	t.Logf("replay page: %v", res)
}

// consultDuring keeps an expert in the session for d, as a Go WHEP client
// on the consult channel: an arrow early on, then a verdict on a track the
// AI reported and a key frame, for the replay to show at their times.
func consultDuring(t *testing.T, s server, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	u, _ := url.Parse(s.invite(t))
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	v, err := whepclient.Dial(ctx, s.base+"/whep/phantom", whepclient.Options{Token: u.Query().Get("token"), Consult: true})
	if err != nil {
		t.Fatal(err)
	}
	// Stay to the end: leaving at once would close the channel before what
	// was just sent is out (it was, on a loaded machine).
	defer func() {
		time.Sleep(time.Until(end))
		v.Close(context.Background())
	}()
	var meta struct {
		Width, Height int
		Detections    []struct {
			TrackID uint64 `json:"track_id"`
		}
	}
	for len(meta.Detections) == 0 {
		if ctx.Err() != nil {
			t.Fatal("no finding in the session to give a verdict on")
		}
		time.Sleep(100 * time.Millisecond)
		json.Unmarshal(v.LastMetadata(), &meta)
	}
	time.Sleep(5 * time.Second)
	arrow := fmt.Sprintf(`{"type":"mark","id":"a1","shape":"arrow","points":[[%d,%d],[%d,%d]]}`, meta.Width/4, meta.Height/4, meta.Width/2, meta.Height/2)
	if err := v.SendConsult(ctx, []byte(arrow)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	// A track on screen now, so the label finds its box just before.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var now struct {
			Detections []struct {
				TrackID uint64 `json:"track_id"`
			}
		}
		if json.Unmarshal(v.LastMetadata(), &now) == nil && len(now.Detections) > 0 {
			meta.Detections = now.Detections
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no finding on screen to give a verdict on")
		}
	}
	verdict := fmt.Sprintf(`{"type":"verdict","track_id":%d,"verdict":"disagree","category":"BI-RADS 3","note":"benign-looking, oval, circumscribed"}`, meta.Detections[0].TrackID)
	if err := v.SendConsult(ctx, []byte(verdict)); err != nil {
		t.Fatal(err)
	}
	// And keeps the frame on screen as a key frame.
	var now struct {
		RTPTS uint32 `json:"rtp_ts"`
	}
	json.Unmarshal(v.LastMetadata(), &now)
	if err := v.SendConsult(ctx, []byte(fmt.Sprintf(`{"type":"capture","rtp_ts":%d}`, now.RTPTS))); err != nil {
		t.Fatal(err)
	}
}

// firstCapture is the capture time of a recording's first frame.
func firstCapture(t *testing.T, s server, id string) time.Time {
	t.Helper()
	req, _ := http.NewRequest("GET", s.base+"/api/recordings/"+id+"/timeline.jsonl", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		CaptureUnixMS float64 `json:"capture_unix_ms"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	return time.UnixMicro(int64(e.CaptureUnixMS * 1000))
}

// An expert on a poor link — 1.5 Mbit/s, 80 ms round trip, 2 % loss each
// way, in a network namespace behind the test's user-space wire (this
// kernel has no netem) — and the sonographer on a good one, each in its own
// Chromium, on a 720p30 phantom without AI (the network is under test, not
// the CPU). The expert is moved to the small layer and keeps its frame
// rate; the sonographer's voice reaches it without long gaps; the
// sonographer keeps 720p. Targets (expert ≥ 25 fps, no voice gap > 200 ms)
// are reported in BENCHMARKS.md; the bounds here are relative to the
// sonographer's page, for a loaded 2-core machine.
func TestPoorLinkInChromium(t *testing.T) {
	testnet.RequireNetAdmin(t)
	chromium := browser(t)
	out := outDir(t)
	link := testnet.Link{Delay: 40 * time.Millisecond, Loss: 0.02, RateBPS: 1_500_000, QueueBytes: 64 << 10}
	w := testnet.NewWire(t, "slexpert", 78, link, link)
	s := startServe(t, "--listen", "0.0.0.0:0", "--insecure-http", "--model", "none", "--log-level", "info")
	u, err := url.Parse(s.invite(t))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse(s.base)
	u.Host = w.HostIP + ":" + base.Port()
	wrapper := filepath.Join(t.TempDir(), "chromium-in-"+w.NS)
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", w.NS, chromium)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	res := node(t, "poorlink.js", 180*time.Second, "CHROMIUM="+chromium, "EXPERT_CHROMIUM="+wrapper,
		"LIVE_URL="+s.liveURL, "EXPERT_URL="+u.String(), "OUT_DIR="+out, "SECONDS=40")
	down, up := w.Stats()
	t.Logf("expert: %v\nsonographer: %v\nwire down %+v, up %+v", res["expert"], res["sonographer"], down, up)
	ex, _ := res["expert"].(map[string]any)
	settled, _ := ex["settled"].(map[string]any)
	so, _ := res["sonographer"].(map[string]any)
	if ex["smallAfterS"] == nil || ex["pill"] == nil || so["pill"] != nil {
		t.Errorf("the expert was never moved to the small layer, or the pages do not say which is: %v; sonographer %v", ex, so)
	}
	// Relative to the sonographer's page on the same loaded machine: what
	// the CPU lets both pages decode is not the link's doing.
	fe, _ := settled["fpsMedian"].(float64)
	fs, _ := so["fpsMedian"].(float64)
	if fe < 10 || fe < 0.8*fs {
		t.Errorf("expert on the poor link: median %v fps, sonographer %v", fe, fs)
	}
	if so["size"] != "1280x720" {
		t.Errorf("sonographer on the good link got %v", so["size"])
	}
	if down.Passed == 0 || down.Lost == 0 {
		t.Errorf("the wire carried %+v: the expert was not behind it", down)
	}
}

// The wrong-preset guard in Chromium: a real breast cine clip (a patient
// the classifier never saw) under the thyroid preset puts the warning over
// the sonographer's picture; under the breast preset it never shows.
func TestOrganGuardInChromium(t *testing.T) {
	chromium := browser(t)
	// A patient the classifier's training left out (even id).
	clip := "file://" + filepath.Join(testpeer.Data(t), "clips", "breast-cine", "pid_10_vid_48.avi") + "?loop=1&realtime=1"
	out := outDir(t)
	wrong := startServe(t, "--source", clip, "--preset", "thyroid", "--no-record")
	res := node(t, "organ.js", 120*time.Second, "CHROMIUM="+chromium, "LIVE_URL="+wrong.liveURL, "EXPECT=breast", "OUT_DIR="+out)
	t.Logf("thyroid preset on a breast clip: warning after %v ms: %v", res["shownAfterMs"], res["guard"])
	right := startServe(t, "--source", clip, "--preset", "breast", "--no-record")
	res = node(t, "organ.js", 120*time.Second, "CHROMIUM="+chromium, "LIVE_URL="+right.liveURL, "EXPECT=none", "SECONDS=12")
	g, _ := res["guard"].(map[string]any)
	st, _ := g["organ"].(map[string]any)
	t.Logf("breast preset on the same clip: %v", st)
	if n, _ := st["samples"].(float64); st["preset"] != "breast" || n < 8 {
		t.Errorf("the guard did not watch the breast clip: %v", st)
	}
}
