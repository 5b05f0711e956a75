package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/frame"
)

// OpenCV 4.5.3+ property ids that gocv does not name.
const (
	propOpenTimeoutMsec gocv.VideoCaptureProperties = 53
	propReadTimeoutMsec gocv.VideoCaptureProperties = 54
)

// maxBadReads is how many failed or empty reads in a row mean a live source
// has gone, not just hiccuped.
const maxBadReads = 10

// cvSource reads frames through OpenCV's VideoCapture: devices, streams,
// GStreamer pipelines and files.
type cvSource struct {
	cap      *gocv.VideoCapture
	info     Info
	opts     Options
	file     bool
	path     string
	stamp    fileStamp // the file as opened, to see it replaced before a loop
	pending  *gocv.Mat // first frame, read while opening to prove the source decodes
	seq      uint64
	start    time.Time
	played   int // frames delivered in this pass over a file
	counters Counters
	log      *zap.Logger
}

// openCapture runs open on another goroutine so a hung open (a black-holed
// RTSP server, a wedged driver) returns ErrTimeout to the caller on time.
// The abandoned capture is closed whenever the open finally returns.
func openCapture(ctx context.Context, what string, timeout time.Duration, open func() (*gocv.VideoCapture, error)) (*gocv.VideoCapture, error) {
	type result struct {
		vc  *gocv.VideoCapture
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		vc, err := open()
		done <- result{vc, err}
	}()
	// The backstop fires a little after OpenCV's own timeout, which
	// returns cleanly when the backend honours it.
	t := time.NewTimer(timeout + timeout/4 + 100*time.Millisecond)
	defer t.Stop()
	select {
	case r := <-done:
		if r.err != nil || r.vc == nil || !r.vc.IsOpened() {
			if r.vc != nil {
				r.vc.Close()
			}
			// OpenCV says only "Error opening file"; whether it gave up at
			// its own timeout is what the user needs to know.
			if time.Since(start) >= timeout*9/10 {
				return nil, fmt.Errorf("open %s: %w after %v", what, ErrTimeout, timeout)
			}
			return nil, fmt.Errorf("open %s: %w", what, ErrUnreadable)
		}
		return r.vc, nil
	case <-t.C:
	case <-ctx.Done():
	}
	go func() {
		if r := <-done; r.vc != nil {
			r.vc.Close()
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("open %s: %w after %v", what, ErrTimeout, timeout)
}

func newCVSource(ctx context.Context, vc *gocv.VideoCapture, id string, opts Options, file bool) (*cvSource, error) {
	s := &cvSource{cap: vc, opts: opts, file: file, log: opts.Logger.With(zap.String("source", id))}
	fps := vc.Get(gocv.VideoCaptureFPS)
	if fps <= 0 || fps > 240 {
		fps = 30
	}
	if opts.FPS > 0 && file {
		fps = opts.FPS
	}
	s.info = Info{ID: id, FPS: fps, Live: !file || opts.Realtime}
	// Prove the source decodes before calling it open: a corrupt file or a
	// device that returns nothing is an open error, not a silent stall.
	first, err := s.readFrame(ctx)
	if err != nil {
		vc.Close()
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	s.pending = first
	return s, nil
}

func openFile(ctx context.Context, path string, opts Options) (Source, error) {
	if err := statNotFound("video file", path); err != nil {
		return nil, err
	}
	vc, err := openCapture(ctx, path, opts.OpenTimeout, func() (*gocv.VideoCapture, error) {
		return gocv.VideoCaptureFileWithAPI(path, gocv.VideoCaptureFFmpeg)
	})
	if err != nil {
		return nil, fmt.Errorf("%w (corrupt file or unsupported format)", err)
	}
	s, err := newCVSource(ctx, vc, "file:"+filepath.Base(path), opts, true)
	if err != nil {
		return nil, err
	}
	s.path = path
	s.stamp, _ = stampOf(path)
	return s, nil
}

// fileStamp is what says a file is still the one that was opened.
type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.Size(), fi.ModTime()}, nil
}

// rewind starts a looping file over. A file truncated, replaced or removed
// since it was opened is a lost source, not a loop: FFmpeg would replay
// what its buffers still hold, or stall on a file being written, and the
// session reopens it instead, as it does any lost source.
func (s *cvSource) rewind() error {
	if st, err := stampOf(s.path); err != nil || st != s.stamp {
		return fmt.Errorf("%s: %w: the file changed while it played", s.info.ID, ErrDisconnected)
	}
	s.cap.Set(gocv.VideoCapturePosFrames, 0)
	s.played = 0
	return nil
}

func openStream(ctx context.Context, url string, opts Options) (Source, error) {
	params := []gocv.VideoCaptureProperties{
		propOpenTimeoutMsec, gocv.VideoCaptureProperties(opts.OpenTimeout.Milliseconds()),
		propReadTimeoutMsec, gocv.VideoCaptureProperties(opts.ReadTimeout.Milliseconds()),
	}
	vc, err := openCapture(ctx, Redact(url), opts.OpenTimeout, func() (*gocv.VideoCapture, error) {
		return gocv.VideoCaptureFileWithAPIParams(url, gocv.VideoCaptureFFmpeg, params)
	})
	if err != nil {
		return nil, err
	}
	s, err := newCVSource(ctx, vc, Redact(url), opts, false)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func openDevice(ctx context.Context, dev string, opts Options) (Source, error) {
	open := func() (*gocv.VideoCapture, error) {
		if idx, err := strconv.Atoi(dev); err == nil {
			return gocv.VideoCaptureDeviceWithAPI(idx, gocv.VideoCaptureV4L2)
		}
		return gocv.VideoCaptureFileWithAPI(dev, gocv.VideoCaptureV4L2)
	}
	if strings.HasPrefix(dev, "/dev/") {
		if err := statNotFound("capture device", dev); err != nil {
			return nil, err
		}
	}
	vc, err := openCapture(ctx, dev, opts.OpenTimeout, open)
	if err != nil {
		return nil, err
	}
	if opts.Width > 0 && opts.Height > 0 {
		vc.Set(gocv.VideoCaptureFrameWidth, float64(opts.Width))
		vc.Set(gocv.VideoCaptureFrameHeight, float64(opts.Height))
	}
	if opts.FPS > 0 {
		vc.Set(gocv.VideoCaptureFPS, opts.FPS)
	}
	// Keep the driver from queueing stale frames behind a slow reader.
	vc.Set(gocv.VideoCaptureBufferSize, 1)
	return newCVSource(ctx, vc, "v4l2:"+dev, opts, false)
}

func openGStreamer(ctx context.Context, pipeline string, opts Options) (Source, error) {
	if !gocv.VideoRegistry.HasBackend(gocv.VideoCaptureGstreamer) {
		return nil, fmt.Errorf("open gst pipeline: %w: this OpenCV has no GStreamer backend", ErrUnreadable)
	}
	vc, err := openCapture(ctx, "gst pipeline", opts.OpenTimeout, func() (*gocv.VideoCapture, error) {
		return gocv.VideoCaptureFileWithAPI(pipeline, gocv.VideoCaptureGstreamer)
	})
	if err != nil {
		return nil, err
	}
	return newCVSource(ctx, vc, "gst", opts, false)
}

// Redact hides credentials in a source spec before it reaches a log, an
// error or a page: the user info (a password may itself hold '@') and the
// values of query parameters that carry secrets. A spec that does not parse
// as a URL loses its user info and its whole query.
func Redact(spec string) string {
	i := strings.Index(spec, "://")
	if i < 0 {
		return spec
	}
	scheme, rest := spec[:i+3], spec[i+3:]
	// The authority ends at the first '/', '?' or '#'; the user info is
	// everything before its last '@'.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		rest = "***@" + rest[at+1:]
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	if !hasQuery {
		return scheme + rest
	}
	query, frag, hasFrag := strings.Cut(query, "#")
	q, err := url.ParseQuery(query)
	if err != nil {
		return scheme + path + "?***"
	}
	for k := range q {
		if secretParam(k) {
			q[k] = []string{"***"}
		}
	}
	out := scheme + path + "?" + strings.ReplaceAll(q.Encode(), "%2A%2A%2A", "***")
	if hasFrag {
		out += "#" + frag
	}
	return out
}

// secretParam reports whether a query parameter's name says it carries a
// credential (camera URLs put them in many spellings).
func secretParam(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"pass", "pwd", "token", "secret", "key", "auth", "sig", "cred", "session"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return k == "user" || k == "username" || k == "login"
}

// Info implements Source.
func (s *cvSource) Info() Info { return s.info }

// Stats returns the source's counters.
func (s *cvSource) Stats() Stats { return s.counters.snapshot() }

// Close implements Source.
func (s *cvSource) Close() error {
	if s.pending != nil {
		s.pending.Close()
		s.pending = nil
	}
	return s.cap.Close()
}

// Next implements Source.
func (s *cvSource) Next(ctx context.Context) (*frame.Frame, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.opts.Frames > 0 && s.seq >= uint64(s.opts.Frames) {
		return nil, io.EOF
	}
	var img *gocv.Mat
	if s.pending != nil {
		img, s.pending = s.pending, nil
	} else {
		m, err := s.readFrame(ctx)
		if errors.Is(err, io.EOF) && s.file && s.opts.Loop && s.played > 0 {
			if err = s.rewind(); err == nil {
				m, err = s.readFrame(ctx)
			}
		}
		if err != nil {
			return nil, err
		}
		img = m
	}
	if s.file && s.opts.Realtime {
		if s.start.IsZero() {
			s.start = time.Now()
		}
		due := s.start.Add(time.Duration(float64(s.seq) / s.info.FPS * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				img.Close()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
	}
	s.seq++
	s.played++
	s.counters.Frames.Add(1)
	return &frame.Frame{Seq: s.seq, Source: s.info.ID, Captured: time.Now(), Image: *img}, nil
}

// readFrame returns the next good frame as BGR. Empty or malformed frames
// are counted and skipped; too many in a row mean the end of a file or a
// lost live source.
func (s *cvSource) readFrame(ctx context.Context) (*gocv.Mat, error) {
	m := gocv.NewMat()
	for bad := 0; bad < maxBadReads; {
		if err := ctx.Err(); err != nil {
			m.Close()
			return nil, err
		}
		ok := s.cap.Read(&m)
		if !ok {
			if s.file {
				m.Close()
				if s.played == 0 && s.seq == 0 {
					return nil, ErrUnreadable
				}
				return nil, io.EOF
			}
			bad++
			s.counters.Corrupt.Add(1)
			continue
		}
		if m.Empty() || m.Rows() < 16 || m.Cols() < 16 || m.Type()&0x7 != 0 {
			bad++
			s.counters.Corrupt.Add(1)
			s.log.Warn("skipping unusable frame", zap.Uint64("seq", s.seq+1), zap.Int("rows", m.Rows()), zap.Int("cols", m.Cols()))
			continue
		}
		switch m.Channels() {
		case 3:
			return &m, nil
		case 1:
			gocv.CvtColor(m, &m, gocv.ColorGrayToBGR)
			return &m, nil
		case 4:
			gocv.CvtColor(m, &m, gocv.ColorBGRAToBGR)
			return &m, nil
		}
		bad++
		s.counters.Corrupt.Add(1)
	}
	m.Close()
	if s.file {
		if s.seq == 0 {
			return nil, ErrUnreadable
		}
		return nil, io.EOF
	}
	return nil, fmt.Errorf("%s: %w: %d bad reads in a row", s.info.ID, ErrDisconnected, maxBadReads)
}
