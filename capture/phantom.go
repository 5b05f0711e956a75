package capture

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"time"

	"gocv.io/x/gocv"

	"sonolive/frame"
)

func init() {
	register(Kind{
		Name:    "phantom",
		Schemes: []string{"phantom"},
		Usage:   "phantom://?seed=1&lesions=2&geometry=sector&width=1280&height=720&fps=30&spacing=0.1: the synthetic B-mode phantom, with ground truth and its pixel size in mm (spacing=0: unknown, as a machine's video output)",
		Open: func(_ context.Context, t Target, opts Options) (Source, error) {
			cfg, err := phantomConfigFromQuery(t.Query)
			if err != nil {
				return nil, fmt.Errorf("%w %q: %w", ErrBadSpec, Redact(t.Spec), err)
			}
			cfg.Realtime = cfg.Realtime || opts.Realtime
			if opts.Frames > 0 {
				cfg.Frames = opts.Frames
			}
			return NewPhantom(cfg), nil
		},
	})
}

// PhantomConfig describes a synthetic B-mode scan. The same config gives the
// same frames, pixel for pixel.
type PhantomConfig struct {
	Seed     uint64
	Lesions  int    // hypoechoic lesions in the scanned volume
	Geometry string // "linear" (rectangle) or "sector" (convex fan)
	Width    int
	Height   int
	FPS      float64
	// Text burns a header line and depth scale into the frame, as real
	// machines do.
	Text bool
	// SweepPeriod is the time the probe takes to sweep across and back.
	SweepPeriod time.Duration
	Realtime    bool
	Frames      int // stop after this many frames; 0: endless
	// SpacingMM is the size of a pixel in millimetres, the same across
	// and down (the phantom's tissue is drawn one pixel per pixel); the
	// depth scale's ticks are 50 pixels apart. Zero: the frames carry no
	// geometry, like a machine's video output.
	SpacingMM float64
}

// DefaultSpacingMM makes the default phantom's field 44 mm deep, a
// breast or thyroid depth, with lesions 3 to 10 mm across.
const DefaultSpacingMM = 0.1

// DefaultPhantom is the embedded demo source.
func DefaultPhantom() PhantomConfig {
	return PhantomConfig{Seed: 1, Lesions: 2, Geometry: "linear", Width: 640, Height: 480, FPS: 30, Text: true, SweepPeriod: 8 * time.Second, SpacingMM: DefaultSpacingMM}
}

// withDefaults fills unset fields from DefaultPhantom; Lesions and Text are
// taken as given.
func (c PhantomConfig) withDefaults() PhantomConfig {
	d := DefaultPhantom()
	if c.Width <= 0 || c.Height <= 0 {
		c.Width, c.Height = d.Width, d.Height
	}
	if c.FPS <= 0 {
		c.FPS = d.FPS
	}
	if c.Geometry == "" {
		c.Geometry = d.Geometry
	}
	if c.SweepPeriod <= 0 {
		c.SweepPeriod = d.SweepPeriod
	}
	return c
}

