package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"gocv.io/x/gocv"

	"sonolive/overlay"
	"sonolive/stream"
)

// stills keeps the session's last two groups of pictures as the relay
// encoded them, so a freeze shows everyone exactly the frame one of them
// had on screen — named by its RTP timestamp, a few hundred milliseconds
// after the pipeline has moved on — for a few hundred KB instead of a ring
// of raw frames. The frame is decoded only when someone asks for it.
type stills struct {
	dir string // where a group is written for FFmpeg to decode

	mu   sync.Mutex
	gops [][]stillAU // oldest first, at most two; each starts with a keyframe
}

type stillAU struct {
	ts   uint32
	au   []byte            // the relay's access unit (Annex B), shared read-only
	meta *overlay.Metadata // its findings, shared read-only
}

// maxGOPFrames bounds a group (keyframes come every 2 s; one that never
// comes must not grow memory).
const maxGOPFrames = 600

// errNoStill: the frame asked for is not among those kept.
var errNoStill = errors.New("that frame is no longer kept")

// WriteFrame is the relay tap; it keeps a reference to the access unit.
func (s *stills) WriteFrame(f *stream.EncodedFrame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case f.Key:
		s.gops = append(s.gops, []stillAU{{f.RTPTime, f.AU, f.Meta}})
		if len(s.gops) > 2 {
			s.gops = s.gops[1:]
		}
	case len(s.gops) == 0:
		return // nothing decodable before the first keyframe
	default:
		g := &s.gops[len(s.gops)-1]
		if len(*g) >= maxGOPFrames {
			return
		}
		*g = append(*g, stillAU{f.RTPTime, f.AU, f.Meta})
	}
}

// newest is the RTP timestamp of the last frame kept.
func (s *stills) newest() (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.gops) == 0 {
		return 0, false
	}
	g := s.gops[len(s.gops)-1]
	return g[len(g)-1].ts, true
}

// meta is the findings of the frame with RTP timestamp ts (nil when it is
// not kept, or had none).
func (s *stills) meta(ts uint32) *overlay.Metadata {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.gops {
		for _, a := range g {
			if a.ts == ts {
				return a.meta
			}
		}
	}
	return nil
}

// frame decodes the frame with RTP timestamp ts (BGR; the caller closes
// it).
func (s *stills) frame(ts uint32) (gocv.Mat, error) {
	s.mu.Lock()
	var aus []stillAU
	for _, g := range s.gops {
		for i, a := range g {
			if a.ts == ts {
				aus = g[:i+1]
			}
		}
	}
	s.mu.Unlock()
	if aus == nil {
		return gocv.Mat{}, errNoStill
	}
	f, err := os.CreateTemp(s.dir, "still-*.h264")
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("still: %w", err)
	}
	defer os.Remove(f.Name())
	for _, a := range aus {
		if _, err := f.Write(a.au); err != nil {
			f.Close()
			return gocv.Mat{}, fmt.Errorf("still: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return gocv.Mat{}, fmt.Errorf("still: %w", err)
	}
	vc, err := gocv.VideoCaptureFileWithAPI(f.Name(), gocv.VideoCaptureFFmpeg)
	if err != nil || !vc.IsOpened() {
		return gocv.Mat{}, fmt.Errorf("still: opening %s: %v", filepath.Base(f.Name()), err)
	}
	defer vc.Close()
	img := gocv.NewMat()
	n := 0
	for ; n < len(aus); n++ {
		if !vc.Read(&img) || img.Empty() {
			break
		}
	}
	// The decoder may hold the last frame back; what it gave is the frame
	// asked for only when it gave them all.
	if n != len(aus) {
		img.Close()
		return gocv.Mat{}, fmt.Errorf("still: decoded %d of %d frames", n, len(aus))
	}
	return img, nil
}

// at decodes the frame with RTP timestamp ts, or the newest kept when that
// one is no longer (a long round trip), and says which it gave.
func (s *stills) at(ts uint32) (gocv.Mat, uint32, error) {
	img, err := s.frame(ts)
	if errors.Is(err, errNoStill) {
		if newest, ok := s.newest(); ok {
			ts = newest
			img, err = s.frame(ts)
		}
	}
	return img, ts, err
}

// encodeJPEG is a picture as the pages and the library get it.
func encodeJPEG(img gocv.Mat) ([]byte, error) {
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, img, []int{gocv.IMWriteJpegQuality, 92})
	if err != nil {
		return nil, err
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}
