// Package replay is the teaching library: it records live sessions (the
// relay's H.264, stored as is, in fragmented MP4) with a timeline of every
// frame's findings, recovers recordings a crash left unfinished, enforces
// retention, and serves what the library and replay pages need. File
// layout and API: docs/recording.md.
package replay

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/overlay"
	"sonolive/stream"
)

// Entry is one line of timeline.jsonl.
type Entry struct {
	T             float64 `json:"t"`
	Seq           uint64  `json:"seq"`
	CaptureUnixMS float64 `json:"capture_unix_ms"`
	Stale         bool    `json:"stale"`
	// BurnedIn: the boxes are in this frame's pixels (burn-in was on).
	BurnedIn   bool              `json:"burned_in"`
	Detections []overlay.DetMeta `json:"detections,omitempty"`
	// Event, on a line of its own, is a session event at time T (viewer
	// joined or left, burn-in switched); Data says more. Frame fields
	// are empty on such lines.
	Event string            `json:"event,omitempty"`
	Data  map[string]string `json:"data,omitempty"`
}

// segmentLine is one line of segments.jsonl.
type segmentLine struct {
	N         int     `json:"n"`
	StartS    float64 `json:"start_s"`
	DurationS float64 `json:"duration_s"`
	Bytes     int     `json:"bytes"`
	Frames    int     `json:"frames"`
	Duration  uint32  `json:"duration_ticks"`
	Key       bool    `json:"key"` // starts with a keyframe
}

// RecorderConfig sets up one recording.
type RecorderConfig struct {
	Source string
	Model  string
	// Exam is the exam the recording belongs to ("" between exams).
	Exam string
	// Segment is the fragment length, which bounds what a crash loses
	// (default 1 s).
	Segment time.Duration
	// Queue is the frames buffered between the relay and the disk
	// (default 90, three seconds at 30 fps).
	Queue int
	// Block makes WriteFrame wait for the disk instead of dropping: for
	// offline runs, which have no live viewer to protect.
	Block bool
	// Part and Previous place the recording in a series (Series sets
	// them; see Meta).
	Part     int
	Previous string
	// RequestKeyframe asks the encoder for a keyframe (after a drop).
	RequestKeyframe func()
	// Voices records the people's voices (WriteVoice) and mixes them
	// into the video when it ends (voices.go).
	Voices bool
	Logger *zap.Logger
}

// Recorder writes one recording. WriteFrame never blocks: frames go
// through a bounded queue to the writer goroutine; when the disk cannot
// keep up, frames are dropped (counted) until the next keyframe.
type Recorder struct {
	cfg   RecorderConfig
	lib   *Library
	id    string
	dir   string
	lock  *fileLock // the writer lock, held until the recording is finished
	log   *zap.Logger
	start time.Time

	q        chan *recFrame
	done     chan struct{}
	dropped  atomic.Uint64
	needKey  atomic.Bool
	thumbSet atomic.Bool // a thumbnail with a finding is queued
	anyThumb bool        // a first-frame thumbnail is queued (relay goroutine only)
	bytes    atomic.Int64
	failed   atomic.Value // string: why writing stopped (a full disk)
	// closeMu orders sends on q against Close closing it: senders hold
	// it shared, Close exclusively, so no send ever meets a closed q.
	closeMu sync.RWMutex
	closed  bool
	// Close's result, computed once.
	closeOnce sync.Once
	meta      Meta
	closeErr  error

	// writer goroutine state
	info      trackInfo
	initDone  bool
	pending   *pendingSample
	frag      []sample
	fragStart uint64 // decode time of the fragment's first sample
	decode    uint64 // decode time of pending
	segN      int
	timeline  *os.File
	tw        *bufio.Writer
	segs      *os.File
	err       error
	durations []uint32
	keyAsked  bool

	mu       sync.Mutex // guards progress, read by the library
	progress float64

	// firstTS is the RTP timestamp of the recording's first frame (time
	// 0 of its timeline), -1 before it; captures take their time from it.
	// firstCaptured is that frame's capture time (unix ns, 0 before it):
	// voices are placed by it.
	firstTS       atomic.Int64
	firstCaptured atomic.Int64
	// The voices' queue and writer (nil without Voices).
	voiceQ       chan voicePacket
	voiceDone    chan struct{}
	voiceDropped atomic.Uint64
	capMu        sync.Mutex // orders captures
	captures     int        // saved so far
}