func phantomConfigFromQuery(q url.Values) (PhantomConfig, error) {
	c := DefaultPhantom()
	for key, vals := range q {
		v := vals[len(vals)-1]
		var err error
		switch key {
		case "seed":
			c.Seed, err = strconv.ParseUint(v, 10, 64)
		case "lesions":
			c.Lesions, err = strconv.Atoi(v)
		case "geometry":
			if v != "linear" && v != "sector" {
				err = fmt.Errorf("want linear or sector")
			}
			c.Geometry = v
		case "width":
			c.Width, err = strconv.Atoi(v)
		case "height":
			c.Height, err = strconv.Atoi(v)
		case "fps":
			c.FPS, err = strconv.ParseFloat(v, 64)
		case "text":
			c.Text, err = strconv.ParseBool(v)
		case "sweep":
			c.SweepPeriod, err = time.ParseDuration(v)
		case "realtime":
			c.Realtime, err = strconv.ParseBool(v)
		case "frames":
			c.Frames, err = strconv.Atoi(v)
		case "spacing":
			c.SpacingMM, err = strconv.ParseFloat(v, 64)
		case "loop", "open_timeout", "read_timeout":
		default:
			err = fmt.Errorf("unknown parameter")
		}
		if err != nil {
			return c, fmt.Errorf("phantom parameter %s=%q: %w", key, v, err)
		}
	}
	switch {
	case c.Width < 64 || c.Height < 64 || c.Width > 4096 || c.Height > 4096:
		return c, fmt.Errorf("phantom size %dx%d out of range 64..4096", c.Width, c.Height)
	case !(c.FPS > 0 && c.FPS <= 240): // NaN too
		return c, fmt.Errorf("phantom fps %v out of range (0, 240]", c.FPS)
	case c.Lesions < 0 || c.Lesions > 16:
		return c, fmt.Errorf("phantom lesions %d out of range 0..16", c.Lesions)
	case !(c.SpacingMM >= 0 && c.SpacingMM <= 10):
		return c, fmt.Errorf("phantom spacing %v mm out of range 0..10", c.SpacingMM)
	case c.SweepPeriod <= 0 || c.Frames < 0:
		return c, fmt.Errorf("phantom sweep must be positive and frames not negative")
	}
	return c, nil
}

// lesion is an ellipsoid in tissue coordinates (u lateral, v depth, z
// elevation, all in pixels) with an irregular margin. The probe plane cuts
// it at the current elevation.
type lesion struct {
	u, v, z    float64 // centre
	a, b, c    float64 // semi-axes: lateral, depth, elevation
	echo       float64 // interior brightness relative to tissue
	posterior  float64 // <1 shadow, >1 enhancement
	rim        float64 // echogenic halo strength
	harm       [4]struct{ k, amp, phase float64 }
	rotation   float64
	cosR, sinR float64
}

// Phantom renders a B-mode-like scan of tissue with lesions while the probe
// sweeps: the field pans laterally and fans through the lesions in
// elevation, so they drift, grow and shrink, appear and vanish.
type Phantom struct {
	cfg      PhantomConfig
	id       string
	counters Counters

	// Field geometry: for each pixel the tissue coordinate it shows, or -1.
	fieldU, fieldV []float32
	top            int             // first row of the field (below the header)
	field          image.Rectangle // the bounds of the field in the frame
	// Tissue reflectivity, texW x texH, wider than the field so it can pan.
	tex        []float32
	texW, texH int
	noise      []float32
	depthGain  []float32 // by tissue depth v
	lut        [4096]uint8
	lesions    []lesion
	// labels is the last frame's lesion map: for each pixel the id (from
	// 1) of the lesion it shows, 0 for tissue.
	labels     []uint8
	gray       gocv.Mat
	seq        uint64
	pace       pacer
	rng        *rand.Rand
	fieldWidth float64
}

// NewPhantom builds the phantom: all randomness is drawn here, from the seed.
func NewPhantom(cfg PhantomConfig) *Phantom {
	cfg = cfg.withDefaults()
	p := &Phantom{cfg: cfg, id: fmt.Sprintf("phantom-%d", cfg.Seed), rng: rand.New(rand.NewPCG(cfg.Seed, 0x50e01))}
	if cfg.Text {
		p.top = 36
	}
	p.buildField()
	p.field = p.fieldBounds()
	p.buildTissue()
	p.buildLesions()
	for i := range p.lut {
		// Log compression of echo amplitude, as scanners display it.
		x := float64(i) / float64(len(p.lut)-1)
		p.lut[i] = uint8(math.Round(255 * math.Log1p(30*x) / math.Log1p(30)))
	}
	p.gray = gocv.NewMatWithSize(cfg.Height, cfg.Width, gocv.MatTypeCV8UC1)
	p.labels = make([]uint8, cfg.Width*cfg.Height)
	return p
}

// LesionMap is the last rendered frame's lesion map, row-major: for each
// pixel the id (from 1, as in Frame.TruthIDs) of the lesion it shows, 0
// for tissue. It is overwritten by the next Render.
func (p *Phantom) LesionMap() []uint8 { return p.labels }

