// Package whepclient is a small WHEP player made of pion: it offers to
// receive H.264 and the metadata DataChannel, counts what arrives and
// leaves with DELETE. The loopback tests and `sonolive bench viewers` use
// it as a stand-in for a remote expert's browser.
package whepclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Options tune a session.
type Options struct {
	// Token goes in "Authorization: Bearer".
	Token string
	// NoMetadata offers video only, like a third-party WHEP player.
	NoMetadata bool
	// VP8 offers VP8 only, as Firefox does before it has OpenH264.
	VP8 bool
	// Consult opens the "consult" DataChannel, as the pages do.
	Consult bool
	// VoiceSlots offers this many Opus sections, as the pages do: the
	// first sends the session's microphone (SendVoice), all receive.
	VoiceSlots int
	// HTTP is the client for signalling (default: 10 s timeout).
	HTTP *http.Client
	// ICEServers are the STUN/TURN servers to gather with; RelayOnly
	// uses nothing but TURN relays (a network that lets nothing else
	// through).
	ICEServers []webrtc.ICEServer
	RelayOnly  bool
}

// Session is one connected viewer.
type Session struct {
	pc       *webrtc.PeerConnection
	vp8      bool
	consult  *webrtc.DataChannel
	received chan []byte // consult messages, newest dropped when full
	resource string
	http     *http.Client
	token    string
	started  time.Time

	mu        sync.Mutex
	frames    int
	keyframes int
	packets   int
	lost      int
	metas     int
	metaTS    map[uint32]bool
	matched   int
	firstKey  time.Time
	first     time.Time
	last      time.Time
	lastSeq   uint16
	haveSeq   bool
	bytes     int
	inKey     bool
	state     webrtc.PeerConnectionState
	frameTS   []uint32
	lastMeta  []byte
	readDelay time.Duration
	done      chan struct{}
	// For the delay from capture to arrival here: the capture time the
	// metadata names and the arrival of frames, by RTP timestamp, until
	// the other half arrives.
	captured map[uint32]float64
	arrived  map[uint32]time.Time
	delays   []time.Duration

	mic      *webrtc.TrackLocalStaticRTP
	micLevel uint8 // header extension id of the audio level, 0 until negotiated
	micSeq   uint16
	micTS    uint32
	voiceIn  map[string]int // packets received per audio section (mid)
}

// Stats is what a session has received.
type Stats struct {
	Frames, Keyframes, Packets, Lost, Bytes int
	// Metadata messages, and how many named the RTP timestamp of a frame
	// that arrived.
	Metadata, Matched int
	// FirstKeyframe is the time from Dial to the first decodable frame.
	FirstKeyframe time.Duration
	// Expected is how many frames the RTP timestamps span at the
	// stream's usual frame interval: Frames/Expected is the share
	// received, whatever the measurement window's edges.
	Expected int
	// FPS over the received frames.
	FPS float64
	// ArrivalP50 and ArrivalP95 are the delay from a frame's capture
	// (metadata capture_unix_ms) to its last packet here: glass-to-glass
	// less decode and display, on a clock shared with the server.
	ArrivalP50, ArrivalP95 time.Duration
	State                  string
	// Voice is the audio packets received per audio section (mid).
	Voice map[string]int
}

// HTTPError is a non-2xx answer from the server.
type HTTPError struct {
	Code int
	Body string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("whep: HTTP %d: %s", e.Code, e.Body) }

var opus = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}

func newAPI(vp8 bool) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	c := webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}},
	}, PayloadType: 102}
	if vp8 {
		c = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
			RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}},
		}, PayloadType: 96}
	}
	if err := m.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: opus, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICETimeouts(4*time.Second, 8*time.Second, time.Second)
	// pion waits 2 s before taking a relayed pair, hoping for a direct
	// one; browsers do not. Measured like a browser, a relay-only viewer
	// nominates at once.
	se.SetRelayAcceptanceMinWait(0)
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