type recFrame struct {
	au       []byte
	key      bool
	ts       uint32
	captured time.Time
	entry    Entry
	thumb    *gocv.Mat // small copy of the annotated frame, or nil
	w, h     int
	event    *Entry // a session event instead of a frame
}

type pendingSample struct {
	data []byte
	key  bool
	ts   uint32
}

// ID is the recording's id.
func (r *Recorder) ID() string { return r.id }

// Event records a session event in the timeline at the current time.
// Never blocks; dropped (counted) when the queue is full.
func (r *Recorder) Event(name string, data map[string]string) {
	r.closeMu.RLock()
	defer r.closeMu.RUnlock()
	if r.closed {
		return
	}
	select {
	case r.q <- &recFrame{event: &Entry{Event: name, Data: data}}:
	default:
		r.dropped.Add(1)
	}
}

// WriteFrame is the relay tap.
func (r *Recorder) WriteFrame(f *stream.EncodedFrame) {
	r.closeMu.RLock()
	defer r.closeMu.RUnlock()
	if r.closed {
		return
	}
	if r.needKey.Load() {
		if !f.Key {
			r.dropped.Add(1)
			return
		}
		r.needKey.Store(false)
	}
	rf := &recFrame{au: f.AU, key: f.Key, ts: f.RTPTime, captured: f.Captured, w: f.Image.Cols(), h: f.Image.Rows()}
	if f.Meta != nil {
		rf.entry = Entry{Seq: f.Seq, CaptureUnixMS: f.Meta.CaptureUnixMS, Stale: f.Meta.Stale, BurnedIn: f.Meta.BurnedIn, Detections: f.Meta.Detections}
	}
	// The thumbnail: the first frame with a finding, else the first frame
	// (replaced once a finding shows up).
	if !r.thumbSet.Load() && !f.Image.Empty() && (len(rf.entry.Detections) > 0 || !r.anyThumb) {
		small := gocv.NewMat()
		w := 320
		h := max(1, f.Image.Rows()*w/max(1, f.Image.Cols()))
		gocv.Resize(f.Image, &small, image.Pt(w, h), 0, 0, gocv.InterpolationArea)
		rf.thumb = &small
		r.anyThumb = true
		if len(rf.entry.Detections) > 0 {
			r.thumbSet.Store(true)
		}
	}
	if r.cfg.Block {
		r.q <- rf
		return
	}
	select {
	case r.q <- rf:
	default:
		if rf.thumb != nil {
			rf.thumb.Close()
		}
		r.dropped.Add(1)
		r.needKey.Store(true)
		if r.cfg.RequestKeyframe != nil {
			r.cfg.RequestKeyframe()
		}
	}
}

func (r *Recorder) run() {
	defer close(r.done)
	for f := range r.q {
		if r.err == nil {
			if err := r.write(f); err != nil {
				r.err = err
				r.failed.Store(err.Error())
				r.log.Error("recording failed; dropping the rest (what is on disk is kept)", zap.String("recording", r.id), zap.Error(err))
			}
		}
		if f.thumb != nil {
			if r.err == nil {
				r.writeThumb(*f.thumb)
			}
			f.thumb.Close()
		}
	}
}

func (r *Recorder) writeThumb(m gocv.Mat) {
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, m)
	if err != nil {
		r.log.Warn("thumbnail", zap.Error(err))
		return
	}
	defer buf.Close()
	if err := writeFileSync(filepath.Join(r.dir, "thumb.jpg"), buf.GetBytes()); err != nil {
		r.log.Warn("thumbnail", zap.Error(err))
	}
}

