// Package stream takes the annotated frames out of the pipeline to the
// people watching: it encodes each frame once (H.264, x264), packetises it
// once into RTP and fans the same packets out to every WebRTC viewer, each
// with its own bounded send queue, and sends every frame's findings on the
// viewer's DataChannel keyed by the frame's RTP timestamp. A slow viewer
// drops frames and waits for the next keyframe; it never slows the source or
// the other viewers.
package stream

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/frame"
	"sonolive/internal/stats"
	"sonolive/overlay"
)

// Errors callers map to HTTP statuses.
var (
	// ErrBadOffer: the offer is not SDP, or offers nothing we can send.
	ErrBadOffer = errors.New("bad SDP offer")
	// ErrFull: the relay has its maximum number of viewers.
	ErrFull = errors.New("too many viewers")
	// ErrNoViewer: no viewer with that id.
	ErrNoViewer = errors.New("no such viewer")
	// ErrClosed: the relay is shutting down.
	ErrClosed = errors.New("relay closed")
	// ErrTooManyCandidates: a viewer trickled more ICE candidates than
	// any real client has.
	ErrTooManyCandidates = errors.New("too many ICE candidates")
)

// Config sets up a relay for one source.
type Config struct {
	Source  string
	Encoder EncoderConfig
	// VP8 sets the fallback encoding for browsers without H.264; it runs
	// only while such a viewer is connected.
	VP8 VP8Config
	// API builds the peer connections (NewAPI); shared by all relays so
	// they can share one UDP port. Nil: no viewers, taps only (offline
	// recording).
	API *API
	// ICEServers gives the STUN/TURN servers for a new peer (TURN
	// credentials are minted per peer); nil: host candidates only.
	ICEServers func() []webrtc.ICEServer
	// Adapt sets the small H.264 layer that viewers on a poor link are
	// moved to (adapt.go).
	Adapt AdaptConfig
	// ViewerQueue is each viewer's send queue in frames (default 15,
	// half a second at 30 fps): a viewer that falls further behind drops.
	ViewerQueue int
	// MaxViewers bounds the number of viewers (default 100).
	MaxViewers int
	// MetaBuffer is the most DataChannel bytes queued for one viewer
	// before its metadata messages are dropped (default 256 KiB).
	MetaBuffer int
	// GatherTimeout bounds ICE gathering before an answer goes out
	// (default 2 s).
	GatherTimeout time.Duration
	// KeyframeGap is the shortest gap between keyframes forced on
	// request, so a burst of joins or PLIs costs one keyframe (default
	// 200 ms).
	KeyframeGap time.Duration
	// FrameClock stamps frames from their count at Encoder.FPS instead of
	// their capture time: an offline run reads a file faster than real
	// time, but its recording must play at the file's pace.
	FrameClock bool
	// OnViewer, when set, hears about viewers joining and leaving. It must
	// not block.
	OnViewer func(ViewerEvent)
	// OnConsult, when set, receives each message a viewer sends on its
	// consult channel, on that channel's goroutine (one per viewer). It
	// must not block for long; it is the only reader of the messages.
	OnConsult func(v *Viewer, msg []byte)
	// OnConsultOpen, when set, hears that a viewer's consult channel has
	// opened (to send it the session's state so far).
	OnConsultOpen func(v *Viewer)
	// OnVoice, when set, receives each packet of a viewer's voice as it
	// arrives (shared: read only). It must not block.
	OnVoice func(v *Viewer, pkt *rtp.Packet, at time.Time)
	// OnEncode, when set, receives each frame's encode time and size.
	OnEncode func(d time.Duration, bytes int)
	Logger   *zap.Logger
}

// ViewerEvent tells that a viewer joined or left.
type ViewerEvent struct {
	Source  string `json:"source"`
	Event   string `json:"event"` // "joined" or "left"
	ID      string `json:"id"`
	Role    string `json:"role"`
	Viewers int    `json:"viewers"`
	Reason  string `json:"reason,omitempty"`
}

// Relay is one source's encoder and its viewers. It is a pipeline sink.
type Relay struct {
	cfg       Config
	log       *zap.Logger
	enc       *Encoder
	payloader codecs.H264Payloader

	// Written only by the sink goroutine (Write).
	tsBase uint32
	t0     time.Time
	lastTS uint32

	keys keyGate

	mu      sync.RWMutex
	viewers map[string]*Viewer
	joining int // viewers negotiating: they hold a place under MaxViewers
	taps    []Tap
	vp8     *layer // while a VP8 viewer is connected
	small   *layer // while a viewer on a poor link takes it (adapt.go)
	closed  bool
	nextID  uint64

	smu       sync.Mutex // guards the stats below
	frames    uint64
	keyframes uint64
	bytes     uint64
	encErrs   uint64
	lastErr   string
	encode    stats.Samples // capped: summarised every second for days
	lastFrame time.Time
	width     int
	height    int
}

