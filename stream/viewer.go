package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"go.uber.org/zap"
)

// Viewer is one WebRTC peer watching a relay.
type Viewer struct {
	relay   *Relay
	id      string
	role    string
	joined  time.Time
	pc      *webrtc.PeerConnection
	track   *webrtc.TrackLocalStaticRTP
	sender  *webrtc.RTPSender
	dc      *webrtc.DataChannel // nil when the offer had no application section
	consult consultChannel      // the page's consult channel, once it opens one
	// layer is the extra encoding the viewer takes (VP8, or the small
	// H.264 layer on a poor link), nil for the relay's own H.264. Changed
	// only under the relay's lock, so the relay's and the layers' loops
	// (which hold it shared) see each frame go to one source.
	layer atomic.Pointer[layer]
	// bwe estimates the viewer's bandwidth (nil: not estimated);
	// estimate is its last reading, switches counts layer changes.
	bwe      cc.BandwidthEstimator
	estimate atomic.Int64
	switches atomic.Uint64

	// q is the bounded send queue. offer (relay goroutine) never blocks on
	// it: when full the frame is dropped and the viewer waits for the next
	// keyframe, since H.264 after a gap would only show corruption.
	q       chan *sample
	waitKey atomic.Bool
	// write sends one packet; swappable so tests can slow one viewer down.
	write atomic.Pointer[func(*rtp.Packet) error]
	seq   uint16 // the viewer's own RTP sequence: no gaps when it drops

	frames, dropped, waiting atomic.Uint64
	metaSent, metaDropped    atomic.Uint64
	plis                     atomic.Uint64
	trickled                 atomic.Int64
	state                    atomic.Value // webrtc.PeerConnectionState

	voice voice

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	// spawnMu and closing keep goroutines started from pion's callbacks
	// (a track arriving) out of wg once close waits on it.
	spawnMu sync.Mutex
	closing bool
}

func newViewer(r *Relay, id, role string, pc *webrtc.PeerConnection, track *webrtc.TrackLocalStaticRTP, sender *webrtc.RTPSender, dc *webrtc.DataChannel, slots []*voiceSlot) *Viewer {
	ctx, cancel := context.WithCancel(context.Background())
	v := &Viewer{relay: r, id: id, role: role, joined: time.Now(), pc: pc, track: track, sender: sender, dc: dc,
		q: make(chan *sample, r.cfg.ViewerQueue), ctx: ctx, cancel: cancel,
		voice: voice{slots: slots, q: make(chan voicePacket, voiceQueue)}}
	w := track.WriteRTP
	v.write.Store(&w)
	v.waitKey.Store(true)
	v.state.Store(pc.ConnectionState())
	return v
}

// ID is the viewer's id, the last element of its WHEP resource URL.
func (v *Viewer) ID() string { return v.id }

// Role is the role of the token the viewer joined with.
func (v *Viewer) Role() string { return v.role }

func (v *Viewer) start() {
	v.pc.OnDataChannel(v.acceptConsult)
	v.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		v.state.Store(s)
		switch s {
		case webrtc.PeerConnectionStateConnected:
			v.requestKeyframe()
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			// Not from inside pion's callback: RemoveViewer waits for
			// pion's goroutines.
			go v.relay.RemoveViewer(v.id, "connection "+s.String())
		}
	})
	v.pc.OnTrack(v.receiveVoice)
	v.wg.Add(3 + len(v.voice.slots))
	go v.sendLoop()
	go v.rtcpLoop()
	go v.voiceLoop()
	// VP8 has one size; H.264 viewers move between the main encode and
	// the small layer.
	if v.bwe != nil && v.layer.Load() == nil && !v.relay.cfg.Adapt.Disabled {
		v.wg.Add(1)
		go v.adaptLoop()
	}
	for _, s := range v.voice.slots {
		go v.drainRTCP(s.sender)
	}
}

// spawn runs f on a goroutine close waits for, unless the viewer is
// closing already.
func (v *Viewer) spawn(f func()) {
	v.spawnMu.Lock()
	defer v.spawnMu.Unlock()
	if v.closing {
		return
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		f()
	}()
}

