package stream

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"go.uber.org/zap"
)

// The session's voices: each page may send its microphone (Opus) and
// receives the others' on audio slots it offered. The relay forwards
// packets, it does not mix: for the handful of people in a consultation a
// mixer would only add a decode, an encode and its delay. Slots are fixed
// at negotiation (WHEP has no renegotiation); which participant a slot
// carries changes as people come and go, and the server tells each page
// (Viewer.VoiceSlots) so it can label what it hears.

// MaxVoiceSlots bounds the audio sections of one offer: a page hears at
// most this many others at once.
const MaxVoiceSlots = 4

// voiceQueue is a viewer's outbound audio queue in packets: 20 ms each,
// so 1.3 s. A browser on a busy machine sends its voice in bursts of a
// few hundred ms at once (seen here: 22 packets); beyond that the viewer
// loses packets (counted): voice that late is worse than a gap.
const voiceQueue = 64

// speakingLevel is the loudest -dBov a packet may carry (RFC 6464) and still
// count as silence; speakingHold keeps a speaker "speaking" between words.
const (
	speakingLevel = 50
	speakingHold  = 400 * time.Millisecond
)

// opusCodec is the voice codec every WebRTC browser has.
var opusCodec = webrtc.RTPCodecCapability{
	MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
}

// voiceSlot is one audio section of a viewer's connection: the track we
// send on, and whose voice it carries.
type voiceSlot struct {
	track  *webrtc.TrackLocalStaticRTP
	sender *webrtc.RTPSender
	from   string // the viewer heard on it, "" when free; guarded by Relay.mu

	// The RTP stream seen by the browser stays one stream while the
	// speakers change: sequence and timestamp offsets, rebased at each
	// change. The writer goroutine only.
	src             string
	seqOff, lastSeq uint16
	tsOff, lastTS   uint32
	started         bool
	lastWrite       time.Time
}

// voicePacket is one packet queued for a viewer's slot.
type voicePacket struct {
	slot int
	from string
	pkt  *rtp.Packet
	at   time.Time // read from the sender: the forward's own delay
}

// voice is a viewer's audio: what it sends (the microphone, once the page
// sends it) and the slots it hears the others on.
type voice struct {
	slots []*voiceSlot
	q     chan voicePacket

	in            atomic.Bool  // its microphone's packets are arriving
	loudAt        atomic.Int64 // unix ns of the last packet above speakingLevel
	packetsIn     atomic.Uint64
	sent, dropped atomic.Uint64
	// The time packets spend in the relay, read to written: the sum (for
	// the mean) and the most.
	waitSum, waitMax atomic.Int64 // ns
}

// addVoiceSlots adds one send track per audio section of the offer (up to
// MaxVoiceSlots), each taking that section's transceiver.
func addVoiceSlots(pc *webrtc.PeerConnection, source string, n int) ([]*voiceSlot, error) {
	n = min(n, MaxVoiceSlots)
	slots := make([]*voiceSlot, 0, n)
	for i := range n {
		track, err := webrtc.NewTrackLocalStaticRTP(opusCodec, "voice", "sonolive-voice-"+source+"-"+string(rune('0'+i)))
		if err != nil {
			return nil, err
		}
		sender, err := pc.AddTrack(track)
		if err != nil {
			return nil, err
		}
		slots = append(slots, &voiceSlot{track: track, sender: sender})
	}
	return slots, nil
}

// VoiceSlots returns, per audio slot the page offered, the id of the viewer
// whose voice it carries ("" when none), in the order of the page's audio
// sections.
func (v *Viewer) VoiceSlots() []string {
	v.relay.mu.RLock()
	defer v.relay.mu.RUnlock()
	out := make([]string, len(v.voice.slots))
	for i, s := range v.voice.slots {
		out[i] = s.from
	}
	return out
}

// Speaking reports whether the viewer's microphone carried speech in the
// last moments (from the RFC 6464 audio level its browser puts on each
// packet; a muted microphone sends silence).
func (v *Viewer) Speaking() bool {
	at := v.voice.loudAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < speakingHold
}

// SendsVoice reports whether the viewer's microphone packets arrive.
func (v *Viewer) SendsVoice() bool { return v.voice.in.Load() }