// Dial offers to the WHEP endpoint at endpoint and returns once the answer
// is applied; media arrives in the background.
func Dial(ctx context.Context, endpoint string, opt Options) (*Session, error) {
	api, err := newAPI(opt.VP8)
	if err != nil {
		return nil, err
	}
	conf := webrtc.Configuration{ICEServers: opt.ICEServers}
	if opt.RelayOnly {
		conf.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(conf)
	if err != nil {
		return nil, err
	}
	s := &Session{pc: pc, vp8: opt.VP8, http: opt.HTTP, token: opt.Token, started: time.Now(), metaTS: map[uint32]bool{}, done: make(chan struct{}),
		received: make(chan []byte, 256), voiceIn: map[string]int{}, captured: map[uint32]float64{}, arrived: map[uint32]time.Time{}}
	if s.http == nil {
		s.http = &http.Client{Timeout: 10 * time.Second}
	}
	fail := func(err error) (*Session, error) { pc.Close(); return nil, err }
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return fail(err)
	}
	var micSender *webrtc.RTPSender
	for i := range opt.VoiceSlots {
		if i == 0 {
			mic, err := webrtc.NewTrackLocalStaticRTP(opus, "mic", "whepclient")
			if err != nil {
				return fail(err)
			}
			tr, err := pc.AddTransceiverFromTrack(mic, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv})
			if err != nil {
				return fail(err)
			}
			s.mic, micSender = mic, tr.Sender()
			continue
		}
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return fail(err)
		}
	}
	if !opt.NoMetadata {
		ordered, negotiated := false, true
		var retransmits, id uint16 = 0, 0
		dc, err := pc.CreateDataChannel("metadata", &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &retransmits, Negotiated: &negotiated, ID: &id})
		if err != nil {
			return fail(err)
		}
		dc.OnMessage(s.onMeta)
	}
	if opt.Consult {
		dc, err := pc.CreateDataChannel("consult", nil)
		if err != nil {
			return fail(err)
		}
		s.consult = dc
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			select {
			case s.received <- append([]byte(nil), m.Data...):
			default:
			}
		})
	}
	pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		if t.Kind() == webrtc.RTPCodecTypeAudio {
			mid := ""
			for _, tr := range pc.GetTransceivers() {
				if tr.Receiver() == r {
					mid = tr.Mid()
				}
			}
			go s.readVoice(t, mid)
			return
		}
		go s.readTrack(t)
	})
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		s.mu.Lock()
		s.state = st
		s.mu.Unlock()
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail(err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewBufferString(pc.LocalDescription().SDP))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	if opt.Token != "" {
		req.Header.Set("Authorization", "Bearer "+opt.Token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fail(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fail(&HTTPError{Code: resp.StatusCode, Body: string(bytes.TrimSpace(body))})
	}
	loc, err := resp.Location()
	if err != nil {
		return fail(fmt.Errorf("whep: answer without Location: %w", err))
	}
	s.resource = loc.String()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		return fail(fmt.Errorf("whep: bad answer: %w", err))
	}
	if micSender != nil {
		for _, e := range micSender.GetParameters().HeaderExtensions {
			if e.URI == sdp.AudioLevelURI {
				s.micLevel = uint8(e.ID)
			}
		}
		go func() {
			for {
				if _, _, err := micSender.ReadRTCP(); err != nil {
					return
				}
			}
		}()
	}
	return s, nil
}

// SendVoice sends one 20 ms packet of "microphone" audio with the given
// RFC 6464 level (0 loudest, 127 silence). The payload is not decoded on
// the way: any bytes do.
func (s *Session) SendVoice(payload []byte, level uint8) error {
	if s.mic == nil {
		return errors.New("whep: no microphone (Options.VoiceSlots)")
	}
	s.mu.Lock()
	s.micSeq++
	s.micTS += 960
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: s.micSeq, Timestamp: s.micTS}, Payload: payload}
	s.mu.Unlock()
	if s.micLevel != 0 {
		b, err := rtp.AudioLevelExtension{Level: level, Voice: level < 127}.Marshal()
		if err != nil {
			return err
		}
		if err := pkt.SetExtension(s.micLevel, b); err != nil {
			return err
		}
	}
	return s.mic.WriteRTP(pkt)
}

func (s *Session) readVoice(t *webrtc.TrackRemote, mid string) {
	for {
		if _, _, err := t.ReadRTP(); err != nil {
			return
		}
		s.mu.Lock()
		s.voiceIn[mid]++
		s.mu.Unlock()
	}
}

