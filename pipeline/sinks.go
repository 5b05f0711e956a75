package pipeline

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image"
	"os"

	"gocv.io/x/gocv"

	"sonolive/frame"
	"sonolive/overlay"
)

// VideoFileSink writes annotated frames to a video file through OpenCV's
// FFmpeg writer: H.264 when the build has it, MPEG-4 Part 2 otherwise.
type VideoFileSink struct {
	path    string
	fps     float64
	w       *gocv.VideoWriter
	size    image.Point
	resized gocv.Mat
	Codec   string // the codec actually used, once the first frame is in
}

// NewVideoFileSink returns a sink that opens path on the first frame (when
// the frame size is known).
func NewVideoFileSink(path string, fps float64) *VideoFileSink {
	if fps <= 0 {
		fps = 30
	}
	return &VideoFileSink{path: path, fps: fps, resized: gocv.NewMat()}
}

// Write implements Sink.
func (s *VideoFileSink) Write(f *frame.Frame, _ *overlay.Metadata) error {
	if s.w == nil {
		s.size = image.Pt(f.Image.Cols(), f.Image.Rows())
		for _, codec := range []string{"avc1", "mp4v"} {
			w, err := gocv.VideoWriterFile(s.path, codec, s.fps, s.size.X, s.size.Y, true)
			if err == nil && w.IsOpened() {
				s.w, s.Codec = w, codec
				break
			}
			if w != nil {
				w.Close()
			}
		}
		if s.w == nil {
			return fmt.Errorf("video file %s: no usable encoder", s.path)
		}
	}
	img := f.Image
	// A source that reconnects at another resolution keeps the file's size.
	if img.Cols() != s.size.X || img.Rows() != s.size.Y {
		gocv.Resize(img, &s.resized, s.size, 0, 0, gocv.InterpolationLinear)
		img = s.resized
	}
	if err := s.w.Write(img); err != nil {
		return fmt.Errorf("video file %s: %w", s.path, err)
	}
	return nil
}

// Close implements Sink.
func (s *VideoFileSink) Close() error {
	s.resized.Close()
	if s.w == nil {
		return nil
	}
	return s.w.Close()
}

// MetadataSink writes one JSON object per frame (JSON Lines).
type MetadataSink struct {
	f   *os.File
	buf *bufio.Writer
	enc *json.Encoder
}

// NewMetadataSink creates path.
func NewMetadataSink(path string) (*MetadataSink, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("metadata file: %w", err)
	}
	buf := bufio.NewWriterSize(f, 64<<10)
	return &MetadataSink{f: f, buf: buf, enc: json.NewEncoder(buf)}, nil
}

// Write implements Sink.
func (s *MetadataSink) Write(_ *frame.Frame, m *overlay.Metadata) error {
	return s.enc.Encode(m)
}

// Close implements Sink.
func (s *MetadataSink) Close() error {
	if err := s.buf.Flush(); err != nil {
		s.f.Close()
		return err
	}
	return s.f.Close()
}
