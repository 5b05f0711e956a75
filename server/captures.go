package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/exam"
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
	Type      string  `json:"type"` // captured, capture_failed
	Recording string  `json:"recording,omitempty"`
	N         int     `json:"n,omitempty"`
	T         float64 `json:"t,omitempty"`
	RTPTS     uint32  `json:"rtp_ts,omitempty"`
	Marks     int     `json:"marks,omitempty"`
	Findings  int     `json:"findings,omitempty"`
	// Exam and Finding: the exam finding the capture became.
	Exam    string       `json:"exam,omitempty"`
	Finding int          `json:"finding,omitempty"`
	Reason  string       `json:"reason,omitempty"`
	From    *consultFrom `json:"from,omitempty"`
	At      int64        `json:"at"`
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
	ex := c.ses.currentExam()
	if rec == nil && ex == nil {
		fail(errors.New("start an exam to keep key frames: they belong to the exam and its recording"))
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
		// Kept in the recording and in the exam: one failing does not
		// cost the other.
		reply := captureReply{Type: "captured", From: m.From}
		var errs []error
		if rec != nil {
			saved, err := c.saveCapture(rec, m, frozen)
			if err != nil {
				c.ses.log.Warn("capture failed", zap.Uint32("rtp_ts", m.RTPTS), zap.Error(err))
				errs = append(errs, err)
			} else {
				reply.Recording, reply.N, reply.T, reply.RTPTS = saved.Recording, saved.N, saved.T, saved.RTPTime
				reply.Marks, reply.Findings = len(saved.Marks), len(saved.Detections)
				c.ses.recordEvent("capture", map[string]string{"n": strconv.Itoa(saved.N), "rtp_ts": strconv.FormatUint(uint64(saved.RTPTime), 10)})
			}
		}
		if ex != nil {
			f, err := c.saveExamCapture(*ex, m, frozen)
			if err != nil {
				c.ses.log.Warn("capture not kept with the exam", zap.String("exam", ex.ID), zap.Error(err))
				errs = append(errs, err)
			} else {
				reply.Exam, reply.Finding = ex.ID, f.N
			}
		}
		if reply.N == 0 && reply.Finding == 0 {
			fail(errors.Join(errs...))
			return
		}
		reply.At = time.Now().UnixMilli()
		out, err := json.Marshal(reply)
		if err != nil {
			return
		}
		c.ses.relay.Broadcast("", out)
		c.ses.log.Info("captured", zap.String("recording", reply.Recording), zap.Int("n", reply.N), zap.String("exam", reply.Exam),
			zap.Int("finding", reply.Finding), zap.String("by", m.From.Role), zap.Int("findings", reply.Findings), zap.Int("marks", reply.Marks))
	}()
}

// saveExamCapture keeps the captured frame as a finding of the open exam.
func (c *consultRelay) saveExamCapture(e exam.Exam, m consultMsg, frozen *freezeState) (exam.Finding, error) {
	var (
		img  gocv.Mat
		meta *overlay.Metadata
		err  error
	)
	if frozen != nil {
		meta = frozen.meta
		img, err = gocv.IMDecode(frozen.jpeg, gocv.IMReadColor)
		if err != nil || img.Empty() {
			img.Close()
			if err == nil {
				err = errors.New("the frozen picture does not decode")
			}
		}
	} else {
		var ts uint32
		img, ts, err = c.ses.stills.at(m.RTPTS)
		meta = c.ses.stills.meta(ts)
	}
	if err != nil {
		return exam.Finding{}, fmt.Errorf("capture: %w", err)
	}
	defer img.Close()
	by := m.From.Role
	if m.From.Name != "" {
		by = m.From.Name
	}
	return c.ses.saveManualFinding(e, img, meta, by)
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
		if err != nil || img.Empty() {
			img.Close()
			if err == nil {
				err = errors.New("the frozen picture does not decode")
			}
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
