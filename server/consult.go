package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"sonolive/stream"
)

// The consult channel carries what the people in a session show each
// other on the image (docs/streaming.md, "DataChannel consult"): the
// pointer and simple marks, in source pixels, keyed to the frame they
// were drawn on by its RTP timestamp. The server checks each message,
// stamps who sent it and when, forwards it to everyone else and keeps the
// marks in the recording's timeline so a replay shows them in time.

// ErrBadConsult: a consult message that is not one we forward.
var ErrBadConsult = errors.New("bad consult message")

// consultMsg is one message, as received and as forwarded.
type consultMsg struct {
	Type   string       `json:"type"` // pointer, mark, clear
	ID     string       `json:"id,omitempty"`
	Shape  string       `json:"shape,omitempty"` // arrow, circle, caliper, freehand
	X      *float64     `json:"x,omitempty"`
	Y      *float64     `json:"y,omitempty"`
	Points [][2]float64 `json:"points,omitempty"`
	RTPTS  uint32       `json:"rtp_ts,omitempty"`
	// SentAt is the sender's clock at the input (unix ms), passed on so a
	// test on one machine can time input to drawing; never trusted.
	SentAt int64 `json:"sent_at,omitempty"`
	// Set by the server: the sender and the time it was forwarded.
	From *consultFrom `json:"from,omitempty"`
	At   int64        `json:"at,omitempty"` // unix ms
}

type consultFrom struct {
	Viewer string `json:"viewer"`
	Role   string `json:"role"`
}

// maxMarkPoints bounds a freehand stroke (a few seconds of drawing).
const maxMarkPoints = 512

var markID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// parseConsult reads and checks one message against the frame size w×h
// (coordinates may sit on the edge, not beyond it). The server's fields
// (from, at) are never taken from the sender.
func parseConsult(b []byte, w, h int) (consultMsg, error) {
	var m consultMsg
	if len(b) > stream.MaxConsultMessage {
		return m, fmt.Errorf("%w: %d bytes", ErrBadConsult, len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: %v", ErrBadConsult, err)
	}
	m.From, m.At = nil, 0
	in := func(x, y float64) bool {
		return !math.IsNaN(x) && !math.IsNaN(y) && x >= 0 && y >= 0 && x <= float64(w) && y <= float64(h)
	}
	if w <= 0 || h <= 0 {
		return m, fmt.Errorf("%w: no frame yet", ErrBadConsult)
	}
	switch m.Type {
	case "pointer":
		if m.X == nil || m.Y == nil || !in(*m.X, *m.Y) {
			return m, fmt.Errorf("%w: pointer needs x, y inside the %dx%d frame", ErrBadConsult, w, h)
		}
		m.ID, m.Shape, m.Points = "", "", nil
	case "mark":
		if !markID.MatchString(m.ID) {
			return m, fmt.Errorf("%w: mark id must be 1-32 of [A-Za-z0-9_-]", ErrBadConsult)
		}
		want := map[string][2]int{"arrow": {2, 2}, "circle": {2, 2}, "caliper": {2, 2}, "freehand": {2, maxMarkPoints}}
		n, ok := want[m.Shape]
		if !ok {
			return m, fmt.Errorf("%w: shape %q (arrow, circle, caliper or freehand)", ErrBadConsult, m.Shape)
		}
		if len(m.Points) < n[0] || len(m.Points) > n[1] {
			return m, fmt.Errorf("%w: %s takes %d to %d points, got %d", ErrBadConsult, m.Shape, n[0], n[1], len(m.Points))
		}
		for _, p := range m.Points {
			if !in(p[0], p[1]) {
				return m, fmt.Errorf("%w: point (%g, %g) outside the %dx%d frame", ErrBadConsult, p[0], p[1], w, h)
			}
		}
		m.X, m.Y = nil, nil
	case "clear":
		// Without an id: all of the sender's marks.
		if m.ID != "" && !markID.MatchString(m.ID) {
			return m, fmt.Errorf("%w: mark id must be 1-32 of [A-Za-z0-9_-]", ErrBadConsult)
		}
		m.Shape, m.X, m.Y, m.Points = "", nil, nil, nil
	default:
		return m, fmt.Errorf("%w: type %q (pointer, mark or clear)", ErrBadConsult, m.Type)
	}
	return m, nil
}

// consultRelay checks, stamps, forwards and records a session's consult
// messages.
type consultRelay struct {
	ses *Session
	// pointerRec limits the pointer positions kept in the recording to
	// 10 a second per sender; the live forward is not limited.
	mu         sync.Mutex
	pointerRec map[string]time.Time
	bad        uint64
}

func (c *consultRelay) handle(v *stream.Viewer, b []byte) {
	w, h := c.ses.relay.FrameSize()
	m, err := parseConsult(b, w, h)
	if err != nil {
		c.mu.Lock()
		c.bad++
		n := c.bad
		c.mu.Unlock()
		if n == 1 || n%100 == 0 {
			c.ses.log.Warn("consult message refused", zap.String("viewer", v.ID()), zap.Uint64("refused", n), zap.Error(err))
		}
		return
	}
	now := time.Now()
	m.From = &consultFrom{Viewer: v.ID(), Role: v.Role()}
	m.At = now.UnixMilli()
	out, err := json.Marshal(m)
	if err != nil {
		return
	}
	c.ses.relay.Broadcast(v.ID(), out)
	if m.Type == "pointer" {
		c.mu.Lock()
		if c.pointerRec == nil {
			c.pointerRec = map[string]time.Time{}
		}
		last := c.pointerRec[v.ID()]
		keep := now.Sub(last) >= 100*time.Millisecond
		if keep {
			c.pointerRec[v.ID()] = now
		}
		c.mu.Unlock()
		if !keep {
			return
		}
	}
	c.ses.recordEvent("consult", map[string]string{"msg": string(out), "rtp_ts": strconv.FormatUint(uint64(m.RTPTS), 10)})
}

// forget drops what is kept for a viewer that left.
func (c *consultRelay) forget(id string) {
	c.mu.Lock()
	delete(c.pointerRec, id)
	c.mu.Unlock()
}
