package capture

import (
	"context"
	"fmt"
	"image"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/suyashkumar/dicom"
	dcmframe "github.com/suyashkumar/dicom/pkg/frame"
	"github.com/suyashkumar/dicom/pkg/tag"
	"gocv.io/x/gocv"

	"sonolive/frame"
)

func init() {
	register(Kind{
		Name:    "dicom",
		Schemes: []string{"dicom"},
		Usage:   "cine.dcm, dicom:///data/cine.dcm?loop=1: a DICOM ultrasound cine (native or JPEG baseline), at its frame time, with its pixel spacing",
		Sniff:   isDICOM,
		Open: func(_ context.Context, t Target, opts Options) (Source, error) {
			return openDICOM(t.Path, opts)
		},
	})
}

// isDICOM reports whether path is a regular file with the DICOM preamble
// ("DICM" after 128 bytes): DICOM files often have no extension at all.
func isDICOM(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < 132 {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [132]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return false
	}
	return string(b[128:]) == "DICM"
}

// Transfer syntaxes the cine source decodes: native little-endian pixels,
// and JPEG baseline/extended frames (what ultrasound machines write).
// JPEG-LS, JPEG 2000 and RLE are refused by name at open.
var dicomSyntaxes = map[string]bool{
	"1.2.840.10008.1.2":      true, // implicit VR little endian
	"1.2.840.10008.1.2.1":    true, // explicit VR little endian
	"1.2.840.10008.1.2.1.99": true, // deflated explicit VR little endian
	"1.2.840.10008.1.2.4.50": true, // JPEG baseline
	"1.2.840.10008.1.2.4.51": true, // JPEG extended
}

// dicomSource plays a DICOM cine: each frame at its media time (Frame Time,
// Frame Time Vector or Cine Rate), with the pixel spacing of its
// ultrasound region on every frame.
type dicomSource struct {
	info        Info
	opts        Options
	frames      []*dcmframe.Frame
	photometric string
	planar      bool
	times       []time.Duration // media time of each frame in one pass
	period      time.Duration   // one pass
	geom        frame.Geometry
	pos, pass   int
	seq         uint64
	pace        pacer
	pending     *gocv.Mat // the first frame, decoded while opening to prove the file plays
	counters    Counters
}

func openDICOM(path string, opts Options) (Source, error) {
	if err := statNotFound("DICOM file", path); err != nil {
		return nil, err
	}
	id := "dicom:" + filepath.Base(path)
	ds, err := dicom.ParseFile(path, nil)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w: %w", id, ErrUnreadable, err)
	}
	s := &dicomSource{opts: opts}
	if ts := dcmString(&ds, tag.TransferSyntaxUID); !dicomSyntaxes[ts] {
		return nil, fmt.Errorf("open %s: %w: transfer syntax %q is not native or JPEG baseline (re-encode it, e.g. dcmdjpeg)", id, ErrUnreadable, ts)
	}
	el, err := ds.FindElementByTag(tag.PixelData)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w: no pixel data", id, ErrUnreadable)
	}
	pix, ok := el.Value.GetValue().(dicom.PixelDataInfo)
	if !ok || pix.ParseErr != nil || len(pix.Frames) == 0 {
		return nil, fmt.Errorf("open %s: %w: pixel data does not parse (%v)", id, ErrUnreadable, pix.ParseErr)
	}
	s.frames = pix.Frames
	s.photometric = strings.TrimSpace(dcmString(&ds, tag.PhotometricInterpretation))
	s.planar = dcmInt(&ds, tag.PlanarConfiguration, 0) == 1
	s.times, s.period = dicomTimes(&ds, len(s.frames))
	s.geom = dicomGeometry(&ds)
	fps := float64(len(s.times)) / s.period.Seconds()
	s.info = Info{ID: id, FPS: fps, Live: opts.Realtime}
	first, err := s.decode(0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w: %w", id, ErrUnreadable, err)
	}
	s.pending = first
	return s, nil
}

// dicomTimes gives each frame's media time, from the Frame Time Vector,
// the Frame Time, the Cine Rate or the Recommended Display Frame Rate, in
// that order; 30 fps when the file names none.
func dicomTimes(ds *dicom.Dataset, n int) ([]time.Duration, time.Duration) {
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	if times, period, ok := vectorTimes(dcmFloats(ds, tag.FrameTimeVector), n); ok {
		return times, period
	}
	times := make([]time.Duration, n)
	step := 1000.0 / 30
	if ft := dcmFloats(ds, tag.FrameTime); len(ft) == 1 && ft[0] > 0 && ft[0] < 10000 {
		step = ft[0]
	} else if r := dcmInt(ds, tag.CineRate, 0); r > 0 && r <= 240 {
		step = 1000 / float64(r)
	} else if r := dcmInt(ds, tag.RecommendedDisplayFrameRate, 0); r > 0 && r <= 240 {
		step = 1000 / float64(r)
	}
	for i := range times {
		times[i] = ms(float64(i) * step)
	}
	return times, ms(float64(n) * step)
}

