package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/frame"
	"sonolive/overlay"
	"sonolive/replay"
	"sonolive/stream"
)

// A capture keeps a key frame in the recording in progress: the frame the
// sender had on screen (the frozen one during a freeze), decoded by the
// server as for a freeze, saved as streamed and with its findings and the
// marks on the pages drawn on it (replay.Capture). Everyone is told
// ("captured"); a capture that cannot be kept is answered to the sender
// alone ("capture_failed", with why), never silently lost.

// captureReply is what the pages are told of a capture.
type captureReply struct {
	Type      string       `json:"type"` // captured, capture_failed
	Recording string       `json:"recording,omitempty"`
	N         int          `json:"n,omitempty"`
	T         float64      `json:"t,omitempty"`
	RTPTS     uint32       `json:"rtp_ts,omitempty"`
	Marks     int          `json:"marks,omitempty"`
	Findings  int          `json:"findings,omitempty"`
	Reason    string       `json:"reason,omitempty"`
	From      *consultFrom `json:"from,omitempty"`
	At        int64        `json:"at"`
}

// errCaptureBusy: one capture is decoded at a time; a second meanwhile
// is refused, not queued (a held button must not stack decodes).
var errCaptureBusy = errors.New("a capture is being saved; try again")

func (c *consultRelay) capture(v *stream.Viewer, m consultMsg) {
	fail := func(err error) {
		b, _ := json.Marshal(captureReply{Type: "capture_failed", Reason: err.Error(), From: m.From, At: time.Now().UnixMilli()})
		v.SendConsult(b)
	}
	rec := c.ses.rec.Load()
	if rec == nil {
		fail(errors.New("recording is off here: key frames are kept with the recording"))
		return
	}
	c.mu.Lock()
	if c.capturing {
		c.mu.Unlock()
		fail(errCaptureBusy)
		return
	}
	c.capturing = true
	// Everyone holds the frozen picture, if any: that is the one to keep.
	frozen := c.frozen
	c.mu.Unlock()
	go func() {
		defer func() {
			c.mu.Lock()
			c.capturing = false
			c.mu.Unlock()
		}()
		saved, err := c.saveCapture(rec, m, frozen)
		if err != nil {
			c.ses.log.Warn("capture failed", zap.Uint32("rtp_ts", m.RTPTS), zap.Error(err))
			fail(err)
			return
		}
		out, err := json.Marshal(captureReply{Type: "captured", Recording: saved.Recording, N: saved.N, T: saved.T, RTPTS: saved.RTPTime,
			Marks: len(saved.Marks), Findings: len(saved.Detections), From: m.From, At: time.Now().UnixMilli()})
		if err != nil {
			return
		}
		c.ses.relay.Broadcast("", out)
		c.ses.recordEvent("capture", map[string]string{"n": strconv.Itoa(saved.N), "rtp_ts": strconv.FormatUint(uint64(saved.RTPTime), 10)})
		c.ses.log.Info("captured", zap.String("recording", saved.Recording), zap.Int("n", saved.N), zap.String("by", m.From.Role),
			zap.Int("findings", len(saved.Detections)), zap.Int("marks", len(saved.Marks)))
	}()
}

// keyFrameSaver is where captures go: the recording in progress.
type keyFrameSaver interface {
	SaveCapture(replay.Capture, []byte, []byte) (replay.Capture, error)
}

// saveCapture decodes the frame (the frozen picture during a freeze),
// draws the annotated copy and saves both.
func (c *consultRelay) saveCapture(rec keyFrameSaver, m consultMsg, frozen *freezeState) (replay.Capture, error) {
	var (
		img     gocv.Mat
		ts      uint32
		meta    *overlay.Metadata
		picture []byte
		err     error
	)
	if frozen != nil {
		ts, meta, picture = frozen.ts, frozen.meta, frozen.jpeg
		img, err = gocv.IMDecode(picture, gocv.IMReadColor)
		if err == nil && img.Empty() {
			img.Close()
			err = errors.New("the frozen picture does not decode")
		}
	} else {
		img, ts, err = c.ses.stills.at(m.RTPTS)
		meta = c.ses.stills.meta(ts)
	}
	if err != nil {
		return replay.Capture{}, fmt.Errorf("capture: %w", err)
	}
	defer img.Close()
	cp := replay.Capture{RTPTime: ts, At: time.Now().UTC(), By: m.From.Role, Name: m.From.Name,
		Width: img.Cols(), Height: img.Rows(), Detections: []overlay.DetMeta{}, Clean: true}
	var geom frame.Geometry
	if meta != nil {
		cp.Detections = append(cp.Detections, meta.Detections...)
		cp.Clean = !meta.BurnedIn
		geom = meta.Geometry.Frame()
	}
	marks := c.marks.now(time.Now())
	drawn := make([]overlay.Mark, 0, len(marks))
	for _, k := range marks {
		cp.Marks = append(cp.Marks, k.msg)
		drawn = append(drawn, k.mark)
	}
	if picture == nil {
		if picture, err = encodeJPEG(img); err != nil {
			return cp, fmt.Errorf("capture: %w", err)
		}
	}
	annotated := img.Clone()
	defer annotated.Close()
	if cp.Clean {
		overlay.NewDrawer(overlay.DefaultStyle()).DrawFindings(&annotated, overlay.Detections(cp.Detections), geom)
	}
	overlay.DrawMarks(&annotated, drawn)
	annotatedJPEG, err := encodeJPEG(annotated)
	if err != nil {
		return cp, fmt.Errorf("capture: %w", err)
	}
	return rec.SaveCapture(cp, picture, annotatedJPEG)
}
