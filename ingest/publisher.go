// Package ingest takes video in from WHIP publishers: a browser sharing
// the probe app's window, OBS, a phone app. A Point per source holds at
// most one publisher at a time; the publisher's RTP is reordered and
// reassembled into access units, and GStreamer decodes them (libavcodec's
// H.264 decoder, libvpx's VP8) into the frames any capture source gives.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
	"go.uber.org/zap"
)

// Errors callers test for.
var (
	// ErrNoVideo: the offer has no video section sonolive can take
	// (H.264 or VP8).
	ErrNoVideo = errors.New("no H.264 or VP8 video in the offer")
	// ErrBusy: the source already has a publisher.
	ErrBusy = errors.New("the source already has a publisher")
)

// queueLen bounds the access units waiting for the decoder: about a
// second at 30 fps. When it is full the newest unit is dropped and the
// publisher is asked for a keyframe: the decoder must not fall behind.
const queueLen = 30

// accessUnit is one encoded frame.
type accessUnit struct {
	data []byte
	key  bool
	ts   uint32
}

// Publisher is one WHIP publisher's connection and the frames it sends.
type Publisher struct {
	// Owner is the id of the link it published with, set by the server:
	// the same link publishing again (a device reconnecting) replaces it.
	Owner string

	id  string
	pc  *webrtc.PeerConnection
	log *zap.Logger

	aus  chan accessUnit
	done chan struct{}
	once sync.Once

	codec   atomic.Value // string: "H264" or "VP8", once the track arrives
	ssrc    atomic.Uint32
	needKey atomic.Bool
	lastPLI atomic.Int64 // unix ns

	packets, lost, frames, dropped, keyframes, plis atomic.Uint64
	started                                         time.Time
}

// Stats is what a publisher has sent so far.
type Stats struct {
	ID        string  `json:"id"`
	Codec     string  `json:"codec"`
	Packets   uint64  `json:"packets"`
	Lost      uint64  `json:"lost"`
	Frames    uint64  `json:"frames"`
	Dropped   uint64  `json:"dropped"`
	Keyframes uint64  `json:"keyframes"`
	PLIs      uint64  `json:"plis"`
	FPS       float64 `json:"fps"`
}

// NewPublisher answers a WHIP offer: a receive-only video connection
// whose answer carries every local candidate (no trickle needed).
func NewPublisher(ctx context.Context, api *webrtc.API, cfg webrtc.Configuration, id, offer string, log *zap.Logger) (*Publisher, string, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offer); err != nil {
		return nil, "", fmt.Errorf("bad SDP: %w", err)
	}
	if !hasVideo(&sd) {
		return nil, "", ErrNoVideo
	}
	pc, err := api.NewPeerConnection(cfg)
	if err != nil {
		return nil, "", err
	}
	p := &Publisher{id: id, pc: pc, log: log.With(zap.String("publisher", id)), aus: make(chan accessUnit, queueLen),
		done: make(chan struct{}), started: time.Now()}
	p.codec.Store("")
	p.needKey.Store(true)
	fail := func(err error) (*Publisher, string, error) {
		p.Close()
		return nil, "", err
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return fail(err)
	}
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if t.Kind() == webrtc.RTPCodecTypeVideo {
			go p.read(t)
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed || s == webrtc.PeerConnectionStateDisconnected {
			p.Close()
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fail(fmt.Errorf("bad offer: %w", err))
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail(err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	local := pc.LocalDescription().SDP
	var ans sdp.SessionDescription
	if ans.UnmarshalString(local) != nil || !hasVideo(&ans) {
		return fail(ErrNoVideo)
	}
	return p, local, nil
}

// hasVideo reports whether a description has a live video section with
// H.264 or VP8.
func hasVideo(sd *sdp.SessionDescription) bool {
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media != "video" || m.MediaName.Port.Value == 0 {
			continue
		}
		for _, a := range m.Attributes {
			if a.Key == "rtpmap" {
				v := strings.ToUpper(a.Value)
				if strings.Contains(v, " H264/") || strings.Contains(v, " VP8/") {
					return true
				}
			}
		}
	}
	return false
}

// ID is the publisher's id (the WHIP resource).
func (p *Publisher) ID() string { return p.id }

// Done is closed when the publisher has gone.
func (p *Publisher) Done() <-chan struct{} { return p.done }

// Close ends the connection.
func (p *Publisher) Close() {
	p.once.Do(func() {
		close(p.done)
		go p.pc.Close() // not on pion's callback goroutine
	})
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	st := Stats{ID: p.id, Codec: p.codec.Load().(string), Packets: p.packets.Load(), Lost: p.lost.Load(), Frames: p.frames.Load(),
		Dropped: p.dropped.Load(), Keyframes: p.keyframes.Load(), PLIs: p.plis.Load()}
	if d := time.Since(p.started).Seconds(); d > 0 {
		st.FPS = float64(st.Frames) / d
	}
	return st
}

// requestKeyframe sends a PLI, at most one per 300 ms.
func (p *Publisher) requestKeyframe() {
	now := time.Now().UnixNano()
	last := p.lastPLI.Load()
	if now-last < int64(300*time.Millisecond) || !p.lastPLI.CompareAndSwap(last, now) {
		return
	}
	if err := p.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: p.ssrc.Load()}}); err == nil {
		p.plis.Add(1)
	}
}

