package capture

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"gocv.io/x/gocv"
)

func init() {
	register(Kind{
		Name:    "v4l2",
		Schemes: []string{"v4l2"},
		Usage:   "/dev/video0, v4l2://0?width=1920&height=1080&fps=30: a V4L2 capture card or camera",
		Retry:   true,
		Open: func(ctx context.Context, t Target, opts Options) (Source, error) {
			dev := t.Path
			if _, err := strconv.Atoi(dev); err != nil && !strings.HasPrefix(dev, "/dev/") {
				return nil, fmt.Errorf("%w %q: v4l2 wants an index or /dev path", ErrBadSpec, Redact(t.Spec))
			}
			return openDevice(ctx, dev, opts)
		},
	})
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
