// Package capture grabs frames from an ultrasound machine or a stand-in for
// one: the synthetic phantom (the embedded default, with ground truth), a
// V4L2 capture device, a video file, an RTSP/HTTP stream or a GStreamer
// pipeline. It also owns what must happen to a frame before anything
// downstream sees it: crop to the image region and PHI masking.
package capture

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
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

// Open parses spec and opens the source it names:
//
//	phantom://?seed=1&lesions=2&geometry=sector    synthetic phantom
//	/dev/video0, v4l2:///dev/video0, v4l2://0       V4L2 capture device
//	rtsp://host/path, rtsps://…, http(s)://…        network stream
//	gst:videotestsrc ! videoconvert ! appsink       GStreamer pipeline
//	clip.mp4?loop=1, file:///data/clip.avi?loop=1   video file
//
// Query parameters on any spec (width, height, fps, loop, realtime, frames,
// open_timeout, read_timeout) override opts. The first open must succeed:
// a missing device or unreachable stream is reported at once, not retried.
func Open(ctx context.Context, spec string, opts Options) (Source, error) {
	opts = opts.withDefaults()
	kind, target, q, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	if err := applyQuery(&opts, q); err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadSpec, Redact(spec), err)
	}
	var open func(context.Context) (Source, error)
	switch kind {
	case "phantom":
		cfg, err := phantomConfigFromQuery(q)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrBadSpec, Redact(spec), err)
		}
		cfg.Realtime = cfg.Realtime || opts.Realtime
		if opts.Frames > 0 {
			cfg.Frames = opts.Frames
		}
		return finish(NewPhantom(cfg), opts)
	case "device":
		open = func(ctx context.Context) (Source, error) { return openDevice(ctx, target, opts) }
	case "url":
		open = func(ctx context.Context) (Source, error) { return openStream(ctx, target, opts) }
	case "gst":
		open = func(ctx context.Context) (Source, error) { return openGStreamer(ctx, target, opts) }
	case "file":
		src, err := openFile(ctx, target, opts)
		if err != nil {
			return nil, err
		}
		return finish(src, opts)
	}
	first, err := open(ctx)
	if err != nil {
		return nil, err
	}
	var src Source = first
	if opts.Reconnect {
		src = newReconnecting(first, open, opts.Logger)
	}
	return finish(src, opts)
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

func parseSpec(spec string) (kind, target string, q url.Values, err error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return "", "", nil, fmt.Errorf("%w: empty", ErrBadSpec)
	case strings.HasPrefix(spec, "gst:"):
		return "gst", strings.TrimSpace(strings.TrimPrefix(spec, "gst:")), url.Values{}, nil
	case strings.HasPrefix(spec, "/dev/video"):
		return "device", spec, url.Values{}, nil
	}
	if !strings.Contains(spec, "://") {
		return parsePlainPath(spec)
	}
	u, perr := url.Parse(spec)
	if perr != nil {
		// url.Error repeats the raw URL, credentials and all: keep only
		// what is wrong with it.
		var ue *url.Error
		if errors.As(perr, &ue) {
			perr = ue.Err
		}
		return "", "", nil, fmt.Errorf("%w %q: %w", ErrBadSpec, Redact(spec), perr)
	}
	switch u.Scheme {
	case "phantom":
		return "phantom", "", u.Query(), nil
	case "v4l2":
		dev := u.Host + u.Path
		if _, err := strconv.Atoi(dev); err != nil && !strings.HasPrefix(dev, "/dev/") {
			return "", "", nil, fmt.Errorf("%w %q: v4l2 wants an index or /dev path", ErrBadSpec, Redact(spec))
		}
		return "device", dev, u.Query(), nil
	case "file":
		return "file", u.Path, u.Query(), nil
	case "rtsp", "rtsps", "http", "https", "rtmp", "udp", "srt":
		// Stream URLs keep their query: it may belong to the camera.
		return "url", spec, url.Values{}, nil
	}
	return "", "", nil, fmt.Errorf("%w %q: unknown scheme %q", ErrBadSpec, Redact(spec), u.Scheme)
}

// parsePlainPath reads "clip.mp4?loop=1" as the file clip.mp4 with its
// query, as the doc of Open promises for every spec, unless a file of that
// whole name exists: a name may really contain "?".
func parsePlainPath(spec string) (kind, target string, q url.Values, err error) {
	i := strings.LastIndexByte(spec, '?')
	if i < 0 {
		return "file", spec, url.Values{}, nil
	}
	if _, err := os.Stat(spec); err == nil {
		return "file", spec, url.Values{}, nil
	}
	q, perr := url.ParseQuery(spec[i+1:])
	if perr != nil {
		return "", "", nil, fmt.Errorf("%w %q: query: %w", ErrBadSpec, Redact(spec), perr)
	}
	return "file", spec[:i], q, nil
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
