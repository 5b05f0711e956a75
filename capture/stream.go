package capture

import (
	"context"

	"gocv.io/x/gocv"
)

func init() {
	register(Kind{
		Name:        "stream",
		Schemes:     []string{"rtsp", "rtsps", "http", "https", "rtmp", "udp", "srt"},
		Usage:       "rtsp://user:pass@host/path (also rtsps, http(s), rtmp, udp, srt): a network stream through FFmpeg",
		RemoteQuery: true,
		Retry:       true,
		Open: func(ctx context.Context, t Target, opts Options) (Source, error) {
			return openStream(ctx, t.Spec, opts)
		},
	})
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
