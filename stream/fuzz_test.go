package stream

import (
	"errors"
	"testing"
)

const chromeOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\n" +
	"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n" +
	"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11\r\na=setup:actpass\r\n" +
	"a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\n" +
	"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sctp-port:5000\r\n"

// FuzzCheckOffer: any body is accepted or refused with ErrBadOffer, never
// a panic.
func FuzzCheckOffer(f *testing.F) {
	f.Add(chromeOffer)
	f.Add("")
	f.Add("v=0\r\n")
	f.Add("m=video 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n")
	f.Fuzz(func(t *testing.T, offer string) {
		for _, vp8 := range []bool{true, false} {
			o, err := checkOffer(offer, vp8)
			codec := o.codec
			if o.audio > 8 {
				t.Fatalf("%d audio sections counted in an offer of at most 8", o.audio)
			}
			switch {
			case err != nil && !isBadOffer(err):
				t.Fatalf("unnamed error: %v", err)
			case err == nil && codec != h264Codec.MimeType && (codec != vp8Codec.MimeType || !vp8):
				t.Fatalf("codec %q chosen (VP8 allowed: %v)", codec, vp8)
			}
		}
	})
}

// FuzzParseTrickle: any fragment yields at most MaxCandidates candidates,
// each for an address a peer can have, or a named error.
func FuzzParseTrickle(f *testing.F) {
	f.Add("a=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\na=end-of-candidates\r\n")
	f.Add("a=candidate:2 1 tcp 1518280447 10.0.0.1 9 typ host tcptype active\r\n")
	f.Add("a=candidate:3 1 udp 1 0.0.0.0 1 typ host\r\n")
	f.Add("a=candidate:4 1 udp 1 abc.local 1 typ host\r\n")
	f.Add("a=candidate:\r\n")
	f.Fuzz(func(t *testing.T, frag string) {
		cands, err := ParseTrickle(frag)
		if err != nil {
			if !isBadOffer(err) {
				t.Fatalf("unnamed error: %v", err)
			}
			return
		}
		if len(cands) > MaxCandidates {
			t.Fatalf("%d candidates", len(cands))
		}
	})
}

func isBadOffer(err error) bool {
	return errors.Is(err, ErrBadOffer) || errors.Is(err, ErrTooManyCandidates)
}
