package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"go.uber.org/zap"

	"sonolive/audit"
	"sonolive/auth"
	"sonolive/capture"
	"sonolive/egress"
	"sonolive/exam"
	"sonolive/frame"
	"sonolive/ice"
	"sonolive/infer"
	"sonolive/ingest"
	"sonolive/internal/stats"
	"sonolive/metrics"
	"sonolive/organ"
	"sonolive/overlay"
	"sonolive/pipeline"
	"sonolive/replay"
	"sonolive/sfu"
	"sonolive/stream"
)

// Session is one source's live session: its pipeline (restarted when the
// source is lost) and its relay (which outlives restarts, so viewers stay
// connected and see the stream come back).
type Session struct {
	id      string
	cfg     Source
	deps    *Server
	log     *zap.Logger
	relay   *stream.Relay
	consult *consultRelay
	stills  *stills
	models  *sessionModels
	// picker keeps the open exam's key images; nil when exams are off.
	picker *exam.Picker
	// organ warns when the frames show another organ than the preset's;
	// nil when the session has no detector or no organ classifier.
	organ    *organ.Guard
	organCls *infer.OrganClassifier
	// egress publishes the stream to other servers (source.egress).
	egress []*egress.WHIP
	// livekit publishes the stream into its LiveKit room (nil: none).
	livekit *sfu.Publisher
	// feed is where a whip:// source's publisher connects; nil for
	// other sources.
	feed *ingest.Point
	// stop ends the session's run and done closes when it has; set when
	// the session set starts it.
	stop context.CancelFunc
	done chan struct{}

	pipe atomic.Pointer[pipeline.Pipeline]
	rec  atomic.Pointer[replay.Series] // the recording in progress
	// live: a pipeline runs (what there is to record).
	live atomic.Bool
	// recMu orders starting and stopping the recording; recStop ends the
	// one in progress, made for exam recExam ("" between exams).
	recMu   sync.Mutex
	recStop func()
	recExam string

	examMu sync.Mutex
	exam   *exam.Exam // the open exam, nil when none
	burnIn atomic.Bool
	ended  atomic.Bool
	errMsg atomic.Value // string

	// maskSize remembers the frame size pixel masks were first applied
	// at, across pipeline restarts: a device back at another resolution
	// has its frames blanked, not masked on the wrong pixels.
	maskSize *capture.SizeLock

	vmu     sync.Mutex
	viewers map[string]*auth.Binding // viewer id -> the token it came with

	// nextTrack is the first track id of the next pipeline run: ids go on
	// across runs (and restarts, from the open exam's findings).
	nextTrack atomic.Uint64

	mu       sync.Mutex // guards the windows and bitrate
	win      map[string]*stats.Window
	g2g      *stats.Window
	bitrate  float64
	lastB    uint64
	lastBAt  time.Time
	restarts int
}

// liveStages are the stages shown in the HUD, in path order.
var liveStages = append(append([]string(nil), pipeline.Stages...), "encode")

// window is ten seconds at 30 fps.
const window = 300

