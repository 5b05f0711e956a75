package stream

import (
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

// keyGate coalesces keyframe requests (joins, PLIs, drops) so a burst of
// them costs one keyframe per gap. request may be called from anywhere;
// due and sent only from the encoding goroutine.
type keyGate struct {
	want atomic.Bool
	last time.Time
}

func (g *keyGate) request() { g.want.Store(true) }

// due reports whether the next frame should be forced to a keyframe, and
// takes the request if so.
func (g *keyGate) due(gap time.Duration) bool {
	if g.want.Load() && time.Since(g.last) >= gap {
		g.want.Store(false)
		return true
	}
	return false
}

// sent notes a keyframe encoded at t.
func (g *keyGate) sent(t time.Time) { g.last = t }

// packetize cuts one encoded frame into RTP packets (sequence numbers are
// each viewer's own), the marker on the last.
func packetize(p rtp.Payloader, au []byte, ts uint32) []*rtp.Packet {
	payloads := p.Payload(mtu-12, au)
	pkts := make([]*rtp.Packet, len(payloads))
	for i, pl := range payloads {
		pkts[i] = &rtp.Packet{Header: rtp.Header{Version: 2, Marker: i == len(payloads)-1, Timestamp: ts}, Payload: pl}
	}
	return pkts
}

// Packetize is packetize for the relay's taps that send RTP on (a LiveKit
// publisher): the viewers' packets, at the viewers' timestamp.
func Packetize(p rtp.Payloader, au []byte, ts uint32) []*rtp.Packet { return packetize(p, au, ts) }
