package capture

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gocv.io/x/gocv"
)

func init() {
	register(Kind{
		Name:    "file",
		Schemes: []string{"file"},
		Usage:   "clip.mp4?loop=1, file:///data/clip.avi?realtime=1: a video file (anything FFmpeg reads)",
		Open: func(ctx context.Context, t Target, opts Options) (Source, error) {
			return openFile(ctx, t.Path, opts)
		},
	})
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
