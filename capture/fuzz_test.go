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
		"gst:videotestsrc ! appsink", "nope://x", "phantom://?width=-1", "http://[::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		kind, _, q, err := parseSpec(spec)
		if err != nil {
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("unnamed error: %v", err)
			}
			return
		}
		var o Options
		if err := applyQuery(&o, q); err == nil && (o.FPS < 0 || o.FPS != o.FPS || o.Width < 0 || o.Height < 0 || o.OpenTimeout < 0 || o.ReadTimeout < 0) {
			t.Fatalf("options %+v accepted", o)
		}
		if kind == "phantom" {
			if cfg, err := phantomConfigFromQuery(q); err == nil && (cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > 8192 || cfg.Height > 8192 || !(cfg.FPS > 0 && cfg.FPS <= 240)) {
				t.Fatalf("phantom of %dx%d accepted", cfg.Width, cfg.Height)
			}
		}
		_ = Redact(spec)
	})
}

// FuzzRedact: what Redact returns never holds the password of a
// user:password@ URL.
func FuzzRedact(f *testing.F) {
	f.Add("rtsp", "admin", "s3cr3t", "cam:554/x?a=1")
	f.Add("http", "u", "p@ss:w/rd", "h/p")
	f.Fuzz(func(t *testing.T, scheme, user, pass, rest string) {
		if len(pass) < 4 || strings.ContainsAny(pass, "/?#") || strings.ContainsAny(user, "/?#@") || strings.Contains(rest, pass) ||
			strings.Contains(scheme, pass) || strings.Contains(user, pass) || strings.ContainsAny(scheme, "/?#@") {
			return
		}
		out := Redact(scheme + "://" + user + ":" + pass + "@" + rest)
		if strings.Contains(out, pass) {
			t.Fatalf("Redact kept the password: %q", out)
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
