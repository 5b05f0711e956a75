// Package capture grabs frames from an ultrasound machine or a stand-in for
// one: the synthetic phantom (the embedded default, with ground truth), a
// V4L2 capture device, a video file, an RTSP/HTTP stream, a GStreamer
// pipeline, a DICOM cine or an OpenIGTLink server. Each kind of source
// lives in a file of its own and registers its schemes (kind.go); pacing
// (pace.go) and retrying (reconnect.go) are shared. It also owns what must
// happen to a frame before anything downstream sees it: crop to the image
// region and PHI masking.
package capture

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"sonolive/frame"
)

// Source produces frames. Next blocks until a frame is ready; it returns
// io.EOF when a finite source is exhausted and ctx.Err() once ctx is done.
// Close releases the device; it is called once, after the last Next.
type Source interface {
	Next(ctx context.Context) (*frame.Frame, error)
	Info() Info
	Close() error
}

// Info describes a source.
type Info struct {
	ID string
	// FPS is the nominal frame rate (0 when unknown).
	FPS float64
	// Live is true when frames arrive on the source's own clock (a device, a
	// stream, or a file or phantom paced in real time): a slow consumer must
	// drop frames rather than make them wait.
	Live bool
}

// Counters are a source's running totals.
type Counters struct {
	Frames     atomic.Uint64 // delivered
	Corrupt    atomic.Uint64 // empty or undecodable frames skipped
	Reconnects atomic.Uint64
}

// Stats is a snapshot of Counters.
type Stats struct {
	Frames, Corrupt, Reconnects uint64
	// Blanked frames: the PHI masks did not fit them (Region).
	Blanked uint64
}

func (c *Counters) snapshot() Stats {
	return Stats{Frames: c.Frames.Load(), Corrupt: c.Corrupt.Load(), Reconnects: c.Reconnects.Load()}
}

// Errors callers test for.
var (
	// ErrNotFound: the device or file does not exist.
	ErrNotFound = errors.New("not found")
	// ErrTimeout: opening or reading took longer than the configured limit.
	ErrTimeout = errors.New("timed out")
	// ErrUnreadable: the source opened but yields no decodable frames (a
	// corrupt file, an unsupported codec, a device that returns nothing).
	ErrUnreadable = errors.New("no decodable frames")
	// ErrDisconnected: a device or stream stopped delivering mid-session.
	ErrDisconnected = errors.New("disconnected")
	// ErrBadSpec: the source string cannot be understood.
	ErrBadSpec = errors.New("bad source spec")
)

// Options tune how a source is opened. Spec query parameters override them.
type Options struct {
	// Realtime paces files and the phantom at their frame rate; otherwise
	// they run as fast as the consumer takes frames.
	Realtime bool
	// Loop restarts a file at its end.
	Loop bool
	// Frames stops a finite source after this many frames (0: no limit).
	Frames int
	// OpenTimeout bounds opening a stream or device (OpenCV's own default
	// for network streams is 30 s).
	OpenTimeout time.Duration
	// ReadTimeout bounds one frame read from a stream.
	ReadTimeout time.Duration
	// Width, Height, FPS request a capture format from devices.
	Width, Height int
	FPS           float64
	// Reconnect keeps reopening a device or stream that drops, with backoff.
	Reconnect bool
	// Region crops and masks every frame before it leaves the source.
	Region Region
	// ID names the source in its frames and Info (a configured source
	// id); empty: a name made from the spec, without credentials.
	ID     string
	Logger *zap.Logger
	// Feed gives the frames of a whip:// source (a WHIP publisher's,
	// decoded by the server); nil where there is none.
	Feed Feed
}

// Feed is a source fed from outside this package: the server's WHIP
// ingest. Open waits, up to ctx, until there are frames to give (a
// publisher connected), then returns a source of them.
type Feed interface {
	Open(ctx context.Context, opts Options) (Source, error)
}