// vectorTimes reads a Frame Time Vector: its first entry is 0, each next
// one the milliseconds since the frame before.
func vectorTimes(vec []float64, n int) ([]time.Duration, time.Duration, bool) {
	if len(vec) != n || n < 2 {
		return nil, 0, false
	}
	times := make([]time.Duration, n)
	var t time.Duration
	for i := 1; i < n; i++ {
		if !(vec[i] > 0 && vec[i] < 10000) {
			return nil, 0, false
		}
		t += time.Duration(vec[i] * float64(time.Millisecond))
		times[i] = t
	}
	// The last frame shows for the mean interval.
	return times, t + t/time.Duration(n-1), true
}

// dicomGeometry takes the pixel spacing from the first 2D region of the
// Sequence of Ultrasound Regions calibrated in centimetres, else from
// Pixel Spacing (which gives rows, the Y spacing, first).
func dicomGeometry(ds *dicom.Dataset) frame.Geometry {
	if el, err := ds.FindElementByTag(tag.SequenceOfUltrasoundRegions); err == nil {
		items, _ := el.Value.GetValue().([]*dicom.SequenceItemValue)
		for _, it := range items {
			elems, _ := it.GetValue().([]*dicom.Element)
			sub := dicom.Dataset{Elements: elems}
			const cm = 3
			if dcmInt(&sub, tag.RegionSpatialFormat, 0) != 1 ||
				dcmInt(&sub, tag.PhysicalUnitsXDirection, 0) != cm || dcmInt(&sub, tag.PhysicalUnitsYDirection, 0) != cm {
				continue
			}
			dx, dy := dcmFloats(&sub, tag.PhysicalDeltaX), dcmFloats(&sub, tag.PhysicalDeltaY)
			if len(dx) != 1 || len(dy) != 1 || !(dx[0] > 0 && dx[0] < 1) || !(dy[0] > 0 && dy[0] < 1) {
				continue
			}
			g := frame.Geometry{SpacingMM: [2]float64{dx[0] * 10, dy[0] * 10}}
			x0, y0 := dcmInt(&sub, tag.RegionLocationMinX0, -1), dcmInt(&sub, tag.RegionLocationMinY0, -1)
			x1, y1 := dcmInt(&sub, tag.RegionLocationMaxX1, -1), dcmInt(&sub, tag.RegionLocationMaxY1, -1)
			if x0 >= 0 && y0 >= 0 && x1 > x0 && y1 > y0 {
				g.Region = image.Rect(x0, y0, x1+1, y1+1) // DICOM's maxima are inclusive
			}
			return g
		}
	}
	if ps := dcmFloats(ds, tag.PixelSpacing); len(ps) == 2 && ps[0] > 0 && ps[1] > 0 && ps[0] < 10 && ps[1] < 10 {
		return frame.Geometry{SpacingMM: [2]float64{ps[1], ps[0]}}
	}
	return frame.Geometry{}
}

// Info implements Source.
func (s *dicomSource) Info() Info { return s.info }

// Stats returns the source's counters.
func (s *dicomSource) Stats() Stats { return s.counters.snapshot() }

// Close implements Source.
func (s *dicomSource) Close() error {
	if s.pending != nil {
		s.pending.Close()
		s.pending = nil
	}
	return nil
}

// Next implements Source. A frame that does not decode is skipped and
// counted, like a corrupt frame from any other source; a pass with none
// that decodes ends the cine.
func (s *dicomSource) Next(ctx context.Context) (*frame.Frame, error) {
	img := s.pending
	s.pending = nil
	for bad := 0; img == nil; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.opts.Frames > 0 && s.seq >= uint64(s.opts.Frames) {
			return nil, io.EOF
		}
		if s.pos == len(s.frames) {
			if !s.opts.Loop {
				return nil, io.EOF
			}
			s.pos, s.pass = 0, s.pass+1
		}
		m, err := s.decode(s.pos)
		if err == nil {
			img = m
			break
		}
		s.counters.Corrupt.Add(1)
		if bad++; bad >= len(s.frames) {
			return nil, fmt.Errorf("%s: %w: %w", s.info.ID, ErrUnreadable, err)
		}
		s.pos++
	}
	if s.opts.Realtime {
		if err := s.pace.wait(ctx, time.Duration(s.pass)*s.period+s.times[s.pos]); err != nil {
			img.Close()
			return nil, err
		}
	}
	s.pos++
	s.seq++
	s.counters.Frames.Add(1)
	return &frame.Frame{Seq: s.seq, Source: s.info.ID, Captured: time.Now(), Image: *img, Geometry: s.geom}, nil
}

