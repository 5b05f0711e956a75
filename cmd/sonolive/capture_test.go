package main

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sonolive/internal/testpeer"
	"sonolive/internal/whepclient"
)

// frameGeometry is what these tests read back from the metadata.
type frameGeometry struct {
	Width    int `json:"width"`
	Geometry *struct {
		SpacingMM [2]float64  `json:"spacing_mm"`
		Region    *[4]float64 `json:"region"`
	} `json:"geometry"`
	Detections []struct {
		Box    [4]float64  `json:"box"`
		SizeMM *[2]float64 `json:"size_mm"`
	} `json:"detections"`
}

// check holds one frame's metadata to the spacing the source sent, and
// every box's size in mm to its size in pixels.
func (g frameGeometry) check(t *testing.T, sx, sy float64) {
	t.Helper()
	if g.Geometry == nil || math.Abs(g.Geometry.SpacingMM[0]-sx) > 1e-6 || math.Abs(g.Geometry.SpacingMM[1]-sy) > 1e-6 {
		t.Fatalf("geometry %+v, want spacing %v×%v", g.Geometry, sx, sy)
	}
	for _, d := range g.Detections {
		if d.SizeMM == nil || math.Abs(d.SizeMM[0]-d.Box[2]*sx) > 0.06 || math.Abs(d.SizeMM[1]-d.Box[3]*sy) > 0.06 {
			t.Fatalf("box %v size_mm %v at %v×%v mm/px", d.Box, d.SizeMM, sx, sy)
		}
	}
}

// A DICOM cine and an OpenIGTLink server built on the real library each
// run through `sonolive run`, and the pixel spacing they sent is in every
// frame's metadata.
func TestRunSpacingSources(t *testing.T) {
	cine := testpeer.DICOMCine(t, testpeer.Cine{Frames: 40, FrameTimeMS: 40, SpacingMM: 0.1, JPEG: true, Region: "10,20,300,310"})
	srv := testpeer.StartIGTLServer(t, 30, 0.2, 0.25)
	for _, tc := range []struct {
		name, spec string
		sx, sy     float64
		region     *[4]float64
		live       bool
	}{
		{"dicom", cine, 0.1, 0.1, &[4]float64{10, 20, 291, 291}, false},
		{"igtl", "igtl://" + srv.Addr + "?device=Image_Reference", 0.2, 0.25, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meta := filepath.Join(t.TempDir(), "m.jsonl")
			_, stderr, err := sonolive(t, 2*time.Minute, "run", "--source", tc.spec, "--frames", "40", "--budget", "1s",
				"--metadata", meta, "--log-level", "warn")
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			f, err := os.Open(meta)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			n, boxes := 0, 0
			for sc := bufio.NewScanner(f); sc.Scan(); n++ {
				var g frameGeometry
				if err := json.Unmarshal(sc.Bytes(), &g); err != nil {
					t.Fatal(err)
				}
				g.check(t, tc.sx, tc.sy)
				if (tc.region == nil) != (g.Geometry.Region == nil) || (tc.region != nil && *tc.region != *g.Geometry.Region) {
					t.Fatalf("region %v, want %v", g.Geometry.Region, tc.region)
				}
				boxes += len(g.Detections)
			}
			// A live source's frames are dropped when inference falls
			// behind; a file's never are.
			if n != 40 && (!tc.live || n < 20) {
				t.Fatalf("%d metadata lines of 40 frames", n)
			}
			// The clip shows a lesion the breast model finds in most
			// frames: real boxes are measured, not just an empty list.
			if boxes == 0 {
				t.Fatal("no boxes to measure")
			}
			t.Logf("%s: %d frames at %v×%v mm/px, %d boxes measured in mm", tc.name, n, tc.sx, tc.sy, boxes)
		})
	}
}

// The same two sources served live: a viewer's metadata carries the
// spacing.
func TestServeSpacingSources(t *testing.T) {
	cine := testpeer.DICOMCine(t, testpeer.Cine{Frames: 40, FrameTimeMS: 40, SpacingMM: 0.1})
	srv := testpeer.StartIGTLServer(t, 30, 0.2, 0.25)
	for _, tc := range []struct {
		name, spec string
		sx, sy     float64
	}{
		{"dicom", cine, 0.1, 0.1},
		{"igtl", "igtl://" + srv.Addr + "?device=Image_Reference", 0.2, 0.25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, base, _, logs := serveBin(t, binary, "--no-record", "--audit", filepath.Join(t.TempDir(), "audit.jsonl"), "--source", tc.spec)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			v, err := whepclient.Dial(ctx, base+"/whep/live", whepclient.Options{Token: u.Query().Get("token")})
			if err != nil {
				t.Fatalf("%v\nserver log:\n%s", err, logs.String())
			}
			defer v.Close(context.Background())
			for {
				if m := v.LastMetadata(); m != nil {
					var g frameGeometry
					if err := json.Unmarshal(m, &g); err != nil {
						t.Fatal(err)
					}
					g.check(t, tc.sx, tc.sy)
					if g.Width != 320 {
						t.Fatalf("width %d", g.Width)
					}
					return
				}
				select {
				case <-ctx.Done():
					t.Fatalf("no metadata\nserver log:\n%s", logs.String())
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
}