// write handles one frame on the writer goroutine.
func (r *Recorder) write(f *recFrame) error {
	if f.event != nil {
		if !r.initDone {
			return nil // before the video starts there is no time to put it at
		}
		return r.writeEntry(f.event)
	}
	data, sps, pps, err := annexBToAVCC(f.au)
	if err != nil {
		return err
	}
	if r.initDone && (f.w&^1 != r.info.width || f.h&^1 != r.info.height) {
		// One track has one size: a frame of another would corrupt the
		// rest of the file. Series starts a new part instead; here the
		// frame is dropped, counted.
		r.dropped.Add(1)
		return nil
	}
	if !r.initDone {
		if !f.key || sps == nil || pps == nil {
			return nil // wait for the first keyframe with parameter sets
		}
		// The encoder codes even sizes: an odd last row or column is left out.
		r.info = trackInfo{sps: sps, pps: pps, width: f.w &^ 1, height: f.h &^ 1}
		b, err := initSegment(r.info)
		if err != nil {
			return err
		}
		if err := writeFileSync(filepath.Join(r.dir, "init.mp4"), b); err != nil {
			return err
		}
		r.initDone = true
		r.firstTS.Store(int64(f.ts))
		r.firstCaptured.Store(f.captured.UnixNano())
	}
	if r.pending != nil {
		d := uint32(int32(f.ts - r.pending.ts))
		if int32(d) <= 0 {
			d = 1
		}
		r.frag = append(r.frag, sample{data: r.pending.data, duration: d, key: r.pending.key})
		r.durations = append(r.durations, d)
		if len(r.durations) > 64 {
			r.durations = r.durations[1:]
		}
		r.decode += uint64(d)
	}
	// Fragments start at keyframes, so a player seeking into the file
	// lands on a decodable frame (players seek by fragment). Near the end
	// of a fragment we ask the encoder for a keyframe, which bounds the
	// fragment, and so what a crash loses, at about Segment. Any keyframe
	// from then on closes the fragment: one that answers the request
	// sooner than expected must not be let by, or the fragment runs on to
	// the encoder's next keyframe. Should no keyframe come, a fragment is
	// cut at any frame after 3×Segment.
	age := r.decode - r.fragStart
	seg := uint64(r.cfg.Segment.Seconds() * timescale)
	due := age+2*uint64(r.lastDuration()) >= seg
	if len(r.frag) > 0 && (f.key && due || age >= 3*seg) {
		if err := r.flushFragment(); err != nil {
			return err
		}
		r.keyAsked = false
	} else if !r.keyAsked && due && r.cfg.RequestKeyframe != nil {
		r.cfg.RequestKeyframe()
		r.keyAsked = true
	}
	r.pending = &pendingSample{data: data, key: f.key, ts: f.ts}
	if err := r.writeEntry(&f.entry); err != nil {
		return err
	}
	r.mu.Lock()
	r.progress = f.entry.T
	r.mu.Unlock()
	return nil
}

// flushFragment writes the fragment as the next segment: to .tmp, fsync,
// rename, then its line in segments.jsonl and the timeline so far, both
// fsynced. A crash leaves at most the fragment in progress unwritten.
func (r *Recorder) flushFragment() error {
	if len(r.frag) == 0 {
		return nil
	}
	r.segN++
	frag := fragment(uint32(r.segN), r.fragStart, r.frag)
	name := filepath.Join(r.dir, fmt.Sprintf("seg-%05d.m4s", r.segN))
	if err := writeFileSync(name, frag); err != nil {
		return err
	}
	var dur uint32
	for _, s := range r.frag {
		dur += s.duration
	}
	line, _ := json.Marshal(segmentLine{N: r.segN, StartS: float64(r.fragStart) / timescale, DurationS: float64(dur) / timescale,
		Bytes: len(frag), Frames: len(r.frag), Duration: dur, Key: r.frag[0].key})
	if _, err := r.segs.Write(append(line, '\n')); err != nil {
		return err
	}
	if err := r.segs.Sync(); err != nil {
		return err
	}
	r.bytes.Add(int64(len(frag)))
	if err := r.tw.Flush(); err != nil {
		return err
	}
	if err := r.timeline.Sync(); err != nil {
		return err
	}
	r.fragStart += uint64(dur)
	r.frag = r.frag[:0]
	return nil
}

