// Package egress sends a session's stream out of the box to servers that
// fan it out further: any WHIP server (LiveKit's ingress, MediaMTX,
// OvenMediaEngine, another sonolive). It takes the H.264 the relay already
// encoded, as a relay tap: no second encode, and a slow or unreachable
// server never holds the relay up.
package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"go.uber.org/zap"

	"sonolive/internal/retry"
	"sonolive/internal/tapqueue"
	"sonolive/stream"
)

// WHIPConfig points a session at a WHIP endpoint.
type WHIPConfig struct {
	// URL is the WHIP endpoint; Token goes in "Authorization: Bearer".
	URL, Token string
	// ICEServers for the publishing peer.
	ICEServers func() []webrtc.ICEServer
	// RequestKeyframe asks the session's encoder for a keyframe (on
	// connect and on the server's PLI).
	RequestKeyframe func()
	Logger          *zap.Logger
	// HTTP for the WHIP requests (default: 10 s timeout).
	HTTP *http.Client
}

// WHIPStats are a WHIP egress's counters.
type WHIPStats struct {
	State      string `json:"state"` // connecting, live, retrying
	Sent       uint64 `json:"sent"`
	Dropped    uint64 `json:"dropped"`
	Reconnects uint64 `json:"reconnects"`
	LastError  string `json:"last_error,omitempty"`
}

// WHIP publishes to one endpoint, reconnecting with backoff until its
// Run's context ends.
type WHIP struct {
	cfg WHIPConfig
	log *zap.Logger
	// queue holds the relay's frames for the connection.
	q *tapqueue.Queue

	sent, reconnects atomic.Uint64
	mu               sync.Mutex
	state, lastErr   string
}

// NewWHIP returns an egress; add it as a relay tap and Run it.
func NewWHIP(cfg WHIPConfig) *WHIP {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.RequestKeyframe == nil {
		cfg.RequestKeyframe = func() {}
	}
	return &WHIP{cfg: cfg, log: cfg.Logger.With(zap.String("whip", redact(cfg.URL))), q: tapqueue.New(60, cfg.RequestKeyframe), state: "connecting"}
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(bad url)"
	}
	p.RawQuery, p.User = "", nil
	return p.String()
}

// WriteFrame implements stream.Tap; it never blocks.
func (w *WHIP) WriteFrame(f *stream.EncodedFrame) { w.q.WriteFrame(f) }

// Stats are its counters now.
func (w *WHIP) Stats() WHIPStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WHIPStats{State: w.state, Sent: w.sent.Load(), Dropped: w.q.Dropped(), Reconnects: w.reconnects.Load(), LastError: w.lastErr}
}

func (w *WHIP) setState(state string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state = state
	if err != nil {
		w.lastErr = err.Error()
	}
}

// Run publishes until ctx ends: a lost or refused connection is retried
// after 1 s, doubling to 30 s.
func (w *WHIP) Run(ctx context.Context) {
	retry.Loop(ctx, retry.Default, w.session, func(err error, wait time.Duration) {
		w.reconnects.Add(1)
		w.setState("retrying", err)
		w.log.Warn("WHIP egress lost; retrying", zap.Error(err), zap.Duration("backoff", wait))
	})
}

// ErrRefused: the WHIP server answered the offer with an error.
var ErrRefused = errors.New("WHIP server refused the offer")

// session is one connection: offer, answer, frames until it fails.
func (w *WHIP) session(ctx context.Context) error {
	w.setState("connecting", nil)
	m := &webrtc.MediaEngine{}
	h264 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: h264, PayloadType: 102}, webrtc.RTPCodecTypeVideo); err != nil {
		return err
	}
	var servers []webrtc.ICEServer
	if w.cfg.ICEServers != nil {
		servers = w.cfg.ICEServers()
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m)).NewPeerConnection(webrtc.Configuration{ICEServers: servers})
	if err != nil {
		return err
	}
	defer pc.Close()
	track, err := webrtc.NewTrackLocalStaticSample(h264, "video", "sonolive")
	if err != nil {
		return err
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		return err
	}
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	var disconnected *time.Timer
	defer func() {
		if disconnected != nil {
			disconnected.Stop()
		}
	}()
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			w.setState("live", nil)
			if disconnected != nil {
				disconnected.Stop()
			}
		case webrtc.PeerConnectionStateDisconnected:
			// Often a moment's loss that ICE rides out; give up after 5 s.
			disconnected = time.AfterFunc(5*time.Second, func() { fail(errors.New("connection disconnected for 5 s")) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			fail(fmt.Errorf("connection %s", s))
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return ctx.Err()
	}
	answer, resource, err := w.post(ctx, pc.LocalDescription().SDP)
	if err != nil {
		return err
	}
	defer w.delete(resource)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("WHIP answer: %w", err)
	}
	// The server's PLIs ask the encoder for a keyframe.
	go func() {
		for {
			pkts, _, err := sender.ReadRTCP()
			if err != nil {
				return
			}
			for _, p := range pkts {
				if _, ok := p.(*rtcp.PictureLossIndication); ok {
					w.cfg.RequestKeyframe()
				}
			}
		}
	}()
	w.q.Open()
	defer w.q.Close()
	var lastTS uint32
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-failed:
			return err
		case f := <-w.q.Frames():
			d := time.Second / 30
			if lastTS != 0 && f.RTPTime != lastTS {
				d = time.Duration(f.RTPTime-lastTS) * time.Second / 90000
			}
			lastTS = f.RTPTime
			if err := track.WriteSample(media.Sample{Data: f.AU, Duration: d}); err != nil && !errors.Is(err, io.ErrClosedPipe) {
				return err
			}
			w.sent.Add(1)
		}
	}
}

func (w *WHIP) post(ctx context.Context, offer string) (answer, resource string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, strings.NewReader(offer))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if w.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+w.cfg.Token)
	}
	resp, err := w.cfg.HTTP.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusCreated {
		return "", "", fmt.Errorf("%w: %s: %s", ErrRefused, resp.Status, strings.TrimSpace(string(b)))
	}
	loc := resp.Header.Get("Location")
	if loc != "" {
		if base, err := url.Parse(w.cfg.URL); err == nil {
			if u, err := base.Parse(loc); err == nil {
				loc = u.String()
			}
		}
	}
	return string(b), loc, nil
}

// delete ends the WHIP session on the server, best effort.
func (w *WHIP) delete(resource string) {
	if resource == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, resource, nil)
	if err != nil {
		return
	}
	// The token goes only back to the server it was made for, not to
	// wherever a Location header points.
	if base, err := url.Parse(w.cfg.URL); err == nil && w.cfg.Token != "" && base.Scheme == req.URL.Scheme && base.Host == req.URL.Host {
		req.Header.Set("Authorization", "Bearer "+w.cfg.Token)
	}
	if resp, err := w.cfg.HTTP.Do(req); err == nil {
		resp.Body.Close()
	}
}