// SendConsult sends msg on the consult channel once it is open.
func (s *Session) SendConsult(ctx context.Context, msg []byte) error {
	if s.consult == nil {
		return errors.New("whep: no consult channel (Options.Consult)")
	}
	for s.consult.ReadyState() != webrtc.DataChannelStateOpen {
		select {
		case <-ctx.Done():
			return fmt.Errorf("whep: consult channel not open: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return s.consult.SendText(string(msg))
}

// Consult is where the consult messages from the server arrive.
func (s *Session) Consult() <-chan []byte { return s.received }

// Resource is the session's WHEP resource URL.
func (s *Session) Resource() string { return s.resource }

// SetReadDelay makes the viewer read each packet this late: a slow client.
func (s *Session) SetReadDelay(d time.Duration) {
	s.mu.Lock()
	s.readDelay = d
	s.mu.Unlock()
}

func (s *Session) onMeta(m webrtc.DataChannelMessage) {
	var msg struct {
		RTPTimestamp  uint32  `json:"rtp_ts"`
		CaptureUnixMS float64 `json:"capture_unix_ms"`
	}
	// The protocol sends text; a binary message is a server bug to see.
	if !m.IsString || json.Unmarshal(m.Data, &msg) != nil {
		return
	}
	s.mu.Lock()
	s.metas++
	s.metaTS[msg.RTPTimestamp] = true
	s.lastMeta = m.Data
	if msg.CaptureUnixMS > 0 {
		if at, ok := s.arrived[msg.RTPTimestamp]; ok {
			s.addDelay(at, msg.CaptureUnixMS)
			delete(s.arrived, msg.RTPTimestamp)
		} else {
			s.captured[msg.RTPTimestamp] = msg.CaptureUnixMS
			prune(s.captured)
		}
	}
	s.mu.Unlock()
}

func (s *Session) readTrack(t *webrtc.TrackRemote) {
	pkt := &rtp.Packet{}
	buf := make([]byte, 1600)
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		s.mu.Lock()
		d := s.readDelay
		s.onPacket(pkt, n)
		s.mu.Unlock()
		if d > 0 {
			time.Sleep(d)
		}
	}
}

// onPacket counts a packet; a frame is complete at its marker bit.
func (s *Session) onPacket(p *rtp.Packet, n int) {
	s.packets++
	s.bytes += n
	if s.haveSeq {
		if gap := p.SequenceNumber - s.lastSeq - 1; gap > 0 && gap < 1000 {
			s.lost += int(gap)
		}
	}
	s.lastSeq, s.haveSeq = p.SequenceNumber, true
	if (s.vp8 && isVP8Key(p.Payload)) || (!s.vp8 && IsIDR(p.Payload)) {
		s.inKey = true
	}
	if !p.Marker {
		return
	}
	now := time.Now()
	s.frames++
	if s.first.IsZero() {
		s.first = now
	}
	s.last = now
	if s.inKey {
		s.keyframes++
		if s.firstKey.IsZero() {
			s.firstKey = now
		}
	}
	s.inKey = false
	s.frameTS = append(s.frameTS, p.Timestamp)
	if ms, ok := s.captured[p.Timestamp]; ok {
		s.addDelay(now, ms)
		delete(s.captured, p.Timestamp)
	} else {
		s.arrived[p.Timestamp] = now
		prune(s.arrived)
	}
}

func (s *Session) addDelay(arrived time.Time, captureUnixMS float64) {
	s.delays = append(s.delays, arrived.Sub(time.UnixMicro(int64(captureUnixMS*1000))))
}

// prune forgets halves whose other half never came (a lost frame or
// message), keeping the map small.
func prune[V any](m map[uint32]V) {
	if len(m) > 300 {
		clear(m)
	}
}

// ExpectedFrames counts the frames between the first and last timestamp
// at the median interval.
func ExpectedFrames(ts []uint32) int {
	if len(ts) < 3 {
		return len(ts)
	}
	d := make([]int, 0, len(ts)-1)
	for i := 1; i < len(ts); i++ {
		d = append(d, int(int32(ts[i]-ts[i-1])))
	}
	sort.Ints(d)
	step := d[len(d)/2]
	if step <= 0 {
		return len(ts)
	}
	return int(math.Round(float64(int32(ts[len(ts)-1]-ts[0]))/float64(step))) + 1
}

// IsIDR looks for an IDR slice in an H.264 RTP payload (single NAL, STAP-A
// or the start of an FU-A).
func IsIDR(pl []byte) bool {
	if len(pl) < 2 {
		return false
	}
	switch pl[0] & 0x1f {
	case 5:
		return true
	case 24: // STAP-A
		for i := 1; i+2 < len(pl); {
			size := int(pl[i])<<8 | int(pl[i+1])
			if i+2 < len(pl) && pl[i+2]&0x1f == 5 {
				return true
			}
			i += 2 + size
		}
	case 28: // FU-A
		return pl[1]&0x80 != 0 && pl[1]&0x1f == 5
	}
	return false
}

// isVP8Key reports whether a VP8 RTP payload (RFC 7741) starts a
// keyframe: the first packet of partition 0 whose frame tag has P = 0.
func isVP8Key(pl []byte) bool {
	if len(pl) < 1 || pl[0]&0x10 == 0 || pl[0]&0x07 != 0 {
		return false
	}
	i := 1
	if pl[0]&0x80 != 0 { // X: extension byte
		if len(pl) < 2 {
			return false
		}
		x := pl[1]
		i = 2
		if x&0x80 != 0 { // I: picture id, 7 or 15 bits
			if len(pl) <= i {
				return false
			}
			if pl[i]&0x80 != 0 {
				i++
			}
			i++
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if x&0x30 != 0 { // T or K
			i++
		}
	}
	return i < len(pl) && pl[i]&0x01 == 0
}

// Stats returns what has arrived so far.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Frames: s.frames, Keyframes: s.keyframes, Packets: s.packets, Lost: s.lost, Bytes: s.bytes,
		Metadata: s.metas, State: s.state.String()}
	for _, ts := range s.frameTS {
		if s.metaTS[ts] {
			st.Matched++
		}
	}
	if !s.firstKey.IsZero() {
		st.FirstKeyframe = s.firstKey.Sub(s.started)
	}
	if s.frames > 1 {
		st.FPS = float64(s.frames-1) / s.last.Sub(s.first).Seconds()
	}
	st.Expected = ExpectedFrames(s.frameTS)
	if len(s.delays) > 0 {
		d := slices.Clone(s.delays)
		slices.Sort(d)
		st.ArrivalP50, st.ArrivalP95 = d[len(d)/2], d[len(d)*95/100]
	}
	st.Voice = map[string]int{}
	for mid, n := range s.voiceIn {
		st.Voice[mid] = n
	}
	return st
}

// LastMetadata is the newest DataChannel message.
func (s *Session) LastMetadata() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastMeta
}