func (p *Phantom) buildField() {
	w, h := p.cfg.Width, p.cfg.Height
	p.fieldU = make([]float32, w*h)
	p.fieldV = make([]float32, w*h)
	for i := range p.fieldU {
		p.fieldU[i] = -1
	}
	depth := float64(h - p.top - 8)
	if p.cfg.Geometry == "sector" {
		// Convex probe: apex above the image, ±35° fan.
		half := 35 * math.Pi / 180
		r0 := depth * 0.35
		cx, cy := float64(w)/2, float64(p.top)-r0
		maxR := r0 + depth
		maxR = min(maxR, (float64(w)/2-4)/math.Sin(half))
		arc := half * (r0 + (maxR-r0)/2) // lateral extent at mid-depth
		p.fieldWidth = 2 * arc
		for y := p.top; y < h; y++ {
			for x := 0; x < w; x++ {
				dx, dy := float64(x)+0.5-cx, float64(y)+0.5-cy
				r := math.Hypot(dx, dy)
				th := math.Atan2(dx, dy)
				if r < r0 || r > maxR || math.Abs(th) > half {
					continue
				}
				p.fieldU[y*w+x] = float32((th/half + 1) * arc)
				p.fieldV[y*w+x] = float32(r - r0)
			}
		}
		return
	}
	margin := w / 10
	p.fieldWidth = float64(w - 2*margin)
	for y := p.top; y < p.top+int(depth); y++ {
		for x := margin; x < w-margin; x++ {
			p.fieldU[y*w+x] = float32(x - margin)
			p.fieldV[y*w+x] = float32(y - p.top)
		}
	}
}

// fieldBounds is the smallest rectangle holding every field pixel: the
// ultrasound image's region in the frame.
func (p *Phantom) fieldBounds() image.Rectangle {
	w := p.cfg.Width
	r := image.Rectangle{Min: image.Pt(w, p.cfg.Height)}
	for i, u := range p.fieldU {
		if u < 0 {
			continue
		}
		x, y := i%w, i/w
		r.Min.X, r.Min.Y = min(r.Min.X, x), min(r.Min.Y, y)
		r.Max.X, r.Max.Y = max(r.Max.X, x+1), max(r.Max.Y, y+1)
	}
	if r.Empty() {
		return image.Rectangle{}
	}
	return r
}

func (p *Phantom) buildTissue() {
	p.texW = int(p.fieldWidth*1.6) + 8
	p.texH = p.cfg.Height
	n := p.texW * p.texH
	// Fully developed speckle: Rayleigh amplitude from complex Gaussian
	// scatter, blurred anisotropically (the point spread function is wider
	// laterally than axially).
	raw := make([]float32, n)
	for i := range raw {
		re, im := p.rng.NormFloat64(), p.rng.NormFloat64()
		raw[i] = float32(math.Hypot(re, im))
	}
	src, _ := gocv.NewMatFromBytes(p.texH, p.texW, gocv.MatTypeCV32F, float32Bytes(raw))
	dst := gocv.NewMat()
	gocv.GaussianBlur(src, &dst, image.Pt(7, 3), 1.6, 0.6, gocv.BorderReflect)
	blurred, _ := dst.DataPtrFloat32()
	p.tex = make([]float32, n)
	copy(p.tex, blurred)
	src.Close()
	dst.Close()

	// Layered anatomy: skin line, subcutaneous fat with septa, glandular
	// tissue, then a muscle/chest-wall band with striations.
	skin := 6.0
	fat := 0.22 * float64(p.texH)
	gland := 0.65 * float64(p.texH)
	ph1, ph2 := p.rng.Float64()*6, p.rng.Float64()*6
	for v := 0; v < p.texH; v++ {
		for u := 0; u < p.texW; u++ {
			fu, fv := float64(u), float64(v)
			wave := 8 * math.Sin(fu/90+ph1)
			var e float64
			switch {
			case fv < skin:
				e = 1.6
			case fv < fat+wave:
				e = 0.45 + 0.5*math.Pow(math.Abs(math.Sin(fu/37+fv/23+ph2)), 24)
			case fv < gland+wave:
				e = 0.85 + 0.25*math.Sin(fu/53+ph1)*math.Sin(fv/29)
			default:
				e = 0.7 + 0.35*math.Pow(math.Abs(math.Sin(fv/6+fu/200)), 6)
			}
			p.tex[v*p.texW+u] *= float32(e)
		}
	}
	p.noise = make([]float32, 1<<16)
	for i := range p.noise {
		p.noise[i] = float32(p.rng.NormFloat64() * 0.03)
	}
	p.depthGain = make([]float32, p.texH)
	for v := range p.depthGain {
		// Attenuation only partly undone by TGC: a gentle depth gradient.
		fv := float64(v) / float64(p.texH)
		p.depthGain[v] = float32(0.33 * math.Exp(-0.9*fv) * (1 + 0.5*fv))
	}
}