// decode turns frame i into BGR.
func (s *dicomSource) decode(i int) (*gocv.Mat, error) {
	f := s.frames[i]
	if f.Encapsulated {
		m, err := gocv.IMDecode(f.EncapsulatedData.Data, gocv.IMReadColor)
		if err != nil || m.Empty() {
			m.Close()
			return nil, fmt.Errorf("frame %d: the JPEG does not decode", i+1)
		}
		return &m, nil
	}
	nf := f.NativeData
	if nf == nil {
		return nil, fmt.Errorf("frame %d: no pixels", i+1)
	}
	raw, ok := nf.RawDataSlice().([]uint8)
	if !ok || nf.BitsPerSample() != 8 {
		return nil, fmt.Errorf("frame %d: %d-bit pixels (ultrasound is 8-bit; this cine is not)", i+1, nf.BitsPerSample())
	}
	rows, cols, spp := nf.Rows(), nf.Cols(), nf.SamplesPerPixel()
	if len(raw) != rows*cols*spp || rows < 16 || cols < 16 {
		return nil, fmt.Errorf("frame %d: %dx%dx%d pixels in %d bytes", i+1, cols, rows, spp, len(raw))
	}
	switch {
	case spp == 1 && (s.photometric == "MONOCHROME2" || s.photometric == "MONOCHROME1"):
		gray, err := gocv.NewMatFromBytes(rows, cols, gocv.MatTypeCV8UC1, raw)
		if err != nil {
			return nil, err
		}
		defer gray.Close()
		if s.photometric == "MONOCHROME1" {
			gocv.BitwiseNot(gray, &gray)
		}
		m := gocv.NewMat()
		gocv.CvtColor(gray, &m, gocv.ColorGrayToBGR)
		return &m, nil
	case spp == 3 && (s.photometric == "RGB" || s.photometric == "YBR_FULL"):
		px := raw
		if s.planar {
			// RRR…GGG…BBB… to RGBRGB…
			n := rows * cols
			px = make([]byte, len(raw))
			for p := 0; p < n; p++ {
				px[3*p], px[3*p+1], px[3*p+2] = raw[p], raw[n+p], raw[2*n+p]
			}
		}
		in, err := gocv.NewMatFromBytes(rows, cols, gocv.MatTypeCV8UC3, px)
		if err != nil {
			return nil, err
		}
		defer in.Close()
		m := gocv.NewMat()
		if s.photometric == "RGB" {
			gocv.CvtColor(in, &m, gocv.ColorRGBToBGR)
		} else {
			ybrToBGR(&m, in)
		}
		return &m, nil
	}
	return nil, fmt.Errorf("frame %d: photometric interpretation %q with %d samples is not supported", i+1, s.photometric, spp)
}

// ybrToBGR converts YBR_FULL pixels: DICOM orders the chroma Cb, Cr;
// OpenCV's YCrCb wants Cr, Cb.
func ybrToBGR(dst *gocv.Mat, ybr gocv.Mat) {
	ch := gocv.Split(ybr)
	defer func() {
		for _, c := range ch {
			c.Close()
		}
	}()
	ycrcb := gocv.NewMat()
	defer ycrcb.Close()
	gocv.Merge([]gocv.Mat{ch[0], ch[2], ch[1]}, &ycrcb)
	gocv.CvtColor(ycrcb, dst, gocv.ColorYCrCbToBGR)
}

// dcmString is an element's first string value, "" when absent.
func dcmString(ds *dicom.Dataset, t tag.Tag) string {
	el, err := ds.FindElementByTag(t)
	if err != nil {
		return ""
	}
	if v, ok := el.Value.GetValue().([]string); ok && len(v) > 0 {
		return strings.TrimRight(v[0], " \x00")
	}
	return ""
}

// dcmFloats reads a numeric element whether it was stored as a decimal
// string (DS, IS) or a binary number (FD, FL, US, UL).
func dcmFloats(ds *dicom.Dataset, t tag.Tag) []float64 {
	el, err := ds.FindElementByTag(t)
	if err != nil {
		return nil
	}
	switch v := el.Value.GetValue().(type) {
	case []float64:
		return v
	case []int:
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	case []string:
		var out []float64
		for _, s := range v {
			for _, part := range strings.Split(s, `\`) {
				f, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
				if err != nil {
					return nil
				}
				out = append(out, f)
			}
		}
		return out
	}
	return nil
}

// dcmInt is an element's first value as an int, def when absent.
func dcmInt(ds *dicom.Dataset, t tag.Tag, def int) int {
	v := dcmFloats(ds, t)
	if len(v) == 0 {
		return def
	}
	return int(v[0])
}
