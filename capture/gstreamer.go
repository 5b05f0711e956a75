package capture

import (
	"context"
	"fmt"

	"gocv.io/x/gocv"
)

func init() {
	register(Kind{
		Name:    "gst",
		Schemes: []string{"gst"},
		Usage:   "gst:videotestsrc ! videoconvert ! appsink: a GStreamer pipeline ending in appsink",
		Retry:   true,
		Open: func(ctx context.Context, t Target, opts Options) (Source, error) {
			return openGStreamer(ctx, t.Path, opts)
		},
	})
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