// Close flushes what is buffered, finishes the recording (video.mp4,
// meta.json) and returns its description.
func (r *Recorder) Close() (Meta, error) {
	r.closeMu.Lock()
	if !r.closed {
		r.closed = true
		close(r.q)
		if r.voiceQ != nil {
			close(r.voiceQ)
		}
	}
	r.closeMu.Unlock()
	<-r.done
	if r.voiceDone != nil {
		<-r.voiceDone
	}
	r.closeOnce.Do(func() {
		r.meta, r.closeErr = r.end()
		r.lib.finished(r.id)
		r.lock.release()
	})
	return r.meta, r.closeErr
}

// end flushes the last fragment and finishes the recording, holding the
// writer lock, so no other process touches it meanwhile.
func (r *Recorder) end() (Meta, error) {
	if r.pending != nil && r.err == nil {
		d := uint32(3000)
		if n := len(r.durations); n > 0 {
			d = r.durations[n-1]
		}
		r.frag = append(r.frag, sample{data: r.pending.data, duration: d, key: r.pending.key})
		r.decode += uint64(d)
		r.pending = nil
		if err := r.flushFragment(); err != nil && r.err == nil {
			r.err = err
		}
	}
	if r.tw != nil {
		r.tw.Flush()
		r.timeline.Close()
	}
	if r.segs != nil {
		r.segs.Close()
	}
	if n := r.dropped.Load(); n > 0 {
		r.log.Warn("recording dropped frames", zap.String("recording", r.id), zap.Uint64("dropped", n))
	}
	if n := r.voiceDropped.Load(); n > 0 {
		r.log.Warn("recording dropped voice packets", zap.String("recording", r.id), zap.Uint64("dropped", n))
	}
	status := "complete"
	if r.err != nil {
		status = "recovered"
	}
	m, err := finish(r.dir, r.base(), status, r.log)
	if errors.Is(err, errEmpty) {
		// Nothing playable was recorded (the source never delivered a
		// keyframe): leave no empty entry in the library.
		os.RemoveAll(r.dir)
		return m, ErrNotFound
	}
	if err != nil {
		return m, err
	}
	return m, r.err
}

// writeEntry appends a timeline line stamped with the current video time;
// it reaches the disk with the next fragment.
func (r *Recorder) writeEntry(e *Entry) error {
	e.T = math.Round(float64(r.decode)/timescale*1e3) / 1e3
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	r.tw.Write(b)
	return r.tw.WriteByte('\n')
}

func (r *Recorder) lastDuration() uint32 {
	if n := len(r.durations); n > 0 {
		return r.durations[n-1]
	}
	return 3000
}

// Dropped counts frames and events lost to a full queue (a slow disk).
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// base is what the recording's meta.json says from the start.
func (r *Recorder) base() Meta {
	return Meta{ID: r.id, Source: r.cfg.Source, Status: "recording", Start: r.start, Model: r.cfg.Model,
		Part: r.cfg.Part, Previous: r.cfg.Previous, Exam: r.cfg.Exam, LesionEvents: []LesionEvent{}}
}

// Err says why the recording stopped writing ("" while it writes): the
// segments already on disk are kept and finished or recovered.
func (r *Recorder) Err() string {
	v, _ := r.failed.Load().(string)
	return v
}

// Bytes is what the finished segments take on disk so far.
func (r *Recorder) Bytes() int64 { return r.bytes.Load() }

// Progress is the recorded length so far, in seconds.
func (r *Recorder) Progress() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.progress
}
