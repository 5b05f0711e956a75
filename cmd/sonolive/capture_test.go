package main

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// watchGeometry waits for a viewer's first metadata and checks its spacing.
func watchGeometry(t *testing.T, endpoint, tok string, sx, sy float64, logs *strings.Builder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := whepclient.Dial(ctx, endpoint, whepclient.Options{Token: tok})
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
			g.check(t, sx, sy)
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
}

// A probe's OpenIGTLink server added to a running serve through the
// source API (with the admin token serve wrote) is watched with the link
// the API answers, spacing and all; removing it answers 204.
func TestServeAddIGTLAtRunTime(t *testing.T) {
	srv := testpeer.StartIGTLServer(t, 30, 0.2, 0.25)
	adminFile := filepath.Join(t.TempDir(), "admin.token")
	_, base, _, logs := serveBin(t, binary, "--no-record", "--audit", filepath.Join(t.TempDir(), "audit.jsonl"),
		"--source", "phantom://?width=320&height=240", "--admin-token-file", adminFile)
	b, err := os.ReadFile(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(b))
	req, _ := http.NewRequest("POST", base+"/api/sources", strings.NewReader(`{"id":"probe","url":"igtl://`+srv.Addr+`?device=Image_Reference"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var added struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&added)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || added.Token == "" {
		t.Fatalf("add: HTTP %d\nserver log:\n%s", resp.StatusCode, logs.String())
	}
	watchGeometry(t, base+"/whep/probe", added.Token, 0.2, 0.25, logs)
	req, _ = http.NewRequest("DELETE", base+"/api/sources/probe", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("remove: %v %v", resp, err)
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
			watchGeometry(t, base+"/whep/live", u.Query().Get("token"), tc.sx, tc.sy, logs)
		})
	}
}
