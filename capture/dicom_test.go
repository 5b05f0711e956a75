package capture

import (
	"context"
	"errors"
	"image"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"sonolive/internal/testpeer"
)

// meanAbsDiff compares a BGR frame's grey with 8-bit grey pixels.
func meanAbsDiff(t *testing.T, img gocv.Mat, gray []byte) float64 {
	t.Helper()
	g := gocv.NewMat()
	defer g.Close()
	gocv.CvtColor(img, &g, gocv.ColorBGRToGray)
	b := g.ToBytes()
	if len(b) != len(gray) {
		t.Fatalf("frame of %d pixels, want %d", len(b), len(gray))
	}
	var sum float64
	for i := range b {
		sum += math.Abs(float64(b[i]) - float64(gray[i]))
	}
	return sum / float64(len(b))
}

// A DICOM cine written by pydicom (and valid to dciodvfy) plays through
// Open: every frame, the pixels FFmpeg decodes from the same clip, the
// frame rate of its Frame Time, and the spacing and region of its
// ultrasound region on each frame. A plain path is recognised as DICOM by
// its content.
func TestDICOMCine(t *testing.T) {
	const n = 30
	raw, w, h := testpeer.RawFrames(t, n)
	for _, tc := range []struct {
		name       string
		jpeg       bool
		region     string
		wantRegion image.Rectangle
		maxDiff    float64
	}{
		{"native", false, "", image.Rect(0, 0, w, h), 0},
		{"jpeg-baseline", true, "10,20,300,310", image.Rect(10, 20, 301, 311), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := testpeer.DICOMCine(t, testpeer.Cine{Frames: n, FrameTimeMS: 40, SpacingMM: 0.1, JPEG: tc.jpeg, Region: tc.region})
			src, err := Open(context.Background(), path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if info := src.Info(); info.ID != "dicom:cine.dcm" || math.Abs(info.FPS-25) > 1e-9 || info.Live {
				t.Fatalf("info %+v", info)
			}
			for i := 0; ; i++ {
				f, err := src.Next(context.Background())
				if errors.Is(err, io.EOF) {
					if i != n {
						t.Fatalf("%d frames, want %d", i, n)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				g := f.Geometry
				if math.Abs(g.SpacingMM[0]-0.1) > 1e-9 || math.Abs(g.SpacingMM[1]-0.1) > 1e-9 || g.Region != tc.wantRegion {
					t.Fatalf("frame %d geometry %+v", f.Seq, g)
				}
				if d := meanAbsDiff(t, f.Image, raw[i*w*h:(i+1)*w*h]); d > tc.maxDiff {
					t.Fatalf("frame %d differs from FFmpeg's decode by %.2f levels on average", f.Seq, d)
				}
				f.Close()
			}
		})
	}
}

// dicom:// with loop and frames plays past the end, and a crop keeps the
// spacing and moves the region.
func TestDICOMLoopAndCrop(t *testing.T) {
	path := testpeer.DICOMCine(t, testpeer.Cine{Frames: 10, FrameTimeMS: 33.3, SpacingMM: 0.2, Region: "10,20,300,310"})
	src, err := Open(context.Background(), "dicom://"+path+"?loop=1&frames=25", Options{Region: Region{Crop: image.Rect(50, 50, 250, 250)}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := 0
	for {
		f, err := src.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if got++; f.Image.Cols() != 200 || f.Geometry.Region != image.Rect(0, 0, 200, 200) || f.Geometry.SpacingMM != [2]float64{0.2, 0.2} {
			t.Fatalf("frame %d: %dx%d %+v", f.Seq, f.Image.Cols(), f.Image.Rows(), f.Geometry)
		}
		f.Close()
	}
	if got != 25 {
		t.Fatalf("%d frames, want 25", got)
	}
}

// A damaged or unsupported file is a clear open error, named.
func TestDICOMBad(t *testing.T) {
	path := testpeer.DICOMCine(t, testpeer.Cine{Frames: 5, FrameTimeMS: 40, SpacingMM: 0.1})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	truncated := filepath.Join(dir, "truncated.dcm")
	os.WriteFile(truncated, b[:len(b)/2], 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, spec := range []string{truncated, "dicom://" + filepath.Join(dir, "absent.dcm")} {
		src, err := Open(ctx, spec, Options{})
		if err == nil {
			src.Close()
			t.Fatalf("%s opened", spec)
		}
		if !errors.Is(err, ErrUnreadable) && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: unnamed error %v", spec, err)
		}
	}
}

func TestVectorTimes(t *testing.T) {
	for _, tc := range []struct {
		vec    []float64
		n      int
		ok     bool
		last   time.Duration
		period time.Duration
	}{
		{[]float64{0, 40, 40, 20}, 4, true, 100 * time.Millisecond, 100*time.Millisecond + 100*time.Millisecond/3},
		{[]float64{0, 40, -1}, 3, false, 0, 0},
		{[]float64{0, 40}, 3, false, 0, 0},
	} {
		times, period, ok := vectorTimes(tc.vec, tc.n)
		if ok != tc.ok || (ok && (times[len(times)-1] != tc.last || period != tc.period)) {
			t.Errorf("vectorTimes(%v) = %v %v %v", tc.vec, times, period, ok)
		}
	}
}
