package stream

import (
	"fmt"
	"net"
	"time"

	"github.com/pion/interceptor"
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
}

// NewAPI builds the WebRTC API: H.264, VP8 for the fallback layer, Opus for the voices, NACK/RTCP reports/TWCC
// interceptors, and the ICE settings of cfg. The returned closer releases
// the shared UDP port.
func NewAPI(cfg APIConfig) (*webrtc.API, func() error, error) {
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
	se := webrtc.SettingEngine{}
	// Notice a vanished viewer within seconds, not pion's default 30 s,
	// so its queue and goroutines go.
	se.SetICETimeouts(4*time.Second, 8*time.Second, time.Second)
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	if len(cfg.NAT1To1IPs) > 0 {
		se.SetNAT1To1IPs(cfg.NAT1To1IPs, webrtc.ICECandidateTypeHost)
	}
	closer := func() error { return nil }
	if cfg.UDPPort > 0 {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{Port: cfg.UDPPort})
		if err != nil {
			return nil, nil, fmt.Errorf("stream: WebRTC UDP port %d: %w", cfg.UDPPort, err)
		}
		se.SetICEUDPMux(webrtc.NewICEUDPMux(nil, conn))
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		closer = conn.Close
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	return api, closer, nil
}