// assignVoices gives every viewer's free slots to the others not yet heard
// there, in join order; slots of viewers that left are freed first.
// Callers hold r.mu for writing.
func (r *Relay) assignVoices() {
	order := make([]*Viewer, 0, len(r.viewers))
	for _, v := range r.viewers {
		order = append(order, v)
	}
	// Join order, so the slots a page already uses keep their speakers.
	for i := 1; i < len(order); i++ {
		for j := i; j > 0 && order[j].joined.Before(order[j-1].joined); j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	for _, v := range order {
		heard := map[string]bool{}
		for _, s := range v.voice.slots {
			if _, ok := r.viewers[s.from]; !ok || s.from == v.id {
				s.from = ""
			}
			if s.from != "" {
				heard[s.from] = true
			}
		}
		for _, o := range order {
			if o == v || heard[o.id] {
				continue
			}
			for _, s := range v.voice.slots {
				if s.from == "" {
					s.from = o.id
					heard[o.id] = true
					break
				}
			}
		}
	}
}

// receiveVoice reads the viewer's microphone track and forwards each
// packet to the others' slots. Started by pion's OnTrack.
func (v *Viewer) receiveVoice(t *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	if t.Kind() != webrtc.RTPCodecTypeAudio {
		return
	}
	v.spawn(func() {
		var levelID uint8
		for _, e := range recv.GetParameters().HeaderExtensions {
			if e.URI == sdp.AudioLevelURI {
				levelID = uint8(e.ID)
			}
		}
		v.relay.log.Info("voice arriving", zap.String("viewer", v.id), zap.String("codec", t.Codec().MimeType))
		v.voice.in.Store(true)
		defer v.voice.in.Store(false)
		for {
			pkt, _, err := t.ReadRTP()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
					v.relay.log.Debug("voice read", zap.String("viewer", v.id), zap.Error(err))
				}
				return
			}
			v.voice.packetsIn.Add(1)
			if levelID != 0 {
				var l rtp.AudioLevelExtension
				if b := pkt.GetExtension(levelID); b != nil && l.Unmarshal(b) == nil && l.Level <= speakingLevel {
					v.voice.loudAt.Store(time.Now().UnixNano())
				}
			}
			// The receivers negotiated their own header extensions.
			pkt.Header.Extension = false
			pkt.Header.Extensions = nil
			now := time.Now()
			v.relay.forwardVoice(v.id, pkt, now)
			if f := v.relay.cfg.OnVoice; f != nil {
				f(v, pkt, now)
			}
		}
	})
}

// forwardVoice queues pkt, from viewer from, on every slot that carries
// from. It never blocks: a full queue loses the packet for that viewer.
func (r *Relay) forwardVoice(from string, pkt *rtp.Packet, at time.Time) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for id, o := range r.viewers {
		if id == from {
			continue
		}
		for i, s := range o.voice.slots {
			if s.from != from {
				continue
			}
			select {
			case o.voice.q <- voicePacket{slot: i, from: from, pkt: pkt, at: at}:
			default:
				o.voice.dropped.Add(1)
			}
			break
		}
	}
}

// voiceLoop writes the viewer's queued voice packets. One per viewer.
func (v *Viewer) voiceLoop() {
	defer v.wg.Done()
	for {
		select {
		case <-v.ctx.Done():
			return
		case p := <-v.voice.q:
			s := v.voice.slots[p.slot]
			pkt := *p.pkt // the header is ours to change; the payload is shared, read only
			s.rewrite(p.from, &pkt)
			if err := s.track.WriteRTP(&pkt); err != nil {
				if errors.Is(err, io.ErrClosedPipe) {
					return
				}
				v.voice.dropped.Add(1)
				continue
			}
			v.voice.sent.Add(1)
			w := int64(time.Since(p.at))
			v.voice.waitSum.Add(w)
			if w > v.voice.waitMax.Load() {
				v.voice.waitMax.Store(w) // one writer: this loop
			}
		}
	}
}

// rewrite makes pkt continue the slot's stream: when the speaker changes,
// the new one's sequence follows on and its timestamps go on from where the
// last left off plus the wall time in between, so the browser's jitter
// buffer sees one stream, not a jump it would wait out.
func (s *voiceSlot) rewrite(from string, pkt *rtp.Packet) {
	now := time.Now()
	if s.src != from {
		if s.started {
			gap := uint32(now.Sub(s.lastWrite).Seconds() * float64(opusCodec.ClockRate))
			s.seqOff = s.lastSeq + 1 - pkt.SequenceNumber
			s.tsOff = s.lastTS + max(gap, 960) - pkt.Timestamp
		} else {
			s.seqOff, s.tsOff = 0, 0
		}
		s.src = from
	}
	pkt.SequenceNumber += s.seqOff
	pkt.Timestamp += s.tsOff
	s.lastSeq, s.lastTS, s.lastWrite, s.started = pkt.SequenceNumber, pkt.Timestamp, now, true
}

// drainRTCP reads a voice sender's RTCP so pion's interceptors see it.
func (v *Viewer) drainRTCP(sender *webrtc.RTPSender) {
	defer v.wg.Done()
	for {
		if _, _, err := sender.ReadRTCP(); err != nil {
			return
		}
	}
}

// VoiceStats are a viewer's audio counters.
type VoiceStats struct {
	Slots     int    `json:"slots"`
	Sending   bool   `json:"sending"`
	Speaking  bool   `json:"speaking"`
	PacketsIn uint64 `json:"packets_in"`
	Sent      uint64 `json:"sent"`
	Dropped   uint64 `json:"dropped"`
	// WaitSum and WaitMax are the time the packets sent to this viewer
	// spent in the relay, read to written.
	WaitSum time.Duration `json:"wait_sum_ns"`
	WaitMax time.Duration `json:"wait_max_ns"`
}

func (v *Viewer) voiceStats() VoiceStats {
	return VoiceStats{Slots: len(v.voice.slots), Sending: v.SendsVoice(), Speaking: v.Speaking(),
		PacketsIn: v.voice.packetsIn.Load(), Sent: v.voice.sent.Load(), Dropped: v.voice.dropped.Load(),
		WaitSum: time.Duration(v.voice.waitSum.Load()), WaitMax: time.Duration(v.voice.waitMax.Load())}
}