// mtu leaves room for SRTP and TURN headers on common paths.
const mtu = 1200

// New returns a relay; Write feeds it.
func New(cfg Config) (*Relay, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.ViewerQueue <= 0 {
		cfg.ViewerQueue = 15
	}
	if cfg.MaxViewers <= 0 {
		cfg.MaxViewers = 100
	}
	if cfg.MetaBuffer <= 0 {
		cfg.MetaBuffer = 256 << 10
	}
	if cfg.GatherTimeout <= 0 {
		cfg.GatherTimeout = 2 * time.Second
	}
	if cfg.KeyframeGap <= 0 {
		cfg.KeyframeGap = 200 * time.Millisecond
	}
	cfg.Adapt.defaults()
	return &Relay{
		cfg: cfg, log: cfg.Logger.With(zap.String("source", cfg.Source)),
		enc:     NewEncoder(cfg.Encoder),
		tsBase:  rand.Uint32(),
		viewers: map[string]*Viewer{},
		encode:  stats.Samples{Cap: stats.LiveCap},
	}, nil
}

// sample is one encoded frame, shared read-only by every viewer.
type sample struct {
	seq  uint64
	ts   uint32
	key  bool
	pkts []*rtp.Packet
	meta string // JSON, sent as a text message as docs/streaming.md says
}

// wireMeta is the DataChannel message: the frame's metadata plus the RTP
// timestamp that ties it to the video frame.
type wireMeta struct {
	*overlay.Metadata
	RTPTimestamp uint32 `json:"rtp_ts"`
	// Keyframe marks a keyframe's metadata: a viewer behind an SFU that
	// shifts the timestamps (LiveKit, for viewers who join late) learns
	// the shift from the first keyframe it gets.
	Keyframe bool `json:"keyframe,omitempty"`
}

// MetadataMessage is a frame's metadata as viewers get it, keyed to the
// frame by its RTP timestamp: the DataChannel's text message, and a
// LiveKit data packet's payload.
func MetadataMessage(meta *overlay.Metadata, ts uint32, key bool) ([]byte, error) {
	return json.Marshal(wireMeta{Metadata: meta, RTPTimestamp: ts, Keyframe: key})
}

// Write encodes one annotated frame and queues it to every viewer. Encode
// failures are counted and logged, never returned: the pipeline would
// disable the sink, and one bad frame must not end the stream.
func (r *Relay) Write(f *frame.Frame, meta *overlay.Metadata) error {
	if r.keys.due(r.cfg.KeyframeGap) {
		r.enc.ForceKeyframe()
	}
	t0 := time.Now()
	au, key, err := r.enc.Encode(f.Image)
	d := time.Since(t0)
	if err != nil {
		r.smu.Lock()
		r.encErrs++
		n := r.encErrs
		r.lastErr = err.Error()
		r.smu.Unlock()
		if n == 1 || n%100 == 0 {
			r.log.Error("encode failed", zap.Uint64("seq", f.Seq), zap.Uint64("encode_errors", n), zap.Error(err))
		}
		return nil
	}
	if key {
		r.keys.sent(t0)
	}
	if r.cfg.OnEncode != nil {
		r.cfg.OnEncode(d, len(au))
	}

	// RTP time follows capture time, so the browser's jitter buffer sees
	// the source's real pacing and the timestamp maps back to capture.
	if r.t0.IsZero() {
		r.t0 = f.Captured
	}
	ts := r.tsBase + uint32(f.Captured.Sub(r.t0).Seconds()*90000)
	if r.cfg.FrameClock {
		ts = r.tsBase + uint32(float64(r.frames)*90000/r.enc.cfg.FPS)
	}
	if r.frames > 0 && int32(ts-r.lastTS) <= 0 {
		ts = r.lastTS + 1
	}
	r.lastTS = ts

	s := &sample{seq: f.Seq, ts: ts, key: key, pkts: packetize(&r.payloader, au, ts)}
	mb, err := MetadataMessage(meta, ts, key)
	if err != nil {
		return fmt.Errorf("stream: metadata: %w", err)
	}
	s.meta = string(mb)

	r.smu.Lock()
	r.frames++
	r.bytes += uint64(len(au))
	if key {
		r.keyframes++
	}
	r.encode.Add(d)
	r.lastFrame = time.Now()
	r.width, r.height = f.Image.Cols(), f.Image.Rows()
	r.smu.Unlock()

	r.mu.RLock()
	for _, v := range r.viewers {
		if v.layer.Load() == nil {
			v.offer(s)
		}
	}
	if r.vp8 != nil {
		r.vp8.push(f.Image, f.Seq, ts, s.meta)
	}
	if r.small != nil {
		r.small.push(f.Image, f.Seq, ts, s.meta)
	}
	if len(r.taps) > 0 {
		ef := &EncodedFrame{AU: au, Key: key, RTPTime: ts, Seq: f.Seq, Captured: f.Captured, Image: f.Image, Meta: meta}
		for _, t := range r.taps {
			t.WriteFrame(ef)
		}
	}
	r.mu.RUnlock()
	return nil
}

