package stream

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/zap"
)

// ConsultLabel names the DataChannel a page opens (ordered, reliable) to
// talk with the others in the session: the expert's pointer and marks,
// and what later features add. The relay does not read the messages: it
// hands each one to Config.OnConsult, which checks and stamps it, and
// Relay.Broadcast carries the result to the other viewers' channels.
const ConsultLabel = "consult"

// MaxConsultMessage bounds one consult message; a freehand stroke of a few
// hundred points is a few KB.
const MaxConsultMessage = 16 << 10

// consultRate and consultBurst bound what one viewer may send: a pointer
// moved at display rate is 60 a second; more is a page gone wrong or a
// hostile one, and the excess is dropped (counted), not forwarded.
const (
	consultRate  = 120.0
	consultBurst = 240.0
)

// consultChannel is a viewer's consult DataChannel and its counters.
type consultChannel struct {
	dc               atomic.Pointer[webrtc.DataChannel]
	in, out, dropped atomic.Uint64
	tokens           float64 // the rate limiter: read loop of dc only
	last             time.Time
}

// allow spends one token of the viewer's send budget.
func (c *consultChannel) allow(now time.Time) bool {
	if c.last.IsZero() {
		c.tokens = consultBurst
	} else {
		c.tokens = min(consultBurst, c.tokens+now.Sub(c.last).Seconds()*consultRate)
	}
	c.last = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// acceptConsult takes the page's consult channel when it opens one.
func (v *Viewer) acceptConsult(dc *webrtc.DataChannel) {
	if dc.Label() != ConsultLabel || !dc.Ordered() {
		v.relay.log.Debug("ignoring data channel", zap.String("viewer", v.id), zap.String("label", dc.Label()))
		return
	}
	if !v.consult.dc.CompareAndSwap(nil, dc) {
		dc.Close() // one per viewer
		return
	}
	var once sync.Once
	opened := func() {
		once.Do(func() {
			if f := v.relay.cfg.OnConsultOpen; f != nil {
				f(v)
			}
		})
	}
	dc.OnOpen(opened)
	if dc.ReadyState() == webrtc.DataChannelStateOpen {
		go opened()
	}
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		c := &v.consult
		if len(m.Data) > MaxConsultMessage || !c.allow(time.Now()) {
			c.dropped.Add(1)
			return
		}
		c.in.Add(1)
		if f := v.relay.cfg.OnConsult; f != nil {
			f(v, m.Data)
		}
	})
}

// Broadcast sends msg on the consult channel of every viewer but the one
// with id except (the sender, which drew it already). A viewer whose
// channel is backed up loses the message (counted), never the others.
func (r *Relay) Broadcast(except string, msg []byte) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for id, v := range r.viewers {
		if id != except {
			v.sendConsult(msg)
		}
	}
}

// Viewers returns the viewers connected now.
func (r *Relay) Viewers() []*Viewer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Viewer, 0, len(r.viewers))
	for _, v := range r.viewers {
		out = append(out, v)
	}
	return out
}

// SendConsult sends msg to one viewer (a reply, or the state a late
// joiner needs).
func (v *Viewer) SendConsult(msg []byte) { v.sendConsult(msg) }

func (v *Viewer) sendConsult(msg []byte) {
	c := &v.consult
	dc := c.dc.Load()
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen {
		return
	}
	if int(dc.BufferedAmount()) > v.relay.cfg.MetaBuffer {
		c.dropped.Add(1)
		return
	}
	if err := dc.SendText(string(msg)); err != nil {
		c.dropped.Add(1)
		return
	}
	c.out.Add(1)
}
