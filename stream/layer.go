package stream

import (
	"context"
	"image"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/internal/stats"
)

// frameEncoder is what a layer needs of an encoder.
type frameEncoder interface {
	Encode(img gocv.Mat) (au []byte, key bool, err error)
	ForceKeyframe()
	Close() error
}

// layer is an extra encoding of the relay's frames for the viewers that
// need one (today VP8, for browsers without H.264). It exists only while
// such a viewer is connected and encodes on its own goroutine, so it never
// delays the H.264 viewers or the recording: the relay hands it the newest
// frame, scaled to the layer's size, and a frame the layer has not taken
// yet is replaced and counted as dropped.
type layer struct {
	codec     string
	relay     *Relay
	enc       frameEncoder
	payloader rtp.Payloader
	maxH      int
	log       *zap.Logger

	kick   chan struct{}
	mu     sync.Mutex
	next   *layerFrame // newest frame not yet taken
	spare  gocv.Mat    // the image of the frame last encoded, reused
	closed bool

	keys keyGate

	frames, dropped, encErrs atomic.Uint64
	smu                      sync.Mutex
	encode                   stats.Samples
	w, h                     int

	cancel context.CancelFunc
	done   chan struct{}
}

// layerFrame is a frame handed to a layer: the scaled image and what ties
// it to the H.264 frame (the same RTP timestamp and metadata).
type layerFrame struct {
	img  gocv.Mat
	seq  uint64
	ts   uint32
	meta string
}

func newVP8Layer(r *Relay) *layer {
	enc := newVP8Encoder(r.cfg.VP8, r.enc.cfg.FPS)
	return newLayer(r, "vp8", enc, &codecs.VP8Payloader{EnablePictureID: true}, enc.cfg.MaxHeight)
}

func newLayer(r *Relay, codec string, enc frameEncoder, p rtp.Payloader, maxH int) *layer {
	ctx, cancel := context.WithCancel(context.Background())
	l := &layer{codec: codec, relay: r, enc: enc, payloader: p, maxH: maxH, log: r.log.With(zap.String("layer", codec)),
		kick: make(chan struct{}, 1), spare: gocv.NewMat(), encode: stats.Samples{Cap: stats.LiveCap},
		cancel: cancel, done: make(chan struct{})}
	l.keys.request()
	go l.run(ctx)
	l.log.Info("layer started")
	return l
}

// push hands the layer a frame; it never blocks on the encoder.
func (l *layer) push(img gocv.Mat, seq uint64, ts uint32, meta string) {
	w, h := fallbackSize(img.Cols(), img.Rows(), l.maxH)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	f := l.next
	if f != nil {
		l.dropped.Add(1)
	} else {
		f = &layerFrame{img: l.spare}
		l.spare = gocv.NewMat()
		l.next = f
	}
	if w == img.Cols() && h == img.Rows() {
		img.CopyTo(&f.img)
	} else {
		gocv.Resize(img, &f.img, image.Pt(w, h), 0, 0, gocv.InterpolationArea)
	}
	f.seq, f.ts, f.meta = seq, ts, meta
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *layer) requestKeyframe() { l.keys.request() }

func (l *layer) run(ctx context.Context) {
	defer close(l.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		}
		l.mu.Lock()
		f := l.next
		l.next = nil
		l.mu.Unlock()
		if f == nil {
			continue
		}
		l.encodeAndSend(f)
		l.mu.Lock()
		l.spare.Close()
		l.spare = f.img
		l.mu.Unlock()
	}
}

func (l *layer) encodeAndSend(f *layerFrame) {
	if l.keys.due(l.relay.cfg.KeyframeGap) {
		l.enc.ForceKeyframe()
	}
	t0 := time.Now()
	au, key, err := l.enc.Encode(f.img)
	d := time.Since(t0)
	if err != nil {
		if n := l.encErrs.Add(1); n == 1 || n%100 == 0 {
			l.log.Error("encode failed", zap.Uint64("seq", f.seq), zap.Uint64("encode_errors", n), zap.Error(err))
		}
		return
	}
	if key {
		l.keys.sent(t0)
	}
	s := &sample{seq: f.seq, ts: f.ts, key: key, pkts: packetize(l.payloader, au, f.ts), meta: f.meta}
	l.frames.Add(1)
	l.smu.Lock()
	l.encode.Add(d)
	l.w, l.h = f.img.Cols(), f.img.Rows()
	l.smu.Unlock()
	l.relay.mu.RLock()
	for _, v := range l.relay.viewers {
		if v.layer.Load() == l {
			v.offer(s)
		}
	}
	l.relay.mu.RUnlock()
}

// close stops the goroutine and frees the encoder and the images. The
// caller must not hold the relay's lock: the goroutine may be waiting on it.
func (l *layer) close() {
	l.cancel()
	<-l.done
	l.mu.Lock()
	l.closed = true
	if l.next != nil {
		l.next.img.Close()
		l.next = nil
	}
	l.spare.Close()
	l.mu.Unlock()
	l.enc.Close()
	l.log.Info("layer stopped", zap.Uint64("frames", l.frames.Load()), zap.Uint64("dropped", l.dropped.Load()))
}

// LayerStats describe an extra encoding while it runs.
type LayerStats struct {
	Codec        string      `json:"codec"`
	Width        int         `json:"width"`
	Height       int         `json:"height"`
	Frames       uint64      `json:"frames"`
	Dropped      uint64      `json:"dropped"`
	EncodeErrors uint64      `json:"encode_errors"`
	EncodeMS     Percentiles `json:"encode_ms"`
}

func (l *layer) stats() LayerStats {
	l.smu.Lock()
	defer l.smu.Unlock()
	return LayerStats{Codec: l.codec, Width: l.w, Height: l.h, Frames: l.frames.Load(), Dropped: l.dropped.Load(),
		EncodeErrors: l.encErrs.Load(), EncodeMS: l.encode.Percentiles()}
}