// Reset zeroes the counters, to measure a window.
func (s *Session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames, s.keyframes, s.packets, s.lost, s.metas, s.bytes = 0, 0, 0, 0, 0, 0
	s.first, s.last = time.Time{}, time.Time{}
	s.frameTS = s.frameTS[:0]
	s.metaTS = map[uint32]bool{}
	s.delays = s.delays[:0]
}

// Close leaves with DELETE and closes the peer connection.
func (s *Session) Close(ctx context.Context) error {
	var errs []error
	if s.resource != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.resource, nil)
		if err == nil {
			if s.token != "" {
				req.Header.Set("Authorization", "Bearer "+s.token)
			}
			resp, err := s.http.Do(req)
			if err != nil {
				errs = append(errs, err)
			} else {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
					errs = append(errs, &HTTPError{Code: resp.StatusCode})
				}
			}
		}
	}
	errs = append(errs, s.pc.Close())
	return errors.Join(errs...)
}

// Path is the selected candidate pair's local and remote candidate types
// (host, srflx, prflx, relay) and the local candidate's protocol: how the
// media reaches this viewer.
func (s *Session) Path() (local, remote, protocol string) {
	for _, st := range s.pc.GetStats() {
		pair, ok := st.(webrtc.ICECandidatePairStats)
		if !ok || !pair.Nominated || pair.State != webrtc.StatsICECandidatePairStateSucceeded {
			continue
		}
		for _, st2 := range s.pc.GetStats() {
			switch c := st2.(type) {
			case webrtc.ICECandidateStats:
				if c.ID == pair.LocalCandidateID {
					local, protocol = c.CandidateType.String(), c.Protocol
				}
				if c.ID == pair.RemoteCandidateID {
					remote = c.CandidateType.String()
				}
			}
		}
		return local, remote, protocol
	}
	return "", "", ""
}