// read reassembles the track's frames in order and queues them for the
// decoder. A gap in the sequence numbers, or a full queue, drops frames
// until the next keyframe, which is asked for at once: a decoder fed a
// frame whose references are missing shows smeared garbage.
func (p *Publisher) read(t *webrtc.TrackRemote) {
	defer p.Close()
	p.ssrc.Store(uint32(t.SSRC()))
	var dep rtp.Depacketizer
	codec := ""
	switch strings.ToLower(t.Codec().MimeType) {
	case strings.ToLower(webrtc.MimeTypeH264):
		dep, codec = &codecs.H264Packet{}, "H264"
	case strings.ToLower(webrtc.MimeTypeVP8):
		dep, codec = &codecs.VP8Packet{}, "VP8"
	default:
		p.log.Warn("unsupported codec", zap.String("codec", t.Codec().MimeType))
		return
	}
	p.codec.Store(codec)
	p.log.Info("publishing", zap.String("codec", codec))
	sb := samplebuilder.New(128, dep, t.Codec().ClockRate, samplebuilder.WithPacketReleaseHandler(func(*rtp.Packet) {}))
	p.requestKeyframe()
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	var lastSeq uint16
	haveSeq := false
	for {
		pkt, _, err := t.ReadRTP()
		if err != nil {
			return
		}
		p.packets.Add(1)
		if haveSeq {
			if gap := pkt.SequenceNumber - lastSeq - 1; gap > 0 && gap < 1000 {
				p.lost.Add(uint64(gap))
			}
		}
		lastSeq, haveSeq = pkt.SequenceNumber, true
		sb.Push(pkt)
		for s := sb.Pop(); s != nil; s = sb.Pop() {
			if s.PrevDroppedPackets > 0 {
				p.needKey.Store(true)
			}
			key := isKeyframe(codec, s.Data)
			if p.needKey.Load() && !key {
				p.dropped.Add(1)
				p.requestKeyframe()
				continue
			}
			if key {
				p.needKey.Store(false)
				p.keyframes.Add(1)
			}
			select {
			case p.aus <- accessUnit{data: s.Data, key: key, ts: s.PacketTimestamp}:
				p.frames.Add(1)
			default:
				p.dropped.Add(1)
				p.needKey.Store(true)
				p.requestKeyframe()
			}
		}
		select {
		case <-ticker.C:
			if p.needKey.Load() {
				p.requestKeyframe()
			}
		default:
		}
	}
}

// isKeyframe looks for an IDR slice (H.264, Annex B) or a VP8 key frame.
func isKeyframe(codec string, au []byte) bool {
	if codec == "VP8" {
		return len(au) > 0 && au[0]&0x01 == 0
	}
	for i := 0; i+3 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 && au[i+3]&0x1f == 5 {
			return true
		}
	}
	return false
}
