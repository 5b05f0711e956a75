package stream

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/zap"
)

// How a viewer joins and leaves a relay: its offer checked, its peer
// connection negotiated, its place among the viewers held and released.

// AddViewer answers a WHEP offer: a new viewer that will receive the video
// (and the metadata DataChannel when the offer has an application
// section). A browser that offers no H.264 but VP8 gets the VP8 layer,
// started for it. The answer carries all our ICE candidates.
func (r *Relay) AddViewer(ctx context.Context, offer, role string) (*Viewer, string, error) {
	if r.cfg.API == nil {
		return nil, "", fmt.Errorf("%w: this relay takes no viewers", ErrClosed)
	}
	o, err := checkOffer(offer, !r.cfg.VP8.Disabled)
	if err != nil {
		return nil, "", err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, "", ErrClosed
	}
	// The place is taken before negotiating (which unlocks for seconds),
	// so parallel offers cannot all pass the check.
	if len(r.viewers)+r.joining >= r.cfg.MaxViewers {
		r.mu.Unlock()
		return nil, "", fmt.Errorf("%w: %d", ErrFull, r.cfg.MaxViewers)
	}
	r.joining++
	r.nextID++
	id := fmt.Sprintf("v%d-%04x", r.nextID, rand.Uint32()&0xffff)
	r.mu.Unlock()
	joined := false
	defer func() {
		if !joined {
			r.mu.Lock()
			r.joining--
			r.mu.Unlock()
		}
	}()

	var servers []webrtc.ICEServer
	if r.cfg.ICEServers != nil {
		servers = r.cfg.ICEServers()
	}
	pc, est, err := r.cfg.API.newPeerConnection(webrtc.Configuration{ICEServers: servers})
	if err != nil {
		return nil, "", fmt.Errorf("stream: peer connection: %w", err)
	}
	v, answer, err := r.negotiate(ctx, pc, id, role, offer, o)
	if err != nil {
		pc.Close()
		return nil, "", err
	}
	r.mu.Lock()
	joined = true
	r.joining--
	if r.closed {
		r.mu.Unlock()
		v.close("relay closed")
		return nil, "", ErrClosed
	}
	if o.codec == vp8Codec.MimeType {
		if r.vp8 == nil {
			r.vp8 = newVP8Layer(r)
		}
		v.layer.Store(r.vp8)
	}
	v.bwe = est
	r.viewers[id] = v
	r.assignVoices()
	n := len(r.viewers)
	r.mu.Unlock()
	v.start()
	v.requestKeyframe()
	r.log.Info("viewer joined", zap.String("viewer", id), zap.String("role", role), zap.String("codec", o.codec),
		zap.Int("voice_slots", o.audio), zap.Int("viewers", n))
	r.emit(ViewerEvent{Event: "joined", ID: id, Role: role, Viewers: n})
	return v, answer, nil
}

func (r *Relay) negotiate(ctx context.Context, pc *webrtc.PeerConnection, id, role, offer string, o offerInfo) (*Viewer, string, error) {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	capability := h264Codec
	if o.codec == vp8Codec.MimeType {
		capability = vp8Codec
	}
	track, err := webrtc.NewTrackLocalStaticRTP(capability, "video", "sonolive-"+r.cfg.Source)
	if err != nil {
		return nil, "", err
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		return nil, "", fmt.Errorf("stream: add track: %w", err)
	}
	slots, err := addVoiceSlots(pc, r.cfg.Source, o.audio)
	if err != nil {
		return nil, "", fmt.Errorf("stream: voice: %w", err)
	}
	var dc *webrtc.DataChannel
	if o.hasApp {
		ordered, negotiated := false, true
		var retransmits, chID uint16 = 0, 0
		dc, err = pc.CreateDataChannel("metadata", &webrtc.DataChannelInit{
			Ordered: &ordered, MaxRetransmits: &retransmits, Negotiated: &negotiated, ID: &chID,
		})
		if err != nil {
			return nil, "", fmt.Errorf("stream: data channel: %w", err)
		}
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	select {
	case <-gathered:
	case <-time.After(r.cfg.GatherTimeout):
		r.log.Warn("ICE gathering incomplete; answering with what we have", zap.String("viewer", id))
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	v := newViewer(r, id, role, pc, track, sender, dc, slots)
	return v, pc.LocalDescription().SDP, nil
}

// Viewer returns the viewer with id.
func (r *Relay) Viewer(id string) (*Viewer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.viewers[id]
	return v, ok
}

// RemoveViewer disconnects a viewer and waits for its goroutines.
func (r *Relay) RemoveViewer(id, reason string) error {
	r.mu.Lock()
	v, ok := r.viewers[id]
	delete(r.viewers, id)
	r.assignVoices()
	n := len(r.viewers)
	var idle []*layer
	if ok {
		for _, l := range []**layer{&r.vp8, &r.small} {
			if *l != nil && v.layer.Load() == *l && !r.layerInUse(*l) {
				idle = append(idle, *l)
				*l = nil
			}
		}
	}
	r.mu.Unlock()
	if !ok {
		return ErrNoViewer
	}
	v.close(reason)
	for _, l := range idle {
		l.close()
	}
	st := v.Stats()
	r.log.Info("viewer left", zap.String("viewer", id), zap.String("reason", reason), zap.Int("viewers", n),
		zap.Uint64("frames_sent", st.Frames), zap.Uint64("frames_dropped", st.Dropped))
	r.emit(ViewerEvent{Event: "left", ID: id, Role: v.role, Viewers: n, Reason: reason})
	return nil
}

// layerInUse reports whether a viewer still takes l. Callers hold r.mu.
func (r *Relay) layerInUse(l *layer) bool {
	for _, v := range r.viewers {
		if v.layer.Load() == l {
			return true
		}
	}
	return false
}

func (r *Relay) emit(ev ViewerEvent) {
	if r.cfg.OnViewer != nil {
		ev.Source = r.cfg.Source
		r.cfg.OnViewer(ev)
	}
}