func (p *Phantom) buildLesions() {
	depth := float64(p.cfg.Height - p.top)
	for i := 0; i < p.cfg.Lesions; i++ {
		l := lesion{}
		// Spread lesions across the pannable width; keep most of each in
		// view for part of the sweep.
		slot := (float64(i) + 0.5) / float64(p.cfg.Lesions)
		l.u = float64(p.texW)*(0.2+0.6*slot) + (p.rng.Float64()-0.5)*0.1*float64(p.texW)
		l.a = 14 + p.rng.Float64()*36
		l.b = l.a * (0.55 + p.rng.Float64()*0.6)
		l.c = 30 + p.rng.Float64()*40
		l.v = depth*0.25 + l.b + p.rng.Float64()*(depth*0.45-l.b)
		l.z = (p.rng.Float64() - 0.5) * 20
		l.rotation = (p.rng.Float64() - 0.5) * 0.6
		l.cosR, l.sinR = math.Cos(l.rotation), math.Sin(l.rotation)
		switch p.rng.IntN(3) {
		case 0: // cyst: anechoic, sharp, posterior enhancement
			l.echo, l.posterior, l.rim = 0.08, 1.45, 0
		case 1: // solid benign-looking: hypoechoic, smooth or lobulated
			l.echo, l.posterior, l.rim = 0.35, 1.0, 0.25
			l.harm[0] = struct{ k, amp, phase float64 }{2, 0.08, p.rng.Float64() * 6}
			l.harm[1] = struct{ k, amp, phase float64 }{3, 0.06, p.rng.Float64() * 6}
		default: // irregular: hypoechoic, spiculated, shadowing
			l.echo, l.posterior, l.rim = 0.25, 0.5, 0.45
			l.harm[0] = struct{ k, amp, phase float64 }{3, 0.12, p.rng.Float64() * 6}
			l.harm[1] = struct{ k, amp, phase float64 }{5, 0.07, p.rng.Float64() * 6}
			l.harm[2] = struct{ k, amp, phase float64 }{11, 0.06, p.rng.Float64() * 6}
			l.harm[3] = struct{ k, amp, phase float64 }{17, 0.04, p.rng.Float64() * 6}
		}
		p.lesions = append(p.lesions, l)
	}
}

// Info implements Source.
func (p *Phantom) Info() Info { return Info{ID: p.id, FPS: p.cfg.FPS, Live: p.cfg.Realtime} }

// Stats returns the phantom's counters.
func (p *Phantom) Stats() Stats { return p.counters.snapshot() }

// Close implements Source.
func (p *Phantom) Close() error { return p.gray.Close() }

// Next implements Source: it renders the next frame, paced at FPS when
// Realtime is set.
func (p *Phantom) Next(ctx context.Context) (*frame.Frame, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.cfg.Frames > 0 && p.seq >= uint64(p.cfg.Frames) {
		return nil, io.EOF
	}
	if p.cfg.Realtime {
		if err := p.pace.wait(ctx, frameTime(p.seq, p.cfg.FPS)); err != nil {
			return nil, err
		}
	}
	p.seq++
	f := p.Render(p.seq)
	f.Captured = time.Now()
	p.counters.Frames.Add(1)
	return f, nil
}