// offer queues s without blocking; called for every frame by the relay.
func (v *Viewer) offer(s *sample) {
	if v.waitKey.Load() && !s.key {
		v.waiting.Add(1)
		return
	}
	select {
	case v.q <- s:
		if s.key {
			v.waitKey.Store(false)
		}
	default:
		v.dropped.Add(1)
		if !v.waitKey.Swap(true) {
			v.relay.log.Debug("viewer behind; dropping to next keyframe", zap.String("viewer", v.id), zap.Uint64("seq", s.seq))
		}
		v.requestKeyframe()
	}
}

// requestKeyframe asks the viewer's encoder for a keyframe soon.
func (v *Viewer) requestKeyframe() {
	if l := v.layer.Load(); l != nil {
		l.requestKeyframe()
		return
	}
	v.relay.requestKeyframe()
}

func (v *Viewer) sendLoop() {
	defer v.wg.Done()
	for {
		select {
		case <-v.ctx.Done():
			return
		case s := <-v.q:
			if err := v.send(s); err != nil {
				if !errors.Is(err, io.ErrClosedPipe) {
					v.relay.log.Warn("viewer send failed", zap.String("viewer", v.id), zap.Uint64("seq", s.seq), zap.Error(err))
				}
				return
			}
		}
	}
}

// send writes the frame's metadata, then its packets: the findings should
// be in the browser before the frame is on screen.
func (v *Viewer) send(s *sample) error {
	if v.dc != nil && v.dc.ReadyState() == webrtc.DataChannelStateOpen {
		// SCTP buffers without bound; a viewer that cannot keep up loses
		// metadata rather than our memory.
		if int(v.dc.BufferedAmount()) > v.relay.cfg.MetaBuffer {
			v.metaDropped.Add(1)
		} else if err := v.dc.SendText(s.meta); err != nil {
			v.metaDropped.Add(1)
		} else {
			v.metaSent.Add(1)
		}
	}
	for _, p := range s.pkts {
		pkt := *p
		pkt.SequenceNumber = v.seq
		v.seq++
		if err := (*v.write.Load())(&pkt); err != nil {
			return err
		}
	}
	v.frames.Add(1)
	return nil
}

// rtcpLoop reads the viewer's RTCP, which also lets pion's interceptors
// (NACK responder, reports) work, and turns PLI/FIR into a keyframe.
func (v *Viewer) rtcpLoop() {
	defer v.wg.Done()
	for {
		pkts, _, err := v.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				v.plis.Add(1)
				v.requestKeyframe()
			}
		}
	}
}

// MaxCandidates bounds the ICE candidates one viewer may send, in its offer
// and trickled: a browser has a handful per interface; more is an attempt
// to make the server probe addresses for someone.
const MaxCandidates = 32

// AddCandidates applies a trickle-ICE SDP fragment (RFC 8840). Candidates
// past MaxCandidates, and candidates for addresses no peer can have
// (unspecified, multicast, broadcast), are refused before any is applied.
func (v *Viewer) AddCandidates(frag string) error {
	cands, err := ParseTrickle(frag)
	if err != nil {
		return err
	}
	if n := v.trickled.Add(int64(len(cands))); n > MaxCandidates {
		v.trickled.Add(-int64(len(cands)))
		return fmt.Errorf("%w: %d trickled (at most %d per viewer)", ErrTooManyCandidates, n, MaxCandidates)
	}
	for _, c := range cands {
		if err := v.pc.AddICECandidate(c); err != nil {
			return fmt.Errorf("%w: candidate %q: %v", ErrBadOffer, c.Candidate, err)
		}
	}
	return nil
}

