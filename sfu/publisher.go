// Package sfu scales a session's audience out on LiveKit, a distributed
// SFU: the box publishes its annotated video and the frame-keyed metadata
// into one room, once, and LiveKit's nodes fan it out to hundreds of
// viewers. sonolive mints the room's tokens for its own invites, so who
// may watch is still decided by sonolive's roles.
//
// Video goes as the relay's own RTP packets, at the timestamps the
// metadata names (LiveKit forwards a single-layer track's timestamps as
// they come), and the metadata as reliable data packets on topic "metadata":
// a viewer matches them exactly as it matches the DataChannel's.
package sfu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"go.uber.org/zap"

	"sonolive/internal/retry"
	"sonolive/internal/tapqueue"
	"sonolive/stream"
)

// MetadataTopic is the data packets' topic.
const MetadataTopic = "metadata"

// PublisherConfig points a session at a LiveKit room.
type PublisherConfig struct {
	// URL is the LiveKit server (ws:// or wss://); Key and Secret an API
	// key pair of it.
	URL, Key, Secret string
	Room, Identity   string
	// RequestKeyframe asks the session's encoder for a keyframe (on
	// connect and on LiveKit's PLI, when a viewer joins).
	RequestKeyframe func()
	Logger          *zap.Logger
}

// PublisherStats are a publisher's counters.
type PublisherStats struct {
	Room       string `json:"room"`
	State      string `json:"state"` // connecting, live, retrying
	Sent       uint64 `json:"sent"`
	Dropped    uint64 `json:"dropped"`
	Reconnects uint64 `json:"reconnects"`
	LastError  string `json:"last_error,omitempty"`
}

// Publisher is a relay tap that publishes into one room, reconnecting
// with backoff until its Run's context ends.
type Publisher struct {
	cfg PublisherConfig
	log *zap.Logger
	// queue holds the relay's frames for the room.
	q *tapqueue.Queue

	sent, reconnects atomic.Uint64
	mu               sync.Mutex
	state, lastErr   string
}

// NewPublisher returns a publisher; add it as a relay tap and Run it.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.RequestKeyframe == nil {
		cfg.RequestKeyframe = func() {}
	}
	return &Publisher{cfg: cfg, log: cfg.Logger.With(zap.String("livekit_room", cfg.Room)),
		q: tapqueue.New(60, cfg.RequestKeyframe), state: "connecting"}
}

// WriteFrame implements stream.Tap; it never blocks.
func (p *Publisher) WriteFrame(f *stream.EncodedFrame) { p.q.WriteFrame(f) }

// Stats are its counters now.
func (p *Publisher) Stats() PublisherStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PublisherStats{Room: p.cfg.Room, State: p.state, Sent: p.sent.Load(), Dropped: p.q.Dropped(),
		Reconnects: p.reconnects.Load(), LastError: p.lastErr}
}

func (p *Publisher) setState(state string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = state
	if err != nil {
		p.lastErr = err.Error()
	}
}

// Run publishes until ctx ends: a lost or refused connection is retried
// after 1 s, doubling to 30 s.
func (p *Publisher) Run(ctx context.Context) {
	retry.Loop(ctx, retry.Default, p.session, func(err error, wait time.Duration) {
		p.reconnects.Add(1)
		p.setState("retrying", err)
		p.log.Warn("LiveKit publishing stopped, retrying", zap.Error(err), zap.Duration("in", wait))
	})
}

// session joins the room, publishes the track and sends frames until the
// room is lost or ctx ends.
func (p *Publisher) session(ctx context.Context) error {
	p.setState("connecting", nil)
	lost := make(chan error, 1)
	cb := lksdk.NewRoomCallback()
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		select {
		case lost <- fmt.Errorf("sfu: disconnected from the room: %s", reason):
		default:
		}
	}
	room, err := lksdk.ConnectToRoom(p.cfg.URL, lksdk.ConnectInfo{APIKey: p.cfg.Key, APISecret: p.cfg.Secret,
		RoomName: p.cfg.Room, ParticipantIdentity: p.cfg.Identity, ParticipantName: "sonolive"}, cb,
		lksdk.WithAutoSubscribe(false), lksdk.WithConnectTimeout(15*time.Second),
		lksdk.WithLogger(logger.GetDiscardLogger()))
	if err != nil {
		return fmt.Errorf("sfu: joining %s: %w", p.cfg.Room, err)
	}
	defer room.Disconnect()
	track, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
		lksdk.WithRTCPHandler(func(pkt rtcp.Packet) {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				p.cfg.RequestKeyframe()
			}
		}))
	if err != nil {
		return err
	}
	if _, err := room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "sonolive", Source: livekit.TrackSource_CAMERA}); err != nil {
		return fmt.Errorf("sfu: publishing the video: %w", err)
	}
	p.q.Open()
	defer p.q.Close()
	p.setState("live", nil)
	p.log.Info("publishing into the LiveKit room")
	var (
		payloader codecs.H264Payloader
		seq       uint16
	)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-lost:
			return err
		case f := <-p.q.Frames():
			if err := p.send(room, track, &payloader, &seq, f); err != nil {
				return err
			}
		}
	}
}

// send writes one frame's packets and its metadata.
func (p *Publisher) send(room *lksdk.Room, track *lksdk.LocalTrack, payloader *codecs.H264Payloader, seq *uint16, f *stream.EncodedFrame) error {
	for _, pkt := range stream.Packetize(payloader, f.AU, f.RTPTime) {
		pkt.SequenceNumber = *seq
		*seq++
		if err := track.WriteRTP(pkt, nil); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			return fmt.Errorf("sfu: writing video: %w", err)
		}
	}
	p.sent.Add(1)
	if f.Meta == nil {
		return nil
	}
	msg, err := stream.MetadataMessage(f.Meta, f.RTPTime, f.Key)
	if err != nil {
		return err
	}
	// Reliable: LiveKit drops lossy packets to a subscriber whose buffer
	// is filling (a busy browser), and a frame's metadata sent right after
	// its video arrives in time unless the link is lossy.
	if err := room.LocalParticipant.PublishDataPacket(lksdk.UserData(msg), lksdk.WithDataPublishTopic(MetadataTopic),
		lksdk.WithDataPublishReliable(true)); err != nil {
		p.log.Debug("metadata packet not sent", zap.Error(err))
	}
	return nil
}
