package ingest

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"sonolive/capture"
)

// Point is where one source's publisher connects. It is the source's
// capture.Feed: the session's whip:// source opens it and gets the
// publisher's decoded frames, and opens it again (the retry handler) when
// the publisher leaves and the next one comes.
type Point struct {
	log      *zap.Logger
	mu       sync.Mutex
	pub      *Publisher
	attached chan struct{} // closed when a publisher attaches
}

// NewPoint returns an empty point.
func NewPoint(log *zap.Logger) *Point {
	return &Point{log: log, attached: make(chan struct{})}
}

// Attach makes p the point's publisher; ErrBusy while another one is
// connected.
func (pt *Point) Attach(p *Publisher) error {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.pub != nil {
		select {
		case <-pt.pub.Done():
		default:
			return ErrBusy
		}
	}
	pt.pub = p
	close(pt.attached)
	pt.attached = make(chan struct{})
	return nil
}

// Publisher is the publisher connected now, or nil.
func (pt *Point) Publisher() *Publisher {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.pub != nil {
		select {
		case <-pt.pub.Done():
			return nil
		default:
		}
	}
	return pt.pub
}

// Close ends the current publisher's connection.
func (pt *Point) Close() {
	if p := pt.Publisher(); p != nil {
		p.Close()
	}
}

// Open implements capture.Feed: it waits for a publisher, then decodes
// its stream.
func (pt *Point) Open(ctx context.Context, opts capture.Options) (capture.Source, error) {
	for {
		pt.mu.Lock()
		p, ch := pt.pub, pt.attached
		pt.mu.Unlock()
		if p != nil {
			select {
			case <-p.Done():
			default:
				return decode(ctx, p, opts)
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// pipelines decode each codec from the byte stream written into fd %d,
// to BGR for the pipeline. Each frame leaves as soon as it is written:
// libavcodec decodes on one thread (frame threading holds a frame back
// per thread), each H.264 unit is followed by an access unit delimiter (so
// h264parse need not wait for the next frame to end this one), and the
// appsink keeps only the newest frame for a consumer that falls behind.
// Measured on a 30 fps stream: 101 ms from write to frame with the
// defaults, 35 ms so (BenchmarkDecodeLatency).
var pipelines = map[string]string{
	"H264": "fdsrc fd=%d ! h264parse ! avdec_h264 max-threads=1 ! videoconvert ! video/x-raw,format=BGR ! appsink sync=false max-buffers=1 drop=true",
	"VP8":  "fdsrc fd=%d ! video/x-ivf ! ivfparse ! vp8dec ! videoconvert ! video/x-raw,format=BGR ! appsink sync=false max-buffers=1 drop=true",
}

// aud is an H.264 access unit delimiter: written after each unit, it
// starts the next one.
var aud = []byte{0, 0, 0, 1, 9, 0xf0}

// decode starts a GStreamer decoder reading a pipe, and a writer feeding
// the publisher's access units into it, from a keyframe on.
func decode(ctx context.Context, p *Publisher, opts capture.Options) (capture.Source, error) {
	// The codec is known once the first packets have come.
	for p.codec.Load().(string) == "" {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.Done():
			return nil, fmt.Errorf("publisher %s: %w: left before sending video", p.id, capture.ErrDisconnected)
		case <-time.After(20 * time.Millisecond):
		}
	}
	codec := p.codec.Load().(string)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		defer w.Close() // EOS for the decoder
		var n uint64
		for {
			select {
			case <-stop:
				return
			case <-p.Done():
				return
			case au := <-p.aus:
				b := au.data
				if codec == "H264" {
					b = append(b[:len(b):len(b)], aud...)
				}
				if codec == "VP8" {
					if n == 0 {
						// Units start at a key frame, which gives the size.
						b = append(ivfHeader(au.data), ivfFrameHeader(len(au.data), n)...)
						b = append(b, au.data...)
					} else {
						b = append(ivfFrameHeader(len(au.data), n), au.data...)
					}
				}
				n++
				if _, err := w.Write(b); err != nil {
					return
				}
			}
		}
	}()
	o := capture.Options{OpenTimeout: 10 * time.Second, ReadTimeout: 5 * time.Second, Logger: opts.Logger, ID: opts.ID}
	src, err := capture.Open(ctx, "gst:"+fmt.Sprintf(pipelines[codec], r.Fd()), o)
	if err != nil {
		close(stop)
		r.Close() // a writer blocked on a full pipe fails and returns
		<-wrote
		return nil, fmt.Errorf("publisher %s: decoder: %w", p.id, err)
	}
	return &decoded{Source: src, pub: p, r: r, stop: stop, wrote: wrote}, nil
}

// decoded is a publisher's stream as a capture source.
type decoded struct {
	capture.Source
	pub   *Publisher
	r     *os.File
	stop  chan struct{}
	wrote chan struct{}
	once  sync.Once
}

// Info implements capture.Source: a publisher is live.
func (d *decoded) Info() capture.Info {
	i := d.Source.Info()
	i.Live = true
	return i
}

// Close stops the writer and the decoder.
func (d *decoded) Close() error {
	var err error
	d.once.Do(func() {
		close(d.stop)
		err = d.Source.Close()
		d.r.Close() // a writer blocked on a full pipe fails and returns
		<-d.wrote
	})
	return err
}

// ivfHeader is the 32-byte IVF file header for VP8, sized from a key
// frame (its 14-bit width and height follow the start code).
func ivfHeader(key []byte) []byte {
	h := make([]byte, 32)
	copy(h, "DKIF")
	binary.LittleEndian.PutUint16(h[4:], 0)
	binary.LittleEndian.PutUint16(h[6:], 32)
	copy(h[8:], "VP80")
	if len(key) >= 10 {
		binary.LittleEndian.PutUint16(h[12:], binary.LittleEndian.Uint16(key[6:])&0x3fff)
		binary.LittleEndian.PutUint16(h[14:], binary.LittleEndian.Uint16(key[8:])&0x3fff)
	}
	binary.LittleEndian.PutUint32(h[16:], 30) // time base 1/30
	binary.LittleEndian.PutUint32(h[20:], 1)
	return h
}

// ivfFrameHeader precedes each VP8 frame: its size and a presentation
// counter.
func ivfFrameHeader(size int, pts uint64) []byte {
	h := make([]byte, 12)
	binary.LittleEndian.PutUint32(h, uint32(size))
	binary.LittleEndian.PutUint64(h[4:], pts)
	return h
}