// ParseTrickle reads a trickle-ICE SDP fragment into candidates, checking
// each one's address. It applies nothing.
func ParseTrickle(frag string) ([]webrtc.ICECandidateInit, error) {
	if len(frag) > 64<<10 {
		return nil, fmt.Errorf("%w: fragment of %d bytes", ErrBadOffer, len(frag))
	}
	var out []webrtc.ICECandidateInit
	mid := ""
	for _, line := range strings.Split(strings.ReplaceAll(frag, "\r\n", "\n"), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "a=mid:"):
			mid = strings.TrimPrefix(line, "a=mid:")
		case strings.HasPrefix(line, "a=candidate:"):
			if len(out) >= MaxCandidates {
				return nil, fmt.Errorf("%w: more than %d in one fragment", ErrTooManyCandidates, MaxCandidates)
			}
			cand := strings.TrimPrefix(line, "a=")
			ic, err := ice.UnmarshalCandidate(cand)
			if err != nil {
				return nil, fmt.Errorf("%w: candidate %q: %v", ErrBadOffer, line, err)
			}
			if err := checkCandidateAddr(ic.Address()); err != nil {
				return nil, fmt.Errorf("%w: candidate %q: %v", ErrBadOffer, line, err)
			}
			c := webrtc.ICECandidateInit{Candidate: cand}
			if mid != "" {
				m := mid
				c.SDPMid = &m
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// checkCandidateAddr refuses addresses no viewer can be reached at. Host
// names (mDNS .local candidates) are left to ICE.
func checkCandidateAddr(addr string) error {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		if strings.HasSuffix(addr, ".local") {
			return nil
		}
		return fmt.Errorf("address %q is neither an IP nor an mDNS name", addr)
	}
	if ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("address %s cannot be a peer", ip)
	}
	return nil
}

func (v *Viewer) close(reason string) {
	v.closeOnce.Do(func() {
		v.spawnMu.Lock()
		v.closing = true
		v.spawnMu.Unlock()
		v.cancel()
		if err := v.pc.Close(); err != nil {
			v.relay.log.Debug("closing peer connection", zap.String("viewer", v.id), zap.Error(err))
		}
		v.wg.Wait()
	})
}

// ViewerStats are one viewer's counters.
type ViewerStats struct {
	ID     string    `json:"id"`
	Role   string    `json:"role"`
	Codec  string    `json:"codec"`
	State  string    `json:"state"`
	Joined time.Time `json:"joined"`
	// Frames sent; Dropped because the queue was full; Waiting skipped
	// while waiting for a keyframe (after joining or a drop).
	Frames      uint64 `json:"frames"`
	Dropped     uint64 `json:"dropped"`
	Waiting     uint64 `json:"waiting"`
	MetaSent    uint64 `json:"meta_sent"`
	MetaDropped uint64 `json:"meta_dropped"`
	PLIs        uint64 `json:"plis"`
	Queued      int    `json:"queued"`
	// Consult messages received from and sent to the page, and dropped
	// (over the rate or size limit, or the channel backed up).
	ConsultIn      uint64 `json:"consult_in"`
	ConsultOut     uint64 `json:"consult_out"`
	ConsultDropped uint64 `json:"consult_dropped"`
	// Voice: the viewer's microphone and the slots it hears the others on.
	Voice VoiceStats `json:"voice"`
	// Layer is the encoding the viewer takes: main, h264-small (a poor
	// link) or vp8; EstimateBPS its link's estimated bandwidth (0 when
	// not estimated); LayerSwitches how often it changed layer.
	Layer         string `json:"layer"`
	EstimateBPS   int64  `json:"estimate_bps"`
	LayerSwitches uint64 `json:"layer_switches"`
}

// Stats returns the viewer's counters.
func (v *Viewer) Stats() ViewerStats {
	st, _ := v.state.Load().(webrtc.PeerConnectionState)
	codec, layer := "H264", "main"
	if l := v.layer.Load(); l != nil {
		layer = l.codec
		if l.codec == "vp8" {
			codec = "VP8"
		}
	}
	return ViewerStats{ID: v.id, Role: v.role, Codec: codec, Layer: layer, EstimateBPS: v.estimate.Load(), LayerSwitches: v.switches.Load(),
		State: st.String(), Joined: v.joined,
		Frames: v.frames.Load(), Dropped: v.dropped.Load(), Waiting: v.waiting.Load(),
		MetaSent: v.metaSent.Load(), MetaDropped: v.metaDropped.Load(), PLIs: v.plis.Load(), Queued: len(v.q),
		ConsultIn: v.consult.in.Load(), ConsultOut: v.consult.out.Load(), ConsultDropped: v.consult.dropped.Load(),
		Voice: v.voiceStats()}
}
