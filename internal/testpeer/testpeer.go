// Package testpeer makes the real peers and files the capture tests feed
// sonolive with: a DICOM cine written by pydicom and checked by dciodvfy,
// and an OpenIGTLink server built on the OpenIGTLink library. What they
// need (the shared clips, Debian's tools) is required under CI=true and
// skipped for elsewhere.
package testpeer

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// root is the repository root, found from this file.
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// missing fails the test under CI and skips it elsewhere.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Need checks that the tools are on PATH (scripts/setup.sh installs them).
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, "%s not installed (make setup installs it)", tool)
		}
	}
}

// Data is the shared data directory ($SONOLIVE_DATA, default
// ../shared/data beside the checkout).
func Data(t testing.TB) string {
	t.Helper()
	d := os.Getenv("SONOLIVE_DATA")
	if d == "" {
		d = filepath.Join(root(), "..", "shared", "data")
	}
	if _, err := os.Stat(d); err != nil {
		missing(t, "shared data missing at %s (set SONOLIVE_DATA): %v", d, err)
	}
	return d
}

// Clip is one of the shared real breast cine clips (320×320, 30 fps).
func Clip(t testing.TB) string {
	t.Helper()
	d := Data(t)
	p := filepath.Join(d, "clips", "breast-cine", "pid_11_vid_53.avi")
	if _, err := os.Stat(p); err != nil {
		missing(t, "shared data missing at %s (set SONOLIVE_DATA): %v", d, err)
	}
	return p
}

// Cine describes a DICOM cine to make.
type Cine struct {
	Frames      int
	FrameTimeMS float64
	SpacingMM   float64
	JPEG        bool
	Region      string // "x0,y0,x1,y1" inclusive; "" the whole frame
}

// DICOMCine writes a US Multi-frame file from the shared clip with pydicom
// and fails the test unless dciodvfy finds it valid.
func DICOMCine(t testing.TB, c Cine) string {
	t.Helper()
	Need(t, "ffmpeg", "ffprobe", "dciodvfy", "/usr/bin/python3")
	if err := exec.Command("/usr/bin/python3", "-c", "import pydicom").Run(); err != nil {
		missing(t, "python3-pydicom not installed (make setup installs it)")
	}
	out := filepath.Join(t.TempDir(), "cine.dcm")
	args := []string{filepath.Join(root(), "testdata", "dicom", "make_cine.py"), Clip(t), out,
		"--frames", strconv.Itoa(c.Frames), "--frame-time-ms", strconv.FormatFloat(c.FrameTimeMS, 'g', -1, 64),
		"--spacing-mm", strconv.FormatFloat(c.SpacingMM, 'g', -1, 64)}
	if c.JPEG {
		args = append(args, "--jpeg")
	}
	if c.Region != "" {
		args = append(args, "--region", c.Region)
	}
	if b, err := exec.Command("/usr/bin/python3", args...).CombinedOutput(); err != nil {
		t.Fatalf("make_cine: %v\n%s", err, b)
	}
	// dciodvfy prints the IOD's name, then one line per problem.
	b, _ := exec.Command("dciodvfy", out).CombinedOutput()
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Error") {
			t.Fatalf("dciodvfy finds the test cine invalid:\n%s", b)
		}
	}
	return out
}

// RawFrames decodes the first n frames of the shared clip as 8-bit grey,
// width×height each, as the IGTL server sends them.
func RawFrames(t testing.TB, n int) (raw []byte, width, height int) {
	t.Helper()
	Need(t, "ffmpeg", "ffprobe")
	clip := Clip(t)
	size, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0", clip).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(string(size)), "%d,%d", &width, &height); err != nil {
		t.Fatalf("ffprobe size %q: %v", size, err)
	}
	out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip, "-frames:v", strconv.Itoa(n), "-f", "rawvideo", "-pix_fmt", "gray", "-").Output()
	if err != nil || len(out) != n*width*height {
		t.Fatalf("ffmpeg: %d bytes for %d frames: %v", len(out), n, err)
	}
	return out, width, height
}

// IGTLServer is a running OpenIGTLink server sending the shared clip.
type IGTLServer struct {
	Addr               string
	Width, Height      int
	SpacingX, SpacingY float64
	Raw                []byte // the frames it sends, in order, looping
}

// StartIGTLServer builds testdata/igtl/us_server.cxx against the
// OpenIGTLink library (once per source version, in the user cache) and
// runs it on a free port until the test ends.
func StartIGTLServer(t testing.TB, fps float64, spacingX, spacingY float64) *IGTLServer {
	t.Helper()
	Need(t, "g++")
	if _, err := os.Stat("/usr/include/openigtlink/igtlImageMessage.h"); err != nil {
		missing(t, "libopenigtlink-dev not installed (make setup installs it)")
	}
	bin := buildServer(t)
	raw, w, h := RawFrames(t, 60)
	rawPath := filepath.Join(t.TempDir(), "frames.raw")
	if err := os.WriteFile(rawPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, strconv.Itoa(port), strconv.FormatFloat(fps, 'g', -1, 64), strconv.Itoa(w), strconv.Itoa(h),
		strconv.FormatFloat(spacingX, 'g', -1, 64), strconv.FormatFloat(spacingY, 'g', -1, 64), rawPath)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "listening") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("us_server did not start")
	}
	return &IGTLServer{Addr: fmt.Sprintf("127.0.0.1:%d", port), Width: w, Height: h, SpacingX: spacingX, SpacingY: spacingY, Raw: raw}
}

// buildServer compiles us_server.cxx, keyed by its hash so a changed
// source is rebuilt and parallel test binaries share one build.
func buildServer(t testing.TB) string {
	t.Helper()
	src := filepath.Join(root(), "testdata", "igtl", "us_server.cxx")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "sonolive-testpeer")
	bin := filepath.Join(dir, "us_server-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	if out, err := exec.Command("g++", "-O2", "-o", tmp, src, "-I/usr/include/openigtlink", "-lOpenIGTLink").CombinedOutput(); err != nil {
		t.Fatalf("building us_server: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}