func (o Options) withDefaults() Options {
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = 5 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// Open parses spec and opens the source it names. Each kind (kind.go)
// documents its own specs; the usual ones:
//
//	phantom://?seed=1&lesions=2&geometry=sector    synthetic phantom
//	/dev/video0, v4l2:///dev/video0, v4l2://0       V4L2 capture device
//	rtsp://host/path, rtsps://…, http(s)://…        network stream
//	gst:videotestsrc ! videoconvert ! appsink       GStreamer pipeline
//	clip.mp4?loop=1, file:///data/clip.avi?loop=1   video file
//	cine.dcm, dicom:///data/cine.dcm?loop=1         DICOM cine
//	igtl://plus-host:18944?device=Image_Reference   OpenIGTLink server
//
// Query parameters on any spec but a stream URL's (width, height, fps,
// loop, realtime, frames, open_timeout, read_timeout) override opts. The
// first open must succeed: a missing device or unreachable stream is
// reported at once, not retried; a live kind that drops later is reopened
// when opts.Reconnect is set.
func Open(ctx context.Context, spec string, opts Options) (Source, error) {
	opts = opts.withDefaults()
	k, t, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	if err := applyQuery(&opts, t.Query); err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadSpec, Redact(spec), err)
	}
	first, err := k.Open(ctx, t, opts)
	if err != nil {
		return nil, err
	}
	var src Source = first
	if k.Retry && opts.Reconnect {
		src = newReconnecting(first, func(ctx context.Context) (Source, error) { return k.Open(ctx, t, opts) }, opts.Logger)
	}
	return finish(src, opts)
}

// Check says whether spec names a known kind with valid parameters,
// without opening anything: for specs given at run time.
func Check(spec string) error {
	_, t, err := parseSpec(spec)
	if err != nil {
		return err
	}
	var o Options
	if err := applyQuery(&o, t.Query); err != nil {
		return fmt.Errorf("%w %q: %w", ErrBadSpec, Redact(spec), err)
	}
	return nil
}

// finish applies what every source kind gets: the region, then the name.
func finish(src Source, opts Options) (Source, error) {
	src, err := withRegion(src, opts.Region, opts.Logger)
	if err != nil || opts.ID == "" {
		return src, err
	}
	return &named{Source: src, id: opts.ID}, nil
}

// named gives a source its configured id, so a stream's URL never becomes
// the source name that viewers see in the metadata.
type named struct {
	Source
	id string
}

func (n *named) Info() Info {
	i := n.Source.Info()
	i.ID = n.id
	return i
}

func (n *named) Next(ctx context.Context) (*frame.Frame, error) {
	f, err := n.Source.Next(ctx)
	if f != nil {
		f.Source = n.id
	}
	return f, err
}

// Stats forwards to the wrapped source.
func (n *named) Stats() Stats {
	if st, ok := n.Source.(interface{ Stats() Stats }); ok {
		return st.Stats()
	}
	return Stats{}
}

func applyQuery(o *Options, q url.Values) error {
	for key, vals := range q {
		v := vals[len(vals)-1]
		var err error
		switch key {
		case "width":
			o.Width, err = strconv.Atoi(v)
		case "height":
			o.Height, err = strconv.Atoi(v)
		case "fps":
			o.FPS, err = strconv.ParseFloat(v, 64)
		case "loop":
			o.Loop, err = strconv.ParseBool(v)
		case "realtime":
			o.Realtime, err = strconv.ParseBool(v)
		case "frames":
			o.Frames, err = strconv.Atoi(v)
		case "open_timeout":
			o.OpenTimeout, err = time.ParseDuration(v)
		case "read_timeout":
			o.ReadTimeout, err = time.ParseDuration(v)
		}
		if err != nil {
			return fmt.Errorf("parameter %s=%q: %w", key, v, err)
		}
	}
	switch {
	case o.Width < 0 || o.Height < 0 || o.Width > 8192 || o.Height > 8192:
		return fmt.Errorf("size %dx%d out of range 0..8192", o.Width, o.Height)
	case o.FPS != 0 && !(o.FPS > 0 && o.FPS <= 240):
		return fmt.Errorf("fps %v out of range (0, 240]", o.FPS)
	case o.Frames < 0 || o.OpenTimeout < 0 || o.ReadTimeout < 0:
		return errors.New("frames and timeouts must not be negative")
	}
	return nil
}

// statNotFound turns a missing path into ErrNotFound with a short message.
func statNotFound(what, path string) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s %s: %w", what, path, ErrNotFound)
		}
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	return nil
}
