package server

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"

	"go.uber.org/zap"

	"sonolive/overlay"
)

// A freeze holds every page on the same picture: the frame one of them had
// on screen, decoded by the server from the groups of pictures it keeps
// (stills), fetched by all from /api/sources/{source}/still.jpg. Live
// video goes on underneath; marks drawn meanwhile stay with the picture
// until the unfreeze.

// freezeState is the frame everyone holds.
type freezeState struct {
	ts   uint32
	msg  []byte
	jpeg []byte
	// meta is the frame's findings (nil when it had none): a capture
	// during the freeze keeps the frozen picture, which the stills may no
	// longer hold by then.
	meta *overlay.Metadata
}

// freeze decodes the frame the sender had on screen and tells every page,
// the sender too, to hold it: all then show the same picture, fetched from
// the server, whatever frame each had reached.
func (c *consultRelay) freeze(m consultMsg) {
	c.mu.Lock()
	if c.freezing {
		c.mu.Unlock()
		return
	}
	c.freezing = true
	c.mu.Unlock()
	go func() {
		defer func() {
			c.mu.Lock()
			c.freezing = false
			c.mu.Unlock()
		}()
		img, ts, err := c.ses.stills.at(m.RTPTS)
		if err != nil {
			c.ses.log.Warn("freeze failed", zap.Uint32("rtp_ts", m.RTPTS), zap.Error(err))
			return
		}
		m.RTPTS = ts
		jpeg, err := encodeJPEG(img)
		img.Close()
		if err != nil {
			c.ses.log.Warn("freeze: encoding the still", zap.Error(err))
			return
		}
		m.Still = fmt.Sprintf("/api/sources/%s/still.jpg?ts=%d", url.PathEscape(c.ses.id), m.RTPTS)
		out, err := json.Marshal(m)
		if err != nil {
			return
		}
		c.mu.Lock()
		c.frozen = &freezeState{ts: m.RTPTS, msg: out, jpeg: jpeg, meta: c.ses.stills.meta(m.RTPTS)}
		c.mu.Unlock()
		c.ses.relay.Broadcast("", out)
		c.ses.recordEvent("consult", map[string]string{"msg": string(out), "rtp_ts": strconv.FormatUint(uint64(m.RTPTS), 10)})
		c.ses.log.Info("frozen", zap.String("by", m.From.Role), zap.Uint32("rtp_ts", m.RTPTS))
	}()
}

func (c *consultRelay) unfreeze(m consultMsg) {
	c.mu.Lock()
	was := c.frozen != nil
	c.frozen = nil
	c.mu.Unlock()
	if !was {
		return
	}
	c.marks.unfreeze()
	out, err := json.Marshal(m)
	if err != nil {
		return
	}
	c.ses.relay.Broadcast("", out)
	c.ses.recordEvent("consult", map[string]string{"msg": string(out)})
}

// still is the picture of the freeze in force for the frame ts.
func (c *consultRelay) still(ts uint32) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen == nil || c.frozen.ts != ts {
		return nil, false
	}
	return c.frozen.jpeg, true
}