func newSession(s *Server, src Source, det infer.Detector, model string) (*Session, error) {
	ses := &Session{id: src.ID, cfg: src, deps: s, log: s.log.With(zap.String("source", src.ID)),
		win: map[string]*stats.Window{}, g2g: stats.NewWindow(600),
		viewers: map[string]*auth.Binding{}, maskSize: &capture.SizeLock{}}
	preset := src.Preset
	if preset == "" {
		preset = s.cfg.AI.Preset
	}
	ses.models = newSessionModels(src, preset, det, model, s.open, s.cfg.AI.Model != "", ses.log)
	ses.startOrganGuard()
	if s.exams != nil {
		ses.picker = exam.NewPicker(s.exams, exam.PickerConfig{Logger: ses.log.Named("exam"),
			OnFinding: func(id string, f exam.Finding) { ses.findingChanged(id, f, "saved") }})
		ses.resumeExam()
	}
	if s.lib != nil && len(src.Masks) == 0 && !strings.HasPrefix(src.URL, "phantom://") {
		ses.log.Warn("this source is recorded with no PHI mask: patient names and ids the scanner shows on screen go into the recordings; set masks in the source's config",
			zap.String("url", capture.Redact(src.URL)))
	}
	for _, st := range liveStages {
		ses.win[st] = stats.NewWindow(window)
	}
	ses.burnIn.Store(s.cfg.Stream.BurnIn)
	relay, err := stream.New(stream.Config{
		Source: src.ID,
		Encoder: stream.EncoderConfig{
			Bitrate: s.cfg.Stream.BitrateKbps * 1000, KeyframeInterval: s.cfg.Stream.KeyframeInterval,
		},
		VP8:   stream.VP8Config{Disabled: !s.cfg.Stream.VP8Fallback, MaxHeight: s.cfg.Stream.VP8MaxHeight},
		Adapt: stream.AdaptConfig{Disabled: !s.cfg.Stream.Adaptive, MaxHeight: s.cfg.Stream.SmallHeight, Bitrate: s.cfg.Stream.SmallKbps * 1000},
		API:   s.api, ICEServers: func() []webrtc.ICEServer { return ice.WebRTC(s.ice.For("sonolive-" + src.ID)) },
		ViewerQueue: s.cfg.Stream.ViewerQueue, MaxViewers: s.cfg.Stream.MaxViewers,
		OnViewer: func(ev stream.ViewerEvent) {
			if ev.Event == "left" {
				ses.releaseViewer(ev.ID, ev.Reason)
				ses.consult.forget(ev.ID)
			}
			s.hub.broadcast(src.ID, event{Type: "viewer", Viewer: &ev})
			if ev.Event == "left" {
				// Not on the relay's lock: presence reads the relay's viewers.
				go ses.consult.presence()
			}
			ses.recordEvent("viewer_"+ev.Event, map[string]string{"viewer": ev.ID, "role": ev.Role})
		},
		OnConsult:     func(v *stream.Viewer, msg []byte) { ses.consult.handle(v, msg) },
		OnConsultOpen: func(v *stream.Viewer) { ses.consult.opened(v) },
		OnVoice: func(v *stream.Viewer, pkt *rtp.Packet, at time.Time) {
			if rec := ses.rec.Load(); rec != nil && s.cfg.Record.Voices {
				rec.WriteVoice(v.ID(), v.Role(), ses.viewerName(v.ID()), pkt, at)
			}
		},
		OnEncode: func(d time.Duration, _ int) {
			s.metrics.ObserveStage(src.ID, "encode", d)
			ses.mu.Lock()
			ses.win["encode"].Add(float64(d) / 1e6)
			ses.mu.Unlock()
		},
		Logger: s.log,
	})
	if err != nil {
		return nil, err
	}
	ses.relay = relay
	if strings.HasPrefix(src.URL, "whip:") {
		ses.feed = ingest.NewPoint(ses.log)
	}
	for _, e := range src.Egress {
		tok := ""
		if e.TokenFile != "" {
			b, err := os.ReadFile(e.TokenFile)
			if err != nil {
				relay.Close()
				return nil, fmt.Errorf("source %s: egress token_file: %w", src.ID, err)
			}
			tok = strings.TrimSpace(string(b))
		}
		ses.egress = append(ses.egress, egress.NewWHIP(egress.WHIPConfig{URL: e.WHIP, Token: tok, Logger: ses.log,
			RequestKeyframe: relay.RequestKeyframe,
			ICEServers:      func() []webrtc.ICEServer { return ice.WebRTC(s.ice.For("sonolive-" + src.ID)) }}))
	}
	if lk := s.livekit; lk != nil {
		ses.livekit = sfu.NewPublisher(sfu.PublisherConfig{URL: s.cfg.LiveKit.URL, Key: lk.Key, Secret: lk.Secret,
			Room: sfu.RoomFor(src.ID), Identity: "sonolive-" + src.ID, RequestKeyframe: relay.RequestKeyframe, Logger: ses.log})
	}
	ses.consult = &consultRelay{ses: ses}
	ses.stills = &stills{}
	relay.AddTap(ses.stills)
	return ses, nil
}

// close ends what outlives the session's run: its viewers and its
// publisher's connection.
func (s *Session) close() {
	s.relay.Close()
	if s.feed != nil {
		s.feed.Close()
	}
}