// Render draws frame seq (1-based) without pacing.
func (p *Phantom) Render(seq uint64) *frame.Frame {
	t := float64(seq-1) / p.cfg.FPS
	period := p.cfg.SweepPeriod.Seconds()
	// Lateral pan across the tissue and an elevational fan through it, at
	// incommensurate rates so the view keeps changing.
	pan := (float64(p.texW) - p.fieldWidth - 2) * (0.5 + 0.5*math.Sin(2*math.Pi*t/period))
	elev := 45 * math.Sin(2*math.Pi*t/(period*0.77)+0.6)

	type cut struct {
		l              *lesion
		a, b           float64 // semi-axes at this elevation
		u0, u1, v0, v1 float32 // bounding box in field coordinates
		x0, y0, x1, y1 int     // ground-truth box, grown while drawing
		seen           bool
		id             int // the lesion's index, from 1
	}
	cuts := make([]cut, 0, len(p.lesions))
	for i := range p.lesions {
		l := &p.lesions[i]
		dz := (elev - l.z) / l.c
		if dz*dz >= 1 {
			continue
		}
		s := math.Sqrt(1 - dz*dz)
		a, b := l.a*s, l.b*s
		if a < 3 || b < 3 {
			continue
		}
		cu := l.u - pan
		r := math.Max(a, b) * 1.35
		cuts = append(cuts, cut{l: l, id: i + 1, a: a, b: b, u0: float32(cu - r), u1: float32(cu + r), v0: float32(l.v - r), v1: float32(l.v + r), x0: math.MaxInt, y0: math.MaxInt, x1: -1, y1: -1})
	}

	w, h := p.cfg.Width, p.cfg.Height
	buf, _ := p.gray.DataPtrUint8()
	clear(p.labels)
	noiseOff := int(seq*7919) & (len(p.noise) - 1)
	ipan := int(pan)
	for y := 0; y < h; y++ {
		row := y * w
		for x := 0; x < w; x++ {
			i := row + x
			u := p.fieldU[i]
			if u < 0 {
				buf[i] = 0
				continue
			}
			v := p.fieldV[i]
			iu, iv := int(u)+ipan, int(v)
			amp := p.tex[iv*p.texW+iu]
			gain := p.depthGain[iv]
			for k := range cuts {
				c := &cuts[k]
				if u < c.u0 || u > c.u1 {
					continue
				}
				l := c.l
				du := float64(u) - (l.u - pan)
				if v < c.v0 || v > c.v1 {
					// Posterior shadow or enhancement under the lesion.
					if l.posterior != 1 && float64(v) > l.v && math.Abs(du) < c.a*0.85 {
						fade := math.Exp(-(float64(v) - l.v - c.b) / (3 * c.b))
						gain *= float32(1 + (l.posterior-1)*fade)
					}
					continue
				}
				dv := float64(v) - l.v
				ru := (du*l.cosR + dv*l.sinR) / c.a
				rv := (-du*l.sinR + dv*l.cosR) / c.b
				rho := math.Hypot(ru, rv)
				edge := 1.0
				if l.harm[0].amp != 0 && rho < 1.4 {
					phi := math.Atan2(rv, ru)
					for _, hm := range l.harm {
						edge += hm.amp * math.Cos(hm.k*phi+hm.phase)
					}
				}
				switch {
				case rho < edge:
					amp *= float32(l.echo)
					p.labels[i] = uint8(c.id)
					if x < c.x0 {
						c.x0 = x
					}
					if x > c.x1 {
						c.x1 = x
					}
					if y < c.y0 {
						c.y0 = y
					}
					if y > c.y1 {
						c.y1 = y
					}
					c.seen = true
				case rho < edge+0.12 && l.rim > 0:
					amp *= float32(1 + l.rim)
				case float64(v) > l.v && l.posterior != 1 && math.Abs(du) < c.a*0.85:
					fade := math.Exp(-math.Max(0, float64(v)-l.v-c.b) / (3 * c.b))
					gain *= float32(1 + (l.posterior-1)*fade)
				}
			}
			val := amp*gain + p.noise[(noiseOff+i)&(len(p.noise)-1)]
			q := int(val * 4095)
			if q < 0 {
				q = 0
			} else if q > 4095 {
				q = 4095
			}
			buf[i] = p.lut[q]
		}
	}

	var truth []frame.Box
	var ids []int
	var outlines [][]frame.Point
	for _, c := range cuts {
		// Lesions smaller than 8 px across are not findings anyone could mark.
		if !c.seen || c.x1-c.x0 < 7 || c.y1-c.y0 < 7 {
			continue
		}
		truth = append(truth, frame.Box{X1: float32(c.x0), Y1: float32(c.y0), X2: float32(c.x1 + 1), Y2: float32(c.y1 + 1)})
		ids = append(ids, c.id)
		outlines = append(outlines, p.rowOutline(uint8(c.id), image.Rect(c.x0, c.y0, c.x1+1, c.y1+1)))
	}
	if p.cfg.Text {
		p.drawText(seq, t)
	}
	img := gocv.NewMat()
	gocv.CvtColor(p.gray, &img, gocv.ColorGrayToBGR)
	f := &frame.Frame{Seq: seq, Source: p.id, Image: img, Truth: truth, TruthIDs: ids, TruthOutlines: outlines}
	if p.cfg.SpacingMM > 0 {
		f.Geometry = frame.Geometry{SpacingMM: [2]float64{p.cfg.SpacingMM, p.cfg.SpacingMM}, Region: p.field}
	}
	return f
}

