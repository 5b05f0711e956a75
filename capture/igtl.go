package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/capture/internal/igtl"
	"sonolive/frame"
)

func init() {
	register(Kind{
		Name:    "igtl",
		Schemes: []string{"igtl", "openigtlink"},
		Usage:   "igtl://plus-host:18944?device=Image_Reference: an OpenIGTLink server (PLUS, 3D Slicer) sending IMAGE messages; device picks one stream",
		Retry:   true,
		Open:    openIGTL,
	})
}

// igtlSource is an OpenIGTLink client: it connects to a server (a PLUS
// server in front of the probe's driver, or 3D Slicer), reads IMAGE
// messages and turns each 2D image into a frame, with the pixel spacing
// the message's matrix gives. Other message types are skipped.
type igtlSource struct {
	conn     net.Conn
	device   string // only IMAGE messages from this device; "" any
	info     Info
	opts     Options
	log      *zap.Logger
	seq      uint64
	pending  *frame.Frame // the first frame, read while opening
	counters Counters
	skipped  map[string]bool // message types seen and skipped, logged once each
}

func openIGTL(ctx context.Context, t Target, opts Options) (Source, error) {
	host := t.URL.Host
	if t.URL.Port() == "" {
		host = net.JoinHostPort(t.URL.Hostname(), "18944") // the OpenIGTLink default
	}
	if t.URL.Hostname() == "" {
		return nil, fmt.Errorf("%w %q: igtl wants a host", ErrBadSpec, Redact(t.Spec))
	}
	id := "igtl:" + host
	d := net.Dialer{Timeout: opts.OpenTimeout}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("open %s: %w after %v", id, ErrTimeout, opts.OpenTimeout)
		}
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	s := &igtlSource{conn: conn, device: t.Query.Get("device"), opts: opts, skipped: map[string]bool{},
		info: Info{ID: id, FPS: opts.FPS, Live: true}, log: opts.Logger.With(zap.String("source", id))}
	// Prove the server sends images before calling it open: a server that
	// only sends tracking data is an open error, not a silent stall.
	f, err := s.read(ctx, opts.OpenTimeout)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	s.pending = f
	return s, nil
}

// Info implements Source.
func (s *igtlSource) Info() Info { return s.info }

// Stats returns the source's counters.
func (s *igtlSource) Stats() Stats { return s.counters.snapshot() }

// Close implements Source.
func (s *igtlSource) Close() error {
	if s.pending != nil {
		s.pending.Close()
		s.pending = nil
	}
	return s.conn.Close()
}

// Next implements Source.
func (s *igtlSource) Next(ctx context.Context) (*frame.Frame, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.opts.Frames > 0 && s.seq >= uint64(s.opts.Frames) {
		return nil, io.EOF
	}
	f := s.pending
	s.pending = nil
	if f == nil {
		var err error
		if f, err = s.read(ctx, s.opts.ReadTimeout); err != nil {
			return nil, err
		}
	}
	s.seq++
	f.Seq = s.seq
	s.counters.Frames.Add(1)
	return f, nil
}

// maxBadMessages is how many undecodable IMAGE messages in a row mean the
// server is broken, not hiccuping.
const maxBadMessages = 10

// read returns the next image as a frame. A read that takes longer than
// timeout, or a closed connection, is a lost source (ErrDisconnected);
// corrupt or unsupported images are counted and skipped.
func (s *igtlSource) read(ctx context.Context, timeout time.Duration) (*frame.Frame, error) {
	// Closing the connection is what unblocks a read when ctx ends.
	stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Now()) })
	defer stop()
	for bad := 0; bad < maxBadMessages; {
		s.conn.SetReadDeadline(time.Now().Add(timeout))
		m, err := igtl.ReadMessage(s.conn)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		switch {
		case errors.Is(err, igtl.ErrCRC):
			bad++
			s.counters.Corrupt.Add(1)
			s.log.Warn("skipping message", zap.Error(err))
			continue
		case errors.Is(err, igtl.ErrMalformed):
			// The stream's framing can no longer be trusted.
			return nil, fmt.Errorf("%s: %w: %w", s.info.ID, ErrDisconnected, err)
		case err != nil:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("%s: %w: no image for %v", s.info.ID, ErrDisconnected, timeout)
			}
			return nil, fmt.Errorf("%s: %w: %w", s.info.ID, ErrDisconnected, err)
		}
		if m.Type != "IMAGE" || (s.device != "" && m.Device != s.device) {
			if key := m.Type + "/" + m.Device; !s.skipped[key] && len(s.skipped) < 64 {
				s.skipped[key] = true
				s.log.Info("skipping messages", zap.String("type", m.Type), zap.String("device", m.Device))
			}
			continue
		}
		f, err := s.frame(m)
		if err != nil {
			bad++
			s.counters.Corrupt.Add(1)
			s.log.Warn("skipping image", zap.String("device", m.Device), zap.Error(err))
			continue
		}
		return f, nil
	}
	return nil, fmt.Errorf("%s: %w: %d bad images in a row", s.info.ID, ErrUnreadable, maxBadMessages)
}

// frame turns a 2D 8-bit IMAGE (grey, RGB or RGBA) into a BGR frame.
func (s *igtlSource) frame(m *igtl.Message) (*frame.Frame, error) {
	im, err := igtl.ParseImage(m.Content)
	if err != nil {
		return nil, err
	}
	w, h := im.SubSize[0], im.SubSize[1]
	switch {
	case im.SubSize[2] != 1:
		return nil, fmt.Errorf("a %d-slice volume, not a 2D image", im.SubSize[2])
	case im.Scalar != igtl.Uint8 && im.Scalar != igtl.Int8:
		return nil, fmt.Errorf("scalar type %d: ultrasound images are 8-bit", im.Scalar)
	case w < 16 || h < 16:
		return nil, fmt.Errorf("a %dx%d image", w, h)
	}
	var mt gocv.MatType
	var code gocv.ColorConversionCode
	switch im.Components {
	case 1:
		mt, code = gocv.MatTypeCV8UC1, gocv.ColorGrayToBGR
	case 3:
		mt, code = gocv.MatTypeCV8UC3, gocv.ColorRGBToBGR
	case 4:
		mt, code = gocv.MatTypeCV8UC4, gocv.ColorRGBAToBGR
	default:
		return nil, fmt.Errorf("%d components per pixel", im.Components)
	}
	in, err := gocv.NewMatFromBytes(h, w, mt, im.Pixels)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	img := gocv.NewMat()
	gocv.CvtColor(in, &img, code)
	f := &frame.Frame{Source: s.info.ID, Captured: time.Now(), Image: img}
	if sx, sy := im.SpacingMM(); sx > 0 && sy > 0 && sx < 10 && sy < 10 {
		f.Geometry.SpacingMM = [2]float64{sx, sy}
	}
	return f, nil
}
