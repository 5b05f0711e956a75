package capture

import (
	"bytes"
	"context"
	"image"
	"io"
	"testing"
	"time"

	"go.uber.org/zap"

	"sonolive/frame"
)

func zapNop() *zap.Logger { return zap.NewNop() }

func TestPhantomDeterministic(t *testing.T) {
	for _, geom := range []string{"linear", "sector"} {
		cfg := DefaultPhantom()
		cfg.Geometry = geom
		a, b := NewPhantom(cfg), NewPhantom(cfg)
		cfg.Seed = 2
		c := NewPhantom(cfg)
		fa, fb, fc := a.Render(42), b.Render(42), c.Render(42)
		if !bytes.Equal(fa.Image.ToBytes(), fb.Image.ToBytes()) {
			t.Errorf("%s: same seed, different pixels", geom)
		}
		if bytes.Equal(fa.Image.ToBytes(), fc.Image.ToBytes()) {
			t.Errorf("%s: different seeds, same pixels", geom)
		}
		for _, f := range []interface{ Close() error }{fa, fb, fc, a, b, c} {
			f.Close()
		}
	}
}

// Lesions are hypoechoic: inside a truth box the image is darker than the
// band of tissue around it, and there is ground truth on most frames.
func TestPhantomTruth(t *testing.T) {
	for _, geom := range []string{"linear", "sector"} {
		cfg := DefaultPhantom()
		cfg.Geometry = geom
		cfg.Lesions = 3
		p := NewPhantom(cfg)
		withTruth := 0
		for seq := uint64(1); seq <= 240; seq += 8 {
			f := p.Render(seq)
			if len(f.Truth) > 0 {
				withTruth++
			}
			if len(f.TruthOutlines) != len(f.Truth) {
				t.Fatalf("%s seq %d: %d truth outlines for %d boxes", geom, seq, len(f.TruthOutlines), len(f.Truth))
			}
			for i, b := range f.Truth {
				checkTruthOutline(t, p, f.TruthIDs[i], b, f.TruthOutlines[i])
				r := image.Rect(int(b.X1), int(b.Y1), int(b.X2), int(b.Y2))
				inner := r.Inset(r.Dx() / 4)
				if inner.Dx() < 2 || inner.Dy() < 2 {
					continue
				}
				in := meanGray(f, inner)
				// Tissue beside the lesion, left or right, whichever is in the field.
				side := max(meanGray(f, image.Rect(r.Min.X-r.Dx()/2, inner.Min.Y, r.Min.X, inner.Max.Y)),
					meanGray(f, image.Rect(r.Max.X, inner.Min.Y, r.Max.X+r.Dx()/2, inner.Max.Y)))
				if in >= side*0.8 {
					t.Errorf("%s seq %d: lesion %v mean %.1f not darker than tissue %.1f", geom, seq, b, in, side)
				}
			}
			f.Close()
		}
		if withTruth < 20 {
			t.Errorf("%s: only %d of 30 frames show a lesion", geom, withTruth)
		}
		p.Close()
	}
}

// checkTruthOutline: a lesion's outline spans exactly its box and holds
// every pixel the lesion map gives it, in every row from its leftmost to
// its rightmost one.
func checkTruthOutline(t *testing.T, p *Phantom, id int, b frame.Box, outline []frame.Point) {
	t.Helper()
	lo, hi := outline[0], outline[0]
	for _, q := range outline {
		lo.X, lo.Y = min(lo.X, q.X), min(lo.Y, q.Y)
		hi.X, hi.Y = max(hi.X, q.X), max(hi.Y, q.Y)
	}
	if (frame.Box{X1: lo.X, Y1: lo.Y, X2: hi.X, Y2: hi.Y}) != b {
		t.Errorf("lesion %d: outline spans %v-%v, box %v", id, lo, hi, b)
	}
	// The outline's left edge at row y is its (2k)th point, k = y - top.
	w := p.cfg.Width
	for y := int(b.Y1); y < int(b.Y2); y++ {
		for x := 0; x < w; x++ {
			if int(p.LesionMap()[y*w+x]) != id {
				continue
			}
			k := 2 * (y - int(b.Y1))
			if k >= len(outline)/2 || float32(x) < outline[k].X || float32(x+1) > outline[len(outline)-1-k].X {
				t.Fatalf("lesion %d: pixel (%d, %d) outside its outline", id, x, y)
			}
		}
	}
}

// The phantom says how big its pixels are and where its field lies, and
// names each lesion so one seen again is known.
func TestPhantomGeometry(t *testing.T) {
	for _, geom := range []string{"linear", "sector"} {
		cfg := DefaultPhantom()
		cfg.Geometry = geom
		p := NewPhantom(cfg)
		f := p.Render(1)
		g := f.Geometry
		if g.SpacingMM != [2]float64{DefaultSpacingMM, DefaultSpacingMM} {
			t.Errorf("%s: spacing %v", geom, g.SpacingMM)
		}
		frameRect := image.Rect(0, 0, cfg.Width, cfg.Height)
		if g.Region.Empty() || !g.Region.In(frameRect) || g.Region == frameRect || g.Region.Min.Y < 36 {
			t.Errorf("%s: region %v in %v", geom, g.Region, frameRect)
		}
		seen := map[int]bool{}
		for seq := uint64(1); seq <= 240; seq += 4 {
			f := p.Render(seq)
			if len(f.TruthIDs) != len(f.Truth) {
				t.Fatalf("%s: %d truth ids for %d boxes", geom, len(f.TruthIDs), len(f.Truth))
			}
			for i, id := range f.TruthIDs {
				if id < 1 || id > cfg.Lesions {
					t.Errorf("%s: lesion id %d", geom, id)
				}
				if b := f.Truth[i]; !image.Rect(int(b.X1), int(b.Y1), int(b.X2), int(b.Y2)).In(g.Region) {
					t.Errorf("%s: lesion %v outside the field %v", geom, b, g.Region)
				}
				seen[id] = true
			}
			f.Close()
		}
		if len(seen) != cfg.Lesions {
			t.Errorf("%s: saw lesions %v of %d", geom, seen, cfg.Lesions)
		}
		f.Close()
		p.Close()
	}
	cfg, err := phantomConfigFromQuery(map[string][]string{"spacing": {"0"}})
	if err != nil || cfg.SpacingMM != 0 {
		t.Fatalf("spacing=0: %v %v", cfg.SpacingMM, err)
	}
	p := NewPhantom(cfg)
	if f := p.Render(1); f.Geometry.Known() {
		t.Errorf("spacing=0 still gives geometry %v", f.Geometry)
	} else {
		f.Close()
	}
	p.Close()
}

func meanGray(f *frame.Frame, r image.Rectangle) float64 {
	r = r.Intersect(image.Rect(0, 0, f.Image.Cols(), f.Image.Rows()))
	if r.Empty() {
		return 0
	}
	roi := f.Image.Region(r)
	defer roi.Close()
	return roi.Mean().Val1
}

func TestPhantomPacingAndEnd(t *testing.T) {
	src, err := Open(context.Background(), "phantom://?fps=50&frames=6&width=160&height=120", Options{Realtime: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	start := time.Now()
	n, err := drain(t, src, 100)
	if n != 6 || err != io.EOF {
		t.Fatalf("%d frames, %v", n, err)
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Fatalf("6 frames at 50 fps took %v", el)
	}
}