// EncodedFrame is one frame as the relay encoded it, handed to taps.
type EncodedFrame struct {
	// AU is the H.264 access unit (Annex B), shared: read only.
	AU       []byte
	Key      bool
	RTPTime  uint32 // 90 kHz, the same timestamp the viewers get
	Seq      uint64
	Captured time.Time
	// Image is the annotated frame, valid only during WriteFrame.
	Image gocv.Mat
	Meta  *overlay.Metadata
}

// Tap receives every encoded frame on the relay's goroutine, after the
// viewers have theirs. It must not block: the recorder queues and returns.
type Tap interface {
	WriteFrame(f *EncodedFrame)
}

// AddTap starts handing frames to t, from a keyframe requested now.
func (r *Relay) AddTap(t Tap) {
	r.mu.Lock()
	r.taps = append(r.taps, t)
	r.mu.Unlock()
	r.requestKeyframe()
}

// RemoveTap stops handing frames to t; no call is in progress once it
// returns.
func (r *Relay) RemoveTap(t Tap) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.taps {
		if x == t {
			r.taps = append(r.taps[:i], r.taps[i+1:]...)
			return
		}
	}
}

// RequestKeyframe asks the encoder for a keyframe soon (coalesced).
func (r *Relay) RequestKeyframe() { r.requestKeyframe() }

// requestKeyframe asks for an IDR soon; requests within KeyframeGap of the
// last keyframe coalesce into one.
func (r *Relay) requestKeyframe() { r.keys.request() }

// Close disconnects every viewer and frees the encoder. The pipeline's
// sink Close does not call it: a relay outlives a source that reconnects.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	ids := make([]string, 0, len(r.viewers))
	for id := range r.viewers {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	for _, id := range ids {
		r.RemoveViewer(id, "server stopping")
	}
	return r.enc.Close()
}

// Stats is a snapshot of the relay.
type Stats struct {
	Frames       uint64        `json:"frames"`
	Keyframes    uint64        `json:"keyframes"`
	Bytes        uint64        `json:"bytes"`
	EncodeErrors uint64        `json:"encode_errors"`
	LastError    string        `json:"last_error,omitempty"`
	EncodeMS     Percentiles   `json:"encode_ms"`
	LastFrame    time.Time     `json:"last_frame"`
	Width        int           `json:"width"`
	Height       int           `json:"height"`
	Viewers      []ViewerStats `json:"viewers"`
	// Layers are the extra encodings running now (the VP8 fallback, the
	// small H.264 layer).
	Layers []LayerStats `json:"layers,omitempty"`
}

// Percentiles summarise a latency in milliseconds.
type Percentiles = stats.Percentiles

// Stats returns counters and every viewer's counters.
func (r *Relay) Stats() Stats {
	r.smu.Lock()
	s := Stats{Frames: r.frames, Keyframes: r.keyframes, Bytes: r.bytes, EncodeErrors: r.encErrs, LastError: r.lastErr,
		EncodeMS: r.encode.Percentiles(), LastFrame: r.lastFrame, Width: r.width, Height: r.height}
	r.smu.Unlock()
	r.mu.RLock()
	for _, v := range r.viewers {
		s.Viewers = append(s.Viewers, v.Stats())
	}
	for _, l := range []*layer{r.vp8, r.small} {
		if l != nil {
			s.Layers = append(s.Layers, l.stats())
		}
	}
	r.mu.RUnlock()
	return s
}

// ViewerStats returns every viewer's counters, without the relay's own
// (whose percentiles cost a sort).
func (r *Relay) ViewerStats() []ViewerStats {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]ViewerStats, 0, len(r.viewers))
	for _, v := range r.viewers {
		out = append(out, v.Stats())
	}
	return out
}

// FrameSize is the size of the last frame written (0×0 before the first).
func (r *Relay) FrameSize() (w, h int) {
	r.smu.Lock()
	defer r.smu.Unlock()
	return r.width, r.height
}

// ViewerCount is the number of connected viewers.
func (r *Relay) ViewerCount() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.viewers)
}
