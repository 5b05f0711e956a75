package capture

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"rtsp://admin:pw@10.0.0.5/stream", "rtsp://***@10.0.0.5/stream"},
		{"rtsp://admin:p@ss@word@10.0.0.5:554/s", "rtsp://***@10.0.0.5:554/s"},
		{"rtsp://10.0.0.5/s?user=admin&password=hunter2&channel=1", "rtsp://10.0.0.5/s?channel=1&password=***&user=***"},
		{"http://cam/mjpg?token=abc", "http://cam/mjpg?token=***"},
		{"https://u@cam/x?Sig=1&fps=30#frag", "https://***@cam/x?Sig=***&fps=30#frag"},
		{"rtsp://cam/x?%zz=1&pwd=2", "rtsp://cam/x?***"},
		{"rtsp://cam/x@y", "rtsp://cam/x@y"}, // an '@' in the path is not user info
		{"phantom://?seed=1", "phantom://?seed=1"},
		{"/dev/video0", "/dev/video0"},
		{"gst:videotestsrc ! appsink", "gst:videotestsrc ! appsink"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Errors about a spec never repeat its credentials, even when the URL does
// not parse (url.Error quotes the raw URL).
func TestSpecErrorsHideCredentials(t *testing.T) {
	for _, spec := range []string{
		"rtsp://admin:s3cr3t@cam:port/x",
		"rtsp://admin:s3cr3t@cam/x?password=s3cr3t\x7f",
		"nope://admin:s3cr3t@cam/x",
		"v4l2://admin:s3cr3t@cam",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := Open(ctx, spec, Options{})
		cancel()
		if err == nil {
			t.Fatalf("%q parsed", spec)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("error repeats the password: %v", err)
		}
	}
}
