package stream

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/gcc"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// h264Codec is what we send: constrained baseline 3.1, packetization mode
// 1, the profile every WebRTC browser (Safari included) must decode.
var h264Codec = webrtc.RTPCodecCapability{
	MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
	SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
	RTCPFeedback: []webrtc.RTCPFeedback{
		{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}, {Type: "goog-remb"},
	},
}

// vp8Codec is the fallback for viewers whose browser decodes no H.264
// (Firefox until it has downloaded OpenH264, which a clinic network
// without internet access never lets it do).
var vp8Codec = webrtc.RTPCodecCapability{
	MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
	RTCPFeedback: []webrtc.RTCPFeedback{
		{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}, {Type: "goog-remb"},
	},
}

// APIConfig sets up the WebRTC stack shared by all relays.
type APIConfig struct {
	// UDPPort, when non-zero, multiplexes every peer on this one UDP port
	// (what a firewall rule or a container's port mapping needs);
	// otherwise each peer takes an ephemeral port.
	UDPPort int
	// NAT1To1IPs are public addresses to advertise when the box sits
	// behind a static NAT.
	NAT1To1IPs []string
	// IncludeLoopback offers 127.0.0.1 candidates: needed when viewer and
	// server share a host without another interface (tests, kiosks).
	IncludeLoopback bool
	// TCPPort, when non-zero, also takes ICE over TCP on this port
	// (RFC 6544 passive candidates): a viewer whose network passes
	// nothing but TCP reaches the box without a TURN server.
	TCPPort int
}

// API builds the viewers' peer connections, each with its own bandwidth
// estimate (Google congestion control over the browser's transport-wide
// feedback), which chooses the viewer's layer (adapt.go).
type API struct {
	api *webrtc.API
	// mu makes a peer connection's creation and the hand-off of its
	// estimator one step: the interceptor announces the estimator while
	// NewPeerConnection runs, with no way to tell which connection it is.
	mu      sync.Mutex
	pending cc.BandwidthEstimator
	// receiver takes media in (WHIP publishers): the same ICE settings
	// and UDP port, H.264 of any common profile and VP8, NACK and
	// receiver reports, no congestion control of its own.
	receiver *webrtc.API
}

// Receiver is the API for peer connections that receive video (WHIP
// ingest), sharing this API's ICE settings and UDP port.
func (a *API) Receiver() *webrtc.API { return a.receiver }

// newPeerConnection returns a peer connection and its bandwidth estimator.
func (a *API) newPeerConnection(c webrtc.Configuration) (*webrtc.PeerConnection, cc.BandwidthEstimator, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending = nil
	pc, err := a.api.NewPeerConnection(c)
	est := a.pending
	a.pending = nil
	return pc, est, err
}

// The estimate starts where the main stream sends, so a viewer is not put
// on the small layer before the first feedback; it is bounded to what a
// viewer can use.
const (
	bweInitial = 2_500_000
	bweMin     = 100_000
	bweMax     = 8_000_000
)

// NewAPI builds the WebRTC API: H.264, VP8 for the fallback layer, Opus
// for the voices, NACK/RTCP reports/TWCC interceptors, a bandwidth
// estimate per peer connection, and the ICE settings of cfg. The returned
// closer releases the shared UDP port.
func NewAPI(cfg APIConfig) (*API, func() error, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: h264Codec, PayloadType: 102}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, nil, fmt.Errorf("stream: register H.264: %w", err)
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: vp8Codec, PayloadType: 96}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, nil, fmt.Errorf("stream: register VP8: %w", err)
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: opusCodec, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, nil, fmt.Errorf("stream: register Opus: %w", err)
	}
	// The audio level on each voice packet tells who is speaking without
	// decoding; the mid lets a microphone whose SSRC the offer did not
	// name (a track added after the offer) be matched to its section.
	for _, uri := range []string{sdp.AudioLevelURI, sdp.SDESMidURI} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: uri}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, nil, fmt.Errorf("stream: register %s: %w", uri, err)
		}
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, nil, fmt.Errorf("stream: interceptors: %w", err)
	}
	a := &API{}
	// Estimate only, no pacing: the leaky-bucket pacer would hold a 720p
	// keyframe back for hundreds of milliseconds; the layer choice keeps
	// the rate under the estimate instead.
	ccf, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
		return gcc.NewSendSideBWE(gcc.SendSideBWEInitialBitrate(bweInitial), gcc.SendSideBWEMinBitrate(bweMin),
			gcc.SendSideBWEMaxBitrate(bweMax), gcc.SendSideBWEPacer(gcc.NewNoOpPacer()))
	})
	if err != nil {
		return nil, nil, fmt.Errorf("stream: congestion control: %w", err)
	}
	ccf.OnNewPeerConnection(func(_ string, est cc.BandwidthEstimator) { a.pending = est })
	reg.Add(ccf)
	if err := webrtc.ConfigureTWCCHeaderExtensionSender(m, reg); err != nil {
		return nil, nil, fmt.Errorf("stream: transport-wide sequence numbers: %w", err)
	}
	se := webrtc.SettingEngine{}
	// Notice a vanished viewer within seconds, not pion's default 30 s,
	// so its queue and goroutines go.
	se.SetICETimeouts(4*time.Second, 8*time.Second, time.Second)
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	if len(cfg.NAT1To1IPs) > 0 {
		se.SetNAT1To1IPs(cfg.NAT1To1IPs, webrtc.ICECandidateTypeHost)
	}
	var closers []func() error
	closer := func() error {
		var first error
		for _, c := range closers {
			if err := c(); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	networks := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	if cfg.UDPPort > 0 {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{Port: cfg.UDPPort})
		if err != nil {
			return nil, nil, fmt.Errorf("stream: WebRTC UDP port %d: %w", cfg.UDPPort, err)
		}
		se.SetICEUDPMux(webrtc.NewICEUDPMux(nil, conn))
		networks = []webrtc.NetworkType{webrtc.NetworkTypeUDP4}
		closers = append(closers, conn.Close)
	}
	if cfg.TCPPort > 0 {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{Port: cfg.TCPPort})
		if err != nil {
			closer()
			return nil, nil, fmt.Errorf("stream: WebRTC TCP port %d: %w", cfg.TCPPort, err)
		}
		se.SetICETCPMux(webrtc.NewICETCPMux(nil, ln, 16))
		networks = append(networks, webrtc.NetworkTypeTCP4)
		closers = append(closers, ln.Close)
	}
	se.SetNetworkTypes(networks)
	a.api = webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	if a.receiver, err = newReceiverAPI(se); err != nil {
		closer()
		return nil, nil, err
	}
	return a, closer, nil
}

// newReceiverAPI registers what publishers send: H.264 (constrained
// baseline, baseline, main and high, packetization mode 1) and VP8.
func newReceiverAPI(se webrtc.SettingEngine) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	for i, profile := range []string{"42e01f", "42001f", "4d001f", "640c1f", "64001f"} {
		c := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: fb,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profile}
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: c, PayloadType: webrtc.PayloadType(102 + 2*i)}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("stream: register H.264 %s: %w", profile, err)
		}
	}
	vp8 := vp8Codec
	vp8.RTCPFeedback = fb
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: vp8, PayloadType: 96}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, fmt.Errorf("stream: register VP8: %w", err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, fmt.Errorf("stream: interceptors: %w", err)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}
