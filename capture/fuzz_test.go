package capture

import (
	"errors"
	"strings"
	"testing"
)

// FuzzSpec: any source spec is understood or refused with ErrBadSpec, and
// no error repeats a password it carried.
func FuzzSpec(f *testing.F) {
	for _, s := range []string{"phantom://?seed=1&lesions=2&width=640&height=480&fps=30&geometry=sector", "/dev/video0",
		"v4l2://0?width=1280&height=720&fps=30", "file:///data/clip.avi?loop=1", "clip.mp4", "rtsp://admin:pw@cam/x?password=pw",
		"gst:videotestsrc ! appsink", "nope://x", "phantom://?width=-1", "http://[::1", "v4l2://0?width=-1&fps=NaN", "phantom://?fps=NaN",
		"dicom:///data/cine.dcm?loop=1", "igtl://plus:18944?device=Image_Reference", "igtl://:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		kind, tg, err := parseSpec(spec)
		if err != nil {
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("unnamed error: %v", err)
			}
			return
		}
		var o Options
		if err := applyQuery(&o, tg.Query); err == nil && (o.FPS < 0 || o.FPS != o.FPS || o.Width < 0 || o.Height < 0 || o.OpenTimeout < 0 || o.ReadTimeout < 0) {
			t.Fatalf("options %+v accepted", o)
		}
		if kind.Name == "phantom" {
			if cfg, err := phantomConfigFromQuery(tg.Query); err == nil && (cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > 8192 || cfg.Height > 8192 || !(cfg.FPS > 0 && cfg.FPS <= 240)) {
				t.Fatalf("phantom of %dx%d accepted", cfg.Width, cfg.Height)
			}
		}
		_ = Redact(spec)
	})
}

// FuzzRedact: what Redact returns for a URL with credentials does not
// depend on them at all: it is what it returns for the same URL with
// "x@" for user and password.
func FuzzRedact(f *testing.F) {
	f.Add("rtsp", "admin", "s3cr3t", "cam:554/x?a=1")
	f.Add("http", "u", "p@ss:w/rd", "h/p")
	f.Fuzz(func(t *testing.T, scheme, user, pass, rest string) {
		if strings.ContainsAny(scheme+user+pass, "/?#") || strings.Contains(scheme, "://") {
			return // not user info any more
		}
		got := Redact(scheme + "://" + user + ":" + pass + "@" + rest)
		want := Redact(scheme + "://x@" + rest)
		if got != want {
			t.Fatalf("Redact depends on the credentials: %q, without them %q", got, want)
		}
		if len(pass) >= 4 && strings.Contains(got, pass) && !strings.Contains(want, pass) {
			t.Fatalf("Redact kept the password: %q", got)
		}
	})
}

// FuzzMask: any mask string parses to a non-empty rectangle inside the
// frame's percent range, or is refused.
func FuzzMask(f *testing.F) {
	for _, s := range []string{"0,0,640,40", "0%,0%,100%,8%", "1,2,3", "50%,0%,60%,8%", "-1,0,1,1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMask(s)
		if err != nil {
			return
		}
		if m.Rect.Empty() || m.Rect.Min.X < 0 || m.Rect.Min.Y < 0 || (m.Relative && (m.Rect.Max.X > 10000 || m.Rect.Max.Y > 10000)) {
			t.Fatalf("%q -> %+v", s, m)
		}
	})
}
