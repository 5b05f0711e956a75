// Package lkclient is a LiveKit viewer made of the server SDK: it joins a
// room with a token sonolive minted, subscribes to the box's video and
// metadata and counts what arrives, as whepclient does for WHEP. The
// LiveKit tests and benchmarks use it as a stand-in for a student's or an
// expert's browser.
package lkclient

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"sonolive/internal/whepclient"
)

// Stats is what a viewer has received.
type Stats struct {
	Frames, Expected int
	// Metadata packets, and how many frames had theirs (same RTP
	// timestamp): the boxes drawn on the right frame.
	Metadata, Matched int
	// FirstFrame is the time from Join to the first complete frame.
	FirstFrame time.Duration
}

// Viewer is one joined participant.
type Viewer struct {
	room    *lksdk.Room
	started time.Time

	mu      sync.Mutex
	frameTS []uint32
	metaTS  map[uint32]bool
	metas   int
	first   time.Time
	// LiveKit may shift a late joiner's RTP timestamps by a constant: the
	// shift is one of the differences between a keyframe's timestamp here
	// and a keyframe metadata's (docs/streaming.md), the one under which
	// the frames find their metadata.
	keyTS, keyMetaTS []uint32
	inKey            bool
	left             bool
}

// Join connects to url with token and subscribes to everything published.
func Join(url, token string) (*Viewer, error) {
	v := &Viewer{started: time.Now(), metaTS: map[uint32]bool{}}
	cb := lksdk.NewRoomCallback()
	cb.ParticipantCallback.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		if track.Kind() != webrtc.RTPCodecTypeVideo {
			return
		}
		go v.read(track)
	}
	cb.ParticipantCallback.OnDataPacket = func(data lksdk.DataPacket, params lksdk.DataReceiveParams) {
		u, ok := data.(*lksdk.UserDataPacket)
		if !ok || params.Topic != "metadata" {
			return
		}
		var msg struct {
			RTPTimestamp uint32 `json:"rtp_ts"`
			Keyframe     bool   `json:"keyframe"`
		}
		if json.Unmarshal(u.Payload, &msg) != nil {
			return
		}
		v.mu.Lock()
		v.metas++
		v.metaTS[msg.RTPTimestamp] = true
		if msg.Keyframe {
			v.keyMetaTS = keep(v.keyMetaTS, msg.RTPTimestamp)
		}
		v.mu.Unlock()
	}
	cb.OnDisconnected = func() {
		v.mu.Lock()
		v.left = true
		v.mu.Unlock()
	}
	room, err := lksdk.ConnectToRoomWithToken(url, token, cb, lksdk.WithAutoSubscribe(true), lksdk.WithConnectTimeout(30*time.Second),
		lksdk.WithLogger(logger.GetDiscardLogger()))
	if err != nil {
		return nil, fmt.Errorf("lkclient: joining: %w", err)
	}
	v.room = room
	return v, nil
}

func (v *Viewer) read(t *webrtc.TrackRemote) {
	buf := make([]byte, 1600)
	var p rtp.Packet
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		if p.Unmarshal(buf[:n]) != nil {
			continue
		}
		v.mu.Lock()
		if whepclient.IsIDR(p.Payload) {
			v.inKey = true
		}
		if p.Marker {
			if v.inKey {
				v.keyTS = keep(v.keyTS, p.Timestamp)
			}
			v.inKey = false
			if v.first.IsZero() {
				v.first = time.Now()
			}
			v.frameTS = append(v.frameTS, p.Timestamp)
		}
		v.mu.Unlock()
	}
}

// keep appends ts to the last few.
func keep(l []uint32, ts uint32) []uint32 {
	l = append(l, ts)
	if len(l) > 8 {
		l = l[1:]
	}
	return l
}

// matched counts the frames whose metadata arrived, under the shift (of
// the candidates) that matches most.
func (v *Viewer) matched() int {
	best := 0
	try := func(shift uint32) {
		n := 0
		for _, ts := range v.frameTS {
			if v.metaTS[ts-shift] {
				n++
			}
		}
		best = max(best, n)
	}
	try(0)
	for _, k := range v.keyTS {
		for _, m := range v.keyMetaTS {
			try(k - m)
		}
	}
	return best
}

// Stats returns what has arrived so far.
func (v *Viewer) Stats() Stats {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := Stats{Frames: len(v.frameTS), Expected: whepclient.ExpectedFrames(v.frameTS), Metadata: v.metas}
	st.Matched = v.matched()
	if !v.first.IsZero() {
		st.FirstFrame = v.first.Sub(v.started)
	}
	return st
}

// Reset zeroes the counters, to measure a window.
func (v *Viewer) Reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.frameTS = v.frameTS[:0]
	v.metaTS = map[uint32]bool{}
	v.metas = 0
}

// Left says whether the server ended the viewer's session (removed from
// the room, the room closed).
func (v *Viewer) Left() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.left
}

// Close leaves the room.
func (v *Viewer) Close() { v.room.Disconnect() }