// rowOutline traces lesion id's pixels within r row by row: down its left
// edge and back up its right edge, along the pixels' outer corners. Its
// convex hull is the lesion's, so calipers on it are exact; only
// concavities opening up or down are filled.
func (p *Phantom) rowOutline(id uint8, r image.Rectangle) []frame.Point {
	w := p.cfg.Width
	var left, right []frame.Point
	for y := r.Min.Y; y < r.Max.Y; y++ {
		x0, x1 := -1, -1
		for x := r.Min.X; x < r.Max.X; x++ {
			if p.labels[y*w+x] == id {
				if x0 < 0 {
					x0 = x
				}
				x1 = x
			}
		}
		if x0 < 0 {
			continue
		}
		left = append(left, frame.Point{X: float32(x0), Y: float32(y)}, frame.Point{X: float32(x0), Y: float32(y + 1)})
		right = append(right, frame.Point{X: float32(x1 + 1), Y: float32(y)}, frame.Point{X: float32(x1 + 1), Y: float32(y + 1)})
	}
	for i := len(right) - 1; i >= 0; i-- {
		left = append(left, right[i])
	}
	return left
}

func (p *Phantom) drawText(seq uint64, t float64) {
	white := color.RGBA{230, 230, 230, 0}
	gocv.PutText(&p.gray, "SONOLIVE PHANTOM  L12-5  BREAST  MI 0.9 TIs 0.2  G 54", image.Pt(8, 15), gocv.FontHersheySimplex, 0.42, white, 1)
	clock := time.Duration(t * float64(time.Second))
	gocv.PutText(&p.gray, fmt.Sprintf("ID 000-PHANTOM  %02d:%02d.%02d  #%d", int(clock.Minutes()), int(clock.Seconds())%60, (clock.Milliseconds()/10)%100, seq), image.Pt(8, 31), gocv.FontHersheySimplex, 0.42, white, 1)
	// Depth scale: a tick every 50 px on the right edge (5 mm at the
	// default spacing), for calibrating by hand.
	x := p.cfg.Width - 10
	for y := p.top; y < p.cfg.Height-8; y += 50 {
		gocv.Line(&p.gray, image.Pt(x, y), image.Pt(x+6, y), white, 1)
	}
}

func float32Bytes(f []float32) []byte {
	b := make([]byte, 4*len(f))
	for i, v := range f {
		bits := math.Float32bits(v)
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
	}
	return b
}