// run keeps the pipeline going until ctx ends: a source that fails is
// reopened with backoff, the relay and its viewers stay.
func (s *Session) run(ctx context.Context) {
	// Short backoff, capped at 2 s: a source that comes back (a file
	// restored, a device replugged) must be on screen again within a
	// couple of seconds, and a failed open costs little.
	const minBackoff, maxBackoff = 500 * time.Millisecond, 2 * time.Second
	backoff := minBackoff
	speaking := make(chan struct{})
	go func() {
		defer close(speaking)
		s.consult.watchSpeaking(ctx)
	}()
	defer func() { <-speaking }()
	defer s.runOrganGuard(ctx)()
	if lk := s.livekit; lk != nil {
		s.relay.AddTap(lk)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lk.Run(ctx)
		}()
		defer func() {
			<-done
			s.relay.RemoveTap(lk)
		}()
	}
	for _, eg := range s.egress {
		s.relay.AddTap(eg)
		done := make(chan struct{})
		go func() {
			defer close(done)
			eg.Run(ctx)
		}()
		defer func() {
			<-done
			s.relay.RemoveTap(eg)
		}()
	}
	if s.picker != nil {
		picking := make(chan struct{})
		go func() {
			defer close(picking)
			s.picker.Run(ctx)
		}()
		defer func() {
			<-picking
			s.picker.Drain()
			s.picker.Close()
		}()
	}
	for ctx.Err() == nil {
		started := time.Now()
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		msg := "source ended"
		if err != nil {
			msg = err.Error()
		}
		s.errMsg.Store(msg)
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
		if time.Since(started) > time.Minute {
			backoff = minBackoff
		}
		s.log.Warn("source lost; reopening", zap.String("reason", msg), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (s *Session) runOnce(ctx context.Context) error {
	region, err := s.cfg.region()
	if err != nil {
		return err
	}
	region.Lock = s.maskSize
	opts := capture.Options{
		Realtime: true, Loop: true, OpenTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
		Reconnect: true, Region: region, Logger: s.log, ID: s.id,
	}
	if s.feed != nil {
		opts.Feed = s.feed
	}
	src, err := capture.Open(ctx, s.cfg.URL, opts)
	if err != nil {
		return err
	}
	ai := s.deps.cfg.AI
	var observers []pipeline.Observer
	if s.picker != nil {
		// The tracker starts over: its track ids are new lesions.
		s.picker.Restart()
		observers = append(observers, s.picker)
	}
	if s.organ != nil {
		observers = append(observers, s.organ)
	}
	_, model := s.models.current()
	p, err := pipeline.New(pipeline.Config{
		Source: src, Detector: s.models.detector(), ModelName: model, Budget: ai.Budget,
		Tracker: infer.TrackerConfig{MinHits: ai.MinHits, FirstID: s.nextTrack.Load()},
		Overlay: s.burnIn.Load(), HUDTiming: true, Observers: observers,
		Sinks:         []pipeline.Sink{statsSink{s}, relaySink{s.relay}},
		StatsInterval: time.Minute, Logger: s.log, LatencySamples: stats.LiveCap,
	})
	if err != nil {
		src.Close()
		return err
	}
	s.pipe.Store(p)
	s.errMsg.Store("")
	s.log.Info("session live", zap.String("url", capture.Redact(s.cfg.URL)), zap.Duration("budget", p.Budget()))
	s.live.Store(true)
	s.syncRecording()
	defer func() {
		s.live.Store(false)
		s.syncRecording()
	}()
	rep, err := p.Run(ctx)
	if next := rep.Detections.Tracks + 1; next > s.nextTrack.Load() {
		s.nextTrack.Store(next)
	}
	return err
}

// syncRecording starts or stops the recording to match the session: a
// pipeline runs and an exam is open (or record.between_exams). A new exam
// gets a new recording.
func (s *Session) syncRecording() {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	examID := ""
	if e := s.currentExam(); e != nil {
		examID = e.ID
	}
	want := s.live.Load() && s.deps.lib != nil && (examID != "" || s.deps.cfg.Record.BetweenExams)
	if s.recStop != nil && (!want || s.recExam != examID) {
		s.recStop()
		s.recStop = nil
	}
	if want && s.recStop == nil {
		s.recStop, s.recExam = s.startRecording(examID), examID
	}
}

// startRecording records the session into the library, in parts
// (record.max_part, and at a frame size change), as part of exam examID;
// the returned stop finishes it. Nil when it cannot start: the live view
// matters more than the recording.
func (s *Session) startRecording(examID string) (stop func()) {
	lib := s.deps.lib
	noteExam := func(rec string) {
		if examID == "" {
			return
		}
		if err := s.deps.exams.AddRecording(examID, rec); err != nil {
			s.log.Error("noting the exam's recording", zap.String("exam", examID), zap.String("recording", rec), zap.Error(err))
		}
	}
	finished := func(m replay.Meta, err error) {
		if m.ID != "" {
			noteExam(m.ID)
		}
		if err != nil && !errors.Is(err, replay.ErrNotFound) {
			s.log.Error("finishing recording", zap.String("recording", m.ID), zap.Error(err))
		}
		if err == nil {
			s.log.Info("recording finished", zap.String("recording", m.ID), zap.Int("part", m.Part),
				zap.Float64("duration_s", m.DurationS), zap.Int("lesion_events", len(m.LesionEvents)))
			s.deps.hub.broadcast(s.id, event{Type: "recording", Recording: m.ID, Status: m.Status})
		}
	}
	_, model := s.models.current()
	rec, err := lib.NewSeries(replay.SeriesConfig{
		Recorder: replay.RecorderConfig{
			Source: s.id, Model: model, Exam: examID, Segment: s.deps.cfg.Record.Segment,
			RequestKeyframe: s.relay.RequestKeyframe, Logger: s.log, Voices: s.deps.cfg.Record.Voices,
		},
		MaxPart: s.deps.cfg.Record.MaxPart, OnPartEnd: finished,
	})
	if err != nil {
		s.log.Error("recording not started", zap.Error(err))
		return nil
	}
	noteExam(rec.ID())
	s.relay.AddTap(rec)
	s.rec.Store(rec)
	s.deps.hub.broadcast(s.id, event{Type: "recording", Recording: rec.ID(), Status: "recording"})
	return func() {
		s.rec.Store(nil)
		s.relay.RemoveTap(rec)
		finished(rec.Close())
	}
}

// bindViewer ties viewer id to the token it joined with: the viewer is
// closed when the token expires or is revoked.
func (s *Session) bindViewer(c auth.Claims, id, addr string) error {
	b, err := s.deps.access.Bind(c, connWHEP, id, addr, func(reason error) {
		s.relay.RemoveViewer(id, "link "+reasonWord(reason))
	})
	if err != nil {
		return err
	}
	s.vmu.Lock()
	s.viewers[id] = b
	s.vmu.Unlock()
	if _, ok := s.relay.Viewer(id); !ok {
		s.releaseViewer(id, "") // it left while we bound it
		return nil
	}
	// Now that the viewer has its link (and the link's name), everyone
	// learns who joined.
	go s.consult.presence()
	return nil
}

// releaseViewer forgets a viewer's binding once it has left, and notes the
// leave in the audit log.
func (s *Session) releaseViewer(id, reason string) {
	s.vmu.Lock()
	b, ok := s.viewers[id]
	delete(s.viewers, id)
	s.vmu.Unlock()
	if !ok {
		return
	}
	b.Release()
	c := b.Claims()
	s.deps.audit.Log(audit.Event{Action: "viewer_left", Source: s.id, Role: string(c.Role), TokenID: c.ID,
		Addr: b.Addr, Subject: id, Detail: map[string]string{"reason": reason}})
}

// viewerOwner is the id of the token viewer id joined with.
func (s *Session) viewerOwner(id string) (string, bool) {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	b, ok := s.viewers[id]
	if !ok {
		return "", false
	}
	return b.Claims().ID, true
}

// viewerName is the invite label of the link viewer id joined with.
func (s *Session) viewerName(id string) string {
	owner, ok := s.viewerOwner(id)
	if !ok {
		return ""
	}
	return s.deps.access.Label(owner)
}

// SetBurnIn switches the burned-in overlay for this session.
func (s *Session) SetBurnIn(on bool) {
	s.burnIn.Store(on)
	if p := s.pipe.Load(); p != nil {
		p.SetOverlay(on)
	}
	s.recordEvent("burn_in", map[string]string{"on": strconv.FormatBool(on)})
}

// recordsVoices reports whether the session's voices go into its
// recording now (record.voices, off by default: consent).
func (s *Session) recordsVoices() bool {
	return s.deps.cfg.Record.Voices && s.rec.Load() != nil
}

// recordEvent notes a session event in the recording in progress.
func (s *Session) recordEvent(name string, data map[string]string) {
	if rec := s.rec.Load(); rec != nil {
		rec.Event(name, data)
	}
}

// statsSink feeds the HUD windows and the Prometheus histograms.
type statsSink struct{ s *Session }

func (k statsSink) Write(f *frame.Frame, _ *overlay.Metadata) error {
	t := f.Timings
	obs := [...]struct {
		stage string
		d     time.Duration
	}{{"queue", t.Queue}, {"preprocess", t.Preprocess}, {"infer", t.Infer}, {"decode", t.Decode},
		{"wait", t.Wait}, {"track", t.Track}, {"overlay", t.Overlay}, {"total", t.Total}}
	s := k.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range obs {
		// A frame that had no inference of its own has no preprocess,
		// infer or decode time; zeros would drag the percentiles down.
		if o.d == 0 && (o.stage == "preprocess" || o.stage == "infer" || o.stage == "decode") {
			continue
		}
		s.win[o.stage].Add(float64(o.d) / 1e6)
		s.deps.metrics.ObserveStage(s.id, o.stage, o.d)
	}
	return nil
}

func (statsSink) Close() error { return nil }

// relaySink keeps the relay open when a pipeline run ends.
type relaySink struct{ r *stream.Relay }

func (k relaySink) Write(f *frame.Frame, m *overlay.Metadata) error { return k.r.Write(f, m) }
func (relaySink) Close() error                                      { return nil }

// addG2G records glass-to-glass samples a page reported.
func (s *Session) addG2G(samples []float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.deps.metrics.GlassToGlass.WithLabelValues(s.id)
	for _, v := range samples {
		// A sample outside 0..10 s is a clock problem on that machine,
		// not a latency.
		if v <= 0 || v > 10000 {
			continue
		}
		s.g2g.Add(v)
		h.Observe(v / 1000)
	}
}

// lostAfter without a frame marks the source lost.
const lostAfter = 2 * time.Second

// state is "starting", "live" or "lost".
func (s *Session) state(rs stream.Stats) string {
	switch {
	case rs.LastFrame.IsZero():
		if msg, _ := s.errMsg.Load().(string); msg != "" {
			return "lost"
		}
		return "starting"
	case time.Since(rs.LastFrame) > lostAfter:
		return "lost"
	}
	return "live"
}

// statsMessage is the once-a-second WebSocket `stats` event.
type statsMessage struct {
	Type           string                 `json:"type"`
	Source         string                 `json:"source"`
	State          string                 `json:"state"`
	Error          string                 `json:"error,omitempty"`
	Model          string                 `json:"model"`
	FPS            float64                `json:"fps"`
	Frames         int                    `json:"frames"`
	Width          int                    `json:"width"`
	Height         int                    `json:"height"`
	BudgetMS       float64                `json:"budget_ms"`
	LatencyMS      map[string]Percentiles `json:"latency_ms"`
	DeadlineMisses uint64                 `json:"deadline_misses"`
	Skipped        uint64                 `json:"skipped"`
	Dropped        uint64                 `json:"dropped"`
	AI             string                 `json:"ai"`
	Viewers        int                    `json:"viewers"`
	BitrateKbps    float64                `json:"bitrate_kbps"`
	BurnIn         bool                   `json:"burn_in"`
	G2G            Percentiles            `json:"g2g_ms"`
	Restarts       int                    `json:"restarts"`
	// Recording is "recording", "off", or "failed: <why>" (the disk is
	// full, say): what is already on disk is kept, the live view goes on.
	Recording string       `json:"recording"`
	Voice     voiceSummary `json:"voice"`
	// Publisher is a whip:// source's publisher (codec, frames, loss),
	// absent while none is connected.
	Publisher *ingest.Stats `json:"publisher,omitempty"`
	// Egress is each WHIP server the stream is published to.
	Egress []egress.WHIPStats `json:"egress,omitempty"`
	// LiveKit is the publisher into the source's LiveKit room.
	LiveKit *sfu.PublisherStats `json:"livekit,omitempty"`
	// Organ is the wrong-preset guard's view (absent without a guard).
	Organ *organ.State `json:"organ,omitempty"`
}

// voiceSummary is the session's voices: microphones sending, packets
// forwarded and lost on full queues, and the relay's own share of the
// delay (read to written).
type voiceSummary struct {
	Microphones int     `json:"microphones"`
	Forwarded   uint64  `json:"forwarded"`
	Dropped     uint64  `json:"dropped"`
	WaitMeanMS  float64 `json:"wait_mean_ms"`
	WaitMaxMS   float64 `json:"wait_max_ms"`
}

func summariseVoice(vs []stream.ViewerStats) voiceSummary {
	var out voiceSummary
	var sum, most time.Duration
	for _, v := range vs {
		if v.Voice.Sending {
			out.Microphones++
		}
		out.Forwarded += v.Voice.Sent
		out.Dropped += v.Voice.Dropped
		sum += v.Voice.WaitSum
		most = max(most, v.Voice.WaitMax)
	}
	if out.Forwarded > 0 {
		out.WaitMeanMS = stats.Round3(float64(sum) / float64(out.Forwarded) / 1e6)
	}
	out.WaitMaxMS = stats.Round3(float64(most) / 1e6)
	return out
}

// Percentiles summarise a latency in milliseconds.
type Percentiles = stats.Percentiles

// stats builds the HUD message and updates the bitrate estimate.
func (s *Session) stats() statsMessage {
	rs := s.relay.Stats()
	_, model := s.models.current()
	m := statsMessage{Type: "stats", Source: s.id, State: s.state(rs), Model: model,
		Width: rs.Width, Height: rs.Height, LatencyMS: map[string]Percentiles{},
		Viewers: len(rs.Viewers), BurnIn: s.burnIn.Load(), Voice: summariseVoice(rs.Viewers)}
	if s.feed != nil {
		if p := s.feed.Publisher(); p != nil {
			st := p.Stats()
			m.Publisher = &st
		}
	}
	for _, eg := range s.egress {
		m.Egress = append(m.Egress, eg.Stats())
	}
	if s.livekit != nil {
		st := s.livekit.Stats()
		m.LiveKit = &st
	}
	if s.organ != nil {
		st := s.organ.State()
		m.Organ = &st
	}
	if msg, _ := s.errMsg.Load().(string); msg != "" && m.State != "live" {
		m.Error = msg
	}
	if p := s.pipe.Load(); p != nil {
		r := p.Snapshot()
		m.FPS, m.Frames, m.BudgetMS = r.FPS, r.Frames, r.BudgetMS
		m.DeadlineMisses, m.Skipped, m.Dropped = r.DeadlineMisses, r.Skipped, r.Dropped
		m.AI = p.AIStatus()
	}
	if m.State != "live" {
		m.FPS = 0
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for st, w := range s.win {
		m.LatencyMS[st] = w.Percentiles()
	}
	m.G2G = s.g2g.Percentiles()
	if !s.lastBAt.IsZero() {
		if dt := now.Sub(s.lastBAt).Seconds(); dt > 0.5 {
			s.bitrate = float64(rs.Bytes-s.lastB) * 8 / dt
			s.lastB, s.lastBAt = rs.Bytes, now
		}
	} else {
		s.lastB, s.lastBAt = rs.Bytes, now
	}
	m.BitrateKbps = stats.Round3(s.bitrate / 1000)
	m.Restarts = s.restarts
	m.Recording = "off"
	if rec := s.rec.Load(); rec != nil {
		m.Recording = "recording"
		if e := rec.Err(); e != "" {
			m.Recording = "failed: " + e
		}
	}
	return m
}

// snapshot is the session's counters for Prometheus.
func (s *Session) snapshot() metrics.Snapshot {
	rs := s.relay.Stats()
	snap := metrics.Snapshot{Source: s.id, Up: s.state(rs) == "live", EncodeErrors: rs.EncodeErrors, StreamBytes: rs.Bytes}
	if p := s.pipe.Load(); p != nil {
		r := p.Snapshot()
		snap.Frames, snap.DeadlineMisses, snap.Inferences, snap.Skipped = uint64(r.Frames), r.DeadlineMisses, r.Inferences, r.Skipped
		snap.Dropped = r.DroppedBy
	}
	s.mu.Lock()
	snap.BitrateBPS = s.bitrate
	s.mu.Unlock()
	if rec := s.rec.Load(); rec != nil {
		snap.Recording, snap.RecordDropped = true, rec.Dropped()
	}
	for _, v := range rs.Viewers {
		snap.Viewers = append(snap.Viewers, metrics.Viewer{ID: v.ID, Role: v.Role, Frames: v.Frames, Dropped: v.Dropped, MetaSent: v.MetaSent, MetaDropped: v.MetaDropped})
	}
	return snap
}

var errUnknownSource = errors.New("unknown source")
